//! Kafka settings both services share: where the brokers are, which topic, extra
//! librdkafka properties (TLS, SASL, tuning) passed through untouched, and topic creation.
//!
//! The candle topic is the log of record (a Kappa architecture: every view in InfluxDB can
//! be rebuilt by re-reading it), so it is created to keep everything, in time and in size;
//! Kafka's default would delete it after 7 days. An existing topic is never changed, but a
//! finite retention on it gets a warning with the command that lifts it.

use crate::http::{self, Readiness};
use crate::kafka_log::KafkaLog;
use crate::shutdown::Shutdown;
use anyhow::{bail, Context};
use rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, OwnedResourceSpecifier, ResourceSpecifier,
    TopicReplication,
};
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use std::time::Duration;

/// Connection flags, flattened into each binary's config.
#[derive(clap::Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers, comma separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "localhost:9092")]
    pub brokers: String,
    /// Topic holding the 1m candles.
    #[arg(long, env = "KAFKA_TOPIC", default_value = "candles")]
    pub topic: String,
    /// Extra librdkafka properties, `key=value`, repeatable or comma separated
    /// (e.g. `security.protocol=SASL_SSL,sasl.mechanisms=PLAIN`).
    #[arg(long = "kafka-property", env = "KAFKA_PROPERTIES", value_delimiter = ',', value_parser = parse_property)]
    pub properties: Vec<(String, String)>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("kafka property {s:?} is not key=value"))?;
    if k.trim().is_empty() {
        return Err(format!("kafka property {s:?} has an empty key"));
    }
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

impl KafkaArgs {
    /// A client config with the brokers and the pass-through properties set. Callers add
    /// their role's settings on top, and pass-through properties win (applied last by
    /// [`KafkaArgs::finish`]).
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        cfg
    }

    /// [`KafkaArgs::client_config`] for a producer that never loses, duplicates or reorders
    /// a record when librdkafka retries it: idempotence on and `acks=all` (every in-sync
    /// replica has the record before it counts as sent). Both producers, the candles' and
    /// the dead letters', start from it and add their role's settings.
    pub fn idempotent_producer_config(&self) -> ClientConfig {
        let mut cfg = self.client_config();
        cfg.set("enable.idempotence", "true").set("acks", "all");
        cfg
    }

    /// Applies the user's pass-through properties over `cfg`.
    pub fn finish(&self, cfg: &mut ClientConfig) {
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
    }
}

/// How long a topic keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The broker's default (7 days unless the operator changed it): dead letters.
    BrokerDefault,
    /// Everything, forever (`retention.ms=-1`, `retention.bytes=-1`): the log of record.
    Forever,
}

/// The topic configs that make a topic keep everything.
pub const KEEP_FOREVER: [(&str, &str); 2] = [("retention.ms", "-1"), ("retention.bytes", "-1")];

/// What a topic should look like when a service creates it.
#[derive(Debug, Clone, Copy)]
pub struct TopicSpec {
    pub partitions: i32,
    pub replication: i32,
    pub retention: Retention,
}

/// Creates `topic` as `spec` says when it does not exist yet. An existing topic is left as
/// it is; if it should keep everything but does not, a warning says so and how to fix it.
pub async fn ensure_topic(args: &KafkaArgs, topic: &str, spec: TopicSpec) -> anyhow::Result<()> {
    let mut cfg = args.client_config();
    args.finish(&mut cfg);
    let admin: AdminClient<KafkaLog> = cfg
        .create_with_context(KafkaLog)
        .context("creating the Kafka admin client")?;
    let mut new = NewTopic::new(
        topic,
        spec.partitions,
        TopicReplication::Fixed(spec.replication),
    );
    if spec.retention == Retention::Forever {
        for (key, value) in KEEP_FOREVER {
            new = new.set(key, value);
        }
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .with_context(|| format!("creating topic {topic:?} on {}", args.brokers))?;
    for r in results {
        match r {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = spec.partitions, retention = ?spec.retention, "created topic")
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists");
                if spec.retention == Retention::Forever {
                    warn_if_finite(&admin, &name, &opts).await;
                }
            }
            Err((name, code)) => bail!("creating topic {name:?} failed: {code}"),
        }
    }
    Ok(())
}

/// Warns when an existing log-of-record topic deletes old messages.
async fn warn_if_finite(admin: &AdminClient<KafkaLog>, topic: &str, opts: &AdminOptions) {
    let described = admin
        .describe_configs([&ResourceSpecifier::Topic(topic)], opts)
        .await;
    let entries: Vec<(String, Option<String>)> = match described.as_deref() {
        Ok([Ok(resource)]) if resource.specifier == OwnedResourceSpecifier::Topic(topic.into()) => {
            resource
                .entries
                .iter()
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect()
        }
        other => {
            tracing::warn!(topic, "could not read the topic's retention: {other:?}");
            return;
        }
    };
    let finite = finite_retention(&entries);
    if !finite.is_empty() {
        tracing::warn!(
            topic,
            "the topic deletes old candles ({}): it is the log of record the views are rebuilt from; \
             keep everything with `kafka-configs.sh --bootstrap-server <broker> --alter --entity-type topics \
             --entity-name {topic} --add-config retention.ms=-1,retention.bytes=-1`",
            finite.join(", ")
        );
    }
}

