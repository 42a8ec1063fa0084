//! Rollups: 5m, 15m and 1h candles built from the stored 1m candles, and the vwap rule.
//!
//! A rollup window is a UTC-aligned tumbling window `[start, start + w)` stamped with `start`
//! (pandas `resample(w, label="left", closed="left")`). It exists as soon as one 1m candle
//! falls into it and is re-emitted while it fills, so a dashboard sees the current hour grow.
//! Its fields are a pure function of the 1m candles it holds:
//!
//! * open = first open, high = max, low = min, close = last close (in open_time order);
//! * volume, quote_volume, trades, taker_buy_base, taker_buy_quote = sums, added in
//!   open_time order starting from 0; they cannot overflow: validation caps every price and
//!   volume at `candlepipe_model::validate::MAX_AMOUNT` (1e100) and trades at 2^53, so an
//!   hour of candles sums to a finite, exact total (a non-finite field would be left out of
//!   the line protocol, silently);
//! * an optional sum (quote_volume, trades, taker_*) is present only when **every** candle
//!   of the window has that field. pandas' `.sum()` would count a missing value as 0 and
//!   silently undercount; a window mixing known and unknown values has no honest total
//!   (`.sum(min_count=len(window))` is the pandas equivalent of this rule);
//! * vwap = Σ quote_volume / Σ volume when every candle has a quote volume, otherwise
//!   Σ (typical · volume) / Σ volume with typical = (high + low + close) / 3; absent when
//!   Σ volume = 0. A 1m candle's own vwap is the same rule over a window of one candle.
//!
//! Why windows are *recomputed* from the stored 1m candles instead of being updated with
//! deltas: a replaced candle (in-progress update, redelivery, late correction) must replace
//! its contribution, and max/min cannot be "un-added". [`RollupCursor`] walks the history in
//! time order and folds every candle into the three windows it belongs to; because the fold
//! order is always the same (open_time order, from the window's first candle), a window
//! folded incrementally across several flushes is bit-identical to one folded from scratch,
//! which is what lets the state resume a cursor instead of re-reading a whole hour per flush.

use crate::point::CandlePoint;
use candlepipe_model::{Candle, Interval, Source};
use std::sync::Arc;

/// Bits of [`MinuteBar::flags`]: which optional fields the candle carried...
const HAS_QUOTE_VOLUME: u8 = 1;
const HAS_TRADES: u8 = 2;
const HAS_TAKER_BUY_BASE: u8 = 4;
const HAS_TAKER_BUY_QUOTE: u8 = 8;
const HAS_ALL: u8 = HAS_QUOTE_VOLUME | HAS_TRADES | HAS_TAKER_BUY_BASE | HAS_TAKER_BUY_QUOTE;
/// ...and whether the history changed the candle since its last flush. The mark lives in
/// the same byte so that a history slot (bar + indicator snapshot) is exactly 128 bytes,
/// two cache lines; it is not content ([`MinuteBar::same_as`] ignores it).
const CHANGED: u8 = 0x80;

/// A 1m candle as the per-symbol history stores it: the numbers every point is computed
/// from, without the symbol string (kept once per symbol) or the transport fields
/// (`closed`, `produced_at`), which no point depends on. 88 bytes, `Copy`, no heap.
#[derive(Debug, Clone, Copy)]
pub struct MinuteBar {
    /// Candle open time, Unix ms.
    pub open_time: i64,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: f64,
    /// Meaningful only when `present & HAS_QUOTE_VOLUME`.
    quote_volume: f64,
    taker_buy_base: f64,
    taker_buy_quote: f64,
    trades: u64,
    /// Presence bits of the optional fields (explicit, so no value is ever a sentinel),
    /// plus the history's [`CHANGED`] mark.
    flags: u8,
}

impl MinuteBar {
    /// The stored form of a candle.
    pub fn from_candle(c: &Candle) -> Self {
        let mut present = 0;
        let mut opt = |v: Option<f64>, bit: u8| match v {
            Some(v) => {
                present |= bit;
                v
            }
            None => 0.0,
        };
        let quote_volume = opt(c.quote_volume, HAS_QUOTE_VOLUME);
        let taker_buy_base = opt(c.taker_buy_base, HAS_TAKER_BUY_BASE);
        let taker_buy_quote = opt(c.taker_buy_quote, HAS_TAKER_BUY_QUOTE);
        let trades = match c.trades {
            Some(t) => {
                present |= HAS_TRADES;
                t
            }
            None => 0,
        };
        MinuteBar {
            open_time: c.open_time,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            quote_volume,
            taker_buy_base,
            taker_buy_quote,
            trades,
            flags: present,
        }
    }

