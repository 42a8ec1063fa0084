//! # pipeline_bench: candlepipe end to end, measured on real servers
//!
//! The criterion benches measure the hot code on one core in isolation; this example
//! measures what an operator sees: the release `producer` and `consumer` binaries against
//! the servers compose runs, a real Apache Kafka broker (KRaft, one node) and a real
//! InfluxDB 2 written through its v2 API, on generated datasets, and the ceiling those two
//! servers allow on the same machine in the same run. It answers issue 7's questions, in
//! the order it measures them:
//!
//! 1. producer candles/s at `--speed max` into Kafka, with its peak RSS ([`producer_run`]);
//! 2. consumer candles/s from the first point written to the last, points per candle, CPU
//!    per candle and peak RSS, with gzip on and off ([`consumer_run`]);
//! 3. the ceiling: a librdkafka consumer that only counts, and bulk writes of the same
//!    points ([`ceiling`]);
//! 4. p50/p99 end-to-end latency at a steady 5,000 candles/s ([`latency`]);
//! 5. the wide dataset: producer RSS for ~1,000 files in one merge, consumer RSS with 1,000
//!    symbols on a full topic (librdkafka's prefetch fills: the worst case), with a larger
//!    prefetch, and at a steady 5,000 candles/s.
//!
//! Every measurement records the load average and how busy the CPUs were ([`machine`]): the
//! machine is shared with other engineers' builds. Each consumer run and bulk write gets a
//! fresh InfluxDB 2 (and its own bucket) so that compactions of an earlier run's data do not
//! slow the next one.
//!
//! Every consumer run has its own consumer group, and runs never overlap, so the consumers'
//! default `--group-instance-id` (the hostname) never meets itself in one group: no static
//! member is fenced.
//!
//! Run it through `scripts/bench.sh`, which builds the release binaries (this example in
//! release too), generates both datasets with `datagen`, runs the criterion benches, and
//! wraps the markdown this example writes ([`report`]) into BENCHMARKS.md.
//!
//! `pipeline_bench peers …` is issue 17's peer benchmark instead ([`peers`]): candlepipe's
//! consumer, Spark Structured Streaming, Telegraf and a seed-style Python consumer on one
//! topic, run by `scripts/bench.sh peers`. `pipeline_bench reap …` is a helper it starts
//! each peer under ([`reaper`]).

mod ceiling;
mod consumer_run;
mod criterion_results;
mod dataset;
mod histogram;
mod latency;
mod machine;
mod peer_latency;
mod peer_report;
mod peer_run;
mod peers;
mod proc_tree;
mod producer_run;
mod reaper;
mod report;

use candlepipe_consumer::sink::DEFAULT_GZIP;
use ceiling::{consumer_points, BulkWrite, CountingReader};
use clap::Parser;
use consumer_run::{gzip_label, ConsumerSetup, MeasuredConsumer};
use criterion_results::CriterionResults;
use dataset::{fresh_topic, DatasetFacts};
use latency::paced_run;
use machine::ReleaseBins;
use producer_run::TimedProducer;
use report::{Measured, Report};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use candlepipe_testkit::{Influxd, Kafka};

/// The consumer's micro-batch size cap (`--max-batch`), and the batch size the ceiling's
/// bulk write aggregates with.
pub const MAX_BATCH: usize = 10_000;
/// Longest any single measurement may take before the benchmark fails.
pub const MEASUREMENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Command line of the benchmark (`scripts/bench.sh` fills it).
#[derive(Debug, Parser)]
#[command(name = "pipeline_bench")]
struct Args {
    /// The main dataset: Kaggle-schema parquet files (e.g. 40 symbols × 5,000 minutes).
    #[arg(long)]
    dataset: PathBuf,
    /// The wide dataset: ~1,000 single-row-group files (producer and consumer RSS).
    #[arg(long)]
    wide_dataset: PathBuf,
    /// Where to write the markdown report.
    #[arg(long)]
    report: PathBuf,
    /// Folder holding the release `producer` and `consumer`
    /// [default: `target/release`, found from this example's own path].
    #[arg(long, env = "BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Candles per second of the paced (latency) runs: the producer's `--speed` is this
    /// × 60 ÷ the dataset's symbols (5,000 over 40 symbols = `--speed 7500`).
    #[arg(long, default_value_t = 5000)]
    paced_rate: u32,
    /// Also run the wide consumer on the full topic with librdkafka's prefetch raised to
    /// this many KiB (`queued.max.messages.kbytes`, and `fetch.max.bytes` to match; the
    /// default is 1,024), to show what a larger prefetch buys and costs; 0 skips that run.
    #[arg(long, default_value_t = 16384)]
    wide_prefetch_kib: u32,
    /// Criterion's output folder (`target/criterion`), for the criterion numbers.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
    /// Load average when a criterion bench started, `group/function=load`; repeatable.
    #[arg(long)]
    criterion_load: Vec<String>,
}

