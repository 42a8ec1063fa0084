//! Fault tests: the broker restarted mid-stream, InfluxDB answering slowly, and a consumer
//! group losing a member. In each case the content written to InfluxDB must equal what one
//! uninterrupted consumer writes from the same candles.

use candlepipe_testkit::fixtures::{read_candles, synthetic};
use candlepipe_testkit::pipeline::{
    assert_same_content, count_points, produce_candles, real_dataset, reference_content,
    replay_once, snapshot, ConsumerRun, ServiceProcess, PIPELINE_TIMEOUT,
};
use candlepipe_testkit::slow_proxy::SlowProxy;
use candlepipe_testkit::{testdata, wait_until, Influxd, Kafka};
use std::time::Duration;

fn ones(influx: &Influxd, db: &str) -> usize {
    count_points(influx, db, "candle", "close", "\"interval\" = '1m'")
}

#[test]
fn a_broker_restart_mid_stream_loses_nothing() {
    let candles = read_candles(&testdata("real-ohlcv/UNITTEST-BTC.parquet"));
    let expected = reference_content("brokerref", &candles);

    let mut kafka = Kafka::start();
    let influx = Influxd::shared();
    let run = ConsumerRun::on(&kafka.brokers, "broker", 3);
    let dataset = real_dataset(&["UNITTEST-BTC"]);
    // ~14,400 market minutes at 20,000x: the replay streams for about 40 s.
    let mut producer = replay_once(&kafka.brokers, &run.topic, dataset.path(), "20000", &[]);
    let mut consumer = run.consumer(influx, &[]);

    wait_until(
        PIPELINE_TIMEOUT,
        "a third of the replay to be acknowledged",
        || producer.metric("candlepipe_producer_candles_sent_total") >= candles.len() as f64 / 3.0,
    );
    kafka.stop();
    wait_until(
        PIPELINE_TIMEOUT,
        "candles to queue up while the broker is down",
        || {
            producer.assert_running();
            producer.metric("candlepipe_producer_in_flight") >= 100.0
        },
    );
    kafka.restart();
    assert_eq!(
        producer.wait_exit(PIPELINE_TIMEOUT),
        Some(0),
        "{}",
        producer.log()
    );
    // Every candle is on the restarted broker's log exactly once: the idempotent producer's
    // retries of what the dead broker never acknowledged add no duplicate.
    let on_topic = candlepipe_testkit::read_topic(&kafka.brokers, &run.topic);
    assert_eq!(
        on_topic.len(),
        candles.len(),
        "messages on the topic for {} candles",
        candles.len()
    );
    wait_until(PIPELINE_TIMEOUT, "every candle to be written", || {
        consumer.assert_running();
        ones(influx, &run.db) == candles.len()
    });
    consumer.stop_cleanly();
    assert_same_content(&expected, &snapshot(influx, &run.db), 1e-9);
}

#[test]
fn slow_influxdb_means_backpressure_bounded_memory_and_no_loss() {
    let candles = synthetic(4, 3_000, 7);
    let expected = reference_content("slowref", &candles);
    let influx = Influxd::shared();
    let upstream = influx.url.trim_start_matches("http://").to_owned();
    let proxy = SlowProxy::start(&upstream, Duration::from_secs(2));
    let run = ConsumerRun::new("slow", 3);
    produce_candles(&run.brokers, &run.topic, &candles);
    let mut c = run.consumer_via(influx, &proxy.url, &["--max-batch", "2000"]);
    let mut peak_rss = 0;
    wait_until(
        PIPELINE_TIMEOUT,
        "every candle through the slow InfluxDB",
        || {
            c.assert_running();
            peak_rss = peak_rss.max(c.rss_bytes());
            c.metric("candlepipe_consumer_messages_total") >= candles.len() as f64
        },
    );
    assert!(
        c.metric("candlepipe_influx_write_duration_seconds_sum") >= 2.0,
        "writes went through the slow proxy"
    );
    c.stop_cleanly();
    assert!(
        peak_rss < 256 * 1024 * 1024,
        "consumer memory stays bounded under backpressure: peak {} MiB",
        peak_rss / (1024 * 1024)
    );
    assert_same_content(&expected, &snapshot(influx, &run.db), 0.0);
}

/// Three static members (distinct `--group-instance-id`s); the dead one's partitions move
/// to the survivors once its session times out.
#[test]
fn a_group_of_three_losing_a_member_gives_identical_content() {
    let candles = synthetic(9, 1_500, 11);
    let expected = reference_content("groupref", &candles);
    let influx = Influxd::shared();
    let run = ConsumerRun::new("group", 6);
    let mut members: Vec<ServiceProcess> = (0..3)
        .map(|i| run.member(influx, i, &["--max-batch", "1000"]))
        .collect();
    wait_until(
        PIPELINE_TIMEOUT,
        "the 6 partitions to be split between 3 members",
        || {
            let owned: Vec<f64> = members
                .iter()
                .map(|m| m.metric("candlepipe_consumer_assigned_partitions"))
                .collect();
            owned.iter().all(|n| *n >= 1.0) && owned.iter().sum::<f64>() == 6.0
        },
    );
    produce_candles(&run.brokers, &run.topic, &candles);
    wait_until(PIPELINE_TIMEOUT, "the victim to make progress", || {
        members[0].metric("candlepipe_consumer_batches_total") >= 2.0
    });
    members[0].signal(libc::SIGKILL);
    assert_eq!(members[0].wait_exit(PIPELINE_TIMEOUT), None);
    let mut survivors = members.split_off(1);
    wait_until(
        PIPELINE_TIMEOUT,
        "the survivors to take over every partition and finish",
        || {
            for m in survivors.iter_mut() {
                m.assert_running();
            }
            survivors
                .iter()
                .map(|m| m.metric("candlepipe_consumer_assigned_partitions"))
                .sum::<f64>()
                == 6.0
                && ones(influx, &run.db) == candles.len()
                && run.committed() == candles.len() as i64
        },
    );
    for m in survivors.iter_mut() {
        m.stop_cleanly();
    }
    assert_same_content(&expected, &snapshot(influx, &run.db), 1e-9);
}
