//! The producer's admin API: `GET /mode` and `POST /mode`.
//!
//! Switching sources is an operator action, so it is guarded: with `--admin-token` set,
//! `POST /mode` needs `Authorization: Bearer <token>`; without a token only loopback
//! clients may switch (a laptop user can, a neighbour on the network cannot).

use crate::mode::{Mode, ModeControl};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

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
    body: axum::body::Bytes,
) -> Response {
    match &s.token {
        Some(token) => {
            let given = headers
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "POST /mode needs `Authorization: Bearer <ADMIN_TOKEN>`",
                );
            }
        }
        None if !peer.ip().is_loopback() => {
            return error(
                StatusCode::FORBIDDEN,
                "no ADMIN_TOKEN is set, so only loopback clients may switch modes",
            );
        }
        None => {}
    }
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

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
