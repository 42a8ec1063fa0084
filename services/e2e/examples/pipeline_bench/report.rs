//! The markdown `scripts/bench.sh` puts into BENCHMARKS.md: every number with the conditions
//! it was taken in, then the numbers against issue 7's targets with a verdict and what
//! limits each. The verdicts are computed, never typed in, so a rerun cannot leave a stale
//! "met" behind.

use crate::ceiling::{BulkWrite, CountingReader, BULK_REQUEST_POINTS};
use crate::consumer_run::ConsumerResult;
use crate::criterion_results::{CriterionResults, BENCHES};
use crate::dataset::{DatasetFacts, PARTITIONS};
use crate::latency::LatencyRun;
use crate::machine::Conditions;
use crate::producer_run::TimedProducer;
use crate::MAX_BATCH;
use candlepipe_testkit::version;

/// The broker, as the report names it: `Apache Kafka 3.9.1`.
pub fn kafka_name() -> String {
    format!("Apache Kafka {}", version("CANDLEPIPE_KAFKA_VERSION"))
}

/// The time-series server, as the report names it: `InfluxDB 2.7.12`.
pub fn influx_name() -> String {
    format!("InfluxDB {}", version("CANDLEPIPE_INFLUXDB2_VERSION"))
}

/// Everything measured, for the report.
pub struct Measured {
    pub main_set: DatasetFacts,
    pub wide_set: DatasetFacts,
    pub producer: TimedProducer,
    pub count: CountingReader,
    /// The main topic consumed with gzip on, then off (the default).
    pub consumers: Vec<ConsumerResult>,
    /// 1 and 2 concurrent writers.
    pub bulk: Vec<BulkWrite>,
    /// The main dataset at a steady pace.
    pub latency: LatencyRun,
    pub wide_producer: TimedProducer,
    /// The wide topic consumed when full, with the default configuration.
    pub wide_backlog: ConsumerResult,
    /// The same with a larger librdkafka prefetch (a non-default setting), if run.
    pub wide_large_prefetch: Option<ConsumerResult>,
    /// The wide dataset at a steady pace.
    pub wide_paced: LatencyRun,
    pub criterion: CriterionResults,
}

/// The ceiling in candles/s and which side sets it.
struct Ceiling {
    kafka: f64,
    influx: f64,
    /// InfluxDB's rate with one request in flight, candles/s.
    influx_one_writer: f64,
    /// The consumer's points per candle, which converts InfluxDB's points/s to candles/s.
    points_per_candle: f64,
}

impl Ceiling {
    fn of(m: &Measured) -> Ceiling {
        let points_per_candle = m.consumers[0].points_per_candle();
        let best_bulk = m
            .bulk
            .iter()
            .map(BulkWrite::points_per_s)
            .fold(0.0, f64::max);
        let one_writer = m
            .bulk
            .iter()
            .filter(|b| b.writers == 1)
            .map(BulkWrite::points_per_s)
            .fold(0.0, f64::max);
        Ceiling {
            kafka: m.count.rate(),
            influx: best_bulk / points_per_candle,
            influx_one_writer: one_writer / points_per_candle,
            points_per_candle,
        }
    }

    fn candles_per_s(&self) -> f64 {
        self.kafka.min(self.influx)
    }

    fn set_by(&self) -> &'static str {
        if self.influx <= self.kafka {
            "InfluxDB's ingest rate"
        } else {
            "the broker's read rate"
        }
    }
}

/// The report's markdown.
#[derive(Default)]
pub struct Report {
    pub text: String,
}

/// KiB as MiB.
pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A rate in thousands, one decimal.
pub fn kilo(rate: f64) -> String {
    format!("{:.1} k", rate / 1e3)
}

/// The targets table's verdict column.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**not met**"
    }
}

/// Load before → after, and how busy the machine was.
pub fn conditions(c: &Conditions) -> String {
    format!(
        "{} → {} ({:.0} % CPU busy)",
        c.load_before,
        c.load_after,
        c.machine_busy * 100.0
    )
}

