//! One line of a Binance kline CSV, as bytes, into a validated [`Candle`].
//!
//! A line has 12 comma-separated columns ([`COLUMNS`]). Parsing is done on the line's bytes
//! in place, with no allocation per field (the hot loop of a CSV replay): the numbers go
//! through the standard library's `str::parse`, which is exact (correctly rounded, so
//! `0.07451000` is the same f64 as `0.07451` in a float64 parquet file) and allocation free.
//!
//! `open_time` is Unix milliseconds in files before 2025 and microseconds in spot files
//! from 2025-01-01 on. The unit is told per row by magnitude ([`MICROS_FROM`]), never by a
//! date, so a file that mixes both reads right.
//!
//! Two steps, so the file check can use the first: [`Fields::parse`] checks the shape (12
//! columns, numbers where numbers belong) and [`Fields::candle`] applies the candle rules
//! shared with parquet ([`validate`], the time unit).

use crate::source::row::BadRow;
use arrow_schema::TimeUnit;
use candlepipe_model::validate::{validate, MAX_OPEN_TIME_MS, MIN_OPEN_TIME_MS};
use candlepipe_model::{Candle, Source};
use thiserror::Error;

/// The columns of a Binance kline line, in order.
pub const COLUMNS: [&str; 12] = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_asset_volume",
    "number_of_trades",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
    "ignore",
];
const OPEN_TIME: usize = 0;
const TRADES: usize = 8;
/// Float columns: OHLCV, then quote volume and the two taker volumes.
const FLOATS: [usize; 8] = [1, 2, 3, 4, 5, 7, 9, 10];

/// `open_time` values from here on are microseconds, below it milliseconds. 10^14 ms is
/// the year 5138 and 10^14 µs is 1973, so the two ranges in use (2000..2100) are far
/// from it on both sides.
pub const MICROS_FROM: i64 = 100_000_000_000_000;
// Every open time a candle may have (2000..2100) is below it in ms and above it in µs.
const _: () = assert!(MAX_OPEN_TIME_MS < MICROS_FROM && MIN_OPEN_TIME_MS * 1_000 >= MICROS_FROM);

/// Longest excerpt of a bad field quoted in a message.
const QUOTE_MAX: usize = 40;

/// Why a line is not a candle. Shown after the file and line number.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BadLine {
    #[error("not UTF-8 text")]
    NotText,
    #[error("{0} columns; a Binance kline line has 12")]
    Columns(usize),
    #[error("column {} (`{}`) is not {expected}: {text:?}", .column + 1, COLUMNS[*.column])]
    Field {
        column: usize,
        expected: &'static str,
        text: String,
    },
    #[error("open_time {open_time} is outside {period}, the period in the file's name")]
    OutsidePeriod { open_time: i64, period: String },
    #[error(transparent)]
    Row(#[from] BadRow),
}

/// Whether the first line of a file is a header (some Binance files have one): its first
/// column, without case, spaces and underscores, is `opentime`.
pub fn is_header(line: &[u8]) -> bool {
    let first = line.split(|b| *b == b',').next().unwrap_or_default();
    let mut name = first
        .iter()
        .filter(|b| !matches!(b, b' ' | b'_' | b'"'))
        .map(u8::to_ascii_lowercase);
    b"opentime".iter().all(|want| name.next() == Some(*want)) && name.next().is_none()
}

/// The numbers of one line, parsed but not yet checked as a candle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fields {
    /// As written: milliseconds or microseconds.
    open_time: i64,
    /// In [`FLOATS`] order.
    floats: [f64; 8],
    trades: u64,
}

