//! Binance public-data kline files as replay input, beside the parquet files.
//!
//! Why: most people who want real candles download them from data.binance.vision, as one
//! zip per symbol and month (`BTCUSDT-1m-2024-01.zip`) or day (`BTCUSDT-1m-2024-01-15.zip`),
//! each holding one headerless 12-column CSV. The replay reads those files as downloaded,
//! zipped or unpacked to `.csv`, next to parquet files in the dataset folder.
//!
//! How they join the replay: all files of one symbol form one [`KlineSeries`], which the
//! merge (`merge.rs`) treats like one parquet file: one entry in the time-ordered k-way
//! merge, with a row count and a first/last time for lazy opening. A [`KlineCursor`] reads
//! the series' files one after the other in the order of their periods, streaming each (one
//! open file per symbol at a time), so a symbol's months and days come out as one stream.
//!
//! * The file name gives the symbol (`BTCUSDT` -> `BTC-USDT`, see `name.rs`) and the period
//!   the file covers. The period stands in for parquet's statistics: it bounds the file in
//!   time (`first_ms`/`last_ms`, used to open files lazily and to leave out files outside
//!   `--start`/`--end`), and its minutes stand in for the row count in the progress figure.
//! * `line.rs` turns each line into a candle: ms or µs `open_time` per row, the candle rules
//!   shared with parquet.
//! * `stream.rs` streams the lines out of a `.csv` or out of the CSV inside a `.zip`.
//!
//! Bad input follows the parquet rules. A file that cannot be read (a name that is not a
//! Binance kline name, not a zip, a first data line that is not a kline line, a damaged
//! zip) is a [`FileError`] naming the file, and `--skip-bad-files` skips it. A line that
//! cannot be a candle is a bad row: counted, logged with its file, line and column, skipped.
//! So is a line outside its file's period, and a minute not after the one before it in the
//! symbol's stream: overlapping files (a month and a day inside it) give each minute once,
//! as a parquet file with duplicate rows does.

pub(crate) mod error;
pub(crate) mod line;
mod name;
mod stream;

use crate::source::file_error::FileError;
use crate::source::row::{Admit, Window, BAD_ROWS_LOGGED};
use crate::source::stats::ReplayStats;
use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::Candle;
use line::Fields;
use name::{KlineName, Period};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use stream::{Container, Lines};

pub use error::KlineError;
pub use line::BadLine;

/// Whether a dataset file with this extension is a kline file (`.csv` or `.zip`).
pub fn is_kline_extension(extension: &str) -> bool {
    matches!(extension, "csv" | "zip")
}

/// The replay symbol a kline file's name gives, if it is a kline file name.
pub fn symbol_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    KlineName::parse(name).ok().map(|n| n.symbol)
}

/// One kline file, checked (see [`KlineFile::inspect`]).
#[derive(Debug, Clone)]
pub struct KlineFile {
    pub path: PathBuf,
    /// The time the name says the file covers; every row must be inside it.
    pub period: Period,
    container: Container,
}

impl KlineFile {
    /// Checks a file: its name, its container (a zip's directory) and its first data line,
    /// which must be a kline line (a few KiB are read). Returns the symbol and the file.
    pub fn inspect(path: &Path) -> Result<(String, Self), FileError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let KlineName { symbol, period } = KlineName::parse(&name)?;
        let zipped = path.extension().is_some_and(|e| e == "zip");
        let file = KlineFile {
            container: Container::inspect(path, zipped)?,
            path: path.to_owned(),
            period,
        };
        let mut lines = Lines::open(&file.path, &file.container)?;
        match lines.next_line() {
            Ok(None) => Err(FileError::NoRows),
            Ok(Some((line, bytes))) => match Fields::parse(bytes) {
                Ok(_) => Ok((symbol, file)),
                Err(problem) => Err(KlineError::NotKlines { line, problem }.into()),
            },
            Err(source) => {
                let line = lines.number();
                Err(KlineError::Read {
                    line,
                    cause: source,
                }
                .into())
            }
        }
    }
}

impl KlineFile {
    /// One line of the file as a valid candle of `symbol` inside the file's period.
    fn candle(&self, line: &[u8], symbol: &str) -> Result<Candle, BadLine> {
        let candle = Fields::parse(line)?.candle(symbol)?;
        if !self.period.contains(candle.open_time) {
            return Err(BadLine::OutsidePeriod {
                open_time: candle.open_time,
                period: self.period.to_string(),
            });
        }
        Ok(candle)
    }
}

