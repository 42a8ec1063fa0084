//! Making late drops visible without flooding the log.
//!
//! A candle older than its symbol's late-data horizon is dropped (README "Late data"): its
//! points would rewrite history the consumer no longer holds. That is correct, but silent
//! drops hide real problems: a replay with `--no-rebase` into a running stack, a producer
//! that restarted its timeline, a clock far off. The counter
//! `candlepipe_consumer_late_dropped_total` (and the `CandlepipeLateCandlesDropped` alert)
//! shows how many; this log says which. One drop is one WARN with the symbol, the candle's
//! time, the symbol's event time and newest time, and the horizon; more drops within [`LateLog::every`] are
//! counted and summed up in the next WARN, so a replay dropping 100k candles writes a line
//! per interval, not 100k lines.

use candlepipe_model::time::fmt_ms;
use candlepipe_model::Source;
use std::time::{Duration, Instant};

/// What the consumer knows about one dropped candle.
#[derive(Debug, Clone, Copy)]
pub struct LateDrop<'a> {
    pub symbol: &'a str,
    pub source: Source,
    /// The dropped candle's open time, Unix ms.
    pub open_time: i64,
    /// The symbol's event time, which the horizon is measured from, Unix ms.
    pub event_time: Option<i64>,
    /// The symbol's newest open time, Unix ms.
    pub newest: Option<i64>,
    pub horizon: Duration,
}

/// A rate-limited WARN for late drops.
#[derive(Debug)]
pub struct LateLog {
    every: Duration,
    last: Option<Instant>,
    /// Drops since the last WARN that were not logged on their own.
    suppressed: u64,
}

impl LateLog {
    /// At most one WARN per `every`.
    pub fn new(every: Duration) -> Self {
        LateLog {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one drop at `now`; returns the line it logged, if it logged one.
    pub fn dropped(&mut self, drop: LateDrop<'_>, now: Instant) -> Option<String> {
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            self.suppressed += 1;
            return None;
        }
        let line = format!(
            "dropped a late {} candle of {} at {}: more than {:?} behind the symbol's event time {} (newest candle {}){}",
            drop.source.as_str(),
            drop.symbol,
            fmt_ms(drop.open_time),
            drop.horizon,
            drop.event_time.map_or_else(|| "none".to_owned(), fmt_ms),
            drop.newest.map_or_else(|| "none".to_owned(), fmt_ms),
            match self.suppressed {
                0 => String::new(),
                n => format!("; {n} more dropped since the last report"),
            }
        );
        tracing::warn!(
            symbol = drop.symbol,
            source = drop.source.as_str(),
            "{line} (LATE_HORIZON sets the horizon; candlepipe_consumer_late_dropped_total counts every drop)"
        );
        self.last = Some(now);
        self.suppressed = 0;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_614_556_800_000; // 2021-03-01T00:00:00Z

    fn drop_at(minute: i64) -> LateDrop<'static> {
        LateDrop {
            symbol: "BTC-USDT",
            source: Source::Replay,
            open_time: T + minute * 60_000,
            event_time: Some(T + 179 * 60_000),
            newest: Some(T + 180 * 60_000),
            horizon: Duration::from_secs(3600),
        }
    }

    #[test]
    fn one_line_names_the_candle_and_later_drops_are_summed_up() {
        let mut log = LateLog::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let first = log
            .dropped(drop_at(0), t0)
            .expect("the first drop is logged");
        assert!(first.contains("BTC-USDT"), "{first}");
        assert!(first.contains("replay"), "{first}");
        assert!(first.contains(&fmt_ms(T)), "{first}");
        assert!(first.contains(&fmt_ms(T + 179 * 60_000)), "{first}");
        assert!(first.contains(&fmt_ms(T + 180 * 60_000)), "{first}");
        assert!(first.contains("3600s"), "{first}");
        assert!(!first.contains("more dropped"), "{first}");
        for m in 1..=99 {
            assert!(log
                .dropped(drop_at(m), t0 + Duration::from_secs(1))
                .is_none());
        }
        let next = log
            .dropped(drop_at(100), t0 + Duration::from_secs(10))
            .expect("a drop after the interval is logged");
        assert!(next.contains("99 more dropped"), "{next}");
        assert!(next.contains(&fmt_ms(T + 100 * 60_000)), "{next}");
    }
}
