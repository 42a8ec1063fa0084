//! The sink itself: the checked configuration, the HTTP client (one connection pool that
//! clones share) and what every request needs (the base URL, the credentials), plus the
//! health ping of `/readyz`. Writing, encoding and setup are the sibling modules.

use super::config::{endpoint, InfluxApi, InfluxConfig};
use crate::metrics::ConsumerMetrics;
use anyhow::Context;
use reqwest::Url;
use std::sync::Arc;
use std::time::Duration;

/// Readiness probes must answer quickly even when writes are allowed to take long.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes points to InfluxDB. Cheap to clone: clones share the HTTP connection pool.
#[derive(Clone)]
pub struct InfluxSink {
    pub(super) inner: Arc<SinkInner>,
}

pub(super) struct SinkInner {
    pub(super) cfg: InfluxConfig,
    pub(super) client: reqwest::Client,
    pub(super) write_url: Url,
    pub(super) metrics: ConsumerMetrics,
}

impl InfluxSink {
    /// Checks the configuration (no network yet) and builds the HTTP client.
    pub fn new(cfg: InfluxConfig, metrics: ConsumerMetrics) -> anyhow::Result<Self> {
        let write_url = cfg.write_url()?;
        let client = reqwest::Client::builder()
            .timeout(cfg.request_timeout)
            .connect_timeout(cfg.request_timeout.min(PING_TIMEOUT))
            .user_agent(concat!("candlepipe-consumer/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the InfluxDB HTTP client")?;
        Ok(InfluxSink {
            inner: Arc::new(SinkInner {
                cfg,
                client,
                write_url,
                metrics,
            }),
        })
    }

    /// The configuration this sink writes with.
    pub fn config(&self) -> &InfluxConfig {
        &self.inner.cfg
    }

    /// Whether InfluxDB answers its health endpoint (v1 `/ping`, v2 `/health`): for `/readyz`.
    pub async fn ping(&self) -> bool {
        let path: &[&str] = match self.inner.cfg.api {
            InfluxApi::V1 => &["ping"],
            InfluxApi::V2 => &["health"],
        };
        let url = endpoint(&self.base(), path, &[]);
        match self
            .inner
            .client
            .get(url)
            .timeout(PING_TIMEOUT)
            .send()
            .await
        {
            Ok(resp) => resp.status().is_success(),
            Err(_) => false,
        }
    }

    pub(super) fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let cfg = &self.inner.cfg;
        match (&cfg.token, &cfg.username) {
            (Some(token), _) => {
                req.header(reqwest::header::AUTHORIZATION, format!("Token {token}"))
            }
            (None, Some(user)) => req.basic_auth(user, cfg.password.as_ref()),
            (None, None) => req,
        }
    }

    pub(super) fn base(&self) -> Url {
        Url::parse(&self.inner.cfg.url).expect("checked by InfluxSink::new")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(token: Option<&str>, username: Option<&str>, password: Option<&str>) -> InfluxSink {
        let cfg = InfluxConfig {
            api: InfluxApi::V1,
            token: token.map(str::to_owned),
            username: username.map(str::to_owned),
            password: password.map(str::to_owned),
            ..InfluxConfig::default()
        };
        InfluxSink::new(cfg, ConsumerMetrics::new()).unwrap()
    }

    fn authorization(sink: &InfluxSink) -> Option<String> {
        let req = sink.authorize(sink.inner.client.get("http://influx/write"));
        let req = req.build().unwrap();
        let header = req.headers().get(reqwest::header::AUTHORIZATION)?;
        Some(header.to_str().unwrap().to_owned())
    }

    #[test]
    fn a_token_wins_over_basic_auth_and_nothing_is_sent_without_either() {
        let both = sink(Some("t0k"), Some("u"), Some("p"));
        assert_eq!(authorization(&both).as_deref(), Some("Token t0k"));
        // "u:p" in base64: credentials in a header, never in the URL's query.
        let basic = sink(None, Some("u"), Some("p"));
        assert_eq!(authorization(&basic).as_deref(), Some("Basic dTpw"));
        assert_eq!(
            basic.inner.write_url.query(),
            Some("db=crypto&precision=ms")
        );
        assert_eq!(authorization(&sink(None, None, None)), None);
    }
}
