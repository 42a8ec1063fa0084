//! Indicators over a sequence of closes: what each one means, how it is advanced by one
//! candle, and the [`Walk`] that recomputes a stretch of a series.
//!
//! The same definitions run over every interval's closes: the 1m candles' own closes, and
//! the closes of the 5m, 15m and 1h windows (a window's close is its newest candle's close,
//! so the window still filling counts with its latest close). `state.rs` walks the 1m
//! series and `window_series.rs` the rollup series; both go through [`Walk`], so one
//! formula serves four intervals.
//!
//! Two kinds, stored differently:
//!
//! * **Recursive** (EMA 12/26, MACD signal = EMA 9 of MACD, RSI 14 Wilder averages): each
//!   value depends on the whole past, so the state keeps a [`Recursion`] snapshot *per
//!   candle*. A late or replaced candle then restarts the recursion from the snapshot of the
//!   candle before it, instead of from the beginning of time.
//! * **Rolling** (SMA 20, Bollinger 20/2, volatility 20): a pure function of the last 20
//!   closes (or log returns), computed directly by [`Rolling`] with a fixed summation order,
//!   so a value depends only on its window, never on how the stream got there. Running
//!   sums with add/remove would drift with the history and make a rebuilt state differ
//!   from an uninterrupted one.
//!
//! Definitions (README "Analytics definitions", pandas conventions):
//! sma_20 = mean of the last 20 closes; ema_n: α = 2/(n+1) seeded with the first close
//! (`ewm(span=n, adjust=False)`); macd = ema_12 − ema_26, which is 0 at the first candle;
//! macd_signal = ema_9 of macd over the full macd series from the first candle (what
//! `macd.ewm(span=9, adjust=False)` gives, i.e. seeded with macd = 0); macd_hist =
//! macd − macd_signal; rsi_14: gains and losses of the close-to-close changes smoothed with
//! α = 1/14 seeded with the first change (`ewm(alpha=1/14, adjust=False)`; the first candle
//! has no change), rsi = 100 − 100 / (1 + gain/loss), 100 when loss is 0 and gain is not, 50
//! when both are 0; bb_mid = sma_20, bb_upper/lower = bb_mid ± 2 · population std of the
//! last 20 closes; log_return = ln(close / previous close); volatility_20 = sample std of
//! the last 20 log returns.
//!
//! Warm-up: the recursions start at the first candle, but a field is written only from the
//! 1-based candle index where it is meaningful ([`FirstIndex`]). Past index 34 every field
//! is written, so the index only matters at the start of a symbol's history; a rebuilt state
//! (re-applied recent history) is past it too, and its EMA seeds have faded below 1e-12
//! after a few hundred candles, so it writes what an uninterrupted run writes.

use crate::point::{IndicatorPoint, Point};
use candlepipe_model::{Interval, Source};
use std::sync::Arc;

/// Length of the rolling windows (SMA, Bollinger, volatility).
pub const WINDOW: usize = 20;

/// First 1-based candle index at which each field is written.
pub struct FirstIndex;

impl FirstIndex {
    pub const LOG_RETURN: u64 = 2;
    pub const EMA_12: u64 = 12;
    pub const RSI_14: u64 = 15;
    pub const SMA_20: u64 = 20;
    pub const VOLATILITY_20: u64 = 21;
    pub const EMA_26: u64 = 26;
    pub const MACD: u64 = 26;
    pub const MACD_SIGNAL: u64 = 34;
    /// From here on every field is written.
    pub const ALL: u64 = 34;
}

const ALPHA_12: f64 = 2.0 / 13.0;
const ALPHA_26: f64 = 2.0 / 27.0;
const ALPHA_9: f64 = 2.0 / 10.0;
const ALPHA_RSI: f64 = 1.0 / 14.0;

/// One exponential smoothing step, `ewm(adjust=False)`: (1 − α)·previous + α·value.
fn smooth(previous: f64, value: f64, alpha: f64) -> f64 {
    (1.0 - alpha) * previous + alpha * value
}

