//! Where and how the sink writes: the `--influx-*` settings as one struct, their README
//! defaults, and the checks that fail the consumer at start with the flag to fix, before
//! any request is sent.

use anyhow::{bail, Context};
use reqwest::Url;
use std::fmt;
use std::time::Duration;

/// Points per HTTP request by default (InfluxDB recommends 5,000 to 10,000).
pub const DEFAULT_BATCH_POINTS: usize = 5000;
/// Write requests in flight at once by default: two keep InfluxDB busy while the consumer
/// compresses and sends the next body (the benchmark's two-writer ceiling is ~1.5x one).
pub const DEFAULT_CONCURRENCY: u16 = 2;
/// Longer than InfluxDB 1.x's own 10 s write timeout, so its answer is seen rather than ours.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between retries: also the longest delay before noticing InfluxDB is back.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Request bodies are sent as they are by default. gzip pays where the network is the limit
/// (a WAN, a metered link such as InfluxDB Cloud); from the same host or a LAN it is not (a
/// full-speed consumer sends ~35 MB/s of line protocol, a third of a 1 Gbit/s link), and it
/// costs CPU on both ends and time on every request: InfluxDB inflates each body before
/// parsing it. Measured with the benchmarks (BENCHMARKS.md; five runs each on the shared
/// 2-core machine): a median 85 % (71-93 %) of InfluxDB's ceiling and ~4.6 µs of consumer
/// CPU per candle without gzip, 68 % (60-78 %) and ~6.6 µs with it. The price is memory: the
/// batch in flight waits as text, not compressed (~9 MiB more peak RSS on a full topic).
/// Vector's InfluxDB sinks and InfluxDB's own client libraries default to no compression too.
pub const DEFAULT_GZIP: bool = false;

/// Which InfluxDB HTTP API to write with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InfluxApi {
    /// `/write?db=` and InfluxQL `/query`: InfluxDB 1.x, and 2.x/3.x through their v1
    /// compatibility endpoints.
    V1,
    /// `/api/v2/write?org=&bucket=` with a token: InfluxDB 2.x.
    V2,
}

/// Where and how to write. The consumer's `--influx-*` flags fill it.
#[derive(Clone)]
pub struct InfluxConfig {
    /// Base URL, e.g. `http://localhost:8086` (a path prefix is kept).
    pub url: String,
    pub api: InfluxApi,
    /// v2: organization name (required).
    pub org: Option<String>,
    /// v2: bucket name.
    pub bucket: String,
    /// v2: required. v1: optional; sent as `Authorization: Token`, which InfluxDB 1.8+ and
    /// the v1-compatible endpoints of 2.x/3.x accept. Takes precedence over user/password.
    pub token: Option<String>,
    /// v1: database, created by [`InfluxSink::prepare`](super::InfluxSink::prepare) when missing.
    pub db: String,
    /// v1: sent as HTTP basic auth (not `u=`/`p=` query parameters, which end up in logs).
    pub username: Option<String>,
    pub password: Option<String>,
    /// v1: retention policy (`rp=`); must exist. `None` = the database's default.
    pub retention_policy: Option<String>,
    /// Points per HTTP request.
    pub batch_points: usize,
    /// HTTP write requests in flight at once (at least 1).
    pub concurrency: usize,
    /// Whole-request timeout; a timed-out request is retried.
    pub request_timeout: Duration,
    /// Cap of the retry backoff.
    pub max_backoff: Duration,
    /// gzip request bodies (`Content-Encoding: gzip`); see [`DEFAULT_GZIP`].
    pub gzip: bool,
}

impl Default for InfluxConfig {
    /// The README's defaults: v2 at localhost:8086, bucket/database `crypto`.
    fn default() -> Self {
        InfluxConfig {
            url: "http://localhost:8086".into(),
            api: InfluxApi::V2,
            org: None,
            bucket: "crypto".into(),
            token: None,
            db: "crypto".into(),
            username: None,
            password: None,
            retention_policy: None,
            batch_points: DEFAULT_BATCH_POINTS,
            concurrency: usize::from(DEFAULT_CONCURRENCY),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_backoff: DEFAULT_MAX_BACKOFF,
            gzip: DEFAULT_GZIP,
        }
    }
}

impl fmt::Debug for InfluxConfig {
    /// Secrets are redacted: configs get logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("InfluxConfig")
            .field("url", &self.url)
            .field("api", &self.api)
            .field("org", &self.org)
            .field("bucket", &self.bucket)
            .field("token", &redact(&self.token))
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("retention_policy", &self.retention_policy)
            .field("batch_points", &self.batch_points)
            .field("request_timeout", &self.request_timeout)
            .field("max_backoff", &self.max_backoff)
            .field("gzip", &self.gzip)
            .finish()
    }
}

