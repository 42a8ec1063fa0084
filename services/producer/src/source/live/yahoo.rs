//! The one HTTP request the live source makes: Yahoo's chart API for one symbol and one
//! time window, at 1-minute resolution.
//!
//! ```text
//! GET {base}/v8/finance/chart/{SYMBOL}?period1={from s}&period2={to s}&interval=1m&includePrePost=true
//! ```
//!
//! `{base}` is `--yahoo-base-url` (default `https://query1.finance.yahoo.com`), so tests and
//! proxies redirect every Yahoo request with one flag. The chart API needs no cookie or
//! crumb. Failures come back as a [`FetchError`] whose [`FetchError::kind`] is the
//! `kind` label of `candlepipe_producer_live_fetch_errors_total`. A body over
//! `--live-max-response-bytes` is not read past the limit (`too_large`): a real chart
//! answer is well under 1 MiB, and an unbounded read of a 1.5 GB answer once took the
//! producer to 2.36 GB of memory.

use super::chart::{parse_chart, Chart, ChartError};
use crate::metrics::LiveErrorKind;
use candlepipe_runtime::http_body::{read_capped, BodyError};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use std::time::Duration;
use thiserror::Error;

/// Yahoo's own host.
pub(crate) const DEFAULT_BASE_URL: &str = "https://query1.finance.yahoo.com";

/// The default `--live-max-response-bytes`: 16 MiB, against about 1 MiB for a week of 1m
/// candles, the most Yahoo serves.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 16 << 20;

/// Yahoo answers a library's default User-Agent with 429s far sooner than a browser's.
const USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/122.0.0.0 Safari/537.36";

/// Why a fetch failed.
#[derive(Debug, Error)]
pub(crate) enum FetchError {
    #[error("HTTP 429 Too Many Requests (rate limited)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("HTTP {status}: {snippet}")]
    Server { status: u16, snippet: String },
    #[error("HTTP {status}: {snippet}")]
    Refused { status: u16, snippet: String },
    #[error("request timed out: {0}")]
    Timeout(String),
    #[error("could not reach Yahoo: {0}")]
    Connect(String),
    #[error("malformed response: {0}")]
    Malformed(ChartError),
    #[error("{0}")]
    Api(ChartError),
    #[error("{0} (--live-max-response-bytes); not read further")]
    TooLarge(String),
}

impl FetchError {
    /// The metric label: `http_429`, `http_5xx`, `http_4xx`, `timeout`, `connect`,
    /// `malformed`, `api_error` or `too_large`.
    pub fn kind(&self) -> LiveErrorKind {
        match self {
            FetchError::RateLimited { .. } => LiveErrorKind::Http429,
            FetchError::Server { .. } => LiveErrorKind::Http5xx,
            FetchError::Refused { .. } => LiveErrorKind::Http4xx,
            FetchError::Timeout(_) => LiveErrorKind::Timeout,
            FetchError::Connect(_) => LiveErrorKind::Connect,
            FetchError::Malformed(_) => LiveErrorKind::Malformed,
            FetchError::Api(_) => LiveErrorKind::ApiError,
            FetchError::TooLarge(_) => LiveErrorKind::TooLarge,
        }
    }

    /// How long Yahoo asked us to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }
}

/// A successful answer.
#[derive(Debug)]
pub(crate) struct Fetched {
    pub chart: Chart,
    /// Yahoo's clock for this answer, Unix ms: the chart's own time, else the HTTP `Date`
    /// header, else (never seen in practice) the local clock.
    pub market_now: i64,
}

/// A chart API client; cheap to clone (one connection pool).
#[derive(Clone, Debug)]
pub(crate) struct ChartClient {
    http: reqwest::Client,
    base: Url,
    /// The largest body read (see the module docs).
    max_body: u64,
}

