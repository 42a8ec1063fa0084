//! Per-symbol state: the recent 1m candles of every (source, symbol), the late-data
//! horizon, and the [`Aggregator`] the batch loop feeds.
//!
//! The batch loop calls [`Aggregator::apply`] for every valid candle of a micro-batch and
//! [`Aggregator::flush`] once per batch; flush returns every InfluxDB point whose content
//! changed, each exactly once. Nothing here knows about Kafka or InfluxDB.
//!
//! ## What a symbol's history holds
//!
//! A `VecDeque` of slots in open_time order, one per distinct 1m candle: the candle's numbers
//! ([`MinuteBar`]) and the recursive indicator state right after it ([`Recursion`]), so any
//! retained candle can be re-inserted or replaced and the indicators recomputed from the
//! candle before it to the newest. No strings per candle: the symbol is one `Arc<str>`.
//!
//! ## Late data (event time, like Spark's watermark)
//!
//! Each symbol's watermark is the largest open_time seen. Its *event time* starts at the
//! first candle's open_time; a candle past the watermark moves it only to the previous
//! watermark, and a candle between the two moves it up to itself. So one outlier (a clock
//! stamping an hour ahead) cannot make the real candles after it late, while an in-order
//! stream's event time trails its watermark by one candle. A candle with
//! `open_time < event time − horizon` is [`Applied::Late`]: dropped, state untouched (the
//! caller counts it). Anything newer inserts or replaces its slot. So that every point such a
//! candle changes can be recomputed, the history retains
//! * every candle from the start of the 1h window holding `event time − horizon` (a late candle
//!   re-emits its 1h window, recomputed from the stored candles), and
//! * the [`WINDOW`] (20) candles before the first one inside the horizon, with their
//!   snapshots (the rolling windows and the recursion restart need them).
//!
//! Older slots are evicted at flush time (never between apply and flush, so a large batch
//! for one symbol still emits all its points), in chunks of about 16. With a 1h horizon a
//! symbol keeps 80 to ~160 slots of 128 bytes (a candle and its snapshot, two cache lines):
//! about 21 kB per symbol measured with the buffer's headroom, 21 MB for 1,000 symbols.
//!
//! ## Warm-up index and rebuilds
//!
//! A candle's warm-up index (1-based position in the symbol's sequence, which decides which
//! indicator fields are written) is `evicted + position + 1`. After a restart, the batch
//! loop re-applies a long recent history (>= ~600 candles, at least horizon + 1h + 20) and
//! calls [`Aggregator::discard_pending`]: the index is then past 34 (every field written, as
//! in the uninterrupted run), the EMA/RSI seeds have faded below 1e-12 relative, and the
//! rolling windows and rollups are exact functions of the stored candles, so the points
//! written from then on match the uninterrupted run (rollups exactly, indicators to 1e-9).
//!
//! ## Cost
//!
//! Appending is O(1) (plus a hash lookup); a flush walks each changed symbol once. When only
//! appends happened since the previous flush, the rollup windows and the rolling indicator
//! windows resume from where that flush left them, so only the new candles are read;
//! otherwise rollups restart at the 1h window of the earliest changed candle and indicators
//! at the earliest candle whose close changed or that was inserted (from its predecessor's
//! snapshot). Resumed and restarted walks fold the same values in the same order, so the
//! results are bit-identical either way (the tests compare late and in-order runs exactly).

use crate::indicator::{resume_rolling, Recursion, Rolling, Walk, WINDOW};
use crate::point::Point;
use crate::rollup::{MinuteBar, RollupCursor, RollupWindow};
use crate::window_series::{WindowSeries, REBUILD_WINDOWS};
use candlepipe_model::{Candle, Interval, Source};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Symbol lookup map: aHash (randomly seeded, so crafted symbols cannot force collisions)
/// costs a fraction of std's SipHash on short keys, and a lookup happens for every candle.
type SymbolMap = HashMap<Arc<str>, usize, ahash::RandomState>;

/// What [`Aggregator::apply`] did with a candle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// A new (symbol, open_time): stored, its points will be emitted at the next flush.
    Inserted,
    /// Replaced the stored candle of the same open_time with different content.
    Replaced,
    /// Identical to the stored candle (a redelivery): nothing changes, nothing is emitted.
    /// "Identical" compares everything a point depends on, bit for bit; `closed` and
    /// `produced_at` are not part of any point and are ignored.
    Unchanged,
    /// Older than the symbol's event time minus the horizon: dropped, state untouched.
    Late,
}

/// 1m candles of history a symbol needs after a rebuild for its 1m indicators to match an
/// uninterrupted run: the EMA/RSI seeds fade below 1e-12 after about 500 candles.
pub const REBUILD_CANDLES: usize = 600;

/// Eviction waits until about this many slots can go at once (bounded extra memory: 2 kB
/// per symbol).
const EVICT_CHUNK: usize = 16;

/// Marks "no pending change" in the position fields of [`SymbolHistory`].
const NONE: usize = usize::MAX;

/// One retained 1m candle: 128 bytes, aligned to two cache lines. The bar's "changed"
/// mark says it is new or replaced since the last flush (its 1m point and rollup windows
/// are re-emitted).
#[derive(Debug, Clone, Copy)]
#[repr(align(64))]
struct Slot {
    bar: MinuteBar,
    /// Recursive indicator state after this candle (valid for slots before
    /// `recompute_from`).
    state: Recursion,
}

