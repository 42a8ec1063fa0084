//! The InfluxDB sink against both real servers it writes to: InfluxDB 2.7 through the v2 API
//! (`/api/v2/write?org=&bucket=`, `Authorization: Token`, the consumer's default and what
//! compose runs) and Debian's InfluxDB 1.6.7 through the v1 API (`/write?db=`).
//!
//! On both, with gzipped and plain request bodies: what is written is exactly what comes back
//! (values bit for bit, `trades` an integer and every other field a float), re-writing changes
//! nothing, hostile tag values stay inside their tag, a field type conflict rejects exactly
//! the conflicting points (InfluxDB 1.x answers 400, 2.x 422, both "partial write: field type
//! conflict"; the test checks each server's own answer), a stopped server only delays a write
//! (and a shutdown ends the waiting with `Stopped`), and a batch of ~100k points lands
//! completely. Each of these is instantiated once per server by `on_both_servers!`:
//! `<test>::influxdb1_v1_api` and `<test>::influxdb2_v2_api`.
//!
//! v1 only (InfluxDB 1.6): `prepare` creates the database once, and refuses a missing
//! retention policy. The v2-only behaviour (bucket lookup, a wrong or revoked token, rejected
//! lines of later gzipped requests) is in `sink_v2.rs`.
//!
//! Each test takes its own database (v1) or bucket (v2) on the binary's shared servers; the
//! restart test starts a private one. The sink runs on a tokio runtime owned by the test, so
//! the test thread is free to call the (blocking) testkit and to stop and restart the server
//! while a write is retrying.

use candlepipe_consumer::metrics::ConsumerMetrics;
use candlepipe_consumer::point::{CandlePoint, IndicatorPoint, Point};
use candlepipe_consumer::sink::{InfluxApi, InfluxConfig, InfluxSink, SinkError, WriteOutcome};
use candlepipe_model::{Interval, Source};
use candlepipe_runtime::shutdown::{self, Shutdown};
use candlepipe_testkit::http_client::{encode_query, post_body};
use candlepipe_testkit::{testdata, unique, wait_until, Influxd, Influxd1};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Row = Map<String, Value>;

/// Instantiates each `fn test(api: InfluxApi)` once per real server, as the tests
/// `test::influxdb1_v1_api` (InfluxDB 1.6, v1 API) and `test::influxdb2_v2_api` (InfluxDB 2.7,
/// v2 API), so a failure names the server in the test's name.
macro_rules! on_both_servers {
    ($($test:ident),+ $(,)?) => {$(
        mod $test {
            #[test]
            fn influxdb1_v1_api() {
                super::$test(super::InfluxApi::V1)
            }
            #[test]
            fn influxdb2_v2_api() {
                super::$test(super::InfluxApi::V2)
            }
        }
    )+};
}

on_both_servers!(
    real_candles_and_indicators_read_back_exactly,
    writing_the_same_points_again_changes_nothing,
    hostile_tag_values_stay_inside_their_tag,
    a_field_type_conflict_rejects_exactly_the_conflicting_points,
    a_write_waits_out_a_stopped_server_and_completes_after_restart,
    a_large_batch_is_written_completely,
);

/// One of the real servers, as the tests see it: where a database/bucket lives, how the sink
/// is configured for it, a raw line protocol write that bypasses the sink, and InfluxQL.
#[derive(Clone, Copy)]
enum Server<'a> {
    /// InfluxDB 1.6.7, written through the v1 API.
    V1(&'a Influxd1),
    /// InfluxDB 2.7, written through the v2 API; InfluxQL reaches a bucket as the database
    /// of the same name (its virtual DBRP mapping).
    V2(&'a Influxd),
}

impl fmt::Display for Server<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Server::V1(i) => write!(f, "InfluxDB 1.x (v1 API) at {}", i.url),
            Server::V2(i) => write!(
                f,
                "InfluxDB {} (v2 API) at {}",
                candlepipe_testkit::version("CANDLEPIPE_INFLUXDB2_VERSION"),
                i.url
            ),
        }
    }
}

impl Server<'static> {
    /// The test binary's shared server for `api`.
    fn shared(api: InfluxApi) -> Server<'static> {
        match api {
            InfluxApi::V1 => Server::V1(Influxd1::shared()),
            InfluxApi::V2 => Server::V2(Influxd::shared()),
        }
    }
}

