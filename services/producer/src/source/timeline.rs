//! One replay timeline across producer restarts: where a replay that starts again
//! continues, and with which time shift.
//!
//! Within one process the pacer (`pacing.rs`) keeps the replay on one timeline. A new
//! process knows nothing of it, and starting the dataset over "so the backfill ends now"
//! would send candles the topic already holds under other times: the consumer drops them
//! as late, or overwrites the last hour with other candles. So, before its first candle, a
//! replay reads the topic's tail (`tail.rs`): each replay symbol's newest `source=replay`
//! candle, with the shift it was sent with (header `candlepipe-replay-shift-ms`, set by the
//! sink). Then, for its first pass, it follows a [`Resume`] plan (see the README's replay
//! section for the user's view):
//!
//! * **Continue** (the default): keep the newest shift found on the topic; each symbol
//!   whose tail carries a shift continues at the next dataset candle after the one its tail
//!   came from (`open_time - shift`); a symbol whose tail has no shift (written by an older
//!   producer) continues with the first candle stamped after its tail; a symbol never seen
//!   starts at most `--backfill` in the past, as on a fresh start. The pacer then sends what
//!   lies behind the present at `--speed` (the catch-up) and ticks in real time after. If
//!   the continued timeline is more than `--backfill` behind, the pacer moves it forward to
//!   exactly that (the in-process rule), so a long stop leaves a gap, never a day-long
//!   catch-up.
//! * **Start over** (`--replay-on-switch restart` before this process replayed anything, or
//!   a topic whose replay candles carry no shift at all): the dataset from its first candle,
//!   stamped from the minute after the newest replay candle on the topic (or `--backfill`
//!   before now, whichever is later).
//! * Without `--rebase` the stamps are the dataset's own times: a symbol continues after
//!   the newest candle on the topic.
//!
//! Every rule keeps each symbol's stamps increasing past its tail, so nothing the consumer
//! already has is sent again under another time.

use crate::clock::{Clock, SystemClock};
use crate::handoff::REPLAY_SHIFT_HEADER;
use crate::source::tail::{self, Found};
use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::fmt_ms;
use candlepipe_model::Source;
use candlepipe_runtime::kafka::KafkaArgs;
use candlepipe_runtime::shutdown::Shutdown;
use rdkafka::message::{Headers, Message};
use std::collections::HashMap;

/// The newest replay candle of one symbol on the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReplayTail {
    /// Its open time as published (Unix ms).
    pub stamp: i64,
    /// The shift it carried ([`REPLAY_SHIFT_HEADER`]); `None` when it had none.
    pub shift: Option<i64>,
}

/// How a replay that reads the topic's tail goes on from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation {
    /// Continue each symbol after its tail, keeping the topic's shift.
    Continue,
    /// Start the dataset over, stamped after the newest tail.
    StartOver,
}

/// Where one symbol's first pass starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Skip {
    /// Skip dataset candles opening at or before this original open time.
    UpToOriginal(i64),
    /// Skip dataset candles whose stamp would be at or before this one.
    UpToStamp(i64),
}

/// The plan for the first pass after a start: the shift to keep, the earliest stamp, and
/// which dataset candles the topic already holds (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resume {
    /// The shift to keep (rebase); `None` = as on a fresh start.
    pub shift: Option<i64>,
    /// The first stamp of the pass must not be earlier (rebase, start over).
    pub floor: Option<i64>,
    /// Per symbol seen on the topic, what is skipped.
    skip: HashMap<String, Skip>,
    /// Symbols not on the topic skip candles stamped before this (rebase, continue).
    unseen_from: Option<i64>,
    /// The newest stamp on the topic over every replay symbol.
    pub newest: Option<i64>,
}

