//! The engine's parts and its Kafka group consumer: every setting the README lists for the
//! consumer (cooperative rebalancing, the bounded prefetch, static membership), and the
//! client's fatal error in words an operator can act on.

use super::context::BatchContext;
use crate::dlq::DeadLetters;
use crate::late::LateLog;
use crate::metrics::ConsumerMetrics;
use crate::sink::InfluxSink;
use crate::state::Aggregator;
use crate::watch::{Owned, Stalled};
use anyhow::Context as _;
use candlepipe_model::kafka::KafkaArgs;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::types::RDKafkaErrorCode;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// At most one WARN about late drops per this interval (the others are counted into it).
const LATE_LOG_EVERY: Duration = Duration::from_secs(10);

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
    /// How far ahead of this clock an open time may be (see `incoming`).
    pub max_future: Duration,
    /// Largest record batch the consumer fetches (`receive.message.max.bytes` follows it);
    /// a larger one is skipped into the DLQ unread (see `MicroBatchEngine::skip_unfetchable`).
    pub max_message_bytes: usize,
}

/// How often the group consumer refreshes topic metadata: a topic created after the
/// consumer subscribed is found within this (librdkafka's default is 5 minutes).
pub const METADATA_REFRESH: Duration = Duration::from_secs(5);

/// The group consumer's `fetch.max.bytes` (see [`MicroBatchEngine::new`]).
pub(super) const FETCH_MAX_BYTES: &str = "1048576";

/// Room for the Fetch response's own framing around the largest record batch.
const RESPONSE_OVERHEAD: usize = 64 * 1024;

/// The consumer loop and everything it owns.
pub struct MicroBatchEngine {
    pub(super) consumer: StreamConsumer<BatchContext>,
    pub(super) kafka: KafkaArgs,
    pub(super) opts: BatchOptions,
    pub(super) aggregator: Aggregator,
    pub(super) sink: InfluxSink,
    pub(super) dlq: DeadLetters,
    pub(super) metrics: ConsumerMetrics,
    /// The rate-limited WARN for candles dropped as late.
    pub(super) late_log: LateLog,
    /// Partitions this member owns now.
    pub(super) owned: BTreeSet<i32>,
    /// The same, for the partition watch.
    pub(super) owned_shared: Owned,
    /// Partitions the watch saw stalled, and their committed offsets.
    pub(super) stalled: Stalled,
    /// `receive.message.max.bytes` in effect, for the too-large probe.
    pub(super) receive_max: String,
    /// For each partition whose state we hold: the next offset after what the state has seen
    /// (what we committed last). A reassigned partition keeps its state only if this matches
    /// the group's committed offset.
    pub(super) state_next: HashMap<i32, i64>,
    /// Which partition each symbol arrives on (key = symbol, so exactly one).
    pub(super) symbol_partition: HashMap<String, i32>,
    /// The next offset expected from each owned partition; anything below was processed.
    pub(super) expected: HashMap<i32, i64>,
    /// The `group.instance.id` in effect (a `--kafka-property` may override the flag).
    pub(super) instance_id: Option<String>,
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

    /// The client's fatal error, if it had one: it can no longer consume.
    pub(super) fn fatal(&self) -> Option<anyhow::Error> {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::{InfluxApi, InfluxConfig};

    fn engine(properties: &[(&str, &str)], instance: Option<&str>, max: usize) -> MicroBatchEngine {
        let kafka = KafkaArgs {
            brokers: "127.0.0.1:9".into(),
            topic: "candles".into(),
            properties: properties
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        let opts = BatchOptions {
            group: "g".into(),
            group_instance_id: instance.map(str::to_owned),
            session_timeout: Duration::from_secs(30),
            max_poll_interval: Duration::from_secs(3600),
            trigger: Duration::from_secs(1),
            max_batch: 10,
            horizon: Duration::from_secs(3600),
            rebuild_messages: 100,
            max_future: Duration::from_secs(120),
            max_message_bytes: max,
        };
        let influx = InfluxConfig {
            api: InfluxApi::V1,
            ..InfluxConfig::default()
        };
        let sink = InfluxSink::new(influx, ConsumerMetrics::new()).unwrap();
        let dlq = DeadLetters::new(&kafka, "candles.dlq").unwrap();
        MicroBatchEngine::new(kafka, opts, sink, dlq, ConsumerMetrics::new()).unwrap()
    }

    #[tokio::test]
    async fn the_receive_limit_follows_max_message_bytes_and_properties_win() {
        let e = engine(&[], Some("host-1"), 16 << 20);
        assert_eq!(e.instance_id.as_deref(), Some("host-1"));
        assert_eq!(e.receive_max, ((16 << 20) + RESPONSE_OVERHEAD).to_string());
        // Never below librdkafka's own 1 MiB floor for a fetch.
        let small = engine(&[], None, 1000);
        assert_eq!(small.instance_id, None);
        assert_eq!(
            small.receive_max,
            (1_048_576 + RESPONSE_OVERHEAD).to_string()
        );
        // A pass-through property overrides the flag.
        let overridden = engine(&[("group.instance.id", "other")], Some("host-1"), 16 << 20);
        assert_eq!(overridden.instance_id.as_deref(), Some("other"));
    }
}
