//! End-to-end latency at a steady pace, from the consumer's own histogram.
//!
//! `candlepipe_end_to_end_latency_seconds` observes, for every candle, the time from the
//! producer's `produced_at` to InfluxDB accepting the candle's batch. The quantiles are
//! computed from its cumulative buckets the way PromQL's `histogram_quantile` does, so they
//! match what a Grafana panel over the same metric shows.

use crate::consumer_run::{ConsumerResult, ConsumerSetup, MeasuredConsumer};
use crate::dataset::{fresh_topic, DatasetFacts};
use crate::histogram::histogram_quantile;
use crate::machine::ReleaseBins;
use crate::producer_run::TimedProducer;
use candlepipe_testkit::{Influxd, Kafka};
use std::path::Path;

/// The paced run: the producer's achieved rate and the consumer's latency quantiles.
#[derive(Debug, Clone)]
pub struct LatencyRun {
    pub producer: TimedProducer,
    pub consumer: ConsumerResult,
    pub p50_s: f64,
    pub p99_s: f64,
    pub observations: u64,
}

impl LatencyRun {
    pub fn from(producer: TimedProducer, consumer: ConsumerResult) -> LatencyRun {
        let buckets = &consumer.latency_buckets;
        LatencyRun {
            p50_s: histogram_quantile(0.50, buckets),
            p99_s: histogram_quantile(0.99, buckets),
            observations: buckets.last().map_or(0, |b| b.1 as u64),
            producer,
            consumer,
        }
    }
}

/// The consumer (its defaults, as the benchmark runs it) joins a fresh topic first and
/// gets a fresh InfluxDB 2; then the producer replays `dataset` at `--speed` = `rate` × 60 ÷
/// symbols, so that `rate` candles/s arrive; the consumer is sampled while the producer runs,
/// so that its first point is seen.
pub fn paced_run(
    bins: &ReleaseBins,
    kafka: &Kafka,
    dataset: &Path,
    set: &DatasetFacts,
    rate: u32,
    logs: &Path,
    label: &str,
) -> LatencyRun {
    let influx = Influxd::start();
    let topic = fresh_topic(kafka, "bench-paced");
    let setup = ConsumerSetup {
        label: label.to_owned(),
        gzip: candlepipe_consumer::sink::DEFAULT_GZIP,
        extra: Vec::new(),
    };
    let run = MeasuredConsumer::start(bins, &kafka.brokers, &topic, &influx, setup);
    run.wait_assigned();
    let speed = (f64::from(rate) * 60.0 / set.files as f64).to_string();
    let (producer, consumer) = std::thread::scope(|scope| {
        let producer = scope.spawn(|| {
            let run = TimedProducer::run(bins, &kafka.brokers, &topic, dataset, &speed, logs);
            println!("producer --speed {speed} ({}): {run:?}", dataset.display());
            run
        });
        let consumer = run.finish(&influx, set.candles);
        (producer.join().expect("producer thread"), consumer)
    });
    let result = LatencyRun::from(producer, consumer);
    println!(
        "latency ({label}): p50 {:.3} s, p99 {:.3} s over {} candles",
        result.p50_s, result.p99_s, result.observations
    );
    result
}