impl Resume {
    /// The plan for `tails` (each replay symbol's tail, absent when never published) at wall
    /// time `now_ms`, with `--rebase` and `--backfill` (whole minutes, ms).
    pub fn plan(
        tails: &HashMap<String, ReplayTail>,
        how: Continuation,
        rebase: bool,
        backfill_ms: i64,
        now_ms: i64,
    ) -> Resume {
        let newest = tails.values().map(|t| t.stamp).max();
        let Some(newest_stamp) = newest else {
            return Resume::default();
        };
        let shift = tails.values().filter_map(|t| t.shift).max();
        let mut plan = Resume {
            newest,
            ..Resume::default()
        };
        match (rebase, how, shift) {
            (true, Continuation::Continue, Some(shift)) => {
                plan.shift = Some(shift);
                plan.unseen_from = Some(now_ms.div_euclid(MINUTE_MS) * MINUTE_MS - backfill_ms);
                plan.skip = tails
                    .iter()
                    .map(|(s, t)| {
                        let skip = match t.shift {
                            Some(own) => Skip::UpToOriginal(t.stamp - own),
                            None => Skip::UpToStamp(t.stamp),
                        };
                        (s.clone(), skip)
                    })
                    .collect();
            }
            (true, _, _) => plan.floor = Some(newest_stamp + MINUTE_MS),
            (false, Continuation::Continue, _) => {
                plan.skip = tails
                    .iter()
                    .map(|(s, t)| (s.clone(), Skip::UpToStamp(t.stamp)))
                    .collect();
            }
            (false, Continuation::StartOver, _) => {}
        }
        plan
    }

    /// Whether the topic already holds `symbol`'s candle at original open time `original`
    /// (or it is older than a new symbol's backfill), so the first pass skips it.
    pub fn skips(&self, symbol: &str, original: i64) -> bool {
        let shift = self.shift.unwrap_or(0);
        match self.skip.get(symbol) {
            Some(Skip::UpToOriginal(o)) => original <= *o,
            Some(Skip::UpToStamp(t)) => original.saturating_add(shift) <= *t,
            None => self
                .unseen_from
                .is_some_and(|from| original.saturating_add(shift) < from),
        }
    }

    /// One line for the log: what the plan continues from.
    pub fn describe(&self) -> String {
        match (self.newest, self.shift, self.floor) {
            (None, _, _) => "no replay candle on the topic: starting fresh".into(),
            (Some(n), Some(s), _) => format!(
                "continuing the topic's timeline (newest replay candle {}, shift {s} ms = {:.2} days)",
                fmt_ms(n),
                s as f64 / 86_400_000.0
            ),
            (Some(n), None, Some(f)) => format!(
                "starting the dataset over after the topic's newest replay candle {} (from {} on)",
                fmt_ms(n),
                fmt_ms(f)
            ),
            (Some(n), None, None) => format!(
                "continuing after each symbol's newest candle on the topic (newest {})",
                fmt_ms(n)
            ),
        }
    }
}

/// Reads each of `symbols`' newest replay candle from `kafka.topic`, retrying with backoff
/// until it works; `None` once `stop` fires first. Publishing before knowing would break the
/// timeline. Blocking.
pub fn read_tails(
    kafka: &KafkaArgs,
    symbols: &[String],
    stop: &Shutdown,
) -> Option<Found<ReplayTail>> {
    let mut attempt = 0u32;
    loop {
        if stop.is_shutdown() {
            return None;
        }
        match tail::newest_per_symbol(kafka, symbols, i64::MIN, |c, m| {
            (c.source == Source::Replay).then(|| ReplayTail {
                stamp: c.open_time,
                shift: shift_header(m),
            })
        }) {
            Ok(found) => {
                tracing::info!(scanned = found.scanned, found = found.newest.len(),
                    topic = %kafka.topic, "replay: tails read from the topic");
                return Some(found);
            }
            Err(e) => {
                attempt += 1;
                let wait_ms = 1_000 * 2i64.pow(attempt.min(5));
                tracing::warn!(
                    "replay: reading the topic's tail failed ({e:#}); retrying in {} s",
                    wait_ms / 1_000
                );
                SystemClock.sleep_until_ms(SystemClock.now_ms() + wait_ms, stop);
            }
        }
    }
}

