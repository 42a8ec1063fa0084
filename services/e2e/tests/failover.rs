//! Broker failover on a three-node KRaft cluster, what users who outgrow one machine run.
//!
//! The candle topic has three replicas and `min.insync.replicas=2`; the producer is
//! idempotent with `acks=all`. Mid-replay, the leader of the busy partition is killed
//! (SIGKILL). Another replica takes over the leadership, the producer's unacknowledged sends
//! are retried there, and the consumer follows the new leader. Asserted: the topic holds every
//! candle exactly once (nothing lost, nothing duplicated by the retries), and InfluxDB ends
//! identical to an uninterrupted run.

use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::pipeline::{
    assert_same_content, count_points, real_dataset, reference_content, replay_once, snapshot,
    ConsumerRun, PIPELINE_TIMEOUT,
};
use candlepipe_testkit::{read_topic, testdata, wait_until, Influxd, Kafka};
use std::collections::BTreeSet;

#[test]
fn killing_the_leader_of_the_busy_partition_loses_and_duplicates_nothing() {
    let candles = read_candles(&testdata("real-ohlcv/UNITTEST-BTC.parquet"));
    let expected = reference_content("failoverref", &candles);
    let influx = Influxd::shared();

    let mut cluster = Kafka::cluster(3);
    let run = ConsumerRun::on_replicated(
        &cluster.brokers,
        "failover",
        3,
        3,
        &[("min.insync.replicas", "2")],
    );
    let dataset = real_dataset(&["UNITTEST-BTC"]);
    // One symbol, so one partition carries the whole stream: ~14,400 candles at 20,000x.
    let mut producer = replay_once(&cluster.brokers, &run.topic, dataset.path(), "20000", &[]);
    let mut consumer = run.consumer(influx, &[]);

    wait_until(
        PIPELINE_TIMEOUT,
        "a third of the replay to be acknowledged",
        || producer.metric("candlepipe_producer_candles_sent_total") >= candles.len() as f64 / 3.0,
    );
    let busy = read_topic(&cluster.brokers, &run.topic)
        .first()
        .map(|r| r.partition)
        .expect("the replay reached the topic");
    let leader = cluster
        .leader(&run.topic, busy)
        .expect("the busy partition has a leader");
    cluster.kill_node(leader);
    eprintln!("killed node {leader}, the leader of partition {busy}");
    wait_until(
        PIPELINE_TIMEOUT,
        "another node to lead the partition",
        || {
            cluster
                .leader(&run.topic, busy)
                .is_some_and(|l| l != leader)
        },
    );

    assert_eq!(
        producer.wait_exit(PIPELINE_TIMEOUT),
        Some(0),
        "{}",
        producer.log()
    );
    let on_topic = read_topic(&cluster.brokers, &run.topic);
    let distinct: BTreeSet<&[u8]> = on_topic
        .iter()
        .map(|r| r.payload.as_deref().unwrap_or_default())
        .collect();
    eprintln!(
        "after the failover: {} messages on the topic, {} distinct, for {} candles",
        on_topic.len(),
        distinct.len(),
        candles.len()
    );
    // The payload carries `produced_at`, set once per candle: a retried send is identical,
    // so a duplicate shows as fewer distinct payloads than messages.
    assert_eq!(distinct.len(), on_topic.len(), "duplicated messages");
    assert_eq!(on_topic.len(), candles.len(), "lost or duplicated candles");

    wait_until(PIPELINE_TIMEOUT, "every candle to be written", || {
        consumer.assert_running();
        count_points(influx, &run.db, "candle", "close", "\"interval\" = '1m'") == candles.len()
    });
    consumer.stop_cleanly();
    assert_same_content(&expected, &snapshot(influx, &run.db), 1e-9);
}
