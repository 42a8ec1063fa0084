//! The InfluxDB sink: the last step of a candle's journey, and the one that decides when the
//! consumer may commit its Kafka offsets.
//!
//! The contract the batch loop relies on: [`InfluxSink::write`] returns `Ok` only once InfluxDB
//! has accepted every point that is not listed in [`WriteOutcome::rejected`]. Everything else
//! follows from it:
//!
//! * **Transient failures are retried forever** (5xx, 429, timeouts, refused or reset
//!   connections), with exponential backoff and full jitter (a random pause between 0 and
//!   100 ms · 2ⁿ, capped at `max_backoff`), until InfluxDB answers or the shutdown fires; the
//!   caller then gets [`SinkError::Stopped`] and commits nothing. Since every point is an
//!   idempotent upsert, writing a request twice is harmless.
//! * **Bad points are isolated, not retried forever.** InfluxDB answers 400 (1.x, also for a
//!   field type conflict and for its "partial write", where the good lines *were* written),
//!   413 or 422 (2.x) when some lines cannot be stored. The sink logs InfluxDB's message and
//!   bisects: it splits the request in halves and writes each, down to single lines, so every
//!   good point gets written (again, for a partial write: idempotent) and only the offending
//!   lines come back as [`RejectedPoint`]s with InfluxDB's message, for the dead-letter topic.
//!   A point that cannot even be encoded (see [`crate::lineproto`]) is rejected the same way.
//! * **Errors about the request as a whole are not the points' fault**: 401/403 (credentials),
//!   404 (no such bucket/org) and the like are retried with backoff and logged as errors,
//!   never bisected, so a revoked token cannot send a whole stream to the dead-letter topic.
//!   A v1 database that disappeared is created again. Configuration that can be checked up
//!   front is checked by [`InfluxSink::prepare`] and fails it with [`SinkError::Fatal`].
//!
//! Both APIs are spoken: `--influx-api v1` (`/write?db=`, InfluxDB 1.x and the 1.x-compatible
//! endpoint of 2.x/3.x; user/password as HTTP basic auth, or a token) and `v2`
//! (`/api/v2/write?org=&bucket=`, `Authorization: Token`). Requests carry `batch_points`
//! lines each, gzip-compressed when configured, at `precision=ms`.
//!
//! Why plain HTTP (reqwest) and not the `influxdb2` crate: that crate speaks only the v2 API
//! (this project's own test server, InfluxDB 1.6, is v1-only), and it hides exactly what this
//! sink has to control: per-request gzip, the retry policy, the status code and the error
//! body that tell a bad line from a sick server. The protocol is two small HTTP calls.

use crate::lineproto::{EncodedLine, EncodedPoints};
use crate::metrics::ConsumerMetrics;
use crate::point::Point;
use candlepipe_runtime::http_body::{read_capped, text_capped, BodyError};
use candlepipe_runtime::shutdown::Shutdown;
use futures::stream::{self, StreamExt, TryStreamExt};
use reqwest::{StatusCode, Url};
use std::fmt;
use std::io::{Read, Write};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Points per HTTP request by default (InfluxDB recommends 5,000 to 10,000).
pub const DEFAULT_BATCH_POINTS: usize = 5000;
/// Write requests in flight at once by default: two keep InfluxDB busy while the consumer
/// compresses and sends the next body (the benchmark's two-writer ceiling is ~1.5x one).
pub const DEFAULT_CONCURRENCY: u16 = 2;
/// Longer than InfluxDB 1.x's own 10 s write timeout, so its answer is seen rather than ours.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause between retries: also the longest delay before noticing InfluxDB is back.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// First retry pause (before jitter); doubles per attempt up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Readiness probes must answer quickly even when writes are allowed to take long.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// How much of an unexpected error body goes into a log line.
const MAX_ERROR_BODY: usize = 1024;

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
    /// v1: database, created by [`InfluxSink::prepare`] when missing.
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
    /// gzip request bodies (`Content-Encoding: gzip`).
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
            gzip: true,
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

