//! The consumer's command line: one clap struct, every flag also an environment variable.

use crate::sink::{InfluxApi, InfluxConfig, DEFAULT_BATCH_POINTS, DEFAULT_CONCURRENCY};
use candlepipe_model::kafka::KafkaArgs;
use candlepipe_model::time::parse_duration;
use clap::{ArgAction, Parser};
use std::net::SocketAddr;
use std::time::Duration;

/// Reads 1m candles from Kafka in micro-batches, computes rollups and indicators, writes
/// them to InfluxDB, and commits offsets only after InfluxDB accepted them.
#[derive(Parser, Debug, Clone)]
#[command(name = "consumer", version, about)]
pub struct ConsumerConfig {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Consumer group; members of one group split the partitions.
    #[arg(long, env = "KAFKA_GROUP", default_value = "candlepipe-consumer")]
    pub group: String,

    /// Dead-letter topic for messages that cannot be processed.
    #[arg(long, env = "KAFKA_DLQ_TOPIC", default_value = "candles.dlq")]
    pub dlq_topic: String,

    /// Group session timeout: how soon a dead member's partitions move to the others.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub session_timeout: Duration,

    /// Longest time between two fetches before this member is considered stuck. Writes wait
    /// out InfluxDB outages without fetching, so this is long.
    #[arg(long, env = "KAFKA_MAX_POLL_INTERVAL", value_parser = parse_duration, default_value = "1h")]
    pub max_poll_interval: Duration,

    /// Micro-batch trigger: a batch closes this long after it started collecting.
    #[arg(long, env = "BATCH_TRIGGER", value_parser = parse_duration, default_value = "1s")]
    pub trigger: Duration,

    /// Micro-batch size cap: a batch closes at this many messages.
    #[arg(long, env = "BATCH_MAX_RECORDS", default_value_t = 10_000)]
    pub max_batch: usize,

    /// Event-time horizon for late data: a candle older than the symbol's newest minus this
    /// is counted as late and dropped.
    #[arg(long, env = "LATE_HORIZON", value_parser = parse_duration, default_value = "1h")]
    pub late_horizon: Duration,

    /// Messages per partition re-read before the committed offset to rebuild state after an
    /// assignment (doubled until every symbol has enough history, or the log start).
    #[arg(long, env = "REBUILD_MESSAGES", default_value_t = 100_000)]
    pub rebuild_messages: i64,

    /// InfluxDB base URL.
    #[arg(long, env = "INFLUX_URL", default_value = "http://localhost:8086")]
    pub influx_url: String,

    /// InfluxDB write API: `v2` (`/api/v2/write`, org/bucket/token) or `v1` (`/write?db=`).
    #[arg(long, env = "INFLUX_API", value_enum, default_value = "v2")]
    pub influx_api: InfluxApi,

    /// InfluxDB 2 organization (v2 API).
    #[arg(long, env = "INFLUX_ORG")]
    pub influx_org: Option<String>,

    /// InfluxDB 2 bucket (v2 API).
    #[arg(long, env = "INFLUX_BUCKET", default_value = "crypto")]
    pub influx_bucket: String,

    /// InfluxDB token (v2; also accepted by v1-compatible servers).
    #[arg(long, env = "INFLUX_TOKEN", hide_env_values = true)]
    pub influx_token: Option<String>,

    /// InfluxDB 1.x database (v1 API); created when missing.
    #[arg(long, env = "INFLUX_DB", default_value = "crypto")]
    pub influx_db: String,

    /// InfluxDB 1.x user (v1 API).
    #[arg(long, env = "INFLUX_USERNAME")]
    pub influx_username: Option<String>,

    /// InfluxDB 1.x password (v1 API).
    #[arg(long, env = "INFLUX_PASSWORD", hide_env_values = true)]
    pub influx_password: Option<String>,

    /// InfluxDB 1.x retention policy (v1 API); default: the database's default.
    #[arg(long, env = "INFLUX_RETENTION_POLICY")]
    pub influx_retention_policy: Option<String>,

    /// Points per InfluxDB write request.
    #[arg(long, env = "INFLUX_BATCH_POINTS", default_value_t = DEFAULT_BATCH_POINTS)]
    pub influx_batch_points: usize,

    /// InfluxDB write requests in flight at once (a batch of more than
    /// `--influx-batch-points` points is sent as several requests).
    #[arg(long, env = "INFLUX_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub influx_concurrency: u16,

    /// Timeout of one InfluxDB request: longer than InfluxDB 1.x's own 10 s write timeout,
    /// so InfluxDB's answer is seen rather than ours.
    #[arg(long, env = "INFLUX_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub influx_timeout: Duration,

    /// Longest pause between two write retries.
    #[arg(long, env = "INFLUX_MAX_BACKOFF", value_parser = parse_duration, default_value = "10s")]
    pub influx_max_backoff: Duration,

    /// Gzip request bodies.
    #[arg(long, env = "INFLUX_GZIP", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub influx_gzip: bool,

    /// Candles stamped further than this ahead of the consumer's clock go to the dead-letter
    /// topic instead of the state (one far-future candle would otherwise make every later
    /// real candle of its symbol "late"). Like Kafka's `message.timestamp.after.max.ms`.
    #[arg(long, env = "MAX_FUTURE", value_parser = parse_duration, default_value = "1h")]
    pub max_future: Duration,

    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "CONSUMER_HTTP_ADDR", default_value = "0.0.0.0:9102")]
    pub http_addr: SocketAddr,
}

impl ConsumerConfig {
    /// The sink's settings.
    pub fn influx(&self) -> InfluxConfig {
        InfluxConfig {
            url: self.influx_url.clone(),
            api: self.influx_api,
            org: self.influx_org.clone(),
            bucket: self.influx_bucket.clone(),
            token: self.influx_token.clone(),
            db: self.influx_db.clone(),
            username: self.influx_username.clone(),
            password: self.influx_password.clone(),
            retention_policy: self.influx_retention_policy.clone(),
            batch_points: self.influx_batch_points,
            concurrency: usize::from(self.influx_concurrency),
            request_timeout: self.influx_timeout,
            max_backoff: self.influx_max_backoff,
            gzip: self.influx_gzip,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        ConsumerConfig::command().debug_assert();
        let c =
            ConsumerConfig::parse_from(["consumer", "--influx-api", "v1", "--trigger", "250ms"]);
        assert_eq!(c.influx_api, InfluxApi::V1);
        assert_eq!(c.trigger, Duration::from_millis(250));
        assert_eq!(c.group, "candlepipe-consumer");
        assert_eq!(c.http_addr.port(), 9102);
    }

    /// The flags' defaults are the sink's: one place decides them.
    #[test]
    fn influx_flags_default_to_the_sinks_defaults() {
        let c = ConsumerConfig::parse_from(["consumer"]).influx();
        let d = InfluxConfig::default();
        assert_eq!(
            (
                c.request_timeout,
                c.max_backoff,
                c.batch_points,
                c.concurrency,
                c.gzip
            ),
            (
                d.request_timeout,
                d.max_backoff,
                d.batch_points,
                d.concurrency,
                d.gzip
            )
        );
    }
}
