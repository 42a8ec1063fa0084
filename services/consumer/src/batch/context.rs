//! librdkafka's rebalance callbacks: they run inside the client's poll, so they only queue
//! what changed ([`PartitionEvent`]); the loop applies it at the next batch boundary
//! (`rebalance`), where no batch is half processed.

use candlepipe_runtime::kafka_log;
use rdkafka::config::RDKafkaLogLevel;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::Consumer;
    use rdkafka::ClientConfig;

    /// The callbacks only queue; a revocation is queued before the rebalance, an assignment
    /// after it, and partitions of other topics are left out.
    #[test]
    fn the_callbacks_queue_this_topic_s_partitions_in_order() {
        let context = BatchContext {
            topic: "candles".into(),
            events: Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<BatchContext> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("group.id", "g")
            .create_with_context(context)
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("candles", 2);
        tpl.add_partition("other", 3);
        tpl.add_partition("candles", 5);
        let ctx = consumer.context();
        ctx.pre_rebalance(&consumer, &Rebalance::Revoke(&tpl));
        ctx.post_rebalance(&consumer, &Rebalance::Revoke(&tpl));
        ctx.post_rebalance(&consumer, &Rebalance::Assign(&tpl));
        ctx.pre_rebalance(&consumer, &Rebalance::Assign(&tpl));
        let events = ctx.events.lock().unwrap();
        let seen: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(seen, ["Revoked([2, 5])", "Assigned([2, 5])"]);
    }
}
