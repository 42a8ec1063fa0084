//! The Kafka sink: every candle a source emits ends up acknowledged on the topic, or the
//! producer says loudly that it did not.
//!
//! Sources push candles into a bounded channel ([`crate::handoff`]) (backpressure: a fast replay waits
//! for Kafka instead of buffering the dataset in memory). The sink encodes each candle as
//! JSON v1, keys it by symbol (per-symbol order = partition order) and hands it to an
//! idempotent librdkafka producer (`acks=all`, lz4). Deliveries are awaited concurrently;
//! acknowledgements feed the metrics. librdkafka retries internally; with the default
//! `--delivery-timeout 0` it never gives up on a candle while the broker is away (the local
//! queue fills, the channel fills, the source waits). A delivery that does fail (with
//! `--delivery-timeout`, after that long) is counted and sent again after a backoff that
//! doubles with each failed round (0.1 s up to 10 s, back to 0.1 s after a success), so
//! nothing is dropped silently and a dead broker is not hammered. The failures are logged
//! through an [`ErrorTally`]: the first of each kind at once, then one line per kind every
//! 10 s with the count, never one line per candle.
//!
//! A replayed candle travels with its time shift in the header [`REPLAY_SHIFT_HEADER`], so
//! that a restarted replay can continue the same timeline (`source/timeline.rs`).
//!
//! [`SinkCommand::Flush`] answers once everything sent before it is acknowledged: a mode
//! switch uses it so the old source's candles are on Kafka before the new source starts,
//! and shutdown uses it before exiting 0.

use crate::events::{CandleAcked, CandleQueued, InternalEvent, SendFailed};
use crate::handoff::SinkCommand;
pub use crate::handoff::REPLAY_SHIFT_HEADER;
use crate::metrics::{ProducerMetrics, SendErrorKind};
use anyhow::Context;
use candlepipe_model::{codec, time, Candle};
use candlepipe_runtime::errlog::ErrorTally;
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::kafka_log::{KafkaLog, Producer as FutureProducer};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The first wait before failed candles are sent again; doubled after each failed round.
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
/// The longest wait before failed candles are sent again.
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// How often repeated delivery failures are summarised in the log.
pub const ERROR_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The wait before the `round`-th consecutive resend of failed candles (0-based).
pub fn retry_backoff(round: u32) -> Duration {
    RETRY_FIRST
        .saturating_mul(1u32.checked_shl(round).unwrap_or(u32::MAX))
        .min(RETRY_MAX)
}

/// Producer tuning, from the binary's flags.
#[derive(Debug, Clone)]
pub struct SinkOptions {
    pub topic: String,
    /// `lz4`, `zstd`, `snappy`, `gzip` or `none`.
    pub compression: String,
    /// librdkafka `linger.ms`.
    pub linger: Duration,
    /// librdkafka `message.timeout.ms`; zero means never give up.
    pub delivery_timeout: Duration,
}

/// What the sink did, for the exit status and the final log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkSummary {
    pub acked: u64,
    pub resent: u64,
}

/// The Kafka producer side.
pub struct KafkaSink {
    producer: FutureProducer,
    opts: SinkOptions,
    metrics: ProducerMetrics,
}

/// A candle on its way, with the replay shift it carries in a header, if any.
#[derive(Debug)]
struct Outgoing {
    candle: Candle,
    shift_ms: Option<i64>,
}

/// A candle handed to librdkafka, resolving when Kafka acknowledges (or refuses) it.
struct InFlight {
    candle: Option<Outgoing>,
    start: Instant,
    delivery: DeliveryFuture,
}

/// A finished delivery: the candle, when it was sent, and the outcome.
type Delivered = (Outgoing, Instant, Result<(), KafkaError>);

impl Future for InFlight {
    type Output = Delivered;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Delivered> {
        let result = match Pin::new(&mut self.delivery).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(Ok(_))) => Ok(()),
            Poll::Ready(Ok(Err((e, _)))) => Err(e),
            Poll::Ready(Err(_canceled)) => Err(KafkaError::Canceled),
        };
        let candle = self
            .candle
            .take()
            .expect("InFlight polled after completion");
        Poll::Ready((candle, self.start, result))
    }
}