impl Server<'_> {
    /// A database (v1) or bucket (v2) no other test uses. The bucket is created here, as an
    /// operator would (the v2 sink only checks that it exists); the v1 sink's `prepare`
    /// creates the database.
    fn new_db(self, prefix: &str) -> String {
        let db = unique(prefix);
        if let Server::V2(influx) = self {
            influx.create_db(&db);
        }
        db
    }

    /// The sink's configuration for database/bucket `db`: short backoff, and the consumer's
    /// other defaults (gzip on, 5,000 points per request, 2 in flight).
    fn config(self, db: &str) -> InfluxConfig {
        let base = InfluxConfig {
            max_backoff: Duration::from_millis(500),
            request_timeout: Duration::from_secs(10),
            ..InfluxConfig::default()
        };
        match self {
            Server::V1(influx) => InfluxConfig {
                url: influx.url.clone(),
                api: InfluxApi::V1,
                db: db.to_owned(),
                ..base
            },
            Server::V2(influx) => InfluxConfig {
                url: influx.url.clone(),
                api: InfluxApi::V2,
                org: Some(v2_flag(influx, "--influx-org")),
                bucket: db.to_owned(),
                token: Some(v2_flag(influx, "--influx-token")),
                ..base
            },
        }
    }

    /// Writes `lines` (line protocol, ms timestamps) straight to the server's write endpoint:
    /// (status, body).
    fn raw_write(self, db: &str, lines: &str) -> (u16, String) {
        let (url, auth) = match self {
            Server::V1(influx) => (
                format!(
                    "{}/write?{}",
                    influx.url,
                    encode_query(&[("db", db), ("precision", "ms")])
                ),
                None,
            ),
            Server::V2(influx) => (
                format!(
                    "{}/api/v2/write?{}",
                    influx.url,
                    encode_query(&[
                        ("org", &v2_flag(influx, "--influx-org")),
                        ("bucket", db),
                        ("precision", "ms"),
                    ])
                ),
                Some(format!("Token {}", v2_flag(influx, "--influx-token"))),
            ),
        };
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        post_body(
            &url,
            "text/plain; charset=utf-8",
            lines.as_bytes(),
            &headers,
        )
        .unwrap_or_else(|| panic!("{self} did not answer a write"))
    }

    /// The status and message a write with a field type conflict gets, as each server
    /// answers it (checked against the real servers by the conflict test).
    fn conflict_status(self) -> u16 {
        match self {
            // 1.x: 400 {"error":"partial write: field type conflict: ..."}
            Server::V1(_) => 400,
            // 2.x: 422 {"code":"unprocessable entity","message":"failure writing points to
            // database: partial write: field type conflict: ..."}
            Server::V2(_) => 422,
        }
    }

    /// InfluxQL (epoch ms); the JSON answer.
    fn query(self, db: &str, q: &str) -> Value {
        match self {
            Server::V1(influx) => influx.query(db, q),
            Server::V2(influx) => influx.query(db, q),
        }
    }

    /// InfluxQL rows of the first statement.
    fn rows(self, db: &str, q: &str) -> Vec<Row> {
        match self {
            Server::V1(influx) => influx.rows(db, q),
            Server::V2(influx) => influx.rows(db, q),
        }
    }
}

/// The value of one of the flags the testkit gives the consumer for InfluxDB 2
/// (`--influx-org`, `--influx-token`): the org and operator token it set the server up with.
fn v2_flag(influx: &Influxd, flag: &str) -> String {
    let args = influx.consumer_args("any");
    let at = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("testkit's consumer_args has no {flag}: {args:?}"));
    args[at + 1].clone()
}

/// A private server for a test that stops and restarts it; killed on drop.
enum PrivateServer {
    V1(Influxd1),
    V2(Influxd),
}

impl PrivateServer {
    fn start(api: InfluxApi) -> PrivateServer {
        match api {
            InfluxApi::V1 => PrivateServer::V1(Influxd1::start()),
            InfluxApi::V2 => PrivateServer::V2(Influxd::start()),
        }
    }