impl Report {
    pub fn from(m: &Measured) -> Report {
        let mut r = Report::default();
        let ceiling = Ceiling::of(m);
        r.criterion(&m.criterion);
        r.line("## End-to-end results (`services/e2e/examples/pipeline_bench`)\n");
        r.line(format!(
            "Main dataset: {} files, {} candles. Wide dataset: {} files (one row group each), {} \
             candles. Topics of {PARTITIONS} partitions (one replica) on one {} broker (KRaft, \
             a single node acting as broker and controller, 256 MiB heap, its log on local \
             disk); every consumer run and bulk write has its own fresh {} server, written \
             through the v2 API into a bucket of its own. Each row gives the load average \
             (1/5/15 min) before → after the measurement and the share of the machine's CPUs \
             that was busy during it (all processes: ours, the servers, other engineers' \
             builds).\n",
            m.main_set.files,
            m.main_set.candles,
            m.wide_set.files,
            m.wide_set.candles,
            kafka_name(),
            influx_name()
        ));
        r.producers(m);
        r.consumers(m);
        r.latency(m);
        r.ceiling(m, &ceiling);
        r.targets(m, &ceiling);
        r
    }

    fn line(&mut self, s: impl AsRef<str>) {
        self.text.push_str(s.as_ref());
        self.text.push('\n');
    }

    fn criterion(&mut self, crit: &CriterionResults) {
        self.line("## Criterion benches (one core, in-process, no Kafka or HTTP)\n");
        if crit.benches.is_empty() {
            self.line("Not run (`BENCH_CRITERION=0`).\n");
            return;
        }
        self.line("| bench | one element | throughput | target | load before |");
        self.line("| --- | --- | ---: | ---: | --- |");
        for b in &crit.benches {
            let (_, what, target) = BENCHES
                .iter()
                .find(|(id, _, _)| *id == b.id)
                .expect("known bench");
            let target = target.map_or("-".to_owned(), |t| format!("≥ {:.1} M/s", t / 1e6));
            self.line(format!(
                "| `{}` | {what} | {:.3} M/s | {target} | {} |",
                b.id,
                b.rate / 1e6,
                b.load
            ));
        }
        self.line("");
    }

    fn producers(&mut self, m: &Measured) {
        self.line(format!(
            "### Producer: `--speed max --no-loop --no-rebase` into {}\n",
            kafka_name()
        ));
        self.line(
            "| dataset | candles | spawn → exit 0 | candles/s | CPU user+sys | CPU µs/candle | peak RSS | load / CPU |",
        );
        self.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for (name, p, set) in [
            ("main", &m.producer, &m.main_set),
            ("wide", &m.wide_producer, &m.wide_set),
        ] {
            self.line(format!(
                "| {name}, {} files | {} | {:.2} s | {} | {:.2} s | {:.2} | {:.1} MiB | {} |",
                set.files,
                set.candles,
                p.wall_s,
                kilo(p.rate(set.candles)),
                p.user_s + p.sys_s,
                p.cpu_us_per_candle(set.candles),
                mib(p.max_rss_kib),
                conditions(&p.conditions)
            ));
        }
        self.line("");
    }

    fn consumers(&mut self, m: &Measured) {
        self.line(format!(
            "### Consumer: `--influx-api v2 --max-batch 10000 --trigger 1s` into {}\n\n\
             The \"topic full\" runs start after the producer finished, so they measure the \
             consumer's capacity; a paced run's rate is the producer's pace.\n",
            influx_name()
        ));
        self.line(
            "| run | candles | first → last point | candles/s | points/candle | CPU | CPU µs/candle | share of a core | peak RSS | 1m points in InfluxDB | load / CPU |",
        );
        self.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        let rows = m
            .consumers
            .iter()
            .chain(std::iter::once(&m.wide_backlog))
            .chain(&m.wide_large_prefetch)
            .chain([&m.latency.consumer, &m.wide_paced.consumer]);
        for c in rows {
            self.line(format!(
                "| {} | {} | {:.2} s | {} | {:.3} | {:.2} s | {:.2} | {:.0} % | {:.1} MiB | {} | {} |",
                c.setup.label,
                c.candles,
                c.first_to_last_s,
                kilo(c.rate()),
                c.points_per_candle(),
                c.cpu_s,
                c.cpu_us_per_candle(),
                c.core_share() * 100.0,
                mib(c.peak_rss_kib),
                c.one_minute_points,
                conditions(&c.conditions)
            ));
        }
        self.line(
            "\ncandles/s = points written between the first sample (every 25 ms) showing a \
             written point and the sample showing every message done, per second, ÷ points per \
             candle. CPU = the process's utime+stime just before SIGTERM (startup and group join \
             included); share of a core = CPU ÷ time from start to the last point. \
             \"1m points in InfluxDB\" must equal the candles: nothing lost.\n",
        );
    }

