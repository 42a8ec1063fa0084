//! Reading candles out of one Binance-format parquet file, a few hundred rows at a time.
//!
//! A file goes through two steps:
//!
//! 1. [`CandleFile::inspect`] reads only the footer: it checks that the file is parquet,
//!    that the columns the candle needs exist with usable types, and notes the row count and
//!    the first/last `open_time` from the row-group statistics. `ReplaySource::open` does
//!    this for every file up front, so a broken dataset fails before anything is sent.
//! 2. [`CandleFile::open`] starts a [`FileCursor`] that streams the file: the parquet arrow
//!    reader decodes only the projected columns, page by page, into record batches of
//!    [`BATCH_ROWS`] rows, and the cursor turns each row into a validated [`Candle`].
//!
//! Memory per open cursor is what the parquet reader holds for one page of each projected
//! column (the compressed bytes are read and decompressed one page at a time, never the
//! whole column chunk), each column's dictionary if the file is dictionary-encoded, and one
//! small batch. The Kaggle files put the whole file in one row group, so decoding "row
//! group by row group" would mean holding whole files; page streaming bounds a cursor by
//! the file's page size instead. That bound is only small for small pages: pyarrow writes
//! pages and dictionaries of up to 1 MiB, about 10 MB per open file for a large Kaggle file,
//! so a replay of hundreds of overlapping large files should use copies repacked with small
//! pages (`datagen --repack-from`, see `dataset/README.md`).
//!
//! Accepted shapes (DESIGN.md): float32 or float64 prices and volumes; `open_time` as a
//! timestamp of any unit and time zone (the Kaggle files: the pandas index,
//! `datetime64[ns]`) or as int64 Unix milliseconds; any integer type for
//! `number_of_trades`; the four non-OHLCV columns optional (absent -> `None`). float32
//! values are widened through their shortest decimal representation, so `45134.11f32`
//! travels as `45134.11`, not `45134.109375`.
//!
//! A row that cannot become a valid candle (null or NaN price, negative volume, high below
//! low, open time out of order, …) is a *bad row*: counted, logged with its file and row
//! number, and skipped. A file that cannot be read at all is a [`FileError`].

use crate::source::replay::ReplayStats;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, Float32Array, Float64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema, TimeUnit};
use candlepipe_model::validate::{validate, validate_symbol};
use candlepipe_model::{Candle, InvalidCandle, Source};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::errors::ParquetError;
use parquet::file::reader::ChunkReader;
use std::fs::File;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Rows per decoded record batch: small, because up to ~1000 files are open at once
/// (each open file holds one batch of every projected column, ~70 bytes a row).
pub const BATCH_ROWS: usize = 256;
/// Bad rows logged one by one per file and pass; the rest are counted and summarised.
const BAD_ROWS_LOGGED: u64 = 10;

/// The timestamp column.
const OPEN_TIME: &str = "open_time";
/// Required price and volume columns, in [`Candle`] order.
const OHLCV: [&str; 5] = ["open", "high", "low", "close", "volume"];
const QUOTE_VOLUME: &str = "quote_asset_volume";
const TRADES: &str = "number_of_trades";
const TAKER_BASE: &str = "taker_buy_base_asset_volume";
const TAKER_QUOTE: &str = "taker_buy_quote_asset_volume";
/// Optional float columns.
const OPTIONAL_FLOATS: [&str; 3] = [QUOTE_VOLUME, TAKER_BASE, TAKER_QUOTE];

/// Why a file cannot be replayed. Always shown after the file's path.
#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("file is empty (0 bytes)")]
    Empty,
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
    #[error("cannot decode rows from row {row} on: {source}")]
    Decode { row: u64, source: ArrowError },
    #[error("cannot set up the reader: {0}")]
    Reader(ParquetError),
}

