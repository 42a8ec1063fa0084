//! The closes of one rollup interval's windows (5m, 15m or 1h) for one (source, symbol),
//! with the indicator state after each: what makes "SMA 20 on the 1h chart" mean 20 hours.
//!
//! A trader reading indicators next to 1h candles expects them computed over 1h closes, as
//! every charting tool does, not over the 1m closes under them. So each symbol's history
//! keeps one [`WindowSeries`] per rollup interval: a window's close is the close of its
//! newest 1m candle, so the window still filling counts with its latest close, and when a
//! later candle moves that close the window's indicators (and every later window's) are
//! recomputed and written again, exactly as a late 1m candle re-emits the 1m indicators.
//! Windows without candles do not exist here, as in the rollups: gaps stay gaps.
//!
//! The series is fed by `state.rs` with the (window start, close) of every window a flush
//! touched ([`WindowSeries::upsert`]), recomputed by the same [`Walk`] as the 1m series
//! ([`WindowSeries::settle`]), and trimmed to what a late candle can still reach
//! ([`WindowSeries::evict`]): the windows from the one holding the late-data horizon's edge,
//! plus [`WINDOW`] before them for the rolling windows and the recursion restart. With the
//! default 1h horizon that is about 34 entries of 56 bytes for 5m, 25 for 15m and 22 for 1h.
//!
//! Warm-up works as for 1m (a field is written from its window index on), counted in
//! windows: macd_signal on 1h closes first appears at the 34th hour of a symbol's history.
//! After a restart the batch loop re-reads enough history that every series has
//! [`REBUILD_WINDOWS`] windows (or the whole log), so the EMA and RSI seeds have faded and
//! the points match an uninterrupted run.

use crate::indicator::{resume_rolling, Recursion, Rolling, Walk, WINDOW};
use crate::point::Point;
use candlepipe_model::{Interval, Source};
use std::collections::VecDeque;
use std::sync::Arc;

/// Windows of history each series needs after a state rebuild for its indicators to match
/// an uninterrupted run: the slowest seed (RSI's Wilder average, α = 1/14) has faded below
/// 1e-12 relative after about 370 steps.
pub const REBUILD_WINDOWS: u64 = 400;

/// Eviction waits until this many entries can go at once.
const EVICT_CHUNK: usize = 8;

/// One window: its start, its close so far, and the recursion state after it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    time: i64,
    close: f64,
    state: Recursion,
}

/// One rollup interval's window closes for one (source, symbol).
#[derive(Debug)]
pub struct WindowSeries {
    interval: Interval,
    /// Retained windows, strictly increasing start.
    entries: VecDeque<Entry>,
    /// Windows dropped from the front: positions count from here for the warm-up index.
    evicted: u64,
    /// Earliest position whose close changed or that was inserted since the last settle,
    /// or `usize::MAX`: snapshots from here on are stale.
    recompute_from: usize,
    /// The rolling windows after the last settle that emitted, and how many entries they
    /// had seen (resumed when only appends follow).
    rolling: Option<(usize, Rolling)>,
}

impl WindowSeries {
    /// An empty series of `interval` windows (one of [`Interval::ROLLUPS`]).
    pub fn new(interval: Interval) -> Self {
        WindowSeries {
            interval,
            entries: VecDeque::new(),
            evicted: 0,
            recompute_from: usize::MAX,
            rolling: None,
        }
    }

    /// The interval whose windows this series holds.
    pub fn interval(&self) -> Interval {
        self.interval
    }

    /// Sets the close of the window starting at `time` (inserting the window if new).
    /// An unchanged close changes nothing.
    pub fn upsert(&mut self, time: i64, close: f64) {
        let len = self.entries.len();
        let pos = match self.entries.back() {
            Some(last) if last.time < time => len,
            None => len,
            Some(_) => self.entries.partition_point(|e| e.time < time),
        };
        match self.entries.get_mut(pos) {
            Some(e) if e.time == time => {
                if e.close.to_bits() == close.to_bits() {
                    return;
                }
                e.close = close;
            }
            _ => {
                let entry = Entry {
                    time,
                    close,
                    state: Recursion::default(),
                };
                if pos == len {
                    self.entries.push_back(entry);
                } else {
                    self.entries.insert(pos, entry);
                }
            }
        }
        self.recompute_from = self.recompute_from.min(pos);
    }

