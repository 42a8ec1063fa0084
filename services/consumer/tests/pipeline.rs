//! The consumer binary against a real Apache Kafka broker and a real InfluxDB 2 (v2 API): what it
//! writes must not depend on redeliveries, crashes or InfluxDB outages, and bad messages must
//! end up in the dead-letter topic without stopping anything.

use candlepipe_model::Candle;
use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::pipeline::{
    assert_same_content, count_points, produce_candles, reference_content, snapshot, ConsumerRun,
    Snapshot, PIPELINE_TIMEOUT,
};
use candlepipe_testkit::{produce_raw, read_topic, testdata, wait_until, Influxd, Kafka};
use std::time::Duration;

const LONG: Duration = PIPELINE_TIMEOUT;

fn real(name: &str) -> Vec<Candle> {
    read_candles(&testdata(&format!("real-ohlcv/{name}.parquet")))
}

fn reference(name: &str, candles: &[Candle]) -> Snapshot {
    reference_content(name, candles)
}

#[test]
fn every_message_delivered_twice_gives_identical_content() {
    let candles = real("XRP-ETH");
    let once = reference("once", &candles);
    assert!(!once.is_empty());
    let n_1m = once
        .keys()
        .filter(|k| k.0 == "candle" && k.2 == "1m")
        .count();
    assert_eq!(n_1m, candles.len(), "one 1m point per candle");

    let twice: Vec<Candle> = candles
        .iter()
        .flat_map(|c| [c.clone(), c.clone()])
        .collect();
    let run = ConsumerRun::new("twice", 3);
    produce_candles(&Kafka::shared().brokers, &run.topic, &twice);
    let got = run.consume_all(Influxd::shared(), twice.len(), &[]);
    assert_same_content(&once, &got, 0.0);
}

#[test]
fn sigkill_at_several_points_while_streaming_gives_identical_content() {
    let mut candles = real("UNITTEST-BTC");
    candles.extend(real("XRP-ETH"));
    candles.sort_by_key(|c| c.open_time);
    let expected = reference("killref", &candles);

    let influx = Influxd::shared();
    let run = ConsumerRun::new("kill", 3);
    let brokers = &Kafka::shared().brokers;
    let chunks: Vec<&[Candle]> = candles.chunks(candles.len() / 4 + 1).collect();
    let mut produced = 0;
    for chunk in &chunks[..3] {
        produce_candles(brokers, &run.topic, chunk);
        produced += chunk.len();
        // Small batches so the kill lands between commits, mid-stream.
        let mut c = run.consumer(influx, &["--max-batch", "700"]);
        wait_until(LONG, "some progress before the kill", || {
            c.assert_running();
            c.metric("candlepipe_consumer_batches_total") >= 3.0
        });
        c.signal(libc::SIGKILL);
        assert_eq!(c.wait_exit(LONG), None, "killed by the signal");
    }
    produce_candles(brokers, &run.topic, chunks[3]);
    produced += chunks[3].len();
    assert_eq!(produced, candles.len());
    // The last member sees whatever the killed ones did not commit, rebuilding state first.
    let mut c = run.consumer(influx, &[]);
    wait_until(LONG, "the stream to be fully written", || {
        c.assert_running();
        count_points(influx, &run.db, "candle", "close", "\"interval\" = '1m'") == candles.len()
            && c.metric("candlepipe_consumer_lag_messages") == 0.0
            && c.metric("candlepipe_consumer_batches_total") >= 1.0
    });
    // Let it finish whatever batch is in flight, then compare.
    c.signal(libc::SIGTERM);
    assert_eq!(c.wait_exit(LONG), Some(0), "{}", c.log());
    assert!(
        c.metric("candlepipe_consumer_rebuild_messages_total") >= 0.0,
        "metric exists"
    );
    assert_same_content(&expected, &snapshot(influx, &run.db), 1e-9);
}

