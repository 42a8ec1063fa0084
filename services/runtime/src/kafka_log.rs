//! What librdkafka says, logged so an operator can read it: every Kafka client of both
//! binaries is created with the [`KafkaLog`] context (or, for the consumer's group member,
//! a context that forwards its `log` and `error` callbacks here).
//!
//! rdkafka's default context logs every librdkafka error event and every error-level log
//! line as an ERROR of its own. Two things made that unreadable:
//!
//! * **Partition EOF is not an error.** A reader with `enable.partition.eof` (the
//!   producer's resume scan on a switch to live, the consumer's state rebuild) gets an
//!   error *event* for reaching the end of a partition, and rdkafka's default context
//!   logged it as `ERROR librdkafka: Global error: Partition EOF`, once per partition read.
//!   Here it is a DEBUG line.
//! * **A wrong broker address flooded the log.** With `--brokers 127.0.0.1:1`, each client
//!   of the process (producer, admin, readers) reported every reconnect attempt twice (a
//!   `FAIL` log line and a `BrokerTransportFailure` error event) plus `AllBrokersDown`:
//!   670 ERROR lines in 20 s. Here the first error of each kind is logged once for the
//!   whole process, with librdkafka's reason (which names the broker and the DNS or
//!   connect cause), and then at most one reminder per kind every [`REMIND_EVERY`], with
//!   the count since the previous line. The `FAIL` log line and `AllBrokersDown` repeat
//!   what the transport error already said, so they are DEBUG.
//!
//! librdkafka keeps retrying on its own; nothing here changes what the clients do.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How often a Kafka error that keeps happening is logged again.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// The client context of every Kafka client: librdkafka's errors and log lines through
/// [`on_error`] and [`on_log`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KafkaLog;

impl ClientContext for KafkaLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        on_log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        on_error(&error, reason);
    }
}

impl ConsumerContext for KafkaLog {}

/// A producer whose librdkafka reports go through [`KafkaLog`].
pub type Producer = rdkafka::producer::FutureProducer<KafkaLog>;

/// A plain (group-less or manually assigned) consumer whose reports go through [`KafkaLog`].
pub type Reader = rdkafka::consumer::BaseConsumer<KafkaLog>;

/// A librdkafka error event (the `error` callback), or an error a consumer's poll returned.
pub fn on_error(error: &KafkaError, reason: &str) {
    if let KafkaError::PartitionEOF(_) = error {
        // A reader's poll result (`rdkafka_error_code` is `None` for this variant).
        tracing::debug!("Kafka: end of partition reached ({error}) {reason}");
        return;
    }
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::PartitionEOF) => {
            tracing::debug!("Kafka: end of partition reached ({error}) {reason}");
        }
        Some(RDKafkaErrorCode::AllBrokersDown) => {
            // Follows every transport failure; the failure itself names the cause.
            tracing::debug!("Kafka: {reason}");
        }
        code => {
            let kind = code.map_or_else(|| format!("{error}"), |c| format!("{c:?}"));
            let reason = if reason.is_empty() {
                error.to_string()
            } else {
                reason.to_owned()
            };
            report(tracing::Level::ERROR, &kind, &reason);
        }
    }
}

/// A librdkafka log line (the `log` callback).
pub fn on_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning => {
            if fac == "FAIL" {
                // A broker connection failed; the error event that follows says the same.
                tracing::debug!(target: "librdkafka", "{fac} {message}");
            } else {
                let at = if matches!(level, RDKafkaLogLevel::Warning) {
                    tracing::Level::WARN
                } else {
                    tracing::Level::ERROR
                };
                report(at, fac, message);
            }
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", "{fac} {message}")
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
    }
}

