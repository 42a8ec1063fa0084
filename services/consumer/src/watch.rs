//! The partition watch: what the broker says about this member's partitions, every
//! [`INTERVAL`], on its own thread and its own Kafka client, whatever the batch loop is
//! doing (waiting out an InfluxDB outage with fetching paused, rebuilding, stuck).
//!
//! * **Lag** = high watermark − the group's committed offset (the log start when nothing is
//!   committed yet), per owned partition. librdkafka's statistics stop for paused
//!   partitions, so a gauge fed by them froze during outages; this one keeps rising.
//! * **Stalls**: an owned partition with lag whose committed offset has not moved for
//!   [`STALL_AFTER`] while fetching is not paused for backpressure is *stalled*: logged, counted in
//!   `candlepipe_consumer_stalled_partitions`, named in `/readyz` (check `partitions`), and
//!   handed to the batch loop, which checks whether the next record is too large to fetch
//!   (see `batch`).
//! * **The topic**: `/readyz` check `topic` fails, naming the topic, while it does not
//!   exist (the group consumer itself refreshes metadata every
//!   [`crate::batch::METADATA_REFRESH`], not librdkafka's default 5 minutes).

use crate::events::{PartitionLag, PartitionMoving, PartitionStalled, StalledPartitions};
use crate::metrics::ConsumerMetrics;
use anyhow::Context as _;
use candlepipe_runtime::http::Readiness;
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::kafka_log::{KafkaLog, Reader};
use candlepipe_runtime::shutdown::Shutdown;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the watch asks the broker.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// How long a partition with lag may keep its committed offset before it counts as stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// Timeout of one broker request of the watch.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The partitions this member owns, as the batch loop last applied them.
pub type Owned = Arc<Mutex<BTreeSet<i32>>>;
/// Stalled partitions and the committed offset each is stuck at.
pub type Stalled = Arc<Mutex<BTreeMap<i32, i64>>>;

/// Where a partition's committed offset was first seen, and since when.
struct Progress {
    committed: i64,
    since: Instant,
}

/// The watch's state between two looks.
struct Watch {
    topic: String,
    client: Reader,
    owned: Owned,
    stalled: Stalled,
    metrics: ConsumerMetrics,
    readiness: Readiness,
    progress: BTreeMap<i32, Progress>,
    /// Partitions with a lag series, so that a partition no longer owned loses its series.
    reported: BTreeSet<i32>,
}

/// Starts the watch on its own thread until `shutdown`. `group` is the consumer group whose
/// committed offsets count.
pub fn spawn(
    kafka: &KafkaArgs,
    group: &str,
    owned: Owned,
    stalled: Stalled,
    metrics: ConsumerMetrics,
    readiness: Readiness,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let mut cfg = kafka.client_config();
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false");
    kafka.finish(&mut cfg);
    let client: Reader = cfg
        .create_with_context(KafkaLog)
        .context("creating the partition watch client")?;
    readiness.register("topic", format!("{:?} not looked up yet", kafka.topic));
    readiness.set("partitions", true, "none stalled");
    let mut watch = Watch {
        topic: kafka.topic.clone(),
        client,
        owned,
        stalled,
        metrics,
        readiness,
        progress: BTreeMap::new(),
        reported: BTreeSet::new(),
    };
    std::thread::Builder::new()
        .name("partition-watch".into())
        .spawn(move || {
            while !shutdown.is_shutdown() {
                watch.look();
                std::thread::sleep(INTERVAL);
            }
        })
        .context("starting the partition watch")?;
    Ok(())
}

