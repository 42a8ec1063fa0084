//! The HTTP surface both services expose: `GET /metrics` (Prometheus text format),
//! `GET /healthz` (the process is alive) and `GET /readyz` (every dependency check passes,
//! 503 otherwise, with a JSON body saying which check failed and why).
//!
//! A service adds its own routes (the producer's `/mode`) by merging a router into
//! [`router`]'s result before calling [`serve`].

use crate::shutdown::Shutdown;
use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus::{Encoder, Registry, TextEncoder};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Named readiness checks, updated by the tasks that know (Kafka connected, InfluxDB
/// reachable). `/readyz` is 200 only when every registered check is passing.
#[derive(Clone, Default, Debug)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<&'static str, (bool, String)>>>,
}

impl Readiness {
    /// Registers a check as failing, with a reason, until [`Readiness::set`] says otherwise.
    pub fn register(&self, name: &'static str, why: impl Into<String>) {
        self.set(name, false, why);
    }

    /// Updates a check.
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        self.checks
            .lock()
            .expect("readiness lock")
            .insert(name, (ok, detail.into()));
    }

    /// True when every check passes.
    pub fn is_ready(&self) -> bool {
        self.checks
            .lock()
            .expect("readiness lock")
            .values()
            .all(|(ok, _)| *ok)
    }

    fn report(&self) -> serde_json::Value {
        let checks = self.checks.lock().expect("readiness lock");
        let map: serde_json::Map<String, serde_json::Value> = checks
            .iter()
            .map(|(k, (ok, d))| (k.to_string(), json!({"ok": ok, "detail": d})))
            .collect();
        json!({"ready": checks.values().all(|(ok, _)| *ok), "checks": map})
    }
}

#[derive(Clone)]
struct HttpState {
    registry: Registry,
    readiness: Readiness,
}

/// A fresh metrics registry that already holds the standard `process_*` metrics.
pub fn registry_with_process_metrics() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("process collector registers once");
    registry
}

/// Registers `metric` in `registry` and hands it back, so a metrics struct reads as a list
/// of constructors.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: C,
) -> C {
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// The common routes, bound to a metrics registry and the readiness checks.
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(HttpState {
            registry,
            readiness,
        })
}

async fn metrics(State(s): State<HttpState>) -> Response {
    let mut buf = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                TextEncoder::new().format_type().to_owned(),
            )],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let code = if s.readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(s.readiness.report())).into_response()
}

/// Binds `addr` and serves `app` until `shutdown` fires. Binding errors are returned at once
/// (a taken port is a start-up error, not a silent background failure); the returned future
/// is the server itself.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    mut shutdown: Shutdown,
) -> anyhow::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the HTTP server to {addr} (is the port taken?)"))?;
    tracing::info!(%addr, "HTTP server listening (/metrics, /healthz, /readyz)");
    Ok(axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.recv().await })
    .into_future())
}

/// Re-runs `check` every `period` until `shutdown`, recording its answer as the readiness
/// check `name` (`Ok(detail)` passes, `Err(reason)` fails).
pub fn spawn_probe<F, Fut>(
    readiness: Readiness,
    name: &'static str,
    period: Duration,
    mut shutdown: Shutdown,
    check: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<String, String>> + Send,
{
    tokio::spawn(async move {
        loop {
            match check().await {
                Ok(detail) => readiness.set(name, true, detail),
                Err(why) => readiness.set(name, false, why),
            }
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = shutdown.recv() => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check() {
        let r = Readiness::default();
        assert!(
            r.is_ready(),
            "no checks registered means nothing to wait for"
        );
        r.register("kafka", "not connected yet");
        assert!(!r.is_ready());
        r.set("kafka", true, "connected");
        r.register("influxdb", "unreachable");
        assert!(!r.is_ready());
        assert_eq!(r.report()["checks"]["influxdb"]["detail"], "unreachable");
        r.set("influxdb", true, "ok");
        assert!(r.is_ready());
    }
}
