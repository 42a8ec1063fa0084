//! Steps 3 to 6: a batch applied to the state and encoded, its write on its own task while
//! the next batch is collected (fetching paused if InfluxDB does not take it), then its
//! dead letters and its offset commit, in order and never ahead of InfluxDB.

use super::client::MicroBatchEngine;
use super::incoming::Incoming;
use crate::dlq::DeadLetter;
use crate::events::{
    Backpressure, BatchCompleted, CandleLate, CommitFailed, DeadLettersSent, OffsetsCommitted,
};
use crate::late::LateDrop;
use crate::metrics::Stage;
use crate::sink::{EncodedBatch, RejectedPoint, SinkError, WriteOutcome};
use crate::state::Applied;
use anyhow::Context as _;
use candlepipe_model::shutdown::Shutdown;
use candlepipe_model::time;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long the loop waits on a write before fetching is paused (counted from when the
/// loop starts waiting, after it collected and aggregated the next batch).
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// A batch applied to the state, waiting for its points to be written.
pub(super) struct Aggregated {
    started: Instant,
    size: usize,
    /// The offset to commit per partition once the points are written.
    next_offsets: HashMap<i32, i64>,
    letters: Vec<DeadLetter>,
    /// `produced_at` of its candles, for the end-to-end latency.
    produced_at: Vec<i64>,
    encoded: Arc<EncodedBatch>,
}

/// The write of one batch's points, running on its own task.
/// Its output carries when InfluxDB accepted the points (Unix ms): the batch may be
/// finished a trigger later, and the end-to-end latency must not include that wait.
type WriteTask = tokio::task::JoinHandle<Result<(WriteOutcome, i64), SinkError>>;

/// A batch whose write is in flight.
pub(super) struct InFlight {
    write: WriteTask,
    batch: Aggregated,
}

/// A batch InfluxDB took, whose dead letters and offsets are still to be handled.
pub(super) struct Written {
    batch: Aggregated,
    outcome: WriteOutcome,
    /// When InfluxDB accepted the last of its points, Unix ms.
    written_at: i64,
}

impl MicroBatchEngine {
    /// Step 3: applies a batch to the state and takes the points it changed.
    pub(super) fn aggregate(&mut self, batch: Vec<Incoming>) -> Aggregated {
        let started = Instant::now();
        let size = batch.len();
        let mut next_offsets: HashMap<i32, i64> = HashMap::new();
        let mut letters = Vec::new();
        let mut produced_at = Vec::with_capacity(size);
        for m in batch {
            let next = next_offsets.entry(m.partition).or_insert(m.offset + 1);
            *next = (*next).max(m.offset + 1);
            match m.item {
                Ok(c) => {
                    if !self.symbol_partition.contains_key(&c.symbol) {
                        self.symbol_partition.insert(c.symbol.clone(), m.partition);
                    }
                    if self.aggregator.apply(&c) == Applied::Late {
                        let drop = LateDrop {
                            symbol: &c.symbol,
                            source: c.source,
                            open_time: c.open_time,
                            event_time: self.aggregator.event_time(c.source, &c.symbol),
                            newest: self.aggregator.watermark(c.source, &c.symbol),
                            horizon: Duration::from_millis(self.aggregator.horizon_ms() as u64),
                        };
                        CandleLate {
                            drop,
                            now: Instant::now(),
                        }
                        .emit(&self.metrics, &mut self.late_log);
                    }
                    if let Some(t) = c.produced_at {
                        produced_at.push(t);
                    }
                }
                Err(letter) => letters.push(letter),
            }
        }
        let mut points = Vec::new();
        self.aggregator.flush(&mut points);
        // Encoded now, the points go: a batch waiting on InfluxDB (next to the one being
        // collected) holds only its request bodies (gzipped: a sixth of the text, which
        // itself is about as big as the points). The shrink returns the Vec's growth slack
        // while the bodies are built (large blocks are mmapped, see
        // `candlepipe_model::alloc`: an mremap, not a copy).
        points.shrink_to_fit();
        let encoded = Arc::new(self.sink.encode(&points));
        drop(points);
        Aggregated {
            started,
            size,
            next_offsets,
            letters,
            produced_at,
            encoded,
        }
    }

    /// Step 4 begins: the write runs on its own task while the loop collects and aggregates
    /// the next batch (two batches in memory at most).
    pub(super) fn start_write(&self, batch: Aggregated, shutdown: &Shutdown) -> InFlight {
        let (sink, encoded, stop) = (
            self.sink.clone(),
            Arc::clone(&batch.encoded),
            shutdown.clone(),
        );
        InFlight {
            write: tokio::spawn(async move {
                let outcome = sink.write_encoded(&encoded, &stop).await?;
                Ok((outcome, time::now_ms()))
            }),
            batch,
        }
    }

    /// Steps 4 to 6 for the batch in flight, if any: waits for its write, sends its dead
    /// letters, commits its offsets.
    pub(super) async fn finish(&mut self, in_flight: Option<InFlight>) -> anyhow::Result<()> {
        let written = self.await_write(in_flight).await?;
        self.complete(written).await
    }

    /// Step 4 for the batch in flight, if any: waits until InfluxDB took its points.
    pub(super) async fn await_write(
        &mut self,
        in_flight: Option<InFlight>,
    ) -> anyhow::Result<Option<Written>> {
        let Some(InFlight { write, batch }) = in_flight else {
            return Ok(None);
        };
        let (outcome, written_at) = self.write(write).await?;
        Ok(Some(Written {
            batch,
            outcome,
            written_at,
        }))
    }

    /// Steps 5 and 6 for a written batch: its dead letters, then its offsets.
    pub(super) async fn complete(&mut self, written: Option<Written>) -> anyhow::Result<()> {
        let Some(Written {
            batch,
            outcome,
            written_at,
        }) = written
        else {
            return Ok(());
        };
        let letters = dead_letters(batch.letters, outcome.rejected);
        if !letters.is_empty() {
            self.dlq.send_all(&letters).await?;
            DeadLettersSent { letters: &letters }.emit(&self.metrics);
        }
        self.commit(&batch.next_offsets);
        BatchCompleted {
            size: batch.size,
            lines: batch.encoded.lines(),
            started: batch.started,
            produced_at: &batch.produced_at,
            written_at,
        }
        .emit(&self.metrics);
        Ok(())
    }

    /// Step 4, pausing the partitions while InfluxDB does not accept the write (fetching
    /// resumes from the consumed position).
    async fn write(&self, write: WriteTask) -> anyhow::Result<(WriteOutcome, i64)> {
        let write = async move {
            write
                .await
                .unwrap_or_else(|e| Err(SinkError::Fatal(format!("the write task failed: {e}"))))
        };
        tokio::pin!(write);
        let result = tokio::select! {
            r = &mut write => r,
            _ = tokio::time::sleep(PAUSE_AFTER) => {
                let assignment = self.consumer.assignment().unwrap_or_default();
                if let Err(e) = self.consumer.pause(&assignment) {
                    tracing::warn!("pausing partitions: {e}");
                }
                Backpressure { paused: true }.emit(&self.metrics);
                let r = (&mut write).await;
                if let Err(e) = self.consumer.resume(&assignment) {
                    tracing::warn!("resuming partitions: {e}");
                }
                Backpressure { paused: false }.emit(&self.metrics);
                r
            }
        };
        match result {
            Ok(o) => Ok(o),
            Err(SinkError::Stopped) => Err(anyhow::anyhow!(
                "shut down while InfluxDB was not accepting the batch; its offsets are not \
                 committed, so it will be processed again on the next start"
            )),
            Err(e) => Err(e).context("writing to InfluxDB"),
        }
    }

    /// Step 6. A failed commit (a rebalance raced the batch) is not an error: the batch is
    /// written, and whoever owns the partition now re-reads it idempotently.
    pub(super) fn commit(&mut self, next_offsets: &HashMap<i32, i64>) {
        let mut tpl = TopicPartitionList::new();
        for (p, next) in next_offsets {
            if self.owned.contains(p) {
                let _ = tpl.add_partition_offset(&self.kafka.topic, *p, Offset::Offset(*next));
            }
        }
        if tpl.count() == 0 {
            return;
        }
        match tokio::task::block_in_place(|| self.consumer.commit(&tpl, CommitMode::Sync)) {
            Ok(()) => {
                OffsetsCommitted.emit(&self.metrics);
                for (p, next) in next_offsets {
                    if self.owned.contains(p) {
                        self.state_next.insert(*p, *next);
                    }
                }
            }
            Err(e) => {
                CommitFailed { error: &e }.emit();
                for p in next_offsets.keys() {
                    self.state_next.remove(p);
                }
            }
        }
    }
}

/// A written batch's dead letters: its bad messages, then the points InfluxDB refused (their
/// value is the line, reason `rejected`, stage `influx`).
fn dead_letters(mut letters: Vec<DeadLetter>, rejected: Vec<RejectedPoint>) -> Vec<DeadLetter> {
    for r in rejected {
        letters.push(DeadLetter {
            payload: r.line.into_bytes(),
            key: None,
            error: r.error,
            reason: "rejected",
            stage: Stage::Influx,
            source_partition: None,
            source_offset: None,
        });
    }
    letters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_points_follow_the_bad_messages_as_influx_dead_letters() {
        let bad = DeadLetter {
            payload: b"{".to_vec(),
            key: Some(b"k".to_vec()),
            error: "malformed".into(),
            reason: "malformed_json",
            stage: Stage::Decode,
            source_partition: Some(1),
            source_offset: Some(9),
        };
        let refused = RejectedPoint {
            index: 4,
            line: "candle,symbol=A open=1 1".into(),
            error: "field type conflict".into(),
        };
        let letters = dead_letters(vec![bad], vec![refused]);
        assert_eq!(letters.len(), 2);
        assert_eq!(letters[0].reason, "malformed_json");
        let l = &letters[1];
        assert_eq!((l.reason, l.stage), ("rejected", Stage::Influx));
        assert_eq!(l.payload, b"candle,symbol=A open=1 1");
        assert_eq!(l.error, "field type conflict");
        assert_eq!(
            (l.key.as_ref(), l.source_partition, l.source_offset),
            (None, None, None)
        );
    }
}
