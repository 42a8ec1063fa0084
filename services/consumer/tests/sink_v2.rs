//! What only the InfluxDB 2 write path (`--influx-api v2`) does, against a real InfluxDB 2.7
//! (the testkit's `Influxd`, set up with an org and an operator token like compose's first
//! start):
//!
//! * `prepare` finds the bucket in the org, and fails with [`SinkError::Fatal`] naming a
//!   missing bucket or org, or the server's 401 for a wrong token;
//! * a write with a token InfluxDB refuses (a wrong one: 401 `unauthorized access`; a
//!   revoked one: 403 `token is inactive`) is a refusal of the request as a whole: retried
//!   with backoff and counted as a `client` write error, never bisected or blamed on the
//!   points; a shutdown ends the retrying with [`SinkError::Stopped`], and a token made
//!   active again lets the same write complete;
//! * lines InfluxDB rejects (a real field type conflict, 422) in the 3rd and 4th gzipped
//!   request of a batch come back with their index in the batch, in a logarithmic number of
//!   requests, and everything else is stored;
//! * with `--influx-concurrency 2` a batch's requests are in flight together, and one that
//!   fails (a 503 from a proxy in front of the server) is the only one sent again: the
//!   write returns, letting the batch loop commit, once every request was accepted.
//!
//! What both servers do alike (exact round trips through gzipped and plain v2 requests,
//! idempotent rewrites, escaping, field type conflicts, outages, a large batch) is proven on
//! InfluxDB 2.7 and 1.6 by `sink_influx.rs`.
//!
//! Every test takes its own bucket on the binary's shared server. The sink runs on a tokio
//! runtime owned by the test, so the test thread is free to call the (blocking) testkit.

use candlepipe_consumer::lineproto;
use candlepipe_consumer::metrics::ConsumerMetrics;
use candlepipe_consumer::point::{CandlePoint, Point};
use candlepipe_consumer::sink::{InfluxApi, InfluxConfig, InfluxSink, SinkError, WriteOutcome};
use candlepipe_model::shutdown::{self, Shutdown, ShutdownTrigger};
use candlepipe_model::{Interval, Source};
use candlepipe_testkit::http_client::{encode_query, post_body};
use candlepipe_testkit::{unique, wait_until, Influxd};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

type Row = Map<String, Value>;

/// The value of one of the flags the testkit gives the consumer for InfluxDB 2
/// (`--influx-org`, `--influx-token`): the org and operator token it set the server up with.
fn flag(influx: &Influxd, name: &str) -> String {
    let args = influx.consumer_args("any");
    let at = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("testkit's consumer_args has no {name}: {args:?}"));
    args[at + 1].clone()
}

fn org(influx: &Influxd) -> String {
    flag(influx, "--influx-org")
}

/// A new, empty bucket.
fn new_bucket(influx: &Influxd, prefix: &str) -> String {
    let bucket = unique(prefix);
    influx.create_db(&bucket);
    bucket
}

/// The v2 sink's configuration for `bucket`, with the operator token.
fn config(influx: &Influxd, bucket: &str) -> InfluxConfig {
    InfluxConfig {
        url: influx.url.clone(),
        api: InfluxApi::V2,
        org: Some(org(influx)),
        bucket: bucket.to_owned(),
        token: Some(flag(influx, "--influx-token")),
        gzip: true,
        max_backoff: Duration::from_millis(200),
        request_timeout: Duration::from_secs(10),
        ..InfluxConfig::default()
    }
}

/// A sink, its metrics, and a shutdown the test fires when it wants to.
struct Harness {
    rt: tokio::runtime::Runtime,
    sink: InfluxSink,
    metrics: ConsumerMetrics,
    trigger: ShutdownTrigger,
    stop: Shutdown,
}

impl Harness {
    fn new(cfg: InfluxConfig) -> Harness {
        let metrics = ConsumerMetrics::new();
        let sink = InfluxSink::new(cfg, metrics.clone()).expect("valid config");
        let (trigger, stop) = shutdown::channel();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Harness {
            rt,
            sink,
            metrics,
            trigger,
            stop,
        }
    }

    fn prepare(&self) -> Result<(), SinkError> {
        self.rt.block_on(self.sink.prepare(&self.stop))
    }

