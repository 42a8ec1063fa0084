//! The candle: one symbol's open/high/low/close/volume over one minute.
//!
//! Every stage speaks this type: the replay and live sources build it, the codec puts it on
//! Kafka, the consumer aggregates it. Prices and volumes are `f64`; the optional fields are
//! the ones Binance files carry but Yahoo does not (quote volume, trade count, taker volumes),
//! and they stay `None` rather than becoming zeros, so an average never mixes "unknown" with
//! "nothing traded".

use std::fmt;
use std::str::FromStr;

/// Milliseconds in one minute: the spacing of `open_time` for 1m candles.
pub const MINUTE_MS: i64 = 60_000;

/// Where a candle came from. Kept on every message and every InfluxDB point (tag `source`)
/// so live and replayed data stay distinguishable after a runtime mode switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// Replayed from the parquet dataset.
    Replay,
    /// Polled from the Yahoo Finance chart API.
    Live,
}

impl Source {
    /// The wire and tag spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Replay => "replay",
            Source::Live => "live",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Source {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replay" => Ok(Source::Replay),
            "live" => Ok(Source::Live),
            other => Err(format!(
                "unknown source {other:?} (expected \"replay\" or \"live\")"
            )),
        }
    }
}

/// A 1-minute OHLCV candle as it travels on Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct Candle {
    /// Trading pair, e.g. `BTC-USDT` (replay) or `BTC-USD` (live). Kafka key.
    pub symbol: String,
    /// Replay or live.
    pub source: Source,
    /// Candle open time, Unix milliseconds, minute aligned, UTC.
    pub open_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    /// Base asset volume.
    pub volume: f64,
    /// Quote asset volume, when the source knows it.
    pub quote_volume: Option<f64>,
    /// Number of trades in the minute, when the source knows it.
    pub trades: Option<u64>,
    /// Taker buy base asset volume, when known.
    pub taker_buy_base: Option<f64>,
    /// Taker buy quote asset volume, when known.
    pub taker_buy_quote: Option<f64>,
    /// `false` for a minute still in progress; a later message for the same
    /// (symbol, open_time) replaces it.
    pub closed: bool,
    /// When the producer handed the message to Kafka, Unix ms (end-to-end latency).
    pub produced_at: Option<i64>,
}

impl Candle {
    /// A closed candle with only OHLCV set: the common shape in tests and in live mode.
    #[allow(clippy::too_many_arguments)]
    pub fn ohlcv(
        symbol: impl Into<String>,
        source: Source,
        open_time: i64,
        open: f64,
        high: f64,
        low: f64,
        close: f64,
        volume: f64,
    ) -> Self {
        Candle {
            symbol: symbol.into(),
            source,
            open_time,
            open,
            high,
            low,
            close,
            volume,
            quote_volume: None,
            trades: None,
            taker_buy_base: None,
            taker_buy_quote: None,
            closed: true,
            produced_at: None,
        }
    }
}

/// The candle intervals candlepipe writes: the 1m input and its rollups.
/// The spelling is the InfluxDB `interval` tag and the Grafana variable value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Interval {
    /// The input interval (and so the default).
    #[default]
    M1,
    M5,
    M15,
    H1,
}

impl Interval {
    /// All intervals, shortest first.
    pub const ALL: [Interval; 4] = [Interval::M1, Interval::M5, Interval::M15, Interval::H1];
    /// The rollups computed from 1m candles.
    pub const ROLLUPS: [Interval; 3] = [Interval::M5, Interval::M15, Interval::H1];

    /// Tag spelling: `1m`, `5m`, `15m`, `1h`.
    pub fn as_str(self) -> &'static str {
        match self {
            Interval::M1 => "1m",
            Interval::M5 => "5m",
            Interval::M15 => "15m",
            Interval::H1 => "1h",
        }
    }

    /// Window length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            Interval::M1 => MINUTE_MS,
            Interval::M5 => 5 * MINUTE_MS,
            Interval::M15 => 15 * MINUTE_MS,
            Interval::H1 => 60 * MINUTE_MS,
        }
    }

    /// Start of the UTC-aligned window holding `t` (ms), like pandas
    /// `resample(label="left", closed="left")`.
    pub fn window_start(self, t: i64) -> i64 {
        t.div_euclid(self.millis()) * self.millis()
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_start_is_utc_aligned_and_left_closed() {
        let t = 1_614_556_800_000; // 2021-03-01T00:00Z, an hour boundary
        assert_eq!(Interval::H1.window_start(t), t);
        assert_eq!(Interval::H1.window_start(t + 59 * MINUTE_MS), t);
        assert_eq!(
            Interval::H1.window_start(t + 60 * MINUTE_MS),
            t + 60 * MINUTE_MS
        );
        assert_eq!(Interval::M15.window_start(t + 14 * MINUTE_MS), t);
        assert_eq!(
            Interval::M5.window_start(t + 7 * MINUTE_MS),
            t + 5 * MINUTE_MS
        );
        // negative times floor, not truncate
        assert_eq!(Interval::M5.window_start(-1), -5 * MINUTE_MS);
    }

    #[test]
    fn source_round_trips_and_rejects_unknown() {
        for s in [Source::Replay, Source::Live] {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
        }
        assert!("binance".parse::<Source>().unwrap_err().contains("binance"));
    }
}
