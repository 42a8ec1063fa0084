//! The consumer under measurement: the release `consumer` binary on one topic, writing into
//! its own InfluxDB 2 bucket through the v2 write API, watched through its own `/metrics` as
//! an operator would watch it.
//!
//! The consumer counts a message (`candlepipe_consumer_messages_total`) only after InfluxDB
//! accepted its batch's points and the offsets were committed, while the sink counts points
//! (`candlepipe_influx_points_written_total`) as each request is accepted. So the sample
//! where messages reach the topic's size is the last point written, and the first sample
//! with a point is the first. CPU and peak RSS are read from `/proc` just before SIGTERM.

use crate::dataset::PARTITIONS;
use crate::histogram::histogram_buckets;
use crate::machine::{process_cpu_seconds, process_peak_rss_kib, Conditions, ReleaseBins, Watch};
use crate::{MAX_BATCH, MEASUREMENT_TIMEOUT};
use candlepipe_testkit::pipeline::{count_points, ServiceProcess};
use candlepipe_testkit::{unique, wait_until, Influxd};
use std::time::{Duration, Instant};

/// How often `/metrics` is sampled while the consumer works.
const SAMPLE_EVERY: Duration = Duration::from_millis(25);

/// How one consumer run is configured beyond the benchmark's fixed flags.
#[derive(Debug, Clone)]
pub struct ConsumerSetup {
    /// What the report calls this run.
    pub label: String,
    /// `--influx-gzip`.
    pub gzip: bool,
    /// More flags, e.g. `--kafka-property queued.max.messages.kbytes=2048`.
    pub extra: Vec<String>,
}

/// How the report names a gzip setting: `gzip on` / `gzip off`, marked when it is the
/// consumer's default.
pub fn gzip_label(gzip: bool) -> String {
    let word = if gzip { "gzip on" } else { "gzip off" };
    if gzip == candlepipe_consumer::sink::DEFAULT_GZIP {
        format!("{word} (default)")
    } else {
        word.to_owned()
    }
}

/// The consumer binary running against one topic and one InfluxDB 2 bucket.
pub struct MeasuredConsumer {
    process: ServiceProcess,
    setup: ConsumerSetup,
    db: String,
    watch: Watch,
    started: Instant,
}

/// What one consumer run measured.
#[derive(Debug, Clone)]
pub struct ConsumerResult {
    pub setup: ConsumerSetup,
    pub candles: u64,
    /// Points already counted at the first sample showing any (the first request's).
    pub points_at_first_sample: u64,
    /// From the first sample showing a written point to the one showing every message done.
    pub first_to_last_s: f64,
    /// From starting the process to the last point written (startup and group join
    /// included).
    pub start_to_last_s: f64,
    pub points: u64,
    /// utime + stime at the end, s.
    pub cpu_s: f64,
    pub peak_rss_kib: u64,
    /// 1m candle points InfluxDB holds afterwards (one per candle when nothing was lost).
    pub one_minute_points: usize,
    /// `candlepipe_end_to_end_latency_seconds` at the end: cumulative `(le, count)`.
    pub latency_buckets: Vec<(f64, f64)>,
    pub conditions: Conditions,
}

impl ConsumerResult {
    pub fn points_per_candle(&self) -> f64 {
        self.points as f64 / self.candles as f64
    }

    /// Points per second between the first and the last point written.
    pub fn points_per_s(&self) -> f64 {
        (self.points - self.points_at_first_sample) as f64 / self.first_to_last_s
    }

    /// Candles per second from the first point written to the last: the points written in
    /// that interval, over its length, in candles (÷ points per candle).
    pub fn rate(&self) -> f64 {
        self.points_per_s() / self.points_per_candle()
    }

    pub fn cpu_us_per_candle(&self) -> f64 {
        self.cpu_s * 1e6 / self.candles as f64
    }

    /// Share of one core the consumer used from its start to the last point.
    pub fn core_share(&self) -> f64 {
        self.cpu_s / self.start_to_last_s
    }

    /// One line for the console.
    pub fn summary(&self) -> String {
        format!(
            "{}: {:.0} candles/s, {:.3} points/candle, {:.2} µs CPU/candle, peak RSS {:.1} MiB, \
             {} 1m points in InfluxDB, load {} → {}",
            self.setup.label,
            self.rate(),
            self.points_per_candle(),
            self.cpu_us_per_candle(),
            self.peak_rss_kib as f64 / 1024.0,
            self.one_minute_points,
            self.conditions.load_before,
            self.conditions.load_after
        )
    }
}