/// What happened to the points of one [`InfluxSink::write`] call. Every input point is in
/// exactly one of: written, rejected, empty.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct WriteOutcome {
    /// Points InfluxDB accepted.
    pub written: usize,
    /// Points InfluxDB refused (or that could not be encoded), for the dead-letter topic.
    pub rejected: Vec<RejectedPoint>,
    /// Points with no field to write (nothing to send, nothing lost).
    pub empty: usize,
}

/// A batch's points as the request bodies [`InfluxSink::write_encoded`] sends, from
/// [`InfluxSink::encode`]. Points that cannot be encoded are rejected here, with their
/// debug form, so the caller can drop the points; with gzip on, the line protocol text is
/// dropped too and only the compressed bodies (about a sixth of it) wait for InfluxDB. A
/// rejected request is unpacked again to isolate its bad lines.
#[derive(Debug, Default)]
pub struct EncodedBatch {
    /// Every encoded line (spans index the text of its request's body).
    lines: Vec<EncodedLine>,
    /// One body per `batch_points` points, in order.
    requests: Vec<RequestBody>,
    /// Points with no field to write.
    empty: usize,
    unencodable: Vec<RejectedPoint>,
}

#[derive(Debug)]
struct RequestBody {
    /// Indices into [`EncodedBatch::lines`].
    lines: Range<usize>,
    /// The request body: the lines' text, gzipped when configured.
    body: Vec<u8>,
}

impl EncodedBatch {
    /// Lines to write.
    pub fn lines(&self) -> usize {
        self.lines.len()
    }
}

/// A point that will never be accepted as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedPoint {
    /// Index of the point in the slice given to [`InfluxSink::write`].
    pub index: usize,
    /// Its line protocol (or, when it could not be encoded, its debug form).
    pub line: String,
    /// InfluxDB's error message, or why it could not be encoded.
    pub error: String,
}

/// Why [`InfluxSink::write`] or [`InfluxSink::prepare`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The shutdown fired while InfluxDB was not accepting the points: nothing may be
    /// committed for them.
    #[error("shutdown requested before InfluxDB accepted the points")]
    Stopped,
    /// InfluxDB answered in a way retrying cannot fix (missing bucket, rejected credentials,
    /// unknown retention policy): an operator must act.
    #[error("InfluxDB cannot be used as configured: {0}")]
    Fatal(String),
}

/// Writes points to InfluxDB. Cheap to clone: clones share the HTTP connection pool.
#[derive(Clone)]
pub struct InfluxSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    cfg: InfluxConfig,
    client: reqwest::Client,
    write_url: Url,
    metrics: ConsumerMetrics,
}

/// The label values of `write_errors{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// 5xx or 429: InfluxDB cannot take the request now.
    Server,
    /// Other 4xx: InfluxDB refused the request or some of its lines.
    Client,
    /// No answer within the request timeout.
    Timeout,
    /// Connection refused, reset or otherwise broken.
    Connect,
}

impl FailureKind {
    fn label(self) -> &'static str {
        match self {
            FailureKind::Server => "server",
            FailureKind::Client => "client",
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
        }
    }
}

/// What one HTTP exchange means for the lines it carried.
enum Answer {
    /// Every line was stored.
    Accepted,
    /// Some lines cannot be stored (InfluxDB's message); split and try again.
    LinesRejected(String),
    /// Worth retrying the same request after a pause.
    Retry(FailureKind, String),
    /// v1: the database is gone; create it, then retry.
    DatabaseMissing(String),
}

/// How InfluxDB finally answered one request body (after any retries).
enum Settled {
    /// Every line was stored.
    Accepted,
    /// Some lines cannot be stored: InfluxDB's message.
    Rejected(String),
}

/// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
/// Jitter"): spreads retries of many consumers instead of synchronising them.
struct Backoff {
    ceiling: Duration,
    max: Duration,
    /// Failed attempts so far.
    attempts: u32,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            ceiling: INITIAL_BACKOFF.min(max),
            max,
            attempts: 0,
        }
    }

    /// Sleeps a random time in [0, ceiling], then doubles the ceiling. Returns
    /// [`SinkError::Stopped`] as soon as the shutdown fires.
    async fn pause(&mut self, stop: &mut Shutdown) -> Result<(), SinkError> {
        use rand::Rng;
        if stop.is_shutdown() {
            return Err(SinkError::Stopped);
        }
        self.attempts += 1;
        let pause = rand::rng().random_range(Duration::ZERO..=self.ceiling);
        self.ceiling = (self.ceiling * 2).min(self.max);
        tokio::select! {
            _ = tokio::time::sleep(pause) => Ok(()),
            _ = stop.recv() => Err(SinkError::Stopped),
        }
    }
}

impl InfluxSink {
    /// Checks the configuration (no network yet) and builds the HTTP client.
    pub fn new(cfg: InfluxConfig, metrics: ConsumerMetrics) -> anyhow::Result<Self> {
        use anyhow::{bail, Context};
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
        let write_url = match cfg.api {
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
        };
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

    /// Makes sure writes can succeed before the first one: v1 creates the database if it is
    /// missing and checks the retention policy; v2 checks that the bucket exists in the org.
    /// Retries while InfluxDB is unreachable or failing; [`SinkError::Fatal`] when it answers
    /// that the configuration is wrong.
    pub async fn prepare(&self, stop: &Shutdown) -> Result<(), SinkError> {
        let mut stop = stop.clone();
        let mut backoff = Backoff::new(self.inner.cfg.max_backoff);
        loop {
            let attempt = match self.inner.cfg.api {
                InfluxApi::V1 => self.prepare_v1().await,
                InfluxApi::V2 => self.prepare_v2().await,
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(Prepare::Fatal(why)) => {
                    tracing::error!(error = %why, "InfluxDB is not usable as configured");
                    return Err(SinkError::Fatal(why));
                }
                Err(Prepare::Retry(why)) => {
                    tracing::warn!(error = %why, attempt = backoff.attempts + 1,
                        "InfluxDB not ready yet; retrying");
                    backoff.pause(&mut stop).await?;
                }
            }
        }
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

    /// Writes `points`, `batch_points` per request. Returns once InfluxDB accepted every
    /// point except those in [`WriteOutcome::rejected`]; retries transient failures until
    /// then, or until `stop` fires ([`SinkError::Stopped`]: some points may have been
    /// written, which a later re-write makes whole, since points are idempotent upserts).
    pub async fn write(
        &self,
        points: &[Point],
        stop: &Shutdown,
    ) -> Result<WriteOutcome, SinkError> {
        self.write_encoded(&self.encode(points), stop).await
    }

    /// Encodes `points` into request bodies of at most `batch_points` lines each (see
    /// [`EncodedBatch`]). One chunk of points is encoded at a time into a reused buffer, so
    /// the whole batch never exists as uncompressed text.
    ///
    /// A batch of more than `batch_points` points is cut into requests of equal size whose
    /// number is a multiple of `concurrency`, so the batch's last round of requests keeps
    /// InfluxDB as busy as the others: 22,850 points at 5,000 and 2 in flight are 6
    /// requests of 3,809 (3 full rounds), not 4 of 5,000 and a lone 2,850. (On its own this
    /// measured within noise on the benchmark: there the consumer then waited on fetches,
    /// see `fetch.wait.max.ms` in `batch`.)
    pub fn encode(&self, points: &[Point]) -> EncodedBatch {
        let cfg = &self.inner.cfg;
        let mut requests = points.len().div_ceil(cfg.batch_points.max(1));
        if requests > 1 {
            requests = requests.next_multiple_of(cfg.concurrency.max(1));
        }
        let per_request = points.len().div_ceil(requests.max(1)).max(1);
        let mut batch = EncodedBatch {
            lines: Vec::with_capacity(points.len()),
            ..EncodedBatch::default()
        };
        let mut chunk_text = EncodedPoints::default();
        for (n, chunk) in points.chunks(per_request).enumerate() {
            let offset = n * per_request;
            chunk_text.refill(chunk);
            batch.empty += chunk_text.empty;
            for (i, err) in &chunk_text.unencodable {
                tracing::warn!(error = %err, "point cannot be encoded as line protocol; rejecting it");
                batch.unencodable.push(RejectedPoint {
                    index: offset + i,
                    line: format!("{:?}", chunk[*i]),
                    error: err.to_string(),
                });
            }
            if chunk_text.lines.is_empty() {
                continue;
            }
            let first = batch.lines.len();
            batch
                .lines
                .extend(chunk_text.lines.iter().map(|l| EncodedLine {
                    point: offset + l.point,
                    ..l.clone()
                }));
            batch.requests.push(RequestBody {
                lines: first..batch.lines.len(),
                body: self.request_body(&chunk_text.text),
            });
        }
        batch
    }

    /// [`InfluxSink::write`] of a batch encoded earlier: the batch loop encodes a batch as
    /// soon as it is aggregated and drops the points.
    pub async fn write_encoded(
        &self,
        batch: &EncodedBatch,
        stop: &Shutdown,
    ) -> Result<WriteOutcome, SinkError> {
        let mut outcome = WriteOutcome {
            written: 0,
            rejected: batch.unencodable.clone(),
            empty: batch.empty,
        };
        // Up to `concurrency` requests in flight: InfluxDB ingests on several cores, and one
        // request at a time leaves it idle while the next body is built and sent.
        let parts: Vec<WriteOutcome> = stream::iter(0..batch.requests.len())
            .map(|i| {
                let mut stop = stop.clone();
                let request = &batch.requests[i];
                async move {
                    let mut part = WriteOutcome::default();
                    self.write_request(batch, request, &mut stop, &mut part)
                        .await
                        .map(|()| part)
                }
            })
            .buffer_unordered(self.inner.cfg.concurrency.max(1))
            .try_collect()
            .await?;
        for part in parts {
            outcome.written += part.written;
            outcome.rejected.extend(part.rejected);
        }
        outcome.rejected.sort_by_key(|r| r.index);
        Ok(outcome)
    }

    /// Sends one prepared request; if InfluxDB rejects lines of it, unpacks its text and
    /// isolates them.
    async fn write_request(
        &self,
        batch: &EncodedBatch,
        request: &RequestBody,
        stop: &mut Shutdown,
        outcome: &mut WriteOutcome,
    ) -> Result<(), SinkError> {
        let lines = &batch.lines[request.lines.clone()];
        match self.send_until_settled(&request.body, stop).await? {
            Settled::Accepted => {
                self.count_written(lines);
                outcome.written += lines.len();
                Ok(())
            }
            Settled::Rejected(message) => {
                // The lines' spans index this request's own text.
                let encoded = EncodedPoints {
                    text: self.unpack(&request.body),
                    lines: lines.to_vec(),
                    ..EncodedPoints::default()
                };
                let all = 0..encoded.lines.len();
                self.write_bisecting(&encoded, all, Some(message), stop, outcome)
                    .await
            }
        }
    }

    /// Writes the lines `range` of `encoded`; when InfluxDB rejects some of them, halves the
    /// request until the rejected lines stand alone.
    /// `rejected` is InfluxDB's answer to the whole range, when it was already sent.
    async fn write_bisecting(
        &self,
        encoded: &EncodedPoints,
        range: Range<usize>,
        mut rejected: Option<String>,
        stop: &mut Shutdown,
        outcome: &mut WriteOutcome,
    ) -> Result<(), SinkError> {
        let mut pending = vec![range];
        let mut bisecting = false;
        while let Some(lines) = pending.pop() {
            let settled = match rejected.take() {
                Some(message) => Settled::Rejected(message),
                None => {
                    let body = self.request_body(encoded.body(lines.clone()));
                    self.send_until_settled(&body, stop).await?
                }
            };
            match settled {
                Settled::Accepted => {
                    self.count_written(&encoded.lines[lines.clone()]);
                    outcome.written += lines.len();
                }
                Settled::Rejected(message) if lines.len() == 1 => {
                    let line = encoded.line_str(lines.start);
                    tracing::warn!(%line, error = %message, "InfluxDB rejected a point");
                    outcome.rejected.push(RejectedPoint {
                        index: encoded.lines[lines.start].point,
                        line,
                        error: message,
                    });
                }
                Settled::Rejected(message) => {
                    if !bisecting {
                        tracing::warn!(points = lines.len(), error = %message,
                            "InfluxDB rejected a write; isolating the offending points");
                        bisecting = true;
                    }
                    let mid = lines.start + lines.len() / 2;
                    // Stack: the first half is written first.
                    pending.push(mid..lines.end);
                    pending.push(lines.start..mid);
                }
            }
        }
        Ok(())
    }

    /// Sends one request body until InfluxDB gives an answer about its lines. Transient
    /// failures are retried.
    async fn send_until_settled(
        &self,
        body: &[u8],
        stop: &mut Shutdown,
    ) -> Result<Settled, SinkError> {
        let mut backoff = Backoff::new(self.inner.cfg.max_backoff);
        loop {
            let started = Instant::now();
            let (kind, why) = match self.post(body).await {
                Answer::Accepted => {
                    let m = &self.inner.metrics;
                    m.write_duration.observe(started.elapsed().as_secs_f64());
                    m.last_write.set(unix_now_secs());
                    return Ok(Settled::Accepted);
                }
                Answer::LinesRejected(message) => {
                    self.inner
                        .metrics
                        .write_errors
                        .with_label_values(&[FailureKind::Client.label()])
                        .inc();
                    return Ok(Settled::Rejected(message));
                }
                Answer::DatabaseMissing(why) => {
                    tracing::warn!(db = %self.inner.cfg.db, error = %why,
                        "InfluxDB database disappeared; creating it again");
                    if let Err(e) = self.create_database().await {
                        tracing::warn!(error = %e.message(), "could not create the database");
                    }
                    (FailureKind::Client, why)
                }
                Answer::Retry(kind, why) => (kind, why),
            };
            let m = &self.inner.metrics;
            m.write_errors.with_label_values(&[kind.label()]).inc();
            m.write_retries.inc();
            if kind == FailureKind::Client {
                tracing::error!(error = %why, attempt = backoff.attempts + 1,
                    "InfluxDB refused the write request as a whole (credentials, org, bucket?); retrying");
            } else {
                tracing::warn!(kind = kind.label(), error = %why, attempt = backoff.attempts + 1,
                    "InfluxDB write failed; retrying");
            }
            backoff.pause(stop).await?;
        }
    }

    /// The lines' text of a body built by [`InfluxSink::request_body`].
    fn unpack(&self, body: &[u8]) -> Vec<u8> {
        if !self.inner.cfg.gzip {
            return body.to_vec();
        }
        let mut text = Vec::with_capacity(body.len() * 6);
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut text)
            .expect("a body this sink gzipped itself decompresses");
        text
    }

    fn request_body(&self, lines: &[u8]) -> Vec<u8> {
        if !self.inner.cfg.gzip {
            return lines.to_vec();
        }
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(lines.len() / 4),
            flate2::Compression::fast(),
        );
        gz.write_all(lines)
            .and_then(|()| gz.finish())
            .expect("gzip into a Vec cannot fail")
    }

