//! The micro-batch engine: Kafka in, InfluxDB out, offsets committed only after the write.
//!
//! One loop, like a Spark Structured Streaming query with a processing-time trigger:
//!
//! 1. **Collect** messages until `--max-batch` messages or `--trigger` elapsed. Each message
//!    is decoded and validated as it arrives; a bad one becomes a [`DeadLetter`].
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

use crate::dlq::{DeadLetter, DeadLetters};
use crate::late::{LateDrop, LateLog};
use crate::metrics::{ConsumerMetrics, FUTURE_REASON};
use crate::sink::{EncodedBatch, InfluxSink, SinkError, WriteOutcome};
use crate::state::{Aggregator, Applied};
use crate::watch::{Owned, Stalled};
use anyhow::{bail, Context as _};
use candlepipe_model::kafka::KafkaArgs;
use candlepipe_model::kafka_log::{self, KafkaLog, Reader};
use candlepipe_model::shutdown::Shutdown;
use candlepipe_model::{codec, time, Candle};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A rebuild settles the state every this many messages, so re-reading a long history
/// holds only the retained candles in memory, not everything read.
const REBUILD_SETTLE_EVERY: u64 = 10_000;

/// At most one WARN about late drops per this interval (the others are counted into it).
const LATE_LOG_EVERY: Duration = Duration::from_secs(10);

/// How long the loop waits on a write before fetching is paused (counted from when the
/// loop starts waiting, after it collected and aggregated the next batch).
const PAUSE_AFTER: Duration = Duration::from_secs(2);

/// Batch engine settings.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub group: String,
    /// `group.instance.id` (static membership), `None` for a dynamic member.
    pub group_instance_id: Option<String>,
    pub session_timeout: Duration,
    pub max_poll_interval: Duration,
    pub trigger: Duration,
    pub max_batch: usize,
    pub horizon: Duration,
    pub rebuild_messages: i64,
    /// How far ahead of this clock an open time may be (see [`incoming`]).
    pub max_future: Duration,
    /// Largest record batch the consumer fetches (`receive.message.max.bytes` follows it);
    /// a larger one is skipped into the DLQ unread (see [`MicroBatchEngine::skip_unfetchable`]).
    pub max_message_bytes: usize,
}

/// How often the group consumer refreshes topic metadata: a topic created after the
/// consumer subscribed is found within this (librdkafka's default is 5 minutes).
pub const METADATA_REFRESH: Duration = Duration::from_secs(5);

/// The group consumer's `fetch.max.bytes` (see [`MicroBatchEngine::new`]).
const FETCH_MAX_BYTES: &str = "1048576";

/// Room for the Fetch response's own framing around the largest record batch.
const RESPONSE_OVERHEAD: usize = 64 * 1024;

/// A partition change seen by the rebalance callbacks, handled at the next batch boundary.
#[derive(Debug)]
enum PartitionEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// librdkafka callbacks: rebalances are queued for the loop.
pub struct BatchContext {
    topic: String,
    events: Mutex<Vec<PartitionEvent>>,
}

impl BatchContext {
    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements()
            .iter()
            .filter(|e| e.topic() == self.topic)
            .map(|e| e.partition())
            .collect()
    }
}

/// librdkafka's log lines and errors are logged like every other client's ([`kafka_log`]).
impl ClientContext for BatchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        kafka_log::on_log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        kafka_log::on_error(&error, reason);
    }
}

impl ConsumerContext for BatchContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = self.partitions(tpl);
            tracing::info!(partitions = ?ps, "partitions revoked");
            self.events
                .lock()
                .expect("events lock")
                .push(PartitionEvent::Revoked(ps));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let ps = self.partitions(tpl);
                tracing::info!(partitions = ?ps, "partitions assigned");
                self.events
                    .lock()
                    .expect("events lock")
                    .push(PartitionEvent::Assigned(ps));
            }
            Rebalance::Error(e) => tracing::warn!("rebalance error: {e}"),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// A batch applied to the state, waiting for its points to be written.