    /// Bit-for-bit equality of everything a point depends on: a redelivered message is
    /// "unchanged" only if no output could differ (so `0.0` vs `-0.0` counts as a change).
    pub fn same_as(&self, other: &MinuteBar) -> bool {
        let f = |a: f64, b: f64| a.to_bits() == b.to_bits();
        self.open_time == other.open_time
            && self.flags & HAS_ALL == other.flags & HAS_ALL
            && f(self.open, other.open)
            && f(self.high, other.high)
            && f(self.low, other.low)
            && f(self.close, other.close)
            && f(self.volume, other.volume)
            && f(self.quote_volume, other.quote_volume)
            && f(self.taker_buy_base, other.taker_buy_base)
            && f(self.taker_buy_quote, other.taker_buy_quote)
            && self.trades == other.trades
    }

    /// Whether the history marked this candle changed since its last flush.
    pub fn is_changed(&self) -> bool {
        self.flags & CHANGED != 0
    }

    /// Sets or clears the history's "changed since the last flush" mark.
    pub fn set_changed(&mut self, changed: bool) {
        if changed {
            self.flags |= CHANGED;
        } else {
            self.flags &= !CHANGED;
        }
    }

    /// Typical price times volume, the vwap numerator when quote volume is unknown.
    /// Written as pandas evaluates `(high + low + close) / 3 * volume`.
    fn typical_volume(&self) -> f64 {
        (self.high + self.low + self.close) / 3.0 * self.volume
    }
}

/// The aggregate of the 1m candles folded so far into one window.
#[derive(Debug, Clone, Copy)]
pub struct RollupWindow {
    /// 1m for a single candle's own point, else 5m/15m/1h.
    pub interval: Interval,
    /// Window start, Unix ms (the point's timestamp).
    pub start: i64,
    /// Candles folded in.
    pub candles: u32,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    quote_volume: f64,
    taker_buy_base: f64,
    taker_buy_quote: f64,
    trades: u64,
    /// Σ typical · volume, the fallback vwap numerator.
    typical_volume: f64,
    /// AND of the folded candles' presence bits: an optional sum survives only if every
    /// candle had it.
    present: u8,
}

impl RollupWindow {
    /// An empty window starting at `start` (which must be aligned to `interval`).
    pub fn new(interval: Interval, start: i64) -> Self {
        RollupWindow {
            interval,
            start,
            candles: 0,
            open: 0.0,
            high: f64::NEG_INFINITY,
            low: f64::INFINITY,
            close: 0.0,
            volume: 0.0,
            quote_volume: 0.0,
            taker_buy_base: 0.0,
            taker_buy_quote: 0.0,
            trades: 0,
            typical_volume: 0.0,
            present: HAS_ALL,
        }
    }

    /// A 1m candle's own window (interval 1m): its `candle` point is the rollup rule over
    /// exactly that candle, vwap included.
    pub fn of_minute(bar: &MinuteBar) -> Self {
        let mut window = RollupWindow::new(Interval::M1, bar.open_time);
        window.fold(bar);
        window
    }

    /// Adds the next candle of the window; candles must come in open_time order.
    pub fn fold(&mut self, bar: &MinuteBar) {
        debug_assert_eq!(self.interval.window_start(bar.open_time), self.start);
        if self.candles == 0 {
            self.open = bar.open;
        }
        self.candles += 1;
        self.high = self.high.max(bar.high);
        self.low = self.low.min(bar.low);
        self.close = bar.close;
        self.volume += bar.volume;
        self.quote_volume += bar.quote_volume;
        self.taker_buy_base += bar.taker_buy_base;
        self.taker_buy_quote += bar.taker_buy_quote;
        self.trades = self.trades.saturating_add(bar.trades);
        self.typical_volume += bar.typical_volume();
        self.present &= bar.flags;
    }

    /// The window as an InfluxDB `candle` point.
    #[inline]
    pub fn point(&self, symbol: &Arc<str>, source: Source) -> CandlePoint {
        debug_assert!(self.candles > 0, "an empty window is never written");
        let has = |bit: u8| self.present & bit != 0;
        let when = |bit: u8, v: f64| has(bit).then_some(v);
        let numerator = if has(HAS_QUOTE_VOLUME) {
            self.quote_volume
        } else {
            self.typical_volume
        };
        CandlePoint {
            symbol: Arc::clone(symbol),
            source,
            interval: self.interval,
            time: self.start,
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
            quote_volume: when(HAS_QUOTE_VOLUME, self.quote_volume),
            trades: has(HAS_TRADES).then_some(self.trades),
            taker_buy_base: when(HAS_TAKER_BUY_BASE, self.taker_buy_base),
            taker_buy_quote: when(HAS_TAKER_BUY_QUOTE, self.taker_buy_quote),
            vwap: (self.volume != 0.0).then(|| numerator / self.volume),
        }
    }
}

