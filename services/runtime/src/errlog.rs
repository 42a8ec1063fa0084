//! Error logs that cannot flood: when the same failure repeats (a broker that is down
//! fails every delivery, one per candle), the first of each kind is logged at once and the
//! rest are counted and logged as one summary line per kind per interval.
//!
//! Without this, a producer whose every delivery failed wrote one ERROR per candle:
//! 2.46 million lines (693 MB) in 13 minutes. With it, the same outage writes a line per
//! kind every [`ErrorTally::every`], each with the count and the latest example.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::Duration;

/// Counts errors by kind between summaries. The owner calls [`ErrorTally::note`] for each
/// error and [`ErrorTally::summarize`] every [`ErrorTally::every`].
#[derive(Debug)]
pub struct ErrorTally {
    what: &'static str,
    every: Duration,
    /// Kinds seen since the summary before last: errors since the last summary, and the
    /// latest one's text.
    kinds: BTreeMap<String, (u64, String)>,
}

impl ErrorTally {
    /// A tally of `what` (e.g. "delivery failed"), summarised every `every`.
    pub fn new(what: &'static str, every: Duration) -> Self {
        ErrorTally {
            what,
            every,
            kinds: BTreeMap::new(),
        }
    }

    /// How often [`ErrorTally::summarize`] is meant to run.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// Records one error of `kind`. The first of a kind (or the first after an interval
    /// without one) is logged at once; later ones wait for the summary.
    pub fn note(&mut self, kind: &str, detail: impl Display) {
        match self.kinds.get_mut(kind) {
            Some((count, latest)) => {
                *count += 1;
                *latest = detail.to_string();
            }
            None => {
                tracing::error!(
                    kind,
                    error = %detail,
                    "{} ({kind}): {detail}; more of this kind are counted and logged once every {}",
                    self.what,
                    humantime::format_duration(self.every)
                );
                self.kinds.insert(kind.to_owned(), (0, String::new()));
            }
        }
    }

    /// Logs one line per kind that had errors since the last summary, with their count,
    /// and forgets the kinds that had none (their next error is logged at once again).
    /// Returns the lines' total count.
    pub fn summarize(&mut self) -> u64 {
        let mut total = 0;
        let every = humantime::format_duration(self.every);
        self.kinds.retain(|kind, (count, latest)| {
            if *count == 0 {
                return false;
            }
            tracing::error!(
                kind = kind.as_str(),
                count = *count,
                latest = %latest,
                "{} ({kind}) {count} times in the last {every}; latest: {latest}",
                self.what
            );
            total += *count;
            *count = 0;
            true
        });
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(f: impl FnOnce()) -> Vec<String> {
        let ((), text) = crate::log_capture::capture_logs_at(tracing::Level::INFO, f);
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn a_flood_becomes_one_line_per_kind_per_interval() {
        let mut tally = ErrorTally::new("delivery failed", Duration::from_secs(10));
        let lines = captured(|| {
            for i in 0..10_000 {
                tally.note("MessageTimedOut", format!("candle {i}"));
            }
            tally.note("AllBrokersDown", "x");
            assert_eq!(tally.summarize(), 9_999);
            // A quiet interval forgets the kind; a later error is logged at once again.
            assert_eq!(tally.summarize(), 0);
            tally.note("MessageTimedOut", "again");
        });
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(lines[0].contains("delivery failed (MessageTimedOut): candle 0; more of this kind are counted and logged once every 10s"), "{}", lines[0]);
        assert!(
            lines[1].contains("delivery failed (AllBrokersDown): x"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains(
                "delivery failed (MessageTimedOut) 9999 times in the last 10s; latest: candle 9999"
            ),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].contains("(MessageTimedOut): again"),
            "{}",
            lines[3]
        );
    }
}
