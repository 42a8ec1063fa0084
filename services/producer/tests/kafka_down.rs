//! The producer against an Apache Kafka broker that goes away for good: every delivery
//! fails. The failures must be visible without flooding the log (one line per kind per
//! interval, with a count, instead of one ERROR per candle), resent with backoff, and a
//! SIGTERM must end the process within `--shutdown-timeout`, with a non-zero exit code
//! because candles were left undelivered.

use candlepipe_testkit::pipeline::ServiceProcess;
use candlepipe_testkit::{testdata, unique, wait_until, Kafka};
use std::time::Duration;

const DELIVERY_ERRORS: &str = "candlepipe_producer_send_errors_total{kind=\"delivery\"}";

/// `name{labels}`'s value in a `/metrics` text (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_dead_broker_is_logged_in_summaries_and_shutdown_gives_up_after_its_timeout() {
    let mut kafka = Kafka::start();
    let dataset = tempfile::tempdir().unwrap();
    for f in ["UNITTEST-BTC.parquet", "XRP-ETH.parquet"] {
        std::fs::copy(testdata(&format!("real-ohlcv/{f}")), dataset.path().join(f)).unwrap();
    }
    let args: Vec<String> = [
        "--mode",
        "replay",
        "--speed",
        "max",
        "--no-rebase",
        "--brokers",
        &kafka.brokers,
        "--topic",
        &unique("kafka-down"),
        "--dataset",
        &dataset.path().display().to_string(),
        // Deliveries fail after 2 s without a broker (the default, 0, waits forever).
        "--delivery-timeout",
        "2s",
        "--shutdown-timeout",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut producer =
        ServiceProcess::start(std::path::Path::new(env!("CARGO_BIN_EXE_producer")), &args);
    wait_until(
        Duration::from_secs(120),
        "candles to be acknowledged",
        || producer.metric("candlepipe_producer_candles_sent_total") > 0.0,
    );
    kafka.stop();

    wait_until(Duration::from_secs(300), "20,000 failed deliveries", || {
        sample(&producer.metrics_text(), DELIVERY_ERRORS) >= 20_000.0
    });
    producer.assert_running();
    let failures = sample(&producer.metrics_text(), DELIVERY_ERRORS);
    let log = producer.full_log();
    let lines = log
        .lines()
        .filter(|l| l.contains("delivery failed"))
        .count();
    eprintln!("{failures} failed deliveries, {lines} log lines about them");
    let last = |log: &str, n: usize| {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    };
    // Every problem is collected, so one run shows them all.
    let mut problems = Vec::new();
    if lines == 0 || (lines as f64) * 100.0 >= failures {
        problems.push(format!(
            "{lines} log lines about {failures} failed deliveries (expected at least one, and \
             one per kind per interval, not one per candle); the log ends:\n{}",
            last(&log, 3)
        ));
    }
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("delivery failed") && l.contains("times in the last"))
        .collect();
    if !summaries.iter().all(|l| l.contains("MessageTimedOut")) {
        problems.push(format!("summaries name the kind: {summaries:?}"));
    }

    producer.signal(libc::SIGTERM);
    // `None`: still running after a deadline far beyond the 5 s timeout.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        producer.wait_exit(Duration::from_secs(120))
    }))
    .ok();
    let log = producer.full_log();
    eprintln!("exit code after SIGTERM: {code:?}");
    if code != Some(Some(1)) {
        problems.push(format!(
            "SIGTERM with undelivered candles must exit 1 once --shutdown-timeout is over; \
             exit code {code:?} (None: still running 120 s after SIGTERM); the log ends:\n{}",
            last(&log, 5)
        ));
    }
    if !(log.contains("gave up after --shutdown-timeout 5s") && log.contains("not delivered")) {
        problems.push(format!(
            "the log must say it gave up after the timeout and that candles were lost; it \
             ends:\n{}",
            last(&log, 5)
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
