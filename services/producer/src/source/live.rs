//! Live source: 1-minute candles polled from Yahoo Finance's chart API.
//!
//! # What it does
//!
//! Every `--poll-interval` (default 15s), for each of `--symbols` (Yahoo tickers such as
//! `BTC-USD`), it makes **one HTTP request**:
//!
//! ```text
//! GET {--yahoo-base-url}/v8/finance/chart/{SYMBOL}?period1=…&period2=…&interval=1m&includePrePost=true
//! ```
//!
//! where `period1` is the first minute not yet settled for that symbol and `period2` the
//! present (plus two minutes of clock-skew slack). No quote or search endpoint is asked.
//! When Yahoo refuses anonymous requests (401/403, or 429 before any crumb), the client
//! fetches a cookie and a crumb once for all symbols and sends them from then on
//! ([`crumb`]). From the answer it publishes:
//!
//! * every minute that Yahoo's clock (`meta.regularMarketTime`) has closed, exactly once, in
//!   order, `closed=true`;
//! * the minute in progress, `closed=false`, whenever it changed since it was last sent (a
//!   later message for the same minute replaces it downstream).
//!
//! Yahoo's `null` rows and missing minutes are gaps: no message, never zeros. Yahoo gives
//! no quote volume, trade count or taker volumes, so those fields are absent. A minute with
//! prices and a `null` volume is sent with volume 0 ([`feed`] explains why). Every candle
//! passes [`candlepipe_model::validate`] first; Yahoo's occasional glitches (high < low)
//! are logged, counted (`live_fetch_errors{kind="invalid_candle"}`) and skipped.
//!
//! # Start, restart, switches
//!
//! On its first run the source reads the topic ([`resume`]) for the newest closed live
//! candle of each symbol and continues right after it, so a restarted producer neither
//! repeats nor skips a closed minute (as long as Yahoo still has the minutes it missed:
//! about 30 days). A symbol with nothing on the topic starts `--live-backfill` (default 1d)
//! in the past, so a fresh dashboard is not empty. Catching up more than Yahoo serves per
//! request (7 days of 1m) takes several requests in a row. The per-symbol progress stays in
//! memory, so after `POST /mode` switches to replay and back, live continues where it was.
//!
//! # Failures
//!
//! Each symbol polls in its own task ([`poller`]) with its own jittered exponential backoff
//! ([`backoff`]) on HTTP 429, 5xx, timeouts, connection errors and malformed answers, so one
//! failing symbol never holds up the others. Every failure is logged with the symbol and
//! counted in `candlepipe_producer_live_fetch_errors_total{kind}`; every request's latency
//! goes to `candlepipe_producer_live_fetch_duration_seconds`.
//!
//! # yfinance-rs, and why the chart call is made with reqwest
//!
//! yfinance-rs 0.9.1 can point its chart API at another host (`YfClientBuilder::base_chart`;
//! the tests point it at the fake Yahoo), and `HistoryBuilder` (`interval(I1m)`,
//! `range`/`between`, `prepost(true)`) then makes exactly one chart request. But it loses
//! what this source needs, so the chart request is made with reqwest and parsed here
//! ([`chart`]). Measured against the fake (`candlepipe_testkit::yahoo` tests):
//!
//! * it returns `paft` candles and, of `meta`, only the timezone and UTC offset: Yahoo's
//!   clock (`regularMarketTime`) is dropped, and the partial last minute comes back as an
//!   ordinary candle. Without Yahoo's clock the in-progress minute can only be told from
//!   closed ones by the local clock: wrong under clock skew, and wrong for any server that
//!   replays another time (the test double does);
//! * prices go through `rust_decimal` (`Decimal::try_from(f64)`, ~16 significant digits):
//!   `0.0014169183333333332` came back as `0.001416918333333333`, a different `f64`, so
//!   "Yahoo's values" would not survive exactly;
//! * it reads `volume` as `u64`: one fractional volume (`108.14853839`) fails the whole
//!   answer ("invalid type: floating point, expected u64");
//! * its `YfError::Http` keeps only a message, so a timeout cannot be told from a
//!   connection error for the metric, and its built-in retries (on by default) would hide
//!   429/5xx answers from it. Per its source it also resolves a currency for the prices and,
//!   when `meta` has none it recognises, asks the v7 quote endpoint, a host `base_chart`
//!   does not move.
//!
//! Its cookie-and-crumb flow is crate-private (it serves only its own requests), so the
//! producer does not depend on yfinance-rs at all: the `--symbols` are trimmed, upper-cased
//! and checked against the candle symbol rules here. The fake Yahoo used by the tests is
//! still checked against yfinance-rs' `HistoryBuilder`, an independent reader of Yahoo's
//! chart format.

