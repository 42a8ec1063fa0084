//! A local webhook receiver: the "someone" an alert must reach in the alerting test.
//!
//! Alertmanager's webhook integration POSTs one JSON document per notification (version 4:
//! `receiver`, `status`, `alerts[]` with `labels` and `annotations`, `groupLabels`, ...). This
//! server answers every request 200 and keeps its path and body, parsed, for the test to
//! read; a body that is not JSON is kept as a JSON string so the test sees it too.

use crate::background_server::BackgroundServer;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::Router;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct WebhookCall {
    /// The request path, e.g. `/alerts`.
    pub path: String,
    /// The body, parsed as JSON (a JSON string holding the raw text if it was not JSON).
    pub body: Value,
}

type Calls = Arc<Mutex<Vec<WebhookCall>>>;

/// A webhook endpoint on a free loopback port; stops when dropped.
pub struct WebhookReceiver {
    calls: Calls,
    server: BackgroundServer,
}

impl WebhookReceiver {
    /// Starts the receiver; it accepts requests on every path.
    pub fn start() -> WebhookReceiver {
        let calls = Calls::default();
        let app = Router::new().fallback(record).with_state(calls.clone());
        WebhookReceiver {
            calls,
            server: BackgroundServer::start("webhook-receiver", app),
        }
    }

    /// `http://127.0.0.1:<port>`; any path below it is accepted.
    pub fn url(&self) -> &str {
        &self.server.base_url
    }

    /// Every request received so far, oldest first.
    pub fn calls(&self) -> Vec<WebhookCall> {
        self.calls.lock().expect("webhook calls").clone()
    }
}

async fn record(State(calls): State<Calls>, uri: Uri, body: String) -> StatusCode {
    let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
    calls.lock().expect("webhook calls").push(WebhookCall {
        path: uri.path().to_owned(),
        body,
    });
    StatusCode::OK
}
