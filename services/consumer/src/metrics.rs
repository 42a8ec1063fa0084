//! The consumer's Prometheus metrics, registered once and handed to every stage.
//!
//! Names follow Prometheus conventions (base units, `_total` counters, `_seconds`), and no
//! label carries a symbol: with 1,000 symbols per-symbol labels would explode cardinality.
//! The README's metrics table lists every metric here; a test checks the two agree.
//!
//! Label values are enums ([`Stage`], [`WriteErrorKind`]) whose `as_str` serves both the
//! pre-registration here and [`crate::events`], which is the only place that updates a
//! metric: each event's `emit` writes its log line and bumps its metric together.

use candlepipe_model::http;
use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec,
    Opts, Registry,
};

/// Bucket bounds of `candlepipe_consumer_batch_size_messages`.
pub const BATCH_SIZE_BUCKETS: [f64; 12] = [
    1.0, 10.0, 50.0, 100.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0,
    100_000.0,
];

/// Every consumer metric.
#[derive(Clone)]
pub struct ConsumerMetrics {
    pub registry: Registry,
    /// Kafka messages taken into batches.
    pub messages: IntCounter,
    /// Messages that failed decoding or validation, by reason.
    pub invalid: IntCounterVec,
    /// Records produced to the dead-letter topic, by stage (decode, influx).
    pub dlq: IntCounterVec,
    /// Candles older than the late-data horizon, dropped.
    pub late_dropped: IntCounter,
    /// Micro-batches processed (written and committed).
    pub batches: IntCounter,
    /// Messages per micro-batch.
    pub batch_size: Histogram,
    /// Time to process one micro-batch: decode to commit.
    pub batch_duration: Histogram,
    /// InfluxDB write request latency (successful requests).
    pub write_duration: Histogram,
    /// Failed InfluxDB write requests, by kind (server, timeout, connect, client).
    pub write_errors: IntCounterVec,
    /// InfluxDB write retries.
    pub write_retries: IntCounter,
    /// Points accepted by InfluxDB, by measurement.
    pub points_written: IntCounterVec,
    /// Messages between the group's committed offset and the high watermark, by partition.
    pub lag: IntGaugeVec,
    /// From the producer's `produced_at` to the point being accepted by InfluxDB.
    pub end_to_end_latency: Histogram,
    /// Unix time of the last successful InfluxDB write.
    pub last_write: Gauge,
    /// Offsets committed to Kafka.
    pub commits: IntCounter,
    /// Partitions currently assigned to this member.
    pub assigned_partitions: prometheus::IntGauge,
    /// Messages re-read to rebuild per-symbol state after an assignment.
    pub rebuild_messages: IntCounter,
    /// 1 while the sink cannot write and fetching is paused, else 0.
    pub backpressure: prometheus::IntGauge,
    /// Owned partitions with messages waiting whose committed offset has not moved for
    /// `watch::STALL_AFTER` while fetching was not paused.
    pub stalled_partitions: prometheus::IntGauge,
    /// Records too large to fetch (over `--max-message-bytes`), skipped into the DLQ unread.
    pub skipped_too_large: IntCounter,
}