impl Fields {
    /// Splits and parses a line (without its line break).
    pub fn parse(line: &[u8]) -> Result<Self, BadLine> {
        let text = std::str::from_utf8(line).map_err(|_| BadLine::NotText)?;
        let mut columns = [""; 12];
        let mut found = 0;
        for column in text.split(',') {
            if found < columns.len() {
                columns[found] = column;
            }
            found += 1;
        }
        if found != columns.len() {
            return Err(BadLine::Columns(found));
        }
        let field = |column: usize, expected: &'static str| BadLine::Field {
            column,
            expected,
            text: columns[column].chars().take(QUOTE_MAX).collect(),
        };
        let open_time = columns[OPEN_TIME]
            .parse::<i64>()
            .map_err(|_| field(OPEN_TIME, "an integer"))?;
        let mut floats = [0.0; 8];
        for (value, column) in floats.iter_mut().zip(FLOATS) {
            *value = columns[column]
                .parse()
                .map_err(|_| field(column, "a number"))?;
        }
        let trades = columns[TRADES]
            .parse()
            .map_err(|_| field(TRADES, "a whole number >= 0"))?;
        Ok(Fields {
            open_time,
            floats,
            trades,
        })
    }

    /// `open_time` in Unix ms: microseconds (see [`MICROS_FROM`]) must be a whole ms.
    pub fn open_time_ms(&self) -> Result<i64, BadRow> {
        let t = self.open_time;
        if t < MICROS_FROM {
            return Ok(t);
        }
        if t % 1_000 != 0 {
            return Err(BadRow::OpenTimeUnit {
                value: t,
                unit: TimeUnit::Microsecond,
            });
        }
        Ok(t / 1_000)
    }

    /// The candle, validated like a parquet row.
    pub fn candle(&self, symbol: &str) -> Result<Candle, BadRow> {
        let [open, high, low, close, volume, quote_volume, taker_base, taker_quote] = self.floats;
        let candle = Candle {
            symbol: symbol.to_owned(),
            source: Source::Replay,
            open_time: self.open_time_ms()?,
            open,
            high,
            low,
            close,
            volume,
            quote_volume: Some(quote_volume),
            trades: Some(self.trades),
            taker_buy_base: Some(taker_base),
            taker_buy_quote: Some(taker_quote),
            closed: true,
            produced_at: None,
        };
        validate(&candle)?;
        Ok(candle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real line of `BTCUSDT-1m-2024-01.csv` (2024-01-01T00:00Z).
    const MS_LINE: &[u8] = b"1704067200000,42283.58000000,42298.62000000,42261.02000000,42298.61000000,35.92724000,1704067259999,1519159.27058520,1327,20.10416000,850040.49307270,0";
    /// The same minute as a 2025-style spot line (microseconds).
    const US_LINE: &[u8] = b"1704067200000000,42283.58000000,42298.62000000,42261.02000000,42298.61000000,35.92724000,1704067259999999,1519159.27058520,1327,20.10416000,850040.49307270,0";

    #[test]
    fn a_binance_line_becomes_the_candle_with_every_field() {
        let c = Fields::parse(MS_LINE).unwrap().candle("BTC-USDT").unwrap();
        let mut want = Candle::ohlcv(
            "BTC-USDT",
            Source::Replay,
            1_704_067_200_000,
            42283.58,
            42298.62,
            42261.02,
            42298.61,
            35.92724,
        );
        want.quote_volume = Some(1519159.2705852);
        want.trades = Some(1327);
        want.taker_buy_base = Some(20.10416);
        want.taker_buy_quote = Some(850040.4930727);
        assert_eq!(c, want);
    }

    #[test]
    fn microsecond_times_are_told_by_magnitude() {
        let ms = Fields::parse(MS_LINE).unwrap();
        let us = Fields::parse(US_LINE).unwrap();
        assert_eq!(us.open_time_ms(), Ok(1_704_067_200_000));
        assert_eq!(us.candle("B-Q").unwrap(), ms.candle("B-Q").unwrap());
        let mut odd = us;
        odd.open_time += 1;
        let err = odd.candle("B-Q").unwrap_err().to_string();
        assert!(
            err.contains("1704067200000001") && err.contains("whole millisecond"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_field_is_named_by_column_number_and_name() {
        let line = |replace: &str, with: &str| {
            String::from_utf8(MS_LINE.to_vec())
                .unwrap()
                .replacen(replace, with, 1)
                .into_bytes()
        };
        let cases = [
            (
                line("42298.62000000", "4x"),
                "column 3 (`high`) is not a number: \"4x\"",
            ),
            (
                line("1704067200000", ""),
                "column 1 (`open_time`) is not an integer: \"\"",
            ),
            (
                line(",1327,", ",-3,"),
                "column 9 (`number_of_trades`) is not a whole number >= 0: \"-3\"",
            ),
            (line(",0", ""), "11 columns; a Binance kline line has 12"),
            (line(",0", ",0,0"), "13 columns"),
        ];
        for (bytes, want) in cases {
            let err = Fields::parse(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        assert_eq!(Fields::parse(b"\xff,1"), Err(BadLine::NotText));
        let long = Fields::parse(&line("42298.62000000", &"x".repeat(500)))
            .unwrap_err()
            .to_string();
        assert!(
            long.contains(&format!("{:?}", "x".repeat(QUOTE_MAX))),
            "{long}"
        );
        assert!(
            !long.contains(&"x".repeat(QUOTE_MAX + 1)),
            "quoted in full: {long}"
        );
    }

    #[test]
    fn candle_rules_are_the_parquet_ones() {
        let with = |f: fn(&mut Fields)| {
            let mut fields = Fields::parse(MS_LINE).unwrap();
            f(&mut fields);
            fields.candle("B-Q").unwrap_err().to_string()
        };
        assert!(with(|f| f.floats[1] = 1.0).contains("high 1 is below low 42261.02"));
        assert!(with(|f| f.floats[4] = -1.0).contains("`volume` is negative"));
        assert!(with(|f| f.floats[0] = f64::NAN).contains("`open` is not a finite number"));
        assert!(with(|f| f.open_time += 30_000).contains("not aligned to a minute"));
        assert!(with(|f| f.open_time = 60_000).contains("outside 2000-01-01..2100-01-01"));
    }

    #[test]
    fn headers_are_recognised_by_their_first_column() {
        assert!(is_header(b"open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,taker_buy_quote_volume,ignore"));
        assert!(is_header(b"Open time,Open,High"));
        assert!(is_header(b"\"open_time\",\"open\""));
        assert!(!is_header(MS_LINE));
        assert!(!is_header(b"open_timestamp,open"));
        assert!(!is_header(b""));
    }
}