/// The state of one (source, symbol).
#[derive(Debug)]
struct SymbolHistory {
    symbol: Arc<str>,
    source: Source,
    /// Retained candles, strictly increasing open_time.
    slots: VecDeque<Slot>,
    /// Candles dropped from the front: positions count from here for the warm-up index.
    evicted: u64,
    /// Largest open_time seen (`i64::MIN` before the first candle), which is also the
    /// newest slot's open_time.
    watermark: i64,
    /// What late candles are measured against (module docs, "Late data"); never above the
    /// watermark, never decreasing.
    event_time: i64,
    /// Earliest position of a slot marked changed, or [`NONE`].
    changed_from: usize,
    /// Earliest position whose indicator inputs changed (inserted, or close replaced), or
    /// [`NONE`]: snapshots from here on are stale until the next flush.
    recompute_from: usize,
    /// The rollup walk's windows after the last flush, and how many slots they had seen:
    /// valid to resume from while nothing before that position changed.
    cursor: Option<(usize, RollupCursor)>,
    /// The rolling windows (last 20 closes and log returns) after the last flush, and how
    /// many slots they had seen: resumed while nothing before that position changed, so an
    /// append does not re-read the 20 previous slots.
    rolling: Option<(usize, Rolling)>,
    /// Eviction can free nothing while the event time is below this (recomputed after each
    /// eviction; too high only delays it), so most flushes skip it without touching the
    /// oldest slots.
    evict_at: i64,
    /// The 5m, 15m and 1h window closes and their indicator state ([`Interval::ROLLUPS`]
    /// order).
    windows: [WindowSeries; 3],
    /// Listed in [`Aggregator::pending`].
    pending: bool,
}

impl SymbolHistory {
    fn new(symbol: Arc<str>, source: Source) -> Self {
        SymbolHistory {
            symbol,
            source,
            slots: VecDeque::new(),
            evicted: 0,
            watermark: i64::MIN,
            event_time: i64::MIN,
            changed_from: NONE,
            recompute_from: NONE,
            cursor: None,
            rolling: None,
            evict_at: i64::MIN,
            windows: Interval::ROLLUPS.map(WindowSeries::new),
            pending: false,
        }
    }

    fn apply(&mut self, c: &Candle, horizon_ms: i64) -> Applied {
        let t = c.open_time;
        if t < self.event_time.saturating_sub(horizon_ms) {
            return Applied::Late;
        }
        let bar = MinuteBar::from_candle(c);
        let len = self.slots.len();
        // the watermark is the newest slot's open_time: appends never read a slot
        let pos = if t > self.watermark {
            len
        } else {
            self.slots.partition_point(|s| s.bar.open_time < t)
        };
        let applied = match self.slots.get_mut(pos) {
            Some(slot) if slot.bar.open_time == t => {
                if slot.bar.same_as(&bar) {
                    return Applied::Unchanged;
                }
                if slot.bar.close.to_bits() != bar.close.to_bits() {
                    self.recompute_from = self.recompute_from.min(pos);
                }
                slot.bar = bar;
                slot.bar.set_changed(true);
                Applied::Replaced
            }
            _ => {
                let mut slot = Slot {
                    bar,
                    state: Recursion::default(),
                };
                slot.bar.set_changed(true);
                if len == self.slots.capacity() {
                    self.slots.reserve_exact(headroom(len) - len);
                }
                if pos == len {
                    self.slots.push_back(slot);
                } else {
                    self.slots.insert(pos, slot);
                }
                self.recompute_from = self.recompute_from.min(pos);
                Applied::Inserted
            }
        };
        self.changed_from = self.changed_from.min(pos);
        // module docs, "Late data": a candle past the watermark confirms the previous one
        self.event_time = if self.watermark == i64::MIN {
            t
        } else if t > self.watermark {
            self.watermark
        } else if t < self.watermark {
            self.event_time.max(t)
        } else {
            self.event_time
        };
        self.watermark = self.watermark.max(t);
        applied
    }

    /// Brings the history up to date after a batch of applies: rollup and 1m points for the
    /// changed candles, indicator snapshots (and points) from the earliest indicator change,
    /// then eviction. With `out = None` nothing is emitted (state rebuild).
    fn settle(&mut self, mut out: Option<&mut Vec<Point>>, horizon_ms: i64) {
        if self.changed_from != NONE {
            self.feed_windows();
            match out.as_deref_mut() {
                Some(out) => self.emit_candles(out),
                None => {
                    for slot in self.slots.range_mut(self.changed_from..) {
                        slot.bar.set_changed(false);
                    }
                    self.cursor = None;
                }
            }
        }
        if self.recompute_from != NONE {
            self.recompute_indicators(out.as_deref_mut());
        }
        for series in &mut self.windows {
            series.settle(&self.symbol, self.source, out.as_deref_mut());
        }
        self.changed_from = NONE;
        self.recompute_from = NONE;
        self.pending = false;
        self.evict(horizon_ms);
    }