    /// Recomputes the snapshots from the earliest change to the newest window, appending
    /// their indicator points to `out` when given (none during a state rebuild).
    pub fn settle(&mut self, symbol: &Arc<str>, source: Source, out: Option<&mut Vec<Point>>) {
        let from = self.recompute_from;
        if from == usize::MAX {
            return;
        }
        self.recompute_from = usize::MAX;
        let emitting = out.is_some();
        let rolling = if emitting {
            resume_rolling(self.rolling.take(), from, |p| self.entries[p].close)
        } else {
            self.rolling = None;
            Rolling::default()
        };
        let previous = from
            .checked_sub(1)
            .map(|p| (self.entries[p].state, self.entries[p].close));
        let mut walk = Walk::new(
            (symbol, source, self.interval),
            self.evicted + from as u64 + 1,
            previous,
            rolling,
            out,
        );
        for entry in self.entries.range_mut(from..) {
            entry.state = walk.step(entry.time, entry.close);
        }
        if emitting {
            self.rolling = Some((self.entries.len(), walk.into_rolling()));
        }
    }

    /// Drops the windows no accepted candle can change any more: those before the window
    /// holding `accept_from` (the oldest open time still accepted), except the [`WINDOW`]
    /// just before it.
    pub fn evict(&mut self, accept_from: i64) {
        let keep_from = self.interval.window_start(accept_from);
        let first_kept = self.entries.partition_point(|e| e.time < keep_from);
        let n = first_kept.saturating_sub(WINDOW);
        if n < EVICT_CHUNK {
            return;
        }
        debug_assert!(self.recompute_from == usize::MAX, "evict after settle");
        self.entries.drain(..n);
        self.evicted += n as u64;
        if let Some((seen, _)) = self.rolling.as_mut() {
            *seen -= n;
        }
    }

    /// Windows seen since the series was created, evicted ones included: the warm-up index
    /// of the newest window.
    pub fn seen(&self) -> u64 {
        self.evicted + self.entries.len() as u64
    }

    /// Windows currently retained.
    pub fn retained(&self) -> usize {
        self.entries.len()
    }

    /// Heap bytes of the entry buffer.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::IndicatorPoint;
    use candlepipe_model::candle::MINUTE_MS;

    const T0: i64 = 1_614_556_800_000; // an hour boundary
    const HOUR: i64 = 60 * MINUTE_MS;

