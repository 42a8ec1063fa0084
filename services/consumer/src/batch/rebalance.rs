//! Step 2: partitions revoked lose their buffered messages and their symbols' state;
//! partitions assigned keep their state only if it is exactly at the group's committed
//! offset, and otherwise get it rebuilt by re-reading history before that offset.

use super::client::MicroBatchEngine;
use super::context::PartitionEvent;
use super::incoming::Incoming;
use crate::events::{PartitionsOwned, RebuildRead, StateRebuilt};
use anyhow::{bail, Context as _};
use candlepipe_model::codec;
use candlepipe_runtime::kafka_log::{self, KafkaLog, Reader};
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// A rebuild settles the state every this many messages, so re-reading a long history
/// holds only the retained candles in memory, not everything read.
const REBUILD_SETTLE_EVERY: u64 = 10_000;

impl MicroBatchEngine {
    /// Whether the rebalance callbacks queued a partition change.
    pub(super) fn rebalance_pending(&self) -> bool {
        !self
            .consumer
            .context()
            .events
            .lock()
            .expect("events")
            .is_empty()
    }

    /// Step 2: applies the partition changes the callbacks queued.
    pub(super) async fn handle_rebalances(
        &mut self,
        batch: &mut Vec<Incoming>,
    ) -> anyhow::Result<()> {
        let events = std::mem::take(&mut *self.consumer.context().events.lock().expect("events"));
        if events.is_empty() {
            return Ok(());
        }
        let assigned = apply_events(&mut self.owned, events);
        PartitionsOwned {
            count: self.owned.len(),
        }
        .emit(&self.metrics);
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

    pub(super) fn drop_partition_state(&mut self, p: i32) {
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
            RebuildRead { messages: read }.emit(&self.metrics);
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
                StateRebuilt {
                    partition: p,
                    from,
                    to: committed,
                    messages: read,
                    elapsed: started.elapsed(),
                }
                .emit();
                break;
            }
            window = window.saturating_mul(2);
        }
        self.aggregator.discard_pending();
        self.state_next.insert(p, committed);
        Ok(())
    }
}

/// Applies the queued partition changes, in order, to the partitions `owned`; returns the
/// partitions assigned by them and still owned at the end (their state is to be checked).
fn apply_events(owned: &mut BTreeSet<i32>, events: Vec<PartitionEvent>) -> BTreeSet<i32> {
    let mut assigned = BTreeSet::new();
    for ev in events {
        match ev {
            PartitionEvent::Revoked(ps) => {
                for p in ps {
                    owned.remove(&p);
                    assigned.remove(&p);
                }
            }
            PartitionEvent::Assigned(ps) => {
                for p in ps {
                    owned.insert(p);
                    assigned.insert(p);
                }
            }
        }
    }
    assigned
}

#[cfg(test)]
mod tests {
    use super::*;
    use PartitionEvent::{Assigned, Revoked};

    #[test]
    fn changes_apply_in_order_and_only_partitions_still_owned_count_as_assigned() {
        let mut owned = BTreeSet::from([0, 1]);
        let assigned = apply_events(
            &mut owned,
            vec![Revoked(vec![1]), Assigned(vec![2, 3]), Revoked(vec![3])],
        );
        assert_eq!(owned, BTreeSet::from([0, 2]));
        assert_eq!(assigned, BTreeSet::from([2]));
        // Revoked and assigned again within one batch: assigned (its state is checked).
        let assigned = apply_events(&mut owned, vec![Revoked(vec![0]), Assigned(vec![0])]);
        assert_eq!(owned, BTreeSet::from([0, 2]));
        assert_eq!(assigned, BTreeSet::from([0]));
        // A revocation alone assigns nothing.
        assert!(apply_events(&mut owned, vec![Revoked(vec![2])]).is_empty());
        assert_eq!(owned, BTreeSet::from([0]));
    }
}