    /// Starts writing `points` in the background.
    fn spawn_write(
        &self,
        points: &[Point],
    ) -> tokio::task::JoinHandle<Result<WriteOutcome, SinkError>> {
        let (sink, stop, points) = (self.sink.clone(), self.stop.clone(), points.to_vec());
        self.rt
            .spawn(async move { sink.write(&points, &stop).await })
    }

    fn retries(&self) -> u64 {
        self.metrics.write_retries.get()
    }

    fn errors(&self, kind: &str) -> u64 {
        self.metrics.write_errors.with_label_values(&[kind]).get()
    }

    /// Accepted write requests (each observes one duration).
    fn accepted_requests(&self) -> u64 {
        self.metrics.write_duration.get_sample_count()
    }
}

/// A candle whose fields are all floats except `trades`, which only some candles have.
fn candle(symbol: &str, i: usize, trades: Option<u64>) -> Point {
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
        trades,
        taker_buy_base: None,
        taker_buy_quote: Some(x.sqrt()),
        vwap: Some(100.25 + x / 13.0),
    })
}

/// Raw write to `/api/v2/write` with `token`: (status, body).
fn raw_write(influx: &Influxd, bucket: &str, token: &str, lines: &str) -> (u16, String) {
    let url = format!(
        "{}/api/v2/write?{}",
        influx.url,
        encode_query(&[
            ("org", &org(influx)),
            ("bucket", bucket),
            ("precision", "ms")
        ])
    );
    let auth = format!("Token {token}");
    post_body(
        &url,
        "text/plain; charset=utf-8",
        lines.as_bytes(),
        &[("Authorization", auth.as_str())],
    )
    .expect("influxd 2 answers writes")
}

/// Every stored candle of `symbol`, by time.
fn stored_candles(influx: &Influxd, bucket: &str, symbol: &str) -> BTreeMap<i64, Row> {
    influx
        .rows(
            bucket,
            &format!("SELECT * FROM candle WHERE symbol = '{symbol}'"),
        )
        .into_iter()
        .map(|r| (r["time"].as_i64().expect("epoch ms"), r))
        .collect()
}

/// Asserts the stored candles of `symbol` are exactly `points` (values bit for bit).
fn assert_stored_exactly(influx: &Influxd, bucket: &str, symbol: &str, points: &[&Point]) {
    let stored = stored_candles(influx, bucket, symbol);
    assert_eq!(stored.len(), points.len(), "stored {stored:?}");
    for p in points {
        let Point::Candle(p) = p else { unreachable!() };
        let row = &stored[&p.time];
        assert_eq!(row["interval"], p.interval.as_str());
        for (field, value) in [
            ("open", p.open),
            ("high", p.high),
            ("low", p.low),
            ("close", p.close),
            ("volume", p.volume),
        ] {
            assert_eq!(
                row[field].as_f64().map(f64::to_bits),
                Some(value.to_bits()),
                "{field} at {}: {row:?}",
                p.time
            );
        }
        assert_eq!(row["trades"].as_i64(), p.trades.map(|t| t as i64));
    }
}

