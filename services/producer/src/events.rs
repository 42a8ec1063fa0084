//! What the producer tells the operator, one type per observable event (the habit of
//! Vector's `internal_events`): an event's [`InternalEvent::emit`] writes its log line, if
//! it has one, and bumps its metrics, together, so the two never disagree and no other
//! code touches a metric.
//!
//! Labels are enums ([`SendErrorKind`], [`LiveErrorKind`], [`Mode`], the candle's
//! [`Source`](candlepipe_model::Source)), spelled once in [`crate::metrics`], where the
//! series are also pre-registered. Each gauge has one owner: the mode gauge is set by
//! [`ModeStarted`], the replay progress by [`ReplayProgressed`], the in-flight count by
//! [`CandleQueued`] and [`CandleAcked`], the newest candle's time by [`CandleAcked`].
//! The README's metrics table lists what each metric means.

use crate::metrics::{LiveErrorKind, ProducerMetrics, SendErrorKind};
use crate::mode_choice::Mode;
use crate::source::stats::ReplayStats;
use candlepipe_model::time::fmt_ms;
use candlepipe_model::Candle;
use std::fmt::Display;
use std::time::Duration;

/// Something the producer did or met that the operator can see.
pub trait InternalEvent {
    /// Writes the event's log line (if it has one) and bumps its metrics.
    fn emit(self, metrics: &ProducerMetrics);
}

/// A candle was handed to librdkafka and awaits its acknowledgement.
pub struct CandleQueued;

impl InternalEvent for CandleQueued {
    fn emit(self, m: &ProducerMetrics) {
        m.in_flight.inc();
    }
}

/// Kafka acknowledged a candle, `latency` after it was handed to librdkafka. Not logged:
/// there is one per candle.
pub struct CandleAcked<'a> {
    pub candle: &'a Candle,
    pub latency: Duration,
}

impl InternalEvent for CandleAcked<'_> {
    fn emit(self, m: &ProducerMetrics) {
        m.in_flight.dec();
        m.delivery_latency.observe(self.latency.as_secs_f64());
        m.candles_sent
            .with_label_values(&[self.candle.source.as_str()])
            .inc();
        m.last_candle_time
            .set(self.candle.open_time as f64 / 1000.0);
    }
}

/// A candle failed on its way to Kafka. Counted only: an encode or queue failure is the
/// error the sink returns (and the binary logs), and delivery failures are logged by the
/// sink's error tally, a line per kind every few seconds rather than one per candle.
pub struct SendFailed {
    pub kind: SendErrorKind,
}

impl InternalEvent for SendFailed {
    fn emit(self, m: &ProducerMetrics) {
        m.send_errors.with_label_values(&[self.kind.as_str()]).inc();
    }
}

/// A source started: the mode gauge shows it as the running one.
pub struct ModeStarted {
    pub mode: Mode,
}

impl InternalEvent for ModeStarted {
    fn emit(self, m: &ProducerMetrics) {
        for mode in Mode::ALL {
            m.mode
                .with_label_values(&[mode.as_str()])
                .set(i64::from(mode == self.mode));
        }
    }
}

/// `POST /mode` switched the source (the supervisor logs the switch as it begins).
pub struct ModeSwitched;

impl InternalEvent for ModeSwitched {
    fn emit(self, m: &ProducerMetrics) {
        m.mode_switches.inc();
    }
}

/// The replay's share of the current pass, read from its counters: sent every second
/// while it runs and once more when a run ends.
pub struct ReplayProgressed<'a> {
    pub stats: &'a ReplayStats,
}

impl InternalEvent for ReplayProgressed<'_> {
    fn emit(self, m: &ProducerMetrics) {
        m.replay_progress.set(self.stats.percent_done() / 100.0);
    }
}

/// The replay skipped rows or files, or finished passes, since the last time it was
/// asked. The replay thread logs each bad row and file as it meets it.
pub struct ReplayCounted {
    pub bad_rows: u64,
    pub bad_files: u64,
    pub loops: u64,
}

impl InternalEvent for ReplayCounted {
    fn emit(self, m: &ProducerMetrics) {
        m.replay_bad_rows.inc_by(self.bad_rows);
        m.replay_bad_files.inc_by(self.bad_files);
        m.replay_loops.inc_by(self.loops);
    }
}

/// One live chart request came back (well or not) after `elapsed`.
pub struct LiveFetched {
    pub elapsed: Duration,
}

impl InternalEvent for LiveFetched {
    fn emit(self, m: &ProducerMetrics) {
        m.live_fetch_duration.observe(self.elapsed.as_secs_f64());
    }
}

/// A live chart request for `symbol` failed; the symbol polls again in `retry_in`.
pub struct LiveFetchFailed<'a> {
    pub symbol: &'a str,
    pub kind: LiveErrorKind,
    pub error: &'a dyn Display,
    /// Failures in a row, this one included.
    pub consecutive: u32,
    pub retry_in: Duration,
}

impl InternalEvent for LiveFetchFailed<'_> {
    fn emit(self, m: &ProducerMetrics) {
        let LiveFetchFailed {
            symbol,
            kind,
            error,
            consecutive,
            retry_in,
        } = self;
        m.live_fetch_errors
            .with_label_values(&[kind.as_str()])
            .inc();
        tracing::warn!(symbol, kind = kind.as_str(), consecutive, retry_in = ?retry_in,
            "Yahoo chart fetch for {symbol} failed: {error}");
    }
}

/// Yahoo refused a chart request in a way a cookie and crumb may cure (401/403, or a 429
/// before any crumb): counted like any failed fetch, logged at INFO because the request is
/// asked again at once with a fresh cookie and crumb.
pub struct LiveRefusedFetchingCrumb<'a> {
    pub symbol: &'a str,
    pub kind: LiveErrorKind,
    pub error: &'a dyn Display,
}