    fn server(&self) -> Server<'_> {
        match self {
            PrivateServer::V1(i) => Server::V1(i),
            PrivateServer::V2(i) => Server::V2(i),
        }
    }

    fn stop(&mut self) {
        match self {
            PrivateServer::V1(i) => i.stop(),
            PrivateServer::V2(i) => i.stop(),
        }
    }

    fn restart(&mut self) {
        match self {
            PrivateServer::V1(i) => i.restart(),
            PrivateServer::V2(i) => i.restart(),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A sink, its metrics and a shutdown that never fires unless the test fires it.
struct Harness {
    rt: tokio::runtime::Runtime,
    sink: InfluxSink,
    metrics: ConsumerMetrics,
    /// Kept alive: a shutdown whose every trigger is gone counts as fired.
    _trigger: shutdown::ShutdownTrigger,
    stop: Shutdown,
}

impl Harness {
    fn new(cfg: InfluxConfig) -> Harness {
        let metrics = ConsumerMetrics::new();
        let sink = InfluxSink::new(cfg, metrics.clone()).expect("valid config");
        let (trigger, stop) = shutdown::channel();
        Harness {
            rt: runtime(),
            sink,
            metrics,
            _trigger: trigger,
            stop,
        }
    }

    fn prepare(&self) {
        self.rt
            .block_on(self.sink.prepare(&self.stop))
            .expect("prepare");
    }

    fn write(&self, points: &[Point]) -> WriteOutcome {
        self.rt
            .block_on(self.sink.write(points, &self.stop))
            .expect("write")
    }

    fn retries(&self) -> u64 {
        self.metrics.write_retries.get()
    }

    fn errors(&self, kind: &str) -> u64 {
        self.metrics.write_errors.with_label_values(&[kind]).get()
    }

    fn points_written(&self, measurement: &str) -> u64 {
        self.metrics
            .points_written
            .with_label_values(&[measurement])
            .get()
    }
}

/// The real XRP-ETH 1m candles as candle points, with the optional fields filled from them
/// (quote volume, an integer trade count, vwap) so that every field type travels, plus one
/// indicator point per candle carrying its log return (none for the first: an empty point).
fn real_points() -> (Vec<CandlePoint>, Vec<IndicatorPoint>) {
    let candles =
        candlepipe_testkit::fixtures::read_candles(&testdata("real-ohlcv/XRP-ETH.parquet"));
    assert!(
        candles.len() > 2000,
        "fixture has {} candles",
        candles.len()
    );
    let symbol: Arc<str> = Arc::from(candles[0].symbol.as_str());
    let mut points = Vec::new();
    let mut indicators = Vec::new();
    let mut previous_close: Option<f64> = None;
    for (i, c) in candles.iter().enumerate() {
        points.push(CandlePoint {
            symbol: symbol.clone(),
            source: Source::Replay,
            interval: Interval::M1,
            time: c.open_time,
            open: c.open,
            high: c.high,
            low: c.low,
            close: c.close,
            volume: c.volume,
            quote_volume: Some(c.close * c.volume),
            trades: Some(i as u64 * 7 + 1),
            taker_buy_base: Some(c.volume / 3.0),
            taker_buy_quote: None,
            vwap: (c.volume > 0.0).then(|| (c.high + c.low + c.close) / 3.0),
        });
        indicators.push(IndicatorPoint {
            symbol: symbol.clone(),
            source: Some(Source::Replay),
            time: c.open_time,
            log_return: previous_close.map(|p| (c.close / p).ln()),
            ..IndicatorPoint::default()
        });
        previous_close = Some(c.close);
    }
    (points, indicators)
}

fn all_points(candles: &[CandlePoint], indicators: &[IndicatorPoint]) -> Vec<Point> {
    candles
        .iter()
        .cloned()
        .map(Point::Candle)
        .chain(indicators.iter().cloned().map(Point::Indicator))
        .collect()
}

fn rows_by_time(server: Server, db: &str, q: &str) -> BTreeMap<i64, Row> {
    let rows = server.rows(db, q);
    let n = rows.len();
    let by_time: BTreeMap<i64, Row> = rows
        .into_iter()
        .map(|r| (r["time"].as_i64().expect("epoch ms"), r))
        .collect();
    assert_eq!(
        by_time.len(),
        n,
        "{server}: two rows share a timestamp in {q}"
    );
    by_time
}

/// Asserts a stored float field is bit-for-bit the written value (absent when `None`).
fn assert_float(row: &Row, field: &str, want: Option<f64>) {
    let got = row.get(field).filter(|v| !v.is_null());
    match (got, want) {
        (None, None) => {}
        (Some(v), Some(w)) => {
            let v = v
                .as_f64()
                .unwrap_or_else(|| panic!("{field} = {v} is not a number"));
            assert_eq!(
                v.to_bits(),
                w.to_bits(),
                "{field}: stored {v:e}, wrote {w:e}"
            );
        }
        (got, want) => panic!("{field}: stored {got:?}, wrote {want:?}"),
    }
}

fn assert_candle_row(row: &Row, p: &CandlePoint) {
    assert_eq!(row["symbol"], p.symbol.as_ref());
    assert_eq!(row["interval"], p.interval.as_str());
    assert_eq!(row["source"], p.source.as_str());
    for (field, value) in [
        ("open", Some(p.open)),
        ("high", Some(p.high)),
        ("low", Some(p.low)),
        ("close", Some(p.close)),
        ("volume", Some(p.volume)),
        ("quote_volume", p.quote_volume),
        ("taker_buy_base", p.taker_buy_base),
        ("taker_buy_quote", p.taker_buy_quote),
        ("vwap", p.vwap),
    ] {
        assert_float(row, field, value);
    }
    assert_eq!(row["trades"].as_i64(), p.trades.map(|t| t as i64));
}

/// `SHOW FIELD KEYS`: field name → InfluxDB type.
fn field_types(server: Server, db: &str, measurement: &str) -> BTreeMap<String, String> {
    server
        .rows(db, &format!("SHOW FIELD KEYS FROM \"{measurement}\""))
        .into_iter()
        .map(|r| {
            (
                r["fieldKey"].as_str().unwrap().to_owned(),
                r["fieldType"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn count(server: Server, db: &str, q: &str) -> i64 {
    server
        .rows(db, q)
        .first()
        .map(|r| r["count"].as_i64().unwrap())
        .unwrap_or(0)
}

/// One column of every row, as strings (`SHOW ...` answers).
fn column(server: Server, db: &str, q: &str, col: &str) -> BTreeSet<String> {
    server
        .rows(db, q)
        .into_iter()
        .map(|r| {
            r[col]
                .as_str()
                .unwrap_or_else(|| panic!("{server}: {q} row without {col}: {r:?}"))
                .to_owned()
        })
        .collect()
}

fn real_candles_and_indicators_read_back_exactly(api: InfluxApi) {
    let server = Server::shared(api);
    let db = server.new_db("roundtrip");
    let h = Harness::new(InfluxConfig {
        batch_points: 700, // several gzipped requests, the last one partial
        ..server.config(&db)
    });
    h.prepare();
    let (candles, indicators) = real_points();
    let points = all_points(&candles, &indicators);
    let outcome = h.write(&points);
    assert_eq!(outcome.rejected, [], "{server}");
    assert_eq!(outcome.empty, 1, "the first indicator point has no field");
    assert_eq!(outcome.written, points.len() - 1, "{server}");

    let stored = rows_by_time(server, &db, "SELECT * FROM candle");
    assert_eq!(stored.len(), candles.len(), "{server}");
    for p in &candles {
        assert_candle_row(&stored[&p.time], p);
    }
    let stored = rows_by_time(server, &db, "SELECT * FROM indicator");
    assert_eq!(stored.len(), indicators.len() - 1, "{server}");
    for p in &indicators[1..] {
        let row = &stored[&p.time];
        assert_eq!(row["symbol"], p.symbol.as_ref());
        assert_eq!(row["interval"], "1m");
        assert_eq!(row["source"], "replay");
        assert_float(row, "log_return", p.log_return);
    }

    let types = field_types(server, &db, "candle");
    assert_eq!(types.len(), 9, "{server}: {types:?}"); // every candle field but taker_buy_quote
    assert_eq!(types["trades"], "integer", "{server}");
    assert!(
        types.iter().all(|(k, t)| k == "trades" || t == "float"),
        "{server}: {types:?}"
    );
    let types = field_types(server, &db, "indicator");
    assert_eq!(
        types,
        BTreeMap::from([("log_return".to_owned(), "float".to_owned())]),
        "{server}"
    );
    assert_eq!(h.points_written("candle"), candles.len() as u64);
    assert_eq!(h.points_written("indicator"), indicators.len() as u64 - 1);
    assert_eq!(h.retries(), 0, "{server}");
}

fn writing_the_same_points_again_changes_nothing(api: InfluxApi) {
    let server = Server::shared(api);
    let db = server.new_db("idempotent");
    let h = Harness::new(server.config(&db));
    h.prepare();
    let (candles, indicators) = real_points();
    let points = all_points(&candles[..600], &indicators[..600]);
    let q = "SELECT * FROM candle, indicator GROUP BY *";

    let first = h.write(&points);
    let after_first = server.query(&db, q);
    let second = h.write(&points);
    let after_second = server.query(&db, q);

    assert_eq!(first, second, "{server}");
    assert_eq!(first.written, points.len() - 1, "{server}");
    assert_eq!(after_first, after_second, "{server}");
    assert_eq!(
        count(server, &db, "SELECT count(close) FROM candle"),
        600,
        "{server}"
    );
    assert_eq!(
        count(server, &db, "SELECT count(log_return) FROM indicator"),
        599,
        "{server}"
    );
}

fn hostile_tag_values_stay_inside_their_tag(api: InfluxApi) {
    let server = Server::shared(api);
    let db = server.new_db("escaping");
    let h = Harness::new(server.config(&db));
    h.prepare();
    let representable = [
        "A B",
        "A,B",
        "A=B",
        "A\"B",
        r"A\B",
        r#"x y,z=w\v"q"#,
        "candle,symbol=evil open=1",
        "ünïcødé-€",
        "'single'",
    ];
    // Refused by the encoder, before any server sees them.
    let refused = [
        "X\nhack,symbol=Y open=1 1",
        "tab\tbed",
        r"trailing\",
        r"a\,b",
    ];
    let (base, _) = real_points();
    let points: Vec<Point> = representable
        .iter()
        .chain(refused.iter())
        .enumerate()
        .map(|(i, symbol)| {
            Point::Candle(CandlePoint {
                symbol: Arc::from(*symbol),
                open: i as f64,
                ..base[0].clone()
            })
        })
        .collect();
    let outcome = h.write(&points);
    assert_eq!(outcome.written, representable.len(), "{server}");
    let rejected: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(
        rejected,
        (representable.len()..points.len()).collect::<Vec<_>>()
    );
    assert!(outcome
        .rejected
        .iter()
        .all(|r| r.error.contains("tag symbol")));

    // One series per symbol, in one measurement with the schema's three tag keys; every
    // symbol is one value of the symbol tag (none leaked into another tag, measurement or
    // point); each point kept its own value.
    let series = server.rows(&db, "SHOW SERIES");
    assert_eq!(series.len(), representable.len(), "{server}: {series:?}");
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        column(server, &db, "SHOW MEASUREMENTS", "name"),
        set(&["candle"]),
        "{server}"
    );
    assert_eq!(
        column(server, &db, "SHOW TAG KEYS FROM candle", "tagKey"),
        set(&["interval", "source", "symbol"]),
        "{server}"
    );
    assert_eq!(
        column(
            server,
            &db,
            r#"SHOW TAG VALUES FROM candle WITH KEY = "symbol""#,
            "value"
        ),
        set(&representable),
        "{server}"
    );
    assert_eq!(
        column(
            server,
            &db,
            r#"SHOW TAG VALUES FROM candle WITH KEY IN ("interval", "source")"#,
            "value"
        ),
        set(&["1m", "replay"]),
        "{server}"
    );
    let mut stored: Vec<(String, f64)> = server
        .rows(&db, "SELECT open, symbol FROM candle")
        .into_iter()
        .map(|r| {
            (
                r["symbol"].as_str().unwrap().to_owned(),
                r["open"].as_f64().unwrap(),
            )
        })
        .collect();
    stored.sort_by(|a, b| a.0.cmp(&b.0));
    let mut expected: Vec<(String, f64)> = representable
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), i as f64))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(stored, expected, "{server}");
}

fn a_field_type_conflict_rejects_exactly_the_conflicting_points(api: InfluxApi) {
    // One gzipped request, and many plain ones: a rejected request is unpacked from its
    // body again, and its lines must keep their index in the batch.
    for (gzip, batch_points) in [(true, 5000), (false, 64)] {
        field_type_conflict(Server::shared(api), gzip, batch_points);
    }
}

fn field_type_conflict(server: Server, gzip: bool, batch_points: usize) {
    let case = format!("{server}, gzip {gzip}, {batch_points} points per request");
    let db = server.new_db("conflict");
    let h = Harness::new(InfluxConfig {
        gzip,
        batch_points,
        ..server.config(&db)
    });
    h.prepare();
    let (candles, _) = real_points();
    // Both servers fix a field's type per shard (7 days for an infinite retention). The
    // first 400 candles fall in one shard, where `trades` is made a float below; the other
    // 400 are the same candles 30 days later, in a later shard, and unaffected.
    let first_week = &candles[..400];
    let later: Vec<CandlePoint> = candles[..400]
        .iter()
        .map(|c| CandlePoint {
            time: c.time + 30 * 86_400_000,
            ..c.clone()
        })
        .collect();
    let spoiler = format!(
        "candle,interval=1m,source=replay,symbol=SPOILER trades=1.5 {}",
        first_week[0].time
    );
    let (status, body) = server.raw_write(&db, &spoiler);
    assert_eq!(status, 204, "{case}: seeding the float field: {body}");
    // The server's own answer to a conflicting line, which the sink must read as "these
    // lines", not "this request" or "this server".
    let conflicting_line = format!(
        "candle,interval=1m,source=replay,symbol=SPOILER trades=2i {}",
        first_week[1].time
    );
    let (status, body) = server.raw_write(&db, &conflicting_line);
    assert_eq!(status, server.conflict_status(), "{case}: {body}");
    assert!(
        body.contains("partial write: field type conflict"),
        "{case}: {body}"
    );

    // In the first week, every third candle has no trade count and so cannot conflict.
    let points: Vec<Point> = first_week
        .iter()
        .enumerate()
        .map(|(i, c)| CandlePoint {
            trades: if i % 3 == 0 { None } else { c.trades },
            ..c.clone()
        })
        .chain(later.iter().cloned())
        .map(Point::Candle)
        .collect();
    let outcome = h.write(&points);

    let conflicting: Vec<usize> = (0..400).filter(|i| i % 3 != 0).collect();
    let rejected: Vec<usize> = outcome.rejected.iter().map(|r| r.index).collect();
    assert_eq!(rejected, conflicting, "{case}");
    assert!(
        outcome
            .rejected
            .iter()
            .all(|r| r.error.contains("field type conflict") && r.line.contains("trades=")),
        "{case}: {:?}",
        &outcome.rejected[..1]
    );
    assert_eq!(outcome.written, points.len() - conflicting.len(), "{case}");

    let stored = rows_by_time(server, &db, "SELECT * FROM candle WHERE symbol = 'XRP-ETH'");
    assert_eq!(stored.len(), outcome.written, "{case}");
    for (i, p) in points.iter().enumerate() {
        let Point::Candle(p) = p else { unreachable!() };
        match stored.get(&p.time) {
            Some(row) if !conflicting.contains(&i) => {
                assert_float(row, "open", Some(p.open));
                assert_float(row, "close", Some(p.close));
            }
            None if conflicting.contains(&i) => {}
            other => panic!("{case}: point {i} stored as {other:?}"),
        }
    }
    assert!(h.errors("client") > 0, "{case}");
    assert_eq!(h.retries(), 0, "{case}: a rejected line is not retried");
}

fn a_write_waits_out_a_stopped_server_and_completes_after_restart(api: InfluxApi) {
    let mut influx = PrivateServer::start(api);
    let name = influx.server().to_string();
    let db = influx.server().new_db("restart");
    let h = Harness::new(influx.server().config(&db));
    h.prepare();
    let (candles, indicators) = real_points();
    let points = all_points(&candles[..1000], &indicators[..1000]);

    influx.stop();
    assert!(!h.rt.block_on(h.sink.ping()), "{name} still answers");

    // While InfluxDB is down, a shutdown ends the retrying with `Stopped`.
    let (trigger, stop) = shutdown::channel();
    let sink = h.sink.clone();
    let few = points[..10].to_vec();
    let stopped = h.rt.spawn(async move { sink.write(&few, &stop).await });
    wait_until(Duration::from_secs(30), "a failed write attempt", || {
        h.retries() >= 1
    });
    trigger.fire();
    assert!(
        matches!(h.rt.block_on(stopped).unwrap(), Err(SinkError::Stopped)),
        "{name}"
    );

    // Otherwise it keeps retrying until the server is back.
    let sink = h.sink.clone();
    let stop = h.stop.clone();
    let owned = points.clone();
    let write = h.rt.spawn(async move { sink.write(&owned, &stop).await });
    let retries = h.retries();
    wait_until(Duration::from_secs(30), "the write to retry", || {
        h.retries() >= retries + 3
    });
    assert!(
        !write.is_finished(),
        "a write finished while {name} was down"
    );
    influx.restart();
    wait_until(Duration::from_secs(60), "the write to complete", || {
        write.is_finished()
    });
    let outcome = h.rt.block_on(write).unwrap().expect("write after restart");
    assert_eq!(outcome.written, points.len() - 1, "{name}");
    assert_eq!(outcome.rejected, [], "{name}");
    let server = influx.server();
    assert_eq!(
        count(server, &db, "SELECT count(close) FROM candle"),
        1000,
        "{name}"
    );
    assert_eq!(
        count(server, &db, "SELECT count(log_return) FROM indicator"),
        999,
        "{name}"
    );
    assert!(h.errors("connect") >= 3, "{name}");
    assert_eq!(h.errors("client"), 0, "{name}");
}

/// ~100k candle points in one call, the batch loop's worst case: all of them must land.
/// Prints the throughput (no assertion on time).
fn a_large_batch_is_written_completely(api: InfluxApi) {
    let server = Server::shared(api);
    let db = server.new_db("bulk");
    let h = Harness::new(server.config(&db));
    h.prepare();
    let (candles, _) = real_points();
    let symbols: Vec<Arc<str>> = (0..40).map(|i| Arc::from(format!("SYM{i}-ETH"))).collect();
    let points: Vec<Point> = symbols
        .iter()
        .flat_map(|s| {
            candles.iter().map(|c| {
                Point::Candle(CandlePoint {
                    symbol: s.clone(),
                    ..c.clone()
                })
            })
        })
        .collect();
    assert!(points.len() >= 95_000, "{}", points.len());
    let started = Instant::now();
    let outcome = h.write(&points);
    let elapsed = started.elapsed();
    assert_eq!(outcome.written, points.len(), "{server}");
    eprintln!(
        "{server}: wrote {} candle points in {elapsed:?}: {:.0} points/s (batch {} points, gzip {})",
        points.len(),
        points.len() as f64 / elapsed.as_secs_f64(),
        h.sink.config().batch_points,
        h.sink.config().gzip
    );
    assert_eq!(
        count(server, &db, "SELECT count(close) FROM candle"),
        points.len() as i64,
        "{server}"
    );
    assert_eq!(
        column(
            server,
            &db,
            r#"SHOW TAG VALUES FROM candle WITH KEY = "symbol""#,
            "value"
        )
        .len(),
        symbols.len(),
        "{server}"
    );
}

// --- InfluxDB 1.x only: the v1 sink manages its database and checks the retention policy.

fn databases(influxd: &Influxd1) -> BTreeSet<String> {
    influxd
        .rows("", "SHOW DATABASES")
        .into_iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn v1_prepare_creates_the_database_once() {
    let influxd = Influxd1::shared();
    let db = unique("prepare");
    assert!(!databases(influxd).contains(&db));
    let h = Harness::new(Server::V1(influxd).config(&db));
    h.prepare();
    assert!(databases(influxd).contains(&db));
    // Idempotent: a restarted consumer prepares again.
    h.prepare();
    assert!(databases(influxd).contains(&db));
    assert!(h.rt.block_on(h.sink.ping()));
}

#[test]
fn v1_prepare_refuses_a_missing_retention_policy() {
    let influxd = Influxd1::shared();
    let db = unique("rp");
    let h = Harness::new(InfluxConfig {
        retention_policy: Some("nonexistent".into()),
        ..Server::V1(influxd).config(&db)
    });
    match h.rt.block_on(h.sink.prepare(&h.stop)) {
        Err(SinkError::Fatal(why)) => assert!(why.contains("nonexistent"), "{why}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}