/// All kline files of one symbol: one input of the merge.
#[derive(Debug, Clone)]
pub struct KlineSeries {
    pub symbol: String,
    /// In reading order: by period start, a longer period first, then by path.
    files: Arc<[KlineFile]>,
}

impl KlineSeries {
    /// The series of `files` (at least one), all of `symbol`. Overlapping periods are
    /// logged: their minutes are read once, the repeats skipped as bad rows.
    pub fn new(symbol: String, mut files: Vec<KlineFile>) -> Self {
        assert!(!files.is_empty(), "a series has at least one file");
        files.sort_by(|a, b| {
            (a.period.start_ms, -a.period.end_ms, &a.path).cmp(&(
                b.period.start_ms,
                -b.period.end_ms,
                &b.path,
            ))
        });
        for pair in files.windows(2) {
            if pair[1].period.start_ms < pair[0].period.end_ms {
                tracing::warn!(
                    file = %pair[1].path.display(),
                    "{} overlaps {}: the minutes already read are skipped as duplicates",
                    pair[1].path.display(),
                    pair[0].path.display()
                );
            }
        }
        KlineSeries {
            symbol,
            files: files.into(),
        }
    }

    /// The files, in reading order.
    pub fn files(&self) -> &[KlineFile] {
        &self.files
    }

    /// The most rows the files can hold (the minutes of their periods): the progress
    /// figure's total, since a CSV's row count is not known before it is read.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.period.minutes()).sum()
    }

    /// The first minute of the earliest period.
    pub fn first_ms(&self) -> i64 {
        self.files[0].period.start_ms
    }

    /// The last minute of the latest period.
    pub fn last_ms(&self) -> i64 {
        self.files
            .iter()
            .map(|f| f.period.end_ms)
            .max()
            .unwrap_or_default()
            - MINUTE_MS
    }

    /// Starts reading the series within `window`. Files are opened as the cursor gets to
    /// them, so this cannot fail.
    pub fn open(&self, window: Window) -> KlineCursor {
        KlineCursor {
            symbol: self.symbol.clone(),
            files: self.files.clone(),
            window,
            at: 0,
            open: None,
            rows_read: 0,
            previous: None,
            finished: false,
        }
    }
}

/// Streams a series' candles; see [`KlineCursor::next_candle`].
pub struct KlineCursor {
    symbol: String,
    files: Arc<[KlineFile]>,
    window: Window,
    /// The file being read or to be read next; `files.len()` past the last.
    at: usize,
    /// Boxed, to keep the cursor (a variant of the merge's `InputCursor`) small.
    open: Option<Box<OpenFile>>,
    /// Progress: the minutes of every file before `at`, plus the lines of the open one
    /// (at most its minutes). Always at most [`KlineSeries::rows`].
    rows_read: u64,
    /// Open time of the last good candle of the series, to reject repeats and rows out of
    /// order, also across files.
    previous: Option<i64>,
    /// Past the last file or the window's end.
    finished: bool,
}

/// The file a cursor is reading.
struct OpenFile {
    lines: Lines,
    /// Lines counted into `rows_read` (at most the period's minutes).
    counted: u64,
    bad_rows: u64,
}

