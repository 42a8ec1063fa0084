//! # consumer
//!
//! The micro-batch consumer: reads 1m candles from Kafka in batches (a trigger interval and
//! a maximum size, like Spark Structured Streaming's micro-batches), validates them, keeps
//! each symbol's recent candles, computes 5m/15m/1h rollups and indicators, writes everything
//! to InfluxDB, and only then commits the Kafka offsets. The modules follow a candle's path:
//!
//! `batch` (Kafka, offsets, rebalances) → `model::decode` → `state` (per-symbol history,
//! late data) → `rollup` + `window_series` + `indicator` → `point` → `lineproto` → `sink` (InfluxDB), with
//! `dlq` for what cannot be processed, `metrics` for what an operator sees (updated only
//! through `events`, one type per observable event), and `watch` for lag, stalls and the
//! topic's existence, from the broker. `lineproto_parse`, the reference parser that tests
//! and fuzz checks read the encoder's lines back with, is not part of the binary (cargo
//! feature `test-support`).

pub mod batch;
pub mod config;
pub mod dlq;
pub mod events;
pub mod indicator;
pub mod late;
pub mod lineproto;
#[cfg(any(test, feature = "test-support"))]
pub mod lineproto_parse;
pub mod metrics;
pub mod point;
pub mod rollup;
pub mod sink;
pub mod state;
pub mod watch;
pub mod window_series;
