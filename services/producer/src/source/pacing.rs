//! When each replayed candle is sent, and which open time it carries.
//!
//! Two ideas, both pure arithmetic on millisecond timestamps (the [`Clock`] does the
//! waiting, so all of this is tested without sleeping):
//!
//! * **Speed** (`--speed`) is a multiplier of market time: at 60 one market minute passes
//!   per wall second; `max` means "as fast as the sink takes it". The schedule is anchored
//!   when a run starts: a candle `d` market-ms after the anchor candle is due `d / speed`
//!   wall-ms after the anchor instant.
//! * **Rebase** (`--rebase`) shifts every open time by one offset so the replay looks live:
//!   the first `--backfill` of the dataset lands in the past, ending at the present minute,
//!   and is sent at `--speed`; after that a candle is never sent before the wall clock
//!   reaches its (shifted) open time, so the replay ticks one candle per symbol per minute,
//!   stamped with the current minute, never in the future. A candle is therefore due at
//!   `max(speed schedule, shifted open time)`.
//!
//! Looping: each pass continues the previous one in *continuous market time*: pass `k`
//! adds `k × pass length` (first to last candle plus one minute) to every open time before
//! pacing and shifting. With rebase, stamps keep increasing across loops; without it the
//! original timestamps repeat but the speed schedule still runs on without a jump.
//!
//! [`Clock`]: crate::clock::Clock

use candlepipe_model::candle::MINUTE_MS;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Replay speed: `max`, or a positive multiplier of market time (1 = real time,
/// 60 = one market minute per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// No pacing at all.
    Max,
    /// Market milliseconds per wall millisecond. Always finite and > 0.
    Factor(f64),
}

impl FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        match s.parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
            _ => Err(format!(
                "invalid speed {s:?}: want \"max\" or a positive number (1 = real time, 60 = a market minute per second)"
            )),
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(x) => write!(f, "{x}"),
        }
    }
}

/// When to send one candle and with which open time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The open time the candle carries (shifted under rebase, original otherwise).
    pub stamp: i64,
    /// Wall time (Unix ms) before which it must not be sent; `None` = at once.
    pub due: Option<i64>,
}

/// The pacing and time-shifting state of one replay, kept across runs so that a stopped
/// and resumed replay continues its timeline (see the module docs).
#[derive(Debug, Clone)]
pub struct Pacer {
    speed: Speed,
    rebase: bool,
    /// `--backfill` in whole minutes, as ms.
    backfill_ms: i64,
    /// (wall ms, continuous market ms) the speed schedule counts from; set by [`Pacer::begin`].
    anchor: Option<(i64, i64)>,
    /// Added to original open times to get continuous market time (grows per loop).
    loop_shift: i64,
    /// Rebase offset from continuous market time to stamps; fixed on the first run.
    offset: Option<i64>,
    /// The next run's first stamp must not be earlier (rebase); used once, by
    /// [`Pacer::begin`].
    floor: Option<i64>,
}

impl Pacer {
    /// A pacer for `--speed`, `--rebase` and `--backfill` (rounded down to whole minutes).
    pub fn new(speed: Speed, rebase: bool, backfill: Duration) -> Self {
        let backfill_ms = i64::try_from(backfill.as_millis()).unwrap_or(i64::MAX / 4);
        Pacer {
            speed,
            rebase,
            backfill_ms: backfill_ms - backfill_ms % MINUTE_MS,
            anchor: None,
            loop_shift: 0,
            offset: None,
            floor: None,
        }
    }

    /// Whether stamps are shifted (`--rebase`).
    pub fn rebase(&self) -> bool {
        self.rebase
    }

    /// `--backfill` in whole minutes, as ms.
    pub fn backfill_ms(&self) -> i64 {
        self.backfill_ms
    }

    /// Continues a timeline found on the topic (`timeline.rs`): stamps keep `shift` (the
    /// whole shift of the next candle: loops included) unless the next [`Pacer::begin`]
    /// finds it more than `--backfill` behind.
    pub fn keep_shift(&mut self, shift: i64) {
        self.offset = Some(shift - self.loop_shift);
    }

    /// The next run's first stamp is `floor` or later (rebase): a timeline that continues
    /// after candles already on the topic.
    pub fn set_floor(&mut self, floor: i64) {
        self.floor = Some(floor);
    }

