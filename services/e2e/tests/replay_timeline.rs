//! One replay timeline across producer restarts, on real servers: the `producer` binary
//! replays the bundled BTC-USDT and ETH-USDT files (rebased, a 3h backfill at 600x) into
//! Apache Kafka, the `consumer` writes InfluxDB 2, and the producer is stopped with SIGTERM
//! and started again, three times in the middle of the backfill; in a second test a
//! restarted producer goes live → replay → live through `POST /mode`.
//!
//! What must hold (issue 14): every 1m candle in InfluxDB (and on the topic) is a dataset
//! candle moved by one constant shift per symbol, each dataset candle of the span is there
//! once (the restarts neither skip nor repeat one), every replayed message carries that
//! shift in its `candlepipe-replay-shift-ms` header, and the consumer dropped nothing as
//! late. Before the fix each restart began the dataset again "so the backfill ends now":
//! hundreds of late drops and an hour overwritten with other candles.

use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::now_ms;
use candlepipe_model::{codec, Candle, Source};
use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::http_client::post_json;
use candlepipe_testkit::pipeline::{ConsumerRun, ServiceProcess, PIPELINE_TIMEOUT};
use candlepipe_testkit::yahoo::{rebased, YahooFake};
use candlepipe_testkit::{read_topic, testdata, wait_until, Influxd, TopicRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const M: i64 = MINUTE_MS;
const SYMBOLS: [&str; 2] = ["BTC-USDT", "ETH-USDT"];
const LIVE_SYMBOL: &str = "UNITTEST-BTC";
const SHIFT_HEADER: &str = "candlepipe-replay-shift-ms";
const RESTARTS: usize = 3;

/// The repo's bundled dataset file of `symbol`.
fn bundled(symbol: &str) -> PathBuf {
    testdata(&format!("../dataset/{symbol}.parquet"))
}

/// A dataset folder with the bundled files of [`SYMBOLS`].
fn dataset() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dataset dir");
    for s in SYMBOLS {
        std::fs::copy(bundled(s), dir.path().join(format!("{s}.parquet")))
            .unwrap_or_else(|e| panic!("copying dataset/{s}.parquet: {e}"));
    }
    dir
}

/// Per symbol, the dataset's candles by open time, read by the testkit (not the producer).
fn dataset_candles() -> BTreeMap<String, BTreeMap<i64, Candle>> {
    SYMBOLS
        .iter()
        .map(|s| {
            let by_time = read_candles(&bundled(s))
                .into_iter()
                .map(|c| (c.open_time, c))
                .collect();
            (s.to_string(), by_time)
        })
        .collect()
}