    fn settle(series: &mut WindowSeries) -> Vec<IndicatorPoint> {
        let symbol: Arc<str> = Arc::from("S");
        let mut out = Vec::new();
        series.settle(&symbol, Source::Replay, Some(&mut out));
        out.into_iter()
            .map(|p| match p {
                Point::Indicator(i) => i,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    fn close_at(h: i64) -> f64 {
        50.0 + (h as f64 * 0.7).sin() * 4.0
    }

    #[test]
    fn points_carry_the_interval_and_start_at_the_second_window() {
        let mut s = WindowSeries::new(Interval::H1);
        s.upsert(T0, 10.0);
        assert!(settle(&mut s).is_empty(), "a first close has no field");
        s.upsert(T0 + HOUR, 11.0);
        let points = settle(&mut s);
        assert_eq!(points.len(), 1);
        assert_eq!(points[0].interval, Interval::H1);
        assert_eq!(points[0].time, T0 + HOUR);
        assert_eq!(points[0].log_return, Some((11.0f64 / 10.0).ln()));
    }

    #[test]
    fn an_unchanged_close_emits_nothing_and_a_moved_close_re_emits_from_its_window() {
        let mut s = WindowSeries::new(Interval::M15);
        let step = Interval::M15.millis();
        for k in 0..40 {
            s.upsert(T0 + k * step, close_at(k));
        }
        assert_eq!(settle(&mut s).len(), 39);
        s.upsert(T0 + 30 * step, close_at(30));
        assert!(settle(&mut s).is_empty());
        s.upsert(T0 + 30 * step, close_at(30) + 1.0);
        let again = settle(&mut s);
        let times: Vec<i64> = again.iter().map(|p| p.time).collect();
        assert_eq!(times, (30..40).map(|k| T0 + k * step).collect::<Vec<_>>());
    }

    /// Out-of-order upserts, and a settle after every upsert, converge to the in-order
    /// result bit for bit.
    #[test]
    fn any_order_and_settle_pattern_gives_the_in_order_points() {
        let step = Interval::M5.millis();
        let mut in_order = WindowSeries::new(Interval::M5);
        for k in 0..60 {
            in_order.upsert(T0 + k * step, close_at(k));
        }
        let want = settle(&mut in_order);

        let mut shuffled = WindowSeries::new(Interval::M5);
        let mut last = std::collections::BTreeMap::new();
        for block in (0..60).collect::<Vec<i64>>().chunks(7) {
            for &k in block.iter().rev() {
                shuffled.upsert(T0 + k * step, close_at(k) - 1.0); // an early close ...
                shuffled.upsert(T0 + k * step, close_at(k)); // ... then the final one
            }
            for p in settle(&mut shuffled) {
                last.insert(p.time, p);
            }
        }
        let got: Vec<IndicatorPoint> = last.into_values().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn eviction_keeps_the_reachable_windows_and_twenty_before_them() {
        let mut s = WindowSeries::new(Interval::H1);
        for h in 0..100 {
            s.upsert(T0 + h * HOUR, close_at(h));
        }
        settle(&mut s);
        // a late candle may still land at T0 + 90h + 30min: keep hour 90 and 20 before
        s.evict(T0 + 90 * HOUR + 30 * MINUTE_MS);
        assert_eq!(s.retained(), 30);
        assert_eq!(s.seen(), 100);
        // a change in the oldest reachable window re-emits from there, with the warm-up
        // index counted over the evicted windows too (every field present)
        s.upsert(T0 + 90 * HOUR, close_at(90) + 0.5);
        let points = settle(&mut s);
        assert_eq!(points.len(), 10);
        assert!(points.iter().all(|p| p.fields().count() == 12));

        let mut reference = WindowSeries::new(Interval::H1);
        for h in 0..100 {
            let c = if h == 90 {
                close_at(h) + 0.5
            } else {
                close_at(h)
            };
            reference.upsert(T0 + h * HOUR, c);
        }
        let want = settle(&mut reference);
        assert_eq!(points, want[89..]);
    }

    /// After a rebuild of [`REBUILD_WINDOWS`] windows the points match an uninterrupted
    /// series to 1e-9 relative (the 1m series' rebuild tolerance; macd_signal, a small
    /// difference of large EMAs, is the least exact, at about 5e-12).
    #[test]
    fn a_rebuilt_series_converges_to_the_uninterrupted_one() {
        let total = 1000;
        let restart = 900;
        let mut full = WindowSeries::new(Interval::H1);
        for h in 0..total {
            full.upsert(T0 + h * HOUR, close_at(h) + h as f64 * 0.01);
        }
        let want = settle(&mut full);

        let mut rebuilt = WindowSeries::new(Interval::H1);
        for h in restart - REBUILD_WINDOWS as i64..restart {
            rebuilt.upsert(T0 + h * HOUR, close_at(h) + h as f64 * 0.01);
        }
        let symbol: Arc<str> = Arc::from("S");
        rebuilt.settle(&symbol, Source::Replay, None);
        for h in restart..total {
            rebuilt.upsert(T0 + h * HOUR, close_at(h) + h as f64 * 0.01);
        }
        let got = settle(&mut rebuilt);
        assert_eq!(got.len(), (total - restart) as usize);
        for (g, w) in got.iter().zip(&want[(restart - 1) as usize..]) {
            assert_eq!(g.time, w.time);
            for ((name, a), (_, b)) in g.fields().zip(w.fields()) {
                assert!(
                    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()),
                    "{name} at {}: {a} vs {b}",
                    g.time
                );
            }
        }
    }
}
