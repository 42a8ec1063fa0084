//! Reading the topic's tail: the newest message of each of some symbols, as the producer
//! left it before a restart.
//!
//! Kafka is the log of record, so it is also the producer's memory: no state file to lose or
//! to keep in sync. Both sources continue from what is already on the topic: live after the
//! newest closed live candle of each symbol (`live/resume.rs`), replay after the newest
//! replay candle and its time shift (`timeline.rs`). The producer writes each symbol's
//! candles in ascending open time, keyed by symbol, so the newest one is near the end of
//! the symbol's partition. Each partition is read backwards in chunks (last 5,000
//! messages, then the 5,000 before, …) until every symbol has been found, the partition's
//! start is reached, or the chunk was written before `not_before` (nothing older could be
//! used anyway). The partitions the symbols hash to (Java's murmur2 placement, which the
//! sink asks librdkafka for) are read first, so the others are read only for a symbol not
//! found there: one never published, or moved by added partitions. Messages are filtered by key before decoding, so the other source's
//! traffic in the same partitions costs little.
//!
//! The newest chunk is read until the partition's end as the fetches report it, not just up
//! to the high watermark `ListOffsets` gave when the scan started: a candle acknowledged
//! since then is still found. Older chunks end where the previous one started, so they are
//! exact. Only messages that decode, whose symbol is their key and which the caller's
//! `pick` accepts count.

use anyhow::{bail, Context};
use candlepipe_model::{codec, Candle};
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::kafka_log::{KafkaLog, Reader};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Messages read per step backwards.
const CHUNK: i64 = 5_000;
/// Give up on a chunk when no message arrives for this long.
const STALL: Duration = Duration::from_secs(30);
/// Past the high watermark, this long without a message counts as the partition's end
/// (if the partition EOF does not come first).
const IDLE_AT_END: Duration = Duration::from_secs(1);

/// What the scan found.
#[derive(Debug)]
pub(crate) struct Found<T> {
    /// Per symbol, the greatest value `pick` returned for its messages in the newest chunk
    /// that had one.
    pub newest: HashMap<String, T>,
    /// Messages read, for the log line.
    pub scanned: u64,
}

/// Scans `kafka.topic` for the newest message of each of `symbols` that `pick` accepts,
/// looking no further back than messages written at `not_before` (Unix ms; `i64::MIN` =
/// the partition's start). `pick` sees each decoded candle (its symbol is its key) with its
/// message and returns what to keep; within a chunk the greatest value wins, so `T` should
/// order by open time first. Blocking: run it on a blocking thread.
pub(crate) fn newest_per_symbol<T: Ord>(
    kafka: &KafkaArgs,
    symbols: &[String],
    not_before: i64,
    mut pick: impl FnMut(Candle, &BorrowedMessage<'_>) -> Option<T>,
) -> anyhow::Result<Found<T>> {
    let topic = kafka.topic.as_str();
    let consumer: Reader = {
        let mut cfg = kafka.client_config();
        cfg.set(
            "group.id",
            format!("candlepipe-producer-resume-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true");
        kafka.finish(&mut cfg);
        cfg.create_with_context(KafkaLog)
            .context("creating the resume reader")?
    };
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("reading the metadata of topic {topic:?}"))?;
    let mut out = Found {
        newest: HashMap::new(),
        scanned: 0,
    };
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(out);
    };
    if let Some(e) = t.error() {
        let code = RDKafkaErrorCode::from(e);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition {
            return Ok(out); // nothing published yet
        }
        bail!("topic {topic:?} metadata error: {code}");
    }
    let wanted: HashSet<&str> = symbols.iter().map(String::as_str).collect();
    let mut partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    partitions.sort_unstable();
    // The partitions the symbols hash to first: usually every symbol is found there, and
    // the others (other keys only, or a symbol's older messages from before partitions were
    // added) are never read.
    let count = partitions.len() as i32;
    let homes: HashSet<i32> = wanted.iter().map(|s| java_partition(s, count)).collect();
    partitions.sort_by_key(|p| !homes.contains(p));
    for p in partitions {
        if out.newest.len() == wanted.len() {
            break;
        }
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        let mut end = high;
        let mut newest_chunk = true;
        while (end > low || newest_chunk) && out.newest.len() < wanted.len() {
            let start = (end - CHUNK).max(low);
            let until = if newest_chunk {
                ChunkEnd::PartitionEnd { past: end }
            } else {
                ChunkEnd::Offset(end)
            };
            newest_chunk = false;
            let mut found_here: HashMap<String, T> = HashMap::new();
            let mut oldest_write = i64::MAX;
            read_range(&consumer, topic, p, start, until, |m| {
                out.scanned += 1;
                if let Some(ts) = m.timestamp().to_millis() {
                    oldest_write = oldest_write.min(ts);
                }
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    return;
                };
                if !wanted.contains(key) || out.newest.contains_key(key) {
                    return;
                }
                let Ok(c) = codec::decode(m.payload().unwrap_or_default()) else {
                    return;
                };
                if c.symbol != key {
                    return;
                }
                let symbol = c.symbol.clone();
                if let Some(v) = pick(c, m) {
                    match found_here.get_mut(&symbol) {
                        Some(kept) if *kept >= v => {}
                        Some(kept) => *kept = v,
                        None => {
                            found_here.insert(symbol, v);
                        }
                    }
                }
            })?;
            // A symbol found in this chunk cannot have a newer candle in an older chunk.
            out.newest.extend(found_here);
            if oldest_write < not_before {
                break;
            }
            end = start;
        }
    }
    Ok(out)
}

