//! One replay timeline across restarts, without Kafka: a replay is stopped, a new
//! `ReplaySource` (a new process) is opened on the same files and told what "the topic"
//! holds (each symbol's newest candle and its shift, as `source/timeline.rs` reads it), and
//! goes on. Under a virtual clock, so the downtime between two processes is a number.
//!
//! What must hold: every candle sent is a dataset candle under one constant shift per
//! symbol, each symbol's stamps only increase, and together the processes send the dataset
//! exactly once, none skipped and none twice.

use candlepipe_datagen::{write_dataset, FileLayout, MarketOptions, PairSpec, WriteOptions};
use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::{shutdown, Candle};
use candlepipe_producer::clock::{Clock, VirtualClock};
use candlepipe_producer::source::replay::{
    ReplayEnd, ReplayOptions, ReplaySource, ReplayTail, Speed,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[path = "common/replay.rs"]
#[allow(dead_code)] // the other replay tests use the rest
mod common;
use common::{replay_all, NOW};

const M: i64 = MINUTE_MS;

/// Two pairs over `minutes` of market time, with a few gaps.
fn dataset(minutes: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let pairs = ["BTC-USDT", "ETH-USDT"].map(|s| PairSpec::bundled_named(s).unwrap());
    let market = MarketOptions {
        minutes,
        gap_rate: 1.0 / 40.0,
        ..MarketOptions::default()
    };
    write_dataset(
        dir.path(),
        &pairs,
        &market,
        &FileLayout::KAGGLE,
        &WriteOptions::default(),
    )
    .unwrap();
    dir
}

/// The dataset's candles as recorded, in replay order.
fn dataset_candles(dir: &std::path::Path) -> Vec<Candle> {
    replay_all(ReplayOptions {
        speed: Speed::Max,
        looping: false,
        rebase: false,
        ..ReplayOptions::new(dir)
    })
    .unwrap()
    .0
}

/// The product's defaults but a 2h backfill, a speed and loop choice.
fn rebased(dir: &std::path::Path, speed: Speed, looping: bool) -> ReplayOptions {
    ReplayOptions {
        speed,
        looping,
        backfill: Duration::from_secs(2 * 3600),
        ..ReplayOptions::new(dir)
    }
}

/// What the "topic" holds: every candle sent, with its shift.
#[derive(Default)]
struct Topic {
    sent: Vec<(Candle, i64)>,
}

impl Topic {
    /// Each symbol's newest candle and its shift, as the producer reads them back.
    fn tails(&self) -> HashMap<String, ReplayTail> {
        let mut out: HashMap<String, ReplayTail> = HashMap::new();
        for (c, shift) in &self.sent {
            out.insert(
                c.symbol.clone(),
                ReplayTail {
                    stamp: c.open_time,
                    shift: Some(*shift),
                },
            );
        }
        out
    }

    /// Runs `source` until it sent `limit` more candles (or finished); returns how it ended.
    fn run(&mut self, source: &mut ReplaySource, clock: &VirtualClock, limit: usize) -> ReplayEnd {
        let (_trigger, stop) = shutdown::channel();
        let mut n = 0;
        source
            .run_shifted(clock, &stop, &mut |c, shift| {
                if n == limit {
                    return false;
                }
                n += 1;
                assert!(c.open_time <= clock.now_ms(), "never stamped in the future");
                self.sent.push((c, shift));
                true
            })
            .unwrap()
    }

    /// Per symbol, the candles sent in order.
    fn by_symbol(&self) -> BTreeMap<String, Vec<(Candle, i64)>> {
        let mut out: BTreeMap<String, Vec<(Candle, i64)>> = BTreeMap::new();
        for (c, s) in &self.sent {
            out.entry(c.symbol.clone())
                .or_default()
                .push((c.clone(), *s));
        }
        out
    }
}

/// A new process: opens the dataset again and continues what `topic` holds.
fn new_process(opts: &ReplayOptions, topic: &Topic, clock: &VirtualClock) -> ReplaySource {
    let mut source = ReplaySource::open(opts.clone()).unwrap();
    assert!(source.wants_topic_tail());
    source.continue_from_topic(&topic.tails(), clock.now_ms());
    assert!(!source.wants_topic_tail());
    source
}

/// Every candle sent is `dataset`'s candle under one shift per symbol, and together they
/// are the dataset exactly once (`passes` times over, for a loop).
#[track_caller]
fn assert_one_timeline(topic: &Topic, dataset: &[Candle]) {
    let mut want: BTreeMap<String, Vec<&Candle>> = BTreeMap::new();
    for c in dataset {
        want.entry(c.symbol.clone()).or_default().push(c);
    }
    for (symbol, sent) in topic.by_symbol() {
        let shift = sent[0].1;
        let rows = &want[&symbol];
        assert_eq!(sent.len(), rows.len(), "{symbol}: every candle once");
        for (i, ((c, s), row)) in sent.iter().zip(rows).enumerate() {
            assert_eq!(*s, shift, "{symbol} candle {i}: one shift");
            let mut original = c.clone();
            original.open_time -= shift;
            assert_eq!(&original, *row, "{symbol} candle {i} is dataset row {i}");
        }
    }
}

#[test]
fn three_restarts_mid_replay_keep_one_shift_and_send_every_candle_once() {
    let dir = dataset(600);
    let all = dataset_candles(dir.path());
    let opts = rebased(dir.path(), Speed::Factor(600.0), false);
    let clock = VirtualClock::new(NOW);
    let mut topic = Topic::default();
    let mut source = ReplaySource::open(opts.clone()).unwrap();
    source.continue_from_topic(&HashMap::new(), clock.now_ms()); // an empty topic
                                                                 // Stops inside the backfill (sent at speed), then in the real-time part.
    for (limit, down) in [(61, 7_000), (80, 45_000), (100, 10 * M)] {
        assert_eq!(topic.run(&mut source, &clock, limit), ReplayEnd::Stopped);
        clock.advance(down); // the producer is down
        source = new_process(&opts, &topic, &clock);
    }
    assert_eq!(
        topic.run(&mut source, &clock, usize::MAX),
        ReplayEnd::Finished
    );
    assert_one_timeline(&topic, &all);
}

#[test]
fn a_restart_after_a_loop_keeps_the_grown_shift() {
    let dir = dataset(120);
    let opts = rebased(dir.path(), Speed::Max, true);
    let clock = VirtualClock::new(NOW);
    let mut topic = Topic::default();
    let mut source = ReplaySource::open(opts.clone()).unwrap();
    let n = dataset_candles(dir.path()).len();
    // One pass and a bit, a restart, then another pass and a bit.
    topic.run(&mut source, &clock, n + 30);
    clock.advance(20_000);
    let mut source = new_process(&opts, &topic, &clock);
    topic.run(&mut source, &clock, n);
    for (symbol, sent) in topic.by_symbol() {
        assert!(
            sent.windows(2).all(|w| w[0].0.open_time < w[1].0.open_time),
            "{symbol}: stamps only increase across loops and the restart"
        );
        let shifts: Vec<i64> = sent.iter().map(|(_, s)| *s).collect();
        assert!(
            shifts.windows(2).all(|w| w[0] <= w[1]),
            "{symbol}: the shift only grows"
        );
        assert_eq!(
            shifts
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3,
            "{symbol}: three passes, three shifts (the restart kept the second)"
        );
    }
}

#[test]
fn a_symbol_new_to_the_topic_starts_one_backfill_back_and_start_over_follows_the_tail() {
    let dir = dataset(600);
    let opts = rebased(dir.path(), Speed::Max, false);
    let clock = VirtualClock::new(NOW);
    // Only BTC-USDT is on the topic (a replay of it alone ran for a while).
    let mut topic = Topic::default();
    let mut source = ReplaySource::open(opts.clone()).unwrap();
    topic.run(&mut source, &clock, 400);
    topic.sent.retain(|(c, _)| c.symbol == "BTC-USDT");
    let btc_tail = topic.tails()["BTC-USDT"];
    let present = clock.now_ms() - clock.now_ms() % M;
    let mut source = new_process(&opts, &topic, &clock);
    let before = topic.sent.len();
    topic.run(&mut source, &clock, usize::MAX);
    let eth: Vec<&Candle> = topic.sent[before..]
        .iter()
        .map(|(c, _)| c)
        .filter(|c| c.symbol == "ETH-USDT")
        .collect();
    let shift = btc_tail.shift.unwrap();
    let all = dataset_candles(dir.path());
    let want: Vec<i64> = all
        .iter()
        .filter(|c| c.symbol == "ETH-USDT" && c.open_time + shift >= present - 120 * M)
        .map(|c| c.open_time + shift)
        .collect();
    assert_eq!(
        eth.iter().map(|c| c.open_time).collect::<Vec<_>>(),
        want,
        "the new symbol gets the candles of one backfill (2h) before the present, under the kept shift"
    );
    let btc_next = topic.sent[before..]
        .iter()
        .find(|(c, _)| c.symbol == "BTC-USDT")
        .unwrap();
    assert_eq!(
        btc_next.1,
        btc_tail.shift.unwrap(),
        "BTC-USDT keeps its shift"
    );

    // Start over (`--replay-on-switch restart` before the tail was read): the dataset's
    // first candle, stamped right after the newest candle on the topic.
    let newest = topic.sent.iter().map(|(c, _)| c.open_time).max().unwrap();
    let mut source = ReplaySource::open(opts.clone()).unwrap();
    source.restart();
    source.continue_from_topic(&topic.tails(), clock.now_ms());
    let before = topic.sent.len();
    topic.run(&mut source, &clock, 10);
    assert_eq!(topic.sent[before].0.open_time, newest + M);
}

#[test]
fn a_finished_no_loop_replay_has_nothing_left_after_a_restart() {
    let dir = dataset(60);
    let opts = rebased(dir.path(), Speed::Max, false);
    let clock = VirtualClock::new(NOW);
    let mut topic = Topic::default();
    let mut source = ReplaySource::open(opts.clone()).unwrap();
    assert_eq!(
        topic.run(&mut source, &clock, usize::MAX),
        ReplayEnd::Finished
    );
    let sent = topic.sent.len();
    assert_eq!(sent, dataset_candles(dir.path()).len());
    let mut source = new_process(&opts, &topic, &clock);
    assert_eq!(
        topic.run(&mut source, &clock, usize::MAX),
        ReplayEnd::Finished
    );
    assert_eq!(topic.sent.len(), sent, "nothing sent twice");
}
