//! The dead-letter queue: where a message goes when it cannot be processed, so the pipeline
//! keeps moving and nothing is lost.
//!
//! A record keeps the original payload as its value and says why in headers: `error` (the
//! reason, human readable), `reason` (a short fixed word, the metrics' label), `stage`
//! (`decode` or `influx`), `source-topic`, `source-partition`, `source-offset`.
//!
//! A value longer than [`MAX_VALUE_BYTES`] is cut to its first [`MAX_VALUE_BYTES`] bytes
//! (headers `payload-bytes` = the original length, `payload-truncated` = `true`): a dead
//! letter must fit a dead-letter topic with Kafka's default `max.message.bytes`
//! (1,048,588), or it could never be delivered and its source partition would stop for
//! good. A message too large to fetch at all has an empty value (the `error` says why). The batch loop waits for every dead letter to be
//! acknowledged before it commits the source offsets: a poison message is never "handled" by
//! being forgotten.

use crate::metrics::Stage;
use anyhow::Context;
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::kafka_log::{KafkaLog, Producer as FutureProducer};
use futures::future::try_join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;

/// Longest dead-letter value: fits Kafka's default `max.message.bytes` (1,048,588) with
/// room for the key, the headers and the batch overhead.
pub const MAX_VALUE_BYTES: usize = 1_000_000;

/// One record for the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
    pub error: String,
    /// Short, fixed reason (`too_large`, `malformed_json`, `future`, `rejected`, ...).
    pub reason: &'static str,
    /// Where the pipeline gave up on it (the `stage` header and metrics label).
    pub stage: Stage,
    pub source_partition: Option<i32>,
    pub source_offset: Option<i64>,
}

/// Producer for the dead-letter topic.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
    source_topic: String,
}

impl DeadLetters {
    /// An idempotent producer for `dlq_topic`; `source_topic` goes into every record's headers.
    pub fn new(kafka: &KafkaArgs, dlq_topic: &str) -> anyhow::Result<Self> {
        let mut cfg = kafka.idempotent_producer_config();
        cfg.set("linger.ms", "5")
            .set("compression.type", "lz4")
            // A dead letter may be as large as the largest message the topic accepted.
            .set("message.max.bytes", "16777216")
            .set("message.timeout.ms", "0");
        kafka.finish(&mut cfg);
        Ok(DeadLetters {
            producer: cfg
                .create_with_context(KafkaLog)
                .context("creating the dead-letter producer")?,
            topic: dlq_topic.to_owned(),
            source_topic: kafka.topic.clone(),
        })
    }

    /// The underlying producer (readiness probes reuse its connection).
    pub fn producer(&self) -> FutureProducer {
        self.producer.clone()
    }

    /// Sends every record and waits until Kafka acknowledged all of them.
    pub async fn send_all(&self, letters: &[DeadLetter]) -> anyhow::Result<()> {
        let sends = letters.iter().map(|l| {
            let partition = l.source_partition.map(|p| p.to_string());
            let offset = l.source_offset.map(|o| o.to_string());
            let truncated = l.payload.len() > MAX_VALUE_BYTES;
            let full_len = l.payload.len().to_string();
            let value = &l.payload[..l.payload.len().min(MAX_VALUE_BYTES)];
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "error",
                    value: Some(l.error.as_bytes()),
                })
                .insert(Header {
                    key: "reason",
                    value: Some(l.reason.as_bytes()),
                })
                .insert(Header {
                    key: "stage",
                    value: Some(l.stage.as_str().as_bytes()),
                })
                .insert(Header {
                    key: "source-topic",
                    value: Some(self.source_topic.as_bytes()),
                });
            if let Some(p) = &partition {
                headers = headers.insert(Header {
                    key: "source-partition",
                    value: Some(p.as_bytes()),
                });
            }
            if let Some(o) = &offset {
                headers = headers.insert(Header {
                    key: "source-offset",
                    value: Some(o.as_bytes()),
                });
            }
            if truncated {
                headers = headers
                    .insert(Header {
                        key: "payload-bytes",
                        value: Some(full_len.as_bytes()),
                    })
                    .insert(Header {
                        key: "payload-truncated",
                        value: Some(b"true".as_slice()),
                    });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(value)
                .headers(headers);
            if let Some(k) = &l.key {
                record = record.key(k.as_slice());
            }
            let fut = self.producer.send(record, Timeout::Never);
            async move {
                fut.await.map(|_| ()).map_err(|(e, _)| {
                    anyhow::anyhow!("dead letter (error {:?}) not delivered: {e}", l.error)
                })
            }
        });
        try_join_all(sends).await?;
        Ok(())
    }
}