/// The retention settings among a topic's configs that delete messages: `key=value` for
/// each of [`KEEP_FOREVER`]'s keys whose value is not `-1`.
pub fn finite_retention(entries: &[(String, Option<String>)]) -> Vec<String> {
    KEEP_FOREVER
        .iter()
        .filter_map(|(key, forever)| {
            let value = entries.iter().find(|(k, _)| k == key)?.1.as_deref()?;
            (value != *forever).then(|| format!("{key}={value}"))
        })
        .collect()
}

/// [`ensure_topic`], retried every 2 s while the brokers are unreachable (they may still be
/// starting). Returns `Ok(false)` when `shutdown` fires first.
pub async fn ensure_topic_retrying(
    args: &KafkaArgs,
    topic: &str,
    spec: TopicSpec,
    shutdown: &Shutdown,
) -> anyhow::Result<bool> {
    let mut shutdown = shutdown.clone();
    loop {
        // A shutdown also ends an attempt in progress: with no broker answering, one
        // attempt waits out the admin timeout, which would hold SIGTERM up for half a minute.
        let attempt = tokio::select! {
            r = ensure_topic(args, topic, spec) => r,
            _ = shutdown.recv() => return Ok(false),
        };
        match attempt {
            Ok(()) => return Ok(true),
            Err(e) => {
                tracing::warn!("{e:#}; retrying in 2s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.recv() => return Ok(false),
                }
            }
        }
    }
}

/// Keeps the readiness check `kafka` current: every 5 s until `shutdown`, whether the
/// brokers answer a metadata request on `producer`'s connection ([`probe_brokers`]). Both
/// services run it, on the connection of a producer they hold anyway.
pub fn spawn_readiness_probe(
    readiness: &Readiness,
    producer: crate::kafka_log::Producer,
    shutdown: &Shutdown,
) {
    http::spawn_probe(
        readiness.clone(),
        "kafka",
        Duration::from_secs(5),
        shutdown.clone(),
        move || probe_brokers(producer.clone()),
    );
}

/// A readiness check for `/readyz`: do the brokers answer a metadata request?
pub async fn probe_brokers(producer: crate::kafka_log::Producer) -> Result<String, String> {
    use rdkafka::producer::Producer;
    tokio::task::spawn_blocking(move || {
        producer
            .client()
            .fetch_metadata(None, Duration::from_secs(3))
            .map(|md| format!("{} broker(s) answer", md.brokers().len()))
            .map_err(|e| format!("metadata request failed: {e}"))
    })
    .await
    .map_err(|e| format!("probe failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_retention_names_what_deletes() {
        let e = |k: &str, v: Option<&str>| (k.to_owned(), v.map(str::to_owned));
        let forever = [
            e("retention.ms", Some("-1")),
            e("retention.bytes", Some("-1")),
        ];
        assert!(finite_retention(&forever).is_empty());
        let week = [
            e("cleanup.policy", Some("delete")),
            e("retention.ms", Some("604800000")),
            e("retention.bytes", Some("-1")),
        ];
        assert_eq!(finite_retention(&week), ["retention.ms=604800000"]);
        let both = [
            e("retention.ms", Some("1000")),
            e("retention.bytes", Some("5")),
        ];
        assert_eq!(
            finite_retention(&both),
            ["retention.ms=1000", "retention.bytes=5"]
        );
        assert!(finite_retention(&[e("retention.ms", None)]).is_empty());
    }

    #[test]
    fn idempotent_producers_wait_for_every_replica_and_pass_through_wins() {
        let args = KafkaArgs {
            brokers: "k1:9092,k2:9092".into(),
            topic: "candles".into(),
            properties: vec![("acks".into(), "1".into())],
        };
        let cfg = args.idempotent_producer_config();
        assert_eq!(cfg.get("bootstrap.servers"), Some("k1:9092,k2:9092"));
        assert_eq!(cfg.get("enable.idempotence"), Some("true"));
        assert_eq!(cfg.get("acks"), Some("all"));
        let mut cfg = cfg;
        args.finish(&mut cfg);
        assert_eq!(
            cfg.get("acks"),
            Some("1"),
            "the user's property is applied last"
        );
    }

    #[test]
    fn properties_parse_and_reject_garbage() {
        assert_eq!(
            parse_property(" linger.ms = 5 ").unwrap(),
            ("linger.ms".into(), "5".into())
        );
        assert!(parse_property("nokey").unwrap_err().contains("key=value"));
        assert!(parse_property("=1").unwrap_err().contains("empty key"));
    }
}
