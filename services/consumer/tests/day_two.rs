//! Day-two operations on the real stack (Apache Kafka, InfluxDB 2): what an operator sees
//! when candles arrive too late, and the Kappa recomputation the design is named for.
//!
//! * Late data is visible: the consumer drops candles older than its horizon (README "Late
//!   data") and says so in a rate-limited WARN naming the symbol and times, not only in a
//!   counter; in a log file, as plain text without colour codes.
//! * The topic is the log of record: a consumer with a new group reads it from the earliest
//!   offset into a new bucket, and the bucket it builds equals the one built live.

use candlepipe_model::{Candle, Source};
use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::pipeline::{
    assert_same_content, produce_candles, snapshot, ConsumerRun, PIPELINE_TIMEOUT,
};
use candlepipe_testkit::{testdata, unique, wait_until, Influxd};

const MINUTE: i64 = 60_000;

/// 200 in-order candles, then 50 from three hours before the newest: every one of the 50 is
/// dropped, and the log says so in far fewer than 50 lines, the first naming the symbol, the
/// dropped candle's time and the symbol's newest time.
#[test]
fn late_drops_are_logged_rate_limited_with_the_symbol_and_times() {
    let influx = Influxd::shared();
    let run = ConsumerRun::new("late-log", 1);
    let t0 = 1_700_000_000_000 / MINUTE * MINUTE;
    let candle = |m: i64| {
        Candle::ohlcv(
            "LATE-USDT",
            Source::Replay,
            t0 + m * MINUTE,
            10.0,
            12.0,
            9.0,
            11.0,
            1.0,
        )
    };
    let in_order: Vec<Candle> = (300..500).map(candle).collect();
    let late: Vec<Candle> = (300 - 180..300 - 130).map(candle).collect();
    produce_candles(&run.brokers, &run.topic, &in_order);
    produce_candles(&run.brokers, &run.topic, &late);
    let mut c = run.consumer(influx, &[]);
    wait_until(PIPELINE_TIMEOUT, "every message to be processed", || {
        c.assert_running();
        c.metric("candlepipe_consumer_messages_total") >= 250.0
    });
    assert_eq!(c.metric("candlepipe_consumer_late_dropped_total"), 50.0);
    let log = c.full_log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("dropped a late"))
        .collect();
    assert!(!warnings.is_empty(), "no late-drop warning in:\n{log}");
    // a log file gets plain text: no ANSI colour codes (they are for terminals)
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
    assert!(warnings.len() < 10, "not rate limited: {warnings:#?}");
    let first = warnings[0];
    assert!(first.contains("WARN"), "{first}");
    assert!(first.contains("LATE-USDT"), "{first}");
    let fmt = candlepipe_model::time::fmt_ms;
    assert!(first.contains(&fmt(t0 + 120 * MINUTE)), "{first}");
    assert!(first.contains(&fmt(t0 + 499 * MINUTE)), "{first}");
    c.stop_cleanly();
}

/// The Kappa recomputation: candles arrive in three parts while a consumer writes them
/// "live"; then a consumer with a new group and a new bucket rebuilds everything from the
/// topic alone (earliest offset), and both buckets hold the same points. Its progress shows
/// in the metrics an operator watches (messages processed, lag back to 0).
#[test]
fn a_new_group_rebuilds_from_the_topic_what_was_built_live() {
    let influx = Influxd::shared();
    let live = ConsumerRun::new("kappa", 3);
    let candles = read_candles(&testdata("real-ohlcv/XRP-ETH.parquet"));
    let thirds: Vec<&[Candle]> = candles.chunks(candles.len().div_ceil(3)).collect();
    let mut c = live.consumer(influx, &[]);
    let mut sent = 0;
    for part in thirds {
        produce_candles(&live.brokers, &live.topic, part);
        sent += part.len();
        wait_until(PIPELINE_TIMEOUT, "the part to be written", || {
            c.assert_running();
            c.metric("candlepipe_consumer_messages_total") >= sent as f64
        });
    }
    c.stop_cleanly();
    let built_live = snapshot(influx, &live.db);

    let rebuild = ConsumerRun {
        group: unique("kappa-rebuild-group"),
        db: unique("kappa_rebuild"),
        dlq: unique("kappa-rebuild-dlq"),
        ..live
    };
    let mut r = rebuild.consumer(influx, &[]);
    wait_until(
        PIPELINE_TIMEOUT,
        "the rebuild to read the whole topic",
        || {
            r.assert_running();
            r.metric("candlepipe_consumer_messages_total") >= candles.len() as f64
                && r.metric("candlepipe_consumer_lag_messages") == 0.0
        },
    );
    r.stop_cleanly();
    let rebuilt = snapshot(influx, &rebuild.db);
    assert!(
        rebuilt.len() > 2 * candles.len(),
        "candles, rollups and indicators: {} points",
        rebuilt.len()
    );
    assert_same_content(&built_live, &rebuilt, 1e-9);
}
