//! One live symbol's memory: which minutes are settled, and what the minute in progress
//! looked like when it was last published. This is where "every closed candle exactly once,
//! in order" is decided; it does no I/O, so the rules are tested here directly.
//!
//! The rules:
//!
//! * A minute is **closed** once Yahoo's clock (the chart's `regularMarketTime`, see
//!   [`super::chart`]) has passed its end. The producer's own clock is never used for that:
//!   it may be skewed, and a proxy or test server may be replaying another time.
//! * Every minute before `settled_until` is settled: published as a closed candle, or a gap,
//!   or an invalid bar that was counted and skipped. Settled minutes are never looked at
//!   again, so a closed candle is published at most once; and `settled_until` only moves
//!   past a minute after a poll whose window covered it, so none is skipped.
//! * The next request asks for `[settled_until, now)`: in steady state that is the minute in
//!   progress and whatever closed since the previous poll.
//! * The minute in progress is published with `closed=false` when it differs from what was
//!   last published for it.
//! * A bar with prices and a `null` volume is published with volume 0 (documented choice):
//!   the minute is real, Yahoo itself reports 0 volume for instruments it has none for (FX,
//!   indices), and with Σvolume = 0 the consumer writes no vwap for it, so no made-up number
//!   is averaged in. A bar with any `null` price is a gap and is not published at all.
//! * Quote volume, trades and taker volumes are `None`: Yahoo does not give them.

use super::chart::{Bar, Chart};
use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::validate::{validate, InvalidCandle};
use candlepipe_model::{Candle, Source};

/// The most Yahoo serves per 1m request (it refuses longer windows).
pub(crate) const MAX_WINDOW_MS: i64 = 7 * 24 * 60 * MINUTE_MS;
/// How far back Yahoo keeps 1m data (30 days, less a day of margin).
pub(crate) const RETENTION_MS: i64 = 29 * 24 * 60 * MINUTE_MS;
/// How far past the local clock a window reaches, for clock skew between us and Yahoo.
pub(crate) const FUTURE_SLACK_MS: i64 = 2 * MINUTE_MS;

/// The time span one chart request asks for, Unix ms, minute aligned: `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub from: i64,
    pub to: i64,
    /// The window stops short of the present (catching up on more than
    /// [`MAX_WINDOW_MS`]): ask again at once instead of waiting a poll interval.
    pub catching_up: bool,
}

/// What one chart answer produced.
#[derive(Debug, Default)]
pub(crate) struct Absorbed {
    /// Candles to publish, in order: newly closed minutes first, then the one in progress.
    pub candles: Vec<Candle>,
    /// Bars that failed validation (e.g. high < low): counted, logged and skipped.
    pub invalid: Vec<(i64, InvalidCandle)>,
    /// Published bars whose volume Yahoo sent as `null` (published with volume 0).
    pub null_volumes: usize,
}

/// One symbol's progress through Yahoo's minutes.
#[derive(Debug, Clone)]
pub(crate) struct SymbolFeed {
    /// Yahoo ticker, also the candle's symbol and Kafka key.
    pub symbol: String,
    /// Every minute before this (Unix ms) is settled.
    settled_until: i64,
    /// The in-progress candle as last published.
    last_open: Option<Candle>,
}

fn floor_minute(t: i64) -> i64 {
    t.div_euclid(MINUTE_MS) * MINUTE_MS
}

impl SymbolFeed {
    /// A feed that continues after `newest_closed` (the open time of the newest closed live
    /// candle already on the topic), or, for a symbol never published, starts at
    /// `cold_start` (now minus the backfill).
    pub fn new(symbol: String, newest_closed: Option<i64>, cold_start: i64) -> Self {
        SymbolFeed {
            symbol,
            settled_until: newest_closed.map_or(floor_minute(cold_start), |t| t + MINUTE_MS),
            last_open: None,
        }
    }

    /// Every minute before this is settled (Unix ms).
    #[cfg(test)]
    pub fn settled_until(&self) -> i64 {
        self.settled_until
    }