    /// Starts (or resumes) pacing at wall time `now_ms`, the next candle to send having
    /// original open time `next_open_time`.
    ///
    /// The speed schedule is re-anchored here, so time spent stopped is not "made up" in a
    /// burst. Under rebase the first call places `next_open_time` `--backfill` before the
    /// present minute; later calls keep the offset (no gap: a short stop is caught up at
    /// `--speed`) unless the next candle would land more than `--backfill` in the past, in
    /// which case it is moved forward to exactly that, as on a fresh start. A floor
    /// ([`Pacer::set_floor`]) moves it forward too, so the first stamp is at least the floor.
    /// Stamps only ever move forward, so time stays monotonic.
    pub fn begin(&mut self, now_ms: i64, next_open_time: i64) {
        let market = next_open_time + self.loop_shift;
        self.anchor = Some((now_ms, market));
        let floor = self.floor.take();
        if self.rebase {
            let present_minute = now_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
            let fresh = present_minute - self.backfill_ms - market;
            let offset = self.offset.map_or(fresh, |kept| kept.max(fresh));
            self.offset = Some(floor.map_or(offset, |f| offset.max(f - market)));
        }
    }

    /// The slot of the candle with original open time `open_time`. Call after [`Pacer::begin`].
    pub fn slot(&self, open_time: i64) -> Slot {
        let market = open_time + self.loop_shift;
        let paced = match (self.speed, self.anchor) {
            (Speed::Factor(f), Some((wall, anchor_market))) => {
                Some(wall.saturating_add(((market - anchor_market) as f64 / f).ceil() as i64))
            }
            _ => None,
        };
        match self.offset.filter(|_| self.rebase) {
            Some(offset) => {
                let stamp = market + offset;
                Slot {
                    stamp,
                    // Never before the wall clock reaches the stamp: no future candles.
                    due: Some(paced.map_or(stamp, |p| p.max(stamp))),
                }
            }
            None => Slot {
                stamp: open_time,
                due: paced,
            },
        }
    }