impl KlineCursor {
    /// The next good candle inside the window, or `None` at the end of the series (or the
    /// window). Bad lines are counted in `stats`, logged and skipped; every line read is
    /// counted in `stats.rows_read`. An error names the file in [`KlineCursor::path`].
    pub fn next_candle(&mut self, stats: &ReplayStats) -> Result<Option<Candle>, FileError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let Some(open) = self.open.as_mut() else {
                self.open_next(stats)?;
                continue;
            };
            let file = &self.files[self.at];
            let next = match open.lines.next_line() {
                Ok(next) => next,
                Err(source) => {
                    let line = open.lines.number();
                    return Err(KlineError::Read {
                        line,
                        cause: source,
                    }
                    .into());
                }
            };
            let Some((line, bytes)) = next else {
                self.close_file(stats);
                continue;
            };
            if open.counted < file.period.minutes() {
                open.counted += 1;
                self.rows_read += 1;
                stats.note_rows_read(1);
            }
            let candle = match file.candle(bytes, &self.symbol) {
                Ok(candle) => candle,
                Err(problem) => {
                    bad_line(&file.path, line, &problem, &mut open.bad_rows, stats);
                    continue;
                }
            };
            match self.window.admit(candle.open_time, &mut self.previous) {
                Admit::Emit => return Ok(Some(candle)),
                Admit::Skip => {}
                Admit::End => {
                    self.close_file(stats);
                    self.finished = true;
                    return Ok(None);
                }
                Admit::Bad(problem) => {
                    bad_line(&file.path, line, &problem.into(), &mut open.bad_rows, stats)
                }
            }
        }
    }

    /// Progress units taken out of the series so far (see [`KlineSeries::rows`]).
    pub fn rows_read(&self) -> u64 {
        self.rows_read
    }

    /// The file being read (or the one that failed to open).
    pub fn path(&self) -> &Path {
        let file = self.files.get(self.at).or(self.files.last());
        &file.expect("a series has at least one file").path
    }

    /// Opens the next file that can hold candles inside the window, skipping (and counting
    /// as read) those wholly before it; finishes at the end or past the window.
    fn open_next(&mut self, stats: &ReplayStats) -> Result<(), FileError> {
        while let Some(file) = self.files.get(self.at) {
            if self
                .window
                .end
                .is_some_and(|end| file.period.start_ms >= end)
            {
                break;
            }
            if self.window.start.is_some_and(|s| file.period.end_ms <= s) {
                self.rows_read += file.period.minutes();
                stats.note_rows_read(file.period.minutes());
                self.at += 1;
                continue;
            }
            self.open = Some(Box::new(OpenFile {
                lines: Lines::open(&file.path, &file.container)?,
                counted: 0,
                bad_rows: 0,
            }));
            return Ok(());
        }
        self.finished = true;
        Ok(())
    }

    /// Done with the open file: its minutes without a line count as read, and the bad
    /// lines not logged one by one are summed up.
    fn close_file(&mut self, stats: &ReplayStats) {
        let Some(open) = self.open.take() else {
            return;
        };
        let file = &self.files[self.at];
        let unread = file.period.minutes() - open.counted;
        self.rows_read += unread;
        stats.note_rows_read(unread);
        if open.bad_rows > BAD_ROWS_LOGGED {
            tracing::warn!(
                file = %file.path.display(),
                bad_rows = open.bad_rows,
                "{} bad lines skipped in {} ({} more than logged above)",
                open.bad_rows,
                file.path.display(),
                open.bad_rows - BAD_ROWS_LOGGED
            );
        }
        self.at += 1;
    }
}

