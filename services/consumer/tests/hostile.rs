//! Hostile input and bad days (issue 15), each reproduced against the consumer binary on a
//! real Apache Kafka broker and a real InfluxDB 2: a message too large to fetch, a candle
//! stamped ahead of the clock, a SIGTERM nothing can finish, a topic that does not exist
//! yet, an InfluxDB outage seen through the lag gauge, and rollup sums that overflow.

use candlepipe_model::{time, Candle, Source};
use candlepipe_testkit::pipeline::{
    count_points, create_topic, create_topic_with, produce_candles, ConsumerRun, ServiceProcess,
    PIPELINE_TIMEOUT,
};
use candlepipe_testkit::{get, produce_raw, read_topic, wait_until, Influxd, Kafka};
use std::time::Duration;

const LONG: Duration = PIPELINE_TIMEOUT;
const MINUTE: i64 = 60_000;

fn candle(symbol: &str, open_time: i64, volume: f64) -> Candle {
    let mut c = Candle::ohlcv(
        symbol,
        Source::Replay,
        open_time,
        10.0,
        12.0,
        9.0,
        11.0,
        volume,
    );
    c.produced_at = Some(1);
    c
}

/// The current minute's open time, Unix ms.
fn this_minute() -> i64 {
    time::now_ms() / MINUTE * MINUTE
}

fn readyz(c: &ServiceProcess) -> (u16, String) {
    get(&format!("http://127.0.0.1:{}/readyz", c.http_port)).unwrap_or((0, String::new()))
}

/// `len` pseudo-random bytes (xorshift64).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn ones(influx: &Influxd, db: &str) -> usize {
    count_points(influx, db, "candle", "close", "\"interval\" = '1m'")
}

/// A 2 MiB message between good candles, on a topic that allows 8 MiB, with the dead-letter
/// topic at Kafka's default `max.message.bytes` (1 MiB): its dead letter could never be
/// delivered, so the consumer failed on it at every start. Its dead letter now carries the
/// first 1,000,000 bytes. A 5 MiB one, over `--max-message-bytes`, cannot even be fetched:
/// once its partition is seen stalled (logged), it is skipped into the DLQ without a value.
#[test]
fn a_message_over_a_mebibyte_goes_to_the_dlq_and_the_partition_moves_on() {
    let influx = Influxd::shared();
    let run = ConsumerRun::on_replicated(
        &Kafka::shared().brokers,
        "huge",
        1,
        1,
        &[("max.message.bytes", "8388608")],
    );
    let t0 = 1_614_556_800_000;
    // Incompressible, so that no compression on the way makes them small.
    let big = noise(2 * 1024 * 1024, 1);
    let bigger = noise(5 * 1024 * 1024, 2);
    produce_candles(&run.brokers, &run.topic, &[candle("BIG-USDT", t0, 1.0)]);
    produce_raw(&run.brokers, &run.topic, &[(Some(b"BIG-USDT"), &big)]);
    produce_candles(
        &run.brokers,
        &run.topic,
        &[candle("BIG-USDT", t0 + MINUTE, 1.0)],
    );
    produce_raw(&run.brokers, &run.topic, &[(Some(b"BIG-USDT"), &bigger)]);
    produce_candles(
        &run.brokers,
        &run.topic,
        &[candle("BIG-USDT", t0 + 2 * MINUTE, 1.0)],
    );

    // The dead-letter topic with Kafka's default limit (the test broker allows 10 MiB).
    create_topic_with(
        &run.brokers,
        &run.dlq,
        1,
        1,
        &[("max.message.bytes", "1048588")],
    );
    let mut c = run.consumer(influx, &["--max-message-bytes", "4MiB"]);
    wait_until(LONG, "every good candle after the big messages", || {
        c.assert_running();
        ones(influx, &run.db) == 3 && run.committed() == 5
    });
    let dlq = read_topic(&run.brokers, &run.dlq);
    assert_eq!(dlq.len(), 2, "both big messages are dead letters");
    for (record, offset) in dlq.iter().zip(["1", "3"]) {
        assert_eq!(record.headers["source-offset"], offset);
        assert_eq!(
            record.headers["reason"], "too_large",
            "{:?}",
            record.headers
        );
    }
    // The 2 MiB one was fetched: its size is known, and its value kept as far as it fits.
    assert_eq!(dlq[0].headers["payload-bytes"], big.len().to_string());
    let kept = dlq[0].payload.as_deref().unwrap_or_default();
    assert_eq!(kept, &big[..1_000_000], "the first 1,000,000 bytes");
    assert_eq!(dlq[0].headers["payload-truncated"], "true");
    // The 5 MiB one could not be fetched: no value, and the error says why.
    assert!(dlq[1].payload.as_deref().unwrap_or_default().is_empty());
    assert!(
        dlq[1].headers["error"].contains("--max-message-bytes"),
        "{:?}",
        dlq[1].headers
    );
    assert!(c.log().contains("stalled"), "the stall was logged");
    assert_eq!(c.metric("candlepipe_consumer_skipped_too_large_total"), 1.0);
    // The partition watch re-evaluates on its own timer: wait for its next round rather
    // than racing it (the stall must clear, and readiness with it).
    wait_until(LONG, "the stall gauge back to 0 and /readyz 200", || {
        c.metric("candlepipe_consumer_stalled_partitions") == 0.0 && readyz(&c).0 == 200
    });
    c.stop_cleanly();
}

