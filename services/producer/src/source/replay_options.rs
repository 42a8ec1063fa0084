//! What the replay is told by the command line. The dataset listing (`input.rs`) and the
//! replay (`replay.rs`) both read it, so it lives below both.

use crate::source::cache;
use crate::source::pacing::Speed;
use std::path::PathBuf;
use std::time::Duration;

/// Everything the replay is told by the command line (the README's Configuration table
/// lists the flags).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Folder holding `BASE-QUOTE.parquet` files and/or Binance kline files
    /// (`BTCUSDT-1m-2024-01.zip`, `.csv`, monthly or daily; see `klines.rs`) (`--dataset`).
    pub dataset: PathBuf,
    /// Only these symbols (parquet file stems, kline files' mapped symbols); `None` or
    /// empty = every file (`--symbols`).
    pub symbols: Option<Vec<String>>,
    /// First original open time replayed, Unix ms, inclusive (`--start`).
    pub start: Option<i64>,
    /// Original open times from here on are not replayed, Unix ms, exclusive (`--end`).
    pub end: Option<i64>,
    /// Pacing (`--speed`).
    pub speed: Speed,
    /// Start over when the dataset is done (`--loop`).
    pub looping: bool,
    /// Shift timestamps so the replay looks live (`--rebase`).
    pub rebase: bool,
    /// How much of the dataset lands in the past under rebase (`--backfill`).
    pub backfill: Duration,
    /// Log, count and skip unreadable files instead of failing (`--skip-bad-files`).
    pub skip_bad_files: bool,
    /// Where small-page copies of large-page files go (`--replay-cache`); `None` =
    /// `<dataset>/.candlepipe-cache` (see `cache.rs`).
    pub cache_dir: Option<PathBuf>,
    /// Bytes of decompressed pages all open files may hold together; files that would not
    /// fit are read through a cached copy (`--replay-page-budget`).
    pub page_budget: u64,
}

impl ReplayOptions {
    /// The documented defaults for `dataset`: speed 60, loop, rebase, 24h backfill.
    pub fn new(dataset: impl Into<PathBuf>) -> Self {
        ReplayOptions {
            dataset: dataset.into(),
            symbols: None,
            start: None,
            end: None,
            speed: Speed::Factor(60.0),
            looping: true,
            rebase: true,
            backfill: Duration::from_secs(24 * 3600),
            skip_bad_files: false,
            cache_dir: None,
            page_budget: cache::DEFAULT_PAGE_BUDGET,
        }
    }
}