    /// Ends a pass whose first and last sent candles had original open times `first` and
    /// `last`: the next pass continues one minute after `last` in continuous market time.
    pub fn end_pass(&mut self, first: i64, last: i64) {
        self.loop_shift += last - first + MINUTE_MS;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_614_556_800_000; // 2021-03-01T00:00Z, the dataset's first minute
    const NOW: i64 = 1_732_250_000_123; // some wall time, not minute aligned
    const M: i64 = MINUTE_MS;

    #[test]
    fn speed_parses_max_and_positive_numbers_only() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("MAX".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("60".parse::<Speed>(), Ok(Speed::Factor(60.0)));
        assert_eq!("0.5".parse::<Speed>(), Ok(Speed::Factor(0.5)));
        for bad in ["0", "-1", "fast", "", "inf", "NaN"] {
            let err = bad.parse::<Speed>().unwrap_err();
            assert!(err.contains("invalid speed"), "{bad:?}: {err}");
        }
        assert_eq!(Speed::Factor(60.0).to_string(), "60");
        assert_eq!(Speed::Max.to_string(), "max");
    }

    #[test]
    fn speed_60_sends_a_market_minute_per_second_with_original_stamps() {
        let mut p = Pacer::new(Speed::Factor(60.0), false, Duration::ZERO);
        p.begin(NOW, T0);
        assert_eq!(
            p.slot(T0),
            Slot {
                stamp: T0,
                due: Some(NOW)
            }
        );
        assert_eq!(
            p.slot(T0 + M),
            Slot {
                stamp: T0 + M,
                due: Some(NOW + 1_000)
            }
        );
        assert_eq!(p.slot(T0 + 90 * M).due, Some(NOW + 90_000));
        // real time
        let mut p = Pacer::new(Speed::Factor(1.0), false, Duration::ZERO);
        p.begin(NOW, T0);
        assert_eq!(p.slot(T0 + 2 * M).due, Some(NOW + 120_000));
    }

    #[test]
    fn absurd_speeds_do_not_overflow() {
        let mut p = Pacer::new(Speed::Factor(1e-300), false, Duration::ZERO);
        p.begin(NOW, T0);
        assert_eq!(p.slot(T0 + M).due, Some(i64::MAX));
        let mut p = Pacer::new(Speed::Factor(1e300), false, Duration::ZERO);
        p.begin(NOW, T0);
        assert_eq!(p.slot(T0 + M).due, Some(NOW + 1));
    }

    #[test]
    fn max_without_rebase_never_waits() {
        let mut p = Pacer::new(Speed::Max, false, Duration::from_secs(86_400));
        p.begin(NOW, T0);
        assert_eq!(
            p.slot(T0 + 5 * M),
            Slot {
                stamp: T0 + 5 * M,
                due: None
            }
        );
    }

    #[test]
    fn rebase_puts_the_backfill_in_the_past_then_ticks_in_real_time() {
        let day = 24 * 60 * M;
        let mut p = Pacer::new(Speed::Max, true, Duration::from_secs(86_400));
        p.begin(NOW, T0);
        let present = NOW - NOW % M;
        // The first candle lands one backfill before the present minute, at once.
        assert_eq!(
            p.slot(T0),
            Slot {
                stamp: present - day,
                due: Some(present - day)
            }
        );
        // The candle one backfill in is stamped with the present minute: due now.
        assert_eq!(p.slot(T0 + day).stamp, present);
        // Later ones wait for their minute (never stamped in the future).
        let later = p.slot(T0 + day + 3 * M);
        assert_eq!(later.stamp, present + 3 * M);
        assert_eq!(later.due, Some(present + 3 * M));
    }

    #[test]
    fn rebase_at_speed_paces_the_backfill_until_it_meets_the_present() {
        let mut p = Pacer::new(Speed::Factor(60.0), true, Duration::from_secs(3600));
        p.begin(NOW, T0);
        let present = NOW - NOW % M;
        // 30 market minutes in: 30 s after the start, stamped 30 minutes ago.
        let s = p.slot(T0 + 30 * M);
        assert_eq!(s.stamp, present - 30 * M);
        assert_eq!(s.due, Some(NOW + 30_000));
        // Far after the backfill the stamp (real time) dominates the speed schedule.
        let s = p.slot(T0 + 600 * M);
        assert_eq!(s.stamp, present + 540 * M);
        assert_eq!(s.due, Some(s.stamp));
    }

    #[test]
    fn loops_continue_market_time_so_stamps_stay_monotonic() {
        let mut p = Pacer::new(Speed::Max, true, Duration::ZERO);
        p.begin(NOW, T0);
        let last_of_pass = p.slot(T0 + 99 * M).stamp;
        p.end_pass(T0, T0 + 99 * M);
        assert_eq!(p.slot(T0).stamp, last_of_pass + M);
        // Without rebase the stamps repeat but the schedule keeps running forward.
        let mut p = Pacer::new(Speed::Factor(60.0), false, Duration::ZERO);
        p.begin(NOW, T0);
        p.end_pass(T0, T0 + 99 * M);
        assert_eq!(
            p.slot(T0),
            Slot {
                stamp: T0,
                due: Some(NOW + 100_000)
            }
        );
    }

    #[test]
    fn resume_keeps_the_timeline_unless_it_fell_behind_the_backfill() {
        let hour = 60 * M;
        let mut p = Pacer::new(Speed::Max, true, Duration::from_secs(3600));
        p.begin(NOW, T0);
        let s = p.slot(T0 + 10 * M).stamp;
        // Resumed 5 minutes later at the next candle: same offset, no gap.
        p.begin(NOW + 5 * M, T0 + 11 * M);
        assert_eq!(p.slot(T0 + 11 * M).stamp, s + M);
        // Resumed two hours later: would be 2h+ in the past, so moved up to one backfill.
        p.begin(NOW + 2 * hour, T0 + 12 * M);
        let present = (NOW + 2 * hour) - (NOW + 2 * hour) % M;
        assert_eq!(p.slot(T0 + 12 * M).stamp, present - hour);
        assert!(p.slot(T0 + 12 * M).stamp > s + M);
    }

    #[test]
    fn a_kept_shift_holds_and_a_floor_moves_the_timeline_forward_only() {
        let hour = 60 * M;
        let present = NOW - NOW % M;
        // A shift found on the topic is kept while within the backfill.
        let mut p = Pacer::new(Speed::Max, true, Duration::from_secs(3600));
        p.keep_shift(present - 30 * M - T0);
        p.begin(NOW, T0 + 5 * M);
        assert_eq!(p.slot(T0 + 5 * M).stamp, present - 25 * M);
        // ...and moved up to one backfill when older.
        let mut p = Pacer::new(Speed::Max, true, Duration::from_secs(3600));
        p.keep_shift(present - 3 * hour - T0);
        p.begin(NOW, T0);
        assert_eq!(p.slot(T0).stamp, present - hour);
        // A floor after the present's backfill wins over a fresh start, once.
        let mut p = Pacer::new(Speed::Max, true, Duration::from_secs(3600));
        p.set_floor(present - 10 * M);
        p.begin(NOW, T0);
        assert_eq!(p.slot(T0).stamp, present - 10 * M);
        p.begin(NOW + M, T0 + M);
        assert_eq!(
            p.slot(T0 + M).stamp,
            present - 9 * M,
            "the floor is used once"
        );
        // A floor behind the timeline changes nothing.
        p.set_floor(present - 20 * M);
        p.begin(NOW + M, T0 + 2 * M);
        assert_eq!(p.slot(T0 + 2 * M).stamp, present - 8 * M);
    }
}
