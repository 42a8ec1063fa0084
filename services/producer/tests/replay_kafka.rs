//! End to end against a real Apache Kafka broker: the `producer` binary replays parquet files with
//! `--speed max --no-loop`, and the topic is read back with an independent rdkafka consumer.
//! Every row must be there exactly once, keyed by symbol, in time order per symbol, with the
//! file's values; bad files and bad rows must never reach the topic.

use arrow_array::{Float64Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use candlepipe_model::{codec, Candle};
use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::pipeline::create_topic_with;
use candlepipe_testkit::{
    java_partitions, read_topic, testdata, topic_configs, unique, wait_until, Kafka,
};
use parquet::arrow::ArrowWriter;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

/// Runs the producer to completion (it exits by itself with `--no-loop`).
fn replay(dataset: &Path, topic: &str, extra: &[&str]) -> Output {
    let kafka = Kafka::shared();
    let mut child = Command::new(env!("CARGO_BIN_EXE_producer"))
        .args([
            "--mode",
            "replay",
            "--speed",
            "max",
            "--no-loop",
            "--no-rebase",
        ])
        .arg("--dataset")
        .arg(dataset)
        .args(["--brokers", &kafka.brokers, "--topic", topic])
        .args(["--http-addr", "127.0.0.1:0"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start producer");
    // Drain stderr on a thread so a chatty producer never blocks on a full pipe.
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut stderr, &mut s).ok();
        s
    });
    wait_until(Duration::from_secs(600), "the producer to exit", || {
        child.try_wait().expect("wait").is_some()
    });
    let status = child.wait().expect("status");
    Output {
        status,
        stdout: Vec::new(),
        stderr: reader.join().expect("stderr reader"),
    }
}

fn dataset_dir(files: &[PathBuf]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in files {
        std::fs::copy(f, dir.path().join(f.file_name().unwrap())).expect("copy fixture");
    }
    dir
}

fn decoded(topic: &str) -> BTreeMap<String, Vec<Candle>> {
    let mut by_symbol: BTreeMap<String, Vec<Candle>> = BTreeMap::new();
    for r in read_topic(&Kafka::shared().brokers, topic) {
        let c = codec::decode(r.payload.as_deref().expect("payload")).expect("valid message");
        assert_eq!(r.key_str(), c.symbol, "the key is the symbol");
        by_symbol.entry(c.symbol.clone()).or_default().push(c);
    }
    by_symbol
}

fn assert_topic_equals_files(topic: &str, files: &[PathBuf]) {
    let got = decoded(topic);
    let mut total = 0;
    for f in files {
        let expected = read_candles(f);
        total += expected.len();
        let symbol = &expected[0].symbol;
        let sent = got
            .get(symbol)
            .unwrap_or_else(|| panic!("nothing on the topic for {symbol}"));
        assert_eq!(
            sent.len(),
            expected.len(),
            "{symbol}: every row exactly once"
        );
        for (i, (s, e)) in sent.iter().zip(&expected).enumerate() {
            let mut s = s.clone();
            assert!(
                s.produced_at.is_some(),
                "{symbol} row {i}: produced_at stamped"
            );
            s.produced_at = None;
            assert_eq!(
                &s, e,
                "{symbol} row {i}: values equal to the file, in file order"
            );
        }
    }
    assert_eq!(
        got.values().map(Vec::len).sum::<usize>(),
        total,
        "no extra messages"
    );
}

fn bundled_dataset_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dataset")
}

fn bundled_dataset() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(bundled_dataset_dir())
        .expect("dataset/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "dataset/ holds at least 5 pairs");
    files
}

#[test]
fn the_bundled_dataset_arrives_exactly_once_in_order() {
    let files = bundled_dataset();
    let topic = unique("replay-bundled");
    let out = replay(&bundled_dataset_dir(), &topic, &[]);
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_topic_equals_files(&topic, &files);
}

/// The topic the producer creates is the log of record: it keeps everything (Kafka's default
/// would delete candles after 7 days). And each symbol lands on the partition Apache Kafka's
/// Java producer would pick for its key (murmur2), asked of Kafka's own Java code.
#[test]
fn the_created_topic_keeps_everything_and_keys_land_where_java_puts_them() {
    let topic = unique("replay-log-of-record");
    let out = replay(&bundled_dataset_dir(), &topic, &[]);
    assert!(
        out.status.success(),
        "producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let brokers = &Kafka::shared().brokers;
    let configs = topic_configs(brokers, &topic);
    assert_eq!(configs.get("retention.ms").map(String::as_str), Some("-1"));
    assert_eq!(
        configs.get("retention.bytes").map(String::as_str),
        Some("-1")
    );

    let records = read_topic(brokers, &topic);
    let placed: BTreeMap<String, i32> = records
        .iter()
        .map(|r| (r.key_str().to_owned(), r.partition))
        .collect();
    for r in &records {
        assert_eq!(
            placed[r.key_str()],
            r.partition,
            "{}: one partition",
            r.key_str()
        );
    }
    let keys: Vec<&str> = placed.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "the bundled symbols: {keys:?}");
    assert_eq!(placed, java_partitions(&keys, 6));
}

