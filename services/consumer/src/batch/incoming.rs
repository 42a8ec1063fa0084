//! Step 1, one message at a time: a candle or a dead letter, and the offsets already
//! processed dropped (a partition revoked and assigned again is fetched anew).

use crate::dlq::DeadLetter;
use crate::events::MessageInvalid;
use crate::metrics::{ConsumerMetrics, Stage, FUTURE_REASON};
use candlepipe_model::{codec, time, Candle};
use rdkafka::message::{BorrowedMessage, Message};
use std::collections::HashMap;

/// One message taken into a batch.
pub(super) struct Incoming {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) item: Result<Candle, DeadLetter>,
}

/// Drops the messages below each partition's expected offset (processed already) and moves
/// the expectation past the others. A partition without an expectation takes its first
/// message as it comes; a jump forward is accepted as it is.
pub(super) fn drop_processed(expected: &mut HashMap<i32, i64>, batch: &mut Vec<Incoming>) {
    batch.retain(|m| {
        let next = expected.entry(m.partition).or_insert(m.offset);
        if m.offset < *next {
            return false;
        }
        *next = m.offset + 1;
        true
    });
}

/// Decodes one message into a candle or a dead letter (step 1). A candle opening after
/// `future_limit` (Unix ms: now + `--max-future`) is a dead letter too: kept, it would move
/// its symbol's event-time watermark ahead and make every later real candle "late".
pub(super) fn incoming(
    m: &BorrowedMessage<'_>,
    future_limit: i64,
    metrics: &ConsumerMetrics,
) -> Incoming {
    let received = Received {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key(),
        payload: m.payload().unwrap_or_default(),
    };
    decode(received, future_limit, metrics)
}

/// What [`decode`] needs of a Kafka message.
struct Received<'a> {
    partition: i32,
    offset: i64,
    key: Option<&'a [u8]>,
    payload: &'a [u8],
}

/// [`incoming`] of a message's parts.
fn decode(m: Received<'_>, future_limit: i64, metrics: &ConsumerMetrics) -> Incoming {
    let payload = m.payload;
    let checked = codec::decode(payload)
        .map_err(|e| (e.kind(), e.to_string()))
        .and_then(|c| {
            if c.open_time > future_limit {
                Err((
                    FUTURE_REASON,
                    format!(
                        "open_time {} ({}) is ahead of the consumer's clock by more than \
                         --max-future",
                        c.open_time,
                        time::fmt_ms(c.open_time)
                    ),
                ))
            } else {
                Ok(c)
            }
        });
    let item = checked.map_err(|(reason, error)| {
        MessageInvalid {
            partition: m.partition,
            offset: m.offset,
            reason,
            error: &error,
        }
        .emit(metrics);
        DeadLetter {
            payload: payload.to_vec(),
            key: m.key.map(<[u8]>::to_vec),
            error,
            reason,
            stage: Stage::Decode,
            source_partition: Some(m.partition),
            source_offset: Some(m.offset),
        }
    });
    Incoming {
        partition: m.partition,
        offset: m.offset,
        item,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(partition: i32, offset: i64) -> Incoming {
        Incoming {
            partition,
            offset,
            item: Err(DeadLetter {
                payload: Vec::new(),
                key: None,
                error: String::new(),
                reason: "empty",
                stage: Stage::Decode,
                source_partition: Some(partition),
                source_offset: Some(offset),
            }),
        }
    }

    fn offsets(batch: &[Incoming]) -> Vec<(i32, i64)> {
        batch.iter().map(|m| (m.partition, m.offset)).collect()
    }

    /// After a revoke and an assignment of partition 0 at committed offset 10, the batch holds
    /// what was fetched before (10..13) and the same offsets fetched again: each is kept once.
    /// Gaps (transaction markers, compaction) are taken as they are.
    #[test]
    fn processed_offsets_are_dropped_and_gaps_accepted() {
        let mut expected = HashMap::from([(0, 10)]);
        let mut batch: Vec<Incoming> = [(0, 9), (0, 10), (0, 11), (0, 12), (1, 5), (0, 10)]
            .into_iter()
            .chain([(0, 11), (0, 12), (0, 14), (1, 7), (1, 6), (0, 20)])
            .map(|(p, o)| message(p, o))
            .collect();
        drop_processed(&mut expected, &mut batch);
        assert_eq!(
            offsets(&batch),
            [(0, 10), (0, 11), (0, 12), (1, 5), (0, 14), (1, 7), (0, 20)]
        );
        assert_eq!(expected, HashMap::from([(0, 21), (1, 8)]));
    }

    const MINUTE: i64 = 1_614_556_800_000; // 2021-03-01T00:00:00Z

    fn payload(open_time: i64) -> Vec<u8> {
        format!(
            r#"{{"v":1,"source":"replay","symbol":"BTC-USDT","interval":"1m","open_time":{open_time},"open":1.0,"high":2.0,"low":0.5,"close":1.5,"volume":3.0}}"#
        )
        .into_bytes()
    }

    fn received<'a>(payload: &'a [u8], key: Option<&'a [u8]>) -> Received<'a> {
        Received {
            partition: 2,
            offset: 40,
            key,
            payload,
        }
    }

    #[test]
    fn a_valid_message_is_a_candle() {
        let metrics = ConsumerMetrics::new();
        let bytes = payload(MINUTE);
        let m = decode(received(&bytes, Some(b"BTC-USDT")), MINUTE, &metrics);
        assert_eq!((m.partition, m.offset), (2, 40));
        let candle = m.item.expect("a candle");
        assert_eq!(
            (candle.symbol.as_str(), candle.open_time),
            ("BTC-USDT", MINUTE)
        );
    }

    #[test]
    fn a_bad_or_future_message_is_a_dead_letter_that_keeps_its_bytes() {
        let metrics = ConsumerMetrics::new();
        let m = decode(received(b"{not json", Some(b"k")), MINUTE, &metrics);
        let letter = m.item.expect_err("a dead letter");
        assert_eq!(
            (letter.reason, letter.stage),
            ("malformed_json", Stage::Decode)
        );
        assert_eq!(letter.payload, b"{not json");
        assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            (letter.source_partition, letter.source_offset),
            (Some(2), Some(40))
        );
        assert_eq!(
            metrics.invalid.with_label_values(&["malformed_json"]).get(),
            1
        );

        // One minute past the limit: ahead of the clock by more than --max-future.
        let ahead = payload(MINUTE + 60_000);
        let m = decode(received(&ahead, None), MINUTE, &metrics);
        let letter = m.item.expect_err("a dead letter");
        assert_eq!(letter.reason, FUTURE_REASON);
        assert!(letter.error.contains("--max-future"), "{}", letter.error);
        assert_eq!(metrics.invalid.with_label_values(&[FUTURE_REASON]).get(), 1);
    }
}