/// Logs `message` of `kind` at `level` if this process has not logged that kind in the
/// last [`REMIND_EVERY`]; otherwise counts it for the next reminder.
fn report(level: tracing::Level, kind: &str, message: &str) {
    static SEEN: OnceLock<Mutex<Reminders>> = OnceLock::new();
    let decision = SEEN
        .get_or_init(|| Mutex::new(Reminders::new(REMIND_EVERY)))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .note(kind, Instant::now());
    let every = humantime::format_duration(REMIND_EVERY);
    let line = match decision {
        Decision::Quiet => return,
        Decision::First => format!(
            "Kafka: {message} ({kind}); the client retries on its own, and this is logged again at most once every {every} while it lasts"
        ),
        Decision::Again { since } => {
            format!("Kafka, still: {message} ({kind}; {since} more since the last such line)")
        }
    };
    if level == tracing::Level::WARN {
        tracing::warn!(kind, "{line}");
    } else {
        tracing::error!(kind, "{line}");
    }
}

/// Whether a line of some kind is due.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// The first of its kind.
    First,
    /// A reminder: `since` more of its kind were counted since the last line.
    Again { since: u64 },
    /// Counted for the next reminder.
    Quiet,
}

/// Per kind: when it was last logged and how many came since.
#[derive(Debug)]
struct Reminders {
    every: Duration,
    kinds: HashMap<String, (Instant, u64)>,
}

impl Reminders {
    fn new(every: Duration) -> Self {
        Reminders {
            every,
            kinds: HashMap::new(),
        }
    }

    fn note(&mut self, kind: &str, now: Instant) -> Decision {
        match self.kinds.get_mut(kind) {
            None => {
                self.kinds.insert(kind.to_owned(), (now, 0));
                Decision::First
            }
            Some((last, count)) if now.duration_since(*last) >= self.every => {
                let since = *count + 1;
                *last = now;
                *count = 0;
                Decision::Again { since }
            }
            Some((_, count)) => {
                *count += 1;
                Decision::Quiet
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_capture::capture_logs_at;

    #[test]
    fn partition_eof_is_never_an_error() {
        let ((), text) = capture_logs_at(tracing::Level::DEBUG, || {
            for p in 0..4 {
                KafkaLog.error(KafkaError::PartitionEOF(p), "");
                KafkaLog.error(
                    KafkaError::Global(RDKafkaErrorCode::PartitionEOF),
                    "Fetch from broker 1 reached end of partition at offset 10",
                );
            }
        });
        assert_eq!(text.lines().count(), 8, "each is still logged: {text}");
        assert!(
            text.lines().all(|l| l.contains("DEBUG")),
            "no line above DEBUG: {text}"
        );
    }

    #[test]
    fn reminders_come_once_per_interval_with_the_count() {
        let mut r = Reminders::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(r.note("BrokerTransportFailure", t0), Decision::First);
        for s in 1..60 {
            assert_eq!(
                r.note("BrokerTransportFailure", t0 + Duration::from_secs(s)),
                Decision::Quiet
            );
        }
        assert_eq!(r.note("Resolve", t0), Decision::First, "kinds are apart");
        assert_eq!(
            r.note("BrokerTransportFailure", t0 + Duration::from_secs(60)),
            Decision::Again { since: 60 }
        );
        assert_eq!(
            r.note("BrokerTransportFailure", t0 + Duration::from_secs(61)),
            Decision::Quiet
        );
    }

    #[test]
    fn a_repeated_failure_is_one_line_naming_its_cause() {
        let reason = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)";
        let ((), text) = capture_logs_at(tracing::Level::INFO, || {
            for _ in 0..100 {
                KafkaLog.log(RDKafkaLogLevel::Error, "FAIL", reason);
                KafkaLog.error(
                    KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
                    reason,
                );
                KafkaLog.error(
                    KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
                    "1/1 brokers are down",
                );
            }
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("ERROR"), "{text}");
        assert!(lines[0].contains("Connection refused"), "{text}");
        assert!(lines[0].contains("BrokerTransportFailure"), "{text}");
    }
}
