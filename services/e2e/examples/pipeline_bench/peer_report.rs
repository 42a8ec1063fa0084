//! The peer table (issue 17) as markdown: one row per peer with candles/s and CPU µs per
//! candle first, then the ceiling, candlepipe's latency, and the targets with
//! computed verdicts. `scripts/peers/bench.sh` wraps it with the method and versions into a
//! marked section of BENCHMARKS.md. Nothing here is typed in: a rerun rewrites every number.

use crate::ceiling::{BulkWrite, CountingReader, BULK_REQUEST_POINTS};
use crate::dataset::{DatasetFacts, PARTITIONS};
use crate::latency::LatencyRun;
use crate::peer_latency::PeerLatency;
use crate::peer_run::PeerResult;
use crate::producer_run::TimedProducer;
use crate::report::{conditions, influx_name, kafka_name, kilo, mib, verdict};

/// Everything the peer benchmark measured.
pub struct PeerReport {
    pub set: DatasetFacts,
    pub producer: TimedProducer,
    pub count: CountingReader,
    /// candlepipe first, then the peers in the order they ran.
    pub results: Vec<PeerResult>,
    /// Bulk writes of candlepipe's points with 1 and 2 writers.
    pub bulk: Vec<BulkWrite>,
    /// candlepipe at a steady pace, from its own histogram.
    pub latency: LatencyRun,
    /// Every peer (candlepipe first) at a steady pace, from the outside.
    pub paced: Vec<PeerLatency>,
    pub paced_rate: u32,
}

/// A failed run's numbers are shown, but marked.
fn mark(r: &PeerResult, text: String) -> String {
    if r.failure.is_some() {
        format!("{text} (failed)")
    } else {
        text
    }
}

impl PeerReport {
    fn candlepipe(&self) -> &PeerResult {
        &self.results[0]
    }

    fn find(&self, name: &str) -> Option<&PeerResult> {
        self.results.iter().find(|r| r.peer.name == name)
    }

    /// (broker, InfluxDB) ceilings in candles/s; InfluxDB's through candlepipe's points per
    /// candle.
    fn ceiling(&self) -> (f64, f64) {
        let cp = self.candlepipe();
        let per_candle = cp.points as f64 / cp.candles as f64;
        let best = self
            .bulk
            .iter()
            .map(BulkWrite::points_per_s)
            .fold(0.0, f64::max);
        (self.count.rate(), best / per_candle)
    }

    pub fn markdown(&self) -> String {
        let mut out = Vec::new();
        let n = self.set.candles;
        out.push(format!(
            "One topic ({PARTITIONS} partitions) on one {} broker, filled once by candlepipe's \
             producer at `--speed max` ({n} candles of {} symbols in {:.2} s); every peer then \
             read it from the beginning with a consumer group of its own into a fresh {} and \
             bucket (v2 write API), one after the other. Each row gives the load average \
             (1/5/15 min) before → after the run and the share of the machine's CPUs that was \
             busy during it (all processes: the peer, Kafka, InfluxDB, other engineers' \
             builds).\n",
            kafka_name(),
            self.set.files,
            self.producer.wall_s,
            influx_name()
        ));
        out.push(
            "| peer | version | candles/s | CPU µs/candle | CPU before the first point | \
             cores busy | peak RSS (whole tree) | peak RSS (largest process) | points written \
             | points/candle | 1m candles in InfluxDB | 5m / 15m / 1h windows | start → last \
             point | load / CPU |"
                .to_owned(),
        );
        out.push(
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
                .to_owned(),
        );
        for r in &self.results {
            let usage = r.usage;
            out.push(format!(
                "| {} | {} | {} | {} | {:.1} s | {:.2} | {} | {} | {} | {:.2} | {} | {} / {} / {} | {:.1} s | {} |",
                r.peer.name,
                r.peer.version,
                mark(r, kilo(r.rate())),
                mark(r, format!("{:.1}", r.cpu_us_per_candle())),
                r.cpu_at_first_s,
                r.cpu_s() / (r.start_to_first_s + r.first_to_last_s),
                usage.map_or("?".into(), |u| format!("{:.0} MiB", mib(u.tree_rss_kib))),
                usage.map_or("?".into(), |u| format!("{:.0} MiB", mib(u.max_rss_kib))),
                r.points,
                r.points as f64 / n as f64,
                if r.wrote_every_candle() {
                    format!("{} (all)", r.by_interval[0])
                } else {
                    format!("**{} of {n}**", r.by_interval[0])
                },
                r.by_interval[1],
                r.by_interval[2],
                r.by_interval[3],
                r.start_to_first_s + r.first_to_last_s,
                conditions(&r.conditions)
            ));
        }
        let (kafka_ceiling, influx_ceiling) = self.ceiling();
        out.push(format!(
            "| ceiling (a): librdkafka reader that only counts | – | {} | – | – | – | – | – | – | \
             – | {} messages | – | {:.2} s | {} |",
            kilo(kafka_ceiling),
            self.count.messages,
            self.count.first_to_last_s,
            conditions(&self.count.conditions)
        ));
        for b in &self.bulk {
            out.push(format!(
                "| ceiling (b): bulk write of candlepipe's points, {} writer(s), \
                 {BULK_REQUEST_POINTS}-point requests | – | {} | – | – | – | – | – | {} | {:.2} | \
                 {} | – | {:.2} s | {} |",
                b.writers,
                kilo(b.points_per_s() / (self.candlepipe().points as f64 / n as f64)),
                b.points,
                b.points as f64 / n as f64,
                b.one_minute_points,
                b.secs,
                conditions(&b.conditions)
            ));
        }
        out.push(String::new());
        out.push(
            "candles/s = the points InfluxDB accepted between the first sample showing one and \
             the last change (InfluxDB's own `storage_writer_ok_points_sum`, sampled every \
             50 ms), per second, ÷ that peer's points per candle: the same clock for every peer, \
             startup excluded (\"start → last point\" includes it). CPU = user + system time \
             of the peer's whole process tree (the JVM and its Python driver for Spark) from the \
             kernel's rusage of the reaped processes, from start to exit: startup, 3 s of idle \
             after the last point, and shutdown included; \"CPU before the first point\" is the \
             part spent before any point was written; cores busy = CPU ÷ (start → last point), \
             2 = both cores of the machine. Peak RSS: the tree's summed RSS sampled \
             every 100 ms, and the largest single process's `ru_maxrss`. Points written counts \
             every point InfluxDB accepted, rewrites of a window that was still filling \
             included. Every peer must leave one 1m candle per candle of the topic.\n"
                .to_owned(),
        );
        out.push("What each computes:\n".to_owned());
        for r in &self.results {
            out.push(format!("- **{}**: {}", r.peer.name, r.peer.computes));
        }
        out.push(String::new());
        for r in self.results.iter().filter(|r| r.failure.is_some()) {
            out.push(format!(
                "**{} failed**: {}\n",
                r.peer.name,
                r.failure
                    .as_deref()
                    .unwrap_or_default()
                    .replace('\n', " ⏎ ")
            ));
        }
        self.latency_section(&mut out);
        self.targets(&mut out, kafka_ceiling.min(influx_ceiling));
        out.join("\n")
    }