fn main() {
    // `reap` runs a peer under a subreaper (peer_run); `peers` is issue 17's peer benchmark.
    let mode = std::env::args().nth(1);
    if mode.as_deref() == Some("reap") {
        reaper::main(reaper::ReapArgs::parse_from(std::env::args_os().skip(1)));
    }
    if cfg!(debug_assertions) {
        eprintln!("build this example with --release: its ceiling measurements run library code");
        std::process::exit(2);
    }
    if mode.as_deref() == Some("peers") {
        peers::main(peers::PeerArgs::parse_from(std::env::args_os().skip(1)));
        return;
    }
    let args = Args::parse();
    let bins = ReleaseBins::locate(args.bin_dir.clone());
    let logs = tempfile::Builder::new()
        .prefix("pipeline-bench-")
        .tempdir()
        .expect("log dir");
    let main_set = DatasetFacts::read(&args.dataset);
    let wide_set = DatasetFacts::read(&args.wide_dataset);
    println!("main dataset: {main_set:?}; wide dataset: {wide_set:?}");

    let kafka = Kafka::start();
    let produce = |topic: &str, dataset: &PathBuf, speed: &str| {
        let run = TimedProducer::run(&bins, &kafka.brokers, topic, dataset, speed, logs.path());
        println!("producer --speed {speed} ({}): {run:?}", dataset.display());
        run
    };
    let consume = |topic: &str, candles: u64, setup: ConsumerSetup| {
        let influx = Influxd::start();
        let run = MeasuredConsumer::start(&bins, &kafka.brokers, topic, &influx, setup);
        let result = run.finish(&influx, candles);
        println!("consumer {}", result.summary());
        result
    };
    // Each label ends with its gzip setting.
    let setup = |label: &str, gzip: bool, extra: &[String]| ConsumerSetup {
        label: format!("{label}, {}", gzip_label(gzip)),
        gzip,
        extra: extra.to_vec(),
    };

    // 1. the producer at max speed; 3a. the broker side of the ceiling on the same topic
    // (which also proves every candle arrived).
    let max_topic = fresh_topic(&kafka, "bench-max");
    let producer = produce(&max_topic, &args.dataset, "max");
    let count = CountingReader::count(&kafka.brokers, &max_topic, main_set.candles);
    println!("count-only reader: {count:?}");

    // 2. the consumer on the full topic, gzip on and off.
    let consumers = vec![
        consume(&max_topic, main_set.candles, setup("main", true, &[])),
        consume(&max_topic, main_set.candles, setup("main", false, &[])),
    ];

    // 3b. the InfluxDB side of the ceiling: the same candles' points, written in bulk.
    let points = Arc::new(consumer_points(&args.dataset));
    let bulk: Vec<BulkWrite> = [1, 2]
        .into_iter()
        .map(|writers| {
            let influx = Influxd::start();
            let result = BulkWrite::run(&influx, &points, writers, main_set.candles);
            println!("bulk write: {result:?}");
            result
        })
        .collect();
    drop(points);

    // 4. latency at a steady pace: the consumer joins first, then the paced producer runs.
    let paced = |dataset: &PathBuf, set: &DatasetFacts, label: &str| {
        paced_run(
            &bins,
            &kafka,
            dataset,
            set,
            args.paced_rate,
            logs.path(),
            label,
        )
    };
    let latency = paced(&args.dataset, &main_set, "main, paced, defaults");

    // 5. the wide dataset: ~1,000 files in one merge, then 1,000 symbols of state, on a full
    // topic (worst case: the prefetch fills), with a larger prefetch, and at a steady pace.
    let wide_topic = fresh_topic(&kafka, "bench-wide");
    let wide_producer = produce(&wide_topic, &args.wide_dataset, "max");
    let wide_backlog = consume(
        &wide_topic,
        wide_set.candles,
        setup("wide, topic full", DEFAULT_GZIP, &[]),
    );
    let wide_large_prefetch = (args.wide_prefetch_kib > 0).then(|| {
        let kib = args.wide_prefetch_kib;
        let property = format!(
            "queued.max.messages.kbytes={kib},fetch.max.bytes={}",
            u64::from(kib) * 1024
        );
        let label = format!("wide, topic full, `--kafka-property {property}`");
        let extra = ["--kafka-property".to_owned(), property];
        consume(
            &wide_topic,
            wide_set.candles,
            setup(&label, DEFAULT_GZIP, &extra),
        )
    });
    let wide_paced = paced(&args.wide_dataset, &wide_set, "wide, paced, defaults");

    let criterion = args
        .criterion_dir
        .as_deref()
        .map(|dir| CriterionResults::read(dir, &args.criterion_load))
        .unwrap_or_default();
    let report = Report::from(&Measured {
        main_set,
        wide_set,
        producer,
        count,
        consumers,
        bulk,
        latency,
        wide_producer,
        wide_backlog,
        wide_large_prefetch,
        wide_paced,
        criterion,
    });
    std::fs::write(&args.report, &report.text).expect("write the report");
    println!("\n{}", report.text);
}