impl MeasuredConsumer {
    /// Starts `consumer` on `topic` with a fresh group, dead-letter topic and bucket (created
    /// first: the consumer only checks that it exists): `--influx-api v2 --max-batch 10000
    /// --trigger 1s` plus `setup`. The group has this one member, so the default
    /// `--group-instance-id` (the hostname) is never shared within it.
    pub fn start(
        bins: &ReleaseBins,
        brokers: &str,
        topic: &str,
        influx: &Influxd,
        setup: ConsumerSetup,
    ) -> MeasuredConsumer {
        let db = unique("bench").replace('-', "_");
        influx.create_db(&db);
        let mut args: Vec<String> = [
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--group",
            &unique("bench-group"),
            "--dlq-topic",
            &unique("bench-dlq"),
            "--influx-url",
            &influx.url,
            "--max-batch",
            &MAX_BATCH.to_string(),
            "--trigger",
            "1s",
            "--influx-gzip",
            if setup.gzip { "true" } else { "false" },
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(influx.consumer_args(&db));
        args.extend(setup.extra.iter().cloned());
        let watch = Watch::start();
        let started = Instant::now();
        let process = ServiceProcess::start(&bins.consumer, &args);
        MeasuredConsumer {
            process,
            setup,
            db,
            watch,
            started,
        }
    }

    /// Waits until the consumer owns every partition (before a paced producer starts, so
    /// that joining the group does not count as latency).
    pub fn wait_assigned(&self) {
        wait_until(
            MEASUREMENT_TIMEOUT,
            "the consumer to be assigned every partition",
            || {
                self.process
                    .metric("candlepipe_consumer_assigned_partitions")
                    >= f64::from(PARTITIONS)
            },
        );
    }

    /// Samples `/metrics` until `candles` messages are done, reads the process's CPU time
    /// and peak RSS, stops it with SIGTERM (it must exit 0) and counts what InfluxDB holds.
    pub fn finish(mut self, influx: &Influxd, candles: u64) -> ConsumerResult {
        let mut first: Option<(Instant, u64)> = None;
        let (last_at, text) = loop {
            self.process.assert_running();
            let text = self.process.metrics_text();
            let at = Instant::now();
            let messages = metric_sum(&text, "candlepipe_consumer_messages_total") as u64;
            let points = metric_sum(&text, "candlepipe_influx_points_written_total") as u64;
            if first.is_none() && points > 0 {
                first = Some((at, points));
            }
            if messages >= candles {
                break (at, text);
            }
            assert!(
                self.started.elapsed() < MEASUREMENT_TIMEOUT,
                "the consumer processed {messages} of {candles} messages in {MEASUREMENT_TIMEOUT:?}"
            );
            std::thread::sleep(SAMPLE_EVERY);
        };
        let pid = self.process.pid();
        let cpu_s = process_cpu_seconds(pid);
        let peak_rss_kib = process_peak_rss_kib(pid);
        let conditions = self.watch.end();
        self.process.signal(libc::SIGTERM);
        assert_eq!(
            self.process.wait_exit(Duration::from_secs(60)),
            Some(0),
            "the consumer did not exit 0 on SIGTERM:\n{}",
            self.process.log()
        );
        let (first_at, points_at_first_sample) = first.expect("a point was written");
        ConsumerResult {
            candles,
            points_at_first_sample,
            first_to_last_s: (last_at - first_at).as_secs_f64(),
            start_to_last_s: (last_at - self.started).as_secs_f64(),
            points: metric_sum(&text, "candlepipe_influx_points_written_total") as u64,
            cpu_s,
            peak_rss_kib,
            one_minute_points: count_points(
                influx,
                &self.db,
                "candle",
                "close",
                "\"interval\" = '1m'",
            ),
            latency_buckets: histogram_buckets(&text, "candlepipe_end_to_end_latency_seconds"),
            conditions,
            setup: self.setup,
        }
    }
}

/// The metrics-text parser the tests use too.
pub use candlepipe_testkit::pipeline::metric_sum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metric_is_summed_over_its_labels_and_not_confused_with_longer_names() {
        let text = "# HELP candlepipe_influx_points_written_total Points\n\
                    candlepipe_influx_points_written_total{measurement=\"candle\"} 257080\n\
                    candlepipe_influx_points_written_total{measurement=\"indicator\"} 199960\n\
                    candlepipe_consumer_messages_total 200000\n\
                    candlepipe_consumer_messages_total_extra 7\n";
        assert_eq!(
            metric_sum(text, "candlepipe_influx_points_written_total"),
            457040.0
        );
        assert_eq!(
            metric_sum(text, "candlepipe_consumer_messages_total"),
            200000.0
        );
        assert_eq!(metric_sum(text, "candlepipe_absent_total"), 0.0);
    }
}