/// The recursive indicator state right after one candle (40 bytes: the history stores one
/// per retained candle).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Recursion {
    pub ema_12: f64,
    pub ema_26: f64,
    /// EMA 9 of macd.
    pub macd_signal: f64,
    /// Wilder-smoothed gain; meaningful from the 2nd candle.
    pub avg_gain: f64,
    /// Wilder-smoothed loss; meaningful from the 2nd candle.
    pub avg_loss: f64,
}

impl Recursion {
    /// The state after a symbol's first candle: every EMA seeded with it.
    pub fn first(close: f64) -> Self {
        Recursion {
            ema_12: close,
            ema_26: close,
            macd_signal: 0.0, // macd = close - close
            avg_gain: 0.0,
            avg_loss: 0.0,
        }
    }

    /// The state after the candle with 1-based `index` >= 2, given the state after the
    /// previous candle and its close.
    pub fn next(&self, previous_close: f64, close: f64, index: u64) -> Self {
        debug_assert!(index >= 2);
        let ema_12 = smooth(self.ema_12, close, ALPHA_12);
        let ema_26 = smooth(self.ema_26, close, ALPHA_26);
        let change = close - previous_close;
        let gain = change.max(0.0);
        let loss = (-change).max(0.0);
        let (avg_gain, avg_loss) = if index == 2 {
            (gain, loss) // the first change seeds the averages
        } else {
            (
                smooth(self.avg_gain, gain, ALPHA_RSI),
                smooth(self.avg_loss, loss, ALPHA_RSI),
            )
        };
        Recursion {
            ema_12,
            ema_26,
            macd_signal: smooth(self.macd_signal, ema_12 - ema_26, ALPHA_9),
            avg_gain,
            avg_loss,
        }
    }

    /// rsi_14 from the smoothed averages.
    fn rsi(&self) -> f64 {
        if self.avg_loss == 0.0 {
            if self.avg_gain == 0.0 {
                50.0
            } else {
                100.0
            }
        } else {
            100.0 - 100.0 / (1.0 + self.avg_gain / self.avg_loss)
        }
    }
}

/// ln(close / previous close): a candle's log return, from the 2nd candle on.
pub fn log_return(previous_close: f64, close: f64) -> f64 {
    (close / previous_close).ln()
}

/// Mean and sum of squared deviations of a window, summed in a fixed order (four lanes in
/// time order, then combined pairwise) so identical windows always give identical bits.
fn mean_and_m2(xs: &[f64; WINDOW]) -> (f64, f64) {
    fn lanes(xs: &[f64; WINDOW], f: impl Fn(f64) -> f64) -> f64 {
        let mut acc = [0.0f64; 4];
        for chunk in xs.chunks_exact(4) {
            for (a, &x) in acc.iter_mut().zip(chunk) {
                *a += f(x);
            }
        }
        (acc[0] + acc[1]) + (acc[2] + acc[3])
    }
    let mean = lanes(xs, |x| x) / WINDOW as f64;
    let m2 = lanes(xs, |x| (x - mean) * (x - mean));
    (mean, m2)
}

/// The last [`WINDOW`] values of a series, contiguous and oldest first, maintained while a
/// walk goes through the history (amortized O(1) per push, no allocation).
#[derive(Debug, Clone)]
pub struct Trailing {
    buf: [f64; 2 * WINDOW],
    len: usize,
}

impl Default for Trailing {
    fn default() -> Self {
        Trailing {
            buf: [0.0; 2 * WINDOW],
            len: 0,
        }
    }
}

impl Trailing {
    /// Appends the newest value.
    pub fn push(&mut self, x: f64) {
        if self.len == self.buf.len() {
            self.buf.copy_within(WINDOW.., 0);
            self.len = WINDOW;
        }
        self.buf[self.len] = x;
        self.len += 1;
    }

