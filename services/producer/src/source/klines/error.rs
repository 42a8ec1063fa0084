//! Why a kline file cannot be replayed: raised by the name check (`name.rs`), the
//! container and line reader (`stream.rs`) and the file check (`klines.rs`), and carried
//! inside a [`FileError`](crate::source::file_error::FileError).

use super::line::BadLine;
use thiserror::Error;

/// Why a kline file cannot be replayed (inside a
/// [`FileError`](crate::source::file_error::FileError), after the file's path).
#[derive(Debug, Error)]
pub enum KlineError {
    #[error("file name is not a Binance kline file name (SYMBOL-1m-YYYY-MM or SYMBOL-1m-YYYY-MM-DD, then .csv or .zip)")]
    Name,
    #[error("holds {0} klines; only 1m klines can be replayed")]
    Interval(String),
    #[error("not a readable zip file: {0}")]
    NotZip(zip::result::ZipError),
    #[error("the zip holds {0} files; a Binance kline zip holds one CSV")]
    ZipEntries(usize),
    #[error("the CSV in the zip is {0}; only stored or deflated files can be read")]
    ZipEntry(String),
    #[error("not a Binance kline CSV: line {line}: {problem}")]
    NotKlines { line: u64, problem: BadLine },
    #[error("cannot read past line {line}: {cause}")]
    Read { line: u64, cause: std::io::Error },
}