/// An existing topic is never changed, but one that deletes old candles gets a warning that
/// names the setting and the command that lifts it.
#[test]
fn a_finite_retention_on_an_existing_topic_is_warned_about() {
    let topic = unique("replay-finite");
    let brokers = &Kafka::shared().brokers;
    create_topic_with(brokers, &topic, 6, 1, &[("retention.ms", "86400000")]);
    let out = replay(&bundled_dataset_dir(), &topic, &[]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "producer failed: {log}");
    let warning = log
        .lines()
        .find(|l| l.contains("deletes old candles"))
        .unwrap_or_else(|| panic!("no retention warning in:\n{log}"));
    assert!(warning.contains("WARN"), "{warning}");
    assert!(warning.contains("retention.ms=86400000"), "{warning}");
    assert!(
        warning.contains("retention.ms=-1,retention.bytes=-1"),
        "{warning}"
    );
    assert_eq!(topic_configs(brokers, &topic)["retention.ms"], "86400000");
}

#[test]
fn real_candles_with_gaps_arrive_exactly_once_in_order() {
    let files = vec![
        testdata("real-ohlcv/XRP-ETH.parquet"),
        testdata("real-ohlcv/UNITTEST-BTC.parquet"),
    ];
    let dir = dataset_dir(&files);
    let topic = unique("replay-real");
    let out = replay(dir.path(), &topic, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_topic_equals_files(&topic, &files);
}

#[test]
fn a_corrupt_file_stops_the_start_and_names_the_file() {
    let dir = dataset_dir(&[testdata("real-ohlcv/XRP-ETH.parquet")]);
    std::fs::write(
        dir.path().join("BROKEN-USDT.parquet"),
        b"PAR1 this is not parquet",
    )
    .unwrap();
    let topic = unique("replay-corrupt");
    let out = replay(dir.path(), &topic, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a corrupt file must fail the start");
    assert!(
        stderr.contains("BROKEN-USDT.parquet"),
        "error names the file: {stderr}"
    );
    assert!(
        read_topic(&Kafka::shared().brokers, &topic).is_empty(),
        "nothing was sent"
    );
}

#[test]
fn skip_bad_files_sends_the_good_ones_only() {
    let good = testdata("real-ohlcv/XRP-ETH.parquet");
    let dir = dataset_dir(std::slice::from_ref(&good));
    std::fs::write(dir.path().join("EMPTY-USDT.parquet"), b"").unwrap();
    let mut truncated = std::fs::read(&good).unwrap();
    truncated.truncate(truncated.len() / 2);
    std::fs::write(dir.path().join("TRUNC-USDT.parquet"), truncated).unwrap();
    let topic = unique("replay-skip");
    let out = replay(dir.path(), &topic, &["--skip-bad-files"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("EMPTY-USDT.parquet") && stderr.contains("TRUNC-USDT.parquet"),
        "each skipped file is named: {stderr}"
    );
    assert_topic_equals_files(&topic, &[good]);
}

/// Writes a hand-made OHLCV-only file (float64 columns, integer-ms open_time).
fn write_ohlcv(path: &Path, rows: &[[f64; 5]], start_ms: i64) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("open_time", DataType::Int64, false),
        Field::new("open", DataType::Float64, false),
        Field::new("high", DataType::Float64, false),
        Field::new("low", DataType::Float64, false),
        Field::new("close", DataType::Float64, false),
        Field::new("volume", DataType::Float64, false),
    ]));
    let col = |k: usize| {
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r[k]).collect::<Vec<_>>(),
        ))
    };
    let times = Int64Array::from(
        (0..rows.len() as i64)
            .map(|i| start_ms + i * 60_000)
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(times), col(0), col(1), col(2), col(3), col(4)],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn bad_rows_are_counted_and_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        [10.0, 11.0, 9.0, 10.5, 1.0],     // good
        [f64::NAN, 11.0, 9.0, 10.5, 1.0], // NaN open
        [10.0, 11.0, 9.0, 10.5, -1.0],    // negative volume
        [10.0, 9.0, 11.0, 10.0, 1.0],     // high < low
        [12.0, 11.0, 9.0, 10.5, 1.0],     // open above high
        [10.0, 11.0, 9.0, 10.5, 2.0],     // good
    ];
    write_ohlcv(
        &dir.path().join("HAND-MADE.parquet"),
        &rows,
        1_614_556_800_000,
    );
    let topic = unique("replay-bad-rows");
    let out = replay(dir.path(), &topic, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let got = decoded(&topic);
    let sent = &got["HAND-MADE"];
    assert_eq!(sent.len(), 2, "only the two good rows are sent");
    assert_eq!(sent[0].open_time, 1_614_556_800_000);
    assert_eq!(sent[1].open_time, 1_614_556_800_000 + 5 * 60_000);
    assert_eq!(sent[1].volume, 2.0);
    assert_eq!(sent[0].quote_volume, None, "absent columns stay absent");
    assert!(
        stderr.contains("HAND-MADE.parquet"),
        "bad rows are logged with the file: {stderr}"
    );
}
