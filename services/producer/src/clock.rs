//! The clock the replay paces itself by.
//!
//! Pacing ("one market minute per second", "stamp with the current minute, never the
//! future") is all about time, and tests of it must not sleep for real. So the replay never
//! reads the system clock or sleeps directly: it asks a [`Clock`]. Production passes a
//! [`SystemClock`]; tests pass a [`VirtualClock`], whose sleeps jump virtual time forward
//! instantly, so a test can replay a day at speed 1 in microseconds and still check, for
//! every candle, exactly when it would have been sent.

use candlepipe_runtime::shutdown::Shutdown;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Wall-clock time and waiting, as seen by a paced source.
pub trait Clock: Send + Sync {
    /// Now, Unix milliseconds.
    fn now_ms(&self) -> i64;
    /// Blocks until `now_ms() >= t` or `stop` fires, whichever comes first. Returns at once
    /// when `t` is not in the future.
    fn sleep_until_ms(&self, t: i64, stop: &Shutdown);
}

/// The real clock. Sleeps in short slices so a shutdown is noticed within
/// [`SystemClock::STOP_CHECK`].
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl SystemClock {
    /// Longest single sleep between two looks at the shutdown signal.
    pub const STOP_CHECK: Duration = Duration::from_millis(50);
}

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        candlepipe_model::time::now_ms()
    }

    fn sleep_until_ms(&self, t: i64, stop: &Shutdown) {
        loop {
            if stop.is_shutdown() {
                return;
            }
            let left = t - self.now_ms();
            if left <= 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(left as u64).min(Self::STOP_CHECK));
        }
    }
}

/// A clock for tests: time only moves when someone sleeps or calls [`VirtualClock::advance`].
#[derive(Debug)]
pub struct VirtualClock {
    now: AtomicI64,
    sleeps: AtomicU64,
}

impl VirtualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: i64) -> Self {
        VirtualClock {
            now: AtomicI64::new(start_ms),
            sleeps: AtomicU64::new(0),
        }
    }

    /// Moves time forward by `ms` (as if the process had been busy that long).
    pub fn advance(&self, ms: i64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// How many sleeps actually had to wait (target in the future).
    pub fn sleeps(&self) -> u64 {
        self.sleeps.load(Ordering::SeqCst)
    }
}

impl Clock for VirtualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    /// Jumps to `t` at once if it is in the future; a fired `stop` leaves time alone.
    fn sleep_until_ms(&self, t: i64, stop: &Shutdown) {
        if stop.is_shutdown() {
            return;
        }
        if self.now.fetch_max(t, Ordering::SeqCst) < t {
            self.sleeps.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candlepipe_runtime::shutdown;

    #[test]
    fn virtual_sleep_jumps_forward_never_back() {
        let (trigger, stop) = shutdown::channel();
        let clock = VirtualClock::new(1_000);
        clock.sleep_until_ms(5_000, &stop);
        assert_eq!(clock.now_ms(), 5_000);
        clock.sleep_until_ms(2_000, &stop);
        assert_eq!(clock.now_ms(), 5_000);
        assert_eq!(clock.sleeps(), 1);
        clock.advance(10);
        assert_eq!(clock.now_ms(), 5_010);
        trigger.fire();
        clock.sleep_until_ms(9_000, &stop);
        assert_eq!(clock.now_ms(), 5_010, "a stopped sleep does not move time");
    }

    #[test]
    fn system_sleep_returns_when_stopped() {
        let (trigger, stop) = shutdown::channel();
        trigger.fire();
        let clock = SystemClock;
        let far = clock.now_ms() + 3_600_000;
        clock.sleep_until_ms(far, &stop); // would hang for an hour if the stop were ignored
        assert!(clock.now_ms() < far);
    }
}