/// Why one row was skipped.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BadRow {
    #[error("column `{0}` is null")]
    Null(&'static str),
    #[error("open_time {value} ({unit:?}) is not a whole millisecond or out of range")]
    OpenTimeUnit { value: i64, unit: TimeUnit },
    #[error("column `number_of_trades` is negative or too large ({0})")]
    Trades(i128),
    #[error("open_time {open_time} is not after the previous row's {previous}: rows must be sorted by open_time without duplicates")]
    OutOfOrder { open_time: i64, previous: i64 },
    #[error("{0}")]
    Invalid(#[from] InvalidCandle),
}

/// The part of the replay a cursor delivers: `[start, end)` in original open time, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// One dataset file as known from its footer, before any data is read.
#[derive(Debug, Clone)]
pub struct CandleFile {
    pub path: PathBuf,
    /// The file stem, e.g. `BTC-USDT`.
    pub symbol: String,
    /// Rows in the file (all row groups).
    pub rows: u64,
    /// Smallest and largest `open_time` (ms) from the statistics, when the file has them.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
}

impl CandleFile {
    /// Checks the file's footer and schema (see the module docs). Reads no data pages.
    pub fn inspect(path: &Path) -> Result<Self, FileError> {
        let symbol = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        validate_symbol(&symbol).map_err(FileError::BadSymbol)?;
        let (_, meta) = open_checked(path)?;
        let metadata = meta.metadata();
        let rows = metadata.file_metadata().num_rows().max(0) as u64;
        if rows == 0 {
            return Err(FileError::NoRows);
        }
        let (first_ms, last_ms) = time_range(&meta).unwrap_or((None, None));
        Ok(CandleFile {
            path: path.to_owned(),
            symbol,
            rows,
            first_ms,
            last_ms,
        })
    }

    /// Starts streaming the file's candles within `window`.
    pub fn open(&self, window: Window) -> Result<FileCursor, FileError> {
        let (file, meta) = open_checked(&self.path)?;
        Ok(FileCursor {
            reader: stream(file, meta)?,
            symbol: self.symbol.clone(),
            path: self.path.clone(),
            window,
            batch: None,
            next_in_batch: 0,
            rows_read: 0,
            previous: None,
            bad_rows: 0,
            finished: false,
        })
    }
}

/// Opens `path` and checks it is a parquet file with a usable candle schema.
fn open_checked(path: &Path) -> Result<(File, ArrowReaderMetadata), FileError> {
    let file = File::open(path)?;
    if file.metadata()?.len() == 0 {
        return Err(FileError::Empty);
    }
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(FileError::NotParquet)?;
    check_schema(meta.schema())?;
    Ok((file, meta))
}

/// The indices of the candle columns in `schema`, after checking their types.
fn check_schema(schema: &Schema) -> Result<Vec<usize>, FileError> {
    let mut wanted = Vec::new();
    let mut find =
        |column: &'static str, required: bool, ok: fn(&DataType) -> bool, expected| match schema
            .index_of(column)
        {
            Ok(i) if ok(schema.field(i).data_type()) => {
                wanted.push(i);
                Ok(())
            }
            Ok(i) => Err(FileError::WrongType {
                column,
                found: schema.field(i).data_type().clone(),
                expected,
            }),
            Err(_) if required => Err(FileError::MissingColumn(column)),
            Err(_) => Ok(()),
        };
    let float = |t: &DataType| matches!(t, DataType::Float32 | DataType::Float64);
    const FLOAT: &str = "float32 or float64";
    find(
        OPEN_TIME,
        true,
        |t| {
            matches!(
                t,
                DataType::Timestamp(_, _) | DataType::Int64 | DataType::UInt64
            )
        },
        "a timestamp (datetime64) or int64 Unix milliseconds",
    )?;
    for column in OHLCV {
        find(column, true, float, FLOAT)?;
    }
    for column in OPTIONAL_FLOATS {
        find(column, false, float, FLOAT)?;
    }
    find(TRADES, false, |t| t.is_integer(), "an integer type")?;
    Ok(wanted)
}

/// The smallest and largest open time in the row-group statistics, when every row group
/// has them.
fn time_range(meta: &ArrowReaderMetadata) -> Option<(Option<i64>, Option<i64>)> {
    let converter =
        StatisticsConverter::try_new(OPEN_TIME, meta.schema(), meta.parquet_schema()).ok()?;
    let groups = meta.metadata().row_groups();
    let extreme = |values: ArrayRef, min: bool| -> Option<i64> {
        let times = TimeColumn::new(&values)?;
        let mut best: Option<i64> = None;
        for i in 0..values.len() {
            let t = times.ms(i).ok()??;
            best = Some(best.map_or(t, |b| if min { b.min(t) } else { b.max(t) }));
        }
        best
    };
    let first = converter
        .row_group_mins(groups.iter())
        .ok()
        .and_then(|v| extreme(v, true));
    let last = converter
        .row_group_maxes(groups.iter())
        .ok()
        .and_then(|v| extreme(v, false));
    Some((first, last))
}

/// A batch reader over the candle columns only, decoding page by page.
/// Generic so tests can count the bytes it actually fetches.
fn stream<T: ChunkReader + 'static>(
    input: T,
    meta: ArrowReaderMetadata,
) -> Result<ParquetRecordBatchReader, FileError> {
    let columns = check_schema(meta.schema())?;
    let mask = ProjectionMask::roots(meta.parquet_schema(), columns);
    ParquetRecordBatchReaderBuilder::new_with_metadata(input, meta)
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(FileError::Reader)
}