    /// Emits the 1m point of every changed candle and every rollup window holding one.
    fn emit_candles(&mut self, out: &mut Vec<Point>) {
        let len = self.slots.len();
        let (start, mut cursor) = match self.cursor.take() {
            Some((seen, cursor)) if seen <= self.changed_from => (seen, cursor),
            _ => {
                // Start at the 1h window of the earliest change: a full window for all
                // three intervals (1h starts are also 15m and 5m starts).
                let hour = Interval::H1.window_start(self.slots[self.changed_from].bar.open_time);
                let start = self.slots.partition_point(|s| s.bar.open_time < hour);
                (start, RollupCursor::default())
            }
        };
        let (symbol, source) = (&self.symbol, self.source);
        let mut emit = |w: &RollupWindow| {
            out.push(Point::Candle(w.point(symbol, source)));
        };
        for slot in self.slots.range_mut(start..) {
            let changed = slot.bar.is_changed();
            if changed {
                emit(&RollupWindow::of_minute(&slot.bar));
                slot.bar.set_changed(false);
            }
            cursor.fold(&slot.bar, changed, &mut emit);
        }
        cursor.finish(&mut emit);
        self.cursor = Some((len, cursor));
    }

    /// Hands the rollup series the close of every window from the one holding the
    /// earliest changed candle on: a window's close is its newest candle's close.
    fn feed_windows(&mut self) {
        let slots = self.slots.range(self.changed_from..);
        for series in &mut self.windows {
            let interval = series.interval();
            let mut current: Option<(i64, f64)> = None;
            for slot in slots.clone() {
                let start = interval.window_start(slot.bar.open_time);
                if let Some((open, close)) = current {
                    if open != start {
                        series.upsert(open, close);
                    }
                }
                current = Some((start, slot.bar.close));
            }
            if let Some((open, close)) = current {
                series.upsert(open, close);
            }
        }
    }

    /// Recomputes snapshots from `recompute_from` to the newest candle, emitting their
    /// indicator points when `out` is given.
    fn recompute_indicators(&mut self, out: Option<&mut Vec<Point>>) {
        let from = self.recompute_from;
        debug_assert!(
            from >= WINDOW || self.evicted == 0,
            "retention keeps {WINDOW} candles before any change"
        );
        let emitting = out.is_some();
        let rolling = if emitting {
            resume_rolling(self.rolling.take(), from, |p| self.slots[p].bar.close)
        } else {
            self.rolling = None;
            Rolling::default()
        };
        let previous = from
            .checked_sub(1)
            .map(|p| (self.slots[p].state, self.slots[p].bar.close));
        let mut walk = Walk::new(
            (&self.symbol, self.source, Interval::M1),
            self.evicted + from as u64 + 1,
            previous,
            rolling,
            out,
        );
        for slot in self.slots.range_mut(from..) {
            slot.state = walk.step(slot.bar.open_time, slot.bar.close);
        }
        if emitting {
            self.rolling = Some((self.slots.len(), walk.into_rolling()));
        }
    }

    /// Drops candles no accepted message can reach any more (module docs, "Late data").
    fn evict(&mut self, horizon_ms: i64) {
        if self.event_time < self.evict_at {
            return;
        }
        let accept_from = self.event_time.saturating_sub(horizon_ms);
        for series in &mut self.windows {
            series.evict(accept_from);
        }
        let keep_from = Interval::H1.window_start(accept_from);
        // Keep everything from the 1h window of the horizon's edge, and WINDOW candles
        // before the first one inside the horizon.
        let first_accepted = self
            .slots
            .partition_point(|s| s.bar.open_time < accept_from);
        let first_kept = self.slots.partition_point(|s| s.bar.open_time < keep_from);
        let n = first_kept.min(first_accepted.saturating_sub(WINDOW));
        if n > 0 {
            self.slots.drain(..n);
            self.evicted += n as u64;
            for seen in [
                self.cursor.as_mut().map(|(seen, _)| seen),
                self.rolling.as_mut().map(|(seen, _)| seen),
            ]
            .into_iter()
            .flatten()
            {
                *seen -= n;
            }
        }
        // Next run: when the first EVICT_CHUNK slots (fewer for a short history) can go,
        // i.e. accept_from has reached the hour after the last one's 1h window and passed
        // the slot WINDOW after it. Evicting in chunks keeps the two binary searches off
        // the per-flush path.
        let last = EVICT_CHUNK.min(self.slots.len().saturating_sub(WINDOW + 1));
        self.evict_at = match (self.slots.get(last), self.slots.get(last + WINDOW)) {
            (Some(front), Some(guard)) => {
                let next_hour =
                    Interval::H1.window_start(front.bar.open_time) + Interval::H1.millis();
                next_hour
                    .max(guard.bar.open_time.saturating_add(1))
                    .saturating_add(horizon_ms)
            }
            _ => i64::MIN, // nothing can go yet: n is 0 without touching memory
        };
        // give back what a burst (a large batch for one symbol) grew
        let len = self.slots.len();
        if self.slots.capacity() > 2 * len + 64 {
            self.slots.shrink_to(headroom(len));
        }
    }
}

/// Capacity for a history of `len` slots: 25 % headroom instead of `VecDeque`'s doubling,
/// which would leave most symbols at a power of two far above their steady size (still
/// amortized O(1) per append).
fn headroom(len: usize) -> usize {
    len + len / 4 + 8
}

