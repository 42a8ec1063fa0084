//! The producer's admin API: `GET /mode` and `POST /mode`.
//!
//! Switching sources is an operator action, so it is guarded: with `--admin-token` set,
//! `POST /mode` needs `Authorization: Bearer <token>`; without a token only loopback
//! clients may switch (a laptop user can, a neighbour on the network cannot).
//!
//! The caller is checked before a byte of the body is read (an unauthenticated client gets
//! its 401 while still sending), the body is read up to [`MAX_BODY_BYTES`] only, and the
//! token is compared in constant time: the time taken depends on neither the token's
//! bytes nor its length, only on the length of what the client sent.

use crate::mode::ModeControl;
use crate::mode_choice::Mode;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use subtle::ConstantTimeEq;

/// The largest `POST /mode` body read (`{"mode":"replay"}` is 17 bytes).
pub const MAX_BODY_BYTES: usize = 1024;

#[derive(Clone)]
struct AdminState {
    control: ModeControl,
    token: Option<String>,
}

/// The `/mode` routes.
pub fn router(control: ModeControl, token: Option<String>) -> Router {
    Router::new()
        .route("/mode", get(get_mode).post(post_mode))
        .with_state(AdminState { control, token })
}

#[derive(Deserialize)]
struct ModeBody {
    mode: String,
}

async fn get_mode(State(s): State<AdminState>) -> Response {
    Json(json!({"mode": s.control.current().as_str()})).into_response()
}

fn error(code: StatusCode, msg: impl Into<String>) -> Response {
    (code, Json(json!({"error": msg.into()}))).into_response()
}

async fn post_mode(
    State(s): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    // Not `Bytes`: that extractor reads the whole body before the handler runs.
    body: axum::body::Body,
) -> Response {
    if let Some(denied) = deny(&s, peer, &headers) {
        return denied;
    }
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read a body of at most {MAX_BODY_BYTES} bytes: {e}"),
            )
        }
    };
    let parsed: ModeBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"mode\":\"live\"}} or {{\"mode\":\"replay\"}}: {e}"),
            )
        }
    };
    let to = match parsed.mode.as_str() {
        "live" => Mode::Live,
        "replay" => Mode::Replay,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown mode {other:?}; use \"live\" or \"replay\""),
            )
        }
    };
    match s.control.switch(to).await {
        Ok(m) => Json(json!({"mode": m.as_str()})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// The answer refusing the caller, or `None` when it may switch.
fn deny(s: &AdminState, peer: SocketAddr, headers: &HeaderMap) -> Option<Response> {
    match &s.token {
        Some(token) => {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let ok = given.is_some_and(|g| token_matches(g.as_bytes(), token.as_bytes()));
            (!ok).then(|| {
                error(
                    StatusCode::UNAUTHORIZED,
                    "POST /mode needs `Authorization: Bearer <ADMIN_TOKEN>`",
                )
            })
        }
        None if !peer.ip().is_loopback() => Some(error(
            StatusCode::FORBIDDEN,
            "no ADMIN_TOKEN is set, so only loopback clients may switch modes",
        )),
        None => None,
    }
}

/// `given == token`, in time that depends only on `given.len()`: every byte of `given` is
/// compared (against the token, repeated), and the lengths are compared without a branch,
/// so neither a wrong byte's position nor the token's length shows in the timing. An empty
/// token matches nothing.
fn token_matches(given: &[u8], token: &[u8]) -> bool {
    if token.is_empty() {
        return false;
    }
    let mut same = (given.len() as u64).ct_eq(&(token.len() as u64));
    for (i, g) in given.iter().enumerate() {
        same &= g.ct_eq(&token[i % token.len()]);
    }
    same.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ProducerMetrics;
    use crate::mode::Supervisor;
    use crate::mode_choice::ReplayOnSwitch;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn token_comparison() {
        assert!(token_matches(b"secret", b"secret"));
        assert!(!token_matches(b"secret", b"secreT"));
        assert!(!token_matches(b"secret", b"secret2"));
        assert!(!token_matches(b"secre", b"secret"));
        assert!(!token_matches(b"secretsecret", b"secret"), "not a repeat");
        assert!(!token_matches(b"", b"secret"));
        assert!(!token_matches(b"", b""), "an empty token lets nobody in");
    }

    /// The admin router on a loopback port, with a supervisor that never runs (the tests
    /// here are refused before a switch, or fail parsing).
    async fn serve(token: &str) -> (SocketAddr, Supervisor) {
        let (sink, _) = tokio::sync::mpsc::channel(1);
        let (supervisor, control) = Supervisor::new(
            Mode::Replay,
            None,
            None,
            ReplayOnSwitch::Resume,
            candlepipe_runtime::kafka::KafkaArgs {
                brokers: "127.0.0.1:1".into(),
                topic: "candles".into(),
                properties: vec![],
            },
            sink,
            ProducerMetrics::new(),
        );
        let app = router(control, Some(token.to_owned()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        (addr, supervisor)
    }

    /// Sends `head` (and `body`) and reads the status line of the answer. The wait is
    /// bounded by a deadline far above any real answer, so a server that never answers
    /// fails the test instead of hanging it.
    async fn status(addr: SocketAddr, head: String, body: &[u8]) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(body).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 1024];
        let read = async {
            while !answer.windows(2).any(|w| w == b"\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                answer.extend_from_slice(&buf[..n]);
            }
        };
        let answered = tokio::time::timeout(Duration::from_secs(30), read).await;
        assert!(
            answered.is_ok(),
            "no answer to {head:?} while its body was not (fully) sent: the server waits for \
             the body before checking the caller"
        );
        String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    }

    fn head(bearer: &str, length: usize) -> String {
        format!(
            "POST /mode HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n\
             Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        )
    }

    #[tokio::test]
    async fn an_unauthenticated_body_is_refused_before_it_is_read() {
        let (addr, _supervisor) = serve("s3cret").await;
        // 1 MiB announced (under axum's 2 MB default limit), not a byte of it sent.
        let line = status(addr, head("wrong", 1 << 20), b"").await;
        assert!(line.starts_with("HTTP/1.1 401"), "{line}");
        // Authenticated, but more than MAX_BODY_BYTES: refused, not read whole.
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let line = status(addr, head("s3cret", big.len()), &big).await;
        assert!(line.starts_with("HTTP/1.1 413"), "{line}");
        // Authenticated, small, wrong: the body is read and parsed.
        let line = status(addr, head("s3cret", 2), b"{}").await;
        assert!(line.starts_with("HTTP/1.1 400"), "{line}");
    }
}
