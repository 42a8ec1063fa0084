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
//! pages and dictionaries of up to 1 MiB, about 10 MB per open file for a large Kaggle file.
//! So `inspect` also estimates from the footer how many bytes of pages a cursor will hold
//! ([`CandleFile::page_bytes`]), and the replay cache (`cache.rs`) gives the files that
//! would not fit the replay's budget a small-page copy to read instead
//! ([`CandleFile::read_from`]).
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

use crate::source::file_error::FileError;
use crate::source::regular;
use crate::source::row::{Admit, BadRow, Window, BAD_ROWS_LOGGED};
use crate::source::stats::ReplayStats;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema, TimeUnit};
use candlepipe_model::validate::{validate, validate_symbol};
use candlepipe_model::{Candle, Source};
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::basic::{PageType, Type as PhysicalType};
use parquet::file::metadata::{ColumnChunkMetaData, PageIndexPolicy};
use parquet::file::page_index::offset_index::OffsetIndexMetaData;
use parquet::file::reader::ChunkReader;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows per decoded record batch: small, because up to ~1000 files are open at once
/// (each open file holds one batch, ~100 bytes a row).
pub const BATCH_ROWS: usize = 256;

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

/// One dataset file as known from its footer, before any data is read.
#[derive(Debug, Clone)]
pub struct CandleFile {
    /// The dataset file: what errors and logs name.
    pub path: PathBuf,
    /// The file the cursor streams: `path` itself, or its small-page copy in the replay
    /// cache (same rows; see `cache.rs`).
    pub read_from: PathBuf,
    /// The file stem, e.g. `BTC-USDT`.
    pub symbol: String,
    /// Rows in the file (all row groups).
    pub rows: u64,
    /// Smallest and largest `open_time` (ms) from the statistics, when the file has them.
    pub first_ms: Option<i64>,
    pub last_ms: Option<i64>,
    /// Estimated bytes of decompressed pages an open cursor holds at once (see
    /// [`page_bytes`]).
    pub page_bytes: u64,
    /// Estimated size of a plain-encoded copy of the file (every column, fixed width).
    pub copy_bytes: u64,
}

impl CandleFile {
    /// Checks the file's footer and schema (see the module docs). Reads no data pages.
    pub fn inspect(path: &Path) -> Result<Self, FileError> {
        let symbol = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        validate_symbol(&symbol).map_err(FileError::BadSymbol)?;
        // The offset index and the page counts tell the page sizes; only `inspect` reads
        // them, a cursor does not keep them.
        let options = ArrowReaderOptions::new()
            .with_offset_index_policy(PageIndexPolicy::Optional)
            .with_encoding_stats_as_mask(false);
        let (_, meta, columns) = open_checked(path, options)?;
        let metadata = meta.metadata();
        let rows = metadata.file_metadata().num_rows().max(0) as u64;
        if rows == 0 {
            return Err(FileError::NoRows);
        }
        let (first_ms, last_ms) = time_range(&meta).unwrap_or((None, None));
        Ok(CandleFile {
            path: path.to_owned(),
            read_from: path.to_owned(),
            symbol,
            rows,
            first_ms,
            last_ms,
            page_bytes: page_bytes(&meta, &columns),
            copy_bytes: plain_bytes(&meta),
        })
    }