/// One rollup window being filled during a walk, and whether a changed candle fell into it
/// (only those are re-emitted).
#[derive(Debug, Clone, Copy)]
struct OpenWindow {
    window: RollupWindow,
    touched: bool,
}

/// The 5m, 15m and 1h windows holding the most recent candle of a walk through a symbol's
/// history in open_time order. Feeding it candles emits each touched window once, when the
/// walk leaves it or at [`RollupCursor::finish`]. After `finish` the cursor still holds the
/// open windows' partial aggregates, so the next walk can resume from the next candle.
#[derive(Debug, Clone, Default)]
pub struct RollupCursor {
    open: [Option<OpenWindow>; 3],
}

impl RollupCursor {
    /// Folds the next candle (in open_time order) into its three windows. `changed` marks
    /// the candle as new or replaced since the last flush, which makes its windows touched.
    /// Windows the candle leaves behind are passed to `emit` if they were touched.
    pub fn fold(&mut self, bar: &MinuteBar, changed: bool, mut emit: impl FnMut(&RollupWindow)) {
        for (slot, interval) in self.open.iter_mut().zip(Interval::ROLLUPS) {
            let start = interval.window_start(bar.open_time);
            match slot {
                Some(open) if open.window.start == start => {}
                _ => {
                    if let Some(done) = slot.take() {
                        if done.touched {
                            emit(&done.window);
                        }
                    }
                    *slot = Some(OpenWindow {
                        window: RollupWindow::new(interval, start),
                        touched: false,
                    });
                }
            }
            let open = slot.as_mut().expect("just filled");
            open.window.fold(bar);
            open.touched |= changed;
        }
    }

