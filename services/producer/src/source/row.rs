//! The rules every replay cursor applies to a row, parquet and kline files alike: why a
//! row is skipped ([`BadRow`]), the part of the replay a cursor delivers ([`Window`]) and
//! what a cursor does with a valid candle ([`Admit`]). Both readers raise these, so they
//! live below both.

use arrow_schema::TimeUnit;
use candlepipe_model::InvalidCandle;
use thiserror::Error;

/// Bad rows logged one by one per file and pass; the rest are counted and summarised.
pub(crate) const BAD_ROWS_LOGGED: u64 = 10;

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
    Invalid(InvalidCandle),
}

impl From<InvalidCandle> for BadRow {
    fn from(e: InvalidCandle) -> Self {
        BadRow::Invalid(e)
    }
}

/// The part of the replay a cursor delivers: `[start, end)` in original open time, ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// What a cursor does with a valid candle (see [`Window::admit`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Admit {
    /// Hand it out.
    Emit,
    /// Before the window: read on.
    Skip,
    /// At or past the window's end: the stream is done.
    End,
    /// Not after the stream's previous good candle: a bad row.
    Bad(BadRow),
}

impl Window {
    /// The order and window rules every cursor applies (parquet and kline files alike):
    /// `previous` is the open time of the stream's last good candle, moved on to
    /// `open_time` when the candle is in order.
    pub fn admit(&self, open_time: i64, previous: &mut Option<i64>) -> Admit {
        if let Some(previous) = previous.filter(|p| open_time <= *p) {
            return Admit::Bad(BadRow::OutOfOrder {
                open_time,
                previous,
            });
        }
        if self.end.is_some_and(|end| open_time >= end) {
            return Admit::End;
        }
        *previous = Some(open_time);
        if self.start.is_some_and(|start| open_time < start) {
            return Admit::Skip;
        }
        Admit::Emit
    }
}