impl ConsumerMetrics {
    /// Creates and registers every metric in a fresh registry (plus process metrics).
    pub fn new() -> Self {
        let registry = http::registry_with_process_metrics();
        let r = &registry;
        let secs = |name: &str, help: &str, buckets: Vec<f64>| {
            http::register(
                r,
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).unwrap(),
            )
        };
        let m = ConsumerMetrics {
            messages: http::register(
                r,
                IntCounter::new(
                    "candlepipe_consumer_messages_total",
                    "Kafka messages taken into micro-batches",
                )
                .unwrap(),
            ),
            invalid: http::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "candlepipe_consumer_invalid_total",
                        "Messages that failed decoding or validation, by reason",
                    ),
                    &["reason"],
                )
                .unwrap(),
            ),
            dlq: http::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "candlepipe_consumer_dlq_total",
                        "Records produced to the dead-letter topic, by stage",
                    ),
                    &["stage"],
                )
                .unwrap(),
            ),
            late_dropped: http::register(
                r,
                IntCounter::new(
                    "candlepipe_consumer_late_dropped_total",
                    "Candles older than the late-data horizon, dropped",
                )
                .unwrap(),
            ),
            batches: http::register(
                r,
                IntCounter::new(
                    "candlepipe_consumer_batches_total",
                    "Micro-batches written and committed",
                )
                .unwrap(),
            ),
            batch_size: http::register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "candlepipe_consumer_batch_size_messages",
                        "Messages per micro-batch",
                    )
                    // Round bounds, one at the default BATCH_MAX_RECORDS (10,000): a
                    // quantile interpolated inside a bucket never reads above the cap, as it
                    // did with powers of 4 (p99 14,324 inside 4,096..16,384).
                    .buckets(BATCH_SIZE_BUCKETS.to_vec()),
                )
                .unwrap(),
            ),
            batch_duration: secs(
                "candlepipe_consumer_batch_duration_seconds",
                "Time from aggregating a micro-batch to committing it (includes collecting the next batch while its write is in flight)",
                exponential_buckets(0.001, 2.5, 12).unwrap(),
            ),
            write_duration: secs(
                "candlepipe_influx_write_duration_seconds",
                "InfluxDB write request latency (successful requests)",
                exponential_buckets(0.001, 2.5, 12).unwrap(),
            ),
            write_errors: http::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "candlepipe_influx_write_errors_total",
                        "Failed InfluxDB write requests, by kind",
                    ),
                    &["kind"],
                )
                .unwrap(),
            ),
            write_retries: http::register(
                r,
                IntCounter::new(
                    "candlepipe_influx_write_retries_total",
                    "InfluxDB write retries",
                )
                .unwrap(),
            ),
            points_written: http::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "candlepipe_influx_points_written_total",
                        "Points accepted by InfluxDB, by measurement",
                    ),
                    &["measurement"],
                )
                .unwrap(),
            ),
            lag: http::register(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "candlepipe_consumer_lag_messages",
                        "Messages between the committed offset and the high watermark, by partition",
                    ),
                    &["partition"],
                )
                .unwrap(),
            ),
            end_to_end_latency: secs(
                "candlepipe_end_to_end_latency_seconds",
                "From the producer's produced_at to InfluxDB accepting the 1m point",
                exponential_buckets(0.005, 2.0, 14).unwrap(),
            ),
            last_write: http::register(
                r,
                Gauge::new(
                    "candlepipe_influx_last_write_timestamp_seconds",
                    "Unix time of the last successful InfluxDB write",
                )
                .unwrap(),
            ),
            commits: http::register(
                r,
                IntCounter::new(
                    "candlepipe_consumer_commits_total",
                    "Offset commits to Kafka",
                )
                .unwrap(),
            ),
            assigned_partitions: http::register(
                r,
                prometheus::IntGauge::new(
                    "candlepipe_consumer_assigned_partitions",
                    "Partitions assigned to this member",
                )
                .unwrap(),
            ),
            rebuild_messages: http::register(
                r,
                IntCounter::new(
                    "candlepipe_consumer_rebuild_messages_total",
                    "Messages re-read to rebuild state after an assignment",
                )
                .unwrap(),
            ),
            backpressure: http::register(
                r,
                prometheus::IntGauge::new(
                    "candlepipe_consumer_backpressure",
                    "1 while InfluxDB cannot be written and fetching is paused",
                )
                .unwrap(),
            ),
            stalled_partitions: http::register(
                r,
                prometheus::IntGauge::new(
                    "candlepipe_consumer_stalled_partitions",
                    "Partitions with messages waiting and no progress (not paused)",
                )
                .unwrap(),
            ),
            skipped_too_large: http::register(
                r,
                IntCounter::new(
                    "candlepipe_consumer_skipped_too_large_total",
                    "Records over --max-message-bytes, skipped unread into the DLQ",
                )
                .unwrap(),
            ),
            registry: registry.clone(),
        };
        // Series exist from the start at 0: a counter that appears already at 1 has no
        // rate(), so the first dead letter or write error would never show or alert.
        for reason in candlepipe_model::DecodeError::KINDS {
            m.invalid.with_label_values(&[reason]);
        }
        m.invalid.with_label_values(&[FUTURE_REASON]);
        for stage in Stage::ALL {
            m.dlq.with_label_values(&[stage.as_str()]);
        }
        for kind in WriteErrorKind::ALL {
            m.write_errors.with_label_values(&[kind.as_str()]);
        }
        for measurement in [
            crate::point::CANDLE_MEASUREMENT,
            crate::point::INDICATOR_MEASUREMENT,
        ] {
            m.points_written.with_label_values(&[measurement]);
        }
        m
    }
}

/// The `stage` label of `candlepipe_consumer_dlq_total`, also a dead letter's `stage`
/// header (README "Kafka"): where the pipeline gave up on a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The message could not be decoded, validated or fetched.
    Decode,
    /// InfluxDB refused the point (the dead letter's value is its line).
    Influx,
}

impl Stage {
    /// Every value, for the pre-registration above.
    pub const ALL: [Stage; 2] = [Stage::Decode, Stage::Influx];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decode => "decode",
            Stage::Influx => "influx",
        }
    }
}

/// The `kind` label of `candlepipe_influx_write_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteErrorKind {
    /// 5xx or 429: InfluxDB cannot take the request now.
    Server,
    /// Other 4xx: InfluxDB refused the request or some of its lines.
    Client,
    /// No answer within the request timeout.
    Timeout,
    /// Connection refused, reset or otherwise broken.
    Connect,
}

impl WriteErrorKind {
    /// Every value, for the pre-registration above.
    pub const ALL: [WriteErrorKind; 4] = [
        WriteErrorKind::Server,
        WriteErrorKind::Client,
        WriteErrorKind::Timeout,
        WriteErrorKind::Connect,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteErrorKind::Server => "server",
            WriteErrorKind::Client => "client",
            WriteErrorKind::Timeout => "timeout",
            WriteErrorKind::Connect => "connect",
        }
    }
}

/// The `reason` label of `candlepipe_consumer_invalid_total` for a record batch too large to
/// fetch (the same word as the decoder's own `too_large`, for a message over 16 KiB).
pub const TOO_LARGE_REASON: &str = "too_large";

/// The `reason` of a candle stamped further ahead of the consumer's clock than
/// `--max-future` (a policy of the consumer, not a decoding error).
pub const FUTURE_REASON: &str = "future";

impl Default for ConsumerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