#[test]
fn prepare_finds_the_bucket_and_names_a_missing_one() {
    let influx = Influxd::shared();
    let org = org(influx);
    let bucket = new_bucket(influx, "prepare");
    let h = Harness::new(config(influx, &bucket));
    h.prepare().expect("the bucket exists");
    assert!(h.rt.block_on(h.sink.ping()));

    let fatal = |cfg: InfluxConfig| match Harness::new(cfg).prepare() {
        Err(SinkError::Fatal(why)) => why,
        other => panic!("expected Fatal, got {other:?}"),
    };

    let missing = unique("missing");
    let why = fatal(InfluxConfig {
        bucket: missing.clone(),
        ..config(influx, &bucket)
    });
    // InfluxDB 2.7 answers a lookup of a missing bucket with 404 `bucket "…" not found`
    // (not an empty list), which the sink reports with the bucket and org it looked for.
    assert!(
        why.contains(&format!("{missing:?}"))
            && why.contains(&format!("organization {org:?}"))
            && why.contains("not found"),
        "{why}"
    );

    let why = fatal(InfluxConfig {
        org: Some("no-such-org".into()),
        ..config(influx, &bucket)
    });
    assert!(
        why.contains(r#"organization "no-such-org""#) && why.contains("404"),
        "{why}"
    );

    let why = fatal(InfluxConfig {
        token: Some("wrong-token".into()),
        ..config(influx, &bucket)
    });
    assert!(why.contains("401") && why.contains("unauthorized"), "{why}");
}

/// A token InfluxDB refuses is the request's fault, not the points': the sink retries the
/// whole request (every `client` error is a retry, none a rejection of lines) until the
/// shutdown, and nothing is written or handed to the dead-letter topic.
#[test]
fn a_wrong_token_is_retried_as_a_whole_until_shutdown() {
    let influx = Influxd::shared();
    let bucket = new_bucket(influx, "badtoken");
    let points: Vec<Point> = (0..40).map(|i| candle("ETH-USD", i, Some(7))).collect();
    let mut line = Vec::new();
    lineproto::encode(&points[0], &mut line).unwrap();

    // What the real server answers to a write with an unknown token.
    let (status, body) = raw_write(
        influx,
        &bucket,
        "wrong-token",
        std::str::from_utf8(&line).unwrap(),
    );
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("unauthorized access"), "{body}");

    let h = Harness::new(InfluxConfig {
        token: Some("wrong-token".into()),
        batch_points: 10, // 4 requests, 2 in flight: each is retried whole
        ..config(influx, &bucket)
    });
    let write = h.spawn_write(&points);
    wait_until(Duration::from_secs(30), "the write to be retried", || {
        h.retries() >= 6
    });
    assert!(!write.is_finished(), "a refused write finished");
    h.trigger.fire();
    assert!(matches!(
        h.rt.block_on(write).unwrap(),
        Err(SinkError::Stopped)
    ));

    assert!(h.errors("client") >= 6);
    assert_eq!(
        h.errors("client"),
        h.retries(),
        "some client errors were rejections of lines (bisection), not retries"
    );
    for kind in ["server", "timeout", "connect"] {
        assert_eq!(h.errors(kind), 0, "{kind} errors");
    }
    assert_eq!(h.accepted_requests(), 0);
    assert_eq!(
        h.metrics
            .points_written
            .with_label_values(&["candle"])
            .get(),
        0
    );
    assert!(stored_candles(influx, &bucket, "ETH-USD").is_empty());
}

/// An operator's own API call with the operator token (POST or PATCH with a JSON body).
fn api_call(
    h: &Harness,
    influx: &Influxd,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let url = format!("{}{path}", influx.url);
    let token = flag(influx, "--influx-token");
    let (status, text) = h.rt.block_on(async {
        let resp = reqwest::Client::new()
            .request(method, url)
            .header("Authorization", format!("Token {token}"))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("influxd 2 answers");
        (
            resp.status().as_u16(),
            resp.text().await.unwrap_or_default(),
        )
    });
    assert!(status < 300, "{path}: {status} {text}");
    serde_json::from_str(&text).expect("JSON answer")
}