    fn latency_section(&self, out: &mut Vec<String>) {
        let l = &self.latency;
        out.push(format!(
            "### End-to-end latency at a steady {} candles/s\n",
            self.paced_rate
        ));
        out.push(
            "| peer | measured by | achieved candles/s | p50 | p99 | candles | load / CPU |"
                .to_owned(),
        );
        out.push("| --- | --- | ---: | ---: | ---: | ---: | --- |".to_owned());
        out.push(format!(
            "| candlepipe | its own histogram | {} | {:.0} ms | {:.0} ms | {} | {} |",
            kilo(l.producer.rate(self.set.candles)),
            l.p50_s * 1e3,
            l.p99_s * 1e3,
            l.observations,
            conditions(&l.consumer.conditions)
        ));
        for p in &self.paced {
            let failed = p
                .failure
                .as_ref()
                .map_or(String::new(), |_| " (failed)".into());
            out.push(format!(
                "| {} | from the outside (polls every {:.0} ms) | {} | {:.0} ms{failed} | {:.0} ms{failed} | {} | {} |",
                p.name,
                p.poll_median_s * 1e3,
                kilo(p.achieved),
                p.p50_s * 1e3,
                p.p99_s * 1e3,
                p.observations,
                conditions(&p.conditions)
            ));
        }
        out.push(format!(
            "\ncandlepipe's own: `candlepipe_end_to_end_latency_seconds` (the producer's \
             `produced_at` to InfluxDB accepting the candle's batch), buckets interpolated like \
             PromQL. From the outside, for every peer alike: the peer starts on an empty topic \
             and writes one warm-up candle first (JVM start excluded); then the producer replays \
             at `--speed` = {} × 60 ÷ symbols while InfluxDB's count of 1m candles is polled; \
             the k-th candle visible is matched with the k-th `produced_at` sent. A poll sees a \
             candle some time after it was written, so these are upper bounds by up to one poll \
             interval, and the count queries themselves load InfluxDB a little.\n",
            self.paced_rate
        ));
        for p in self.paced.iter().filter(|p| p.failure.is_some()) {
            out.push(format!(
                "**{} (paced) failed**: {}\n",
                p.name,
                p.failure
                    .as_deref()
                    .unwrap_or_default()
                    .replace('\n', " ⏎ ")
            ));
        }
    }

    fn targets(&self, out: &mut Vec<String>, ceiling: f64) {
        let cp = self.candlepipe();
        out.push("### Against issue 17's targets\n".to_owned());
        out.push("| target | measured | verdict |".to_owned());
        out.push("| --- | --- | --- |".to_owned());
        if let Some(spark) = self.find("Spark Structured Streaming") {
            let ratio = spark.cpu_us_per_candle() / cp.cpu_us_per_candle();
            out.push(format!(
                "| candlepipe's CPU per candle ≤ 1/10 of Spark's | {:.1} against {:.1} µs/candle: \
                 1/{ratio:.1} | {} |",
                cp.cpu_us_per_candle(),
                spark.cpu_us_per_candle(),
                verdict(ratio >= 10.0 && spark.failure.is_none())
            ));
        }
        if let Some(telegraf) = self.find("Telegraf") {
            out.push(format!(
                "| more candles/s than Telegraf passes through | {} against {} candles/s | {} |",
                kilo(cp.rate()),
                kilo(telegraf.rate()),
                verdict(cp.rate() > telegraf.rate() && telegraf.failure.is_none())
            ));
        }
        // Above 100 % the ceiling was measured under more load than the consumer: the
        // machine's other users moved between the two runs, and the ratio says nothing.
        let share = cp.rate() / ceiling;
        out.push(format!(
            "| consumer ≥ 80 % of the ceiling, default settings | {:.0} % ({} of {} candles/s) | {} |",
            share * 100.0,
            kilo(cp.rate()),
            kilo(ceiling),
            if share > 1.0 {
                "**inconclusive**: the ceiling measured below the consumer, so the load on the \
                 shared machine changed between the two runs; compare on a quiet machine"
            } else {
                verdict(share >= 0.8)
            }
        ));
        out.push(String::new());
    }
}