/// A symbol is being backfilled (its last 3 hours, oldest first) when one candle stamped a
/// minute ahead (inside `--max-future`, as a clock a little fast would stamp it) and one
/// 59 minutes ahead arrive: none of the backfill is late, and the far one is a dead letter.
#[test]
fn a_single_candle_ahead_does_not_make_its_symbol_late() {
    let influx = Influxd::shared();
    let run = ConsumerRun::new("ahead", 1);
    let now = this_minute();
    let backfill: Vec<Candle> = (1..=180)
        .rev()
        .map(|m| candle("AHEAD-USDT", now - m * MINUTE, 1.0))
        .collect();
    let (before, after) = backfill.split_at(20);
    produce_candles(&run.brokers, &run.topic, before);
    produce_candles(
        &run.brokers,
        &run.topic,
        &[candle("AHEAD-USDT", now + MINUTE, 5.0)],
    );
    produce_candles(
        &run.brokers,
        &run.topic,
        &[candle("AHEAD-USDT", now + 59 * MINUTE, 5.0)],
    );
    produce_candles(&run.brokers, &run.topic, after);

    let mut c = run.consumer(influx, &[]);
    wait_until(LONG, "every message to be processed", || {
        c.assert_running();
        c.metric("candlepipe_consumer_messages_total") >= 182.0
    });
    assert_eq!(c.metric("candlepipe_consumer_late_dropped_total"), 0.0);
    let dlq = read_topic(&run.brokers, &run.dlq);
    assert_eq!(dlq.len(), 1, "only the candle an hour ahead");
    assert_eq!(dlq[0].headers["source-offset"], "21");
    assert_eq!(dlq[0].headers["reason"], "future");
    wait_until(LONG, "the backfill and the near candle", || {
        ones(influx, &run.db) == 181
    });
    c.stop_cleanly();
}

/// SIGTERM while a batch's dead letter cannot be delivered (the broker is gone): the
/// consumer exits within `--shutdown-timeout` with a non-zero code, the batch uncommitted.
#[test]
fn sigterm_with_work_undone_exits_within_the_shutdown_timeout_non_zero() {
    let mut kafka = Kafka::start();
    let mut influx = Influxd::start();
    let run = ConsumerRun::on(&kafka.brokers, "term", 1);
    let t0 = 1_614_556_800_000;
    produce_candles(&run.brokers, &run.topic, &[candle("TERM-USDT", t0, 1.0)]);
    let mut c = run.consumer(&influx, &["--shutdown-timeout", "5s"]);
    wait_until(LONG, "the first batch", || {
        c.assert_running();
        c.metric("candlepipe_consumer_batches_total") >= 1.0
    });
    // The next batch (a candle and a bad message) waits for InfluxDB...
    influx.stop();
    produce_candles(
        &run.brokers,
        &run.topic,
        &[candle("TERM-USDT", t0 + MINUTE, 1.0)],
    );
    produce_raw(&run.brokers, &run.topic, &[(Some(b"TERM-USDT"), b"{")]);
    wait_until(LONG, "the batch to wait for InfluxDB", || {
        c.assert_running();
        c.metric("candlepipe_consumer_invalid_total") >= 1.0
            && c.metric("candlepipe_consumer_backpressure") == 1.0
    });
    // ...and once InfluxDB took it, its dead letter cannot be delivered.
    let written = c.metric("candlepipe_influx_points_written_total");
    kafka.stop();
    influx.restart();
    wait_until(LONG, "the batch's points to be written", || {
        c.assert_running();
        c.metric("candlepipe_influx_points_written_total") > written
    });
    c.signal(libc::SIGTERM);
    // Far below the 65 s the issue saw, far above the 5 s asked for.
    let code = c.wait_exit(Duration::from_secs(45));
    assert!(
        matches!(code, Some(n) if n != 0),
        "exit code {code:?}:\n{}",
        c.log()
    );
    assert!(c.log().contains("shutdown timeout"), "{}", c.log());
}

/// A consumer started before its topic exists: `/readyz` names the missing topic, and once
/// the topic is created its messages are consumed without librdkafka's 5-minute wait.
#[test]
fn a_topic_created_after_the_consumer_started_is_consumed_soon() {
    let influx = Influxd::shared();
    let run = ConsumerRun::new("late-topic", 1);
    let topic = candlepipe_testkit::unique("created-later");
    let mut c = run.consumer(influx, &["--topic", &topic]);
    wait_until(
        Duration::from_secs(60),
        "/readyz to name the missing topic",
        || {
            c.assert_running();
            let (status, body) = readyz(&c);
            status == 503 && body.contains(&topic) && body.contains("does not exist")
        },
    );
    create_topic(&run.brokers, &topic, 1);
    let t0 = 1_614_556_800_000;
    produce_candles(&run.brokers, &topic, &[candle("LATE-USDT", t0, 1.0)]);
    // librdkafka alone notices the topic after topic.metadata.refresh.interval.ms (5 min).
    wait_until(
        Duration::from_secs(90),
        "the topic's candle to be written",
        || {
            c.assert_running();
            ones(influx, &run.db) == 1
        },
    );
    wait_until(LONG, "/readyz 200", || readyz(&c).0 == 200);
    c.stop_cleanly();
}

