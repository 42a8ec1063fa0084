//! Where the live source resumes after a restart: the newest *closed* live candle of each
//! symbol that is already on the topic.
//!
//! Kafka is the log of record, so it is also the producer's memory: no state file to lose or
//! to keep in sync. The producer writes each symbol's closed candles in ascending open
//! time, keyed by symbol, so the newest one is near the end of the symbol's partition. Each
//! partition is read backwards in chunks (last 5,000 messages, then the 5,000 before, …)
//! until every live symbol has been found, the partition's start is reached, or the chunk
//! is older than Yahoo's 1m retention (nothing older could be fetched again anyway).
//! Messages are filtered by key before decoding, so replay traffic in the same partitions
//! costs little.
//!
//! The newest chunk is read until the partition's end as the fetches report it, not just up
//! to the high watermark `ListOffsets` gave when the scan started: a candle acknowledged
//! since then is still found. Older chunks end where the previous one started, so they are
//! exact. Only messages that decode, are `source=live`, `closed=true` and have one of the
//! live symbols count; in-progress (`closed=false`) messages are superseded anyway.

use anyhow::{bail, Context};
use candlepipe_model::kafka::KafkaArgs;
use candlepipe_model::kafka_log::{KafkaLog, Reader};
use candlepipe_model::{codec, Source};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
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
#[derive(Debug, Default)]
pub(crate) struct Resumed {
    /// Per symbol, the open time (Unix ms) of its newest closed live candle on the topic.
    pub newest_closed: HashMap<String, i64>,
    /// Messages read, for the log line.
    pub scanned: u64,
}

/// Scans `kafka.topic` for the newest closed live candle of each of `symbols`, looking no
/// further back than messages written at `not_before` (Unix ms). Blocking: run it on a
/// blocking thread.
pub(crate) fn newest_closed_live(
    kafka: &KafkaArgs,
    symbols: &[String],
    not_before: i64,
) -> anyhow::Result<Resumed> {
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
    let mut out = Resumed::default();
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
    for p in partitions {
        if out.newest_closed.len() == wanted.len() {
            break;
        }
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .with_context(|| format!("watermarks of {topic}/{p}"))?;
        let mut end = high;
        let mut newest_chunk = true;
        while (end > low || newest_chunk) && out.newest_closed.len() < wanted.len() {
            let start = (end - CHUNK).max(low);
            let until = if newest_chunk {
                ChunkEnd::PartitionEnd { past: end }
            } else {
                ChunkEnd::Offset(end)
            };
            newest_chunk = false;
            let mut found_here: HashMap<String, i64> = HashMap::new();
            let mut oldest_write = i64::MAX;
            read_range(&consumer, topic, p, start, until, |m| {
                out.scanned += 1;
                if let Some(ts) = m.timestamp().to_millis() {
                    oldest_write = oldest_write.min(ts);
                }
                let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    return;
                };
                if !wanted.contains(key) || out.newest_closed.contains_key(key) {
                    return;
                }
                let Ok(c) = codec::decode(m.payload().unwrap_or_default()) else {
                    return;
                };
                if c.source == Source::Live && c.closed && c.symbol == key {
                    let e = found_here.entry(c.symbol).or_insert(c.open_time);
                    *e = (*e).max(c.open_time);
                }
            })?;
            // A symbol found in this chunk cannot have a newer candle in an older chunk.
            out.newest_closed.extend(found_here);
            if oldest_write < not_before {
                break;
            }
            end = start;
        }
    }
    Ok(out)
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
