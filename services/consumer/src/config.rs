//! The consumer's command line: one clap struct, every flag also an environment variable.

use crate::sink::{
    InfluxApi, InfluxConfig, DEFAULT_BATCH_POINTS, DEFAULT_CONCURRENCY, DEFAULT_GZIP,
};
use candlepipe_model::time::parse_duration;
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::secret::{self, SecretError, SecretName};
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

    /// Static group membership (KIP-345): this member's `group.instance.id`. A consumer
    /// restarted after a crash rejoins under the same id and gets its partitions back at once,
    /// without waiting for the session timeout or a rebalance of the whole group. The default,
    /// the hostname, differs between compose replicas (container ids); two consumers of one
    /// group on one host need different ids, or Kafka fences the older one, which then exits
    /// with an error. A clean shutdown does not leave the group either: a removed member's
    /// partitions move after --session-timeout. "" = dynamic membership.
    #[arg(long, env = "KAFKA_GROUP_INSTANCE_ID", default_value_t = hostname())]
    pub group_instance_id: String,

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

    /// File holding the InfluxDB token (Docker secrets), one trailing newline ignored;
    /// unlike `--influx-token` it shows in neither `ps` nor the environment. Not with it.
    #[arg(long, env = "INFLUX_TOKEN_FILE")]
    pub influx_token_file: Option<std::path::PathBuf>,

    /// InfluxDB 1.x database (v1 API); created when missing.
    #[arg(long, env = "INFLUX_DB", default_value = "crypto")]
    pub influx_db: String,

    /// InfluxDB 1.x user (v1 API).
    #[arg(long, env = "INFLUX_USERNAME")]
    pub influx_username: Option<String>,

    /// InfluxDB 1.x password (v1 API).
    #[arg(long, env = "INFLUX_PASSWORD", hide_env_values = true)]
    pub influx_password: Option<String>,

    /// File holding the InfluxDB 1.x password (Docker secrets), one trailing newline
    /// ignored. Not with `--influx-password`.
    #[arg(long, env = "INFLUX_PASSWORD_FILE")]
    pub influx_password_file: Option<std::path::PathBuf>,

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

    /// Gzip request bodies: worth it where the network is the limit (a WAN, InfluxDB
    /// Cloud), not on the same host or a LAN, where it only costs CPU and time per request.
    #[arg(long, env = "INFLUX_GZIP", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = DEFAULT_GZIP, default_missing_value = "true")]
    pub influx_gzip: bool,

    /// Candles stamped further than this ahead of the consumer's clock go to the dead-letter
    /// topic instead of the state. A 1m candle cannot honestly open more than a minute or
    /// two ahead of a synchronized clock. Like Kafka's `message.timestamp.after.max.ms`.
    #[arg(long, env = "MAX_FUTURE", value_parser = parse_duration, default_value = "2m")]
    pub max_future: Duration,

    /// How long SIGTERM/SIGINT waits for the batch in progress to be written, its dead
    /// letters acknowledged and its offsets committed. When it runs out the consumer exits
    /// at once with a non-zero code; the uncommitted batch is read again on the next start.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub shutdown_timeout: Duration,

    /// Largest record batch the consumer fetches (bytes; `KiB`/`MiB` suffixes accepted);
    /// sets librdkafka's `receive.message.max.bytes` (this + 64 KiB). A larger one cannot be
    /// received: once its partition stalls it is skipped into the DLQ unread (reason
    /// `too_large`, no value). At least 1 MiB (the consumer's `fetch.max.bytes`).
    #[arg(long, env = "MAX_MESSAGE_BYTES", value_parser = parse_bytes, default_value = "16MiB")]
    pub max_message_bytes: usize,

    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "CONSUMER_HTTP_ADDR", default_value = "0.0.0.0:9102")]
    pub http_addr: SocketAddr,
}

/// A byte count: digits, optionally followed by `KiB` or `MiB`; at least 1 MiB.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let unit = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "MiB" => 1024 * 1024,
        other => return Err(format!("unknown unit {other:?} (use B, KiB or MiB)")),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count like 16MiB"))?;
    let bytes = n
        .checked_mul(unit)
        .filter(|b| *b <= i32::MAX as usize / 2)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < 1024 * 1024 {
        return Err(format!(
            "{s:?} is below 1MiB, the consumer's fetch.max.bytes"
        ));
    }
    Ok(bytes)
}

/// This machine's hostname (`/proc/sys/kernel/hostname`, else `$HOSTNAME`), "" when
/// neither is there: the default `--group-instance-id`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default()
}

impl ConsumerConfig {
    /// Reads `--influx-token-file` and `--influx-password-file` into `influx_token` and
    /// `influx_password` (see [`candlepipe_runtime::secret`]).
    pub fn resolve_secrets(&mut self) -> Result<(), SecretError> {
        let token = SecretName {
            var: "INFLUX_TOKEN",
            flag: "--influx-token",
        };
        let password = SecretName {
            var: "INFLUX_PASSWORD",
            flag: "--influx-password",
        };
        self.influx_token = secret::resolve(
            token,
            self.influx_token.as_deref(),
            self.influx_token_file.as_deref(),
        )?;
        self.influx_password = secret::resolve(
            password,
            self.influx_password.as_deref(),
            self.influx_password_file.as_deref(),
        )?;
        Ok(())
    }

    /// The `group.instance.id` to join with, `None` for dynamic membership.
    pub fn group_instance_id(&self) -> Option<String> {
        Some(self.group_instance_id.trim())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
    }

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
        assert_eq!(c.max_message_bytes, 16 * 1024 * 1024);
        assert_eq!(c.max_future, Duration::from_secs(120));
    }

    #[test]
    fn byte_counts_parse_with_units_and_a_floor() {
        assert_eq!(parse_bytes("4MiB"), Ok(4 << 20));
        assert_eq!(parse_bytes("2048KiB"), Ok(2 << 20));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        for bad in ["1KiB", "12GB", "MiB", "-1", "99999999999MiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    /// The hostname of the machine, as the C library reports it.
    fn gethostname() -> String {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        assert_eq!(rc, 0, "gethostname");
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    /// One test for the default and the environment variable: tests run in parallel threads
    /// of one process, and the variable is process-wide.
    #[test]
    fn the_group_instance_id_defaults_to_the_hostname_and_empty_turns_it_off() {
        const VAR: &str = "KAFKA_GROUP_INSTANCE_ID";
        let parse = |args: &[&str]| {
            ConsumerConfig::parse_from(std::iter::once("consumer").chain(args.iter().copied()))
                .group_instance_id()
        };
        std::env::remove_var(VAR);
        let host = gethostname();
        assert!(!host.is_empty());
        assert_eq!(hostname(), host);
        assert_eq!(parse(&[]), Some(host));
        assert_eq!(
            parse(&["--group-instance-id", "replica-2"]).as_deref(),
            Some("replica-2")
        );
        assert_eq!(parse(&["--group-instance-id", ""]), None);
        assert_eq!(parse(&["--group-instance-id="]), None);

        std::env::set_var(VAR, "from-env");
        assert_eq!(parse(&[]).as_deref(), Some("from-env"));
        assert_eq!(
            parse(&["--group-instance-id", "from-flag"]).as_deref(),
            Some("from-flag"),
            "the flag wins over the environment"
        );
        std::env::set_var(VAR, "");
        let from_empty_env = parse(&[]);
        std::env::remove_var(VAR);
        assert_eq!(from_empty_env, None);
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