/// The partition (of `count`) Kafka's Java producer, and librdkafka's `murmur2_random`
/// partitioner the sink uses, gives `key`: murmur2 of its bytes, made positive, modulo the
/// partition count.
fn java_partition(key: &str, count: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let data = key.as_bytes();
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % count.max(1) as u32) as i32
}

/// Where a chunk read stops.
#[derive(Debug, Clone, Copy)]
enum ChunkEnd {
    /// Before this offset.
    Offset(i64),
    /// At the partition's end as the fetches report it (partition EOF), or once nothing
    /// more arrives after reading `past` the `ListOffsets` high watermark.
    PartitionEnd { past: i64 },
}

/// Reads one partition from offset `from` until `until`, calling `each` for every message.
fn read_range(
    consumer: &Reader,
    topic: &str,
    partition: i32,
    from: i64,
    until: ChunkEnd,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> anyhow::Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning {topic}/{partition}"))?;
    let mut last_progress = Instant::now();
    let mut next = from;
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                next = m.offset() + 1;
                if let ChunkEnd::Offset(to) = until {
                    if m.offset() >= to {
                        break;
                    }
                    each(&m);
                    if next >= to {
                        break;
                    }
                } else {
                    each(&m);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => bail!("reading {topic}/{partition} from {from}: {e}"),
            None => {
                let idle = last_progress.elapsed();
                match until {
                    ChunkEnd::PartitionEnd { past } if next >= past && idle > IDLE_AT_END => break,
                    _ if idle > STALL => bail!(
                        "reading {topic}/{partition}: no message for {STALL:?} at offset {next} ({until:?})"
                    ),
                    _ => {}
                }
            }
        }
    }
    consumer.unassign()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The placements the README states for the bundled symbols on 6 partitions, which
    /// `tests/replay_kafka.rs` checks against Kafka's own Java partitioner.
    #[test]
    fn keys_hash_to_the_partitions_javas_producer_picks() {
        let got: Vec<i32> = ["BTC-USDT", "BNB-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
            .iter()
            .map(|k| java_partition(k, 6))
            .collect();
        assert_eq!(got, [2, 3, 5, 5, 5]);
        assert_eq!(java_partition("BTC-USDT", 1), 0);
    }
}