/// A refusal ends when the operator fixes the credentials: a revoked (inactive) token, which
/// InfluxDB answers with 403 `insufficient permissions for write: token is inactive`, makes
/// the write retry, and once the token is active again the same write completes with every
/// point stored and none rejected.
#[test]
fn a_revoked_token_is_retried_until_it_is_active_again() {
    let influx = Influxd::shared();
    let bucket = new_bucket(influx, "revoked");
    let buckets = influx.api_get(&format!(
        "/api/v2/buckets?{}",
        encode_query(&[("name", &bucket), ("org", &org(influx))])
    ));
    let bucket_id = buckets["buckets"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("bucket {bucket} not listed: {buckets}"))
        .to_owned();
    let resource = json!({"type": "buckets", "id": bucket_id, "orgID": influx.org_id});
    let setup = Harness::new(config(influx, &bucket));
    let auth = api_call(
        &setup,
        influx,
        reqwest::Method::POST,
        "/api/v2/authorizations",
        json!({
            "orgID": influx.org_id,
            "description": "candlepipe consumer (sink_v2 test)",
            "permissions": [
                {"action": "read", "resource": resource},
                {"action": "write", "resource": resource},
            ],
        }),
    );
    let token = auth["token"].as_str().expect("token").to_owned();
    let auth_path = format!("/api/v2/authorizations/{}", auth["id"].as_str().unwrap());
    let set_status = |status: &str| {
        let answer = api_call(
            &setup,
            influx,
            reqwest::Method::PATCH,
            &auth_path,
            json!({ "status": status }),
        );
        assert_eq!(answer["status"], status, "{answer}");
    };

    let h = Harness::new(InfluxConfig {
        token: Some(token.clone()),
        ..config(influx, &bucket)
    });
    h.prepare().expect("the token can read the bucket");
    set_status("inactive");
    let points: Vec<Point> = (0..30)
        .map(|i| candle("XRP-USD", i, Some(i as u64)))
        .collect();
    let write = h.spawn_write(&points);
    wait_until(Duration::from_secs(30), "the write to be retried", || {
        h.retries() >= 3
    });
    assert!(
        !write.is_finished(),
        "a write with a revoked token finished"
    );
    // What the real server answers to a write with a revoked token.
    let (status, body) = raw_write(influx, &bucket, &token, "probe value=1 1");
    assert_eq!(status, 403, "the revoked token: {body}");
    assert!(body.contains("token is inactive"), "{body}");

    set_status("active");
    wait_until(Duration::from_secs(30), "the write to complete", || {
        write.is_finished()
    });
    let outcome = h.rt.block_on(write).unwrap().expect("write");
    assert_eq!(outcome.written, points.len());
    assert_eq!(outcome.rejected, []);
    assert_eq!(h.errors("client"), h.retries());
    assert!(h.retries() >= 3);
    assert_stored_exactly(
        influx,
        &bucket,
        "XRP-USD",
        &points.iter().collect::<Vec<_>>(),
    );
}

/// A batch is cut into gzipped request bodies when it is encoded; a rejected request is
/// unpacked again to isolate its lines, which must keep their place in the batch. The
/// rejection is InfluxDB's own: `trades` was stored as a float in the same shard, so the two
/// candles that carry an integer `trades` conflict (plain bodies and a single gzipped one:
/// `a_field_type_conflict_rejects_exactly_the_conflicting_points` in sink_influx.rs).
#[test]
fn rejected_lines_in_later_requests_keep_their_batch_index() {
    let influx = Influxd::shared();
    let bucket = new_bucket(influx, "index");
    let h = Harness::new(InfluxConfig {
        batch_points: 10, // 40 points: 4 requests of 10
        ..config(influx, &bucket)
    });
    h.prepare().expect("prepare");
    let mut points: Vec<Point> = (0..40).map(|i| candle("SOL-USD", i, None)).collect();
    let conflicting = [23, 35]; // the 3rd and the 4th request
    for i in conflicting {
        points[i] = candle("SOL-USD", i, Some(1000 + i as u64));
    }
    let (status, body) = raw_write(
        influx,
        &bucket,
        &flag(influx, "--influx-token"),
        "candle,interval=1m,source=live,symbol=SPOILER trades=1.5 1700000000000",
    );
    assert_eq!(status, 204, "seeding the float field: {body}");

    let outcome =
        h.rt.block_on(h.sink.write(&points, &h.stop))
            .expect("write");
    assert_eq!(outcome.written, 38);
    let indices: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(indices, conflicting);
    for r in &outcome.rejected {
        let mut line = Vec::new();
        lineproto::encode(&points[r.index], &mut line).unwrap();
        assert_eq!(r.line.as_bytes(), line.trim_ascii_end());
        assert!(
            r.error.contains("partial write: field type conflict"),
            "{}",
            r.error
        );
    }
    let good: Vec<&Point> = points
        .iter()
        .enumerate()
        .filter(|(i, _)| !conflicting.contains(i))
        .map(|(_, p)| p)
        .collect();
    assert_stored_exactly(influx, &bucket, "SOL-USD", &good);

    // Bisection: each spoilt request of 10 lines is isolated in at most 1 + 2·⌈log2 10⌉
    // requests, rather than one per line; the two clean requests are accepted at once.
    let requests = h.accepted_requests() + h.errors("client");
    assert!(requests <= 2 + 2 * (1 + 2 * 4), "{requests} requests");
    assert_eq!(h.retries(), 0, "a rejected line is not retried");
}