/// Streams one file's candles in file order; see [`FileCursor::next_candle`].
pub struct FileCursor {
    reader: ParquetRecordBatchReader,
    symbol: String,
    path: PathBuf,
    window: Window,
    batch: Option<Columns>,
    next_in_batch: usize,
    /// Rows taken out of the file so far (good, bad and filtered): the next row's index.
    rows_read: u64,
    /// Open time of the last good row, to reject rows out of order.
    previous: Option<i64>,
    /// Bad rows met in this file so far.
    bad_rows: u64,
    /// Past the end of the file or of the window.
    finished: bool,
}

impl FileCursor {
    /// The next good candle inside the window, or `None` when the file (or the window) is
    /// done. Bad rows are counted in `stats`, logged and skipped. Every row taken out of the
    /// file is counted in `stats.rows_read`.
    pub fn next_candle(&mut self, stats: &ReplayStats) -> Result<Option<Candle>, FileError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            if !self.load_batch()? {
                self.finish();
                return Ok(None);
            }
            let i = self.next_in_batch;
            self.next_in_batch += 1;
            let row = self.rows_read;
            self.rows_read += 1;
            stats.note_rows_read(1);
            let batch = self.batch.as_ref().expect("load_batch keeps a batch");
            let candle = match batch.candle(i, &self.symbol) {
                Ok(c) => c,
                Err(problem) => {
                    self.bad_row(row, problem, stats);
                    continue;
                }
            };
            if let Some(previous) = self.previous.filter(|p| candle.open_time <= *p) {
                let problem = BadRow::OutOfOrder {
                    open_time: candle.open_time,
                    previous,
                };
                self.bad_row(row, problem, stats);
                continue;
            }
            if self.window.end.is_some_and(|end| candle.open_time >= end) {
                self.finish();
                return Ok(None);
            }
            self.previous = Some(candle.open_time);
            if self
                .window
                .start
                .is_some_and(|start| candle.open_time < start)
            {
                continue;
            }
            return Ok(Some(candle));
        }
    }

    /// Rows taken out of the file so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// Makes sure a batch with an unread row is loaded; `false` at the end of the file.
    fn load_batch(&mut self) -> Result<bool, FileError> {
        if self
            .batch
            .as_ref()
            .is_some_and(|b| self.next_in_batch < b.len)
        {
            return Ok(true);
        }
        self.batch = None;
        loop {
            let batch = match self.reader.next() {
                None => return Ok(false),
                Some(Err(source)) => {
                    return Err(FileError::Decode {
                        row: self.rows_read,
                        source,
                    })
                }
                Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                Some(Ok(batch)) => batch,
            };
            let columns = Columns::new(&batch).map_err(|source| FileError::Decode {
                row: self.rows_read,
                source,
            })?;
            self.next_in_batch = 0;
            self.batch = Some(columns);
            return Ok(true);
        }
    }

    fn bad_row(&mut self, row: u64, problem: BadRow, stats: &ReplayStats) {
        self.bad_rows += 1;
        stats.note_bad_row();
        if self.bad_rows <= BAD_ROWS_LOGGED {
            tracing::warn!(file = %self.path.display(), row, "skipping bad row {row} of {}: {problem}", self.path.display());
        }
    }

    /// Marks the cursor done; one summary line for the bad rows not logged one by one.
    fn finish(&mut self) {
        self.finished = true;
        self.batch = None;
        if self.bad_rows > BAD_ROWS_LOGGED {
            tracing::warn!(
                file = %self.path.display(),
                bad_rows = self.bad_rows,
                "{} bad rows skipped in {} ({} more than logged above)",
                self.bad_rows,
                self.path.display(),
                self.bad_rows - BAD_ROWS_LOGGED
            );
        }
    }
}