    /// The window to request when the local clock reads `now`. Minutes older than Yahoo's
    /// 1m retention cannot be fetched any more; the window starts at the oldest it keeps.
    pub fn window(&self, now: i64) -> Window {
        let from = self.settled_until.max(floor_minute(now - RETENTION_MS));
        let present = floor_minute(now + FUTURE_SLACK_MS);
        let to = present.min(from + MAX_WINDOW_MS).max(from + MINUTE_MS);
        Window {
            from,
            to,
            catching_up: to < present,
        }
    }

    /// Takes in the answer to a request for `window`, given Yahoo's clock `market_now`
    /// (Unix ms), and returns what to publish.
    pub fn absorb(&mut self, chart: &Chart, market_now: i64, window: Window) -> Absorbed {
        let mut out = Absorbed::default();
        // Minutes before `closed_end` are closed, and covered by this window.
        let live_minute = floor_minute(market_now);
        let closed_end = live_minute.min(window.to);
        // A window starting later than settled_until skipped minutes Yahoo no longer keeps.
        self.settled_until = self.settled_until.max(window.from);
        for bar in chart
            .bars
            .iter()
            .filter(|b| b.open_time >= self.settled_until)
        {
            if bar.open_time < closed_end {
                if let Some(c) = self.candle(bar, true, &mut out) {
                    out.candles.push(c);
                }
            } else if bar.open_time >= live_minute && bar.open_time < window.to {
                let Some(c) = self.candle(bar, false, &mut out) else {
                    continue;
                };
                if self.last_open.as_ref() != Some(&c) {
                    self.last_open = Some(c.clone());
                    out.candles.push(c);
                }
            }
        }
        self.settled_until = self.settled_until.max(closed_end);
        if self
            .last_open
            .as_ref()
            .is_some_and(|c| c.open_time < self.settled_until)
        {
            self.last_open = None;
        }
        out
    }

