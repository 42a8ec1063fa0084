//! Switching a running producer between its sources with `POST /mode`, end to end: the
//! `producer` binary starts in live mode against a fake Yahoo (real candles, a clock the
//! test moves), writes to a real Kafka broker, and is switched live → replay → live. Both
//! sources' messages must appear, each in order per symbol and each minute once, the mode
//! gauge and `GET /mode` must follow every switch, the live source must be quiet while
//! replay runs (and vice versa), and with `--admin-token` a request without the right token
//! must be refused without changing anything.

use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::now_ms;
use candlepipe_model::{codec, Candle, Source};
use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::http_client::post_json;
use candlepipe_testkit::pipeline::ServiceProcess;
use candlepipe_testkit::yahoo::{rebased, YahooFake};
use candlepipe_testkit::{get, read_topic, testdata, unique, wait_until, Kafka};
use std::collections::BTreeMap;
use std::time::Duration;

const M: i64 = MINUTE_MS;
const TOKEN: &str = "switch-me-3f9a";
const LIVE_SYMBOL: &str = "UNITTEST-BTC";
const REPLAY_SYMBOL: &str = "XRP-ETH";
const WAIT: Duration = Duration::from_secs(180);

/// The topic's messages by (source, symbol), in partition order (= publish order).
fn published(topic: &str) -> BTreeMap<(Source, String), Vec<Candle>> {
    let mut out: BTreeMap<(Source, String), Vec<Candle>> = BTreeMap::new();
    for r in read_topic(&Kafka::shared().brokers, topic) {
        let c = codec::decode(r.payload.as_deref().expect("payload")).expect("a valid candle");
        assert_eq!(r.key_str(), c.symbol, "keyed by symbol");
        out.entry((c.source, c.symbol.clone())).or_default().push(c);
    }
    out
}

fn count(got: &BTreeMap<(Source, String), Vec<Candle>>, source: Source, symbol: &str) -> usize {
    got.get(&(source, symbol.to_owned())).map_or(0, Vec::len)
}

/// Open times of the closed live candles on the topic.
fn live_closed(got: &BTreeMap<(Source, String), Vec<Candle>>) -> Vec<i64> {
    got.get(&(Source::Live, LIVE_SYMBOL.to_owned()))
        .map(|cs| {
            cs.iter()
                .filter(|c| c.closed)
                .map(|c| c.open_time)
                .collect()
        })
        .unwrap_or_default()
}

fn fake_closed(fake: &YahooFake) -> Vec<i64> {
    fake.closed_candles(LIVE_SYMBOL)
        .iter()
        .map(|c| c.open_time)
        .collect()
}

/// `GET /mode`'s answer.
fn mode(port: u16) -> String {
    let (status, body) = get(&format!("http://127.0.0.1:{port}/mode")).expect("GET /mode answers");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    v["mode"].as_str().expect("a mode").to_owned()
}

/// The modes whose `candlepipe_producer_mode` gauge reads 1.
fn gauge_modes(p: &ServiceProcess) -> Vec<String> {
    p.metrics_text()
        .lines()
        .filter_map(|l| l.strip_prefix("candlepipe_producer_mode{mode=\""))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter(|(_, v)| v.trim() == "1")
        .map(|(m, _)| m.to_owned())
        .collect()
}

