//! The InfluxDB 2 request path (`--influx-api v2`) against a local HTTP endpoint that checks
//! every request the way InfluxDB 2 would, since no InfluxDB 2 runs in this environment
//! (InfluxDB 1.6 serves no `/api/v2`). The endpoint checks the path, the org/bucket/precision
//! query, the token and the gzip encoding, parses every line of the body with
//! [`parse_line`], and answers with a script: server errors to prove retries, a 400 for one
//! poisoned line to prove bisection, a 401 to prove a request-level refusal is not blamed on
//! the points.

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use candlepipe_consumer::lineproto::{self, parse_line, ParsedLine};
use candlepipe_consumer::metrics::ConsumerMetrics;
use candlepipe_consumer::point::{CandlePoint, IndicatorPoint, Point};
use candlepipe_consumer::sink::{InfluxApi, InfluxConfig, InfluxSink, SinkError};
use candlepipe_model::shutdown::{self, Shutdown, ShutdownTrigger};
use candlepipe_model::{Interval, Source};
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const ORG: &str = "candle org";
const BUCKET: &str = "crypto";
const TOKEN: &str = "s3cr3t-t0ken";
/// A line whose symbol tag has this value is refused by the endpoint, like a type conflict.
const POISON: &str = "POISON";

/// One write request as the endpoint saw it.
#[derive(Debug, Clone)]
struct SeenWrite {
    lines: Vec<ParsedLine>,
    status: StatusCode,
}

/// The fake InfluxDB 2's state: what it stored, what it saw, what it answers next.
#[derive(Default)]
struct Endpoint {
    /// Statuses for the next write requests, before the normal answer.
    script: VecDeque<StatusCode>,
    /// Every write request, in order.
    writes: Vec<SeenWrite>,
    /// Lines accepted (answered 204).
    stored: Vec<ParsedLine>,
    /// Problems with a request's shape (path, query, headers, body): must stay empty.
    violations: Vec<String>,
}

#[derive(Clone)]
struct Shared {
    endpoint: Arc<Mutex<Endpoint>>,
    /// Number of write requests seen, for condition waits.
    seen: watch::Sender<usize>,
}