impl KafkaSink {
    /// Builds the idempotent producer.
    pub fn new(
        kafka: &KafkaArgs,
        opts: SinkOptions,
        metrics: ProducerMetrics,
    ) -> anyhow::Result<Self> {
        let mut cfg = kafka.idempotent_producer_config();
        cfg.set("compression.type", &opts.compression)
            .set("linger.ms", opts.linger.as_millis().to_string())
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "200000")
            // Java's default partitioner (murmur2 of the key): a symbol lands on the
            // partition a Java producer would pick, and the bundled symbols spread out
            .set("partitioner", "murmur2_random")
            .set(
                "message.timeout.ms",
                opts.delivery_timeout.as_millis().to_string(),
            );
        kafka.finish(&mut cfg);
        let producer: FutureProducer = cfg
            .create_with_context(KafkaLog)
            .context("creating the Kafka producer")?;
        Ok(KafkaSink {
            producer,
            opts,
            metrics,
        })
    }

    /// Checks that the brokers answer (readiness), within `timeout`.
    pub fn brokers_answer(producer: &FutureProducer, timeout: Duration) -> bool {
        producer.client().fetch_metadata(None, timeout).is_ok()
    }

    /// A handle for readiness checks.
    pub fn producer(&self) -> FutureProducer {
        self.producer.clone()
    }

    /// Publishes until the channel closes (every sender dropped), then waits for every
    /// delivery. Returns an error if some candle could not be delivered.
    pub async fn run(self, mut rx: mpsc::Receiver<SinkCommand>) -> anyhow::Result<SinkSummary> {
        let mut pending: FuturesUnordered<_> = FuturesUnordered::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        let mut summary = SinkSummary::default();
        let mut buf = Vec::with_capacity(512);
        let mut open = true;
        // Failed candles wait here for their resend; `round` counts failed rounds in a row.
        let mut failed: Vec<Outgoing> = Vec::new();
        let mut resend_at: Option<tokio::time::Instant> = None;
        let mut round: u32 = 0;
        let mut errors = ErrorTally::new("delivery failed", ERROR_SUMMARY_EVERY);
        let mut summarize = tokio::time::interval(errors.every());
        summarize.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Answer flushes once nothing sent before them is pending.
            if pending.is_empty() && failed.is_empty() && !flushes.is_empty() {
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
            if !open && pending.is_empty() && failed.is_empty() {
                break;
            }
            if !failed.is_empty() && resend_at.is_none() {
                resend_at = Some(tokio::time::Instant::now() + retry_backoff(round));
            }
            let in_sink = pending.len() + failed.len();
            tokio::select! {
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => {
                    match self.on_delivery(done, &mut summary) {
                        None => round = 0,
                        Some((c, e)) => {
                            errors.note(&error_kind(&e), format_args!(
                                "{} at {}: {e}; sending it again with backoff",
                                c.candle.symbol, time::fmt_ms(c.candle.open_time)));
                            failed.push(c);
                        }
                    }
                }
                _ = sleep_until(resend_at), if resend_at.is_some() => {
                    resend_at = None;
                    round = round.saturating_add(1);
                    summary.resent += failed.len() as u64;
                    for c in std::mem::take(&mut failed) {
                        pending.push(self.send(c, &mut buf).await?);
                    }
                }
                _ = summarize.tick() => {
                    errors.summarize();
                }
                cmd = rx.recv(), if open && in_sink < 100_000 => match cmd {
                    Some(SinkCommand::Candle(candle)) => {
                        CandleQueued.emit(&self.metrics);
                        let out = Outgoing { candle, shift_ms: None };
                        pending.push(self.send(out, &mut buf).await?);
                    }
                    Some(SinkCommand::Replayed { candle, shift_ms }) => {
                        CandleQueued.emit(&self.metrics);
                        let out = Outgoing { candle, shift_ms: Some(shift_ms) };
                        pending.push(self.send(out, &mut buf).await?);
                    }
                    Some(SinkCommand::Flush(reply)) => flushes.push(reply),
                    None => open = false,
                },
            }
        }
        errors.summarize();
        Ok(summary)
    }

    /// Encodes and hands one candle to librdkafka, waiting while its queue is full.
    async fn send(&self, out: Outgoing, buf: &mut Vec<u8>) -> anyhow::Result<InFlight> {
        let c = &out.candle;
        buf.clear();
        if let Err(e) = codec::encode(c, time::now_ms(), buf) {
            SendFailed {
                kind: SendErrorKind::Encode,
            }
            .emit(&self.metrics);
            return Err(e).with_context(|| {
                format!("encoding {} at {}", c.symbol, time::fmt_ms(c.open_time))
            });
        }
        let shift = out.shift_ms.map(|s| s.to_string());
        let mut pause = Duration::from_millis(1);
        let delivery = loop {
            let mut record = FutureRecord::to(&self.opts.topic)
                .key(c.symbol.as_bytes())
                .payload(buf.as_slice())
                .timestamp(time::now_ms());
            if let Some(shift) = &shift {
                record = record.headers(OwnedHeaders::new().insert(Header {
                    key: REPLAY_SHIFT_HEADER,
                    value: Some(shift.as_str()),
                }));
            }
            match self.producer.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    SendFailed {
                        kind: SendErrorKind::Queue,
                    }
                    .emit(&self.metrics);
                    return Err(e).with_context(|| format!("sending {} to Kafka", c.symbol));
                }
            }
        };
        Ok(InFlight {
            candle: Some(out),
            start: Instant::now(),
            delivery,
        })
    }

    /// Books a finished delivery; hands back the candle and the error when it failed and
    /// must be sent again.
    fn on_delivery(
        &self,
        (out, start, result): Delivered,
        summary: &mut SinkSummary,
    ) -> Option<(Outgoing, KafkaError)> {
        let c = &out.candle;
        match result {
            Ok(()) => {
                summary.acked += 1;
                CandleAcked {
                    candle: c,
                    latency: start.elapsed(),
                }
                .emit(&self.metrics);
                None
            }
            Err(e) => {
                SendFailed {
                    kind: SendErrorKind::Delivery,
                }
                .emit(&self.metrics);
                Some((out, e))
            }
        }
    }
}

/// The kind of a delivery error, for the log summary: librdkafka's error code name
/// (`MessageTimedOut`, `AllBrokersDown`, ...).
fn error_kind(e: &KafkaError) -> String {
    e.rdkafka_error_code()
        .map_or_else(|| "other".to_owned(), |code| format!("{code:?}"))
}

/// Sleeps until `at` (never completes for `None`; the caller guards that branch).
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_back_off_doubling_up_to_the_maximum() {
        let waits: Vec<u64> = (0..9)
            .map(|r| retry_backoff(r).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        assert_eq!(retry_backoff(u32::MAX), RETRY_MAX);
    }
}