/// The producer binary on `run`'s topic, replaying `dir` rebased with a 3h backfill at
/// 600x (18 s of catch-up), plus `extra` flags.
fn producer(run: &ConsumerRun, dir: &Path, extra: &[&str]) -> ServiceProcess {
    let mut args: Vec<String> = [
        "--brokers",
        &run.brokers,
        "--topic",
        &run.topic,
        "--dataset",
        dir.to_str().expect("utf-8 path"),
        "--speed",
        "600",
        "--backfill",
        "3h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    ServiceProcess::start(&candlepipe_testkit::workspace_bin("producer"), &args)
}

/// Candles of `source` this producer process saw acknowledged.
fn acked(p: &ServiceProcess, source: &str) -> f64 {
    p.metric(&format!(
        "candlepipe_producer_candles_sent_total{{source=\"{source}\"}}"
    ))
}

/// Waits until the consumer committed every message on the topic, asserts it dropped
/// none as late and that the replay streams on the topic and in InfluxDB are one timeline
/// each; returns the topic's records and each symbol's shift.
fn assert_consumed_as_one_timeline(
    influx: &Influxd,
    run: &ConsumerRun,
    consumer: &mut ServiceProcess,
) -> (Vec<TopicRecord>, BTreeMap<String, i64>) {
    let records = read_topic(&run.brokers, &run.topic);
    wait_until(
        PIPELINE_TIMEOUT,
        "the consumer to commit every message",
        || {
            consumer.assert_running();
            run.committed() == records.len() as i64
        },
    );
    assert_eq!(
        consumer.metric("candlepipe_consumer_late_dropped_total"),
        0.0,
        "nothing dropped as late:\n{}",
        consumer.log()
    );
    let dataset = dataset_candles();
    let shifts = assert_one_timeline_on_topic(&records, &dataset);
    assert_one_timeline_in_influx(influx, &run.db, &dataset, &shifts);
    (records, shifts)
}

/// The replay stream on the topic: per symbol, (candle, shift header) in partition order.
fn replay_messages(records: &[TopicRecord]) -> BTreeMap<String, Vec<(Candle, i64)>> {
    let mut out: BTreeMap<String, Vec<(Candle, i64)>> = BTreeMap::new();
    for r in records {
        let c = codec::decode(r.payload.as_deref().expect("payload")).expect("a valid candle");
        if c.source != Source::Replay {
            continue;
        }
        let shift = r
            .headers
            .get(SHIFT_HEADER)
            .unwrap_or_else(|| panic!("{} at {}: no {SHIFT_HEADER} header", c.symbol, c.open_time))
            .parse()
            .expect("a whole number of ms");
        out.entry(c.symbol.clone()).or_default().push((c, shift));
    }
    out
}

/// Each symbol's replay stream is its dataset under one shift, every dataset candle of the
/// span once, in order. Returns the shift of each symbol.
#[track_caller]
fn assert_one_timeline_on_topic(
    records: &[TopicRecord],
    dataset: &BTreeMap<String, BTreeMap<i64, Candle>>,
) -> BTreeMap<String, i64> {
    let mut shifts = BTreeMap::new();
    let by_symbol = replay_messages(records);
    assert_eq!(
        by_symbol.keys().collect::<Vec<_>>(),
        SYMBOLS.iter().collect::<Vec<_>>()
    );
    for (symbol, sent) in by_symbol {
        let shift = sent[0].1;
        let rows = &dataset[&symbol];
        let first = sent[0].0.open_time - shift;
        let last = sent[sent.len() - 1].0.open_time - shift;
        let want: Vec<&Candle> = rows.range(first..=last).map(|(_, c)| c).collect();
        assert_eq!(
            sent.len(),
            want.len(),
            "{symbol}: every dataset candle from {first} to {last} once"
        );
        for (i, ((c, s), row)) in sent.iter().zip(want).enumerate() {
            assert_eq!(*s, shift, "{symbol} message {i}: one shift header");
            let mut original = c.clone();
            original.open_time -= shift;
            original.produced_at = None;
            assert_eq!(&original, row, "{symbol} message {i} is its dataset candle");
        }
        shifts.insert(symbol, shift);
    }
    shifts
}

/// Every replay 1m candle in InfluxDB is its dataset candle under the symbol's shift, and
/// the span's dataset candles are all there.
#[track_caller]
fn assert_one_timeline_in_influx(
    influx: &Influxd,
    db: &str,
    dataset: &BTreeMap<String, BTreeMap<i64, Candle>>,
    shifts: &BTreeMap<String, i64>,
) {
    for (symbol, shift) in shifts {
        let rows = influx.rows(
            db,
            &format!(
                "SELECT \"open\", \"high\", \"low\", \"close\", \"volume\" FROM \"candle\" \
                 WHERE \"interval\" = '1m' AND \"source\" = 'replay' AND \"symbol\" = '{symbol}'"
            ),
        );
        assert!(!rows.is_empty(), "{symbol}: 1m candles in InfluxDB");
        let times: Vec<i64> = rows
            .iter()
            .map(|r| r["time"].as_i64().expect("epoch ms"))
            .collect();
        let (first, last) = (times[0] - shift, times[times.len() - 1] - shift);
        let want: Vec<i64> = dataset[symbol]
            .range(first..=last)
            .map(|(t, _)| t + shift)
            .collect();
        assert_eq!(
            times, want,
            "{symbol}: the span's dataset minutes, each once"
        );
        for r in &rows {
            let t = r["time"].as_i64().unwrap();
            let c = &dataset[symbol][&(t - shift)];
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            assert_eq!(
                [f("open"), f("high"), f("low"), f("close"), f("volume")],
                [c.open, c.high, c.low, c.close, c.volume],
                "{symbol} at {t}: the dataset candle of {} moved by {shift} ms",
                t - shift
            );
        }
    }
}

#[test]
fn three_producer_restarts_mid_replay_keep_one_timeline_and_drop_nothing() {
    let influx = Influxd::shared();
    let run = ConsumerRun::new("timeline", 3);
    let dir = dataset();
    let mut consumer = run.consumer(influx, &[]);
    let mut p = producer(&run, dir.path(), &["--mode", "replay"]);
    for restart in 1..=RESTARTS {
        // ~80 candles: 4 s into the 18 s backfill per process, so each stop is mid-replay.
        wait_until(
            PIPELINE_TIMEOUT,
            "the producer to send some candles",
            || {
                p.assert_running();
                acked(&p, "replay") >= 80.0
            },
        );
        p.stop_cleanly();
        eprintln!("restart {restart}: stopped after 80+ candles");
        p = producer(&run, dir.path(), &["--mode", "replay"]);
    }
    // The last process catches up and reaches the present (then ticks once a minute).
    wait_until(PIPELINE_TIMEOUT, "the replay to reach the present", || {
        p.assert_running();
        let newest = p.metric("candlepipe_producer_last_candle_timestamp_seconds") * 1000.0;
        newest >= (now_ms() - 2 * M) as f64
    });
    p.stop_cleanly();

    let (records, shifts) = assert_consumed_as_one_timeline(influx, &run, &mut consumer);
    assert!(
        p.full_log().contains("continuing the topic's timeline"),
        "the last process says what it continued:\n{}",
        p.log()
    );
    consumer.stop_cleanly();
    eprintln!(
        "{} replay candles over {RESTARTS} restarts, shifts {shifts:?}",
        records.len()
    );
}

/// `POST /mode` on the loopback (no token needed there).
fn switch(p: &ServiceProcess, to: &str) {
    let (status, body) = post_json(
        &format!("http://127.0.0.1:{}/mode", p.http_port),
        &format!("{{\"mode\":\"{to}\"}}"),
        None,
    )
    .expect("POST /mode answers");
    assert_eq!(status, 200, "switch to {to}: {body}");
}

#[test]
fn live_to_replay_to_live_after_a_restart_keeps_each_stream_on_its_timeline() {
    let influx = Influxd::shared();
    let run = ConsumerRun::new("timeline-switch", 3);
    let dir = dataset();
    let mut consumer = run.consumer(influx, &[]);
    // A replay process runs for a while and stops.
    let mut p = producer(&run, dir.path(), &["--mode", "replay"]);
    wait_until(PIPELINE_TIMEOUT, "the first replay", || {
        p.assert_running();
        acked(&p, "replay") >= 100.0
    });
    p.stop_cleanly();

    // A new process starts live (a fake Yahoo half an hour behind, so nothing is "future").
    let now = now_ms().div_euclid(M) * M;
    let live_rows = read_candles(&testdata(&format!("real-ohlcv/{LIVE_SYMBOL}.parquet")));
    let fake = YahooFake::start(now - 30 * M + 10_000);
    fake.serve(LIVE_SYMBOL, &rebased(&live_rows[..300], now - 200 * M));
    let live = format!(
        "--mode live --live-symbols {LIVE_SYMBOL} --poll-interval 200ms --live-backfill 6h \
         --yahoo-base-url {}",
        fake.base_url()
    );
    let live_flags: Vec<&str> = live.split_whitespace().collect();
    let live_closed = |records: &[TopicRecord]| -> Vec<i64> {
        records
            .iter()
            .filter_map(|r| codec::decode(r.payload.as_deref()?).ok())
            .filter(|c| c.source == Source::Live && c.closed)
            .map(|c| c.open_time)
            .collect()
    };
    let fake_closed = || -> Vec<i64> {
        fake.closed_candles(LIVE_SYMBOL)
            .iter()
            .map(|c| c.open_time)
            .collect()
    };
    let mut p = producer(&run, dir.path(), &live_flags);
    wait_until(PIPELINE_TIMEOUT, "the live backfill", || {
        p.assert_running();
        live_closed(&read_topic(&run.brokers, &run.topic)) == fake_closed()
    });
    // Live → replay: the replay continues the first process's timeline.
    switch(&p, "replay");
    wait_until(PIPELINE_TIMEOUT, "the replay to go on", || {
        p.assert_running();
        acked(&p, "replay") >= 100.0
    });
    // Live minutes pass meanwhile. Replay → live: live catches up after its newest candle.
    fake.advance(3 * M);
    switch(&p, "live");
    wait_until(PIPELINE_TIMEOUT, "live to catch up", || {
        p.assert_running();
        live_closed(&read_topic(&run.brokers, &run.topic)) == fake_closed()
    });
    p.stop_cleanly();

    let (records, _) = assert_consumed_as_one_timeline(influx, &run, &mut consumer);
    assert_eq!(
        live_closed(&records),
        fake_closed(),
        "each closed live minute once, in order"
    );
    consumer.stop_cleanly();
}