    /// Starts streaming the file's candles within `window` (from [`CandleFile::read_from`]).
    pub fn open(&self, window: Window) -> Result<FileCursor, FileError> {
        let (file, meta, _) = open_checked(&self.read_from, ArrowReaderOptions::new())?;
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

/// Opens `path` and checks it is a parquet file with a usable candle schema; also returns
/// the indices of the candle columns.
fn open_checked(
    path: &Path,
    options: ArrowReaderOptions,
) -> Result<(File, ArrowReaderMetadata, Vec<usize>), FileError> {
    let file = regular::open(path)?;
    let meta = ArrowReaderMetadata::load(&file, options).map_err(FileError::NotParquet)?;
    let columns = check_schema(meta.schema())?;
    Ok((file, meta, columns))
}

/// Estimated bytes of decompressed pages a cursor over this file holds at once: for the
/// row group where it is largest, the sum over the candle `columns` of each column's
/// dictionary page plus its largest data page. The footer tells page sizes exactly when the
/// file has an offset index (parquet-rs writes one); otherwise the number of data pages
/// (encoding stats, which pyarrow writes) gives their mean size, counted twice for slack;
/// with neither, the whole column chunk counts. Compressed sizes are scaled by the chunk's
/// compression ratio. Never more than the column chunks' uncompressed size.
fn page_bytes(meta: &ArrowReaderMetadata, columns: &[usize]) -> u64 {
    let names: Vec<&str> = columns
        .iter()
        .map(|&i| meta.schema().field(i).name().as_str())
        .collect();
    let metadata = meta.metadata();
    let offsets = metadata.page_index();
    metadata
        .row_groups()
        .iter()
        .enumerate()
        .map(|(g, group)| {
            group
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, chunk)| names.contains(&chunk.column_descr().name()))
                .map(|(c, chunk)| {
                    let index = offsets.and_then(|o| o.offset_index(g, c));
                    column_page_bytes(chunk, index)
                })
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// The size of every column chunk of the file when plain-encoded: rows times the physical
/// width (variable-width columns: their uncompressed size).
fn plain_bytes(meta: &ArrowReaderMetadata) -> u64 {
    let groups = meta.metadata().row_groups();
    groups
        .iter()
        .flat_map(|g| {
            g.columns()
                .iter()
                .map(move |c| (g.num_rows().max(0) as u64, c))
        })
        .map(|(rows, chunk)| match chunk.column_type() {
            PhysicalType::BOOLEAN => rows.div_ceil(8),
            PhysicalType::INT32 | PhysicalType::FLOAT => rows * 4,
            PhysicalType::INT64 | PhysicalType::DOUBLE => rows * 8,
            PhysicalType::INT96 => rows * 12,
            _ => chunk.uncompressed_size().max(0) as u64,
        })
        .sum()
}

/// [`page_bytes`] for one column chunk.
fn column_page_bytes(chunk: &ColumnChunkMetaData, index: Option<&OffsetIndexMetaData>) -> u64 {
    let whole = chunk.uncompressed_size().max(0) as u64;
    let compressed = chunk.compressed_size().max(1) as u64;
    let scale =
        |bytes: u64| (u128::from(bytes) * u128::from(whole) / u128::from(compressed)) as u64;
    let dictionary = chunk
        .dictionary_page_offset()
        .map_or(0, |d| scale((chunk.data_page_offset() - d).max(0) as u64));
    let largest = if let Some(pages) = index.filter(|i| !i.page_locations().is_empty()) {
        let largest = pages
            .page_locations()
            .iter()
            .map(|p| p.compressed_page_size);
        scale(largest.max().unwrap_or(0).max(0) as u64)
    } else if let Some(stats) = chunk.page_encoding_stats() {
        let data_pages: u64 = stats
            .iter()
            .filter(|s| matches!(s.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2))
            .map(|s| s.count.max(0) as u64)
            .sum();
        let data = whole.saturating_sub(dictionary);
        match data_pages {
            0 => data,
            n => (2 * data / n).min(data),
        }
    } else {
        whole
    };
    (dictionary + largest).min(whole)
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
            match self.window.admit(candle.open_time, &mut self.previous) {
                Admit::Emit => return Ok(Some(candle)),
                Admit::Skip => {}
                Admit::End => {
                    self.finish();
                    return Ok(None);
                }
                Admit::Bad(problem) => self.bad_row(row, problem, stats),
            }
        }
    }

    /// Rows taken out of the file so far.
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// The dataset file streamed (what errors name).
    pub fn path(&self) -> &Path {
        &self.path
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
                        cause: source,
                    })
                }
                Some(Ok(batch)) if batch.num_rows() == 0 => continue,
                Some(Ok(batch)) => batch,
            };
            let columns = Columns::new(&batch).map_err(|source| FileError::Decode {
                row: self.rows_read,
                cause: source,
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

/// The candle columns of one decoded batch, laid out row by row. The merge takes one row of
/// each of up to ~1000 open files in turn, so a row is always cold in the CPU cache: spread
/// over ten column arrays it costs ten cache misses, packed in one [`Row`] one or two.
struct Columns {
    len: usize,
    /// How `Row::time` becomes Unix ms.
    time: TimeKind,
    /// Which float slots (OHLCV, then quote volume and the two taker volumes) hold float32
    /// values, widened when the candle is made.
    float32: [bool; FLOAT_SLOTS],
    /// Which float slots the file has (the last three are optional).
    present: [bool; FLOAT_SLOTS],
    has_trades: bool,
    rows: Vec<Row>,
}

/// Float slots of a [`Row`]: OHLCV, then [`OPTIONAL_FLOATS`].
const FLOAT_SLOTS: usize = 8;
/// [`Row::valid`] bits past the float slots.
const TIME_VALID: u16 = 1 << 8;
const TRADES_VALID: u16 = 1 << 9;
/// An unsigned millisecond `open_time` beyond `i64::MAX`.
const TIME_OVERFLOW: u16 = 1 << 10;

/// One row's raw values: floats as f64 (float32 exactly widened, not yet rounded to its
/// shortest decimal), the time in its column's unit, the trade count widened to i128.
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    time: i64,
    floats: [f64; FLOAT_SLOTS],
    trades: i128,
    /// Bit k: float slot k is not null; then [`TIME_VALID`], [`TRADES_VALID`],
    /// [`TIME_OVERFLOW`].
    valid: u16,
}

/// The kind of `open_time` column.
#[derive(Debug, Clone, Copy)]
enum TimeKind {
    Timestamp(TimeUnit),
    /// int64 or uint64 Unix milliseconds.
    Millis,
}

impl Columns {
    fn new(batch: &RecordBatch) -> Result<Self, ArrowError> {
        let len = batch.num_rows();
        let mut rows = vec![Row::default(); len];
        let time = batch
            .column_by_name(OPEN_TIME)
            .ok_or_else(|| ArrowError::SchemaError(format!("column `{OPEN_TIME}` vanished")))?;
        let time_kind = fill_times(time, &mut rows).ok_or_else(|| unexpected(OPEN_TIME))?;
        let mut float32 = [false; FLOAT_SLOTS];
        let mut present = [false; FLOAT_SLOTS];
        let names = OHLCV.iter().chain(OPTIONAL_FLOATS.iter());
        for (slot, name) in names.enumerate() {
            let Some(array) = batch.column_by_name(name) else {
                if slot < OHLCV.len() {
                    return Err(ArrowError::SchemaError(format!("column `{name}` vanished")));
                }
                continue;
            };
            present[slot] = true;
            float32[slot] = fill_floats(array, slot, &mut rows).ok_or_else(|| unexpected(name))?;
        }
        let has_trades = match batch.column_by_name(TRADES) {
            Some(a) => {
                fill_integers(a, &mut rows).ok_or_else(|| unexpected(TRADES))?;
                true
            }
            None => false,
        };
        Ok(Columns {
            len,
            time: time_kind,
            float32,
            present,
            has_trades,
            rows,
        })
    }

    /// Row `i` as a candle (original open time), validated.
    fn candle(&self, i: usize, symbol: &str) -> Result<Candle, BadRow> {
        let row = &self.rows[i];
        let open_time = self.open_time(row)?.ok_or(BadRow::Null(OPEN_TIME))?;
        let float = |slot: usize| {
            let valid = self.present[slot] && row.valid & (1 << slot) != 0;
            let value = row.floats[slot];
            valid.then(|| {
                if self.float32[slot] {
                    widen_f32(value as f32)
                } else {
                    value
                }
            })
        };
        let required = |slot: usize| float(slot).ok_or(BadRow::Null(OHLCV[slot]));
        let trades = if self.has_trades && row.valid & TRADES_VALID != 0 {
            Some(u64::try_from(row.trades).map_err(|_| BadRow::Trades(row.trades))?)
        } else {
            None
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
            quote_volume: float(5),
            trades,
            taker_buy_base: float(6),
            taker_buy_quote: float(7),
            closed: true,
            produced_at: None,
        };
        validate(&candle)?;
        Ok(candle)
    }

    /// The row's open time in Unix ms; `Ok(None)` when null.
    fn open_time(&self, row: &Row) -> Result<Option<i64>, BadRow> {
        if row.valid & TIME_OVERFLOW != 0 {
            return Err(BadRow::OpenTimeUnit {
                value: i64::MAX,
                unit: TimeUnit::Millisecond,
            });
        }
        if row.valid & TIME_VALID == 0 {
            return Ok(None);
        }
        match self.time {
            TimeKind::Timestamp(unit) => timestamp_ms(row.time, unit).map(Some),
            TimeKind::Millis => Ok(Some(row.time)),
        }
    }
}

/// Copies an `open_time` column into `rows`; `None` for a type that is not a time.
fn fill_times(a: &ArrayRef, rows: &mut [Row]) -> Option<TimeKind> {
    fn copy<T: ArrowPrimitiveType<Native = i64>>(a: &ArrayRef, rows: &mut [Row]) {
        for (row, v) in rows.iter_mut().zip(a.as_primitive::<T>().iter()) {
            if let Some(v) = v {
                row.time = v;
                row.valid |= TIME_VALID;
            }
        }
    }
    Some(match a.data_type() {
        DataType::Timestamp(unit, _) => {
            match unit {
                TimeUnit::Second => copy::<TimestampSecondType>(a, rows),
                TimeUnit::Millisecond => copy::<TimestampMillisecondType>(a, rows),
                TimeUnit::Microsecond => copy::<TimestampMicrosecondType>(a, rows),
                TimeUnit::Nanosecond => copy::<TimestampNanosecondType>(a, rows),
            }
            TimeKind::Timestamp(*unit)
        }
        DataType::Int64 => {
            copy::<Int64Type>(a, rows);
            TimeKind::Millis
        }
        DataType::UInt64 => {
            for (row, v) in rows.iter_mut().zip(a.as_primitive::<UInt64Type>().iter()) {
                match v.map(i64::try_from) {
                    Some(Ok(v)) => {
                        row.time = v;
                        row.valid |= TIME_VALID;
                    }
                    Some(Err(_)) => row.valid |= TIME_OVERFLOW,
                    None => {}
                }
            }
            TimeKind::Millis
        }
        _ => return None,
    })
}

/// Copies a float column into slot `slot` of `rows`: `Some(true)` for float32,
/// `Some(false)` for float64, `None` for another type.
fn fill_floats(a: &ArrayRef, slot: usize, rows: &mut [Row]) -> Option<bool> {
    fn copy<T: ArrowPrimitiveType>(a: &ArrayRef, slot: usize, rows: &mut [Row])
    where
        T::Native: Into<f64>,
    {
        for (row, v) in rows.iter_mut().zip(a.as_primitive::<T>().iter()) {
            if let Some(v) = v {
                row.floats[slot] = v.into();
                row.valid |= 1 << slot;
            }
        }
    }
    match a.data_type() {
        DataType::Float32 => copy::<Float32Type>(a, slot, rows),
        DataType::Float64 => copy::<Float64Type>(a, slot, rows),
        _ => return None,
    }
    Some(matches!(a.data_type(), DataType::Float32))
}

/// Copies any integer column into the rows' trade counts (`i128` holds every integer
/// type); `None` for another type.
fn fill_integers(a: &ArrayRef, rows: &mut [Row]) -> Option<()> {
    fn copy<T: ArrowPrimitiveType>(a: &ArrayRef, rows: &mut [Row])
    where
        T::Native: Into<i128>,
    {
        for (row, v) in rows.iter_mut().zip(a.as_primitive::<T>().iter()) {
            if let Some(v) = v {
                row.trades = v.into();
                row.valid |= TRADES_VALID;
            }
        }
    }
    match a.data_type() {
        DataType::Int8 => copy::<Int8Type>(a, rows),
        DataType::Int16 => copy::<Int16Type>(a, rows),
        DataType::Int32 => copy::<Int32Type>(a, rows),
        DataType::Int64 => copy::<Int64Type>(a, rows),
        DataType::UInt8 => copy::<UInt8Type>(a, rows),
        DataType::UInt16 => copy::<UInt16Type>(a, rows),
        DataType::UInt32 => copy::<UInt32Type>(a, rows),
        DataType::UInt64 => copy::<UInt64Type>(a, rows),
        _ => return None,
    }
    Some(())
}

fn unexpected(name: &str) -> ArrowError {
    ArrowError::SchemaError(format!("column `{name}` decoded to an unexpected type"))
}

/// `v` as the f64 nearest to its shortest round-trip decimal: `45134.11f32` (stored as
/// 45134.109375) becomes `45134.11`, the number the exchange published.
pub fn widen_f32(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(v);
    small_decimal(text).unwrap_or_else(|| text.parse().unwrap_or(f64::from(v)))
}

/// Exact powers of ten representable in an f64 (10^22 is the last one).
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// The f64 nearest to a decimal as ryu prints it (`45134.11`, `1e-8`, `1.5e-7`), when
/// Clinger's fast path applies: an integer mantissa below 2^53 and a power of ten up to
/// 10^22 are both exact f64s, so one multiplication or division rounds correctly. A float32's
/// shortest decimal has at most 9 digits, so only exponents beyond ±22 (and anything
/// unexpected) are left to the general parser. Skipping it is a third of the widening's cost.
fn small_decimal(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let mut mantissa: u64 = 0;
    let mut exponent: i32 = 0;
    let mut fraction = false;
    let mut rest = digits.iter();
    while let Some(&b) = rest.next() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
                exponent -= i32::from(fraction);
            }
            b'.' if !fraction => fraction = true,
            b'e' | b'E' => {
                let tail = std::str::from_utf8(rest.as_slice()).ok()?;
                exponent = exponent.checked_add(tail.parse::<i32>().ok()?)?;
                break;
            }
            _ => return None,
        }
    }
    if mantissa >= 1 << 53 {
        return None;
    }
    let power = *EXACT_POWERS_OF_TEN.get(exponent.unsigned_abs() as usize)?;
    let value = if exponent >= 0 {
        mantissa as f64 * power
    } else {
        mantissa as f64 / power
    };
    Some(if negative { -value } else { value })
}

