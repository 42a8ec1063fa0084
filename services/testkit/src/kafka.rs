//! Reading and writing topics directly, for assertions: what is really on the broker.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How many brokers a metadata request to `brokers` lists (0 when none answers).
pub(crate) fn brokers_listed(brokers: &str) -> usize {
    let producer: BaseProducer = match ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "0")
        .create()
    {
        Ok(p) => p,
        Err(_) => return 0,
    };
    producer
        .client()
        .fetch_metadata(None, Duration::from_secs(2))
        .map_or(0, |md| md.brokers().len())
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: HashMap<String, String>,
}

impl TopicRecord {
    /// The key as UTF-8.
    pub fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).expect("utf-8 key")
    }
}

/// Reads every record of `topic` from the start until each partition reports its end
/// (librdkafka's partition EOF at the high watermark). Returns an empty list when the topic
/// does not exist yet.
pub fn read_topic(brokers: &str, topic: &str) -> Vec<TopicRecord> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", crate::unique("testkit-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("log_level", "0")
        .create()
        .expect("reader consumer");
    let md = match consumer.fetch_metadata(Some(topic), Duration::from_secs(10)) {
        Ok(md) => md,
        Err(_) => return Vec::new(),
    };
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Vec::new();
    };
    if t.error().is_some() || t.partitions().is_empty() {
        return Vec::new();
    }
    let mut tpl = TopicPartitionList::new();
    let mut open: std::collections::HashSet<i32> = std::collections::HashSet::new();
    for p in t.partitions() {
        // An empty partition is skipped: there is nothing to wait for.
        let empty = consumer
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .is_ok_and(|(_, hi)| hi == 0);
        if !empty {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("tpl");
            open.insert(p.id());
        }
    }
    if open.is_empty() {
        return Vec::new();
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: partitions {open:?} never reported their end"
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|Header { key, value }| {
                                (
                                    key.to_owned(),
                                    String::from_utf8_lossy(value.unwrap_or_default()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(TopicRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            // A node of a cluster that was killed: librdkafka reports it and goes on with
            // the partitions' new leaders.
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::BrokerTransportFailure
                | rdkafka::types::RDKafkaErrorCode::AllBrokersDown,
            ))) => {}
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

/// A topic's configs as the broker describes them (every key, defaults included).
pub fn topic_configs(brokers: &str, topic: &str) -> HashMap<String, String> {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("log_level", "0")
        .create()
        .expect("admin client");
    let described = crate::pipeline::tokio_rt()
        .block_on(admin.describe_configs([&ResourceSpecifier::Topic(topic)], &AdminOptions::new()))
        .unwrap_or_else(|e| panic!("describing {topic}: {e}"));
    let resource = described
        .into_iter()
        .next()
        .expect("one resource")
        .unwrap_or_else(|e| panic!("describing {topic}: {e}"));
    resource
        .entries
        .into_iter()
        .filter_map(|e| Some((e.name, e.value?)))
        .collect()
}

/// Produces raw records (key, payload, headers) and waits until all are acknowledged.
pub fn produce_raw(brokers: &str, topic: &str, records: &[(Option<&[u8]>, &[u8])]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.max.bytes", "10000000")
        .set("log_level", "0")
        .create()
        .expect("raw producer");
    for (key, payload) in records {
        let mut rec: BaseRecord<[u8], [u8]> = BaseRecord::to(topic).payload(*payload);
        if let Some(k) = key {
            rec = rec.key(*k);
        }
        rec = rec.headers(OwnedHeaders::new());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((e, r)) => {
                    rec = r;
                    assert!(
                        matches!(
                            e,
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull
                            )
                        ),
                        "producing to {topic}: {e}"
                    );
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .expect("raw records acknowledged");
}
