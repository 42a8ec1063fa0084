//! A record batch larger than `--max-message-bytes` cannot be fetched at all, and its
//! partition would stop there for good: once the partition watch saw the partition stalled,
//! a reader of that partition alone confirms the cause, and the record becomes a dead letter
//! without a value (reason `too_large`) and the partition moves on (README "Kafka").

use super::client::{MicroBatchEngine, FETCH_MAX_BYTES};
use crate::dlq::DeadLetter;
use crate::events::{DeadLettersSent, TooLargeSkipped};
use crate::metrics::{Stage, TOO_LARGE_REASON};
use anyhow::Context as _;
use candlepipe_runtime::kafka_log::{KafkaLog, Reader};
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

impl MicroBatchEngine {
    /// For each partition the watch saw stalled at the offset this loop expects next: if a
    /// reader on that partition alone cannot receive the record batch there (librdkafka's
    /// "Invalid response size": larger than `receive.message.max.bytes`, which follows
    /// `--max-message-bytes`), the record is a dead letter without a value (reason
    /// `too_large`), and the partition is committed and fetched from the next offset. A stall
    /// with any other cause is left alone (the watch keeps showing it).
    pub(super) async fn skip_unfetchable(&mut self) -> anyhow::Result<()> {
        let stalled: Vec<(i32, i64)> = self
            .stalled
            .lock()
            .expect("stalled")
            .iter()
            .map(|(p, at)| (*p, *at))
            .collect();
        for (p, at) in stalled {
            let expected = self.expected.get(&p).is_none_or(|next| *next == at);
            if !self.owned.contains(&p) || !expected || !self.too_large_at(p, at)? {
                continue;
            }
            let error = format!(
                "the record batch at offset {at} of partition {p} is larger than \
                 --max-message-bytes ({} bytes) and cannot be fetched; skipped unread (raise \
                 --max-message-bytes to read it)",
                self.opts.max_message_bytes
            );
            let letter = DeadLetter {
                payload: Vec::new(),
                key: None,
                error,
                reason: TOO_LARGE_REASON,
                stage: Stage::Decode,
                source_partition: Some(p),
                source_offset: Some(at),
            };
            let letters = std::slice::from_ref(&letter);
            self.dlq.send_all(letters).await?;
            DeadLettersSent { letters }.emit(&self.metrics);
            TooLargeSkipped {
                partition: p,
                offset: at,
                error: &letter.error,
            }
            .emit(&self.metrics);
            self.commit(&HashMap::from([(p, at + 1)]));
            self.expected.insert(p, at + 1);
            let topic = self.kafka.topic.clone();
            tokio::task::block_in_place(|| {
                self.consumer
                    .seek(&topic, p, Offset::Offset(at + 1), Duration::from_secs(10))
            })
            .with_context(|| format!("moving partition {p} past offset {at}"))?;
            self.stalled.lock().expect("stalled").remove(&p);
        }
        Ok(())
    }

    /// Whether the record batch at offset `at` of partition `p` is too large to receive:
    /// a reader of that partition alone, with the group consumer's receive limit, fails on it.
    fn too_large_at(&self, p: i32, at: i64) -> anyhow::Result<bool> {
        let mut cfg = self.kafka.client_config();
        cfg.set("group.id", format!("{}-probe", self.opts.group))
            .set("enable.auto.commit", "false")
            .set("fetch.max.bytes", FETCH_MAX_BYTES);
        self.kafka.finish(&mut cfg);
        cfg.set("receive.message.max.bytes", &self.receive_max);
        let reader: Reader = cfg
            .create_with_context(KafkaLog)
            .context("creating the too-large probe")?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.kafka.topic, p, Offset::Offset(at))?;
        reader.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match tokio::task::block_in_place(|| reader.poll(Duration::from_millis(500))) {
                Some(Ok(_)) => return Ok(false),
                Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                    RDKafkaErrorCode::BadMessage,
                ))) => return Ok(true),
                _ => {}
            }
        }
        Ok(false)
    }
}
