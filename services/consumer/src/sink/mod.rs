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
//!
//! The pieces, in the order a batch meets them: `config` (the settings and their checks),
//! `client` (the HTTP client), `setup` (database or bucket before the first write),
//! `encode` (request bodies, gzip), `write` (concurrent requests and the bisection of a
//! refused one) with `retry` (what an answer means, the backoff), and `error`. Log lines
//! and metrics go through [`crate::events`].

mod client;
mod config;
mod encode;
mod error;
mod retry;
mod setup;
mod write;

pub use client::InfluxSink;
pub use config::{
    InfluxApi, InfluxConfig, DEFAULT_BATCH_POINTS, DEFAULT_CONCURRENCY, DEFAULT_GZIP,
    DEFAULT_MAX_BACKOFF, DEFAULT_REQUEST_TIMEOUT,
};
pub use encode::{EncodedBatch, RejectedPoint};
pub use error::SinkError;
pub use write::WriteOutcome;
