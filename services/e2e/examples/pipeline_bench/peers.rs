//! `pipeline_bench peers`: candlepipe next to the programs it claims to replace (issue 17),
//! in one run, on one topic, each into a fresh InfluxDB 2.
//!
//! 1. One Apache Kafka broker; the dataset is replayed once into one topic by candlepipe's
//!    producer at `--speed max`, and the counting librdkafka reader (the broker side of the
//!    ceiling) proves every candle arrived.
//! 2. candlepipe's consumer with its defaults, then every `--peer` (Spark Structured
//!    Streaming, Telegraf, the seed-style Python consumer, as `scripts/bench.sh peers` passes
//!    them), each from the beginning of that same topic into a fresh InfluxDB 2 and bucket,
//!    measured alike from the outside ([`crate::peer_run`]).
//! 3. The InfluxDB side of the ceiling: a bulk write of the points candlepipe writes.
//! 4. End-to-end latency at a steady pace: candlepipe's own histogram, and every peer's
//!    (candlepipe's too, as a cross-check) from the outside ([`crate::peer_latency`]).
//!
//! The markdown goes to `--report`; `scripts/peers/bench.sh` puts it into BENCHMARKS.md.

use crate::ceiling::{consumer_points, BulkWrite, CountingReader};
use crate::dataset::{fresh_topic, DatasetFacts};
use crate::latency::paced_run;
use crate::machine::ReleaseBins;
use crate::peer_latency::measure_paced;
use crate::peer_report::PeerReport;
use crate::peer_run::{measure, Peer, PeerResult, Target};
use crate::producer_run::TimedProducer;
use candlepipe_testkit::{free_port, unique, Influxd, Kafka};
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;

/// `pipeline_bench peers`'s command line.
#[derive(Debug, Parser)]
#[command(name = "pipeline_bench peers")]
pub struct PeerArgs {
    /// The dataset: Kaggle-schema parquet files (≥ 200k candles, ≥ 40 symbols).
    #[arg(long)]
    dataset: PathBuf,
    /// Where to write the markdown report.
    #[arg(long)]
    report: PathBuf,
    /// Folder holding the release `producer` and `consumer` [default: `target/release`].
    #[arg(long, env = "BENCH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// candlepipe's version, for the report.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    candlepipe_version: String,
    /// A peer, `NAME|VERSION|COMPUTES|PROGRAM ARG…`; repeatable, run in order. It gets
    /// PEER_BROKERS, PEER_TOPIC, PEER_GROUP and PEER_INFLUX_{URL,ORG,TOKEN,BUCKET}.
    #[arg(long)]
    peer: Vec<String>,
    /// Candles per second of candlepipe's latency run.
    #[arg(long, default_value_t = 5000)]
    paced_rate: u32,
    /// Where the peers' logs go (kept for a look after a failure) [default: a temp dir].
    #[arg(long)]
    logs: Option<PathBuf>,
}

/// Makes a run's peer once its target (topic, InfluxDB, bucket, group) is known.
type MakePeer<'a> = Box<dyn Fn(&Target) -> Peer + 'a>;

/// What candlepipe's consumer computes, for the report.
const CANDLEPIPE_COMPUTES: &str = "1m candles, 5m/15m/1h rollups with vwap and the optional \
    sums, 12 indicators over the closes of every interval (1m, 5m, 15m, 1h); validation with a \
    dead-letter topic; offsets committed after InfluxDB accepted the batch";

/// candlepipe's consumer with its defaults, pointed at `target` (its flags are the only way
/// to say where; every other setting is the default).
fn candlepipe(bins: &ReleaseBins, target: &Target, version: &str) -> Peer {
    let consumer = bins.consumer.display().to_string();
    let mut command: Vec<String> = [
        consumer.as_str(),
        "--brokers",
        target.brokers,
        "--topic",
        target.topic,
        "--group",
        target.group,
        "--dlq-topic",
        &unique("peers-dlq"),
        "--influx-url",
        &target.influx.url,
        "--http-addr",
        &format!("127.0.0.1:{}", free_port()),
    ]
    .map(str::to_owned)
    .to_vec();
    command.extend(target.influx.consumer_args(target.bucket));
    Peer {
        name: "candlepipe".to_owned(),
        version: version.to_owned(),
        computes: CANDLEPIPE_COMPUTES.to_owned(),
        command,
        env: vec![(
            "RUST_LOG".to_owned(),
            std::env::var("SERVICE_LOG").unwrap_or("info".into()),
        )],
    }
}