#[test]
fn an_influxdb_outage_loses_nothing_and_commits_nothing_unwritten() {
    let candles = real("XRP-ETH");
    let expected = reference("outageref", &candles);
    let mut influx = Influxd::start();
    let run = ConsumerRun::new("outage", 1);
    let brokers = Kafka::shared().brokers.clone();
    let (first, second) = candles.split_at(candles.len() / 2);

    produce_candles(&brokers, &run.topic, first);
    let mut c = run.consumer(&influx, &[]);
    wait_until(LONG, "the first half to be written", || {
        c.metric("candlepipe_consumer_messages_total") >= first.len() as f64
    });
    let committed_before = run.committed();
    assert_eq!(committed_before, first.len() as i64);

    influx.stop();
    produce_candles(&brokers, &run.topic, second);
    // The outage lasts until the consumer has clearly noticed it: retries and backpressure.
    wait_until(LONG, "the consumer to retry and pause fetching", || {
        c.metric("candlepipe_influx_write_retries_total") >= 5.0
            && c.metric("candlepipe_consumer_backpressure") == 1.0
    });
    let outage_started = std::time::Instant::now();
    while outage_started.elapsed() < Duration::from_secs(30) {
        c.assert_running();
        assert_eq!(
            run.committed(),
            committed_before,
            "no offset is committed while nothing can be written"
        );
        std::thread::sleep(Duration::from_secs(2)); // the outage itself, not a wait for a condition
    }
    influx.restart();
    wait_until(LONG, "everything to be written after the outage", || {
        c.assert_running();
        c.metric("candlepipe_consumer_messages_total") >= candles.len() as f64
    });
    assert_eq!(run.committed(), candles.len() as i64);
    assert_eq!(
        c.metric("candlepipe_consumer_backpressure"),
        0.0,
        "fetching resumed"
    );
    c.assert_running();
    assert_same_content(&expected, &snapshot(&influx, &run.db), 0.0);
}

/// At least 30 kinds of bad message, each with what its DLQ `error` header must mention.
fn bad_corpus() -> Vec<(Vec<u8>, &'static str)> {
    let good = r#"{"v":1,"source":"replay","symbol":"SYM","interval":"1m","open_time":1614556800000,"open":10.0,"high":12.0,"low":9.0,"close":11.0,"volume":3.0,"closed":true}"#;
    let with = |from: &str, to: &str| good.replace(from, to).into_bytes();
    let sym = |s: &str| good.replace("\"SYM\"", s).into_bytes();
    vec![
        (b"{".to_vec(), "malformed JSON"),
        (b"hello".to_vec(), "malformed JSON"),
        (b"[]".to_vec(), "malformed JSON"),
        (b"\"a string\"".to_vec(), "malformed JSON"),
        (b"null".to_vec(), "malformed JSON"),
        (Vec::new(), "empty payload"),
        (vec![b' '; 1_000_000], "larger than"),
        (vec![0xff, 0xfe, 0x00, 0x01], "malformed JSON"),
        (format!("{good}garbage").into_bytes(), "malformed JSON"),
        (with("\"v\":1", "\"v\":2"), "unsupported schema version 2"),
        (with("\"v\":1,", ""), "missing field `v`"),
        (with("\"open\":10.0,", ""), "missing field `open`"),
        (with("\"symbol\":\"SYM\",", ""), "missing field `symbol`"),
        (
            with("\"open\":10.0", "\"open\":\"10.0\""),
            "invalid type: string",
        ),
        (
            with("\"open\":10.0", "\"open\":\"NaN\""),
            "invalid type: string",
        ),
        (
            with("\"high\":12.0", "\"high\":\"Infinity\""),
            "invalid type: string",
        ),
        (with("\"high\":12.0", "\"high\":1e400"), "malformed JSON"),
        // Valid, but 2099-12-31: kept, it would make every later SYM candle "late".
        (
            with("1614556800000", "4102444740000"),
            "ahead of the consumer's clock",
        ),
        (
            with("\"volume\":3.0", "\"volume\":-3.0"),
            "`volume` is negative",
        ),
        (with("\"low\":9.0", "\"low\":-9.0"), "`low` is negative"),
        (
            with("\"high\":12.0", "\"high\":8.0"),
            "high 8 is below low 9",
        ),
        (
            with("\"open\":10.0", "\"open\":13.0"),
            "`open` = 13 is outside",
        ),
        (
            with("\"close\":11.0", "\"close\":8.5"),
            "`close` = 8.5 is outside",
        ),
        (with("1614556800000", "1614556800001"), "not aligned"),
        (with("1614556800000", "0"), "outside 2000-01-01"),
        (
            with("1614556800000", "32503680000000"),
            "outside 2000-01-01",
        ),
        (with("1614556800000", "1614556800000.5"), "malformed JSON"),
        (
            with("\"closed\":true", "\"closed\":true,\"trades\":-5"),
            "invalid value: integer `-5`",
        ),
        (
            with("\"closed\":true", "\"closed\":true,\"trades\":1.5"),
            "invalid type: floating point",
        ),
        (
            with("\"closed\":true", "\"closed\":true,\"quote_volume\":-1"),
            "`quote_volume` is negative",
        ),
        (
            with("\"replay\"", "\"kraken\""),
            "unknown source \"kraken\"",
        ),
        (with("\"1m\"", "\"5m\""), "unsupported interval \"5m\""),
        (
            with("\"open\":10.0,", "\"open\":10.0,\"open\":10.0,"),
            "duplicate field `open`",
        ),
        (sym("\"\""), "symbol is empty"),
        (sym(&format!("\"{}\"", "A".repeat(33))), "longer than 32"),
        (sym("\"BTC USDT\""), "contains ' '"),
        (sym("\"BTC,USDT\""), "contains ','"),
        (sym("\"BTC\\\"USDT\""), "contains '\"'"),
        (sym("\"BTC\\\\USDT\""), "contains '\\\\'"),
        (sym("\"BTC\\nUSDT\""), "contains '\\n'"),
        (sym("\"a=b\""), "contains '='"),
    ]
}