    /// Emits the still-open windows that were touched (partial windows are re-emitted while
    /// they fill) and clears their touched marks, keeping the aggregates for a resume.
    pub fn finish(&mut self, mut emit: impl FnMut(&RollupWindow)) {
        for open in self.open.iter_mut().flatten() {
            if open.touched {
                emit(&open.window);
                open.touched = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candlepipe_model::candle::MINUTE_MS;

    const T0: i64 = 1_614_556_800_000; // 2021-03-01T00:00Z, an hour boundary

    fn bar(minute: i64, o: f64, h: f64, l: f64, c: f64, v: f64) -> MinuteBar {
        MinuteBar::from_candle(&Candle::ohlcv(
            "X",
            Source::Replay,
            T0 + minute * MINUTE_MS,
            o,
            h,
            l,
            c,
            v,
        ))
    }

    fn with_quote(mut b: MinuteBar, qv: f64, trades: u64) -> MinuteBar {
        b.quote_volume = qv;
        b.trades = trades;
        b.flags |= HAS_QUOTE_VOLUME | HAS_TRADES;
        b
    }

    fn sym() -> Arc<str> {
        Arc::from("X")
    }

    #[test]
    fn hand_worked_window_without_quote_volume_uses_typical_price() {
        // minute 0: o 10 h 12 l 9  c 11 v 2 -> typical (12+9+11)/3 = 32/3, tpv = 64/3
        // minute 1: o 11 h 14 l 10 c 13 v 1 -> typical (14+10+13)/3 = 37/3, tpv = 37/3
        // minute 3: o 13 h 13 l 8  c 9  v 3 -> typical (13+8+9)/3  = 10,   tpv = 30
        // 5m window [0, 5): open 10, high 14, low 8, close 9, volume 6,
        // vwap = (64/3 + 37/3 + 30) / 6 = (101/3 + 90/3) / 6 = 191/18 = 10.6111...
        let mut w = RollupWindow::new(Interval::M5, T0);
        for b in [
            bar(0, 10.0, 12.0, 9.0, 11.0, 2.0),
            bar(1, 11.0, 14.0, 10.0, 13.0, 1.0),
            bar(3, 13.0, 13.0, 8.0, 9.0, 3.0),
        ] {
            w.fold(&b);
        }
        let p = w.point(&sym(), Source::Replay);
        assert_eq!((p.time, p.interval), (T0, Interval::M5));
        assert_eq!((p.open, p.high, p.low, p.close), (10.0, 14.0, 8.0, 9.0));
        assert_eq!(p.volume, 6.0);
        assert!((p.vwap.unwrap() - 191.0 / 18.0).abs() < 1e-12);
        assert_eq!(
            (
                p.quote_volume,
                p.trades,
                p.taker_buy_base,
                p.taker_buy_quote
            ),
            (None, None, None, None)
        );
    }

    #[test]
    fn hand_worked_window_with_quote_volume_uses_it_and_sums_trades() {
        // qv 21 + 13 = 34 over volume 2 + 1 = 3 -> vwap 34/3; trades 5 + 7 = 12
        let mut w = RollupWindow::new(Interval::M15, T0);
        w.fold(&with_quote(bar(0, 10.0, 12.0, 9.0, 11.0, 2.0), 21.0, 5));
        w.fold(&with_quote(bar(14, 11.0, 14.0, 10.0, 13.0, 1.0), 13.0, 7));
        let p = w.point(&sym(), Source::Live);
        assert_eq!(p.quote_volume, Some(34.0));
        assert_eq!(p.trades, Some(12));
        assert_eq!(p.vwap, Some(34.0 / 3.0));
        assert_eq!(p.source, Source::Live);
    }

    #[test]
    fn an_optional_sum_needs_every_candle_and_vwap_falls_back() {
        // second candle lacks quote volume and trades: both sums absent, vwap from typical:
        // (32/3*2 + 37/3*1) / 3 = (64/3 + 37/3) / 3 = 101/9
        let mut w = RollupWindow::new(Interval::H1, T0);
        w.fold(&with_quote(bar(0, 10.0, 12.0, 9.0, 11.0, 2.0), 21.0, 5));
        w.fold(&bar(30, 11.0, 14.0, 10.0, 13.0, 1.0));
        let p = w.point(&sym(), Source::Replay);
        assert_eq!((p.quote_volume, p.trades), (None, None));
        assert!((p.vwap.unwrap() - 101.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn zero_volume_has_no_vwap() {
        let p =
            RollupWindow::of_minute(&bar(0, 1.0, 1.0, 1.0, 1.0, 0.0)).point(&sym(), Source::Replay);
        assert_eq!(p.vwap, None);
        assert_eq!((p.interval, p.volume), (Interval::M1, 0.0));
        // a minute's own vwap is the one-candle window: typical * v / v
        let p = RollupWindow::of_minute(&bar(0, 10.0, 12.0, 9.0, 11.0, 2.0))
            .point(&sym(), Source::Replay);
        assert!((p.vwap.unwrap() - 32.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn cursor_emits_each_touched_window_once_and_resumes_exactly() {
        // minutes 3, 4 (5m window 0), 5 (5m window 5) ; only minute 5 changed
        let bars = [
            bar(3, 1.0, 2.0, 0.5, 1.5, 1.0),
            bar(4, 1.5, 3.0, 1.0, 2.0, 2.0),
            bar(5, 2.0, 2.5, 1.5, 2.5, 4.0),
        ];
        let mut cursor = RollupCursor::default();
        let mut out = Vec::new();
        cursor.fold(&bars[0], false, |w| out.push(*w));
        cursor.fold(&bars[1], false, |w| out.push(*w));
        cursor.fold(&bars[2], true, |w| out.push(*w));
        cursor.finish(|w| out.push(*w));
        let got: Vec<_> = out
            .iter()
            .map(|w| (w.interval, w.start, w.candles))
            .collect();
        assert_eq!(
            got,
            vec![
                (Interval::M5, T0 + 5 * MINUTE_MS, 1),
                (Interval::M15, T0, 3),
                (Interval::H1, T0, 3)
            ]
        );
        // resuming: minute 6 appended; the 1h window continues from the stored aggregate
        out.clear();
        let next = bar(6, 2.5, 9.0, 2.0, 3.0, 1.0);
        cursor.fold(&next, true, |w| out.push(*w));
        cursor.finish(|w| out.push(*w));
        let h1 = out.iter().find(|w| w.interval == Interval::H1).unwrap();
        let mut fresh = RollupWindow::new(Interval::H1, T0);
        for b in bars.iter().chain([&next]) {
            fresh.fold(b);
        }
        assert_eq!(
            h1.point(&sym(), Source::Replay),
            fresh.point(&sym(), Source::Replay)
        );
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn same_as_is_bitwise() {
        let a = bar(0, 1.0, 1.0, 1.0, 1.0, 0.0);
        let mut b = a;
        assert!(a.same_as(&b));
        b.volume = -0.0;
        assert!(!a.same_as(&b));
        let c = with_quote(a, 0.0, 0);
        assert!(
            !a.same_as(&c),
            "presence of an optional field is part of the content"
        );
        let mut d = a;
        d.set_changed(true);
        assert!(d.is_changed() && a.same_as(&d), "the mark is not content");
        d.set_changed(false);
        assert!(!d.is_changed());
    }
}
