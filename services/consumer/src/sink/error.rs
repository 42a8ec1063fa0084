//! Why the sink gave up ([`SinkError`], for the batch loop), and the helpers that turn an
//! InfluxDB answer or a transport failure into the words of a log line or a dead letter.

use crate::metrics::WriteErrorKind;
use candlepipe_model::http_body::{read_capped, text_capped, BodyError};

/// Why [`InfluxSink::write`](super::InfluxSink::write) or
/// [`InfluxSink::prepare`](super::InfluxSink::prepare) gave up.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The shutdown fired while InfluxDB was not accepting the points: nothing may be
    /// committed for them.
    #[error("shutdown requested before InfluxDB accepted the points")]
    Stopped,
    /// InfluxDB answered in a way retrying cannot fix (missing bucket, rejected credentials,
    /// unknown retention policy): an operator must act.
    #[error("InfluxDB cannot be used as configured: {0}")]
    Fatal(String),
}

/// How much of an unexpected error body goes into a log line.
const MAX_ERROR_BODY: usize = 1024;

/// The largest InfluxDB answer read (query results here are database and policy names,
/// errors a line): a larger one is a broken server or proxy, and is not read further.
const MAX_RESPONSE_BYTES: u64 = 1 << 20;

/// A response body as JSON (without reqwest's `json` feature), at most
/// [`MAX_RESPONSE_BYTES`] of it.
pub(super) async fn json_body(resp: reqwest::Response) -> Result<serde_json::Value, String> {
    let bytes = read_capped(resp, MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::Transport(e) => error_chain(&e),
            too_large => too_large.to_string(),
        })?;
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

/// InfluxDB's error message from an error response: `{"error": ...}` (1.x), `{"message": ...}`
/// (2.x), or the start of whatever else it sent.
pub(super) async fn error_message(resp: reqwest::Response) -> String {
    let header = resp
        .headers()
        .get("X-Influxdb-Error")
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let body = text_capped(resp, MAX_RESPONSE_BYTES)
        .await
        .unwrap_or_else(|e| e.to_string());
    let from_json = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_owned)
        });
    from_json.or(header).unwrap_or_else(|| {
        let mut text = body.trim().to_owned();
        if text.len() > MAX_ERROR_BODY {
            let mut cut = MAX_ERROR_BODY;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    })
}

pub(super) fn transport_kind(e: &reqwest::Error) -> WriteErrorKind {
    if e.is_timeout() {
        WriteErrorKind::Timeout
    } else {
        // Refused, reset, closed mid-request, DNS: all "could not talk to InfluxDB".
        WriteErrorKind::Connect
    }
}

/// An error with its causes ("error sending request: connection refused"), for logs.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Sending(fmt::Error);

    impl fmt::Display for Sending {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl std::error::Error for Sending {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_chain_names_every_cause() {
        assert_eq!(
            error_chain(&Sending(fmt::Error)),
            format!("error sending request: {}", fmt::Error)
        );
    }
}
