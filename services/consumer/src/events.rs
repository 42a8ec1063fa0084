//! What the consumer tells an operator: one type per observable event, whose `emit` writes
//! the log line and updates the metric together, so the two never tell different stories.
//!
//! This is the `InternalEvent` habit of Vector's `internal_events`: the batch loop and the
//! sink say *what happened* (`WriteRetrying { kind, error, attempt }.emit(&metrics)`), and
//! this module alone knows which log level, which words and which series that means. Labels
//! are enums of [`crate::metrics`] ([`Stage`](crate::metrics::Stage), [`WriteErrorKind`]) whose `as_str` also
//! pre-registers the series, so a label can be neither misspelt nor forgotten there. Every
//! gauge has exactly one event here that sets it ([`Backpressure`], [`PartitionsOwned`],
//! [`WriteAccepted`], and for the partition watch [`PartitionLag`], [`StalledPartitions`]).
//!
//! The metric names and meanings are the README's "Metrics" table.

use crate::dlq::DeadLetter;
use crate::late::{LateDrop, LateLog};
use crate::lineproto::EncodedLine;
use crate::metrics::{ConsumerMetrics, WriteErrorKind, TOO_LARGE_REASON};
use crate::point::{CANDLE_MEASUREMENT, INDICATOR_MEASUREMENT};
use std::time::{Duration, Instant};

/// A message that failed decoding or validation (or opens too far in the future): it
/// becomes a dead letter.
pub struct MessageInvalid<'a> {
    pub partition: i32,
    pub offset: i64,
    /// The `reason` label: a [`candlepipe_model::DecodeError`] kind or
    /// [`crate::metrics::FUTURE_REASON`].
    pub reason: &'static str,
    pub error: &'a str,
}

impl MessageInvalid<'_> {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.invalid.with_label_values(&[self.reason]).inc();
        tracing::debug!(
            partition = self.partition,
            offset = self.offset,
            "invalid message: {}",
            self.error
        );
    }
}

/// A candle older than its symbol's late horizon, dropped. The WARN is rate-limited by
/// [`LateLog`]; the counter counts every drop.
pub struct CandleLate<'a> {
    pub drop: LateDrop<'a>,
    pub now: Instant,
}

impl CandleLate<'_> {
    pub fn emit(self, m: &ConsumerMetrics, log: &mut LateLog) {
        m.late_dropped.inc();
        log.dropped(self.drop, self.now);
    }
}

/// Dead letters Kafka acknowledged, counted by the stage that gave up on them.
pub struct DeadLettersSent<'a> {
    pub letters: &'a [DeadLetter],
}

impl DeadLettersSent<'_> {
    pub fn emit(self, m: &ConsumerMetrics) {
        for l in self.letters {
            m.dlq.with_label_values(&[l.stage.as_str()]).inc();
        }
    }
}

/// A record batch too large to fetch, skipped unread into the dead-letter topic.
pub struct TooLargeSkipped<'a> {
    pub partition: i32,
    pub offset: i64,
    pub error: &'a str,
}

impl TooLargeSkipped<'_> {
    pub fn emit(self, m: &ConsumerMetrics) {
        tracing::warn!(
            partition = self.partition,
            offset = self.offset,
            "{}",
            self.error
        );
        m.invalid.with_label_values(&[TOO_LARGE_REASON]).inc();
        m.skipped_too_large.inc();
    }
}

/// A micro-batch written, its dead letters acknowledged and its offsets committed.
pub struct BatchCompleted<'a> {
    /// Messages in the batch.
    pub size: usize,
    /// Line protocol lines it wrote.
    pub lines: usize,
    /// When its aggregation began.
    pub started: Instant,
    /// `produced_at` of its candles, Unix ms.
    pub produced_at: &'a [i64],
    /// When InfluxDB accepted the last of its points, Unix ms.
    pub written_at: i64,
}

impl BatchCompleted<'_> {
    pub fn emit(self, m: &ConsumerMetrics) {
        for t in self.produced_at {
            m.end_to_end_latency
                .observe((self.written_at - t).max(0) as f64 / 1000.0);
        }
        m.messages.inc_by(self.size as u64);
        m.batches.inc();
        m.batch_size.observe(self.size as f64);
        m.batch_duration
            .observe(self.started.elapsed().as_secs_f64());
        tracing::debug!(messages = self.size, lines = self.lines,
            elapsed = ?self.started.elapsed(), "batch done");
    }
}

/// Fetching paused because InfluxDB has not taken the batch in flight (`paused`), or
/// resumed once it did. The only writer of `candlepipe_consumer_backpressure`.
pub struct Backpressure {
    pub paused: bool,
}

impl Backpressure {
    pub fn emit(self, m: &ConsumerMetrics) {
        if self.paused {
            m.backpressure.set(1);
            tracing::warn!(
                "InfluxDB is not accepting the batch yet; fetching paused until it does"
            );
        } else {
            m.backpressure.set(0);
        }
    }
}

/// Offsets committed to Kafka.
pub struct OffsetsCommitted;