/// The candle columns of one decoded batch, typed.
struct Columns {
    len: usize,
    open_time: TimeColumn,
    ohlcv: [FloatColumn; 5],
    quote_volume: Option<FloatColumn>,
    trades: Option<Vec<Option<i128>>>,
    taker_base: Option<FloatColumn>,
    taker_quote: Option<FloatColumn>,
}

impl Columns {
    fn new(batch: &RecordBatch) -> Result<Self, ArrowError> {
        let column = |name: &str| -> Result<&ArrayRef, ArrowError> {
            batch
                .column_by_name(name)
                .ok_or_else(|| ArrowError::SchemaError(format!("column `{name}` vanished")))
        };
        let float = |name: &str| -> Result<FloatColumn, ArrowError> {
            FloatColumn::new(column(name)?).ok_or_else(|| unexpected(name))
        };
        let optional_float = |name: &str| match batch.column_by_name(name) {
            Some(a) => FloatColumn::new(a)
                .map(Some)
                .ok_or_else(|| unexpected(name)),
            None => Ok(None),
        };
        let time = column(OPEN_TIME)?;
        Ok(Columns {
            len: batch.num_rows(),
            open_time: TimeColumn::new(time).ok_or_else(|| unexpected(OPEN_TIME))?,
            ohlcv: [
                float(OHLCV[0])?,
                float(OHLCV[1])?,
                float(OHLCV[2])?,
                float(OHLCV[3])?,
                float(OHLCV[4])?,
            ],
            quote_volume: optional_float(QUOTE_VOLUME)?,
            trades: match batch.column_by_name(TRADES) {
                Some(a) => Some(integers(a).ok_or_else(|| unexpected(TRADES))?),
                None => None,
            },
            taker_base: optional_float(TAKER_BASE)?,
            taker_quote: optional_float(TAKER_QUOTE)?,
        })
    }

    /// Row `i` as a candle (original open time), validated.
    fn candle(&self, i: usize, symbol: &str) -> Result<Candle, BadRow> {
        let open_time = self.open_time.ms(i)?.ok_or(BadRow::Null(OPEN_TIME))?;
        let required = |k: usize| self.ohlcv[k].get(i).ok_or(BadRow::Null(OHLCV[k]));
        let trades = match self.trades.as_ref().and_then(|t| t[i]) {
            None => None,
            Some(n) => Some(u64::try_from(n).map_err(|_| BadRow::Trades(n))?),
        };
        let candle = Candle {
            symbol: symbol.to_owned(),
            source: Source::Replay,
            open_time,
            open: required(0)?,
            high: required(1)?,
            low: required(2)?,
            close: required(3)?,
            volume: required(4)?,
            quote_volume: self.quote_volume.as_ref().and_then(|c| c.get(i)),
            trades,
            taker_buy_base: self.taker_base.as_ref().and_then(|c| c.get(i)),
            taker_buy_quote: self.taker_quote.as_ref().and_then(|c| c.get(i)),
            closed: true,
            produced_at: None,
        };
        validate(&candle)?;
        Ok(candle)
    }
}

