//! The producer's command line: one clap struct, every flag also an environment variable.
//! The README's configuration table is generated from the same names; a test compares them.

use crate::mode_choice::{Mode, ReplayOnSwitch};
use candlepipe_model::time::{parse_duration, parse_instant_ms};
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::secret::{self, SecretError, SecretName};
use clap::{ArgAction, Parser};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Publishes 1-minute crypto candles to Kafka, replayed from Binance-format parquet files or
/// polled live from Yahoo Finance.
#[derive(Parser, Debug, Clone)]
#[command(name = "producer", version, about)]
pub struct ProducerConfig {
    /// Source to start with; switch at runtime with `POST /mode`.
    #[arg(long, env = "PRODUCER_MODE", value_enum, default_value = "replay")]
    pub mode: Mode,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Partitions of the topic when the producer creates it.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 6)]
    pub partitions: i32,

    /// Replication factor of the topic when the producer creates it.
    #[arg(long, env = "KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    pub replication_factor: i32,

    /// Compression of produced batches: lz4, zstd, snappy, gzip or none.
    #[arg(long, env = "KAFKA_COMPRESSION", default_value = "lz4")]
    pub compression: String,

    /// How long librdkafka waits to fill a batch (`linger.ms`).
    #[arg(long, env = "KAFKA_LINGER", value_parser = parse_duration, default_value = "20ms")]
    pub linger: Duration,

    /// Give up on an unacknowledged candle after this long; `0s` never gives up (the
    /// producer waits for the broker instead of dropping data).
    #[arg(long, env = "KAFKA_DELIVERY_TIMEOUT", value_parser = parse_duration, default_value = "0s")]
    pub delivery_timeout: Duration,

    /// Folder of `BASE-QUOTE.parquet` files (Kaggle binance-full-history schema) and/or
    /// Binance public-data kline files as downloaded (`BTCUSDT-1m-2024-01.zip`, monthly or
    /// daily, `.zip` or `.csv`; see dataset/README.md).
    #[arg(long, env = "DATASET_DIR", default_value = "dataset")]
    pub dataset: PathBuf,

    /// Replay pace as a multiple of market time (60 = a market minute per second), or `max`:
    /// the pace of the backfill and of catch-ups; with rebase the replay then follows the
    /// wall clock (one candle per symbol per minute).
    #[arg(long, env = "REPLAY_SPEED", default_value = "60")]
    pub speed: String,

    /// Start over when the dataset ends (default on; `--no-loop` to stop).
    #[arg(long = "loop", env = "REPLAY_LOOP", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub looping: bool,

    /// Replay the dataset once, exit 0 when every candle is acknowledged.
    #[arg(long = "no-loop")]
    pub no_loop: bool,

    /// Shift timestamps so the replay ends at the present and then ticks in real time
    /// (default on; `--no-rebase` keeps the original timestamps). A restart keeps the shift
    /// of the replay candles on the topic and continues after them (README: one timeline).
    #[arg(long = "rebase", env = "REPLAY_REBASE", action = ArgAction::Set, num_args = 0..=1,
          default_value_t = true, default_missing_value = "true")]
    pub rebase: bool,

    /// Keep the dataset's original timestamps.
    #[arg(long = "no-rebase")]
    pub no_rebase: bool,

    /// With rebase: how much of the dataset lands in the past, sent at `--speed`.
    #[arg(long, env = "REPLAY_BACKFILL", value_parser = parse_duration, default_value = "24h")]
    pub backfill: Duration,

    /// Replay only candles at or after this instant (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, env = "REPLAY_START", value_parser = parse_instant_ms)]
    pub start: Option<i64>,

    /// Replay only candles before this instant (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, env = "REPLAY_END", value_parser = parse_instant_ms)]
    pub end: Option<i64>,

    /// Log and skip unreadable dataset files instead of refusing to start.
    #[arg(long, env = "REPLAY_SKIP_BAD_FILES")]
    pub skip_bad_files: bool,

    /// Folder for small-page copies of dataset files whose pages are too large for
    /// `--replay-page-budget` (made once, reused). Default: `<dataset>/.candlepipe-cache`.
    #[arg(long, env = "REPLAY_CACHE_DIR")]
    pub replay_cache: Option<PathBuf>,

    /// Memory the open dataset files' decompressed pages may take together (e.g. 64MiB);
    /// files that would not fit are read through a small-page copy in `--replay-cache`.
    #[arg(long, env = "REPLAY_PAGE_BUDGET", value_parser = parse_bytes, default_value = "64MiB")]
    pub replay_page_budget: u64,

    /// When switching back to replay at runtime: `resume` where it stopped, or `restart`
    /// the dataset, stamped after the newest replay candle on the topic.
    #[arg(long, env = "REPLAY_ON_SWITCH", value_enum, default_value = "resume")]
    pub replay_on_switch: ReplayOnSwitch,

    /// Symbols of the mode the producer starts in, comma separated (see `--replay-symbols`
    /// and `--live-symbols`, which name each mode's own and win over this one).
    #[arg(long, env = "SYMBOLS", value_delimiter = ',')]
    pub symbols: Option<Vec<String>>,

    /// Replay symbols, comma separated: parquet file stems, or a kline file's symbol as
    /// replayed (`BTC-USDT` for `BTCUSDT-1m-*.zip`). Default: `--symbols` when starting in
    /// replay, else every file. Also what a switch to replay (`POST /mode`) replays.
    #[arg(long, env = "REPLAY_SYMBOLS", value_delimiter = ',')]
    pub replay_symbols: Option<Vec<String>>,

    /// Live symbols, comma separated Yahoo tickers. Default: `--symbols` when starting live,
    /// else BTC-USD,ETH-USD,USDT-USD,BNB-USD,USDC-USD. Also what a switch to live polls.
    #[arg(long, env = "LIVE_SYMBOLS", value_delimiter = ',')]
    pub live_symbols: Option<Vec<String>>,

    /// Live mode: how often each symbol's chart is polled.
    #[arg(long, env = "LIVE_POLL_INTERVAL", value_parser = parse_duration, default_value = "15s")]
    pub poll_interval: Duration,

    /// Live mode: how much recent 1m history to backfill on start (Yahoo keeps about 7 days).
    #[arg(long, env = "LIVE_BACKFILL", value_parser = parse_duration, default_value = "1d")]
    pub live_backfill: Duration,

    /// Live mode: base URL for every Yahoo request (tests, proxies). Default: Yahoo's own.
    #[arg(long, env = "YAHOO_BASE_URL")]
    pub yahoo_base_url: Option<String>,

    /// Live mode: where Yahoo's cookie is fetched when the chart API wants a crumb.
    /// Default: `<--yahoo-base-url>/consent` when that is set, else Yahoo's
    /// `https://fc.yahoo.com/consent`.
    #[arg(long, env = "YAHOO_COOKIE_URL")]
    pub yahoo_cookie_url: Option<String>,

    /// Live mode: timeout of one Yahoo request.
    #[arg(long, env = "LIVE_REQUEST_TIMEOUT", value_parser = parse_duration, default_value = "10s")]
    pub live_request_timeout: Duration,

    /// Live mode: the largest Yahoo answer read (e.g. 16MiB); a larger one is dropped
    /// unread and counted as fetch error `too_large`.
    #[arg(long, env = "LIVE_MAX_RESPONSE_BYTES", value_parser = parse_bytes, default_value = "16MiB")]
    pub live_max_response_bytes: u64,

    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`, `/mode`).
    #[arg(long, env = "PRODUCER_HTTP_ADDR", default_value = "0.0.0.0:9101")]
    pub http_addr: SocketAddr,

    /// Bearer token required by `POST /mode`. Without one, only loopback clients may switch.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// File holding the admin token (Docker secrets, e.g. `/run/secrets/admin_token`), one
    /// trailing newline ignored; unlike `--admin-token` it shows in neither `ps` nor the
    /// environment. Setting both is an error.
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,

    /// How long a shutdown waits for in-flight candles to be acknowledged.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", value_parser = parse_duration, default_value = "30s")]
    pub shutdown_timeout: Duration,
}

/// A size in bytes: a whole number with an optional unit `B`, `KiB`, `MiB` or `GiB`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use B, KiB, MiB or GiB"
            ))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("invalid size {s:?}: want e.g. 64MiB"))
}

/// `--admin-token` / `ADMIN_TOKEN` and its `_FILE` twin.
pub const ADMIN_TOKEN: SecretName = SecretName {
    var: "ADMIN_TOKEN",
    flag: "--admin-token",
};

impl ProducerConfig {
    /// Reads `--admin-token-file` into `admin_token` (see [`candlepipe_runtime::secret`]).
    pub fn resolve_secrets(&mut self) -> Result<(), SecretError> {
        self.admin_token = secret::resolve(
            ADMIN_TOKEN,
            self.admin_token.as_deref(),
            self.admin_token_file.as_deref(),
        )?;
        Ok(())
    }

    /// `--loop` unless `--no-loop` (or `REPLAY_LOOP=false`).
    pub fn looping(&self) -> bool {
        self.looping && !self.no_loop
    }

    /// `--rebase` unless `--no-rebase` (or `REPLAY_REBASE=false`).
    pub fn rebase(&self) -> bool {
        self.rebase && !self.no_rebase
    }

    /// The symbols replay publishes (`None`: every file): `--replay-symbols`, else
    /// `--symbols` when the producer starts in replay.
    pub fn replay_symbols(&self) -> Option<Vec<String>> {
        self.mode_symbols(&self.replay_symbols, Mode::Replay)
    }

    /// The tickers live mode polls (`None`: the default list): `--live-symbols`, else
    /// `--symbols` when the producer starts live.
    pub fn live_symbols(&self) -> Option<Vec<String>> {
        self.mode_symbols(&self.live_symbols, Mode::Live)
    }

    /// An empty list (`REPLAY_SYMBOLS=`, as compose passes an unset `.env` value) counts as
    /// not given; blank entries are dropped.
    fn mode_symbols(&self, own: &Option<Vec<String>>, mode: Mode) -> Option<Vec<String>> {
        let given = |list: &Option<Vec<String>>| {
            let names: Vec<String> = list
                .iter()
                .flatten()
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            (!names.is_empty()).then_some(names)
        };
        given(own).or_else(|| given(&self.symbols).filter(|_| self.mode == mode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        ProducerConfig::command().debug_assert();
    }

    #[test]
    fn loop_and_rebase_negations() {
        let c =
            ProducerConfig::parse_from(["producer", "--no-loop", "--no-rebase", "--speed", "max"]);
        assert!(!c.looping());
        assert!(!c.rebase());
        let d = ProducerConfig::parse_from(["producer"]);
        assert!(d.looping() && d.rebase());
        assert_eq!(d.kafka.topic, "candles");
        assert_eq!(d.http_addr.port(), 9101);
        let e = ProducerConfig::parse_from(["producer", "--loop=false"]);
        assert!(!e.looping());
    }

    #[test]
    fn the_admin_token_comes_from_its_file_or_its_variable_not_both() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), "from-file\n").unwrap();
        let path = file.path().to_str().unwrap();
        let mut c = ProducerConfig::parse_from(["producer", "--admin-token-file", path]);
        c.resolve_secrets().unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("from-file"));
        let mut both = ProducerConfig::parse_from([
            "producer",
            "--admin-token",
            "x",
            "--admin-token-file",
            path,
        ]);
        let e = both.resolve_secrets().unwrap_err().to_string();
        assert!(
            e.contains("ADMIN_TOKEN") && e.contains("ADMIN_TOKEN_FILE"),
            "{e}"
        );
    }

    #[test]
    fn each_mode_has_its_own_symbols_and_symbols_names_the_start_mode() {
        let v = |s: &[&str]| Some(s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let c = ProducerConfig::parse_from([
            "producer",
            "--replay-symbols",
            "XRP-ETH,BTC-USDT",
            "--live-symbols",
            "BTC-USD",
        ]);
        assert_eq!(c.replay_symbols(), v(&["XRP-ETH", "BTC-USDT"]));
        assert_eq!(c.live_symbols(), v(&["BTC-USD"]));
        // --symbols applies to the start mode only, and the mode's own flag wins.
        let replay = ProducerConfig::parse_from(["producer", "--symbols", "XRP-ETH"]);
        assert_eq!(replay.replay_symbols(), v(&["XRP-ETH"]));
        assert_eq!(replay.live_symbols(), None);
        let live = ProducerConfig::parse_from(["producer", "--mode", "live", "--symbols", "A-USD"]);
        assert_eq!(live.live_symbols(), v(&["A-USD"]));
        assert_eq!(live.replay_symbols(), None);
        let both = ProducerConfig::parse_from([
            "producer",
            "--symbols",
            "XRP-ETH",
            "--replay-symbols",
            "BTC-USDT",
        ]);
        assert_eq!(both.replay_symbols(), v(&["BTC-USDT"]));
        // Empty (compose's `${REPLAY_SYMBOLS:-}`): the default.
        let empty = ProducerConfig::parse_from([
            "producer",
            "--replay-symbols=",
            "--live-symbols=",
            "--symbols",
            "XRP-ETH",
        ]);
        assert_eq!(empty.replay_symbols(), v(&["XRP-ETH"]));
        assert_eq!(empty.live_symbols(), None);
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("64MB").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
        let d = ProducerConfig::parse_from(["producer"]);
        assert_eq!(
            d.replay_page_budget,
            crate::source::cache::DEFAULT_PAGE_BUDGET
        );
        assert_eq!(d.replay_cache, None);
        assert_eq!(
            d.live_max_response_bytes,
            crate::source::live::DEFAULT_MAX_RESPONSE_BYTES
        );
    }
}
