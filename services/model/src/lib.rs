//! # candlepipe-model
//!
//! Everything a candle *is* in candlepipe, declared once and shared by the producer and the
//! consumer so the two can never disagree about the wire format:
//!
//! * [`candle`]: the 1-minute [`Candle`] and the rollup [`Interval`]s.
//! * [`codec`]: the Kafka message value, JSON schema version 1 (see the README's contract).
//! * [`validate`]: the rules a candle must satisfy before anything downstream trusts it.
//!
//! It also holds the few runtime pieces both binaries need in exactly the same shape:
//! [`shutdown`] (one signal fan-out passed to every task), [`http`] (the `/metrics`,
//! `/healthz`, `/readyz` server), [`telemetry`] (tracing setup), [`kafka`] (client settings
//! and topic creation; [`kafka_log`] keeps librdkafka's own reports readable), [`time`] (minute arithmetic and duration parsing) and [`alloc`]
//! (glibc malloc settings that keep RSS near what is live); [`errlog`] turns a flood of
//! repeated errors into a summary line per kind per interval; [`secret`] reads the
//! `*_FILE` variants of secrets (the Docker-secrets convention).
//!
//! With the `http-client` feature, [`http_body`] reads HTTP response bodies with a size cap
//! (both binaries' HTTP clients use it).
//!
//! With the `parquet` feature, [`repack`] rewrites a parquet candle file with small pages:
//! the producer's replay cache and `datagen --repack-from` share it (the consumer does not
//! build parquet).

pub mod alloc;
pub mod candle;
pub mod codec;
pub mod errlog;
pub mod http;
#[cfg(feature = "http-client")]
pub mod http_body;
pub mod kafka;
pub mod kafka_log;
#[cfg(any(test, feature = "test-support"))]
pub mod log_capture;
#[cfg(feature = "parquet")]
pub mod repack;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod time;
pub mod validate;

pub use candle::{Candle, Interval, Source};
pub use codec::{decode, encode, DecodeError, SCHEMA_VERSION};
pub use validate::InvalidCandle;