pub fn main(args: PeerArgs) {
    let peers: Vec<Peer> = args
        .peer
        .iter()
        .map(|s| Peer::parse(s).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let bins = ReleaseBins::locate(args.bin_dir.clone());
    let tmp_logs = tempfile::Builder::new()
        .prefix("peer-bench-")
        .tempdir()
        .expect("log dir");
    let logs = args.logs.clone().unwrap_or(tmp_logs.path().to_owned());
    std::fs::create_dir_all(&logs).expect("log dir");
    let set = DatasetFacts::read(&args.dataset);
    println!("dataset: {set:?}");

    let kafka = Kafka::start();
    let topic = fresh_topic(&kafka, "peers");
    let producer = TimedProducer::run(&bins, &kafka.brokers, &topic, &args.dataset, "max", &logs);
    println!("producer: {producer:?}");
    let count = CountingReader::count(&kafka.brokers, &topic, set.candles);
    println!("count-only reader: {count:?}");

    // Every run gets a fresh InfluxDB 2, bucket and consumer group.
    let with_target = |topic: &str, each: &mut dyn FnMut(&Target)| {
        let influx = Influxd::start();
        let bucket = unique("peers").replace('-', "_");
        influx.create_db(&bucket);
        let group = unique("peers-group");
        each(&Target {
            brokers: &kafka.brokers,
            topic,
            influx: &influx,
            bucket: &bucket,
            group: &group,
        });
    };
    let mut makers: Vec<MakePeer> = vec![Box::new(|t: &Target| {
        candlepipe(&bins, t, &args.candlepipe_version)
    })];
    for peer in &peers {
        makers.push(Box::new(move |_: &Target| peer.clone()));
    }

    // The full topic, every peer in turn.
    let mut results: Vec<PeerResult> = Vec::new();
    for make in &makers {
        with_target(&topic, &mut |target| {
            let peer = make(target);
            println!("running {} ({})", peer.name, peer.command.join(" "));
            let result = measure(&peer, target, set.candles, &logs);
            println!("{}", result.summary());
            results.push(result);
        });
    }

    let points = Arc::new(consumer_points(&args.dataset));
    let bulk: Vec<BulkWrite> = [1, 2]
        .into_iter()
        .map(|writers| {
            let influx = Influxd::start();
            let result = BulkWrite::run(&influx, &points, writers, set.candles);
            println!("bulk write: {result:?}");
            result
        })
        .collect();
    drop(points);

    // Latency at a steady pace: candlepipe's own histogram, then every peer (candlepipe
    // included) from the outside, each on a fresh topic.
    let latency = paced_run(
        &bins,
        &kafka,
        &args.dataset,
        &set,
        args.paced_rate,
        &logs,
        "candlepipe, paced, defaults",
    );
    let speed = (f64::from(args.paced_rate) * 60.0 / set.files as f64).to_string();
    let mut paced = Vec::new();
    for make in &makers {
        let topic = fresh_topic(&kafka, "peers-paced");
        with_target(&topic, &mut |target| {
            let peer = make(target);
            let result = measure_paced(&peer, target, &bins, &args.dataset, &set, &speed, &logs);
            println!("paced: {result:?}");
            paced.push(result);
        });
    }

    let report = PeerReport {
        set,
        producer,
        count,
        results,
        bulk,
        latency,
        paced,
        paced_rate: args.paced_rate,
    }
    .markdown();
    std::fs::write(&args.report, &report).expect("write the report");
    println!("\n{report}");
}
