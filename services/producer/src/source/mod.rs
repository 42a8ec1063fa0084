//! Where candles come from. Each source produces [`Candle`](candlepipe_model::Candle)s in
//! order and hands them to the Kafka sink.
//!
//! * [`replay`]: the parquet dataset, played back in time order and paced. It is built
//!   from `parquet` (one file, streamed), `merge` (all files, one time-ordered stream)
//!   and `pacing` (when each candle is due and which timestamp it carries); only `replay`
//!   is public.
//! * [`live`]: the Yahoo Finance chart API.

pub mod live;
pub(crate) mod merge;
pub(crate) mod pacing;
pub(crate) mod parquet;
pub mod replay;
