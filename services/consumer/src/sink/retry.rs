//! The retry policy: what an answer of InfluxDB means for the lines it carried (accepted,
//! some refused, worth retrying, database gone), and the exponential backoff with full
//! jitter between two attempts. No network here, so every rule is unit-tested.

use super::config::InfluxApi;
use super::error::SinkError;
use crate::metrics::WriteErrorKind;
use candlepipe_model::shutdown::Shutdown;
use reqwest::StatusCode;
use std::time::Duration;

/// First retry pause (before jitter); doubles per attempt up to `max_backoff`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);

/// What one HTTP exchange means for the lines it carried.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    /// Every line was stored.
    Accepted,
    /// Some lines cannot be stored (InfluxDB's message); split and try again.
    LinesRejected(String),
    /// Worth retrying the same request after a pause.
    Retry(WriteErrorKind, String),
    /// v1: the database is gone; create it, then retry.
    DatabaseMissing(String),
}

/// How InfluxDB finally answered one request body (after any retries).
pub(super) enum Settled {
    /// Every line was stored.
    Accepted,
    /// Some lines cannot be stored: InfluxDB's message.
    Rejected(String),
}

/// Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
/// Jitter"): spreads retries of many consumers instead of synchronising them.
pub(super) struct Backoff {
    ceiling: Duration,
    max: Duration,
    /// Failed attempts so far.
    pub(super) attempts: u32,
}

impl Backoff {
    pub(super) fn new(max: Duration) -> Self {
        Backoff {
            ceiling: INITIAL_BACKOFF.min(max),
            max,
            attempts: 0,
        }
    }

    /// Sleeps a random time in [0, ceiling], then doubles the ceiling. Returns
    /// [`SinkError::Stopped`] as soon as the shutdown fires.
    pub(super) async fn pause(&mut self, stop: &mut Shutdown) -> Result<(), SinkError> {
        use rand::Rng;
        if stop.is_shutdown() {
            return Err(SinkError::Stopped);
        }
        self.attempts += 1;
        let pause = rand::rng().random_range(Duration::ZERO..=self.ceiling);
        self.ceiling = (self.ceiling * 2).min(self.max);
        tokio::select! {
            _ = tokio::time::sleep(pause) => Ok(()),
            _ = stop.recv() => Err(SinkError::Stopped),
        }
    }
}

/// What InfluxDB's answer `status` (not a success) with its error `message` means for the
/// lines of a write request. `api` matters for one answer: v1's 404 "database not found".
pub(super) fn classify(status: StatusCode, message: String, api: InfluxApi) -> Answer {
    match status {
        StatusCode::TOO_MANY_REQUESTS => Answer::Retry(WriteErrorKind::Server, message),
        StatusCode::REQUEST_TIMEOUT => Answer::Retry(WriteErrorKind::Timeout, message),
        s if s.is_server_error() => Answer::Retry(WriteErrorKind::Server, message),
        // The lines themselves: unparsable, type conflicts, outside retention, too big.
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNPROCESSABLE_ENTITY => Answer::LinesRejected(message),
        StatusCode::NOT_FOUND if api == InfluxApi::V1 && message.contains("database not found") => {
            Answer::DatabaseMissing(message)
        }
        _ => Answer::Retry(WriteErrorKind::Client, format!("{status}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backoff_grows_to_the_cap_and_wakes_on_shutdown() {
        let (trigger, mut stop) = candlepipe_model::shutdown::channel();
        let mut backoff = Backoff::new(Duration::from_millis(3));
        for _ in 0..5 {
            backoff.pause(&mut stop).await.unwrap();
        }
        assert_eq!(backoff.ceiling, Duration::from_millis(3));
        assert_eq!(backoff.attempts, 5);
        // A pause of up to an hour ends as soon as the shutdown fires.
        let mut long = Backoff::new(Duration::from_secs(3600));
        long.ceiling = Duration::from_secs(3600);
        let mut waiting = stop.clone();
        let pause = tokio::spawn(async move { long.pause(&mut waiting).await });
        trigger.fire();
        assert!(matches!(pause.await.unwrap(), Err(SinkError::Stopped)));
        assert!(matches!(
            backoff.pause(&mut stop).await,
            Err(SinkError::Stopped)
        ));
    }

    #[test]
    fn bad_lines_are_told_from_a_sick_server_and_from_bad_credentials() {
        let answer = |code: u16, message: &str, api| {
            classify(StatusCode::from_u16(code).unwrap(), message.to_owned(), api)
        };
        let v2 = InfluxApi::V2;
        for code in [400, 413, 422] {
            assert_eq!(
                answer(code, "bad line", v2),
                Answer::LinesRejected("bad line".into())
            );
        }
        for (code, kind) in [
            (429, WriteErrorKind::Server),
            (500, WriteErrorKind::Server),
            (503, WriteErrorKind::Server),
            (408, WriteErrorKind::Timeout),
        ] {
            assert_eq!(answer(code, "m", v2), Answer::Retry(kind, "m".into()));
        }
        // Credentials, a missing bucket: the request as a whole, retried, never bisected.
        for code in [401, 403, 404] {
            assert!(
                matches!(answer(code, "m", v2), Answer::Retry(WriteErrorKind::Client, ref why) if why.contains(&code.to_string())),
                "{code}"
            );
        }
        let missing = "database not found: \"crypto\"";
        assert_eq!(
            answer(404, missing, InfluxApi::V1),
            Answer::DatabaseMissing(missing.into())
        );
        assert!(matches!(
            answer(404, missing, v2),
            Answer::Retry(WriteErrorKind::Client, _)
        ));
    }

    #[test]
    fn the_first_pause_is_at_most_the_initial_backoff_and_never_above_the_cap() {
        assert_eq!(
            Backoff::new(Duration::from_secs(10)).ceiling,
            INITIAL_BACKOFF
        );
        assert_eq!(
            Backoff::new(Duration::from_millis(20)).ceiling,
            Duration::from_millis(20)
        );
    }
}
