//! The Kafka sink: every candle a source emits ends up acknowledged on the topic, or the
//! producer says loudly that it did not.
//!
//! Sources push [`SinkCommand`]s into a bounded channel (backpressure: a fast replay waits
//! for Kafka instead of buffering the dataset in memory). The sink encodes each candle as
//! JSON v1, keys it by symbol (per-symbol order = partition order) and hands it to an
//! idempotent librdkafka producer (`acks=all`, lz4). Deliveries are awaited concurrently;
//! acknowledgements feed the metrics. librdkafka retries internally; with the default
//! `--delivery-timeout 0` it never gives up on a candle while the broker is away (the local
//! queue fills, the channel fills, the source waits). A delivery that does fail for good is
//! counted, logged with the symbol and time, and sent again, so nothing is dropped silently.
//!
//! [`SinkCommand::Flush`] answers once everything sent before it is acknowledged: a mode
//! switch uses it so the old source's candles are on Kafka before the new source starts,
//! and shutdown uses it before exiting 0.

use crate::metrics::ProducerMetrics;
use anyhow::Context;
use candlepipe_model::kafka::KafkaArgs;
use candlepipe_model::{codec, time, Candle};
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// What sources send to the sink.
#[derive(Debug)]
pub enum SinkCommand {
    /// Publish this candle.
    Candle(Candle),
    /// Reply once every candle sent before this command is acknowledged.
    Flush(oneshot::Sender<()>),
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

/// A candle handed to librdkafka, resolving when Kafka acknowledges (or refuses) it.
struct InFlight {
    candle: Option<Candle>,
    start: Instant,
    delivery: DeliveryFuture,
}

/// A finished delivery: the candle, when it was sent, and the outcome.
type Delivered = (Candle, Instant, Result<(), KafkaError>);

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
        let mut cfg = kafka.client_config();
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", &opts.compression)
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
        let producer: FutureProducer = cfg.create().context("creating the Kafka producer")?;
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
        loop {
            // Answer flushes once nothing sent before them is pending.
            if pending.is_empty() && !flushes.is_empty() {
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
            }
            if !open && pending.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(done) = pending.next(), if !pending.is_empty() => {
                    if let Some(again) = self.on_delivery(done, &mut summary) {
                        pending.push(self.send(again, &mut buf).await?);
                    }
                }
                cmd = rx.recv(), if open && pending.len() < 100_000 => match cmd {
                    Some(SinkCommand::Candle(c)) => pending.push(self.send(c, &mut buf).await?),
                    Some(SinkCommand::Flush(reply)) => flushes.push(reply),
                    None => open = false,
                },
            }
        }
        Ok(summary)
    }

    /// Encodes and hands one candle to librdkafka, waiting while its queue is full.
    async fn send(&self, c: Candle, buf: &mut Vec<u8>) -> anyhow::Result<InFlight> {
        buf.clear();
        if let Err(e) = codec::encode(&c, time::now_ms(), buf) {
            self.metrics
                .send_errors
                .with_label_values(&["encode"])
                .inc();
            return Err(e).with_context(|| {
                format!("encoding {} at {}", c.symbol, time::fmt_ms(c.open_time))
            });
        }
        let mut pause = Duration::from_millis(1);
        let delivery = loop {
            let record = FutureRecord::to(&self.opts.topic)
                .key(c.symbol.as_bytes())
                .payload(buf.as_slice())
                .timestamp(time::now_ms());
            match self.producer.send_result(record) {
                Ok(f) => break f,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    self.metrics.send_errors.with_label_values(&["queue"]).inc();
                    return Err(e).with_context(|| format!("sending {} to Kafka", c.symbol));
                }
            }
        };
        self.metrics.in_flight.inc();
        Ok(InFlight {
            candle: Some(c),
            start: Instant::now(),
            delivery,
        })
    }

    /// Books a finished delivery; returns the candle when it must be sent again.
    fn on_delivery(
        &self,
        (c, start, result): Delivered,
        summary: &mut SinkSummary,
    ) -> Option<Candle> {
        self.metrics.in_flight.dec();
        match result {
            Ok(()) => {
                summary.acked += 1;
                self.metrics
                    .delivery_latency
                    .observe(start.elapsed().as_secs_f64());
                self.metrics
                    .candles_sent
                    .with_label_values(&[c.source.as_str()])
                    .inc();
                self.metrics
                    .last_candle_time
                    .set(c.open_time as f64 / 1000.0);
                None
            }
            Err(e) => {
                self.metrics
                    .send_errors
                    .with_label_values(&["delivery"])
                    .inc();
                summary.resent += 1;
                tracing::error!(symbol = %c.symbol, open_time = %time::fmt_ms(c.open_time), error = %e,
                    "delivery failed; sending the candle again");
                Some(c)
            }
        }
    }
}
