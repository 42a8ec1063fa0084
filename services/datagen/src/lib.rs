//! # candlepipe-datagen
//!
//! Synthetic Binance 1m candles, written exactly as the Kaggle "binance-full-history" files
//! are, so the bundled `dataset/` can ship without anyone's market data and tests can make
//! as many files of any shape as they need.
//!
//! * [`market`]: the simulation that produces each pair's [`Kline`]s (random walk with
//!   volatility clustering, intraday volume profile, gaps), deterministic per seed.
//! * [`layout`]: writes candles as parquet in the Kaggle schema ([`FileLayout::KAGGLE`]) or
//!   one of the variants the replay reader also accepts.
//!
//! The `datagen` binary wraps [`write_dataset`], and `candlepipe_model::repack` for
//! `--repack-from`; `dataset/README.md` has the command that produced the bundled files.

pub mod layout;
pub mod market;

pub use layout::{
    write_klines, FileLayout, FloatWidth, TimeColumn, TradesType, WriteError, WriteOptions,
};
pub use market::{klines, Kline, KlineStream, MarketOptions, PairSpec};

use std::path::{Path, PathBuf};

/// Writes one `SYMBOL.parquet` per pair into `dir` (created if missing) and returns the
/// paths with their row counts. Pairs are generated and written one at a time.
pub fn write_dataset(
    dir: &Path,
    pairs: &[PairSpec],
    market: &MarketOptions,
    layout: &FileLayout,
    options: &WriteOptions,
) -> Result<Vec<(PathBuf, u64)>, WriteError> {
    std::fs::create_dir_all(dir).map_err(|source| WriteError::Io {
        path: dir.to_owned(),
        source,
    })?;
    pairs
        .iter()
        .map(|pair| {
            let path = dir.join(format!("{}.parquet", pair.symbol));
            let rows = write_klines(&path, layout, options, klines(pair, market))?;
            Ok((path, rows))
        })
        .collect()
}