impl OffsetsCommitted {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.commits.inc();
    }
}

/// An offset commit that failed (a rebalance raced the batch).
pub struct CommitFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl CommitFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            "offset commit failed ({}); the written batch will be re-read by the partition's owner",
            self.error
        );
    }
}

/// The partitions this member owns after a rebalance. The only writer of
/// `candlepipe_consumer_assigned_partitions`.
pub struct PartitionsOwned {
    pub count: usize,
}

impl PartitionsOwned {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.assigned_partitions.set(self.count as i64);
    }
}

/// Messages re-read (one round of a rebuild) into a partition's state.
pub struct RebuildRead {
    pub messages: u64,
}

impl RebuildRead {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.rebuild_messages.inc_by(self.messages);
    }
}

/// A partition's state rebuilt from its history before the committed offset.
pub struct StateRebuilt {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
    /// Messages read in the last round.
    pub messages: u64,
    pub elapsed: Duration,
}

impl StateRebuilt {
    pub fn emit(self) {
        tracing::info!(partition = self.partition, from = self.from, to = self.to,
            messages = self.messages, elapsed = ?self.elapsed, "state rebuilt");
    }
}

/// One write request InfluxDB accepted. The only writer of
/// `candlepipe_influx_last_write_timestamp_seconds`.
pub struct WriteAccepted {
    /// How long the request took.
    pub elapsed: Duration,
}

impl WriteAccepted {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.write_duration.observe(self.elapsed.as_secs_f64());
        m.last_write.set(unix_now_secs());
    }
}

/// A write request InfluxDB refused because of some of its lines (400, 413, 422): the sink
/// isolates them next ([`WriteBisecting`], [`PointRejected`]).
pub struct LinesRejected;

impl LinesRejected {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.write_errors
            .with_label_values(&[WriteErrorKind::Client.as_str()])
            .inc();
    }
}

/// A write request that failed as a whole and is retried after a pause.
pub struct WriteRetrying<'a> {
    pub kind: WriteErrorKind,
    pub error: &'a str,
    /// The attempt that failed, from 1.
    pub attempt: u32,
}

impl WriteRetrying<'_> {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.write_errors
            .with_label_values(&[self.kind.as_str()])
            .inc();
        m.write_retries.inc();
        let (error, attempt) = (self.error, self.attempt);
        if self.kind == WriteErrorKind::Client {
            tracing::error!(error = %error, attempt,
                "InfluxDB refused the write request as a whole (credentials, org, bucket?); retrying");
        } else {
            tracing::warn!(kind = self.kind.as_str(), error = %error, attempt,
                "InfluxDB write failed; retrying");
        }
    }
}

/// Lines InfluxDB stored, counted by measurement.
pub struct PointsWritten<'a> {
    pub lines: &'a [EncodedLine],
}

impl PointsWritten<'_> {
    pub fn emit(self, m: &ConsumerMetrics) {
        let mut candles = 0;
        let mut indicators = 0;
        for line in self.lines {
            if line.measurement == CANDLE_MEASUREMENT {
                candles += 1;
            } else {
                indicators += 1;
            }
        }
        let written = &m.points_written;
        for (measurement, n) in [
            (CANDLE_MEASUREMENT, candles),
            (INDICATOR_MEASUREMENT, indicators),
        ] {
            if n > 0 {
                written.with_label_values(&[measurement]).inc_by(n);
            }
        }
    }
}

/// The sink starts splitting a refused request to find the lines InfluxDB refuses.
pub struct WriteBisecting<'a> {
    pub points: usize,
    pub error: &'a str,
}

impl WriteBisecting<'_> {
    pub fn emit(self) {
        tracing::warn!(points = self.points, error = %self.error,
            "InfluxDB rejected a write; isolating the offending points");
    }
}

/// One point InfluxDB refuses: it goes to the dead-letter topic.
pub struct PointRejected<'a> {
    pub line: &'a str,
    pub error: &'a str,
}

impl PointRejected<'_> {
    pub fn emit(self) {
        tracing::warn!(line = %self.line, error = %self.error, "InfluxDB rejected a point");
    }
}

/// A point line protocol cannot carry: it goes to the dead-letter topic.
pub struct PointUnencodable<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl PointUnencodable<'_> {
    pub fn emit(self) {
        tracing::warn!(error = %self.error, "point cannot be encoded as line protocol; rejecting it");
    }
}

/// A partition's lag as the watch measured it (`Some`), or its series removed once the
/// partition is no longer owned (`None`). The only writer of
/// `candlepipe_consumer_lag_messages`.
pub struct PartitionLag {
    pub partition: i32,
    pub lag: Option<i64>,
}

impl PartitionLag {
    pub fn emit(self, m: &ConsumerMetrics) {
        let label = self.partition.to_string();
        match self.lag {
            Some(lag) => m.lag.with_label_values(&[&label]).set(lag),
            None => {
                let _ = m.lag.remove_label_values(&[&label]);
            }
        }
    }
}

