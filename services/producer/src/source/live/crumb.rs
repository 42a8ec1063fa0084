//! Yahoo's cookie and crumb: what the chart API wants when it stops answering anonymous
//! requests (HTTP 401 `Invalid Crumb`, 403, or a 429 that is not a rate limit).
//!
//! The flow is the one Python yfinance and yfinance-rs use:
//!
//! 1. `GET {cookie URL}` (`--yahoo-cookie-url`; Yahoo's is `https://fc.yahoo.com/consent`,
//!    which answers with a `Set-Cookie: A3=…` whatever its status);
//! 2. `GET {--yahoo-base-url}/v1/test/getcrumb` with that cookie: the body is the crumb;
//! 3. every chart request then carries `crumb=<crumb>` and the cookie; the next 401 or 403
//!    fetches a new pair.
//!
//! The pair is shared by every symbol's poller, and renewing it is serialised: when many
//! symbols get a 401 at once, one of them fetches and the others use what it got
//! ([`YahooAuth::renew`] takes the generation the caller saw).
//!
//! yfinance-rs implements this too, but only inside its own client (`ensure_credentials` is
//! crate-private), so it cannot hand a crumb to the chart request this source makes itself
//! (see the `live` module docs for why that request is not yfinance-rs').

use super::errchain::chain;
use candlepipe_runtime::http_body::{read_capped, BodyError};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::Url;
use std::sync::Arc;
use thiserror::Error;
use tokio::sync::Mutex;

/// Yahoo's own cookie page.
pub(crate) const DEFAULT_COOKIE_URL: &str = "https://fc.yahoo.com/consent";

/// A crumb is a short token; anything longer is an error page.
const MAX_CRUMB_BYTES: u64 = 128;

/// A cookie and the crumb it was issued with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pass {
    /// Counts the pairs fetched; tells a stale pair from a renewed one.
    pub generation: u64,
    /// The `Cookie` header value (`A3=…`).
    pub cookie: String,
    /// The `crumb` query parameter.
    pub crumb: String,
}

/// Why no pair could be fetched.
#[derive(Debug, Error)]
pub(crate) enum AuthError {
    #[error("getting Yahoo's cookie from {url}: {detail}")]
    Cookie { url: Url, detail: String },
    #[error("getting a crumb from {url}: {detail}")]
    Crumb { url: Url, detail: String },
}

/// The shared cookie and crumb, and how to fetch them.
#[derive(Debug, Clone)]
pub(crate) struct YahooAuth {
    http: reqwest::Client,
    cookie_url: Url,
    crumb_url: Url,
    pass: Arc<Mutex<Option<Pass>>>,
}

impl YahooAuth {
    pub fn new(http: reqwest::Client, cookie_url: Url, crumb_url: Url) -> Self {
        YahooAuth {
            http,
            cookie_url,
            crumb_url,
            pass: Arc::default(),
        }
    }

    /// The cookie and crumb URLs.
    #[cfg(test)]
    pub fn urls(&self) -> (String, String) {
        (self.cookie_url.to_string(), self.crumb_url.to_string())
    }

    /// The pair in use, if one was fetched.
    pub async fn current(&self) -> Option<Pass> {
        self.pass.lock().await.clone()
    }

    /// A new pair, unless another task renewed the one of generation `stale` (`None`: no
    /// pair yet) in the meantime: then that newer one.
    pub async fn renew(&self, stale: Option<u64>) -> Result<Pass, AuthError> {
        let mut pass = self.pass.lock().await;
        if let Some(p) = pass.as_ref().filter(|p| Some(p.generation) != stale) {
            return Ok(p.clone());
        }
        let cookie = self.cookie().await?;
        let crumb = self.crumb(&cookie).await?;
        let generation = pass.as_ref().map_or(1, |p| p.generation + 1);
        let fresh = Pass {
            generation,
            cookie,
            crumb,
        };
        tracing::info!(
            generation,
            "fetched a Yahoo cookie and crumb; chart requests carry them from now on"
        );
        *pass = Some(fresh.clone());
        Ok(fresh)
    }

    async fn cookie(&self) -> Result<String, AuthError> {
        let url = &self.cookie_url;
        let err = |detail: String| AuthError::Cookie {
            url: url.clone(),
            detail,
        };
        let resp = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(|e| err(chain(&e.without_url())))?;
        let status = resp.status();
        let mut pairs = Vec::new();
        for value in resp.headers().get_all(SET_COOKIE) {
            let raw = value
                .to_str()
                .map_err(|_| err("a Set-Cookie header is not text".into()))?;
            let pair = raw.split(';').next().unwrap_or_default().trim();
            if pair.contains('=') {
                pairs.push(pair.to_owned());
            }
        }
        if pairs.is_empty() {
            return Err(err(format!("HTTP {status} without a Set-Cookie header")));
        }
        Ok(pairs.join("; "))
    }

    async fn crumb(&self, cookie: &str) -> Result<String, AuthError> {
        let url = &self.crumb_url;
        let err = |detail: String| AuthError::Crumb {
            url: url.clone(),
            detail,
        };
        let resp = self
            .http
            .get(url.clone())
            .header(COOKIE, cookie)
            .send()
            .await
            .map_err(|e| err(chain(&e.without_url())))?;
        let status = resp.status();
        let body = read_capped(resp, MAX_CRUMB_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => err(chain(&e.without_url())),
                too_large => err(too_large.to_string()),
            })?;
        let text = String::from_utf8_lossy(&body);
        let crumb = text.trim();
        if !status.is_success() {
            return Err(err(format!(
                "HTTP {status}: {}",
                crumb.chars().take(200).collect::<String>()
            )));
        }
        if !valid_crumb(crumb) {
            return Err(err(format!("not a crumb: {crumb:?}")));
        }
        Ok(crumb.to_owned())
    }
}

/// A crumb is one short token: no blanks or controls, not HTML or JSON.
fn valid_crumb(crumb: &str) -> bool {
    !crumb.is_empty()
        && !crumb
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '{' | '['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crumbs_are_single_tokens() {
        assert!(valid_crumb("Ab1.c/D_e-F"));
        for bad in ["", "Too Many Requests", "<html>", "{\"error\":1}", "a\tb"] {
            assert!(!valid_crumb(bad), "{bad:?}");
        }
    }
}
