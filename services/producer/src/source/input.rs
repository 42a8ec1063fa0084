//! What the dataset folder holds, as the merge's inputs: one [`Input`] per symbol, either a
//! parquet file (`BTC-USDT.parquet`, the Kaggle layout) or a symbol's Binance kline files
//! (`BTCUSDT-1m-2024-01.zip`, `...-2024-02-01.csv`, ...; see `klines.rs`).
//!
//! [`list`] finds the files, applies `--symbols`, checks every file up front (a bad file
//! fails here, or with `--skip-bad-files` is logged, counted and left out) and groups the
//! kline files by symbol. The merge sees only [`Input`] and [`InputCursor`]: a symbol, a
//! row count, a time range, and a cursor handing out candles in time order.

use crate::source::file_error::FileError;
use crate::source::klines::{self, KlineCursor, KlineFile, KlineSeries};
use crate::source::parquet::{CandleFile, FileCursor};
use crate::source::replay_error::ReplayError;
use crate::source::replay_options::ReplayOptions;
use crate::source::row::Window;
use crate::source::stats::ReplayStats;
use candlepipe_model::Candle;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One symbol of the replay.
#[derive(Debug, Clone)]
pub enum Input {
    Parquet(CandleFile),
    Klines(KlineSeries),
}

impl Input {
    pub fn symbol(&self) -> &str {
        match self {
            Input::Parquet(f) => &f.symbol,
            Input::Klines(s) => &s.symbol,
        }
    }

    /// The parquet file, or the series' first kline file.
    pub fn path(&self) -> &Path {
        match self {
            Input::Parquet(f) => &f.path,
            Input::Klines(s) => &s.files()[0].path,
        }
    }

    /// Rows for the progress figure (parquet: from the footer; klines: see
    /// [`KlineSeries::rows`]).
    pub fn rows(&self) -> u64 {
        match self {
            Input::Parquet(f) => f.rows,
            Input::Klines(s) => s.rows(),
        }
    }

    /// No candle is before this (when known).
    pub fn first_ms(&self) -> Option<i64> {
        match self {
            Input::Parquet(f) => f.first_ms,
            Input::Klines(s) => Some(s.first_ms()),
        }
    }

    /// No candle is after this (when known).
    pub fn last_ms(&self) -> Option<i64> {
        match self {
            Input::Parquet(f) => f.last_ms,
            Input::Klines(s) => Some(s.last_ms()),
        }
    }

    /// Starts streaming the input's candles within `window`.
    pub fn open(&self, window: Window) -> Result<InputCursor, FileError> {
        Ok(match self {
            Input::Parquet(f) => InputCursor::Parquet(Box::new(f.open(window)?)),
            Input::Klines(s) => InputCursor::Klines(s.open(window)),
        })
    }
}

/// An open [`Input`]. (A parquet cursor is large, with its decoder state: boxed.)
pub enum InputCursor {
    Parquet(Box<FileCursor>),
    Klines(KlineCursor),
}

impl InputCursor {
    /// The next good candle in the window; `None` at the end. See
    /// [`FileCursor::next_candle`] and [`KlineCursor::next_candle`].
    pub fn next_candle(&mut self, stats: &ReplayStats) -> Result<Option<Candle>, FileError> {
        match self {
            InputCursor::Parquet(c) => c.next_candle(stats),
            InputCursor::Klines(c) => c.next_candle(stats),
        }
    }

    /// Rows taken out so far, in the unit of [`Input::rows`].
    pub fn rows_read(&self) -> u64 {
        match self {
            InputCursor::Parquet(c) => c.rows_read(),
            InputCursor::Klines(c) => c.rows_read(),
        }
    }

    /// The file being read: the one an error is about.
    pub fn path(&self) -> &Path {
        match self {
            InputCursor::Parquet(c) => c.path(),
            InputCursor::Klines(c) => c.path(),
        }
    }
}

