//! # candlepipe-runtime
//!
//! The runtime pieces the producer and the consumer need in exactly the same shape, kept
//! apart from `candlepipe-model` so that a tool which only handles candles (`datagen`)
//! does not link an async runtime, a Kafka client or an HTTP server:
//!
//! * [`entry`]: the opening of both `main`s (malloc, runtime, logging, flags, secrets, exit
//!   code).
//! * [`shutdown`]: one signal fan-out passed to every task.
//! * [`http`]: the `/metrics`, `/healthz`, `/readyz` server.
//! * [`telemetry`]: tracing setup and the exit code of a run.
//! * [`kafka`]: client settings, the idempotent producer's settings, and topic creation;
//!   [`kafka_log`] keeps librdkafka's own reports readable (one client context for all).
//! * [`alloc`]: glibc malloc settings that keep RSS near what is live.
//! * [`errlog`]: a flood of repeated errors turned into a summary line per kind per interval.
//! * [`secret`]: the `*_FILE` variants of secrets (the Docker-secrets convention).
//!
//! With the `http-client` feature, [`http_body`] reads HTTP response bodies with a size cap
//! (both binaries' HTTP clients use it). With `test-support`, `log_capture` captures log
//! lines in memory for other crates' tests.

pub mod alloc;
pub mod entry;
pub mod errlog;
pub mod http;
#[cfg(feature = "http-client")]
pub mod http_body;
pub mod kafka;
pub mod kafka_log;
#[cfg(any(test, feature = "test-support"))]
pub mod log_capture;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
