//! librdkafka's rebalance callbacks: they run inside the client's poll, so they only queue
//! what changed ([`PartitionEvent`]); the loop applies it at the next batch boundary
//! (`rebalance`), where no batch is half processed.

use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};
use std::sync::Mutex;

/// A partition change seen by the rebalance callbacks, handled at the next batch boundary.
#[derive(Debug)]
pub(super) enum PartitionEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// librdkafka callbacks: rebalances are queued for the loop.
pub struct BatchContext {
    pub(super) topic: String,
    pub(super) events: Mutex<Vec<PartitionEvent>>,
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

impl ClientContext for BatchContext {}

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