/// A timestamp `value` in `unit` as Unix ms; an error when it is not a whole millisecond or
/// out of range.
fn timestamp_ms(value: i64, unit: TimeUnit) -> Result<i64, BadRow> {
    let bad = || BadRow::OpenTimeUnit { value, unit };
    Ok(match unit {
        TimeUnit::Second => value.checked_mul(1000).ok_or_else(bad)?,
        TimeUnit::Millisecond => value,
        TimeUnit::Microsecond if value % 1_000 == 0 => value / 1_000,
        TimeUnit::Nanosecond if value % 1_000_000 == 0 => value / 1_000_000,
        _ => return Err(bad()),
    })
}

/// An `open_time` column (of the statistics): a timestamp of any unit, or integer
/// milliseconds.
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
                timestamp_ms(value, *unit).map(Some)
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

    /// The fast path must give exactly what the general parser gives, for every kind of
    /// float32: a deterministic sweep over bit patterns (all exponents, many mantissas)
    /// plus the edges.
    #[test]
    fn the_fast_decimal_path_equals_the_general_parser() {
        let mut checked = 0u32;
        let mut fast = 0u32;
        let mut bits: u32 = 1;
        let edges = [
            f32::MIN_POSITIVE,
            f32::MAX,
            f32::EPSILON,
            1e-45,
            16777217.0,
            0.0,
            -0.0,
            -45134.11,
        ];
        let sweep = std::iter::from_fn(|| {
            // Steps of a prime size visit every exponent with varied mantissas.
            bits = bits.checked_add(40_009)?;
            Some(f32::from_bits(bits))
        });
        for v in edges.into_iter().chain(sweep).filter(|v| v.is_finite()) {
            let mut buffer = ryu::Buffer::new();
            let text = buffer.format_finite(v);
            let general: f64 = text.parse().unwrap();
            if let Some(got) = small_decimal(text) {
                fast += 1;
                assert_eq!(got.to_bits(), general.to_bits(), "{v:e} printed as {text}");
            }
            assert_eq!(widen_f32(v).to_bits(), general.to_bits(), "{text}");
            checked += 1;
        }
        assert!(checked > 100_000, "{checked}");
        assert!(fast > checked / 3, "the fast path took {fast} of {checked}");
        assert_eq!(small_decimal("1e-8"), Some(1e-8));
        assert_eq!(small_decimal("45134.11"), Some(45134.11));
        assert_eq!(
            small_decimal("1e30"),
            None,
            "beyond 10^22: the general parser"
        );
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