/// Counts a bad line and logs it (the first [`BAD_ROWS_LOGGED`] of a file).
fn bad_line(path: &Path, line: u64, problem: &BadLine, bad_rows: &mut u64, stats: &ReplayStats) {
    *bad_rows += 1;
    stats.note_bad_row();
    if *bad_rows <= BAD_ROWS_LOGGED {
        tracing::warn!(file = %path.display(), line, "skipping bad line {line} of {}: {problem}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    /// 2024-01-01T00:00Z.
    const JAN: i64 = 1_704_067_200_000;

    /// A valid kline line at `open_time` (as written: ms or µs) around `price`.
    fn line(open_time: i64, price: f64) -> String {
        format!(
            "{open_time},{:.8},{:.8},{:.8},{:.8},1.50000000,{},{:.8},7,0.50000000,{:.8},0",
            price,
            price + 1.0,
            price - 1.0,
            price + 0.5,
            open_time + 59_999,
            price * 1.5,
            price * 0.5
        )
    }

    /// `minutes` (offsets from `start`) as ms lines with price 100 + offset.
    fn lines(start: i64, minutes: impl IntoIterator<Item = i64>) -> Vec<String> {
        minutes
            .into_iter()
            .map(|m| line(start + m * MINUTE_MS, 100.0 + m as f64))
            .collect()
    }

    fn write_csv(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    fn write_zip(dir: &Path, name: &str, lines: &[String], method: CompressionMethod) -> PathBuf {
        let path = dir.join(name);
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let inner = name.replace(".zip", ".csv");
        let options = SimpleFileOptions::default().compression_method(method);
        zip.start_file(inner, options).unwrap();
        zip.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
        zip.finish().unwrap();
        path
    }

    fn series(paths: &[PathBuf]) -> KlineSeries {
        let mut symbol = None;
        let files = paths
            .iter()
            .map(|p| {
                let (s, file) = KlineFile::inspect(p).unwrap();
                assert_eq!(symbol.get_or_insert(s.clone()), &s);
                file
            })
            .collect();
        KlineSeries::new(symbol.unwrap(), files)
    }

    const ALL: Window = Window {
        start: None,
        end: None,
    };

    /// Reads the series to its end: the candles' minutes (from JAN), the cursor, the stats.
    fn read(series: &KlineSeries, window: Window) -> (Vec<i64>, KlineCursor, ReplayStats) {
        let stats = ReplayStats::default();
        let mut cursor = series.open(window);
        let mut minutes = Vec::new();
        while let Some(c) = cursor.next_candle(&stats).unwrap() {
            assert_eq!(c.symbol, series.symbol);
            minutes.push((c.open_time - JAN) / MINUTE_MS);
        }
        (minutes, cursor, stats)
    }

    #[test]
    fn csv_and_zip_files_of_a_symbol_read_as_one_stream_in_period_order() {
        let dir = tempfile::tempdir().unwrap();
        let feb = JAN + 31 * 1440 * MINUTE_MS;
        let feb2 = feb + 1440 * MINUTE_MS;
        let paths = [
            // listed out of order on purpose
            write_csv(dir.path(), "ETHBTC-1m-2024-02-02.csv", &lines(feb2, [0, 1])),
            write_zip(
                dir.path(),
                "ETHBTC-1m-2024-01.zip",
                &lines(JAN, [0, 1, 2, 5]),
                CompressionMethod::Deflated,
            ),
            write_zip(
                dir.path(),
                "ETHBTC-1m-2024-02-01.zip",
                &lines(feb, [0, 3]),
                CompressionMethod::Stored,
            ),
        ];
        let s = series(&paths);
        assert_eq!(s.symbol, "ETH-BTC");
        assert_eq!(s.first_ms(), JAN);
        assert_eq!(s.last_ms(), feb2 + 1439 * MINUTE_MS);
        assert_eq!(s.rows(), (31 + 2) * 1440);
        let (minutes, cursor, stats) = read(&s, ALL);
        let day = |d: i64, m: i64| d * 1440 + m;
        assert_eq!(
            minutes,
            [0, 1, 2, 5, day(31, 0), day(31, 3), day(32, 0), day(32, 1)]
        );
        // Progress ends at the total: every period's minutes count, gaps included.
        assert_eq!(cursor.rows_read(), s.rows());
        assert_eq!(stats.bad_rows(), 0);
    }

    #[test]
    fn overlapping_files_give_each_minute_once_and_count_the_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let jan15 = JAN + 14 * 1440 * MINUTE_MS;
        let month = lines(JAN, (0..3).chain(14 * 1440..14 * 1440 + 3));
        let paths = [
            write_csv(dir.path(), "BNBUSDT-1m-2024-01.csv", &month),
            // The day inside the month repeats two minutes and adds one.
            write_csv(
                dir.path(),
                "BNBUSDT-1m-2024-01-15.csv",
                &lines(jan15, [1, 2, 3]),
            ),
        ];
        let (minutes, _, stats) = read(&series(&paths), ALL);
        let d14 = 14 * 1440;
        // The month is read first; of the day, only the minute it adds comes out.
        assert_eq!(minutes, [0, 1, 2, d14, d14 + 1, d14 + 2, d14 + 3]);
        assert_eq!(stats.bad_rows(), 2, "the day's two repeats");
    }

    #[test]
    fn the_window_skips_whole_files_without_opening_them() {
        let dir = tempfile::tempdir().unwrap();
        let jan2 = JAN + 1440 * MINUTE_MS;
        let jan3 = jan2 + 1440 * MINUTE_MS;
        let paths = [
            write_csv(dir.path(), "XRPETH-1m-2024-01-01.csv", &lines(JAN, 0..3)),
            write_csv(dir.path(), "XRPETH-1m-2024-01-02.csv", &lines(jan2, 0..3)),
            write_csv(dir.path(), "XRPETH-1m-2024-01-03.csv", &lines(jan3, 0..3)),
        ];
        let s = series(&paths);
        // Damage the first and the last file after the check: opening them would fail.
        std::fs::write(&paths[0], "garbage").unwrap();
        std::fs::write(&paths[2], "garbage").unwrap();
        let window = Window {
            start: Some(jan2 + MINUTE_MS),
            end: Some(jan3),
        };
        let (minutes, cursor, _) = read(&s, window);
        assert_eq!(minutes, [1441, 1442]);
        // The skipped day before counts as read; the cursor stops at the window's end.
        assert_eq!(cursor.rows_read(), 2 * 1440);
    }

    #[test]
    fn header_bom_crlf_and_blank_lines_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let body = lines(JAN, [0, 1]).join("\r\n");
        let text = format!("\u{feff}open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore\r\n{body}\r\n\r\n");
        let path = dir.path().join("BTCUSDT-1m-2024-01-01.csv");
        std::fs::write(&path, text).unwrap();
        let (minutes, _, stats) = read(&series(&[path]), ALL);
        assert_eq!(minutes, [0, 1]);
        assert_eq!(stats.bad_rows(), 0);
    }

    #[test]
    fn rows_outside_the_named_period_are_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        // The 2nd of January's file holding a row of the 1st and one of the 3rd.
        let jan2 = JAN + 1440 * MINUTE_MS;
        let rows = [
            line(jan2, 10.0),
            line(JAN, 10.0),
            line(jan2 + 1440 * MINUTE_MS, 10.0),
            line(jan2 + MINUTE_MS, 10.0),
        ];
        let path = write_csv(dir.path(), "BTCUSDT-1m-2024-01-02.csv", &rows);
        let (minutes, _, stats) = read(&series(&[path]), ALL);
        assert_eq!(minutes, [1440, 1441]);
        assert_eq!(stats.bad_rows(), 2);
    }

    /// The error text of inspecting `name` written with `bytes`.
    fn inspect_error(name: &str, bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        KlineFile::inspect(&path).unwrap_err().to_string()
    }

    #[test]
    fn unreadable_files_fail_the_check_saying_why() {
        let good = lines(JAN, [0]).join("\n");
        let name = "BTCUSDT-1m-2024-01-01";
        let csv = format!("{name}.csv");
        let zip = format!("{name}.zip");
        assert_eq!(inspect_error(&csv, b""), "file is empty (0 bytes)");
        assert_eq!(inspect_error(&csv, b"\n\n"), "holds no rows");
        assert_eq!(inspect_error(&csv, b"open_time,open\n"), "holds no rows");
        let err = inspect_error(&csv, b"hello,world\n");
        assert_eq!(
            err,
            "not a Binance kline CSV: line 1: 2 columns; a Binance kline line has 12"
        );
        let err = inspect_error(&csv, good.replace(",7,", ",x,").as_bytes());
        assert!(
            err.contains("line 1: column 9 (`number_of_trades`) is not a whole number"),
            "{err}"
        );
        let err = inspect_error(&zip, good.as_bytes());
        assert!(err.starts_with("not a readable zip file"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(&zip);
        let mut two = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for inner in ["a.csv", "b.csv"] {
            two.start_file(inner, SimpleFileOptions::default()).unwrap();
            two.write_all(good.as_bytes()).unwrap();
        }
        two.finish().unwrap();
        let err = KlineFile::inspect(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            "the zip holds 2 files; a Binance kline zip holds one CSV"
        );
    }

    #[test]
    fn a_damaged_zip_is_an_error_naming_the_last_good_line() {
        let dir = tempfile::tempdir().unwrap();
        let rows = lines(JAN, 0..1440);
        for method in [CompressionMethod::Stored, CompressionMethod::Deflated] {
            let path = write_zip(dir.path(), "BTCUSDT-1m-2024-01-01.zip", &rows, method);
            let s = series(std::slice::from_ref(&path));
            // Flip bytes in the middle of the entry's data (the directory stays intact).
            let mut bytes = std::fs::read(&path).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle..middle + 8]
                .iter_mut()
                .for_each(|b| *b ^= 0x5a);
            std::fs::write(&path, bytes).unwrap();

            let stats = ReplayStats::default();
            let mut cursor = s.open(ALL);
            let mut good = 0;
            let err = loop {
                match cursor.next_candle(&stats) {
                    Ok(Some(_)) => good += 1,
                    Ok(None) => panic!("{method:?}: damage not noticed after {good} candles"),
                    Err(e) => break e.to_string(),
                }
            };
            assert!(
                err.starts_with("cannot read past line ") && err.contains("damaged zip entry"),
                "{method:?}: {err}"
            );
            assert_eq!(cursor.path(), path);
        }
    }
}
