//! What the two binaries log about Kafka itself (`candlepipe_runtime::kafka_log`), read from
//! their real stderr against a real broker or a broker address that does not work:
//!
//! * reaching the end of a partition (the producer's resume scan when live mode starts,
//!   the consumer's state rebuild after a restart) is never an ERROR; it was, once per
//!   partition read;
//! * a wrong broker address (a port that refuses, a host that does not resolve, a port
//!   that accepts and hangs up) is one line naming the cause, not an ERROR per reconnect
//!   attempt per client (670 lines in 20 s before).

use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::now_ms;
use candlepipe_model::{Candle, Source};
use candlepipe_testkit::pipeline::{produce_candles, ConsumerRun, ServiceProcess};
use candlepipe_testkit::yahoo::YahooFake;
use candlepipe_testkit::{get, testdata, unique, wait_until, workspace_bin, Influxd};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(180);

/// The ERROR and WARN lines of a log.
fn loud(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect()
}

fn eof_errors(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains(" ERROR ") && l.to_ascii_lowercase().contains("eof"))
        .collect()
}

fn candles(symbols: &[&str], minutes: i64) -> Vec<Candle> {
    let start = (now_ms() - 2 * 60 * MINUTE_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
    symbols
        .iter()
        .flat_map(|s| {
            (0..minutes).map(move |i| {
                Candle::ohlcv(
                    *s,
                    Source::Replay,
                    start + i * MINUTE_MS,
                    1.0,
                    2.0,
                    0.5,
                    1.5,
                    3.0,
                )
            })
        })
        .collect()
}

#[test]
fn reaching_the_end_of_a_partition_is_never_an_error() {
    let run = ConsumerRun::new("kafka-logs-eof", 3);
    let sent = candles(&["BTC-USDT", "ETH-USDT", "XRP-USDT"], 20);
    produce_candles(&run.brokers, &run.topic, &sent);
    let influx = Influxd::shared();

    // The consumer's second start rebuilds each partition's state from the topic.
    let mut first = run.consumer(influx, &[]);
    wait_until(WAIT, "every message to be processed", || {
        first.metric("candlepipe_consumer_messages_total") >= sent.len() as f64
    });
    first.stop_cleanly();
    let mut second = run.consumer(influx, &[]);
    wait_until(WAIT, "the restarted consumer to rebuild its state", || {
        second.full_log().contains("state rebuilt")
    });

    // Live mode starts by scanning every partition of the topic to its end.
    let fake = YahooFake::start(now_ms());
    let producer = ServiceProcess::start(
        &workspace_bin("producer"),
        &[
            "--mode",
            "live",
            "--brokers",
            &run.brokers,
            "--topic",
            &run.topic,
            "--yahoo-base-url",
            fake.base_url(),
            "--symbols",
            "NOTSERVED-USD",
        ]
        .map(String::from),
    );
    wait_until(WAIT, "the producer's resume scan", || {
        producer
            .full_log()
            .contains("live: resume points read from the topic")
    });
    let scanned = producer.full_log();
    assert!(
        scanned.contains(&format!("scanned={}", sent.len())),
        "the scan read the whole topic (so it reached every partition's end):\n{scanned}"
    );
    second.stop_cleanly();
    for (who, log) in [("consumer", second.full_log()), ("producer", scanned)] {
        let bad = eof_errors(&log);
        assert!(
            bad.is_empty(),
            "{who} logged partition EOF as an error: {bad:#?}"
        );
    }
}

/// Starts `bin` against `brokers` (nothing else it needs is missing).
fn against(bin: &str, brokers: &str, influx: &Influxd) -> ServiceProcess {
    against_with(bin, brokers, influx, &[])
}

/// [`against`], with `extra` arguments.
fn against_with(bin: &str, brokers: &str, influx: &Influxd, extra: &[&str]) -> ServiceProcess {
    let mut args: Vec<String> = ["--brokers", brokers, "--topic", &unique("kafka-logs")]
        .map(String::from)
        .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    if bin == "consumer" {
        args.extend(["--influx-url".into(), influx.url.clone()]);
        args.extend(influx.consumer_args("kafka_logs"));
    } else {
        let dataset = testdata("../dataset");
        args.extend(["--dataset".into(), dataset.display().to_string()]);
    }
    ServiceProcess::start(&workspace_bin(bin), &args)
}

/// `/readyz` answers 503 with a failing `kafka` check.
fn kafka_unready(p: &ServiceProcess) -> bool {
    matches!(get(&format!("http://127.0.0.1:{}/readyz", p.http_port)),
        Some((503, body)) if body.contains("\"kafka\""))
}

#[test]
fn a_broker_address_that_does_not_work_is_one_line_naming_the_cause() {
    let influx = Influxd::shared();
    influx.create_db("kafka_logs");
    for bin in ["producer", "consumer"] {
        for (brokers, cause) in [
            ("127.0.0.1:1", "Connection refused"),
            (
                "nohost.invalid:9092",
                "Failed to resolve 'nohost.invalid:9092'",
            ),
        ] {
            let p = against(bin, brokers, influx);
            wait_until(WAIT, "the broker problem to be logged", || {
                p.full_log().contains(cause)
            });
            // librdkafka keeps reconnecting meanwhile (every 0.1 s, backing off to 10 s).
            for _ in 0..3 {
                wait_until(WAIT, "/readyz to say Kafka is not ready", || {
                    kafka_unready(&p)
                });
            }
            let log = p.full_log();
            let lines = loud(&log);
            assert_eq!(
                lines.len(),
                1,
                "{bin} --brokers {brokers}: one line, not one per attempt: {lines:#?}"
            );
            assert!(lines[0].contains(cause), "{bin}: {lines:#?}");
        }
    }
}

#[test]
fn a_broker_that_hangs_up_on_every_connection_is_one_line_per_kind() {
    // A port that accepts and closes at once: each attempt is seen and counted.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let brokers = listener.local_addr().unwrap().to_string();
    let attempts = Arc::new(AtomicUsize::new(0));
    let counted = attempts.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let influx = Influxd::shared();
    influx.create_db("kafka_logs");
    for bin in ["producer", "consumer"] {
        let from = attempts.load(Ordering::SeqCst);
        let p = against(bin, &brokers, influx);
        wait_until(WAIT, "20 connection attempts", || {
            attempts.load(Ordering::SeqCst) - from >= 20
        });
        let log = p.full_log();
        let lines = loud(&log);
        assert!(
            !lines.is_empty() && lines.len() <= 2,
            "{bin}: 20 failed connections are one line per kind of failure: {lines:#?}"
        );
        assert!(
            lines.iter().all(|l| l.contains(&brokers)),
            "{bin}: each line names the broker: {lines:#?}"
        );
    }
}

/// SIGTERM while the topic is still being created on a broker that never answers: the
/// producer used to wait out the admin call's own timeout (about 40 s with the default
/// `--shutdown-timeout 30s`); now the shutdown ends the attempt, well within the timeout.
#[test]
fn sigterm_before_the_broker_ever_answered_exits_within_the_shutdown_timeout() {
    let influx = Influxd::shared();
    let mut p = against_with(
        "producer",
        "127.0.0.1:1",
        influx,
        &["--shutdown-timeout", "5s"],
    );
    wait_until(WAIT, "the broker problem to be logged", || {
        p.full_log().contains("Connection refused")
    });
    p.signal(libc::SIGTERM);
    // Three times the timeout: the exit must not depend on the admin call's 30 s or more.
    let code = p.wait_exit(Duration::from_secs(15));
    assert_eq!(
        code,
        Some(0),
        "nothing was sent, so nothing is undelivered:\n{}",
        p.full_log()
    );
}
