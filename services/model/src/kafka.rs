//! Kafka settings both services share: where the brokers are, which topic, extra
//! librdkafka properties (TLS, SASL, tuning) passed through untouched, and topic creation.

use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
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

    /// Applies the user's pass-through properties over `cfg`.
    pub fn finish(&self, cfg: &mut ClientConfig) {
        for (k, v) in &self.properties {
            cfg.set(k, v);
        }
    }
}

/// Creates `topic` with `partitions` partitions when it does not exist yet. An existing topic
/// is left as it is (its partition count is logged, not changed).
pub async fn ensure_topic(
    args: &KafkaArgs,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let mut cfg = args.client_config();
    args.finish(&mut cfg);
    let admin: AdminClient<DefaultClientContext> =
        cfg.create().context("creating the Kafka admin client")?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics([&new], &opts)
        .await
        .with_context(|| format!("creating topic {topic:?} on {}", args.brokers))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists")
            }
            Err((name, code)) => bail!("creating topic {name:?} failed: {code}"),
        }
    }
    Ok(())
}

/// [`ensure_topic`], retried every 2 s while the brokers are unreachable (they may still be
/// starting). Returns `Ok(false)` when `shutdown` fires first.
pub async fn ensure_topic_retrying(
    args: &KafkaArgs,
    topic: &str,
    partitions: i32,
    replication: i32,
    shutdown: &crate::shutdown::Shutdown,
) -> anyhow::Result<bool> {
    let mut shutdown = shutdown.clone();
    loop {
        match ensure_topic(args, topic, partitions, replication).await {
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

/// A readiness check for `/readyz`: do the brokers answer a metadata request?
pub async fn probe_brokers(producer: rdkafka::producer::FutureProducer) -> Result<String, String> {
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
    fn properties_parse_and_reject_garbage() {
        assert_eq!(
            parse_property(" linger.ms = 5 ").unwrap(),
            ("linger.ms".into(), "5".into())
        );
        assert!(parse_property("nokey").unwrap_err().contains("key=value"));
        assert!(parse_property("=1").unwrap_err().contains("empty key"));
    }
}