/// A proxy in front of InfluxDB that holds the first two write requests until both have
/// arrived (so they were in flight together), answers the second one `503` once, and
/// passes everything else through. It counts what it saw.
#[derive(Default)]
struct FaultyProxy {
    upstream: String,
    arrived: std::sync::atomic::AtomicUsize,
    accepted: std::sync::atomic::AtomicUsize,
    /// Released once two requests are in flight at the same time.
    together: tokio::sync::Notify,
    in_flight: std::sync::atomic::AtomicUsize,
    overlapped: std::sync::atomic::AtomicBool,
}

impl FaultyProxy {
    async fn handle(
        self: Arc<Self>,
        method: axum::http::Method,
        uri: axum::http::Uri,
        headers: axum::http::HeaderMap,
        body: axum::body::Bytes,
    ) -> (axum::http::StatusCode, String) {
        use std::sync::atomic::Ordering::SeqCst;
        let n = if uri.path() == "/api/v2/write" {
            self.arrived.fetch_add(1, SeqCst) + 1
        } else {
            0 // prepare's lookups pass through uncounted
        };
        if n == 1 || n == 2 {
            // Wait for the other request, up to 5 s (then go on and let the test fail; less
            // than the sink's 10 s request timeout, so no retry of this one can arrive).
            let together = self.together.notified();
            tokio::pin!(together);
            together.as_mut().enable(); // registered before the count: no wake-up is missed
            if self.in_flight.fetch_add(1, SeqCst) == 1 {
                self.overlapped.store(true, SeqCst);
                self.together.notify_waiters();
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(5), together).await;
            }
            self.in_flight.fetch_sub(1, SeqCst);
        }
        if n == 2 {
            return (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "injected by the test".into(),
            );
        }
        let mut forward = reqwest::Client::new()
            .request(method, format!("{}{uri}", self.upstream))
            .body(body);
        for name in ["authorization", "content-encoding", "content-type"] {
            if let Some(value) = headers.get(name) {
                forward = forward.header(name, value.as_bytes());
            }
        }
        let answer = forward.send().await.expect("influxd 2 answers");
        let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
        if n > 0 && status.is_success() {
            self.accepted.fetch_add(1, SeqCst);
        }
        (status, answer.text().await.unwrap_or_default())
    }
}

/// `--influx-concurrency 2`: a batch's requests are in flight together, and when one of
/// them fails (a 503 between the sink and a real InfluxDB 2), only that one is sent again;
/// the write returns (so the batch loop commits) only once every request was accepted, and
/// every point is stored exactly once.
#[test]
fn one_failed_request_of_a_concurrent_batch_is_retried_alone() {
    let influx = Influxd::shared();
    let bucket = new_bucket(influx, "concurrent");
    let proxy = Arc::new(FaultyProxy {
        upstream: influx.url.clone(),
        ..FaultyProxy::default()
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
    listener.set_nonblocking(true).unwrap();
    let h = Harness::new(InfluxConfig {
        url: format!("http://{}", listener.local_addr().unwrap()),
        batch_points: 10, // 40 points: 4 requests of 10, 2 in flight
        concurrency: 2,
        ..config(influx, &bucket)
    });
    let serving = proxy.clone();
    let app = axum::Router::new().fallback(move |method, uri, headers, body| {
        serving.clone().handle(method, uri, headers, body)
    });
    h.rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        axum::serve(listener, app).await
    });
    h.prepare().expect("prepare through the proxy");
    let points: Vec<Point> = (0..40)
        .map(|i| candle("ADA-USD", i, Some(i as u64)))
        .collect();

    let outcome =
        h.rt.block_on(h.sink.write(&points, &h.stop))
            .expect("write");

    use std::sync::atomic::Ordering::SeqCst;
    assert!(
        proxy.overlapped.load(SeqCst),
        "the first two requests were never in flight together"
    );
    assert_eq!(outcome.written, 40);
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    // 4 requests, and the failed one once more; all 4 accepted before write returned.
    assert_eq!(proxy.arrived.load(SeqCst), 5);
    assert_eq!(proxy.accepted.load(SeqCst), 4);
    assert_eq!(h.accepted_requests(), 4);
    assert_eq!(h.retries(), 1);
    assert_eq!(h.errors("server"), 1);
    assert_stored_exactly(
        influx,
        &bucket,
        "ADA-USD",
        &points.iter().collect::<Vec<_>>(),
    );
}
