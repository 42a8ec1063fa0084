//! The one HTTP request the live source makes: Yahoo's chart API for one symbol and one
//! time window, at 1-minute resolution.
//!
//! ```text
//! GET {base}/v8/finance/chart/{SYMBOL}?period1={from s}&period2={to s}&interval=1m&includePrePost=true
//! ```
//!
//! `{base}` is `--yahoo-base-url` (default `https://query1.finance.yahoo.com`), so tests and
//! proxies redirect every Yahoo request with one flag. When Yahoo answers 401 or 403 (or a
//! 429 before any crumb was fetched), the client fetches a cookie and crumb ([`crumb`]),
//! sends the request again once with `&crumb=…` and the cookie, and keeps sending them.
//!
//! The client looks like a current desktop Chrome: its User-Agent, and HTTP/2 where the
//! server offers it (ALPN over TLS, as Yahoo does; a plain `http://` base such as the test
//! double gets HTTP/1.1). Failures come back as a [`FetchError`] whose [`FetchError::kind`]
//! is the `kind` label of `candlepipe_producer_live_fetch_errors_total`, and whose text has
//! the whole cause chain (e.g. the DNS or connect error), each cause once. A body over
//! `--live-max-response-bytes` is not read past the limit (`too_large`): a real chart
//! answer is well under 1 MiB, and an unbounded read of a 1.5 GB answer once took the
//! producer to 2.36 GB of memory.

use super::chart::{parse_chart, Chart, ChartError};
use super::crumb::{AuthError, Pass, YahooAuth, DEFAULT_COOKIE_URL};
use super::errchain::chain;
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

/// Yahoo answers a library's default User-Agent with 429s far sooner than a browser's, and
/// an outdated browser sooner than a current one: Chrome 143, the stable release of
/// December 2025 (Chrome's reduced User-Agent: the version's minor parts are zeros).
pub(crate) const USER_AGENT: &str =
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/143.0.0.0 Safari/537.36";

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
    #[error("HTTP {status}, and no cookie and crumb to retry with: {cause}")]
    Auth { status: u16, cause: AuthError },
}