    /// One write request, classified.
    async fn post(&self, body: &[u8]) -> Answer {
        let mut req = self
            .inner
            .client
            .post(self.inner.write_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_vec());
        if self.inner.cfg.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let resp = match self.authorize(req).send().await {
            Ok(resp) => resp,
            Err(e) => return Answer::Retry(transport_kind(&e), error_chain(&e)),
        };
        let status = resp.status();
        if status.is_success() {
            return Answer::Accepted;
        }
        let message = error_message(resp).await;
        match status {
            StatusCode::TOO_MANY_REQUESTS => Answer::Retry(FailureKind::Server, message),
            StatusCode::REQUEST_TIMEOUT => Answer::Retry(FailureKind::Timeout, message),
            s if s.is_server_error() => Answer::Retry(FailureKind::Server, message),
            // The lines themselves: unparsable, type conflicts, outside retention, too big.
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY => Answer::LinesRejected(message),
            StatusCode::NOT_FOUND
                if self.inner.cfg.api == InfluxApi::V1
                    && message.contains("database not found") =>
            {
                Answer::DatabaseMissing(message)
            }
            _ => Answer::Retry(FailureKind::Client, format!("{status}: {message}")),
        }
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let cfg = &self.inner.cfg;
        match (&cfg.token, &cfg.username) {
            (Some(token), _) => {
                req.header(reqwest::header::AUTHORIZATION, format!("Token {token}"))
            }
            (None, Some(user)) => req.basic_auth(user, cfg.password.as_ref()),
            (None, None) => req,
        }
    }

