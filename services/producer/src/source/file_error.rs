//! Why a dataset file cannot be replayed: one error for parquet and kline files alike,
//! raised while a file is inspected or read, and always shown after the file's path.
//! It sits below every reader so that the readers, the merge and the replay can all name
//! it without importing each other.

use crate::source::klines::error::KlineError;
use crate::source::regular::OpenError;
use arrow_schema::{ArrowError, DataType};
use candlepipe_model::InvalidCandle;
use parquet::errors::ParquetError;
use thiserror::Error;

/// Why a file cannot be replayed. Always shown after the file's path.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    #[error("file is empty (0 bytes)")]
    Empty,
    #[error("not a regular file: {0}; only regular files are replayed")]
    NotRegular(String),
    #[error("not a readable parquet file: {0}")]
    NotParquet(ParquetError),
    #[error("holds no rows")]
    NoRows,
    #[error("file name is not a usable symbol: {0}")]
    BadSymbol(InvalidCandle),
    #[error("missing column `{0}`")]
    MissingColumn(&'static str),
    #[error("column `{column}` has type {found}; expected {expected}")]
    WrongType {
        column: &'static str,
        found: DataType,
        expected: &'static str,
    },
    #[error("cannot decode rows from row {row} on: {cause}")]
    Decode { row: u64, cause: ArrowError },
    #[error("cannot set up the reader: {0}")]
    Reader(ParquetError),
    #[error("cannot read it to make its small-page copy for the replay cache: {0}")]
    Convert(String),
    /// A Binance kline file (`klines.rs`) that cannot be read.
    #[error(transparent)]
    Klines(#[from] KlineError),
}

impl From<OpenError> for FileError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Io(e) => FileError::Io(e),
            OpenError::NotRegular(what) => FileError::NotRegular(what),
            OpenError::Empty => FileError::Empty,
        }
    }
}

// The wrapped errors are part of the message, so they are not also a `source()`: a cause
// chain printed with `{:#}` shows each once (see `replay.rs`'s tests). Hence plain `From`s
// instead of thiserror's `#[from]`.
impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> Self {
        FileError::Io(e)
    }
}
