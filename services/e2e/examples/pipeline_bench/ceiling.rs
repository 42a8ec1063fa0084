//! The ceiling: how fast the two servers let *any* consumer go on this machine, measured in
//! the same run as the consumer so that both see the same load.
//!
//! A consumer cannot read faster than the broker serves the topic, nor write faster than
//! InfluxDB ingests its points. (a) [`CountingReader`] is a librdkafka consumer that does
//! nothing but count the messages; (b) [`BulkWrite`] writes the very points the consumer
//! writes for the same candles (the consumer library's `Aggregator`, flushed per
//! micro-batch) through the consumer library's `InfluxSink`, in large requests, without
//! reading Kafka at all. The smaller of the two, in candles/s, is the ceiling.

use crate::dataset::{replay, replay_options};
use crate::machine::{Conditions, Watch};
use crate::{MAX_BATCH, MEASUREMENT_TIMEOUT};
use candlepipe_consumer::config::ConsumerConfig;
use candlepipe_consumer::metrics::ConsumerMetrics;
use candlepipe_consumer::point::Point;
use candlepipe_consumer::sink::InfluxSink;
use candlepipe_consumer::state::Aggregator;
use candlepipe_producer::source::replay::ReplaySource;
use candlepipe_runtime::shutdown;
use candlepipe_testkit::pipeline::count_points;
use candlepipe_testkit::{unique, Influxd};
use clap::Parser;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Points per request of the bulk write (the consumer sends 5,000 by default).
pub const BULK_REQUEST_POINTS: usize = 10_000;

/// (a) A librdkafka consumer that only counts a topic's messages.
#[derive(Debug, Clone)]
pub struct CountingReader {
    pub messages: u64,
    /// From the first message to the last.
    pub first_to_last_s: f64,
    pub conditions: Conditions,
}

impl CountingReader {
    /// Reads `topic` from the beginning of every partition until `expected` messages
    /// arrived and then 1 s passed without more (duplicates would show up as extra).
    pub fn count(brokers: &str, topic: &str, expected: u64) -> CountingReader {
        let reader: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", unique("bench-count"))
            .set("enable.auto.commit", "false")
            .set("log_level", "3")
            .create()
            .expect("counting consumer");
        let md = reader
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("topic metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition list");
        }
        let watch = Watch::start();
        reader.assign(&tpl).expect("assign");
        let started = Instant::now();
        let (mut first, mut last) = (None, started);
        let mut messages = 0u64;
        let mut bytes = 0usize;
        loop {
            let wait = if messages >= expected {
                Duration::from_secs(1)
            } else {
                Duration::from_millis(200)
            };
            match reader.poll(wait) {
                Some(Ok(m)) => {
                    let now = Instant::now();
                    first.get_or_insert(now);
                    last = now;
                    messages += 1;
                    bytes += m.payload().map_or(0, <[u8]>::len);
                }
                Some(Err(e)) => panic!("counting consumer: {e}"),
                None if messages >= expected => break,
                None => assert!(
                    started.elapsed() < MEASUREMENT_TIMEOUT,
                    "only {messages} of {expected} messages arrived from {topic}"
                ),
            }
        }
        std::hint::black_box(bytes);
        CountingReader {
            messages,
            first_to_last_s: (last - first.expect("messages arrived")).as_secs_f64(),
            conditions: watch.end(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.first_to_last_s
    }
}

/// The points the consumer writes for `dataset`: the candles in the producer's order,
/// through the consumer's own [`Aggregator`] (with its default late-data horizon), flushed
/// every [`MAX_BATCH`] candles like its micro-batches.
pub fn consumer_points(dataset: &Path) -> Vec<Point> {
    let horizon = ConsumerConfig::parse_from(["consumer"]).late_horizon;
    let mut aggregator = Aggregator::new(horizon.as_millis() as i64);
    let mut source = ReplaySource::open(replay_options(dataset)).expect("open the dataset");
    let mut points = Vec::new();
    let mut in_batch = 0;
    replay(&mut source, |c| {
        aggregator.apply(&c);
        in_batch += 1;
        if in_batch == MAX_BATCH {
            aggregator.flush(&mut points);
            in_batch = 0;
        }
    });
    aggregator.flush(&mut points);
    points
}

/// (b) Points written with the consumer's [`InfluxSink`] through InfluxDB 2's v2 write API
/// (as the consumer writes) in [`BULK_REQUEST_POINTS`]-point requests, gzip off, by `writers`
/// concurrent tasks, into a fresh bucket.
#[derive(Debug, Clone)]
pub struct BulkWrite {
    pub writers: usize,
    pub points: u64,
    pub secs: f64,
    /// 1m candle points InfluxDB holds afterwards (checked: one per candle).
    pub one_minute_points: usize,
    pub conditions: Conditions,
}

impl BulkWrite {
    pub fn run(
        influx: &Influxd,
        points: &Arc<Vec<Point>>,
        writers: usize,
        candles: u64,
    ) -> BulkWrite {
        let db = unique("bench_bulk").replace('-', "_");
        influx.create_db(&db);
        let mut flags = vec![
            "consumer".to_owned(),
            "--influx-url".to_owned(),
            influx.url.clone(),
        ];
        flags.extend(influx.consumer_args(&db));
        flags.extend(
            [
                "--influx-batch-points",
                &BULK_REQUEST_POINTS.to_string(),
                "--influx-timeout",
                "60s",
                "--influx-gzip",
                "false",
                // One request in flight per writer task: `writers` is the whole concurrency.
                "--influx-concurrency",
                "1",
            ]
            .map(str::to_owned),
        );
        let cfg = ConsumerConfig::parse_from(flags).influx();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (watch, secs, written) = runtime.block_on(async {
            let sink = InfluxSink::new(cfg, ConsumerMetrics::new()).expect("sink");
            let (_trigger, stop) = shutdown::channel();
            sink.prepare(&stop).await.expect("the bucket exists");
            let watch = Watch::start();
            let started = Instant::now();
            let share = points.len().div_ceil(writers);
            let tasks: Vec<_> = (0..writers)
                .map(|i| {
                    let (sink, points, stop) = (sink.clone(), Arc::clone(points), stop.clone());
                    tokio::spawn(async move {
                        let part =
                            (i * share).min(points.len())..((i + 1) * share).min(points.len());
                        sink.write(&points[part], &stop).await
                    })
                })
                .collect();
            let mut written = 0;
            for task in tasks {
                let outcome = task.await.expect("writer task").expect("bulk write");
                assert!(
                    outcome.rejected.is_empty(),
                    "InfluxDB rejected points, e.g. {:?}",
                    outcome.rejected.first()
                );
                written += outcome.written;
            }
            (watch, started.elapsed().as_secs_f64(), written)
        });
        let conditions = watch.end();
        let one_minute_points = count_points(influx, &db, "candle", "close", "\"interval\" = '1m'");
        assert_eq!(
            one_minute_points as u64, candles,
            "the bulk write left a 1m point per candle"
        );
        BulkWrite {
            writers,
            points: written as u64,
            secs,
            one_minute_points,
            conditions,
        }
    }

    pub fn points_per_s(&self) -> f64 {
        self.points as f64 / self.secs
    }
}
