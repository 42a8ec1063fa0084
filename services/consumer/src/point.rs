//! What the consumer writes: InfluxDB points, one type per measurement.
//!
//! Aggregation ([`crate::rollup`], [`crate::indicator`]) produces these; the sink
//! ([`crate::lineproto`], [`crate::sink`]) encodes and writes them. Every point is a pure
//! function of the 1m candles it covers, which is what makes re-writing it an idempotent
//! upsert (same measurement + tags + timestamp = same series point in InfluxDB).
//!
//! Schema (README, "InfluxDB schema"):
//! * `candle`: tags `symbol`, `interval` (1m/5m/15m/1h), `source`; fields open, high, low,
//!   close, volume, quote_volume, trades (integer), taker_buy_base, taker_buy_quote, vwap;
//!   time = window open time (ms).
//! * `indicator`: tags `symbol`, `interval` (1m/5m/15m/1h: whose closes), `source`; fields
//!   sma_20, ema_12, ema_26, macd, macd_signal, macd_hist, rsi_14, bb_mid, bb_upper, bb_lower,
//!   log_return, volatility_20; time = candle or window open time (ms).

use candlepipe_model::{Interval, Source};
use std::sync::Arc;

/// Measurement names.
pub const CANDLE_MEASUREMENT: &str = "candle";
pub const INDICATOR_MEASUREMENT: &str = "indicator";

/// A 1m candle or a rollup window.
#[derive(Debug, Clone, PartialEq)]
pub struct CandlePoint {
    pub symbol: Arc<str>,
    pub source: Source,
    pub interval: Interval,
    /// Window open time, Unix ms.
    pub time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    pub quote_volume: Option<f64>,
    pub trades: Option<u64>,
    pub taker_buy_base: Option<f64>,
    pub taker_buy_quote: Option<f64>,
    /// Absent when the window's volume is 0.
    pub vwap: Option<f64>,
}

/// The indicators at one 1m candle or one 5m/15m/1h window, over that interval's closes. A
/// field is `None` until it is meaningful (see the
/// README's analytics definitions); a point with no field at all is not written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IndicatorPoint {
    pub symbol: Arc<str>,
    pub source: Option<Source>,
    /// The interval whose closes the indicators run over (`1m`, or a rollup's).
    pub interval: Interval,
    /// Open time of the candle or window, Unix ms.
    pub time: i64,
    pub sma_20: Option<f64>,
    pub ema_12: Option<f64>,
    pub ema_26: Option<f64>,
    pub macd: Option<f64>,
    pub macd_signal: Option<f64>,
    pub macd_hist: Option<f64>,
    pub rsi_14: Option<f64>,
    pub bb_mid: Option<f64>,
    pub bb_upper: Option<f64>,
    pub bb_lower: Option<f64>,
    pub log_return: Option<f64>,
    pub volatility_20: Option<f64>,
}

impl IndicatorPoint {
    /// (field name, value) for every field that is set, in schema order.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        [
            ("sma_20", self.sma_20),
            ("ema_12", self.ema_12),
            ("ema_26", self.ema_26),
            ("macd", self.macd),
            ("macd_signal", self.macd_signal),
            ("macd_hist", self.macd_hist),
            ("rsi_14", self.rsi_14),
            ("bb_mid", self.bb_mid),
            ("bb_upper", self.bb_upper),
            ("bb_lower", self.bb_lower),
            ("log_return", self.log_return),
            ("volatility_20", self.volatility_20),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }
}

/// One point to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Candle(CandlePoint),
    Indicator(IndicatorPoint),
}

impl Point {
    /// The measurement name (metrics label).
    pub fn measurement(&self) -> &'static str {
        match self {
            Point::Candle(_) => CANDLE_MEASUREMENT,
            Point::Indicator(_) => INDICATOR_MEASUREMENT,
        }
    }
}
