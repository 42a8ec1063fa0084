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
//! Accepted shapes (the Kaggle layout is in `dataset/README.md`, "Exact schema"; the
//! columns are read in `parquet/columns.rs`): float32 or float64 prices and volumes; `open_time` as a
//! timestamp of any unit and time zone (the Kaggle files: the pandas index,
//! `datetime64[ns]`) or as int64 Unix milliseconds; any integer type for
//! `number_of_trades`; the four non-OHLCV columns optional (absent -> `None`). float32
//! values are widened through their shortest decimal representation, so `45134.11f32`
//! travels as `45134.11`, not `45134.109375`.
//!
//! A row that cannot become a valid candle (null or NaN price, negative volume, high below
//! low, open time out of order, …) is a *bad row*: counted, logged with its file and row
//! number, and skipped. A file that cannot be read at all is a [`FileError`].
//!
//! Two pieces live below this file, which imports them: `columns` (a decoded batch as
//! candles: the column names, types and the row-packed layout) and `pages` (the footer's
//! page-size estimate).

use crate::source::file_error::FileError;
use crate::source::regular;
use crate::source::row::{Admit, BadRow, Window, BAD_ROWS_LOGGED};
use crate::source::stats::ReplayStats;
use arrow_array::{Array, ArrayRef};
use arrow_schema::{DataType, Schema};
use candlepipe_model::validate::validate_symbol;
use candlepipe_model::Candle;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::PageIndexPolicy;
use parquet::file::reader::ChunkReader;
use std::fs::File;
use std::path::{Path, PathBuf};

mod columns;
mod pages;

use columns::{Columns, TimeColumn, OHLCV, OPEN_TIME, OPTIONAL_FLOATS, TRADES};
use pages::{page_bytes, plain_bytes};

/// Rows per decoded record batch: small, because up to ~1000 files are open at once
/// (each open file holds one batch, ~100 bytes a row).
pub const BATCH_ROWS: usize = 256;

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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::TimeUnit;
    use bytes::Bytes;
    use candlepipe_datagen::{
        klines, write_klines, FileLayout, MarketOptions, PairSpec, WriteOptions,
    };
    use parquet::file::reader::Length;
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

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
