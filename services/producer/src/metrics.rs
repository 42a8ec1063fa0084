//! The producer's Prometheus metrics, registered once and handed to the sink, the sources
//! and the HTTP server. No label carries a symbol (bounded cardinality with 1,000 pairs).

use candlepipe_runtime::http;
use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Every producer metric.
#[derive(Clone)]
pub struct ProducerMetrics {
    pub registry: Registry,
    /// Candles acknowledged by Kafka, by source.
    pub candles_sent: IntCounterVec,
    /// Failed deliveries and sends, by kind (`delivery`, `encode`, `queue`).
    pub send_errors: IntCounterVec,
    /// Time from handing a candle to librdkafka to its acknowledgement.
    pub delivery_latency: Histogram,
    /// Candles handed to librdkafka and not yet acknowledged.
    pub in_flight: IntGauge,
    /// 1 for the running mode (`replay` or `live`), 0 for the other.
    pub mode: IntGaugeVec,
    /// Mode switches done through `POST /mode`.
    pub mode_switches: IntCounter,
    /// Fraction of the current replay pass done, 0..1.
    pub replay_progress: Gauge,
    /// Replay passes completed (looping).
    pub replay_loops: IntCounter,
    /// Dataset rows skipped because they are not valid candles.
    pub replay_bad_rows: IntCounter,
    /// Dataset files skipped (`--skip-bad-files`).
    pub replay_bad_files: IntCounter,
    /// Live fetches that failed, by kind (`http_429`, `http_5xx`, `timeout`, `malformed`, ...).
    pub live_fetch_errors: IntCounterVec,
    /// Live chart-API request latency.
    pub live_fetch_duration: Histogram,
    /// Open time (Unix seconds) of the newest acknowledged candle.
    pub last_candle_time: Gauge,
}

impl ProducerMetrics {
    /// Creates and registers every metric in a fresh registry (plus process metrics).
    pub fn new() -> Self {
        let registry = http::registry_with_process_metrics();
        let r = &registry;
        let m = ProducerMetrics {
            candles_sent: http::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "candlepipe_producer_candles_sent_total",
                        "Candles acknowledged by Kafka, by source",
                    ),
                    &["source"],
                )
                .unwrap(),
            ),
            send_errors: http::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "candlepipe_producer_send_errors_total",
                        "Failed Kafka sends and deliveries, by kind",
                    ),
                    &["kind"],
                )
                .unwrap(),
            ),
            delivery_latency: http::register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "candlepipe_producer_delivery_latency_seconds",
                        "Time from send to Kafka acknowledgement",
                    )
                    .buckets(exponential_buckets(0.0005, 2.5, 14).unwrap()),
                )
                .unwrap(),
            ),
            in_flight: http::register(
                r,
                IntGauge::new(
                    "candlepipe_producer_in_flight",
                    "Candles sent and not yet acknowledged",
                )
                .unwrap(),
            ),
            mode: http::register(
                r,
                IntGaugeVec::new(
                    Opts::new("candlepipe_producer_mode", "1 for the running source mode"),
                    &["mode"],
                )
                .unwrap(),
            ),
            mode_switches: http::register(
                r,
                IntCounter::new(
                    "candlepipe_producer_mode_switches_total",
                    "Source switches through POST /mode",
                )
                .unwrap(),
            ),
            replay_progress: http::register(
                r,
                Gauge::new(
                    "candlepipe_producer_replay_progress_ratio",
                    "Fraction of the current replay pass done",
                )
                .unwrap(),
            ),
            replay_loops: http::register(
                r,
                IntCounter::new(
                    "candlepipe_producer_replay_loops_total",
                    "Completed replay passes",
                )
                .unwrap(),
            ),
            replay_bad_rows: http::register(
                r,
                IntCounter::new(
                    "candlepipe_producer_replay_bad_rows_total",
                    "Dataset rows skipped as invalid candles",
                )
                .unwrap(),
            ),
            replay_bad_files: http::register(
                r,
                IntCounter::new(
                    "candlepipe_producer_replay_bad_files_total",
                    "Dataset files skipped as unreadable",
                )
                .unwrap(),
            ),
            live_fetch_errors: http::register(
                r,
                IntCounterVec::new(
                    Opts::new(
                        "candlepipe_producer_live_fetch_errors_total",
                        "Failed live chart fetches, by kind",
                    ),
                    &["kind"],
                )
                .unwrap(),
            ),
            live_fetch_duration: http::register(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "candlepipe_producer_live_fetch_duration_seconds",
                        "Live chart API request latency",
                    )
                    .buckets(exponential_buckets(0.01, 2.0, 12).unwrap()),
                )
                .unwrap(),
            ),
            last_candle_time: http::register(
                r,
                Gauge::new(
                    "candlepipe_producer_last_candle_timestamp_seconds",
                    "Open time of the newest acknowledged candle",
                )
                .unwrap(),
            ),
            registry: registry.clone(),
        };
        for mode in ["replay", "live"] {
            m.mode.with_label_values(&[mode]).set(0);
        }
        for source in ["replay", "live"] {
            m.candles_sent.with_label_values(&[source]);
        }
        for kind in ["delivery", "encode", "queue"] {
            m.send_errors.with_label_values(&[kind]);
        }
        for kind in crate::source::live::FETCH_ERROR_KINDS {
            m.live_fetch_errors.with_label_values(&[kind]);
        }
        m
    }
}

impl Default for ProducerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
