//! The micro-batch engine: Kafka in, InfluxDB out, offsets committed only after the write.
//!
//! One loop, like a Spark Structured Streaming query with a processing-time trigger:
//!
//! 1. **Collect** messages until `--max-batch` messages or `--trigger` elapsed. Each message
//!    is decoded and validated as it arrives; a bad one becomes a [`DeadLetter`](crate::dlq::DeadLetter).
//! 2. **Rebalance**: partitions revoked since the last batch lose their buffered messages and
//!    their symbols' state (their new owner will re-read them); partitions assigned get their
//!    state **rebuilt** by re-reading history before the committed offset, so indicators
//!    continue exactly as in an uninterrupted run.
//! 3. **Aggregate**: apply candles to the per-symbol state and take every point they changed.
//! 4. **Write** the points to InfluxDB. The sink retries until InfluxDB accepts them; while it
//!    cannot, the assigned partitions are paused (bounded memory) and the loop waits.
//! 5. **Dead letters** (bad messages, points InfluxDB refused) are produced and acknowledged.
//! 6. **Commit** the next offset of every partition in the batch.
//!
//! A crash anywhere before 6 means the batch is read again; since every point is a pure
//! function of its candles, writing it twice changes nothing (exactly-once *effect*).
//!
//! **Pipelined**: the write of batch N runs on its own task while batch N+1 is collected and
//! aggregated. As soon as InfluxDB took batch N, batch N+1's write starts, and batch N's
//! steps 5 and 6 run meanwhile; offsets are still committed in order (N's before N+1's
//! write can finish) and never ahead of InfluxDB. A rebalance or a shutdown finishes the
//! batch in flight first. At most two batches are in memory.
//!
//! **Nothing is applied twice.** The loop knows the next offset it expects from every
//! partition (the committed offset after an assignment, then each message's offset + 1) and
//! drops any message below it: a partition revoked and assigned again is fetched anew from
//! its committed offset while messages fetched before may still be in the batch, and a
//! candle applied again would put an older version of its minute over a newer one.
//! Otherwise offsets are taken as the broker delivers them: a jump forward (transaction
//! markers, compaction, retention) is normal.
//!
//! **Static membership** (KIP-345, `group.instance.id`, see [`BatchOptions`]): a member
//! restarted after a crash rejoins under the same id and gets its partitions back at once.
//! A member Kafka fenced (another one joined under its id) stops with an error instead of
//! consuming without partitions.
//!
//! The pieces: `client` (the engine's parts and its Kafka consumer), `engine` (the loop),
//! `incoming` (step 1), `context` and `rebalance` (step 2), `write` (steps 3 to 6) and
//! `too_large` (a record too large to fetch). Log lines and metrics go through
//! [`crate::events`].

mod client;
mod context;
mod engine;
mod incoming;
mod rebalance;
mod too_large;
mod write;

pub use client::{BatchOptions, MicroBatchEngine, METADATA_REFRESH};
pub use context::BatchContext;
