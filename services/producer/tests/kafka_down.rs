//! The producer against an Apache Kafka broker that goes away for good. With a delivery
//! timeout every delivery fails: the failures must be visible without flooding the log
//! (one line per kind per interval, with a count, instead of one ERROR per candle) and be
//! resent with backoff. With or without one, a SIGTERM must end the process within
//! `--shutdown-timeout`, with a non-zero exit code because candles were left undelivered.

use candlepipe_testkit::pipeline::ServiceProcess;
use candlepipe_testkit::{testdata, unique, wait_until, Kafka};
use std::path::Path;
use std::time::Duration;

const DELIVERY_ERRORS: &str = "candlepipe_producer_send_errors_total{kind=\"delivery\"}";

/// `name{labels}`'s value in a `/metrics` text (0 when absent).
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The last `n` lines of `log`.
fn last(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A producer replaying `dataset` in a loop, as fast as Kafka takes it, with a 5 s
/// shutdown timeout and `extra` flags; returned once Kafka acknowledged some candles.
fn producer(kafka: &Kafka, dataset: &Path, extra: &[&str]) -> ServiceProcess {
    let mut args: Vec<String> = [
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
        &dataset.display().to_string(),
        "--shutdown-timeout",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    let p = ServiceProcess::start(Path::new(env!("CARGO_BIN_EXE_producer")), &args);
    wait_until(
        Duration::from_secs(120),
        "candles to be acknowledged",
        || p.metric("candlepipe_producer_candles_sent_total") > 0.0,
    );
    p
}

/// Sends SIGTERM and reports what is wrong with the exit: it must come (a deadline far
/// beyond the 5 s timeout), with code 1, and the log must say it gave up.
fn shutdown_problems(p: &mut ServiceProcess, name: &str) -> Vec<String> {
    p.signal(libc::SIGTERM);
    // `None`: still running 120 s after SIGTERM.
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        p.wait_exit(Duration::from_secs(120))
    }))
    .ok();
    let log = p.full_log();
    eprintln!("{name}: exit code after SIGTERM: {code:?}");
    let mut problems = Vec::new();
    if code != Some(Some(1)) {
        problems.push(format!(
            "{name}: SIGTERM with undelivered candles must exit 1 once --shutdown-timeout is \
             over; exit code {code:?} (None: still running 120 s after SIGTERM); the log \
             ends:\n{}",
            last(&log, 5)
        ));
    }
    if !(log.contains("gave up after --shutdown-timeout 5s") && log.contains("not delivered")) {
        problems.push(format!(
            "{name}: the log must say it gave up after the timeout and that candles were \
             lost; it ends:\n{}",
            last(&log, 5)
        ));
    }
    problems
}

#[test]
fn a_dead_broker_is_logged_in_summaries_and_shutdown_gives_up_after_its_timeout() {
    let mut kafka = Kafka::start();
    let dataset = tempfile::tempdir().unwrap();
    for f in ["UNITTEST-BTC.parquet", "XRP-ETH.parquet"] {
        std::fs::copy(testdata(&format!("real-ohlcv/{f}")), dataset.path().join(f)).unwrap();
    }
    // Deliveries fail after 2 s without a broker...
    let mut timed = producer(&kafka, dataset.path(), &["--delivery-timeout", "2s"]);
    // ... or never, by default: they wait for the broker.
    let mut patient = producer(&kafka, dataset.path(), &[]);
    kafka.stop();

    wait_until(Duration::from_secs(300), "20,000 failed deliveries", || {
        sample(&timed.metrics_text(), DELIVERY_ERRORS) >= 20_000.0
    });
    timed.assert_running();
    let failures = sample(&timed.metrics_text(), DELIVERY_ERRORS);
    let log = timed.full_log();
    let lines = log
        .lines()
        .filter(|l| l.contains("delivery failed"))
        .count();
    eprintln!("{failures} failed deliveries, {lines} log lines about them");
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
    patient.assert_running();
    let waiting = patient.metric("candlepipe_producer_in_flight");
    if waiting < 1.0 {
        problems.push(format!(
            "without a delivery timeout, candles wait in flight for the broker: {waiting}"
        ));
    }

    problems.extend(shutdown_problems(&mut timed, "--delivery-timeout 2s"));
    problems.extend(shutdown_problems(&mut patient, "no delivery timeout"));
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
