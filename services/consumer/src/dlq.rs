//! The dead-letter queue: where a message goes when it cannot be processed, so the pipeline
//! keeps moving and nothing is lost.
//!
//! A record keeps the original payload as its value and says why in headers: `error` (the
//! reason, human readable), `stage` (`decode` or `influx`), `source-topic`,
//! `source-partition`, `source-offset`. The batch loop waits for every dead letter to be
//! acknowledged before it commits the source offsets: a poison message is never "handled" by
//! being forgotten.

use anyhow::Context;
use candlepipe_model::kafka::KafkaArgs;
use futures::future::try_join_all;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;

/// One record for the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    pub key: Option<Vec<u8>>,
    pub error: String,
    pub stage: &'static str,
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
        let mut cfg = kafka.client_config();
        cfg.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            // A dead letter may be as large as the largest message the topic accepted.
            .set("message.max.bytes", "16777216")
            .set("message.timeout.ms", "0");
        kafka.finish(&mut cfg);
        Ok(DeadLetters {
            producer: cfg.create().context("creating the dead-letter producer")?,
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
            let mut headers = OwnedHeaders::new()
                .insert(Header {
                    key: "error",
                    value: Some(l.error.as_bytes()),
                })
                .insert(Header {
                    key: "stage",
                    value: Some(l.stage.as_bytes()),
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
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
                .payload(l.payload.as_slice())
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