/// How many owned partitions are stalled now. The only writer of
/// `candlepipe_consumer_stalled_partitions`.
pub struct StalledPartitions {
    pub count: usize,
}

impl StalledPartitions {
    pub fn emit(self, m: &ConsumerMetrics) {
        m.stalled_partitions.set(self.count as i64);
    }
}

/// A partition with messages waiting whose committed offset has not moved for `after`.
pub struct PartitionStalled {
    pub partition: i32,
    pub offset: i64,
    pub after: Duration,
}

impl PartitionStalled {
    pub fn emit(self) {
        tracing::warn!(
            partition = self.partition,
            offset = self.offset,
            "partition stalled: no progress for {:?} with messages waiting",
            self.after
        );
    }
}

/// A stalled partition whose committed offset moved again.
pub struct PartitionMoving {
    pub partition: i32,
    pub offset: i64,
}

impl PartitionMoving {
    pub fn emit(self) {
        tracing::info!(
            partition = self.partition,
            offset = self.offset,
            "partition moving again"
        );
    }
}

fn unix_now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Stage, FUTURE_REASON};

    fn letter(stage: Stage) -> DeadLetter {
        DeadLetter {
            payload: Vec::new(),
            key: None,
            error: String::new(),
            reason: "empty",
            stage,
            source_partition: None,
            source_offset: None,
        }
    }

    #[test]
    fn dead_letters_are_counted_by_their_stage() {
        let m = ConsumerMetrics::new();
        let letters = [
            letter(Stage::Decode),
            letter(Stage::Influx),
            letter(Stage::Influx),
        ];
        DeadLettersSent { letters: &letters }.emit(&m);
        assert_eq!(m.dlq.with_label_values(&["decode"]).get(), 1);
        assert_eq!(m.dlq.with_label_values(&["influx"]).get(), 2);
    }

    #[test]
    fn a_too_large_record_counts_as_invalid_and_skipped() {
        let m = ConsumerMetrics::new();
        TooLargeSkipped {
            partition: 3,
            offset: 7,
            error: "too big",
        }
        .emit(&m);
        assert_eq!(m.invalid.with_label_values(&["too_large"]).get(), 1);
        assert_eq!(m.skipped_too_large.get(), 1);
        MessageInvalid {
            partition: 3,
            offset: 8,
            reason: FUTURE_REASON,
            error: "ahead",
        }
        .emit(&m);
        assert_eq!(m.invalid.with_label_values(&["future"]).get(), 1);
    }

    #[test]
    fn backpressure_sets_and_clears_its_gauge() {
        let m = ConsumerMetrics::new();
        Backpressure { paused: true }.emit(&m);
        assert_eq!(m.backpressure.get(), 1);
        Backpressure { paused: false }.emit(&m);
        assert_eq!(m.backpressure.get(), 0);
    }

    #[test]
    fn a_retry_counts_its_kind_and_the_retry() {
        let m = ConsumerMetrics::new();
        for kind in [WriteErrorKind::Timeout, WriteErrorKind::Client] {
            WriteRetrying {
                kind,
                error: "no",
                attempt: 1,
            }
            .emit(&m);
        }
        LinesRejected.emit(&m);
        assert_eq!(m.write_errors.with_label_values(&["timeout"]).get(), 1);
        assert_eq!(m.write_errors.with_label_values(&["client"]).get(), 2);
        assert_eq!(m.write_retries.get(), 2);
    }

    #[test]
    fn a_completed_batch_observes_latency_from_produced_at() {
        let m = ConsumerMetrics::new();
        BatchCompleted {
            size: 3,
            lines: 7,
            started: Instant::now(),
            produced_at: &[1_000, 2_500],
            written_at: 3_000,
        }
        .emit(&m);
        assert_eq!(m.messages.get(), 3);
        assert_eq!(m.batches.get(), 1);
        assert_eq!(m.end_to_end_latency.get_sample_count(), 2);
        assert!((m.end_to_end_latency.get_sample_sum() - 2.5).abs() < 1e-9);
    }

    #[test]
    fn a_partition_s_lag_series_is_set_then_removed() {
        let m = ConsumerMetrics::new();
        PartitionLag {
            partition: 4,
            lag: Some(12),
        }
        .emit(&m);
        assert_eq!(m.lag.with_label_values(&["4"]).get(), 12);
        PartitionLag {
            partition: 4,
            lag: None,
        }
        .emit(&m);
        let families = m.registry.gather();
        let lag = families
            .iter()
            .find(|f| f.name() == "candlepipe_consumer_lag_messages");
        assert!(lag.is_none_or(|f| f.get_metric().is_empty()), "{lag:?}");
    }

    #[test]
    fn accepted_writes_set_the_last_write_time() {
        let m = ConsumerMetrics::new();
        WriteAccepted {
            elapsed: Duration::from_millis(5),
        }
        .emit(&m);
        assert!(m.last_write.get() > 1.6e9, "{}", m.last_write.get());
        assert_eq!(m.write_duration.get_sample_count(), 1);
    }
}