/// The kind of a dataset file, by extension; `None` for files the replay ignores.
fn kind(path: &Path) -> Option<Kind> {
    let extension = path.extension()?.to_str()?;
    if extension == "parquet" {
        Some(Kind::Parquet)
    } else if klines::is_kline_extension(extension) {
        Some(Kind::Klines)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Parquet,
    Klines,
}

/// The symbol a file's name gives: a parquet file's stem, a kline name's mapped symbol
/// (`None` when the name is not a kline name; inspecting the file says why).
fn symbol_by_name(path: &Path, kind: Kind) -> Option<String> {
    match kind {
        Kind::Parquet => path.file_stem().map(|s| s.to_string_lossy().into_owned()),
        Kind::Klines => klines::symbol_of(path),
    }
}

/// Lists, filters and checks the dataset folder (see the module docs). Bad files are
/// errors, or with `skip_bad_files` counted in `stats` and left out.
pub fn list(opts: &ReplayOptions, stats: &ReplayStats) -> Result<Listing, ReplayError> {
    let dir = &opts.dataset;
    let dataset_err = |source| ReplayError::Dataset {
        path: dir.clone(),
        cause: source,
    };
    let mut files: Vec<(PathBuf, Kind)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dataset_err)? {
        let path = entry.map_err(dataset_err)?.path();
        if let Some(kind) = kind(&path) {
            files.push((path, kind));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    if files.is_empty() {
        return Err(ReplayError::NoFiles(dir.clone()));
    }
    if let Some(wanted) = opts.symbols.as_ref().filter(|s| !s.is_empty()) {
        let named: Vec<Option<String>> = files
            .iter()
            .map(|(path, kind)| symbol_by_name(path, *kind))
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|w| !named.iter().any(|n| n.as_deref() == Some(w.as_str())))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(ReplayError::UnknownSymbols {
                dir: dir.clone(),
                missing,
            });
        }
        files = files
            .into_iter()
            .zip(named)
            .filter(|(_, symbol)| symbol.as_ref().is_some_and(|s| wanted.contains(s)))
            .map(|(file, _)| file)
            .collect();
    }

    let mut parquet = Vec::new();
    let mut series: BTreeMap<String, Vec<KlineFile>> = BTreeMap::new();
    for (path, kind) in files {
        let checked = match kind {
            Kind::Parquet => CandleFile::inspect(&path).map(|f| parquet.push(f)),
            Kind::Klines => KlineFile::inspect(&path)
                .map(|(symbol, file)| series.entry(symbol).or_default().push(file)),
        };
        match checked {
            Ok(()) => {}
            Err(source) if opts.skip_bad_files => {
                tracing::warn!(file = %path.display(), "skipping bad file {}: {source}", path.display());
                stats.note_bad_file();
            }
            Err(cause) => return Err(ReplayError::File { path, cause }),
        }
    }
    if let Some(p) = parquet.iter().find(|p| series.contains_key(&p.symbol)) {
        return Err(ReplayError::MixedSymbol {
            symbol: p.symbol.clone(),
            parquet: p.path.clone(),
            klines: series[&p.symbol][0].path.clone(),
        });
    }
    let klines = series
        .into_iter()
        .map(|(symbol, files)| KlineSeries::new(symbol, files))
        .collect();
    Ok(Listing { parquet, klines })
}

/// The checked files of the dataset, by kind.
#[derive(Debug)]
pub struct Listing {
    /// One per symbol, in path order.
    pub parquet: Vec<CandleFile>,
    /// One per symbol (no symbol has both), in symbol order.
    pub klines: Vec<KlineSeries>,
}

impl Listing {
    /// The merge's inputs, in symbol order.
    pub fn into_inputs(self) -> Vec<Input> {
        let mut inputs: Vec<Input> = self
            .parquet
            .into_iter()
            .map(Input::Parquet)
            .chain(self.klines.into_iter().map(Input::Klines))
            .collect();
        inputs.sort_by(|a, b| a.symbol().cmp(b.symbol()));
        inputs
    }
}
