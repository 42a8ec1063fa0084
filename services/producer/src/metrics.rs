//! The producer's Prometheus metrics, registered once and handed to the sink, the sources
//! and the HTTP server. No label carries a symbol (bounded cardinality with 1,000 pairs).
//!
//! Every label value is an enum here or below ([`SendErrorKind`], [`LiveErrorKind`],
//! [`Mode`], [`Source`]), so the series pre-registered at start and the ones the events
//! ([`crate::events`]) bump are the same list, spelled once. Only the events touch these
//! metrics.

use crate::mode_choice::Mode;
use candlepipe_model::Source;
use candlepipe_runtime::http;
use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};
use std::fmt;

/// The `kind` label of `candlepipe_producer_send_errors_total`: where a candle failed on
/// its way to Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendErrorKind {
    /// Kafka did not acknowledge it (it is sent again).
    Delivery,
    /// It could not be encoded as JSON.
    Encode,
    /// librdkafka refused it for a reason other than a full queue.
    Queue,
}

impl SendErrorKind {
    /// Every kind, in the order they are pre-registered.
    pub const ALL: [SendErrorKind; 3] = [
        SendErrorKind::Delivery,
        SendErrorKind::Encode,
        SendErrorKind::Queue,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SendErrorKind::Delivery => "delivery",
            SendErrorKind::Encode => "encode",
            SendErrorKind::Queue => "queue",
        }
    }
}

/// The `kind` label of `candlepipe_producer_live_fetch_errors_total`: the ways a chart
/// fetch fails (see the live source's `FetchError::kind`), and `invalid_candle` for a
/// bar of a good answer that fails validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveErrorKind {
    Http429,
    Http5xx,
    Http4xx,
    Timeout,
    Connect,
    Malformed,
    ApiError,
    TooLarge,
    Auth,
    InvalidCandle,
}

impl LiveErrorKind {
    /// Every kind, in the order they are pre-registered.
    pub const ALL: [LiveErrorKind; 10] = [
        LiveErrorKind::Http429,
        LiveErrorKind::Http5xx,
        LiveErrorKind::Http4xx,
        LiveErrorKind::Timeout,
        LiveErrorKind::Connect,
        LiveErrorKind::Malformed,
        LiveErrorKind::ApiError,
        LiveErrorKind::TooLarge,
        LiveErrorKind::Auth,
        LiveErrorKind::InvalidCandle,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LiveErrorKind::Http429 => "http_429",
            LiveErrorKind::Http5xx => "http_5xx",
            LiveErrorKind::Http4xx => "http_4xx",
            LiveErrorKind::Timeout => "timeout",
            LiveErrorKind::Connect => "connect",
            LiveErrorKind::Malformed => "malformed",
            LiveErrorKind::ApiError => "api_error",
            LiveErrorKind::TooLarge => "too_large",
            LiveErrorKind::Auth => "auth",
            LiveErrorKind::InvalidCandle => "invalid_candle",
        }
    }
}

impl fmt::Display for LiveErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
        for mode in Mode::ALL {
            m.mode.with_label_values(&[mode.as_str()]).set(0);
        }
        for source in [Source::Replay, Source::Live] {
            m.candles_sent.with_label_values(&[source.as_str()]);
        }
        for kind in SendErrorKind::ALL {
            m.send_errors.with_label_values(&[kind.as_str()]);
        }
        for kind in LiveErrorKind::ALL {
            m.live_fetch_errors.with_label_values(&[kind.as_str()]);
        }
        m
    }
}

impl Default for ProducerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
