//! # candlepipe-model
//!
//! Everything a candle *is* in candlepipe, declared once and shared by the producer, the
//! consumer, datagen and the tests, so none of them can disagree about the wire format:
//!
//! * [`candle`]: the 1-minute [`Candle`] and the rollup [`Interval`]s.
//! * [`codec`]: the Kafka message value, JSON schema version 1 (see the README's contract).
//! * [`validate`]: the rules a candle must satisfy before anything downstream trusts it.
//! * [`time`]: the wall clock in Unix ms, durations and instants parsed from flags, and
//!   readable timestamps.
//!
//! It is pure data: no async runtime, no Kafka client, no HTTP, no metrics. A tool that only
//! reads or writes candles (`datagen`) links this crate and nothing heavier; the runtime
//! pieces both services share live in `candlepipe-runtime`.
//!
//! With the `parquet` feature, [`repack`] rewrites a parquet candle file with small pages:
//! the producer's replay cache and `datagen --repack-from` share it (the consumer does not
//! build parquet).

pub mod candle;
pub mod codec;
#[cfg(feature = "parquet")]
pub mod repack;
pub mod time;
pub mod validate;

pub use candle::{Candle, Interval, Source};
pub use codec::{decode, encode, DecodeError, SCHEMA_VERSION};
pub use validate::InvalidCandle;