#[test]
fn a_bad_input_corpus_goes_to_the_dlq_and_the_run_continues() {
    let influx = Influxd::shared();
    let run = ConsumerRun::new("poison", 1);
    let brokers = Kafka::shared().brokers.clone();
    let corpus = bad_corpus();
    assert!(corpus.len() >= 30);
    let mut first = Candle::ohlcv(
        "GOOD-USDT",
        candlepipe_model::Source::Replay,
        1_614_556_800_000,
        1.0,
        2.0,
        0.5,
        1.5,
        7.0,
    );
    first.produced_at = Some(1);
    let mut last = first.clone();
    last.open_time += 60_000;
    produce_candles(&brokers, &run.topic, std::slice::from_ref(&first));
    let records: Vec<(Option<&[u8]>, &[u8])> = corpus
        .iter()
        .map(|(p, _)| (Some(b"SYM".as_slice()), p.as_slice()))
        .collect();
    produce_raw(&brokers, &run.topic, &records);
    produce_candles(&brokers, &run.topic, std::slice::from_ref(&last));
    let total = corpus.len() + 2;

    let mut c = run.consumer(influx, &[]);
    wait_until(LONG, "the whole corpus to be processed", || {
        c.assert_running();
        c.metric("candlepipe_consumer_messages_total") >= total as f64
    });
    assert_eq!(
        c.metric("candlepipe_consumer_invalid_total"),
        corpus.len() as f64
    );
    assert_eq!(
        c.metric("candlepipe_consumer_dlq_total"),
        corpus.len() as f64
    );

    let dlq = read_topic(&brokers, &run.dlq);
    assert_eq!(
        dlq.len(),
        corpus.len(),
        "every bad message is in the DLQ once"
    );
    for (i, (record, (payload, reason))) in dlq.iter().zip(&corpus).enumerate() {
        assert_eq!(
            record.payload.as_deref().unwrap_or_default(),
            payload.as_slice(),
            "#{i}: original payload"
        );
        let error = &record.headers["error"];
        assert!(
            error.contains(reason),
            "#{i}: error {error:?} should mention {reason:?}"
        );
        assert_eq!(record.headers["source-topic"], run.topic);
        assert_eq!(record.headers["source-partition"], "0");
        assert_eq!(
            record.headers["source-offset"],
            (i + 1).to_string(),
            "#{i}: offset"
        );
        assert_eq!(record.headers["stage"], "decode");
    }
    // Only the good symbol reached InfluxDB, with both its candles: the run went on.
    let symbols = influx.rows(
        &run.db,
        "SHOW TAG VALUES FROM \"candle\" WITH KEY = \"symbol\"",
    );
    let names: Vec<&str> = symbols
        .iter()
        .map(|r| r["value"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["GOOD-USDT"]);
    assert_eq!(
        count_points(influx, &run.db, "candle", "close", "\"interval\" = '1m'"),
        2
    );
    c.signal(libc::SIGTERM);
    assert_eq!(c.wait_exit(LONG), Some(0), "{}", c.log());
}