mod backoff;
mod chart;
mod crumb;
mod errchain;
mod feed;
mod health;
mod poller;
mod resume;
mod yahoo;

pub use yahoo::DEFAULT_MAX_RESPONSE_BYTES;

use crate::handoff::CandleOut;
use crate::metrics::ProducerMetrics;
use anyhow::Context;
use candlepipe_model::time::now_ms;
use candlepipe_model::validate::validate_symbol;
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::shutdown::Shutdown;
use feed::{SymbolFeed, RETENTION_MS};
use health::LiveHealth;
pub use health::FAILURES_UNTIL_UNREADY;
use poller::{poll_symbol, PollContext};
use std::time::Duration;
use tokio::task::JoinSet;
use yahoo::ChartClient;

/// Live source settings (the `--symbols`, `--poll-interval`, `--live-*` and
/// `--yahoo-base-url` flags).
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Yahoo tickers, e.g. `BTC-USD`.
    pub symbols: Vec<String>,
    /// How often each symbol is polled.
    pub poll_interval: Duration,
    /// How much history a symbol with nothing on the topic starts with.
    pub backfill: Duration,
    /// Replaces `https://query1.finance.yahoo.com` in every request.
    pub base_url: Option<String>,
    /// Where the cookie comes from (`--yahoo-cookie-url`); `None`: `{base_url}/consent`,
    /// or Yahoo's `https://fc.yahoo.com/consent` without a base URL.
    pub cookie_url: Option<String>,
    /// Timeout of one chart request.
    pub request_timeout: Duration,
    /// The largest chart answer read, in bytes (`--live-max-response-bytes`).
    pub max_response_bytes: u64,
    /// Where to look for the newest candle already published (resume after restart).
    pub kafka: KafkaArgs,
}

/// Polls Yahoo for every live symbol and emits candles; see the module docs.
///
/// Small to move around (the supervisor hands it to a task and takes it back at each
/// switch): the settings and clients live behind one box.
pub struct LiveSource {
    setup: Box<LiveSetup>,
    /// Per-symbol progress; `None` until the topic has been read for where to resume.
    feeds: Option<Vec<SymbolFeed>>,
}

/// What does not change between runs.
struct LiveSetup {
    opts: LiveOptions,
    ctx: PollContext,
}

impl LiveSource {
    /// Checks the options (symbols, base URL, intervals) and builds the HTTP client. Talks
    /// to nobody yet.
    pub fn new(mut opts: LiveOptions, metrics: ProducerMetrics) -> anyhow::Result<Self> {
        opts.symbols = normalized_symbols(&opts.symbols)?;
        if opts.poll_interval.is_zero() {
            anyhow::bail!("--poll-interval / LIVE_POLL_INTERVAL must be more than 0");
        }
        if opts.request_timeout.is_zero() {
            anyhow::bail!("--live-request-timeout / LIVE_REQUEST_TIMEOUT must be more than 0");
        }
        let client = ChartClient::new(
            opts.base_url.as_deref(),
            opts.cookie_url.as_deref(),
            opts.request_timeout,
        )?
        .with_max_body(opts.max_response_bytes);
        let ctx = PollContext {
            client,
            metrics,
            poll_interval: opts.poll_interval,
            health: LiveHealth::default(),
        };
        Ok(LiveSource {
            setup: Box::new(LiveSetup { opts, ctx }),
            feeds: None,
        })
    }

    /// Reports whether Yahoo answers into `readiness` (a `yahoo` check, module
    /// `health`): not ready once every symbol's last polls failed.
    pub fn with_readiness(mut self, readiness: candlepipe_runtime::http::Readiness) -> Self {
        self.setup.ctx.health = LiveHealth::new(readiness);
        self
    }

    /// The symbols polled, as Yahoo spells them.
    pub fn symbols(&self) -> &[String] {
        &self.setup.opts.symbols
    }