    /// The candle of `bar`, or `None` (recorded in `out.invalid`) when it is not valid.
    fn candle(&self, bar: &Bar, closed: bool, out: &mut Absorbed) -> Option<Candle> {
        let mut c = Candle::ohlcv(
            self.symbol.clone(),
            Source::Live,
            bar.open_time,
            bar.open,
            bar.high,
            bar.low,
            bar.close,
            bar.volume.unwrap_or(0.0),
        );
        c.closed = closed;
        match validate(&c) {
            Ok(()) => {
                if bar.volume.is_none() {
                    out.null_volumes += 1;
                }
                Some(c)
            }
            Err(e) => {
                out.invalid.push((bar.open_time, e));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_732_249_920_000; // a minute boundary
    const M: i64 = MINUTE_MS;

    fn bar(minute: i64, close: f64) -> Bar {
        Bar {
            open_time: T0 + minute * M,
            open: 10.0,
            high: 12.0,
            low: 9.0,
            close,
            volume: Some(5.0),
        }
    }

    fn chart(bars: Vec<Bar>) -> Chart {
        Chart {
            bars,
            ..Chart::default()
        }
    }

    fn minutes(cs: &[Candle]) -> Vec<(i64, bool)> {
        cs.iter()
            .map(|c| ((c.open_time - T0) / M, c.closed))
            .collect()
    }

    /// Polls `feed` the way the poller does, with Yahoo's clock at `market` and ours at `now`.
    fn poll(feed: &mut SymbolFeed, bars: Vec<Bar>, market: i64, now: i64) -> Absorbed {
        let w = feed.window(now);
        let visible = bars
            .into_iter()
            .filter(|b| b.open_time >= w.from && b.open_time < w.to)
            .collect();
        feed.absorb(&chart(visible), market, w)
    }

    #[test]
    fn closed_minutes_once_in_order_and_the_live_minute_when_it_changes() {
        let mut f = SymbolFeed::new("BTC-USD".into(), None, T0);
        let now = T0 + 3 * M + 30_000;
        let all = |live_close| vec![bar(0, 11.0), bar(1, 11.0), bar(3, live_close)];
        // Yahoo at 3:30: minutes 0,1 closed, 2 is a gap, 3 in progress.
        let a = poll(&mut f, all(10.5), now, now);
        assert_eq!(minutes(&a.candles), vec![(0, true), (1, true), (3, false)]);
        // Same answer again: nothing new.
        let b = poll(&mut f, all(10.5), now + 5_000, now + 5_000);
        assert!(b.candles.is_empty());
        assert_eq!(
            f.window(now + 5_000).from,
            T0 + 3 * M,
            "asks from the live minute on"
        );
        // The live minute moved.
        let c = poll(&mut f, all(10.7), now + 10_000, now + 10_000);
        assert_eq!(minutes(&c.candles), vec![(3, false)]);
        assert_eq!(c.candles[0].close, 10.7);
        // Minute 3 closes (final values equal the last partial ones: still published closed).
        let d = poll(
            &mut f,
            vec![bar(3, 10.7), bar(4, 10.0)],
            T0 + 4 * M + 1_000,
            now + 40_000,
        );
        assert_eq!(minutes(&d.candles), vec![(3, true), (4, false)]);
        assert_eq!(f.settled_until(), T0 + 4 * M);
    }

    #[test]
    fn yahoos_clock_decides_not_ours() {
        // Our clock is far ahead; Yahoo says it is 1:10, so minute 1 is still in progress.
        let mut f = SymbolFeed::new("X-USD".into(), None, T0);
        let a = poll(
            &mut f,
            vec![bar(0, 11.0), bar(1, 11.0)],
            T0 + M + 10_000,
            T0 + 60 * M,
        );
        assert_eq!(minutes(&a.candles), vec![(0, true), (1, false)]);
    }

    #[test]
    fn resume_skips_what_the_topic_already_has() {
        let mut f = SymbolFeed::new("X-USD".into(), Some(T0 + M), T0 - 100 * M);
        assert_eq!(f.window(T0 + 10 * M).from, T0 + 2 * M);
        let a = poll(
            &mut f,
            (0..5).map(|m| bar(m, 11.0)).collect(),
            T0 + 5 * M,
            T0 + 5 * M,
        );
        assert_eq!(minutes(&a.candles), vec![(2, true), (3, true), (4, true)]);
    }

    #[test]
    fn invalid_bars_are_reported_once_and_skipped() {
        let mut f = SymbolFeed::new("X-USD".into(), None, T0);
        let mut glitch = bar(1, 11.0);
        glitch.high = 8.0; // below low
        let bars = vec![bar(0, 11.0), glitch.clone(), bar(2, 11.0)];
        let a = poll(&mut f, bars.clone(), T0 + 3 * M, T0 + 3 * M);
        assert_eq!(minutes(&a.candles), vec![(0, true), (2, true)]);
        assert_eq!(a.invalid.len(), 1);
        assert!(a.invalid[0].1.to_string().contains("below low"));
        let b = poll(&mut f, bars, T0 + 3 * M + 5_000, T0 + 3 * M + 5_000);
        assert!(
            b.candles.is_empty() && b.invalid.is_empty(),
            "settled, never re-counted"
        );
    }

    #[test]
    fn null_volume_is_published_as_zero_and_counted() {
        let mut f = SymbolFeed::new("X-USD".into(), None, T0);
        let mut b = bar(0, 11.0);
        b.volume = None;
        let a = poll(&mut f, vec![b], T0 + M, T0 + M);
        assert_eq!(a.candles[0].volume, 0.0);
        assert_eq!(a.null_volumes, 1);
        assert_eq!(a.candles[0].quote_volume, None);
        assert_eq!(a.candles[0].trades, None);
    }

    #[test]
    fn long_catch_ups_are_split_into_windows_yahoo_accepts() {
        let now = T0 + 10 * 24 * 60 * M;
        let mut f = SymbolFeed::new("X-USD".into(), None, now - 9 * 24 * 60 * M);
        let w = f.window(now);
        assert!(w.catching_up);
        assert_eq!(w.to - w.from, MAX_WINDOW_MS);
        // Yahoo is at the present: only minutes inside the window settle.
        f.absorb(&chart(vec![]), now, w);
        assert_eq!(f.settled_until(), w.to);
        let w2 = f.window(now);
        assert_eq!(w2.from, w.to);
        assert!(!w2.catching_up);
    }

    #[test]
    fn nothing_older_than_yahoos_retention_is_asked_for() {
        let now = T0 + 90 * 24 * 60 * M;
        let f = SymbolFeed::new("X-USD".into(), Some(T0), T0);
        assert_eq!(f.window(now).from, floor_minute(now - RETENTION_MS));
    }
}