impl ChartClient {
    /// A client for `base` (None: Yahoo's own) with a whole-request `timeout`.
    pub fn new(base: Option<&str>, timeout: Duration) -> anyhow::Result<Self> {
        let raw = base.unwrap_or(DEFAULT_BASE_URL);
        let base = Url::parse(raw)
            .map_err(|e| anyhow::anyhow!("--yahoo-base-url {raw:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            anyhow::bail!("--yahoo-base-url {raw:?} must be an http:// or https:// URL");
        }
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
        Ok(ChartClient {
            http,
            base,
            max_body: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Reads at most `bytes` of a response body (`--live-max-response-bytes`).
    pub fn with_max_body(mut self, bytes: u64) -> Self {
        self.max_body = bytes;
        self
    }

    /// The request URL for `symbol` over `[from_ms, to_ms)`.
    pub fn url(&self, symbol: &str, from_ms: i64, to_ms: i64) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("checked in new: the base URL can have a path")
            .pop_if_empty()
            .extend(["v8", "finance", "chart", symbol]);
        url.query_pairs_mut()
            .append_pair("period1", &from_ms.div_euclid(1000).to_string())
            .append_pair("period2", &to_ms.div_euclid(1000).to_string())
            .append_pair("interval", "1m")
            .append_pair("includePrePost", "true");
        url
    }

    /// Fetches and parses one chart.
    pub async fn fetch(
        &self,
        symbol: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Fetched, FetchError> {
        let url = self.url(symbol, from_ms, to_ms);
        let resp = self.http.get(url).send().await.map_err(transport)?;
        let status = resp.status();
        let date = http_date_ms(resp.headers());
        let retry_after = retry_after(resp.headers());
        let body = read_capped(resp, self.max_body)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => transport(e),
                too_large => FetchError::TooLarge(too_large.to_string()),
            })?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(FetchError::RateLimited { retry_after });
        }
        if status.is_server_error() {
            return Err(FetchError::Server {
                status: status.as_u16(),
                snippet: snippet(&body),
            });
        }
        if !status.is_success() {
            // Yahoo explains 4xx answers in `chart.error` (e.g. an unknown symbol).
            let snippet = match parse_chart(&body) {
                Err(e @ ChartError::Api { .. }) => e.to_string(),
                _ => snippet(&body),
            };
            return Err(FetchError::Refused {
                status: status.as_u16(),
                snippet,
            });
        }
        let chart = parse_chart(&body).map_err(|e| match e {
            ChartError::Api { .. } => FetchError::Api(e),
            other => FetchError::Malformed(other),
        })?;
        let market_now = chart
            .market_time
            .or(date)
            .unwrap_or_else(candlepipe_model::time::now_ms);
        Ok(Fetched { chart, market_now })
    }
}

fn transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        FetchError::Timeout(e.without_url().to_string())
    } else {
        FetchError::Connect(e.without_url().to_string())
    }
}

/// The first 200 characters of a body, for log lines.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}

/// `Retry-After: <seconds>` (the HTTP-date form is rare enough to ignore).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The `Date` header as Unix ms.
fn http_date_ms(headers: &HeaderMap) -> Option<i64> {
    httpdate_parse(headers.get(reqwest::header::DATE)?.to_str().ok()?)
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form servers send.
fn httpdate_parse(s: &str) -> Option<i64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)?
        + 1;
    let rfc3339 = format!("{year}-{month:02}-{day:0>2}T{time}Z");
    candlepipe_model::time::parse_instant_ms(&rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_has_the_window_in_seconds_and_asks_for_1m_with_pre_post() {
        let c = ChartClient::new(Some("http://127.0.0.1:9/"), Duration::from_secs(1)).unwrap();
        let u = c.url("BTC-USD", 1_732_249_920_000, 1_732_250_040_000);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/v8/finance/chart/BTC-USD?period1=1732249920&period2=1732250040&interval=1m&includePrePost=true"
        );
        let proxied =
            ChartClient::new(Some("https://proxy.example/yahoo"), Duration::from_secs(1)).unwrap();
        assert!(proxied
            .url("ETH-USD", 0, 60_000)
            .as_str()
            .starts_with("https://proxy.example/yahoo/v8/finance/chart/ETH-USD?"));
        let default = ChartClient::new(None, Duration::from_secs(1)).unwrap();
        assert!(default
            .url("ETH-USD", 0, 60_000)
            .as_str()
            .starts_with("https://query1.finance.yahoo.com/v8/finance/chart/ETH-USD?"));
    }

    #[test]
    fn bad_base_urls_are_refused_by_name() {
        for bad in ["not a url", "ftp://x", "mailto:a@b"] {
            let e = ChartClient::new(Some(bad), Duration::from_secs(1)).unwrap_err();
            assert!(e.to_string().contains("--yahoo-base-url"), "{e}");
        }
    }

    #[test]
    fn http_dates_parse() {
        assert_eq!(
            httpdate_parse("Fri, 22 Nov 2024 04:32:00 GMT"),
            Some(1_732_249_920_000)
        );
        assert_eq!(httpdate_parse("yesterday"), None);
    }

    #[test]
    fn error_kinds_are_the_metric_labels() {
        assert_eq!(
            FetchError::RateLimited { retry_after: None }
                .kind()
                .as_str(),
            "http_429"
        );
        assert_eq!(
            FetchError::Server {
                status: 503,
                snippet: String::new()
            }
            .kind()
            .as_str(),
            "http_5xx"
        );
        assert_eq!(
            FetchError::Timeout(String::new()).kind().as_str(),
            "timeout"
        );
        assert_eq!(
            FetchError::Connect(String::new()).kind().as_str(),
            "connect"
        );
        assert_eq!(
            FetchError::TooLarge(String::new()).kind().as_str(),
            "too_large"
        );
        for e in [
            FetchError::TooLarge(String::new()),
            FetchError::Timeout(String::new()),
        ] {
            assert!(LiveErrorKind::ALL.contains(&e.kind()));
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port(); // bound and released: nothing listens there now
        let c = ChartClient::new(
            Some(&format!("http://127.0.0.1:{port}")),
            Duration::from_secs(5),
        )
        .unwrap();
        let e = c.fetch("BTC-USD", 0, 60_000).await.unwrap_err();
        assert_eq!(e.kind().as_str(), "connect", "{e}");
    }
}