/// Candles of `source` the sink has seen acknowledged by Kafka.
fn acked(p: &ServiceProcess, source: &str) -> f64 {
    let prefix = format!("candlepipe_producer_candles_sent_total{{source=\"{source}\"}} ");
    p.metrics_text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn switch(port: u16, to: &str, bearer: Option<&str>) -> (u16, String) {
    post_json(
        &format!("http://127.0.0.1:{port}/mode"),
        &format!("{{\"mode\":\"{to}\"}}"),
        bearer,
    )
    .expect("POST /mode answers")
}

#[test]
fn live_to_replay_to_live_through_post_mode_guarded_by_a_token() {
    // Live: 400 real minutes, the first 300 before the present, the clock 60 minutes in.
    let now = now_ms().div_euclid(M) * M;
    let all = read_candles(&testdata(&format!("real-ohlcv/{LIVE_SYMBOL}.parquet")));
    let fake = YahooFake::start(now - 240 * M + 10_000);
    fake.serve(LIVE_SYMBOL, &rebased(&all[..400], now - 300 * M));
    // Replay: one real file, original timestamps, 10 market minutes per second.
    let dataset = tempfile::tempdir().expect("tempdir");
    let file = testdata(&format!("real-ohlcv/{REPLAY_SYMBOL}.parquet"));
    std::fs::copy(
        &file,
        dataset.path().join(format!("{REPLAY_SYMBOL}.parquet")),
    )
    .expect("copy");
    let replay_rows = read_candles(&file);

    let topic = unique("mode-switch");
    let args: Vec<String> = [
        "--mode",
        "live",
        "--brokers",
        &Kafka::shared().brokers,
        "--topic",
        &topic,
        "--symbols",
        LIVE_SYMBOL,
        "--yahoo-base-url",
        fake.base_url(),
        "--poll-interval",
        "200ms",
        "--live-backfill",
        "6h",
        "--dataset",
        dataset.path().to_str().expect("utf-8 path"),
        "--no-rebase",
        "--speed",
        "600",
        "--admin-token",
        TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let producer =
        ServiceProcess::start(std::path::Path::new(env!("CARGO_BIN_EXE_producer")), &args);
    let port = producer.http_port;

    // 1. Live (the gauge is set once the source runs, after the topic exists).
    assert_eq!(mode(port), "live");
    wait_until(WAIT, "the mode gauge to show live", || {
        gauge_modes(&producer) == ["live"]
    });
    wait_until(WAIT, "the live backfill", || {
        live_closed(&published(&topic)) == fake_closed(&fake)
    });

    // 2. Refused without the token and with a wrong one; nothing changes.
    for bearer in [None, Some("wrong-token")] {
        let (status, body) = switch(port, "replay", bearer);
        assert_eq!(status, 401, "POST /mode with {bearer:?}: {body}");
    }
    assert_eq!(mode(port), "live");
    assert_eq!(gauge_modes(&producer), ["live"]);
    assert_eq!(
        producer.metric("candlepipe_producer_mode_switches_total"),
        0.0
    );

    // 3. Live → replay. The answer comes once live stopped and its candles are on Kafka.
    // While replay writes continuously, progress is read from the sink's acknowledgement
    // counters (a topic reader would chase a moving end); the topic itself is read once the
    // sources are quiet again.
    let (status, body) = switch(port, "replay", Some(TOKEN));
    assert_eq!((status, body.contains("\"replay\"")), (200, true), "{body}");
    assert_eq!(mode(port), "replay");
    assert_eq!(gauge_modes(&producer), ["replay"]);
    let live_at_switch = acked(&producer, "live");
    wait_until(WAIT, "replayed candles", || {
        acked(&producer, "replay") >= 50.0
    });
    fake.advance(5 * M + 20_000); // live minutes pass while replay runs
    let replayed = acked(&producer, "replay");
    wait_until(WAIT, "replay to go on", || {
        acked(&producer, "replay") >= replayed + 50.0
    });
    assert_eq!(
        acked(&producer, "live"),
        live_at_switch,
        "live is quiet while replay runs"
    );

    // 4. Replay → live: it catches up on the minutes that passed, each once.
    let (status, body) = switch(port, "live", Some(TOKEN));
    assert_eq!((status, body.contains("\"live\"")), (200, true), "{body}");
    assert_eq!(mode(port), "live");
    assert_eq!(gauge_modes(&producer), ["live"]);
    let replay_at_switch = acked(&producer, "replay");
    wait_until(WAIT, "live to catch up after the switch back", || {
        live_closed(&published(&topic)) == fake_closed(&fake)
    });
    fake.advance(2 * M);
    wait_until(WAIT, "live to go on", || {
        live_closed(&published(&topic)) == fake_closed(&fake)
    });
    assert_eq!(
        producer.metric("candlepipe_producer_mode_switches_total"),
        2.0
    );
    assert_eq!(
        acked(&producer, "replay"),
        replay_at_switch,
        "replay is quiet while live runs"
    );

    // Both sources are on the topic, distinguishable, each in order.
    let got = published(&topic);
    assert_eq!(
        count(&got, Source::Replay, REPLAY_SYMBOL) as f64,
        replay_at_switch,
        "the topic holds every acknowledged replay candle, once"
    );
    assert_eq!(
        count(&got, Source::Live, LIVE_SYMBOL) as f64,
        acked(&producer, "live"),
        "the topic holds every acknowledged live candle, once"
    );
    let replay = &got[&(Source::Replay, REPLAY_SYMBOL.to_owned())];
    for (i, (sent, row)) in replay.iter().zip(&replay_rows).enumerate() {
        let mut sent = sent.clone();
        sent.produced_at = None;
        assert_eq!(&sent, row, "replay message {i} is row {i} of the file");
    }
    let live = &got[&(Source::Live, LIVE_SYMBOL.to_owned())];
    assert!(
        live.windows(2).all(|w| w[0].open_time <= w[1].open_time),
        "live messages never go back in time"
    );
    let closed = live_closed(&got);
    assert!(
        closed.windows(2).all(|w| w[0] < w[1]),
        "each closed live minute once, ascending"
    );
    assert_eq!(closed, fake_closed(&fake));
    assert!(
        !got.keys()
            .any(|(src, sym)| *src == Source::Live && sym == REPLAY_SYMBOL)
            && !got
                .keys()
                .any(|(src, sym)| *src == Source::Replay && sym == LIVE_SYMBOL),
        "each source publishes only its own symbols"
    );
}