    /// Polls until `stop` fires, then returns once the last candle has been handed to `out`.
    /// May be called again later (after a switch back to live): it continues where it was.
    pub async fn run(&mut self, mut stop: Shutdown, out: CandleOut) -> anyhow::Result<()> {
        let feeds = match self.feeds.take() {
            Some(f) => f,
            None => match self.resume(&mut stop).await {
                Some(f) => f,
                None => return Ok(()), // stopped while reading the topic
            },
        };
        let health = self.setup.ctx.health.clone();
        health.started(feeds.iter().map(|f| f.symbol.as_str()));
        let mut tasks = JoinSet::new();
        for (i, feed) in feeds.into_iter().enumerate() {
            let task = poll_symbol(feed, self.setup.ctx.clone(), stop.clone(), out.clone());
            tasks.spawn(async move { (i, task.await) });
        }
        let mut back = Vec::with_capacity(tasks.len());
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(done) => back.push(done),
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => return Err(e).context("a live symbol task was cancelled"),
            }
        }
        health.stopped();
        back.sort_by_key(|(i, _)| *i);
        self.feeds = Some(back.into_iter().map(|(_, f)| f).collect());
        Ok(())
    }

    /// Reads the topic for where each symbol resumes, retrying until it works or `stop`
    /// fires (`None`). Publishing before knowing would duplicate candles.
    async fn resume(&self, stop: &mut Shutdown) -> Option<Vec<SymbolFeed>> {
        let opts = &self.setup.opts;
        let mut attempt = 0u32;
        loop {
            let now = now_ms();
            let kafka = opts.kafka.clone();
            let symbols = opts.symbols.clone();
            let scan = tokio::task::spawn_blocking(move || {
                resume::newest_closed_live(&kafka, &symbols, now - RETENTION_MS)
            });
            let result = tokio::select! {
                r = scan => r.context("the resume scan panicked").and_then(|r| r),
                _ = stop.recv() => return None,
            };
            match result {
                Ok(found) => {
                    let cold_start = now - opts.backfill.as_millis() as i64;
                    let feeds = opts
                        .symbols
                        .iter()
                        .map(|s| {
                            let newest = found.newest.get(s).copied();
                            match newest {
                                Some(t) => tracing::info!(symbol = %s,
                                    resume_after = %candlepipe_model::time::fmt_ms(t),
                                    "live: continuing after the newest closed candle on the topic"),
                                None => tracing::info!(symbol = %s,
                                    from = %candlepipe_model::time::fmt_ms(cold_start),
                                    "live: nothing on the topic yet; backfilling"),
                            }
                            SymbolFeed::new(s.clone(), newest, cold_start)
                        })
                        .collect();
                    tracing::info!(scanned = found.scanned, topic = %opts.kafka.topic,
                        "live: resume points read from the topic");
                    return Some(feeds);
                }
                Err(e) => {
                    attempt += 1;
                    let wait = Duration::from_secs(2u64.saturating_pow(attempt.min(5)));
                    tracing::warn!("live: reading resume points from the topic failed ({e:#}); retrying in {wait:?}");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stop.recv() => return None,
                    }
                }
            }
        }
    }
}

/// `symbols` as Yahoo spells them (trimmed, upper case, each once), refusing any that could
/// not travel as a candlepipe symbol (Kafka key, InfluxDB tag).
fn normalized_symbols(symbols: &[String]) -> anyhow::Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(symbols.len());
    for raw in symbols {
        let s = raw.trim().to_ascii_uppercase();
        validate_symbol(&s).map_err(|e| {
            anyhow::anyhow!("--symbols: {raw:?} cannot be published as a candle symbol: {e}")
        })?;
        if out.contains(&s) {
            tracing::warn!(symbol = %s, "--symbols lists {s} twice; polling it once");
            continue;
        }
        out.push(s);
    }
    if out.is_empty() {
        anyhow::bail!("--symbols: no live symbols given");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn symbols_are_normalized_deduplicated_and_checked() {
        assert_eq!(
            normalized_symbols(&s(&[" btc-usd", "ETH-USD", "BTC-USD"])).unwrap(),
            s(&["BTC-USD", "ETH-USD"])
        );
        let e = normalized_symbols(&s(&["EURUSD=X"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("EURUSD=X") && e.contains("'='"), "{e}");
        let e = normalized_symbols(&s(&["BTC USD"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("BTC USD"), "{e}");
        assert!(normalized_symbols(&[]).is_err());
    }

    #[test]
    fn bad_options_are_refused_by_flag_name() {
        let opts = |poll: u64, base: Option<&str>| LiveOptions {
            symbols: s(&["BTC-USD"]),
            poll_interval: Duration::from_millis(poll),
            backfill: Duration::from_secs(3600),
            base_url: base.map(str::to_owned),
            cookie_url: None,
            request_timeout: Duration::from_secs(1),
            max_response_bytes: 1 << 20,
            kafka: KafkaArgs {
                brokers: "127.0.0.1:1".into(),
                topic: "candles".into(),
                properties: vec![],
            },
        };
        let m = ProducerMetrics::new();
        let e = LiveSource::new(opts(0, None), m.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--poll-interval"), "{e}");
        let e = LiveSource::new(opts(100, Some("nope")), m.clone())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--yahoo-base-url"), "{e}");
        let ok = LiveSource::new(opts(100, None), m).unwrap();
        assert_eq!(ok.symbols(), ["BTC-USD"]);
    }
}
