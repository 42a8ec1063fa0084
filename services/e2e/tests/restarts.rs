//! A consumer killed with SIGKILL and started again takes its partitions back at once.
//!
//! The consumer joins its group as a *static member* (`--group-instance-id`, the hostname by
//! default). Restarted under the same id, it is handed its old assignment without waiting for
//! the dead process's session to time out (30 s by default) and without a rebalance of the
//! whole group. This test kills the consumer five times while the producer replays real
//! candles at a steady pace, with the product's default session timeout, and records how long
//! each new process took to its first write to InfluxDB. Those times are printed, not asserted
//! (no timing assertions in tests); the benchmark and the closing note quote them. What is
//! asserted: InfluxDB ends identical to an uninterrupted run, and every restart wrote again.

use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::pipeline::{
    assert_same_content, count_points, real_dataset, reference_content, replay_once, snapshot,
    ConsumerRun, PIPELINE_TIMEOUT,
};
use candlepipe_testkit::{testdata, wait_until, Influxd};
use std::time::Instant;

/// The product's default: with static membership the restart must not wait for it.
const SESSION_TIMEOUT: &str = "30s";
const KILLS: usize = 5;

#[test]
fn five_sigkills_during_a_paced_replay_give_identical_content() {
    let candles = read_candles(&testdata("real-ohlcv/UNITTEST-BTC.parquet"));
    let expected = reference_content("restartref", &candles);
    let influx = Influxd::shared();
    let run = ConsumerRun::new("restart", 3);
    let dataset = real_dataset(&["UNITTEST-BTC"]);
    // ~14,400 market minutes at 6,000x: a steady 100 candles/s for about two and a half
    // minutes, so every kill lands mid-stream.
    let mut producer = replay_once(&run.brokers, &run.topic, dataset.path(), "6000", &[]);
    let flags = ["--session-timeout", SESSION_TIMEOUT, "--max-batch", "500"];
    let ones = || count_points(influx, &run.db, "candle", "close", "\"interval\" = '1m'");

    let mut consumer = run.consumer(influx, &flags);
    let mut first_writes = Vec::new();
    for kill in 1..=KILLS {
        wait_until(
            PIPELINE_TIMEOUT,
            "the consumer to write a few batches",
            || {
                consumer.assert_running();
                consumer.metric("candlepipe_consumer_batches_total") >= 3.0
            },
        );
        consumer.signal(libc::SIGKILL);
        assert_eq!(
            consumer.wait_exit(PIPELINE_TIMEOUT),
            None,
            "killed by SIGKILL"
        );
        let restarted = Instant::now();
        consumer = run.consumer(influx, &flags);
        wait_until(
            PIPELINE_TIMEOUT,
            "the restarted consumer's first write",
            || {
                consumer.assert_running();
                consumer.metric("candlepipe_influx_points_written_total") > 0.0
            },
        );
        let took = restarted.elapsed();
        eprintln!("kill {kill}: first write {took:.1?} after the restart (session timeout {SESSION_TIMEOUT})");
        first_writes.push(took);
    }
    assert_eq!(
        producer.wait_exit(PIPELINE_TIMEOUT),
        Some(0),
        "{}",
        producer.log()
    );
    wait_until(PIPELINE_TIMEOUT, "every candle to be written", || {
        consumer.assert_running();
        ones() == candles.len() && run.committed() == candles.len() as i64
    });
    consumer.stop_cleanly();
    assert_same_content(&expected, &snapshot(influx, &run.db), 1e-9);
    let secs: Vec<String> = first_writes
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect();
    eprintln!(
        "time to first write after each of {KILLS} SIGKILLs (s): {}",
        secs.join(", ")
    );
}