impl FetchError {
    /// The metric label: `http_429`, `http_5xx`, `http_4xx`, `timeout`, `connect`,
    /// `malformed`, `api_error`, `too_large` or `auth`.
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
            FetchError::Auth { .. } => LiveErrorKind::Auth,
        }
    }

    /// Whether a cookie and crumb may help: 401 and 403 always; 429 only when none was
    /// sent (Yahoo answers crumbless requests with 429 too), else it is a rate limit.
    fn wants_crumb(&self, sent_one: bool) -> bool {
        match self {
            FetchError::Refused { status, .. } => matches!(status, 401 | 403),
            FetchError::RateLimited { .. } => !sent_one,
            _ => false,
        }
    }

    fn status(&self) -> u16 {
        match self {
            FetchError::Refused { status, .. } | FetchError::Server { status, .. } => *status,
            FetchError::RateLimited { .. } => 429,
            _ => 0,
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
    /// The cookie and crumb, fetched at the first refusal.
    auth: YahooAuth,
}

impl ChartClient {
    /// A client for `base` (None: Yahoo's own) with a whole-request `timeout`. Its cookie
    /// comes from `cookie_url`; without one, from `{base}/consent` when a base is given
    /// (so one flag moves every request), else from Yahoo's `https://fc.yahoo.com/consent`.
    pub fn new(
        base: Option<&str>,
        cookie_url: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let base = http_url("--yahoo-base-url", base.unwrap_or(DEFAULT_BASE_URL))?;
        let cookie_url = match (
            cookie_url,
            base.as_str() == Url::parse(DEFAULT_BASE_URL)?.as_str(),
        ) {
            (Some(raw), _) => http_url("--yahoo-cookie-url", raw)?,
            (None, true) => Url::parse(DEFAULT_COOKIE_URL)?,
            (None, false) => under(&base, &["consent"]),
        };
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| anyhow::anyhow!("building the HTTP client: {}", chain(&e)))?;
        let crumb_url = under(&base, &["v1", "test", "getcrumb"]);
        Ok(ChartClient {
            auth: YahooAuth::new(http.clone(), cookie_url, crumb_url),
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
        let mut url = under(&self.base, &["v8", "finance", "chart", symbol]);
        url.query_pairs_mut()
            .append_pair("period1", &from_ms.div_euclid(1000).to_string())
            .append_pair("period2", &to_ms.div_euclid(1000).to_string())
            .append_pair("interval", "1m")
            .append_pair("includePrePost", "true");
        url
    }

    /// Fetches and parses one chart; on a refusal that a cookie and crumb may lift, hands
    /// the refusal to `refused` (it was an answer: the caller counts it), fetches a cookie
    /// and crumb (or newer ones) and asks once more.
    pub async fn fetch(
        &self,
        symbol: &str,
        from_ms: i64,
        to_ms: i64,
        refused: impl FnOnce(&FetchError),
    ) -> Result<Fetched, FetchError> {
        let pass = self.auth.current().await;
        match self.fetch_once(symbol, from_ms, to_ms, pass.as_ref()).await {
            Err(e) if e.wants_crumb(pass.is_some()) => {
                refused(&e);
                tracing::debug!(
                    symbol,
                    "Yahoo refused the request ({e}); renewing the cookie and crumb"
                );
                let fresh = self
                    .auth
                    .renew(pass.map(|p| p.generation))
                    .await
                    .map_err(|cause| FetchError::Auth {
                        status: e.status(),
                        cause,
                    })?;
                self.fetch_once(symbol, from_ms, to_ms, Some(&fresh)).await
            }
            other => other,
        }
    }

    async fn fetch_once(
        &self,
        symbol: &str,
        from_ms: i64,
        to_ms: i64,
        pass: Option<&Pass>,
    ) -> Result<Fetched, FetchError> {
        let mut url = self.url(symbol, from_ms, to_ms);
        let mut request = self.http.get(url.clone());
        if let Some(p) = pass {
            url.query_pairs_mut().append_pair("crumb", &p.crumb);
            request = self
                .http
                .get(url)
                .header(reqwest::header::COOKIE, &p.cookie);
        }
        let resp = request.send().await.map_err(transport)?;
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
    let timeout = e.is_timeout();
    let text = chain(&e.without_url());
    if timeout {
        FetchError::Timeout(text)
    } else {
        FetchError::Connect(text)
    }
}

/// `raw` (the value of `flag`) as an http(s) URL that can take a path.
fn http_url(flag: &str, raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).map_err(|e| anyhow::anyhow!("{flag} {raw:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
        anyhow::bail!("{flag} {raw:?} must be an http:// or https:// URL");
    }
    Ok(url)
}

/// `base` with `segments` appended to its path.
fn under(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("checked by http_url: the base URL can have a path")
        .pop_if_empty()
        .extend(segments);
    url
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
        let c =
            ChartClient::new(Some("http://127.0.0.1:9/"), None, Duration::from_secs(1)).unwrap();
        let u = c.url("BTC-USD", 1_732_249_920_000, 1_732_250_040_000);
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/v8/finance/chart/BTC-USD?period1=1732249920&period2=1732250040&interval=1m&includePrePost=true"
        );
        let proxied = ChartClient::new(
            Some("https://proxy.example/yahoo"),
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(proxied
            .url("ETH-USD", 0, 60_000)
            .as_str()
            .starts_with("https://proxy.example/yahoo/v8/finance/chart/ETH-USD?"));
        let default = ChartClient::new(None, None, Duration::from_secs(1)).unwrap();
        assert!(default
            .url("ETH-USD", 0, 60_000)
            .as_str()
            .starts_with("https://query1.finance.yahoo.com/v8/finance/chart/ETH-USD?"));
    }

    #[test]
    fn cookie_and_crumb_urls_follow_the_base_url() {
        let t = Duration::from_secs(1);
        let yahoo = ChartClient::new(None, None, t).unwrap();
        assert_eq!(
            yahoo.auth.urls(),
            (
                "https://fc.yahoo.com/consent".to_owned(),
                "https://query1.finance.yahoo.com/v1/test/getcrumb".to_owned()
            )
        );
        let fake = ChartClient::new(Some("http://127.0.0.1:9/y/"), None, t).unwrap();
        assert_eq!(
            fake.auth.urls(),
            (
                "http://127.0.0.1:9/y/consent".to_owned(),
                "http://127.0.0.1:9/y/v1/test/getcrumb".to_owned()
            )
        );
        let own = ChartClient::new(None, Some("https://consent.example/c"), t).unwrap();
        assert_eq!(own.auth.urls().0, "https://consent.example/c");
        let e = ChartClient::new(None, Some("fc.yahoo.com"), t).unwrap_err();
        assert!(e.to_string().contains("--yahoo-cookie-url"), "{e}");
    }

    #[test]
    fn bad_base_urls_are_refused_by_name() {
        for bad in ["not a url", "ftp://x", "mailto:a@b"] {
            let e = ChartClient::new(Some(bad), None, Duration::from_secs(1)).unwrap_err();
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
            None,
            Duration::from_secs(5),
        )
        .unwrap();
        let e = c.fetch("BTC-USD", 0, 60_000, |_| {}).await.unwrap_err();
        assert_eq!(e.kind().as_str(), "connect", "{e}");
        let text = e.to_string();
        assert!(
            text.contains("Connection refused"),
            "the cause is named: {text}"
        );
        assert_eq!(
            text.matches("Connection refused").count(),
            1,
            "once: {text}"
        );
    }
}
