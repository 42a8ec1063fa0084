//! # producer
//!
//! Publishes 1m candles to Kafka, keyed by symbol. Two sources feed one Kafka sink:
//! [`source::replay`] (Binance history from parquet or kline CSV/ZIP files, k-way merged
//! by time, paced) and
//! [`source::live`] (Yahoo Finance chart API). [`mode`] runs one at a time ([`mode_choice`]
//! names them) and switches on
//! `POST /mode` ([`admin`]); [`sink`] publishes and confirms every candle, which the sources hand it through
//! [`handoff`]; [`events`] (each writing
//! its log line and bumping its [`metrics`] together) and [`progress`] tell the operator
//! what is happening.

pub mod admin;
pub mod clock;
pub mod config;
pub mod events;
pub mod handoff;
pub mod metrics;
pub mod mode;
pub mod mode_choice;
pub mod progress;
pub mod sink;
pub mod source;