/// The shift header of a message, when present and a whole number.
fn shift_header(m: &rdkafka::message::BorrowedMessage<'_>) -> Option<i64> {
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == REPLAY_SHIFT_HEADER)
        .and_then(|h| std::str::from_utf8(h.value?).ok()?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: i64 = MINUTE_MS;
    const T0: i64 = 1_614_556_800_000; // the dataset's first minute
    const NOW: i64 = 1_732_250_000_123;
    const DAY: i64 = 1_440 * M;

    fn tails(list: &[(&str, i64, Option<i64>)]) -> HashMap<String, ReplayTail> {
        list.iter()
            .map(|(s, stamp, shift)| {
                (
                    s.to_string(),
                    ReplayTail {
                        stamp: *stamp,
                        shift: *shift,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn an_empty_topic_starts_fresh() {
        let plan = Resume::plan(&tails(&[]), Continuation::Continue, true, DAY, NOW);
        assert_eq!(plan, Resume::default());
        assert!(!plan.skips("BTC-USDT", T0));
    }

    #[test]
    fn continue_keeps_the_shift_and_resumes_after_each_symbols_tail() {
        let shift = NOW - NOW % M - DAY - T0;
        let t = tails(&[
            ("BTC-USDT", T0 + 100 * M + shift, Some(shift)),
            ("ETH-USDT", T0 + 99 * M + shift, Some(shift)),
            ("OLD-USDT", T0 + 50 * M + shift, None),
        ]);
        let plan = Resume::plan(&t, Continuation::Continue, true, DAY, NOW + 10 * M);
        assert_eq!(plan.shift, Some(shift));
        assert_eq!(plan.floor, None);
        assert!(plan.skips("BTC-USDT", T0 + 100 * M));
        assert!(!plan.skips("BTC-USDT", T0 + 101 * M));
        assert!(plan.skips("ETH-USDT", T0 + 99 * M));
        assert!(!plan.skips("ETH-USDT", T0 + 100 * M));
        assert!(plan.skips("OLD-USDT", T0 + 50 * M));
        assert!(!plan.skips("OLD-USDT", T0 + 51 * M));
        // A new symbol gets one backfill before the present (10 minutes later), not more.
        assert!(plan.skips("NEW-USDT", T0 + 9 * M));
        assert!(!plan.skips("NEW-USDT", T0 + 10 * M));
    }

    #[test]
    fn a_symbol_on_an_older_shift_continues_its_dataset_position_under_the_newest() {
        let t = tails(&[
            ("BTC-USDT", T0 + 10 * M + 5 * DAY, Some(5 * DAY)),
            ("ETH-USDT", T0 + 10 * M + 2 * DAY, Some(2 * DAY)),
        ]);
        let plan = Resume::plan(&t, Continuation::Continue, true, DAY, NOW);
        assert_eq!(plan.shift, Some(5 * DAY));
        // ETH continues with its next dataset candle, now stamped later than its tail.
        assert!(plan.skips("ETH-USDT", T0 + 10 * M));
        assert!(!plan.skips("ETH-USDT", T0 + 11 * M));
        assert!(T0 + 11 * M + 5 * DAY > t["ETH-USDT"].stamp);
    }

    #[test]
    fn start_over_and_shiftless_tails_begin_after_the_newest_tail() {
        let t = tails(&[
            ("BTC-USDT", NOW - 5 * M, Some(7)),
            ("ETH-USDT", NOW - 9 * M, None),
        ]);
        let plan = Resume::plan(&t, Continuation::StartOver, true, DAY, NOW);
        assert_eq!((plan.shift, plan.floor), (None, Some(NOW - 4 * M)));
        assert!(!plan.skips("BTC-USDT", T0));
        let t = tails(&[("BTC-USDT", NOW - 5 * M, None)]);
        let plan = Resume::plan(&t, Continuation::Continue, true, DAY, NOW);
        assert_eq!((plan.shift, plan.floor), (None, Some(NOW - 4 * M)));
    }

    #[test]
    fn without_rebase_a_symbol_continues_after_its_newest_time() {
        let t = tails(&[("BTC-USDT", T0 + 10 * M, Some(0))]);
        let plan = Resume::plan(&t, Continuation::Continue, false, DAY, NOW);
        assert!(plan.skips("BTC-USDT", T0 + 10 * M));
        assert!(!plan.skips("BTC-USDT", T0 + 11 * M));
        assert!(
            !plan.skips("ETH-USDT", T0),
            "a new symbol starts at the beginning"
        );
        let plan = Resume::plan(&t, Continuation::StartOver, false, DAY, NOW);
        assert!(!plan.skips("BTC-USDT", T0));
    }
}
