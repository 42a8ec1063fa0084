//! How long one symbol waits after a failed fetch.
//!
//! Yahoo rate-limits (429) and has bad minutes (5xx, timeouts). Asking again at the normal
//! pace makes a rate limit worse, and every symbol asking again at the same instant makes
//! it worse still. So each symbol has its own backoff: the wait doubles with each
//! consecutive failure, from the poll interval up to a cap, and is jittered ("equal
//! jitter": a random point in the upper half of the wait) so the symbols drift apart. A
//! `Retry-After` from Yahoo is honoured when it asks for longer. The first success resets it.

use rand::Rng;
use std::time::Duration;

/// Never wait longer than this between two attempts, whatever a `Retry-After` says.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// One symbol's backoff state.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    /// Starts at the poll interval and doubles up to 32 poll intervals (at most 5 minutes,
    /// at least one poll interval).
    pub fn for_poll_interval(poll: Duration) -> Self {
        let cap = (poll * 32).min(Duration::from_secs(300)).max(poll);
        Backoff {
            base: poll,
            cap,
            failures: 0,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Books a failure and returns how long to wait before the next attempt.
    pub fn failed(&mut self, retry_after: Option<Duration>) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let doubling = 2u32.saturating_pow(self.failures - 1);
        let full = self.base.saturating_mul(doubling).min(self.cap);
        let half = full / 2;
        let jittered = half + half.mul_f64(rand::rng().random::<f64>());
        jittered.max(retry_after.unwrap_or_default()).min(MAX_WAIT)
    }

    /// Books a success: the next failure starts from the bottom again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_resets() {
        let poll = Duration::from_millis(200);
        let mut b = Backoff::for_poll_interval(poll);
        for k in 0..12u32 {
            let full = (poll * 2u32.pow(k)).min(poll * 32);
            let w = b.failed(None);
            assert!(
                w >= full / 2 && w <= full,
                "failure {}: {w:?} not in [{:?}, {full:?}]",
                k + 1,
                full / 2
            );
        }
        assert_eq!(b.failures(), 12);
        b.succeeded();
        assert!(b.failed(None) <= poll);
    }

    #[test]
    fn jitter_spreads_waits() {
        let mut waits = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let mut b = Backoff::for_poll_interval(Duration::from_secs(15));
            waits.insert(b.failed(None));
        }
        assert!(waits.len() > 10, "waits should differ, got {waits:?}");
    }

    #[test]
    fn retry_after_is_honoured_within_reason() {
        let mut b = Backoff::for_poll_interval(Duration::from_secs(1));
        assert_eq!(
            b.failed(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(b.failed(Some(Duration::from_secs(86_400))), MAX_WAIT);
    }

    #[test]
    fn the_cap_stays_sane_for_long_intervals() {
        let mut b = Backoff::for_poll_interval(Duration::from_secs(15));
        for _ in 0..30 {
            assert!(b.failed(None) <= Duration::from_secs(300));
        }
        let mut slow = Backoff::for_poll_interval(Duration::from_secs(600));
        assert!(slow.failed(None) <= Duration::from_secs(600));
    }
}