    fn base(&self) -> Url {
        Url::parse(&self.inner.cfg.url).expect("checked by InfluxSink::new")
    }

    fn count_written(&self, lines: &[EncodedLine]) {
        let mut candles = 0;
        let mut indicators = 0;
        for line in lines {
            if line.measurement == crate::point::CANDLE_MEASUREMENT {
                candles += 1;
            } else {
                indicators += 1;
            }
        }
        let written = &self.inner.metrics.points_written;
        for (measurement, n) in [
            (crate::point::CANDLE_MEASUREMENT, candles),
            (crate::point::INDICATOR_MEASUREMENT, indicators),
        ] {
            if n > 0 {
                written.with_label_values(&[measurement]).inc_by(n);
            }
        }
    }

    async fn prepare_v1(&self) -> Result<(), Prepare> {
        let cfg = &self.inner.cfg;
        let databases = self.influxql("SHOW DATABASES").await?;
        if !first_column(&databases).iter().any(|d| d == &cfg.db) {
            self.create_database().await?;
            tracing::info!(db = %cfg.db, "created the InfluxDB database");
        }
        if let Some(rp) = &cfg.retention_policy {
            let policies = self
                .influxql(&format!(
                    "SHOW RETENTION POLICIES ON {}",
                    quote_ident(&cfg.db)
                ))
                .await?;
            if !first_column(&policies).iter().any(|p| p == rp) {
                return Err(Prepare::Fatal(format!(
                    "retention policy {rp:?} does not exist on database {:?}; create it or drop \
                     the retention policy setting",
                    cfg.db
                )));
            }
        }
        Ok(())
    }