struct Aggregated {
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
struct InFlight {
    write: WriteTask,
    batch: Aggregated,
}

/// A batch InfluxDB took, whose dead letters and offsets are still to be handled.
struct Written {
    batch: Aggregated,
    outcome: WriteOutcome,
    /// When InfluxDB accepted the last of its points, Unix ms.
    written_at: i64,
}

/// One message taken into a batch.
struct Incoming {
    partition: i32,
    offset: i64,
    item: Result<Candle, DeadLetter>,
}

/// The consumer loop and everything it owns.
pub struct MicroBatchEngine {
    consumer: StreamConsumer<BatchContext>,
    kafka: KafkaArgs,
    opts: BatchOptions,
    aggregator: Aggregator,
    sink: InfluxSink,
    dlq: DeadLetters,
    metrics: ConsumerMetrics,
    /// The rate-limited WARN for candles dropped as late.
    late_log: LateLog,
    /// Partitions this member owns now.
    owned: BTreeSet<i32>,
    /// The same, for the partition watch.
    owned_shared: Owned,
    /// Partitions the watch saw stalled, and their committed offsets.
    stalled: Stalled,
    /// `receive.message.max.bytes` in effect, for the too-large probe.
    receive_max: String,
    /// For each partition whose state we hold: the next offset after what the state has seen
    /// (what we committed last). A reassigned partition keeps its state only if this matches
    /// the group's committed offset.
    state_next: HashMap<i32, i64>,
    /// Which partition each symbol arrives on (key = symbol, so exactly one).
    symbol_partition: HashMap<String, i32>,
    /// The next offset expected from each owned partition; anything below was processed.
    expected: HashMap<i32, i64>,
    /// The `group.instance.id` in effect (a `--kafka-property` may override the flag).
    instance_id: Option<String>,
}

impl MicroBatchEngine {
    /// Builds the group consumer.
    pub fn new(
        kafka: KafkaArgs,
        opts: BatchOptions,
        sink: InfluxSink,
        dlq: DeadLetters,
        metrics: ConsumerMetrics,
    ) -> anyhow::Result<Self> {
        let mut cfg = kafka.client_config();
        let session_ms = opts.session_timeout.as_millis().max(1000);
        cfg.set("group.id", &opts.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 3).max(100).to_string(),
            )
            .set(
                "max.poll.interval.ms",
                opts.max_poll_interval
                    .as_millis()
                    .max(session_ms)
                    .to_string(),
            )
            // Incremental rebalances (KIP-429, Kafka's recommended protocol since 2.4): a
            // member joining or leaving moves only the partitions that must move, and the
            // others keep consuming; under the eager protocol every member stops all of its
            // partitions for every rebalance.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "topic.metadata.refresh.interval.ms",
                METADATA_REFRESH.as_millis().to_string(),
            )
            // A Fetch response holds at least one whole record batch however large (KIP-74);
            // one larger than this cannot be received, and the partition would stop there:
            // `skip_unfetchable` moves past it.
            .set(
                "receive.message.max.bytes",
                (opts.max_message_bytes.max(1_048_576) + RESPONSE_OVERHEAD).to_string(),
            )
            // Bounded prefetch: a stalled sink holds at most this much per member. 1 MiB
            // (~4,500 candles) keeps a 10,000-candle batch fed from a local broker; 16 MiB
            // bought 6 % more throughput for 56 MiB more RSS with 1,000 symbols
            // (BENCHMARKS.md). Raise both with --kafka-property for a distant broker.
            .set("queued.max.messages.kbytes", "1024")
            .set("fetch.max.bytes", FETCH_MAX_BYTES)
            // With a queue this small librdkafka often finds it full; its default 1 s pause
            // before fetching again then caps a partition at ~1 MiB/s (measured: 8k
            // candles/s instead of 23k). Refill as soon as there is room.
            .set("fetch.queue.backoff.ms", "10")
            // A fetch the broker holds for lack of data delays the refill behind it: with
            // the same prefetch, measured 35k candles/s at librdkafka's 500 ms and 41-43k
            // at 100 ms (or 5 ms). Costs an idle poll every 100 ms.
            .set("fetch.wait.max.ms", "100");
        // Static membership: see the module doc and `--group-instance-id`.
        if let Some(id) = &opts.group_instance_id {
            cfg.set("group.instance.id", id);
        }
        kafka.finish(&mut cfg);
        let instance_id = cfg
            .get("group.instance.id")
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let receive_max = cfg
            .get("receive.message.max.bytes")
            .unwrap_or_default()
            .to_owned();
        let context = BatchContext {
            topic: kafka.topic.clone(),
            events: Mutex::new(Vec::new()),
        };
        let consumer: StreamConsumer<BatchContext> = cfg
            .create_with_context(context)
            .context("creating the Kafka consumer")?;
        let horizon_ms = opts.horizon.as_millis() as i64;
        Ok(MicroBatchEngine {
            consumer,
            kafka,
            opts,
            aggregator: Aggregator::new(horizon_ms),
            sink,
            dlq,
            metrics,
            late_log: LateLog::new(LATE_LOG_EVERY),
            owned: BTreeSet::new(),
            owned_shared: Owned::default(),
            stalled: Stalled::default(),
            receive_max,
            state_next: HashMap::new(),
            symbol_partition: HashMap::new(),
            expected: HashMap::new(),
            instance_id,
        })
    }

    /// The partitions this member owns, kept up to date for the partition watch.
    pub fn owned(&self) -> Owned {
        Arc::clone(&self.owned_shared)
    }

    /// Where the partition watch reports stalled partitions.
    pub fn stalled(&self) -> Stalled {
        Arc::clone(&self.stalled)
    }

    /// Runs until `shutdown`: the batch in progress is finished and committed first.
    /// Returns an error when the client hits a fatal error, e.g. it was fenced.
    pub async fn run(mut self, shutdown: Shutdown) -> anyhow::Result<()> {
        let result = self.consume(shutdown).await;
        match (result, self.fatal()) {
            // A fatal error also fails the calls after it (commits, committed offsets);
            // the fatal error itself says what happened.
            (Err(e), Some(fatal)) => {
                tracing::debug!("after the fatal error: {e:#}");
                Err(fatal)
            }
            (result, _) => result,
        }
    }

    async fn consume(&mut self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        self.consumer
            .subscribe(&[&self.kafka.topic])
            .with_context(|| format!("subscribing to {}", self.kafka.topic))?;
        tracing::info!(topic = %self.kafka.topic, group = %self.opts.group,
            instance_id = self.instance_id.as_deref().unwrap_or("(dynamic membership)"),
            trigger = ?self.opts.trigger, max_batch = self.opts.max_batch, "consuming");
        // The batch whose write is in flight while the next one is collected and aggregated.
        let mut in_flight: Option<InFlight> = None;
        loop {
            let mut batch = self.collect(&mut shutdown).await?;
            if self.rebalance_pending() {
                // Offsets are committed under the ownership they were read with.
                self.finish(in_flight.take()).await?;
            }
            self.handle_rebalances(&mut batch).await?;
            drop_processed(&mut self.expected, &mut batch);
            if !self.stalled.lock().expect("stalled").is_empty() {
                // Committed in order: the batch in flight first.
                self.finish(in_flight.take()).await?;
                self.skip_unfetchable().await?;
            }
            if batch.is_empty() {
                // Quiet: nothing to overlap with, so the batch in flight completes now.
                self.finish(in_flight.take()).await?;
            } else {
                let next = self.aggregate(batch);
                // InfluxDB gets the next batch as soon as it took this one; the dead letters
                // and the (synchronous) offset commit of this one run meanwhile.
                let written = self.await_write(in_flight.take()).await?;
                in_flight = Some(self.start_write(next, &shutdown));
                self.complete(written).await?;
            }
            if shutdown.is_shutdown() {
                self.finish(in_flight.take()).await?;
                break;
            }
        }
        self.consumer.unsubscribe();
        tracing::info!("consumer stopped after committing its last batch");
        Ok(())
    }

    /// Step 1: messages until the batch is full, the trigger fires, or shutdown. Fails on a
    /// fatal client error.
    async fn collect(&self, shutdown: &mut Shutdown) -> anyhow::Result<Vec<Incoming>> {
        let deadline = tokio::time::Instant::now() + self.opts.trigger;
        let future_limit = time::now_ms().saturating_add(self.opts.max_future.as_millis() as i64);
        let mut batch = Vec::with_capacity(self.opts.max_batch.min(65_536));
        while batch.len() < self.opts.max_batch {
            tokio::select! {
                biased;
                _ = shutdown.recv() => break,
                r = tokio::time::timeout_at(deadline, self.consumer.recv()) => match r {
                    Err(_) => break,
                    Ok(Ok(m)) => batch.push(incoming(&m, future_limit, &self.metrics)),
                    Ok(Err(e)) => {
                        // librdkafka delivers a fatal error (ERR__FATAL) as a consumer error;
                        // the underlying one is the client's fatal error.
                        if let Some(fatal) = self.fatal() {
                            return Err(fatal);
                        }
                        // Error events were logged by the context already (same kind:
                        // counted, not repeated); errors of a fetch are logged here.
                        kafka_log::on_error(&e, "");
                    }
                },
            }
        }
        Ok(batch)
    }

    /// For each partition the watch saw stalled at the offset this loop expects next: if a
    /// reader on that partition alone cannot receive the record batch there (librdkafka's
    /// "Invalid response size": larger than `receive.message.max.bytes`, which follows
    /// `--max-message-bytes`), the record is a dead letter without a value (reason
    /// `too_large`), and the partition is committed and fetched from the next offset. A stall
    /// with any other cause is left alone (the watch keeps showing it).
    async fn skip_unfetchable(&mut self) -> anyhow::Result<()> {
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
            tracing::warn!(partition = p, offset = at, "{error}");
            let letter = DeadLetter {
                payload: Vec::new(),
                key: None,
                error,
                reason: "too_large",
                stage: "decode",
                source_partition: Some(p),
                source_offset: Some(at),
            };
            self.dlq.send_all(std::slice::from_ref(&letter)).await?;
            self.metrics.dlq.with_label_values(&["decode"]).inc();
            self.metrics.invalid.with_label_values(&["too_large"]).inc();
            self.metrics.skipped_too_large.inc();
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

    /// The client's fatal error, if it had one: it can no longer consume.
    fn fatal(&self) -> Option<anyhow::Error> {
        let (code, reason) = self.consumer.client().fatal_error()?;
        Some(match (code, &self.instance_id) {
            (RDKafkaErrorCode::FencedInstanceId, Some(id)) => anyhow::anyhow!(
                "Kafka fenced this consumer (FENCED_INSTANCE_ID): another member of group {:?} \
                 joined with the same group instance id {id:?}. Give each consumer of one group \
                 its own --group-instance-id (KAFKA_GROUP_INSTANCE_ID; the default is the \
                 hostname, shared by consumers on one host), or \"\" for dynamic membership",
                self.opts.group
            ),
            _ => anyhow::anyhow!("Kafka client fatal error ({code:?}): {reason}"),
        })
    }

    /// Whether the rebalance callbacks queued a partition change.
    fn rebalance_pending(&self) -> bool {
        !self
            .consumer
            .context()
            .events
            .lock()
            .expect("events")
            .is_empty()
    }

    /// Step 2: applies the partition changes the callbacks queued.
    async fn handle_rebalances(&mut self, batch: &mut Vec<Incoming>) -> anyhow::Result<()> {
        let events = std::mem::take(&mut *self.consumer.context().events.lock().expect("events"));
        if events.is_empty() {
            return Ok(());
        }
        let mut assigned = BTreeSet::new();
        for ev in events {
            match ev {
                PartitionEvent::Revoked(ps) => {
                    for p in ps {
                        self.owned.remove(&p);
                        assigned.remove(&p);
                    }
                }
                PartitionEvent::Assigned(ps) => {
                    for p in ps {
                        self.owned.insert(p);
                        assigned.insert(p);
                    }
                }
            }
        }
        self.metrics
            .assigned_partitions
            .set(self.owned.len() as i64);
        self.owned_shared
            .lock()
            .expect("owned")
            .clone_from(&self.owned);
        // Partitions no longer ours: forget their messages and state.
        let owned = self.owned.clone();
        batch.retain(|m| owned.contains(&m.partition));
        self.expected.retain(|p, _| owned.contains(p));
        let lost: Vec<i32> = self
            .state_next
            .keys()
            .copied()
            .filter(|p| !owned.contains(p))
            .collect();
        for p in lost {
            self.drop_partition_state(p);
        }
        // Partitions (re)assigned: keep state only if it is exactly at the committed offset.
        // Fetching restarts from there; buffered messages below it were processed already
        // (`drop_processed`).
        for p in assigned {
            let committed = self.committed_offset(p)?;
            let current = committed.is_some() && self.state_next.get(&p).copied() == committed;
            if !current {
                self.drop_partition_state(p);
                if let Some(c) = committed {
                    self.rebuild(p, c).await?;
                }
            }
            match committed {
                Some(c) => self.expected.insert(p, c),
                None => self.expected.remove(&p),
            };
        }
        Ok(())
    }

    /// A plain reader on the topic (assigned partitions, no group membership) for rebuilds.
    fn reader(&self) -> anyhow::Result<Reader> {
        let mut cfg = self.kafka.client_config();
        cfg.set("group.id", format!("{}-rebuild", self.opts.group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        self.kafka.finish(&mut cfg);
        cfg.create_with_context(KafkaLog)
            .context("creating the rebuild reader")
    }

    fn drop_partition_state(&mut self, p: i32) {
        self.state_next.remove(&p);
        let map = &mut self.symbol_partition;
        self.aggregator
            .retain(|_, symbol| map.get(symbol).is_none_or(|sp| *sp != p));
        map.retain(|_, sp| *sp != p);
    }

    /// The group's committed offset for `p`, `None` when nothing was committed yet.
    fn committed_offset(&self, p: i32) -> anyhow::Result<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.kafka.topic, p);
        let got = tokio::task::block_in_place(|| {
            self.consumer
                .committed_offsets(tpl, Duration::from_secs(30))
        })
        .with_context(|| format!("reading the committed offset of partition {p}"))?;
        Ok(got.elements().first().and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o),
            _ => None,
        }))
    }

    /// Re-reads partition `p` before `committed` into the state, writing nothing, until
    /// every symbol seen has enough history ([`crate::state::Aggregator::rebuilt_enough`]:
    /// 600 1m candles and 400 windows of each rollup interval) or the log start is reached.
    async fn rebuild(&mut self, p: i32, committed: i64) -> anyhow::Result<()> {
        let reader = self.reader()?;
        let topic = self.kafka.topic.clone();
        let (low, _) = tokio::task::block_in_place(|| {
            reader.fetch_watermarks(&topic, p, Duration::from_secs(30))
        })
        .with_context(|| format!("watermarks of partition {p}"))?;
        let mut window = self.opts.rebuild_messages.max(1);
        let started = Instant::now();
        loop {
            let from = committed.saturating_sub(window).max(low);
            self.drop_partition_state(p);
            let mut read = 0u64;
            if from < committed {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&topic, p, Offset::Offset(from))?;
                reader.assign(&tpl)?;
                let mut last_progress = Instant::now();
                let mut next = from;
                while next < committed {
                    let msg =
                        tokio::task::block_in_place(|| reader.poll(Duration::from_millis(500)));
                    match msg {
                        Some(Ok(m)) => {
                            next = m.offset() + 1;
                            last_progress = Instant::now();
                            if m.offset() >= committed {
                                break;
                            }
                            read += 1;
                            if let Ok(c) = codec::decode(m.payload().unwrap_or_default()) {
                                self.symbol_partition.insert(c.symbol.clone(), p);
                                self.aggregator.apply(&c);
                            }
                            if read.is_multiple_of(REBUILD_SETTLE_EVERY) {
                                self.aggregator.discard_pending();
                            }
                        }
                        Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
                        Some(Err(e)) => {
                            kafka_log::on_error(&e, &format!("rebuild read of partition {p}: {e}"))
                        }
                        None if last_progress.elapsed() > Duration::from_secs(60) => {
                            bail!("rebuilding partition {p}: no message for 60s at offset {next} (want up to {committed})")
                        }
                        None => {}
                    }
                }
            }
            self.metrics.rebuild_messages.inc_by(read);
            let short = self
                .symbol_partition
                .iter()
                .filter(|(_, sp)| **sp == p)
                .any(|(s, _)| {
                    [
                        candlepipe_model::Source::Replay,
                        candlepipe_model::Source::Live,
                    ]
                    .iter()
                    .all(|src| !self.aggregator.rebuilt_enough(*src, s))
                });
            if !short || from == low {
                tracing::info!(partition = p, from, to = committed, messages = read,
                    elapsed = ?started.elapsed(), "state rebuilt");
                break;
            }
            window = window.saturating_mul(2);
        }
        self.aggregator.discard_pending();
        self.state_next.insert(p, committed);
        Ok(())
    }

    /// Step 3: applies a batch to the state and takes the points it changed.
    fn aggregate(&mut self, batch: Vec<Incoming>) -> Aggregated {
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
                        self.metrics.late_dropped.inc();
                        let drop = LateDrop {
                            symbol: &c.symbol,
                            source: c.source,
                            open_time: c.open_time,
                            event_time: self.aggregator.event_time(c.source, &c.symbol),
                            newest: self.aggregator.watermark(c.source, &c.symbol),
                            horizon: Duration::from_millis(self.aggregator.horizon_ms() as u64),
                        };
                        self.late_log.dropped(drop, Instant::now());
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
    fn start_write(&self, batch: Aggregated, shutdown: &Shutdown) -> InFlight {
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
    async fn finish(&mut self, in_flight: Option<InFlight>) -> anyhow::Result<()> {
        let written = self.await_write(in_flight).await?;
        self.complete(written).await
    }

    /// Step 4 for the batch in flight, if any: waits until InfluxDB took its points.
    async fn await_write(
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
    async fn complete(&mut self, written: Option<Written>) -> anyhow::Result<()> {
        let Some(Written {
            batch,
            outcome,
            written_at,
        }) = written
        else {
            return Ok(());
        };
        let mut letters = batch.letters;
        for r in outcome.rejected {
            letters.push(DeadLetter {
                payload: r.line.into_bytes(),
                key: None,
                error: r.error,
                reason: "rejected",
                stage: "influx",
                source_partition: None,
                source_offset: None,
            });
        }
        if !letters.is_empty() {
            self.dlq.send_all(&letters).await?;
            for l in &letters {
                self.metrics.dlq.with_label_values(&[l.stage]).inc();
            }
        }
        for t in batch.produced_at {
            self.metrics
                .end_to_end_latency
                .observe((written_at - t).max(0) as f64 / 1000.0);
        }
        self.commit(&batch.next_offsets);
        self.metrics.messages.inc_by(batch.size as u64);
        self.metrics.batches.inc();
        self.metrics.batch_size.observe(batch.size as f64);
        self.metrics
            .batch_duration
            .observe(batch.started.elapsed().as_secs_f64());
        tracing::debug!(messages = batch.size, lines = batch.encoded.lines(),
            elapsed = ?batch.started.elapsed(), "batch done");
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
                self.metrics.backpressure.set(1);
                tracing::warn!("InfluxDB is not accepting the batch yet; fetching paused until it does");
                let r = (&mut write).await;
                if let Err(e) = self.consumer.resume(&assignment) {
                    tracing::warn!("resuming partitions: {e}");
                }
                self.metrics.backpressure.set(0);
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
    fn commit(&mut self, next_offsets: &HashMap<i32, i64>) {
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
                self.metrics.commits.inc();
                for (p, next) in next_offsets {
                    if self.owned.contains(p) {
                        self.state_next.insert(*p, *next);
                    }
                }
            }
            Err(e) => {
                tracing::warn!("offset commit failed ({e}); the written batch will be re-read by the partition's owner");
                for p in next_offsets.keys() {
                    self.state_next.remove(p);
                }
            }
        }
    }
}

/// Drops the messages below each partition's expected offset (processed already) and moves
/// the expectation past the others. A partition without an expectation takes its first
/// message as it comes; a jump forward is accepted as it is.
fn drop_processed(expected: &mut HashMap<i32, i64>, batch: &mut Vec<Incoming>) {
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
fn incoming(m: &BorrowedMessage<'_>, future_limit: i64, metrics: &ConsumerMetrics) -> Incoming {
    let payload = m.payload().unwrap_or_default();
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
        metrics.invalid.with_label_values(&[reason]).inc();
        tracing::debug!(
            partition = m.partition(),
            offset = m.offset(),
            "invalid message: {error}"
        );
        DeadLetter {
            payload: payload.to_vec(),
            key: m.key().map(<[u8]>::to_vec),
            error,
            reason,
            stage: "decode",
            source_partition: Some(m.partition()),
            source_offset: Some(m.offset()),
        }
    });
    Incoming {
        partition: m.partition(),
        offset: m.offset(),
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
                stage: "decode",
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
}
