//! Where candles come from. Each source produces [`Candle`](candlepipe_model::Candle)s in
//! order and hands them to the Kafka sink.
//!
//! * [`replay`]: the dataset (parquet files and Binance kline CSV/ZIP files), played back
//!   in time order and paced. It is built from `input` (the dataset folder's files, one
//!   input per symbol), `parquet` (one file, streamed), `klines` (a symbol's Binance kline
//!   files, streamed one after the other), `cache` (small-page copies of the files whose
//!   pages are too large for the memory budget), `merge` (all files, one time-ordered
//!   stream), `pacing` (when each candle is due and which timestamp it carries) and
//!   `regular` (only regular files are opened). Below them all: `row` (the row rules every
//!   cursor applies), `file_error` (why a file cannot be read), `stats` (the live
//!   counters), `replay_options` and `replay_error`, so that imports run one way, from
//!   `replay` down. Only `replay` (which re-exports the types callers need) and `cache`
//!   (its counts and errors) are public.
//! * [`live`]: the Yahoo Finance chart API.
//!
//! Both continue after a restart from what the topic already holds: `tail` reads the
//! newest message of each symbol back from the topic; live resumes after its newest closed
//! candle, and `timeline` decides where a replay continues and with which time shift.

pub mod cache;
pub(crate) mod file_error;
pub(crate) mod input;
pub(crate) mod klines;
pub mod live;
pub(crate) mod merge;
pub(crate) mod pacing;
pub(crate) mod parquet;
pub(crate) mod regular;
pub mod replay;
pub(crate) mod replay_error;
pub(crate) mod replay_options;
pub(crate) mod row;
pub(crate) mod stats;
pub(crate) mod tail;
pub(crate) mod timeline;