impl InternalEvent for LiveRefusedFetchingCrumb<'_> {
    fn emit(self, m: &ProducerMetrics) {
        let LiveRefusedFetchingCrumb {
            symbol,
            kind,
            error,
        } = self;
        m.live_fetch_errors
            .with_label_values(&[kind.as_str()])
            .inc();
        tracing::info!(symbol, kind = kind.as_str(),
            "Yahoo refused the chart request ({error}); fetching a cookie and crumb and asking again");
    }
}

/// Yahoo answered with a bar that is not a valid candle; it is skipped.
pub struct InvalidLiveCandle<'a> {
    pub symbol: &'a str,
    pub open_time: i64,
    pub why: &'a dyn Display,
}

impl InternalEvent for InvalidLiveCandle<'_> {
    fn emit(self, m: &ProducerMetrics) {
        m.live_fetch_errors
            .with_label_values(&[LiveErrorKind::InvalidCandle.as_str()])
            .inc();
        tracing::warn!(symbol = %self.symbol, open_time = %fmt_ms(self.open_time),
            "skipping an invalid Yahoo candle of {}: {}", self.symbol, self.why);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candlepipe_model::Source;
    use candlepipe_runtime::log_capture::capture_logs_at;

    fn live_errors(m: &ProducerMetrics, kind: LiveErrorKind) -> u64 {
        m.live_fetch_errors
            .with_label_values(&[kind.as_str()])
            .get()
    }

    #[test]
    fn an_acknowledged_candle_moves_every_delivery_metric() {
        let m = ProducerMetrics::new();
        CandleQueued.emit(&m);
        CandleQueued.emit(&m);
        assert_eq!(m.in_flight.get(), 2);
        let c = Candle::ohlcv("BTC-USD", Source::Live, 120_000, 1.0, 2.0, 0.5, 1.5, 3.0);
        CandleAcked {
            candle: &c,
            latency: Duration::from_millis(5),
        }
        .emit(&m);
        assert_eq!(m.in_flight.get(), 1);
        assert_eq!(m.candles_sent.with_label_values(&["live"]).get(), 1);
        assert_eq!(m.candles_sent.with_label_values(&["replay"]).get(), 0);
        assert_eq!(m.delivery_latency.get_sample_count(), 1);
        assert_eq!(m.last_candle_time.get(), 120.0);
    }

    #[test]
    fn send_failures_count_under_their_kind() {
        let m = ProducerMetrics::new();
        SendFailed {
            kind: SendErrorKind::Queue,
        }
        .emit(&m);
        assert_eq!(m.send_errors.with_label_values(&["queue"]).get(), 1);
        assert_eq!(m.send_errors.with_label_values(&["delivery"]).get(), 0);
    }

    #[test]
    fn the_mode_gauge_shows_one_running_mode() {
        let m = ProducerMetrics::new();
        ModeStarted { mode: Mode::Live }.emit(&m);
        assert_eq!(m.mode.with_label_values(&["live"]).get(), 1);
        assert_eq!(m.mode.with_label_values(&["replay"]).get(), 0);
        ModeStarted { mode: Mode::Replay }.emit(&m);
        assert_eq!(m.mode.with_label_values(&["live"]).get(), 0);
        assert_eq!(m.mode.with_label_values(&["replay"]).get(), 1);
        ModeSwitched.emit(&m);
        assert_eq!(m.mode_switches.get(), 1);
    }

    #[test]
    fn replay_progress_and_counts_come_from_the_replay() {
        let m = ProducerMetrics::new();
        let stats = ReplayStats::default();
        ReplayProgressed { stats: &stats }.emit(&m);
        assert_eq!(m.replay_progress.get(), 1.0, "an empty dataset is done");
        ReplayCounted {
            bad_rows: 3,
            bad_files: 1,
            loops: 2,
        }
        .emit(&m);
        assert_eq!(
            (
                m.replay_bad_rows.get(),
                m.replay_bad_files.get(),
                m.replay_loops.get()
            ),
            (3, 1, 2)
        );
    }

    #[test]
    fn a_failed_fetch_is_logged_and_counted_together() {
        let m = ProducerMetrics::new();
        let ((), logs) = capture_logs_at(tracing::Level::WARN, || {
            LiveFetchFailed {
                symbol: "BTC-USD",
                kind: LiveErrorKind::Http429,
                error: &"HTTP 429 Too Many Requests",
                consecutive: 2,
                retry_in: Duration::from_secs(4),
            }
            .emit(&m)
        });
        assert_eq!(live_errors(&m, LiveErrorKind::Http429), 1);
        assert!(
            logs.contains("Yahoo chart fetch for BTC-USD failed: HTTP 429"),
            "{logs}"
        );
        assert!(logs.contains("http_429"), "{logs}");
    }

    #[test]
    fn an_invalid_live_candle_is_logged_and_counted_together() {
        let m = ProducerMetrics::new();
        let ((), logs) = capture_logs_at(tracing::Level::WARN, || {
            InvalidLiveCandle {
                symbol: "ETH-USD",
                open_time: 60_000,
                why: &"high below low",
            }
            .emit(&m)
        });
        assert_eq!(live_errors(&m, LiveErrorKind::InvalidCandle), 1);
        assert!(
            logs.contains("skipping an invalid Yahoo candle of ETH-USD: high below low"),
            "{logs}"
        );
        LiveFetched {
            elapsed: Duration::from_millis(30),
        }
        .emit(&m);
        assert_eq!(m.live_fetch_duration.get_sample_count(), 1);
    }
}