    /// The last [`WINDOW`] values, oldest first, once that many were pushed.
    pub fn window(&self) -> Option<&[f64; WINDOW]> {
        self.buf[..self.len]
            .last_chunk::<WINDOW>()
            .filter(|_| self.len >= WINDOW)
    }
}

/// The rolling windows a walk keeps: closes, and log returns from the 2nd candle on.
#[derive(Debug, Clone, Default)]
pub struct Rolling {
    pub closes: Trailing,
    pub log_returns: Trailing,
}

/// Which series a point belongs to: symbol, source and the interval whose closes it runs
/// over.
pub type Series<'a> = (&'a Arc<str>, Source, Interval);

/// The indicator point of the candle with 1-based `index`, from its recursion snapshot, its
/// log return (ignored at index 1) and the rolling windows ending at it. Fields before their
/// [`FirstIndex`] are `None`.
#[inline]
pub fn indicator_point(
    (symbol, source, interval): Series<'_>,
    time: i64,
    index: u64,
    state: &Recursion,
    log_return: f64,
    rolling: &Rolling,
) -> IndicatorPoint {
    let from = |first: u64, v: f64| (index >= first).then_some(v);
    let macd = state.ema_12 - state.ema_26;
    // (sma, band half-width) over the last 20 closes
    let bollinger = rolling
        .closes
        .window()
        .filter(|_| index >= FirstIndex::SMA_20)
        .map(|closes| {
            let (mean, m2) = mean_and_m2(closes);
            (mean, 2.0 * (m2 / WINDOW as f64).sqrt())
        });
    let volatility = rolling
        .log_returns
        .window()
        .filter(|_| index >= FirstIndex::VOLATILITY_20)
        .map(|returns| (mean_and_m2(returns).1 / (WINDOW - 1) as f64).sqrt());
    IndicatorPoint {
        symbol: Arc::clone(symbol),
        source: Some(source),
        interval,
        time,
        sma_20: bollinger.map(|(mean, _)| mean),
        ema_12: from(FirstIndex::EMA_12, state.ema_12),
        ema_26: from(FirstIndex::EMA_26, state.ema_26),
        macd: from(FirstIndex::MACD, macd),
        macd_signal: from(FirstIndex::MACD_SIGNAL, state.macd_signal),
        macd_hist: from(FirstIndex::MACD_SIGNAL, macd - state.macd_signal),
        rsi_14: (index >= FirstIndex::RSI_14).then(|| state.rsi()),
        bb_mid: bollinger.map(|(mean, _)| mean),
        bb_upper: bollinger.map(|(mean, band)| mean + band),
        bb_lower: bollinger.map(|(mean, band)| mean - band),
        log_return: from(FirstIndex::LOG_RETURN, log_return),
        volatility_20: volatility,
    }
}

/// A pass over a series of closes from one position to the newest: recomputes each
/// position's [`Recursion`] snapshot from its predecessor's and, when points are wanted,
/// emits each position's indicator point (none for a series' first close, which has no
/// field at all).
pub struct Walk<'a> {
    symbol: &'a Arc<str>,
    source: Source,
    interval: Interval,
    /// 1-based warm-up index of the next position.
    index: u64,
    /// Snapshot and close of the previous position.
    previous: Option<(Recursion, f64)>,
    rolling: Rolling,
    out: Option<&'a mut Vec<Point>>,
}

impl<'a> Walk<'a> {
    /// A walk starting at the position with 1-based warm-up `index`, after a predecessor
    /// whose snapshot and close are `previous` (`None` at a series' first close), with the
    /// rolling windows ending at that predecessor ([`resume_rolling`]).
    pub fn new(
        (symbol, source, interval): Series<'a>,
        index: u64,
        previous: Option<(Recursion, f64)>,
        rolling: Rolling,
        out: Option<&'a mut Vec<Point>>,
    ) -> Self {
        Walk {
            symbol,
            source,
            interval,
            index,
            previous,
            rolling,
            out,
        }
    }