async fn serve(State(shared): State<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let query: HashMap<String, String> =
        reqwest::Url::parse(&format!("http://endpoint{}", parts.uri))
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect();
    let want_auth = format!("Token {TOKEN}");
    let authorized = parts
        .headers
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        == Some(want_auth.as_str());
    match parts.uri.path() {
        "/health" => (StatusCode::OK, r#"{"status":"pass"}"#).into_response(),
        "/api/v2/buckets" => {
            if !authorized {
                return (
                    StatusCode::UNAUTHORIZED,
                    r#"{"code":"unauthorized","message":"unauthorized access"}"#,
                )
                    .into_response();
            }
            let buckets = if query.get("org").map(String::as_str) == Some(ORG)
                && query.get("name").map(String::as_str) == Some(BUCKET)
            {
                format!(r#"{{"buckets":[{{"id":"0123","name":"{BUCKET}","orgID":"42"}}]}}"#)
            } else {
                r#"{"buckets":[]}"#.to_owned()
            };
            (StatusCode::OK, buckets).into_response()
        }
        "/api/v2/write" => {
            let mut violations = Vec::new();
            for (k, v) in [("org", ORG), ("bucket", BUCKET), ("precision", "ms")] {
                if query.get(k).map(String::as_str) != Some(v) {
                    violations.push(format!("query {k}={:?}, want {v:?}", query.get(k)));
                }
            }
            if !authorized {
                violations.push(format!(
                    "authorization {:?}",
                    parts.headers.get("authorization")
                ));
            }
            let lines = match decoded_lines(&parts.headers, &body) {
                Ok(lines) => lines,
                Err(why) => {
                    violations.push(why);
                    Vec::new()
                }
            };
            let poisoned = lines
                .iter()
                .any(|l| l.tags.iter().any(|(k, v)| k == "symbol" && v == POISON));
            let mut ep = shared.endpoint.lock().unwrap();
            ep.violations.extend(violations);
            let status = match ep.script.pop_front() {
                Some(scripted) => scripted,
                None if poisoned => StatusCode::BAD_REQUEST,
                None => StatusCode::NO_CONTENT,
            };
            if status == StatusCode::NO_CONTENT {
                ep.stored.extend(lines.iter().cloned());
            }
            ep.writes.push(SeenWrite { lines, status });
            let n = ep.writes.len();
            drop(ep);
            shared.seen.send_replace(n);
            let body = match status {
                StatusCode::BAD_REQUEST => format!(
                    r#"{{"code":"invalid","message":"failure writing points to database: partial write: field type conflict: symbol={POISON}"}}"#
                ),
                StatusCode::NO_CONTENT => String::new(),
                other => format!(r#"{{"code":"internal error","message":"scripted {other}"}}"#),
            };
            (status, body).into_response()
        }
        other => {
            shared
                .endpoint
                .lock()
                .unwrap()
                .violations
                .push(format!("request to {other}"));
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

/// The request body gunzipped and parsed line by line.
fn decoded_lines(headers: &HeaderMap, body: &Bytes) -> Result<Vec<ParsedLine>, String> {
    if headers
        .get("content-encoding")
        .and_then(|h| h.to_str().ok())
        != Some("gzip")
    {
        return Err(format!(
            "content-encoding {:?}",
            headers.get("content-encoding")
        ));
    }
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .map_err(|e| format!("body is not gzip text: {e}"))?;
    if !text.ends_with('\n') {
        return Err("body does not end with a newline".into());
    }
    text.lines()
        .map(|l| parse_line(l).map_err(|e| format!("{l:?}: {e}")))
        .collect()
}

/// A running fake InfluxDB 2 and a sink pointed at it.
struct Fixture {
    shared: Shared,
    sink: InfluxSink,
    metrics: ConsumerMetrics,
    trigger: ShutdownTrigger,
    stop: Shutdown,
    seen: watch::Receiver<usize>,
}

impl Fixture {
    async fn start(cfg: impl FnOnce(InfluxConfig) -> InfluxConfig) -> Fixture {
        let (seen_tx, seen) = watch::channel(0);
        let shared = Shared {
            endpoint: Arc::default(),
            seen: seen_tx,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().fallback(serve).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let metrics = ConsumerMetrics::new();
        let config = cfg(InfluxConfig {
            url: format!("http://{addr}"),
            api: InfluxApi::V2,
            org: Some(ORG.into()),
            bucket: BUCKET.into(),
            token: Some(TOKEN.into()),
            gzip: true,
            max_backoff: Duration::from_millis(50),
            ..InfluxConfig::default()
        });
        let sink = InfluxSink::new(config, metrics.clone()).unwrap();
        let (trigger, stop) = shutdown::channel();
        Fixture {
            shared,
            sink,
            metrics,
            trigger,
            stop,
            seen,
        }
    }

    fn script(&self, statuses: &[StatusCode]) {
        self.shared.endpoint.lock().unwrap().script.extend(statuses);
    }

    fn endpoint(&self) -> std::sync::MutexGuard<'_, Endpoint> {
        self.shared.endpoint.lock().unwrap()
    }

    fn assert_well_formed(&self) {
        let ep = self.endpoint();
        assert!(
            ep.violations.is_empty(),
            "bad requests: {:?}",
            ep.violations
        );
    }
}

fn candle(symbol: &str, i: usize) -> Point {
    let x = i as f64;
    Point::Candle(CandlePoint {
        symbol: Arc::from(symbol),
        source: Source::Live,
        interval: [Interval::M1, Interval::M5, Interval::M15, Interval::H1][i % 4],
        time: 1_700_000_000_000 + i as i64 * 60_000,
        open: 100.0 + x / 7.0,
        high: 101.0 + x / 3.0,
        low: 99.0 - x / 11.0,
        close: 100.5 + x * 0.1,
        volume: 0.1 + x,
        quote_volume: Some(1e-9 * x),
        trades: Some(i as u64 * 1000),
        taker_buy_base: None,
        taker_buy_quote: Some(x.sqrt()),
        vwap: Some(100.25 + x / 13.0),
    })
}

fn indicator(symbol: &str, i: usize) -> Point {
    Point::Indicator(IndicatorPoint {
        symbol: Arc::from(symbol),
        source: Some(Source::Replay),
        time: 1_700_000_000_000 + i as i64 * 60_000,
        ema_12: Some(i as f64 / 3.0),
        rsi_14: Some(100.0 / (i as f64 + 1.0)),
        log_return: Some(-(i as f64 + 1.0).ln()),
        ..IndicatorPoint::default()
    })
}

fn sorted(mut lines: Vec<ParsedLine>) -> Vec<ParsedLine> {
    lines.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    lines
}

fn expected(points: &[Point]) -> Vec<ParsedLine> {
    sorted(points.iter().map(ParsedLine::expected_for).collect())
}

#[tokio::test]
async fn prepare_finds_the_bucket_and_names_a_missing_one() {
    let f = Fixture::start(|c| c).await;
    f.sink.prepare(&f.stop).await.expect("bucket exists");
    assert!(f.sink.ping().await);

    let missing = Fixture::start(|c| InfluxConfig {
        bucket: "nope".into(),
        ..c
    })
    .await;
    match missing.sink.prepare(&missing.stop).await {
        Err(SinkError::Fatal(why)) => {
            assert!(why.contains("\"nope\"") && why.contains(ORG), "{why}")
        }
        other => panic!("expected Fatal, got {other:?}"),
    }

    let bad_token = Fixture::start(|c| InfluxConfig {
        token: Some("wrong".into()),
        ..c
    })
    .await;
    match bad_token.sink.prepare(&bad_token.stop).await {
        Err(SinkError::Fatal(why)) => assert!(why.contains("401"), "{why}"),
        other => panic!("expected Fatal, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_are_gzipped_v2_requests_that_parse_back_into_the_points() {
    // One request in flight, so the order of the requests is the order of the points.
    let f = Fixture::start(|c| InfluxConfig {
        batch_points: 5,
        concurrency: 1,
        ..c
    })
    .await;
    let symbols = ["BTC-USD", "A B,c=d", r"back\slash", "quo\"te"];
    let points: Vec<Point> = (0..12)
        .map(|i| {
            if i % 3 == 0 {
                indicator(symbols[i % 4], i)
            } else {
                candle(symbols[i % 4], i)
            }
        })
        .collect();
    let outcome = f.sink.write(&points, &f.stop).await.unwrap();
    assert_eq!(outcome.written, 12);
    assert_eq!(outcome.rejected, []);
    f.assert_well_formed();
    let ep = f.endpoint();
    // 12 points at most 5 per request: 3 requests of equal size.
    let sizes: Vec<usize> = ep.writes.iter().map(|w| w.lines.len()).collect();
    assert_eq!(sizes, [4, 4, 4]);
    assert_eq!(sorted(ep.stored.clone()), expected(&points));
    // In order, too.
    assert_eq!(
        ep.stored,
        points
            .iter()
            .map(ParsedLine::expected_for)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        f.metrics
            .points_written
            .with_label_values(&["candle"])
            .get(),
        8
    );
    assert_eq!(
        f.metrics
            .points_written
            .with_label_values(&["indicator"])
            .get(),
        4
    );
    assert_eq!(f.metrics.write_duration.get_sample_count(), 3);
    assert!(f.metrics.last_write.get() > 1.7e9);
}

#[tokio::test]
async fn server_errors_are_retried_until_influxdb_accepts() {
    let f = Fixture::start(|c| c).await;
    f.script(&[
        StatusCode::INTERNAL_SERVER_ERROR,
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::TOO_MANY_REQUESTS,
    ]);
    let points: Vec<Point> = (0..30).map(|i| candle("ETH-USD", i)).collect();
    let outcome = f.sink.write(&points, &f.stop).await.unwrap();
    assert_eq!(outcome.written, 30);
    assert_eq!(outcome.rejected, []);
    f.assert_well_formed();
    let ep = f.endpoint();
    let statuses: Vec<u16> = ep.writes.iter().map(|w| w.status.as_u16()).collect();
    assert_eq!(statuses, [500, 503, 429, 204]);
    // The same request each time.
    assert!(ep.writes.iter().all(|w| w.lines == ep.writes[0].lines));
    assert_eq!(sorted(ep.stored.clone()), expected(&points));
    assert_eq!(f.metrics.write_retries.get(), 3);
    assert_eq!(
        f.metrics.write_errors.with_label_values(&["server"]).get(),
        3
    );
}

/// A batch is cut into gzipped request bodies when it is encoded; a rejected request is
/// unpacked again to isolate its lines, which must keep their place in the batch. (Plain
/// bodies: `a_field_type_conflict_rejects_exactly_the_conflicting_points` on influxd 1.x.)
#[tokio::test]
async fn rejected_lines_in_later_requests_keep_their_batch_index() {
    let f = Fixture::start(|c| InfluxConfig {
        batch_points: 16,
        ..c
    })
    .await;
    let mut points: Vec<Point> = (0..40).map(|i| candle("SOL-USD", i)).collect();
    points[23] = candle(POISON, 23);
    points[35] = candle(POISON, 35);
    let outcome = f.sink.write(&points, &f.stop).await.unwrap();
    assert_eq!(outcome.written, 38);
    let indices: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(indices, vec![23, 35]);
    for (r, minute) in outcome.rejected.iter().zip([23, 35]) {
        let mut line = Vec::new();
        lineproto::encode(&points[minute], &mut line).unwrap();
        assert_eq!(r.line.as_bytes(), line.trim_ascii_end());
    }
    f.assert_well_formed();
    let mut good = points.clone();
    good.remove(35);
    good.remove(23);
    assert_eq!(sorted(f.endpoint().stored.clone()), expected(&good));
}

#[tokio::test]
async fn a_rejected_line_is_isolated_and_the_others_are_written() {
    let f = Fixture::start(|c| c).await;
    let mut points: Vec<Point> = (0..40).map(|i| candle("SOL-USD", i)).collect();
    points[23] = candle(POISON, 23);
    let outcome = f.sink.write(&points, &f.stop).await.unwrap();
    assert_eq!(outcome.written, 39);
    assert_eq!(outcome.rejected.len(), 1);
    let rejected = &outcome.rejected[0];
    assert_eq!(rejected.index, 23);
    assert!(rejected.line.contains("symbol=POISON"), "{}", rejected.line);
    assert!(
        rejected.error.contains("field type conflict"),
        "{}",
        rejected.error
    );
    f.assert_well_formed();

    let mut good = points.clone();
    good.remove(23);
    let ep = f.endpoint();
    assert_eq!(sorted(ep.stored.clone()), expected(&good));
    // Bisection: a logarithmic number of requests, not one per point.
    assert!(ep.writes.len() <= 2 * 6 + 1, "{} requests", ep.writes.len());
    assert_eq!(f.metrics.write_retries.get(), 0);
}

#[tokio::test]
async fn a_refused_request_is_retried_not_blamed_on_the_points() {
    let f = Fixture::start(|c| c).await;
    f.script(&[StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]);
    let points: Vec<Point> = (0..10).map(|i| indicator("XRP-USD", i)).collect();
    let outcome = f.sink.write(&points, &f.stop).await.unwrap();
    assert_eq!(outcome.written, 10);
    assert_eq!(outcome.rejected, []);
    let ep = f.endpoint();
    assert_eq!(ep.writes.len(), 3);
    assert_eq!(sorted(ep.stored.clone()), expected(&points));
    assert_eq!(
        f.metrics.write_errors.with_label_values(&["client"]).get(),
        2
    );
}

#[tokio::test]
async fn shutdown_ends_the_retrying() {
    let f = Fixture::start(|c| c).await;
    f.script(&[StatusCode::BAD_GATEWAY; 1000]);
    let points: Vec<Point> = (0..3).map(|i| candle("ADA-USD", i)).collect();
    let (sink, stop) = (f.sink.clone(), f.stop.clone());
    let write = tokio::spawn(async move { sink.write(&points, &stop).await });
    let mut seen = f.seen.clone();
    seen.wait_for(|n| *n >= 3).await.unwrap();
    f.trigger.fire();
    assert!(matches!(write.await.unwrap(), Err(SinkError::Stopped)));
    assert!(f.endpoint().stored.is_empty());
}