    async fn create_database(&self) -> Result<(), Prepare> {
        self.influxql(&format!(
            "CREATE DATABASE {}",
            quote_ident(&self.inner.cfg.db)
        ))
        .await
        .map(drop)
    }

    /// Runs one InfluxQL statement (v1 `/query`) and returns its first result.
    async fn influxql(&self, statement: &str) -> Result<serde_json::Value, Prepare> {
        let url = endpoint(&self.base(), &["query"], &[]);
        let req = self.inner.client.post(url).form(&[("q", statement)]);
        let resp = self
            .authorize(req)
            .send()
            .await
            .map_err(|e| Prepare::Retry(format!("{statement}: {}", error_chain(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            let message = error_message(resp).await;
            let why = format!("{statement}: InfluxDB answered {status}: {message}");
            return Err(
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    Prepare::Retry(why)
                } else {
                    Prepare::Fatal(why)
                },
            );
        }
        let json = json_body(resp).await.map_err(|e| {
            Prepare::Fatal(format!(
                "{statement}: InfluxDB answered non-JSON ({e}); is --influx-url an InfluxDB?"
            ))
        })?;
        let result = json["results"][0].clone();
        if let Some(err) = result.get("error").and_then(|e| e.as_str()) {
            return Err(Prepare::Fatal(format!("{statement}: {err}")));
        }
        Ok(result)
    }

    async fn prepare_v2(&self) -> Result<(), Prepare> {
        let cfg = &self.inner.cfg;
        let org = cfg.org.as_deref().unwrap_or_default();
        let url = endpoint(
            &self.base(),
            &["api", "v2", "buckets"],
            &[("name", &cfg.bucket), ("org", org)],
        );
        let resp = self
            .authorize(self.inner.client.get(url))
            .send()
            .await
            .map_err(|e| Prepare::Retry(error_chain(&e)))?;
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Prepare::Retry(format!(
                "bucket lookup: {status}: {}",
                error_message(resp).await
            )));
        }
        if !status.is_success() {
            return Err(Prepare::Fatal(format!(
                "looking up bucket {:?} in organization {org:?}: InfluxDB answered {status}: {}",
                cfg.bucket,
                error_message(resp).await
            )));
        }
        let json = json_body(resp)
            .await
            .map_err(|e| Prepare::Fatal(format!("bucket lookup answered non-JSON: {e}")))?;
        let found = json["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["name"].as_str() == Some(cfg.bucket.as_str()));
        if found {
            Ok(())
        } else {
            Err(Prepare::Fatal(format!(
                "bucket {:?} not found in organization {org:?}; create it (influx bucket create \
                 --name {} --org {org}) or fix --influx-bucket/--influx-org",
                cfg.bucket, cfg.bucket
            )))
        }
    }
}

/// Why a [`InfluxSink::prepare`] attempt failed.
enum Prepare {
    Retry(String),
    Fatal(String),
}

impl Prepare {
    fn message(&self) -> &str {
        match self {
            Prepare::Retry(m) | Prepare::Fatal(m) => m,
        }
    }
}

/// The largest InfluxDB answer read (query results here are database and policy names,
/// errors a line): a larger one is a broken server or proxy, and is not read further.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// A response body as JSON (without reqwest's `json` feature), at most
/// [`MAX_RESPONSE_BYTES`] of it.
async fn json_body(resp: reqwest::Response) -> Result<serde_json::Value, String> {
    let bytes = read_capped(resp, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::Transport(e) => error_chain(&e),
            too_large => too_large.to_string(),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// `base` + path segments + query, keeping any path prefix of `base`.
fn endpoint(base: &Url, path: &[&str], query: &[(&str, &str)]) -> Url {
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

/// An InfluxQL double-quoted identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The first column of every row of an InfluxQL result (database or policy names).
fn first_column(result: &serde_json::Value) -> Vec<String> {
    result["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(|row| row[0].as_str().map(str::to_owned))
        .collect()
}

/// InfluxDB's error message from an error response: `{"error": ...}` (1.x), `{"message": ...}`
/// (2.x), or the start of whatever else it sent.
async fn error_message(resp: reqwest::Response) -> String {
    let header = resp
        .headers()
        .get("X-Influxdb-Error")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let body = text_capped(resp, MAX_RESPONSE_BYTES)
        .await
        .unwrap_or_else(|e| e.to_string());
    let from_json = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
    from_json.or(header).unwrap_or_else(|| {
        let mut text = body.trim().to_owned();
        if text.len() > MAX_ERROR_BODY {
            let mut cut = MAX_ERROR_BODY;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    })
}

fn transport_kind(e: &reqwest::Error) -> FailureKind {
    if e.is_timeout() {
        FailureKind::Timeout
    } else {
        // Refused, reset, closed mid-request, DNS: all "could not talk to InfluxDB".
        FailureKind::Connect
    }
}

/// An error with its causes ("error sending request: connection refused"), for logs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn unix_now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn identifiers_are_quoted_for_influxql() {
        assert_eq!(quote_ident(r#"my "db"\x"#), r#""my \"db\"\\x""#);
    }

    #[tokio::test]
    async fn backoff_grows_to_the_cap_and_wakes_on_shutdown() {
        let (trigger, mut stop) = candlepipe_runtime::shutdown::channel();
        let mut backoff = Backoff::new(Duration::from_millis(3));
        for _ in 0..5 {
            backoff.pause(&mut stop).await.unwrap();
        }
        assert_eq!(backoff.ceiling, Duration::from_millis(3));
        assert_eq!(backoff.attempts, 5);
        // A pause of up to an hour ends as soon as the shutdown fires.
        let mut long = Backoff::new(Duration::from_secs(3600));
        long.ceiling = Duration::from_secs(3600);
        let mut waiting = stop.clone();
        let pause = tokio::spawn(async move { long.pause(&mut waiting).await });
        trigger.fire();
        assert!(matches!(pause.await.unwrap(), Err(SinkError::Stopped)));
        assert!(matches!(
            backoff.pause(&mut stop).await,
            Err(SinkError::Stopped)
        ));
    }
}
