//! Why the replay cannot start or go on: raised by the dataset listing (`input.rs`), the
//! merge (`merge.rs`) and the replay itself (`replay.rs`), so it lives below all three.

use crate::source::cache::CacheError;
use crate::source::file_error::FileError;
use candlepipe_model::time::fmt_ms;
use std::path::PathBuf;
use thiserror::Error;

/// Why the replay cannot start or go on.
#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("dataset folder {}: {cause}", path.display())]
    Dataset {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("no *.parquet, *.csv or *.zip files in dataset folder {}", .0.display())]
    NoFiles(PathBuf),
    #[error("symbols {missing:?} have no file in {} (expected e.g. {}/{}.parquet, or Binance kline files such as BTCUSDT-1m-2024-01.zip for BTC-USDT)", dir.display(), dir.display(), missing[0])]
    UnknownSymbols { dir: PathBuf, missing: Vec<String> },
    #[error("symbol {symbol} is in both {} and Binance kline files ({} ...): keep one kind of file per symbol", parquet.display(), klines.display())]
    MixedSymbol {
        symbol: String,
        parquet: PathBuf,
        klines: PathBuf,
    },
    #[error("--start {} is not before --end {}", fmt_ms(*start), fmt_ms(*end))]
    EmptyWindow { start: i64, end: i64 },
    #[error("every *.parquet, *.csv and *.zip file in {} is unreadable ({skipped} skipped)", dir.display())]
    NothingReadable { dir: PathBuf, skipped: u64 },
    #[error("{}: {cause}", path.display())]
    File { path: PathBuf, cause: FileError },
    #[error(transparent)]
    Cache(#[from] CacheError),
}