fn unexpected(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!("column `{name}` decoded to an unexpected type"))
}

/// A float32 or float64 column.
enum FloatColumn {
    F32(Float32Array),
    F64(Float64Array),
}

impl FloatColumn {
    fn new(a: &ArrayRef) -> Option<Self> {
        match a.data_type() {
            DataType::Float32 => Some(FloatColumn::F32(a.as_primitive().clone())),
            DataType::Float64 => Some(FloatColumn::F64(a.as_primitive().clone())),
            _ => None,
        }
    }

    /// The value as f64 (`None` when null); float32 through its shortest decimal.
    fn get(&self, i: usize) -> Option<f64> {
        match self {
            FloatColumn::F32(a) => a.is_valid(i).then(|| widen_f32(a.value(i))),
            FloatColumn::F64(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// `v` as the f64 nearest to its shortest round-trip decimal: `45134.11f32` (stored as
/// 45134.109375) becomes `45134.11`, the number the exchange published.
pub fn widen_f32(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    let mut buffer = ryu::Buffer::new();
    buffer.format_finite(v).parse().unwrap_or(f64::from(v))
}

/// An `open_time` column: a timestamp of any unit, or integer milliseconds.
enum TimeColumn {
    Timestamp(ArrayRef, TimeUnit),
    Millis(ArrayRef),
}

impl TimeColumn {
    fn new(a: &ArrayRef) -> Option<Self> {
        match a.data_type() {
            DataType::Timestamp(unit, _) => Some(TimeColumn::Timestamp(a.clone(), *unit)),
            DataType::Int64 | DataType::UInt64 => Some(TimeColumn::Millis(a.clone())),
            _ => None,
        }
    }

    /// Row `i` in Unix ms; `Ok(None)` when null.
    fn ms(&self, i: usize) -> Result<Option<i64>, BadRow> {
        match self {
            TimeColumn::Timestamp(a, unit) => {
                if a.is_null(i) {
                    return Ok(None);
                }
                let value = match unit {
                    TimeUnit::Second => a.as_primitive::<TimestampSecondType>().value(i),
                    TimeUnit::Millisecond => a.as_primitive::<TimestampMillisecondType>().value(i),
                    TimeUnit::Microsecond => a.as_primitive::<TimestampMicrosecondType>().value(i),
                    TimeUnit::Nanosecond => a.as_primitive::<TimestampNanosecondType>().value(i),
                };
                let bad = || BadRow::OpenTimeUnit { value, unit: *unit };
                let ms = match unit {
                    TimeUnit::Second => value.checked_mul(1000).ok_or_else(bad)?,
                    TimeUnit::Millisecond => value,
                    TimeUnit::Microsecond if value % 1_000 == 0 => value / 1_000,
                    TimeUnit::Nanosecond if value % 1_000_000 == 0 => value / 1_000_000,
                    _ => return Err(bad()),
                };
                Ok(Some(ms))
            }
            TimeColumn::Millis(a) if a.is_null(i) => Ok(None),
            TimeColumn::Millis(a) => match a.data_type() {
                DataType::UInt64 => {
                    let v = a.as_primitive::<UInt64Type>().value(i);
                    i64::try_from(v)
                        .map(Some)
                        .map_err(|_| BadRow::OpenTimeUnit {
                            value: i64::MAX,
                            unit: TimeUnit::Millisecond,
                        })
                }
                _ => Ok(Some(a.as_primitive::<Int64Type>().value(i))),
            },
        }
    }
}

/// Any integer column as `i128` values (wide enough for every integer type).
fn integers(a: &ArrayRef) -> Option<Vec<Option<i128>>> {
    fn widen<T: ArrowPrimitiveType>(a: &ArrayRef) -> Vec<Option<i128>>
    where
        T::Native: Into<i128>,
    {
        a.as_primitive::<T>()
            .iter()
            .map(|v| v.map(Into::into))
            .collect()
    }
    Some(match a.data_type() {
        DataType::Int8 => widen::<Int8Type>(a),
        DataType::Int16 => widen::<Int16Type>(a),
        DataType::Int32 => widen::<Int32Type>(a),
        DataType::Int64 => widen::<Int64Type>(a),
        DataType::UInt8 => widen::<UInt8Type>(a),
        DataType::UInt16 => widen::<UInt16Type>(a),
        DataType::UInt32 => widen::<UInt32Type>(a),
        DataType::UInt64 => widen::<UInt64Type>(a),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use candlepipe_datagen::{
        klines, write_klines, FileLayout, MarketOptions, PairSpec, WriteOptions,
    };
    use parquet::file::reader::Length;
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[test]
    fn f32_values_travel_as_their_shortest_decimal() {
        assert_eq!(f64::from(45134.11f32), 45134.109375);
        assert_eq!(widen_f32(45134.11f32), 45134.11);
        assert_eq!(widen_f32(0.1f32), 0.1);
        assert_eq!(widen_f32(1e-8f32), 1e-8);
        assert_eq!(widen_f32(16777217.0f32), 16777216.0);
        // 445353.125 is exactly halfway between the shortest candidates 445353.12 and
        // 445353.13: like numpy (what pandas shows), ryu takes the even digit.
        let tie: f32 = "445353.125".parse().unwrap();
        assert_eq!(f64::from(tie), 445353.125, "exactly representable");
        assert_eq!(widen_f32(tie), 445353.12);
        assert!(widen_f32(f32::NAN).is_nan());
        assert_eq!(widen_f32(f32::NEG_INFINITY), f64::NEG_INFINITY);
    }

    /// A `File` that counts the bytes the parquet reader fetches from it.
    struct CountingFile {
        file: File,
        fetched: Arc<AtomicU64>,
    }

    struct CountingRead<R> {
        inner: R,
        fetched: Arc<AtomicU64>,
    }

    impl<R: Read> Read for CountingRead<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.fetched.fetch_add(n as u64, Ordering::SeqCst);
            Ok(n)
        }
    }

    impl Length for CountingFile {
        fn len(&self) -> u64 {
            self.file.len()
        }
    }

    impl ChunkReader for CountingFile {
        type T = CountingRead<<File as ChunkReader>::T>;

        fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
            Ok(CountingRead {
                inner: self.file.get_read(start)?,
                fetched: self.fetched.clone(),
            })
        }

        fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
            self.fetched.fetch_add(length as u64, Ordering::SeqCst);
            self.file.get_bytes(start, length)
        }
    }

    /// Writes `minutes` of BTC-USDT candles with the given page size and encoding.
    fn many_page_file(dir: &Path, minutes: u32, options: WriteOptions) -> PathBuf {
        let path = dir.join("BTC-USDT.parquet");
        let market = MarketOptions {
            minutes,
            ..MarketOptions::default()
        };
        let spec = PairSpec::bundled_named("BTC-USDT").unwrap();
        write_klines(&path, &FileLayout::KAGGLE, &options, klines(&spec, &market)).unwrap();
        path
    }

    /// Opens `path` through a [`CountingFile`]: the reader and the byte counter.
    fn counted_stream(
        path: &Path,
    ) -> (
        ParquetRecordBatchReader,
        Arc<AtomicU64>,
        ArrowReaderMetadata,
    ) {
        let file = File::open(path).unwrap();
        let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).unwrap();
        let fetched = Arc::new(AtomicU64::new(0));
        let counting = CountingFile {
            file,
            fetched: fetched.clone(),
        };
        (stream(counting, meta.clone()).unwrap(), fetched, meta)
    }

    /// The reader must fetch pages as it goes, not the whole (single) row group: after the
    /// first batch of a many-page file only about one page per column has been read.
    #[test]
    fn the_reader_fetches_pages_lazily_not_whole_column_chunks() {
        let dir = tempfile::tempdir().unwrap();
        // 16 KiB plain pages: each column chunk spans ~50 pages, all in one row group.
        let options = WriteOptions {
            data_page_size: 16 * 1024,
            dictionary: false,
        };
        let path = many_page_file(dir.path(), 200_000, options);
        let file_len = std::fs::metadata(&path).unwrap().len();
        let (mut reader, fetched, meta) = counted_stream(&path);
        assert_eq!(meta.metadata().num_row_groups(), 1);

        let first = reader.next().unwrap().unwrap();
        assert_eq!(first.num_rows(), BATCH_ROWS);
        let after_first = fetched.load(Ordering::SeqCst);
        // 10 columns x (one 16 KiB page + an 8 KiB buffered header read) at most.
        assert!(
            after_first < 10 * 40 * 1024,
            "first batch fetched {after_first} of {file_len} bytes: the reader is not streaming pages"
        );
        // And reading on fetches the rest.
        let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum::<usize>() + BATCH_ROWS;
        assert!(rows > 190_000);
        assert!(fetched.load(Ordering::SeqCst) > file_len * 9 / 10);
    }

    /// With dictionary encoding (the pyarrow default) each column's dictionary page is
    /// read up front and kept for the whole column chunk: that, not the data pages, is
    /// what a cursor over a big real-world file holds. Measured here so the number in the
    /// docs stays honest.
    #[test]
    fn dictionary_pages_are_read_up_front_data_pages_lazily() {
        let dir = tempfile::tempdir().unwrap();
        let options = WriteOptions {
            data_page_size: 16 * 1024,
            dictionary: true,
        };
        let path = many_page_file(dir.path(), 200_000, options);
        let (mut reader, fetched, meta) = counted_stream(&path);
        let dictionaries: u64 = meta
            .metadata()
            .row_group(0)
            .columns()
            .iter()
            .filter_map(|c| {
                c.dictionary_page_offset()
                    .map(|d| (c.data_page_offset() - d) as u64)
            })
            .sum();
        reader.next().unwrap().unwrap();
        let after_first = fetched.load(Ordering::SeqCst);
        assert!(dictionaries > 0);
        assert!(
            after_first < dictionaries + 10 * 40 * 1024,
            "first batch fetched {after_first} bytes; dictionaries are {dictionaries}"
        );
    }

    #[test]
    fn schema_check_names_the_column() {
        use arrow_schema::Field;
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let mut fields: Vec<Field> = OHLCV
            .iter()
            .map(|c| Field::new(*c, DataType::Float32, true))
            .collect();
        fields.push(Field::new(OPEN_TIME, ts, true));
        assert_eq!(check_schema(&Schema::new(fields.clone())).unwrap().len(), 6);

        let mut missing = fields.clone();
        missing.remove(2);
        let err = check_schema(&Schema::new(missing)).unwrap_err().to_string();
        assert_eq!(err, "missing column `low`");

        let mut wrong = fields.clone();
        wrong[1] = Field::new("high", DataType::Utf8, true);
        let err = check_schema(&Schema::new(wrong)).unwrap_err().to_string();
        assert!(err.contains("column `high` has type Utf8"), "{err}");

        let mut trades = fields.clone();
        trades.push(Field::new(TRADES, DataType::Float64, true));
        let err = check_schema(&Schema::new(trades)).unwrap_err().to_string();
        assert!(
            err.contains("`number_of_trades` has type Float64; expected an integer"),
            "{err}"
        );

        let mut time = fields;
        time[5] = Field::new(OPEN_TIME, DataType::Utf8, true);
        let err = check_schema(&Schema::new(time)).unwrap_err().to_string();
        assert!(err.contains("`open_time` has type Utf8"), "{err}");
    }
}