/// While InfluxDB is down and fetching is paused, the lag gauge keeps up with what is
/// produced: it is computed from the committed offsets and the high watermarks.
#[test]
fn the_lag_gauge_keeps_rising_while_influxdb_is_down() {
    let mut influx = Influxd::start();
    let run = ConsumerRun::new("lag", 2);
    let t0 = 1_614_556_800_000;
    let first: Vec<Candle> = (0..50)
        .map(|m| candle("LAG-A", t0 + m * MINUTE, 1.0))
        .collect();
    produce_candles(&run.brokers, &run.topic, &first);
    let mut c = run.consumer(&influx, &[]);
    wait_until(LONG, "the first candles to be written", || {
        c.assert_running();
        run.committed() == 50
    });
    influx.stop();
    let more: Vec<Candle> = (50..100)
        .flat_map(|m| ["LAG-A", "LAG-B", "LAG-C"].map(|s| candle(s, t0 + m * MINUTE, 1.0)))
        .collect();
    produce_candles(&run.brokers, &run.topic, &more[..30]);
    wait_until(LONG, "fetching to be paused", || {
        c.assert_running();
        c.metric("candlepipe_consumer_backpressure") == 1.0
    });
    produce_candles(&run.brokers, &run.topic, &more[30..]);
    wait_until(
        LONG,
        "the lag gauge to count everything not committed",
        || {
            c.assert_running();
            c.metric("candlepipe_consumer_lag_messages") == more.len() as f64
        },
    );
    influx.restart();
    wait_until(LONG, "the lag to drain", || {
        c.assert_running();
        run.committed() == 200 && c.metric("candlepipe_consumer_lag_messages") == 0.0
    });
    c.stop_cleanly();
}

/// Volumes near f64::MAX: an hour of them sums to infinity. Such a candle is a dead letter
/// naming the field and the limit; the rollups of the others keep every field.
#[test]
fn rollup_sums_that_would_overflow_are_refused_not_silently_dropped() {
    let influx = Influxd::shared();
    let run = ConsumerRun::new("overflow", 1);
    let t0 = 1_614_556_800_000;
    let huge = 1e308;
    let mut candles: Vec<Candle> = (0..3)
        .map(|m| candle("OVF-USDT", t0 + m * MINUTE, 2.0))
        .collect();
    candles[1].volume = huge;
    candles[2].quote_volume = Some(huge);
    candles.push(candle("OVF-USDT", t0 + 3 * MINUTE, huge));
    candles.push(candle("OVF-USDT", t0 + 4 * MINUTE, 3.0));
    let records: Vec<Vec<u8>> = candles
        .iter()
        .map(|c| {
            // The model's encoder refuses these now; the wire format does not.
            format!(
                r#"{{"v":1,"source":"replay","symbol":"OVF-USDT","interval":"1m","open_time":{},"open":10.0,"high":12.0,"low":9.0,"close":11.0,"volume":{:e}{}}}"#,
                c.open_time,
                c.volume,
                c.quote_volume.map(|q| format!(r#","quote_volume":{q:e}"#)).unwrap_or_default()
            )
            .into_bytes()
        })
        .collect();
    let raw: Vec<(Option<&[u8]>, &[u8])> = records
        .iter()
        .map(|r| (Some(b"OVF-USDT".as_slice()), r.as_slice()))
        .collect();
    produce_raw(&run.brokers, &run.topic, &raw);
    let mut c = run.consumer(influx, &[]);
    wait_until(LONG, "every message to be processed", || {
        c.assert_running();
        c.metric("candlepipe_consumer_messages_total") >= 5.0
    });
    let dlq = read_topic(&run.brokers, &run.dlq);
    let offsets: Vec<&str> = dlq
        .iter()
        .map(|r| r.headers["source-offset"].as_str())
        .collect();
    assert_eq!(offsets, ["1", "2", "3"], "the three huge candles");
    for r in &dlq {
        assert!(
            r.headers["error"].contains("above the limit"),
            "{:?}",
            r.headers
        );
    }
    // The 1h rollup of the two good candles has all of its sums.
    let rows = influx.rows(
        &run.db,
        "SELECT volume, vwap FROM candle WHERE \"interval\" = '1h'",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["volume"].as_f64(), Some(5.0), "{rows:?}");
    assert!(
        rows[0]["vwap"].as_f64().is_some_and(f64::is_finite),
        "{rows:?}"
    );
    c.stop_cleanly();
}