/// Index of a [`Source`] in [`Aggregator::index`].
fn source_slot(source: Source) -> usize {
    match source {
        Source::Replay => 0,
        Source::Live => 1,
    }
}

/// Every symbol's state, and the list of symbols changed since the last flush.
///
/// Points come out of [`Aggregator::flush`] grouped per symbol in the order the symbols
/// were first changed; within a symbol, candle points (1m and rollups) in time order, then
/// indicator points in time order.
#[derive(Debug)]
pub struct Aggregator {
    /// How far behind its symbol's watermark a candle may be and still be applied, ms.
    horizon_ms: i64,
    histories: Vec<SymbolHistory>,
    /// (source, symbol) → position in `histories`, one map per source so a lookup by
    /// `&str` allocates nothing.
    index: [SymbolMap; 2],
    /// Positions in `histories` with changes since the last flush, first change first.
    pending: Vec<usize>,
}

impl Aggregator {
    /// An empty aggregator accepting candles up to `horizon_ms` behind their symbol's
    /// watermark (negative values count as 0: only the newest minute may be replaced).
    pub fn new(horizon_ms: i64) -> Self {
        Aggregator {
            horizon_ms: horizon_ms.max(0),
            histories: Vec::new(),
            index: [SymbolMap::default(), SymbolMap::default()],
            pending: Vec::new(),
        }
    }

    /// The late-data horizon, ms.
    pub fn horizon_ms(&self) -> i64 {
        self.horizon_ms
    }

    /// Applies one validated 1m candle to its (source, symbol) state.
    pub fn apply(&mut self, c: &Candle) -> Applied {
        let map = &mut self.index[source_slot(c.source)];
        let id = match map.get(c.symbol.as_str()) {
            Some(&id) => id,
            None => {
                let symbol: Arc<str> = Arc::from(c.symbol.as_str());
                let id = self.histories.len();
                self.histories
                    .push(SymbolHistory::new(Arc::clone(&symbol), c.source));
                map.insert(symbol, id);
                id
            }
        };
        let history = &mut self.histories[id];
        let applied = history.apply(c, self.horizon_ms);
        if matches!(applied, Applied::Inserted | Applied::Replaced) && !history.pending {
            history.pending = true;
            self.pending.push(id);
        }
        applied
    }

    /// Appends to `out` every point changed since the last flush, each once: the 1m candle
    /// points of new or replaced candles, every 5m/15m/1h window holding one (recomputed from
    /// the stored 1m candles), and the indicator points from the earliest candle whose
    /// indicators changed to the newest. Then evicts what the horizon no longer needs.
    pub fn flush(&mut self, out: &mut Vec<Point>) {
        for id in self.pending.drain(..) {
            self.histories[id].settle(Some(out), self.horizon_ms);
        }
    }

    /// Applies the pending changes to the state without emitting anything: used after a
    /// state rebuild (re-applied history that InfluxDB already holds).
    pub fn discard_pending(&mut self) {
        for id in self.pending.drain(..) {
            self.histories[id].settle(None, self.horizon_ms);
        }
    }

