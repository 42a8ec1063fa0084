//! Live mode's readiness: is Yahoo answering?
//!
//! A producer in live mode whose every poll fails publishes nothing, yet its Kafka check
//! keeps `/readyz` at 200, so an orchestrator would never notice. This adds a `yahoo` check:
//! it fails, with the reason, once the last [`FAILURES_UNTIL_UNREADY`] polls of *every*
//! symbol failed (one symbol Yahoo does not know, or rate-limits, is a warning in the log,
//! not an outage), and passes again at the next good answer. Outside live mode it passes
//! with "live mode is not running".

use candlepipe_runtime::http::Readiness;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Consecutive failed polls of every symbol after which the producer is not ready.
pub const FAILURES_UNTIL_UNREADY: u32 = 3;

/// The readiness check's name in `/readyz`.
const CHECK: &str = "yahoo";

/// Each symbol's consecutive failures and the last error, shared by the symbols' loops.
#[derive(Clone, Default)]
pub(crate) struct LiveHealth {
    readiness: Readiness,
    symbols: Arc<Mutex<HashMap<String, (u32, String)>>>,
}

impl LiveHealth {
    /// Reports into `readiness` (the one `/readyz` serves).
    pub fn new(readiness: Readiness) -> Self {
        let health = LiveHealth {
            readiness,
            symbols: Arc::default(),
        };
        health.stopped();
        health
    }

    /// A live run starts polling `symbols`: none has failed yet.
    pub fn started<'a>(&self, symbols: impl IntoIterator<Item = &'a str>) {
        let mut map = self.symbols.lock().expect("live health lock");
        map.clear();
        map.extend(
            symbols
                .into_iter()
                .map(|s| (s.to_owned(), (0, String::new()))),
        );
        self.publish(&map);
    }

    /// The live run ended (a switch to replay, or shutdown).
    pub fn stopped(&self) {
        self.symbols.lock().expect("live health lock").clear();
        self.readiness.set(CHECK, true, "live mode is not running");
    }

    /// `symbol`'s poll succeeded.
    pub fn succeeded(&self, symbol: &str) {
        self.record(symbol, 0, String::new());
    }

    /// `symbol`'s poll failed for the `failures`-th time in a row, because of `why`.
    pub fn failed(&self, symbol: &str, failures: u32, why: String) {
        self.record(symbol, failures, why);
    }

    fn record(&self, symbol: &str, failures: u32, why: String) {
        let mut map = self.symbols.lock().expect("live health lock");
        map.insert(symbol.to_owned(), (failures, why));
        self.publish(&map);
    }

    fn publish(&self, map: &HashMap<String, (u32, String)>) {
        let answering = map
            .values()
            .filter(|(f, _)| *f < FAILURES_UNTIL_UNREADY)
            .count();
        if !map.is_empty() && answering == 0 {
            let (symbol, (_, why)) = map
                .iter()
                .min_by_key(|(s, _)| s.as_str())
                .expect("not empty");
            self.readiness.set(
                CHECK,
                false,
                format!(
                    "the last {FAILURES_UNTIL_UNREADY} polls of every live symbol failed \
                     ({} symbols), e.g. {symbol}: {why}",
                    map.len()
                ),
            );
        } else {
            self.readiness.set(
                CHECK,
                true,
                format!("{answering} of {} live symbols answering", map.len()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unready_only_when_every_symbol_failed_enough_and_ready_at_the_next_answer() {
        let readiness = Readiness::default();
        let h = LiveHealth::new(readiness.clone());
        assert!(readiness.is_ready(), "outside live mode");
        h.started(["A", "B"]);
        assert!(readiness.is_ready());
        for n in 1..=FAILURES_UNTIL_UNREADY {
            h.failed("A", n, format!("connect: dns error {n}"));
        }
        assert!(readiness.is_ready(), "B still answers");
        for n in 1..FAILURES_UNTIL_UNREADY {
            h.failed("B", n, "http 500".into());
            assert!(readiness.is_ready(), "B failed only {n} times");
        }
        h.failed("B", FAILURES_UNTIL_UNREADY, "http 500".into());
        assert!(!readiness.is_ready());
        h.succeeded("B");
        assert!(readiness.is_ready());
        for n in 1..=FAILURES_UNTIL_UNREADY {
            h.failed("B", n, "http 500".into());
        }
        assert!(!readiness.is_ready());
        h.stopped();
        assert!(readiness.is_ready(), "a switch to replay");
    }
}