impl InfluxConfig {
    /// Checks the configuration (no network yet) and returns the write endpoint, with its
    /// query (v1: `db`, `rp`; v2: `org`, `bucket`) and `precision=ms`.
    pub(super) fn write_url(&self) -> anyhow::Result<Url> {
        let cfg = self;
        let base = Url::parse(&cfg.url)
            .with_context(|| format!("--influx-url {:?} is not a URL", cfg.url))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!(
                "--influx-url {:?} must be an http:// or https:// URL",
                cfg.url
            );
        }
        if cfg.batch_points == 0 {
            bail!("the InfluxDB batch size must be at least 1 point");
        }
        Ok(match cfg.api {
            InfluxApi::V1 => {
                if cfg.db.is_empty() {
                    bail!("--influx-db must not be empty with --influx-api v1");
                }
                if cfg.password.is_some() && cfg.username.is_none() {
                    bail!("an InfluxDB password was given without a username");
                }
                let mut q = vec![("db", cfg.db.as_str()), ("precision", "ms")];
                if let Some(rp) = &cfg.retention_policy {
                    q.push(("rp", rp));
                }
                endpoint(&base, &["write"], &q)
            }
            InfluxApi::V2 => {
                let Some(org) = cfg.org.as_deref().filter(|o| !o.is_empty()) else {
                    bail!("--influx-org is required with --influx-api v2");
                };
                if cfg.token.as_deref().is_none_or(str::is_empty) {
                    bail!("--influx-token is required with --influx-api v2");
                }
                if cfg.bucket.is_empty() {
                    bail!("--influx-bucket must not be empty with --influx-api v2");
                }
                endpoint(
                    &base,
                    &["api", "v2", "write"],
                    &[("org", org), ("bucket", &cfg.bucket), ("precision", "ms")],
                )
            }
        })
    }
}

/// `base` + path segments + query, keeping any path prefix of `base`.
pub(super) fn endpoint(base: &Url, path: &[&str], query: &[(&str, &str)]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("checked by InfluxSink::new")
        .pop_if_empty()
        .extend(path);
    url.set_query(None);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ConsumerMetrics;
    use crate::sink::client::InfluxSink;

    #[test]
    fn endpoints_keep_a_path_prefix_and_encode_the_query() {
        let base = Url::parse("https://example.com/influx/").unwrap();
        let url = endpoint(
            &base,
            &["api", "v2", "write"],
            &[("org", "my org&co"), ("bucket", "b")],
        );
        assert_eq!(
            url.as_str(),
            "https://example.com/influx/api/v2/write?org=my+org%26co&bucket=b"
        );
        let plain = Url::parse("http://localhost:8086").unwrap();
        assert_eq!(
            endpoint(&plain, &["ping"], &[]).as_str(),
            "http://localhost:8086/ping"
        );
    }

    #[test]
    fn config_validation_names_the_missing_flag() {
        let v2 = InfluxConfig {
            token: Some("t".into()),
            ..InfluxConfig::default()
        };
        let err = InfluxSink::new(v2, ConsumerMetrics::new()).err().unwrap();
        assert!(err.to_string().contains("--influx-org"), "{err}");
        let bad_url = InfluxConfig {
            url: "localhost:8086".into(),
            api: InfluxApi::V1,
            ..InfluxConfig::default()
        };
        let err = InfluxSink::new(bad_url, ConsumerMetrics::new())
            .err()
            .unwrap();
        assert!(err.to_string().contains("--influx-url"), "{err}");
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = InfluxConfig {
            token: Some("s3cret-token".into()),
            password: Some("hunter2".into()),
            ..InfluxConfig::default()
        };
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
    }

    #[test]
    fn the_write_url_carries_the_api_s_query_and_bad_settings_name_their_flag() {
        let v1 = InfluxConfig {
            url: "http://influx:8086/prefix".into(),
            api: InfluxApi::V1,
            db: "my db".into(),
            retention_policy: Some("rp1".into()),
            ..InfluxConfig::default()
        };
        assert_eq!(
            v1.write_url().unwrap().as_str(),
            "http://influx:8086/prefix/write?db=my+db&precision=ms&rp=rp1"
        );
        let v2 = InfluxConfig {
            org: Some("o".into()),
            token: Some("t".into()),
            ..InfluxConfig::default()
        };
        assert_eq!(
            v2.write_url().unwrap().as_str(),
            "http://localhost:8086/api/v2/write?org=o&bucket=crypto&precision=ms"
        );
        let cases: [(InfluxConfig, &str); 5] = [
            (
                InfluxConfig {
                    batch_points: 0,
                    ..v2.clone()
                },
                "at least 1 point",
            ),
            (
                InfluxConfig {
                    token: None,
                    ..v2.clone()
                },
                "--influx-token",
            ),
            (
                InfluxConfig {
                    bucket: String::new(),
                    ..v2.clone()
                },
                "--influx-bucket",
            ),
            (
                InfluxConfig {
                    db: String::new(),
                    ..v1.clone()
                },
                "--influx-db",
            ),
            (
                InfluxConfig {
                    password: Some("p".into()),
                    ..v1.clone()
                },
                "without a username",
            ),
        ];
        for (cfg, want) in cases {
            let err = cfg.write_url().unwrap_err().to_string();
            assert!(err.contains(want), "{err} should name {want}");
        }
        let ftp = InfluxConfig {
            url: "ftp://influx".into(),
            ..v2
        };
        assert!(ftp.write_url().unwrap_err().to_string().contains("http://"));
    }
}