    /// Keeps only the symbols for which `keep(source, symbol)` is true (after a partition
    /// revocation); the others' state and pending changes are dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(Source, &str) -> bool) {
        let mut moved_to = vec![NONE; self.histories.len()];
        let mut kept = Vec::with_capacity(self.histories.len());
        for (old, history) in std::mem::take(&mut self.histories).into_iter().enumerate() {
            if keep(history.source, &history.symbol) {
                moved_to[old] = kept.len();
                kept.push(history);
            }
        }
        self.histories = kept;
        for map in &mut self.index {
            map.clear();
        }
        for (id, history) in self.histories.iter().enumerate() {
            self.index[source_slot(history.source)].insert(Arc::clone(&history.symbol), id);
        }
        self.pending = self
            .pending
            .iter()
            .map(|&old| moved_to[old])
            .filter(|&new| new != NONE)
            .collect();
    }

    /// The number of distinct 1m candles applied to this symbol since its state was
    /// created, evicted ones included: the warm-up index of its newest candle (>= 34 means
    /// every indicator field is written). 0 for an unknown symbol.
    pub fn history_len(&self, source: Source, symbol: &str) -> usize {
        self.history(source, symbol)
            .map_or(0, |h| h.evicted as usize + h.slots.len())
    }

    /// Whether the symbol's state holds enough history for its points to match an
    /// uninterrupted run: [`REBUILD_CANDLES`] 1m candles and [`REBUILD_WINDOWS`] windows of
    /// every rollup interval (so the EMA/RSI seeds of every series have faded). A state
    /// rebuild re-reads the log until this holds or the log's start is reached.
    pub fn rebuilt_enough(&self, source: Source, symbol: &str) -> bool {
        self.history(source, symbol).is_some_and(|h| {
            h.evicted as usize + h.slots.len() >= REBUILD_CANDLES
                && h.windows.iter().all(|w| w.seen() >= REBUILD_WINDOWS)
        })
    }

    /// The symbol's watermark (largest open_time seen), if it has state.
    pub fn watermark(&self, source: Source, symbol: &str) -> Option<i64> {
        self.history(source, symbol).map(|h| h.watermark)
    }

    /// The symbol's event time (what late candles are measured against, module docs), if
    /// it has state.
    pub fn event_time(&self, source: Source, symbol: &str) -> Option<i64> {
        self.history(source, symbol).map(|h| h.event_time)
    }

    /// Number of (source, symbol) states held.
    pub fn symbols(&self) -> usize {
        self.histories.len()
    }

    /// 1m candles currently retained over all symbols (memory accounting).
    pub fn retained_candles(&self) -> usize {
        self.histories.iter().map(|h| h.slots.len()).sum()
    }

    /// Approximate heap bytes held by the state (slot buffers, per-symbol records, index).
    pub fn approx_heap_bytes(&self) -> usize {
        let per_symbol = std::mem::size_of::<SymbolHistory>()
            + 2 * std::mem::size_of::<(Arc<str>, usize)>()
            + 2 * std::mem::size_of::<usize>();
        self.histories
            .iter()
            .map(|h| {
                h.slots.capacity() * std::mem::size_of::<Slot>()
                    + h.windows
                        .iter()
                        .map(WindowSeries::heap_bytes)
                        .sum::<usize>()
                    + per_symbol
                    + 16
                    + h.symbol.len()
            })
            .sum()
    }

    fn history(&self, source: Source, symbol: &str) -> Option<&SymbolHistory> {
        self.index[source_slot(source)]
            .get(symbol)
            .map(|&id| &self.histories[id])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::point::{CandlePoint, IndicatorPoint};
    use candlepipe_model::candle::MINUTE_MS;
    use std::collections::BTreeMap;

    const T0: i64 = 1_614_556_800_000; // 2021-03-01T00:00Z, an hour boundary
    const HOUR: i64 = 60 * MINUTE_MS;

    fn candle(symbol: &str, minute: i64, close: f64, volume: f64) -> Candle {
        let open = close - 0.5;
        Candle::ohlcv(
            symbol,
            Source::Replay,
            T0 + minute * MINUTE_MS,
            open,
            close.max(open) + 1.0,
            close.min(open) - 1.0,
            close,
            volume,
        )
    }

    /// A deterministic wobbly close for minute `m`.
    fn close_at(m: i64) -> f64 {
        100.0 + (m as f64 * 0.37).sin() * 3.0 + (m as f64 * 0.051).cos()
    }

    /// Key of a point in InfluxDB: (measurement, interval, time).
    type Key = (&'static str, &'static str, i64);

    fn key(p: &Point) -> Key {
        match p {
            Point::Candle(c) => ("candle", c.interval.as_str(), c.time),
            Point::Indicator(i) => ("indicator", i.interval.as_str(), i.time),
        }
    }

    /// What InfluxDB would hold after writing `points` in order (upsert by key).
    fn upsert(db: &mut BTreeMap<Key, Point>, points: &[Point]) {
        for p in points {
            db.insert(key(p), p.clone());
        }
    }

    fn flushed(agg: &mut Aggregator) -> Vec<Point> {
        let mut out = Vec::new();
        agg.flush(&mut out);
        out
    }

    fn candle_point(points: &[Point], interval: Interval, time: i64) -> &CandlePoint {
        points
            .iter()
            .find_map(|p| match p {
                Point::Candle(c) if c.interval == interval && c.time == time => Some(c),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {interval} point at {time}"))
    }

    #[test]
    fn flush_emits_each_point_once_with_hand_worked_rollups() {
        // minutes 0, 1, 2, 4, 5 (3 is a gap) of hour 0
        // closes 10, 11, 12, 13, 14; volume 1, 2, 3, 4, 5
        // 5m [0,5): minutes 0,1,2,4: open 9.5, close 13, high 14 (13+1), low 8.5 (9.5-1),
        //           volume 1+2+3+4 = 10
        // 5m [5,10): minute 5 only
        // 15m and 1h [0, ...): all five, volume 15, open 9.5, close 14
        let mut agg = Aggregator::new(HOUR);
        for (m, c, v) in [
            (0, 10.0, 1.0),
            (1, 11.0, 2.0),
            (2, 12.0, 3.0),
            (4, 13.0, 4.0),
            (5, 14.0, 5.0),
        ] {
            assert_eq!(agg.apply(&candle("A", m, c, v)), Applied::Inserted);
        }
        let out = flushed(&mut agg);
        let keys: Vec<Key> = out.iter().map(key).collect();
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "a point emitted twice: {keys:?}");
        // 5 minutes + 2 five-minute + 1 fifteen + 1 hour + 4 1m indicator points (not minute
        // 0) + 1 5m indicator point (the second 5m window; the first has no field)
        assert_eq!(keys.len(), 5 + 2 + 1 + 1 + 4 + 1);
        let w = candle_point(&out, Interval::M5, T0);
        assert_eq!(
            (w.open, w.high, w.low, w.close, w.volume),
            (9.5, 14.0, 8.5, 13.0, 10.0)
        );
        let w = candle_point(&out, Interval::M5, T0 + 5 * MINUTE_MS);
        assert_eq!((w.open, w.close, w.volume), (13.5, 14.0, 5.0));
        let w = candle_point(&out, Interval::H1, T0);
        assert_eq!(
            (w.open, w.high, w.low, w.close, w.volume),
            (9.5, 15.0, 8.5, 14.0, 15.0)
        );
        // a flush with nothing new emits nothing
        assert!(flushed(&mut agg).is_empty());
        assert_eq!(agg.history_len(Source::Replay, "A"), 5);
    }

    #[test]
    fn duplicates_are_unchanged_and_emit_nothing() {
        let mut agg = Aggregator::new(HOUR);
        for m in 0..30 {
            agg.apply(&candle("A", m, close_at(m), 1.0));
        }
        agg.flush(&mut Vec::new());
        for m in 0..30 {
            let mut c = candle("A", m, close_at(m), 1.0);
            c.produced_at = Some(123); // transport field: not content
            c.closed = m % 2 == 0;
            assert_eq!(agg.apply(&c), Applied::Unchanged);
        }
        assert!(flushed(&mut agg).is_empty());
        assert_eq!(agg.history_len(Source::Replay, "A"), 30);
    }

    #[test]
    fn replacement_re_emits_its_windows_without_double_counting() {
        let mut agg = Aggregator::new(HOUR);
        for m in 0..20 {
            agg.apply(&candle("A", m, close_at(m), 1.0));
        }
        agg.flush(&mut Vec::new());
        // minute 7 replaced: volume 1 -> 10, same close
        assert_eq!(
            agg.apply(&candle("A", 7, close_at(7), 10.0)),
            Applied::Replaced
        );
        let out = flushed(&mut agg);
        let keys: Vec<Key> = out.iter().map(key).collect();
        assert_eq!(
            keys,
            vec![
                ("candle", "1m", T0 + 7 * MINUTE_MS),
                ("candle", "5m", T0 + 5 * MINUTE_MS),
                ("candle", "15m", T0),
                ("candle", "1h", T0),
            ],
            "same close: indicators unchanged, only the minute and its windows"
        );
        // 5m [5,10): 5 candles, one now 10 -> 14; 15m [0,15): 15 -> 24; 1h: 20 -> 29
        assert_eq!(
            candle_point(&out, Interval::M5, T0 + 5 * MINUTE_MS).volume,
            14.0
        );
        assert_eq!(candle_point(&out, Interval::M15, T0).volume, 24.0);
        assert_eq!(candle_point(&out, Interval::H1, T0).volume, 29.0);

        // a close change re-emits indicators from that minute to the newest (7..=19)
        agg.apply(&candle("A", 7, close_at(7) + 1.0, 10.0));
        let out = flushed(&mut agg);
        let ind: Vec<i64> = out
            .iter()
            .filter_map(|p| match p {
                Point::Indicator(i) => Some((i.time - T0) / MINUTE_MS),
                _ => None,
            })
            .collect();
        assert_eq!(ind, (7..20).collect::<Vec<_>>());
    }

    #[test]
    fn late_beyond_horizon_is_rejected_and_state_untouched() {
        let run = |late: bool| {
            let mut agg = Aggregator::new(30 * MINUTE_MS);
            let mut db = BTreeMap::new();
            for m in 0..200 {
                if m == 150 {
                    upsert(&mut db, &flushed(&mut agg));
                    if late {
                        // watermark 149, horizon 30: minute 118 is the oldest accepted
                        for old in [0, 100, 117] {
                            let c = candle("A", old, 1.0, 99.0);
                            assert_eq!(agg.apply(&c), Applied::Late, "minute {old}");
                        }
                        assert!(flushed(&mut agg).is_empty());
                    }
                }
                agg.apply(&candle("A", m, close_at(m), 1.0));
            }
            upsert(&mut db, &flushed(&mut agg));
            (db, agg.history_len(Source::Replay, "A"))
        };
        assert_eq!(run(true), run(false));
        // the boundary itself is accepted
        let mut agg = Aggregator::new(30 * MINUTE_MS);
        agg.apply(&candle("A", 100, 1.0, 1.0));
        assert_eq!(agg.apply(&candle("A", 70, 1.0, 1.0)), Applied::Inserted);
        assert_eq!(agg.apply(&candle("A", 69, 1.0, 1.0)), Applied::Late);
    }

    #[test]
    fn late_inside_horizon_changes_exactly_the_affected_points() {
        let horizon = 2 * HOUR;
        // in order, minutes 0..300
        let mut in_order = Aggregator::new(horizon);
        let mut expected = BTreeMap::new();
        for m in 0..300 {
            in_order.apply(&candle("A", m, close_at(m), 1.0 + m as f64));
            if m % 17 == 0 {
                upsert(&mut expected, &flushed(&mut in_order));
            }
        }
        upsert(&mut expected, &flushed(&mut in_order));

        // minute 250 held back until after minute 299 was flushed (watermark 299,
        // horizon 120: 250 is inside)
        let mut late = Aggregator::new(horizon);
        let mut db = BTreeMap::new();
        for m in (0..300).filter(|&m| m != 250) {
            late.apply(&candle("A", m, close_at(m), 1.0 + m as f64));
        }
        upsert(&mut db, &flushed(&mut late));
        assert_eq!(
            late.apply(&candle("A", 250, close_at(250), 251.0)),
            Applied::Inserted
        );
        let out = flushed(&mut late);
        let mut keys: Vec<Key> = out.iter().map(key).collect();
        keys.sort();
        let t = |m: i64| T0 + m * MINUTE_MS;
        let mut want: Vec<Key> = vec![
            ("candle", "1m", t(250)),
            ("candle", "5m", t(250)),
            ("candle", "15m", t(240)),
            ("candle", "1h", t(240)),
        ];
        want.extend((250..300).map(|m| ("indicator", "1m", t(m))));
        want.sort();
        assert_eq!(keys, want);
        upsert(&mut db, &out);
        // bit-identical to the in-order run: same snapshots, same fold order
        assert_eq!(db, expected);
        assert_eq!(late.history_len(Source::Replay, "A"), 300);
    }

    #[test]
    fn late_candle_at_the_horizon_edge_matches_in_order() {
        // Retention is tightest at the edge: the candle exactly `horizon` behind the
        // watermark, after evictions, in a history with gaps (every 7th minute missing).
        for horizon_min in [0, 1, 7, 45, 61, 180] {
            // late in its hour (minute 355 = 5h55m), so its 1h window reaches far back
            let late = (355..)
                .find(|m: &i64| m % 7 != 0 && (m + horizon_min) % 7 != 0)
                .unwrap();
            let minutes: Vec<i64> = (0..600).filter(|m| m % 7 != 0).collect();
            let c = |m: i64| candle("E", m, close_at(m), 1.0 + (m % 5) as f64);
            let horizon = horizon_min * MINUTE_MS;

            let mut in_order = Aggregator::new(horizon);
            let mut expected = BTreeMap::new();
            for (i, &m) in minutes.iter().enumerate() {
                in_order.apply(&c(m));
                if i % 5 == 0 {
                    upsert(&mut expected, &flushed(&mut in_order));
                }
            }
            upsert(&mut expected, &flushed(&mut in_order));

            let mut held = Aggregator::new(horizon);
            let mut db = BTreeMap::new();
            for (i, &m) in minutes.iter().enumerate() {
                if m != late {
                    held.apply(&c(m));
                }
                if m == late + horizon_min {
                    upsert(&mut db, &flushed(&mut held)); // evicts what it may
                    assert_eq!(held.apply(&c(late)), Applied::Inserted, "h={horizon_min}");
                    assert_eq!(held.apply(&c(late - 7)), Applied::Late, "h={horizon_min}");
                }
                if i % 5 == 0 {
                    upsert(&mut db, &flushed(&mut held));
                }
            }
            upsert(&mut db, &flushed(&mut held));
            assert!(db == expected, "horizon {horizon_min} min");
        }
    }

    /// Relative comparison for indicator values after a rebuild.
    fn close_enough(a: f64, b: f64) -> bool {
        a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }

    fn assert_indicators_match(a: &IndicatorPoint, b: &IndicatorPoint) {
        let fa: Vec<_> = a.fields().collect();
        let fb: Vec<_> = b.fields().collect();
        assert_eq!(fa.len(), fb.len(), "{a:?} vs {b:?}");
        for ((ka, va), (kb, vb)) in fa.into_iter().zip(fb) {
            assert_eq!(ka, kb);
            assert!(close_enough(va, vb), "{ka} at {}: {va} vs {vb}", a.time);
        }
    }

    #[test]
    fn rebuild_from_recent_history_matches_an_uninterrupted_run() {
        // 30,000 minutes with gaps (every 7th and 11th minute missing): long enough that a
        // rebuild reaches its 400 1h windows before the start of the history
        let minutes: Vec<i64> = (0..30_000).filter(|m| m % 7 != 3 && m % 11 != 5).collect();
        let horizon = HOUR;
        let restart_at = minutes.len() - 1000; // index into `minutes`
        let c = |m: i64| candle("A", m, close_at(m), 1.0 + (m % 13) as f64);

        let mut uninterrupted = Aggregator::new(horizon);
        let mut expected = BTreeMap::new();
        for (i, &m) in minutes.iter().enumerate() {
            uninterrupted.apply(&c(m));
            if i % 50 == 49 || i + 1 == restart_at {
                upsert(&mut expected, &flushed(&mut uninterrupted));
            }
        }
        upsert(&mut expected, &flushed(&mut uninterrupted));

        // "restart": as the batch loop does, a new aggregator re-applies the history before
        // restart_at in doubling windows (from 600 candles) until it has enough, discards
        // what that produced, then continues with the live stream
        let mut window = 600;
        let mut rebuilt = loop {
            let mut agg = Aggregator::new(horizon);
            for &m in &minutes[restart_at - window..restart_at] {
                agg.apply(&c(m));
            }
            agg.discard_pending();
            if agg.rebuilt_enough(Source::Replay, "A") {
                break agg;
            }
            window *= 2;
            assert!(
                window < restart_at,
                "the history is long enough for a rebuild"
            );
        };
        // 400 1h windows need 24,000 minutes (fewer candles: the gaps)
        assert_eq!(window, 600 * 32);
        assert_eq!(rebuilt.history_len(Source::Replay, "A"), window);
        let mut after = BTreeMap::new();
        for (i, &m) in minutes.iter().enumerate().skip(restart_at) {
            rebuilt.apply(&c(m));
            if i % 50 == 49 {
                upsert(&mut after, &flushed(&mut rebuilt));
            }
        }
        // and a late candle inside the horizon after the rebuild
        let last = *minutes.last().unwrap();
        let gap = (last - 50..last).find(|m| !minutes.contains(m)).unwrap();
        rebuilt.apply(&c(gap));
        uninterrupted.apply(&c(gap));
        upsert(&mut after, &flushed(&mut rebuilt));
        upsert(&mut expected, &flushed(&mut uninterrupted));

        // every candle after the restart: its 1m point and its indicator point, plus windows
        // and their indicator points
        assert!(after.len() > 2 * (minutes.len() - restart_at));
        for interval in Interval::ROLLUPS {
            assert!(after
                .keys()
                .any(|(m, i, _)| *m == "indicator" && *i == interval.as_str()));
        }
        for (k, p) in &after {
            match (p, &expected[k]) {
                (Point::Candle(a), Point::Candle(b)) => assert_eq!(a, b, "rollups exactly"),
                (Point::Indicator(a), Point::Indicator(b)) => assert_indicators_match(a, b),
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn retention_is_bounded_by_the_horizon() {
        let mut agg = Aggregator::new(HOUR);
        for m in 0..5000 {
            agg.apply(&candle("A", m, close_at(m), 1.0));
            if m % 10 == 0 {
                agg.flush(&mut Vec::new());
            }
        }
        agg.flush(&mut Vec::new());
        // watermark 4999 = 83h19m; keep from 82:00 (the 1h window of 82:19) = 80 minutes
        let retained = agg.retained_candles();
        assert!(
            retained <= 60 + 60 + WINDOW + EVICT_CHUNK,
            "retained {retained}"
        );
        assert!(retained >= 60 + WINDOW);
        assert_eq!(agg.history_len(Source::Replay, "A"), 5000);
        // a candle at the horizon edge can still be replaced and re-emits a full 1h window
        let edge = 4999 - 60;
        agg.apply(&candle("A", edge, close_at(edge), 5.0));
        let out = flushed(&mut agg);
        let hour = Interval::H1.window_start(T0 + edge * MINUTE_MS);
        assert_eq!(
            candle_point(&out, Interval::H1, hour).volume,
            64.0,
            "60 candles of 1 with one replaced by 5"
        );
    }

    #[test]
    fn symbols_and_sources_are_separate_and_retain_drops_them() {
        let mut agg = Aggregator::new(HOUR);
        agg.apply(&candle("A", 0, 1.0, 1.0));
        agg.apply(&candle("B", 0, 1.0, 1.0));
        let mut live = candle("A", 0, 2.0, 1.0);
        live.source = Source::Live;
        assert_eq!(agg.apply(&live), Applied::Inserted);
        assert_eq!(agg.symbols(), 3);
        agg.retain(|source, symbol| !(source == Source::Replay && symbol == "A"));
        assert_eq!(agg.symbols(), 2);
        assert_eq!(agg.history_len(Source::Replay, "A"), 0);
        assert_eq!(agg.history_len(Source::Live, "A"), 1);
        let out = flushed(&mut agg);
        let symbols: Vec<(String, Source)> = out
            .iter()
            .filter_map(|p| match p {
                Point::Candle(c) if c.interval == Interval::M1 => {
                    Some((c.symbol.to_string(), c.source))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            symbols,
            vec![("B".into(), Source::Replay), ("A".into(), Source::Live)]
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]
            /// Any delivery order within the horizon, with redeliveries and superseded
            /// in-progress versions, converges to the in-order content, bit for bit.
            #[test]
            fn any_order_within_horizon_converges_to_in_order(
                seed in any::<u64>(),
                flush_every in 1usize..40,
            ) {
                let horizon = 90 * MINUTE_MS;
                let minutes: Vec<i64> = (0..400).filter(|m| (m * 31 + seed as i64).rem_euclid(9) != 0).collect();
                let c = |m: i64, v: f64| candle("P", m, close_at(m) + (seed % 5) as f64, v);

                let mut in_order = Aggregator::new(horizon);
                let mut expected = BTreeMap::new();
                for &m in &minutes {
                    in_order.apply(&c(m, 1.0 + (m % 4) as f64));
                }
                upsert(&mut expected, &flushed(&mut in_order));

                // shuffle inside blocks of 40 minutes (< horizon), add stale versions
                // before the final one and duplicates after it
                let mut rng = seed;
                let mut next = || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
                let mut messages = Vec::new();
                for block in minutes.chunks(40) {
                    let mut b: Vec<(i64, f64)> = Vec::new();
                    for &m in block {
                        if next() % 4 == 0 { b.push((m, 1000.0)); } // in-progress version
                    }
                    let mut finals: Vec<(i64, f64)> = block.iter().map(|&m| (m, 1.0 + (m % 4) as f64)).collect();
                    for i in (1..finals.len()).rev() {
                        finals.swap(i, (next() % (i as u64 + 1)) as usize);
                    }
                    b.extend(finals.iter().copied());
                    for &(m, v) in &finals {
                        if next() % 5 == 0 { b.push((m, v)); } // redelivery
                    }
                    messages.extend(b);
                }
                let mut agg = Aggregator::new(horizon);
                let mut db = BTreeMap::new();
                for (i, &(m, v)) in messages.iter().enumerate() {
                    prop_assert_ne!(agg.apply(&c(m, v)), Applied::Late);
                    if i % flush_every == 0 {
                        upsert(&mut db, &flushed(&mut agg));
                    }
                }
                upsert(&mut db, &flushed(&mut agg));
                prop_assert_eq!(db, expected);
            }
        }
    }
}