impl Watch {
    fn look(&mut self) {
        match self.topic_exists() {
            Ok(true) => self
                .readiness
                .set("topic", true, format!("{:?} exists", self.topic)),
            Ok(false) => {
                self.readiness.set(
                    "topic",
                    false,
                    format!("topic {:?} does not exist (yet)", self.topic),
                );
                self.forget(&BTreeSet::new());
                return;
            }
            Err(e) => {
                self.readiness.set("topic", false, e);
                return;
            }
        }
        let owned = self.owned.lock().expect("owned").clone();
        self.forget(&owned);
        let committed = match self.committed(&owned) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("partition watch: committed offsets: {e}");
                return;
            }
        };
        let paused = self.metrics.backpressure.get() != 0;
        for p in owned {
            let Ok((low, high)) = self
                .client
                .fetch_watermarks(&self.topic, p, REQUEST_TIMEOUT)
            else {
                continue;
            };
            let at = committed.get(&p).copied().unwrap_or(low).max(low);
            let lag = (high - at).max(0);
            PartitionLag {
                partition: p,
                lag: Some(lag),
            }
            .emit(&self.metrics);
            self.reported.insert(p);
            self.track(p, at, lag > 0 && !paused);
        }
        self.report_stalls();
    }

    /// Whether the topic exists, or why the broker could not say.
    fn topic_exists(&self) -> Result<bool, String> {
        let md = self
            .client
            .fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)
            .map_err(|e| format!("metadata of topic {:?}: {e}", self.topic))?;
        Ok(md
            .topics()
            .iter()
            .any(|t| t.name() == self.topic && t.error().is_none() && !t.partitions().is_empty()))
    }

    /// The group's committed offsets of `owned` (absent: nothing committed yet).
    fn committed(&self, owned: &BTreeSet<i32>) -> anyhow::Result<BTreeMap<i32, i64>> {
        let mut tpl = TopicPartitionList::new();
        for p in owned {
            tpl.add_partition(&self.topic, *p);
        }
        if tpl.count() == 0 {
            return Ok(BTreeMap::new());
        }
        let got = self.client.committed_offsets(tpl, REQUEST_TIMEOUT)?;
        Ok(got
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                _ => None,
            })
            .collect())
    }

    /// Drops the series and progress of partitions not in `owned`.
    fn forget(&mut self, owned: &BTreeSet<i32>) {
        for p in self.reported.clone() {
            if !owned.contains(&p) {
                PartitionLag {
                    partition: p,
                    lag: None,
                }
                .emit(&self.metrics);
                self.reported.remove(&p);
            }
        }
        self.progress.retain(|p, _| owned.contains(p));
        self.stalled
            .lock()
            .expect("stalled")
            .retain(|p, _| owned.contains(p));
    }

    /// Notes partition `p` at committed offset `at`; `waiting` = it has lag and fetching is
    /// not paused, so its committed offset should move.
    fn track(&mut self, p: i32, at: i64, waiting: bool) {
        let now = Instant::now();
        let progress = self.progress.entry(p).or_insert(Progress {
            committed: at,
            since: now,
        });
        if !waiting || progress.committed != at {
            *progress = Progress {
                committed: at,
                since: now,
            };
        }
        let mut stalled = self.stalled.lock().expect("stalled");
        if waiting && progress.since.elapsed() >= STALL_AFTER {
            if stalled.insert(p, at).is_none() {
                PartitionStalled {
                    partition: p,
                    offset: at,
                    after: STALL_AFTER,
                }
                .emit();
            }
        } else if stalled.remove(&p).is_some() {
            PartitionMoving {
                partition: p,
                offset: at,
            }
            .emit();
        }
    }

    fn report_stalls(&self) {
        let stalled = self.stalled.lock().expect("stalled").clone();
        StalledPartitions {
            count: stalled.len(),
        }
        .emit(&self.metrics);
        if stalled.is_empty() {
            self.readiness.set("partitions", true, "none stalled");
        } else {
            let list: Vec<String> = stalled
                .iter()
                .map(|(p, o)| format!("{p} at offset {o}"))
                .collect();
            self.readiness.set(
                "partitions",
                false,
                format!(
                    "stalled (no progress for {STALL_AFTER:?} with messages waiting): {}",
                    list.join(", ")
                ),
            );
        }
    }
}