    fn latency(&mut self, m: &Measured) {
        self.line("### End-to-end latency at a steady pace\n");
        self.line(
            "The consumer (its defaults: `--trigger 1s`, gzip off) joined first; then the producer replayed at \
             `--speed` = 5,000 candles/s × 60 ÷ symbols. Quantiles of \
             `candlepipe_end_to_end_latency_seconds` (buckets 5 ms · 2ⁿ, so a value is \
             interpolated inside a bucket twice as wide as its lower bound) computed like \
             PromQL's `histogram_quantile`:\n",
        );
        self.line("| dataset | `--speed` | candles | achieved candles/s | p50 | p99 | consumer peak RSS | load / CPU |");
        self.line("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
        for (name, run, set) in [
            ("main", &m.latency, &m.main_set),
            ("wide", &m.wide_paced, &m.wide_set),
        ] {
            self.line(format!(
                "| {name}, {} symbols | {} | {} | {} | {:.0} ms | {:.0} ms | {:.1} MiB | {} |",
                set.files,
                run.producer.speed,
                run.observations,
                kilo(run.producer.rate(set.candles)),
                run.p50_s * 1e3,
                run.p99_s * 1e3,
                mib(run.consumer.peak_rss_kib),
                conditions(&run.consumer.conditions)
            ));
        }
        self.line(
            "\nThe latency runs from the producer's `produced_at` to InfluxDB accepting the \
             candle's micro-batch: a candle waits on average half the 1 s trigger for its batch \
             to close, then for the batch to be aggregated and written.\n",
        );
    }

    fn ceiling(&mut self, m: &Measured, ceiling: &Ceiling) {
        let n = m.main_set.candles;
        self.line("### The ceiling, measured in the same run\n");
        self.line("| path | amount | time | rate | in candles/s | load / CPU |");
        self.line("| --- | ---: | ---: | ---: | ---: | --- |");
        self.line(format!(
            "| (a) librdkafka `BaseConsumer` that only counts the main topic | {} messages | {:.2} s | {} msg/s | {} | {} |",
            m.count.messages,
            m.count.first_to_last_s,
            kilo(ceiling.kafka),
            kilo(ceiling.kafka),
            conditions(&m.count.conditions)
        ));
        for b in &m.bulk {
            self.line(format!(
                "| (b) bulk write to {} (v2 API), {} writer(s), {BULK_REQUEST_POINTS}-point requests, gzip off | {} points | {:.2} s | {} points/s | {} | {} |",
                influx_name(),
                b.writers,
                b.points,
                b.secs,
                kilo(b.points_per_s()),
                kilo(b.points_per_s() / ceiling.points_per_candle),
                conditions(&b.conditions)
            ));
        }
        let bulk_points = m.bulk.first().map_or(0, |b| b.points);
        self.line(format!(
            "\nThe counting reader read {} messages (the producer delivered {n}: nothing lost, \
             nothing duplicated when equal). The bulk writes carry the points the consumer's own \
             `Aggregator` computes from the same candles, flushed every {MAX_BATCH} candles \
             ({bulk_points} points, {:.3} per candle; the consumer wrote {:.3}); points/s becomes \
             candles/s through the consumer's {:.3} points per candle. Every bulk write left \
             its 1m points in InfluxDB ({} of {n} in the first).\n",
            m.count.messages,
            bulk_points as f64 / n as f64,
            ceiling.points_per_candle,
            ceiling.points_per_candle,
            m.bulk.first().map_or(0, |b| b.one_minute_points)
        ));
        self.line(format!(
            "**Ceiling = min(broker {}, InfluxDB {}) = {} candles/s**, set by {}.\n",
            kilo(ceiling.kafka),
            kilo(ceiling.influx),
            kilo(ceiling.candles_per_s()),
            ceiling.set_by()
        ));
    }

    fn targets(&mut self, m: &Measured, ceiling: &Ceiling) {
        self.line("## Against the issue's targets\n");
        self.line("| target | measured | verdict | what limits it |");
        self.line("| --- | --- | --- | --- |");
        let crit = &m.criterion;
        match crit.rate("consumer/decode_aggregate_encode") {
            Some(r) => self.line(format!(
                "| hot path ≥ 1.5 M candles/s on one core | {:.2} M/s (`consumer/decode_aggregate_encode`; \
                 alone: decode {:.2}, aggregate {:.2}, encode {:.2} M/s) | {} | CPU on one core, \
                 most of it in line protocol: ~2.3 lines and ~22 shortest round-trip floats per \
                 candle, so encoding alone stays below the target |",
                r / 1e6,
                crit.rate("consumer/decode").unwrap_or(f64::NAN) / 1e6,
                crit.rate("consumer/aggregate").unwrap_or(f64::NAN) / 1e6,
                crit.rate("consumer/encode").unwrap_or(f64::NAN) / 1e6,
                verdict(r >= 1.5e6)
            )),
            None => self.line("| hot path ≥ 1.5 M candles/s on one core | not run | - | - |"),
        }
        match crit.rate("replay/read_merge_validate") {
            Some(r) => self.line(format!(
                "| replay reader ≥ 1 M rows/s | {:.2} M/s (`replay/read_merge_validate`) | {} | \
                 CPU on one core: parquet decoding, the k-way merge, validation |",
                r / 1e6,
                verdict(r >= 1e6)
            )),
            None => self.line("| replay reader ≥ 1 M rows/s | not run | - | - |"),
        }
        for c in &m.consumers {
            let share = c.rate() / ceiling.candles_per_s();
            self.line(format!(
                "| consumer ≥ 80 % of the ceiling ({}) | {:.0} % ({} of {} candles/s) | {} | \
                 the ceiling is {}, measured with InfluxDB alone on the machine; here it \
                 shares the two cores with the consumer ({:.0} % of one core) and Kafka. The \
                 consumer keeps two write requests in flight and the next batch ready \
                 (more in flight measured no faster); against a bulk write with one request \
                 in flight ({} candles/s) it reaches {:.0} %. The machine was {:.0} % busy |",
                c.setup.label,
                share * 100.0,
                kilo(c.rate()),
                kilo(ceiling.candles_per_s()),
                verdict(share >= 0.8),
                ceiling.set_by(),
                c.core_share() * 100.0,
                kilo(ceiling.influx_one_writer),
                c.rate() / ceiling.influx_one_writer.min(ceiling.kafka) * 100.0,
                c.conditions.machine_busy * 100.0
            ));
        }
        for c in &m.consumers {
            self.line(format!(
                "| ≤ 8 µs CPU per candle ({}) | {:.2} µs | {} | {} |",
                c.setup.label,
                c.cpu_us_per_candle(),
                verdict(c.cpu_us_per_candle() <= 8.0),
                if c.setup.gzip {
                    "gzip (fast level) of every request body: the difference to the gzip-off run"
                } else {
                    "JSON decode, aggregation, line protocol, HTTP, librdkafka's fetch threads"
                }
            ));
        }
        let backlog_what = "the per-symbol state (~21 MB for 1,000 symbols with the 1 h late \
            horizon), the binary (~8 MiB resident), the full default prefetch \
            (`queued.max.messages.kbytes=1024`, decompressed by librdkafka), and a batch being \
            aggregated (its points) next to one being written (its request bodies)";
        let large_what = m.wide_large_prefetch.as_ref().map_or(String::new(), |b| {
            format!(
                "the same run with a larger prefetch (a non-default setting; 16 MiB was the \
                 default before): {} instead of {} candles/s, paid for in RSS",
                kilo(b.rate()),
                kilo(m.wide_backlog.rate())
            )
        });
        let paced_what = "no backlog, so little prefetch: the per-symbol state, a batch of \
            5,000 messages (1 s at 5k/s) and the rest as above";
        let wide_runs = std::iter::once((&m.wide_backlog, backlog_what))
            .chain(
                m.wide_large_prefetch
                    .iter()
                    .map(|c| (c, large_what.as_str())),
            )
            .chain(std::iter::once((&m.wide_paced.consumer, paced_what)));
        for (w, what) in wide_runs {
            self.line(format!(
                "| consumer RSS ≤ 64 MiB with 1,000 symbols ({}) | {:.1} MiB ({} symbols) | {} | \
                 {what} |",
                w.setup.label,
                mib(w.peak_rss_kib),
                m.wide_set.files,
                verdict(mib(w.peak_rss_kib) <= 64.0)
            ));
        }
        let p = &m.wide_producer;
        self.line(format!(
            "| producer RSS ≤ 256 MiB replaying ~1,000 single-row-group files in one merge | \
             {:.1} MiB ({} files of {} rows) | {} | mostly librdkafka's produce queue, which the \
             producer allows 200,000 messages (`queue.buffering.max.messages`): at max speed it \
             holds much of the dataset, and the 40-file run peaks at {:.1} MiB too. Each open \
             file adds one decoded page per column: small here; files written with pyarrow's \
             1 MiB pages (~10 MB each) are replayed from the replay cache's small-page copies \
             (see dataset/README.md and the Kaggle-layout section below) |",
            mib(p.max_rss_kib),
            m.wide_set.files,
            m.wide_set.candles / m.wide_set.files.max(1) as u64,
            verdict(mib(p.max_rss_kib) <= 256.0),
            mib(m.producer.max_rss_kib)
        ));
        self.line("");
    }
}
