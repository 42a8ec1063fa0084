//! One decoded record batch of a parquet file, turned into candles: which columns a
//! candle needs ([`OPEN_TIME`], [`OHLCV`], the optional ones), how their many accepted
//! types (float32/float64, timestamps of any unit, any integer) are read, and the
//! row-packed [`Columns`] a cursor takes its candles from. The file-level work (footer,
//! schema check, streaming) is in `parquet.rs`, which imports this module and not the
//! other way round.

use crate::source::row::BadRow;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    ArrowPrimitiveType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, TimeUnit};
use candlepipe_model::validate::validate;
use candlepipe_model::{Candle, Source};

/// The timestamp column.
pub(super) const OPEN_TIME: &str = "open_time";
/// Required price and volume columns, in [`Candle`] order.
pub(super) const OHLCV: [&str; 5] = ["open", "high", "low", "close", "volume"];
pub(super) const QUOTE_VOLUME: &str = "quote_asset_volume";
pub(super) const TRADES: &str = "number_of_trades";
pub(super) const TAKER_BASE: &str = "taker_buy_base_asset_volume";
pub(super) const TAKER_QUOTE: &str = "taker_buy_quote_asset_volume";
/// Optional float columns.
pub(super) const OPTIONAL_FLOATS: [&str; 3] = [QUOTE_VOLUME, TAKER_BASE, TAKER_QUOTE];

/// The candle columns of one decoded batch, laid out row by row. The merge takes one row of
/// each of up to ~1000 open files in turn, so a row is always cold in the CPU cache: spread
/// over ten column arrays it costs ten cache misses, packed in one [`Row`] one or two.
pub(super) struct Columns {
    pub(super) len: usize,
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
    pub(super) fn new(batch: &RecordBatch) -> Result<Self, ArrowError> {
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
    pub(super) fn candle(&self, i: usize, symbol: &str) -> Result<Candle, BadRow> {
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
pub(super) enum TimeColumn {
    Timestamp(ArrayRef, TimeUnit),
    Millis(ArrayRef),
}

impl TimeColumn {
    pub(super) fn new(a: &ArrayRef) -> Option<Self> {
        match a.data_type() {
            DataType::Timestamp(unit, _) => Some(TimeColumn::Timestamp(a.clone(), *unit)),
            DataType::Int64 | DataType::UInt64 => Some(TimeColumn::Millis(a.clone())),
            _ => None,
        }
    }

    /// Row `i` in Unix ms; `Ok(None)` when null.
    pub(super) fn ms(&self, i: usize) -> Result<Option<i64>, BadRow> {
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
}