    /// Advances over the next position (open `time`, `close`) and returns its snapshot.
    #[inline]
    pub fn step(&mut self, time: i64, close: f64) -> Recursion {
        let index = self.index;
        let state = match self.previous {
            None => Recursion::first(close),
            Some((state, previous_close)) => state.next(previous_close, close, index),
        };
        if let Some(out) = self.out.as_deref_mut() {
            self.rolling.closes.push(close);
            if let Some((_, previous_close)) = self.previous {
                let r = log_return(previous_close, close);
                self.rolling.log_returns.push(r);
                out.push(Point::Indicator(indicator_point(
                    (self.symbol, self.source, self.interval),
                    time,
                    index,
                    &state,
                    r,
                    &self.rolling,
                )));
            }
        }
        self.previous = Some((state, close));
        self.index += 1;
        state
    }

    /// The rolling windows ending at the last position walked (kept to resume the next
    /// walk when only appends follow).
    pub fn into_rolling(self) -> Rolling {
        self.rolling
    }
}

/// The rolling windows ending just before position `from` of a series whose closes are
/// `close_at(0..)`: resumed from `cached` (windows after `seen` positions) when nothing
/// before `from` changed since, else rebuilt from the [`WINDOW`] closes before `from` (and
/// the one before those, for the first log return). Log returns are recomputed from the
/// closes: same inputs, same bits.
pub fn resume_rolling(
    cached: Option<(usize, Rolling)>,
    from: usize,
    close_at: impl Fn(usize) -> f64,
) -> Rolling {
    let (mut rolling, start) = match cached {
        Some((seen, rolling)) if seen <= from => (rolling, seen),
        _ => (Rolling::default(), from.saturating_sub(WINDOW - 1)),
    };
    let mut previous = start.checked_sub(1).map(&close_at);
    for position in start..from {
        let close = close_at(position);
        rolling.closes.push(close);
        if let Some(previous) = previous {
            rolling.log_returns.push(log_return(previous, close));
        }
        previous = Some(close);
    }
    rolling
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the recursion over closes and returns every point (index 1..).
    fn run(closes: &[f64]) -> Vec<IndicatorPoint> {
        let sym: Arc<str> = Arc::from("T");
        let mut rolling = Rolling::default();
        let mut state = Recursion::first(closes[0]);
        let mut out = Vec::new();
        for (i, &c) in closes.iter().enumerate() {
            let index = i as u64 + 1;
            let mut r = 0.0;
            if i > 0 {
                state = state.next(closes[i - 1], c, index);
                r = log_return(closes[i - 1], c);
                rolling.log_returns.push(r);
            }
            rolling.closes.push(c);
            out.push(indicator_point(
                (&sym, Source::Replay, Interval::M1),
                i as i64,
                index,
                &state,
                r,
                &rolling,
            ));
        }
        out
    }

    #[test]
    fn hand_worked_ema_and_rsi_seeds() {
        // closes 10, 11, 10.5:
        // ema_12: 10 -> 10 + 2/13*(11-10) = 10.153846.. -> (11/13)*10.153846.. + 2/13*10.5
        // rsi: change +1 seeds gain 1 / loss 0; change -0.5: gain 13/14, loss 0.5/14
        let sym: Arc<str> = Arc::from("T");
        let s1 = Recursion::first(10.0);
        let s2 = s1.next(10.0, 11.0, 2);
        let s3 = s2.next(11.0, 10.5, 3);
        let e2 = 10.0 + 2.0 / 13.0;
        assert!((s2.ema_12 - e2).abs() < 1e-12);
        assert!((s3.ema_12 - (11.0 / 13.0 * e2 + 2.0 / 13.0 * 10.5)).abs() < 1e-12);
        assert_eq!((s2.avg_gain, s2.avg_loss), (1.0, 0.0));
        assert!((s3.avg_gain - 13.0 / 14.0).abs() < 1e-15);
        assert!((s3.avg_loss - 0.5 / 14.0).abs() < 1e-15);
        // rsi = 100 - 100/(1 + 13/0.5) = 100 - 100/27
        assert!((s3.rsi() - (100.0 - 100.0 / 27.0)).abs() < 1e-12);
        let r3 = log_return(11.0, 10.5);
        assert!((r3 - (10.5f64 / 11.0).ln()).abs() < 1e-15);
        // index 3: only log_return is written
        let p = indicator_point(
            (&sym, Source::Replay, Interval::M1),
            0,
            3,
            &s3,
            r3,
            &Rolling::default(),
        );
        assert_eq!(
            p.fields().map(|(k, _)| k).collect::<Vec<_>>(),
            ["log_return"]
        );
    }

    #[test]
    fn rsi_edge_cases() {
        let up = Recursion {
            avg_gain: 1.0,
            ..Recursion::default()
        };
        assert_eq!(up.rsi(), 100.0);
        assert_eq!(Recursion::default().rsi(), 50.0);
    }

    #[test]
    fn hand_worked_bollinger_and_volatility() {
        // closes 1..=21: the window at index 20 is 1..=20: mean 10.5, population variance
        // (20^2 - 1)/12 = 33.25, band = 2*sqrt(33.25)
        let closes: Vec<f64> = (1..=21).map(f64::from).collect();
        let points = run(&closes);
        let p20 = &points[19];
        assert_eq!(p20.sma_20, Some(10.5));
        assert!((p20.bb_upper.unwrap() - (10.5 + 2.0 * 33.25f64.sqrt())).abs() < 1e-12);
        assert!((p20.bb_lower.unwrap() - (10.5 - 2.0 * 33.25f64.sqrt())).abs() < 1e-12);
        assert_eq!(p20.volatility_20, None, "needs 20 log returns: index 21");
        let p21 = &points[20];
        // log returns ln(k+1/k) for k = 1..=20
        let r: Vec<f64> = (1..=20)
            .map(|k| (f64::from(k + 1) / f64::from(k)).ln())
            .collect();
        let m = r.iter().sum::<f64>() / 20.0;
        let var = r.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / 19.0;
        assert!((p21.volatility_20.unwrap() - var.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn fields_appear_at_their_first_index() {
        let closes: Vec<f64> = (0..40).map(|i| 100.0 + (i as f64 * 0.7).sin()).collect();
        let points = run(&closes);
        let first_seen = |name: &str| {
            points
                .iter()
                .position(|p| p.fields().any(|(k, _)| k == name))
                .map(|i| i as u64 + 1)
        };
        for (name, first) in [
            ("log_return", FirstIndex::LOG_RETURN),
            ("ema_12", FirstIndex::EMA_12),
            ("rsi_14", FirstIndex::RSI_14),
            ("sma_20", FirstIndex::SMA_20),
            ("bb_upper", FirstIndex::SMA_20),
            ("volatility_20", FirstIndex::VOLATILITY_20),
            ("ema_26", FirstIndex::EMA_26),
            ("macd", FirstIndex::MACD),
            ("macd_signal", FirstIndex::MACD_SIGNAL),
            ("macd_hist", FirstIndex::MACD_SIGNAL),
        ] {
            assert_eq!(first_seen(name), Some(first), "{name}");
        }
        assert_eq!(points[0].fields().count(), 0);
        assert_eq!(points[FirstIndex::ALL as usize - 1].fields().count(), 12);
    }

    #[test]
    fn trailing_keeps_the_last_window_in_order() {
        let mut t = Trailing::default();
        for i in 0..19 {
            t.push(i as f64);
        }
        assert!(t.window().is_none());
        for i in 19..100 {
            t.push(i as f64);
            let w = t.window().unwrap();
            assert_eq!(w[0], (i - 19) as f64);
            assert_eq!(w[19], i as f64);
        }
    }
}
