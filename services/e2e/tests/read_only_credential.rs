//! # Grafana's read-only InfluxDB credential, on the real InfluxDB 2
//!
//! Anonymous visitors may use Grafana, and Grafana's query API passes InfluxQL through to
//! InfluxDB. InfluxQL on InfluxDB 2 accepts `DELETE` and `DROP MEASUREMENT`, so the
//! datasource must not hold the admin token: it holds a v1 authorization (user name and
//! password) whose only permission is reading bucket `crypto`, created at InfluxDB's first
//! start by compose's `influxdb/initdb/` script and by `scripts/stack.sh`.
//!
//! This test creates the same credential on a bucket of its own
//! ([`Influxd::create_read_only_credential`], the API calls the CLI and stack.sh make), fills
//! the bucket with what the consumer writes (the consumer's own aggregator and line-protocol
//! encoder over 40 hours of real candles, `testdata/real-ohlcv/XRP-ETH.parquet`, shifted to
//! end now), and then sends, with the credential as the provisioned datasource sends it
//! (HTTP Basic, [`grafana::influx_datasource_auth`]):
//!
//! * every InfluxQL query of every dashboard, and the template variables' queries: each is
//!   answered without error, with rows, and exactly as the admin token's answer;
//! * `DROP MEASUREMENT` and `DELETE` for every measurement: each is refused, and afterwards
//!   every point is still there; a v1 write is refused too;
//! * a query of another bucket: refused.
//!
//! As a control, the admin token deletes a measurement from a scratch bucket: the refusals
//! are the credential's, not statements this InfluxDB cannot run.

use candlepipe_consumer::lineproto::encode_all;
use candlepipe_consumer::state::Aggregator;
use candlepipe_e2e::grafana::{self, CANDLE_INTERVAL_VAR};
use candlepipe_model::time::now_ms;
use candlepipe_model::Source;
use candlepipe_testkit::fixtures::read_candles;
use candlepipe_testkit::http_client::{encode_query, post_body};
use candlepipe_testkit::pipeline::count_points;
use candlepipe_testkit::{testdata, unique, Influxd, INFLUX_TOKEN};
use serde_json::Value;

/// The replayed pair (file stem, so the `symbol` tag).
const SYMBOL: &str = "XRP-ETH";
/// How much market history the bucket holds: enough for the 1h indicators (MACD's signal
/// needs 34 hourly closes) to have values in the dashboards' default 6 hours (the file holds
/// 41 hours).
const HISTORY_MINUTES: usize = 40 * 60;
/// The measurements the consumer writes.
const MEASUREMENTS: [&str; 2] = ["candle", "indicator"];
const MINUTE_MS: i64 = 60_000;

/// Writes the last [`HISTORY_MINUTES`] candles of the real-data file, shifted so the newest
/// closed minute is the one before now, through the consumer's aggregator (1m candles,
/// 5m/15m/1h rollups, indicators) and line-protocol encoder, into bucket `db`.
fn fill_like_the_consumer(influx: &Influxd, db: &str) {
    let mut candles = read_candles(&testdata(&format!("real-ohlcv/{SYMBOL}.parquet")));
    assert!(
        candles.len() >= HISTORY_MINUTES,
        "{SYMBOL}.parquet holds {} candles, the test needs {HISTORY_MINUTES}",
        candles.len()
    );
    candles.drain(..candles.len() - HISTORY_MINUTES);
    let last_closed = now_ms() / MINUTE_MS * MINUTE_MS - MINUTE_MS;
    let shift = last_closed - candles.last().expect("candles").open_time;
    // Whole hours, so the 1h rollup windows hold the same minutes as in the file.
    let shift = shift - shift.rem_euclid(3_600_000);
    let mut aggregator = Aggregator::new(HISTORY_MINUTES as i64 * MINUTE_MS);
    for batch in candles.chunks_mut(500) {
        for c in batch.iter_mut() {
            c.open_time += shift;
            aggregator.apply(c);
        }
        let mut points = Vec::new();
        aggregator.flush(&mut points);
        let encoded = encode_all(&points);
        assert!(encoded.unencodable.is_empty(), "every point encodes");
        influx.write_lines(db, encoded.body(0..encoded.lines.len()));
    }
}

/// Points per measurement, counted with the admin token.
fn point_counts(influx: &Influxd, db: &str) -> Vec<(String, usize)> {
    MEASUREMENTS
        .iter()
        .map(|m| {
            let field = if *m == "candle" { "close" } else { "rsi_14" };
            (m.to_string(), count_points(influx, db, m, field, ""))
        })
        .collect()
}

/// The InfluxQL error of a `/query` answer's first statement, if any.
fn statement_error(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["results"][0]["error"].as_str().map(str::to_owned)
}

/// Rows of a `/query` answer's first statement that hold a value besides `time` (with
/// `fill(null)` a series has a row per bucket, values or not).
fn row_count(body: &str) -> usize {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut n = 0;
    for s in v["results"][0]["series"].as_array().into_iter().flatten() {
        let time = s["columns"]
            .as_array()
            .and_then(|c| c.iter().position(|c| c == "time"));
        for row in s["values"].as_array().into_iter().flatten() {
            let mut cells = row.as_array().into_iter().flatten().enumerate();
            if cells.any(|(i, c)| Some(i) != time && !c.is_null()) {
                n += 1;
            }
        }
    }
    n
}

/// The dashboard's default range, `now-<N>h` to `now`, as Unix ms.
fn default_range_ms(d: &grafana::Dashboard) -> (i64, i64) {
    let from = d.json["time"]["from"].as_str().unwrap_or_default();
    let hours: i64 = from
        .strip_prefix("now-")
        .and_then(|h| h.strip_suffix('h'))
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("{}: time.from {from:?} is not now-<N>h", d.title));
    let to = now_ms();
    (to - hours * 3_600_000, to)
}

#[test]
fn the_read_only_credential_answers_every_dashboard_query_and_is_refused_deletes() {
    let influx = Influxd::shared();
    let db = unique("readonly").replace('-', "_");
    influx.create_db(&db);
    fill_like_the_consumer(influx, &db);

    // What the provisioned datasource sends: Basic credentials from its environment.
    let auth = grafana::influx_datasource_auth().unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "the datasource sends Basic ${{{}}}:${{{}}}",
        auth.user_env, auth.password_env
    );
    let credential =
        influx.create_read_only_credential(&db, &unique("grafana"), "read-only-test-password");
    let basic = credential.basic_auth_header();
    let admin = format!("Token {INFLUX_TOKEN}");

    // 1. Every dashboard query, and every variable query, as the admin sees it.
    let mut checked = 0;
    let mut failed = Vec::new();
    for d in grafana::load_dashboards().unwrap_or_else(|e| panic!("{e}")) {
        let variables = d.variables().unwrap_or_else(|e| panic!("{e}"));
        let Some(intervals) = variables
            .iter()
            .find(|v| v.name == CANDLE_INTERVAL_VAR)
            .map(|v| v.custom_values())
        else {
            continue; // no InfluxQL on this dashboard (checked below)
        };
        let (from_ms, to_ms) = default_range_ms(&d);
        let source = Source::Replay.as_str();
        let mut queries: Vec<(String, String)> = variables
            .iter()
            .filter(|v| v.kind == "query")
            .map(|v| {
                let q = grafana::expand_influxql(&v.query, SYMBOL, "", source, 0, 0);
                (format!("{} / variable {}", d.title, v.name), q)
            })
            .collect();
        for v in grafana::influxql_variants(&d, SYMBOL, &intervals, source, from_ms, to_ms)
            .unwrap_or_else(|e| panic!("{e}"))
        {
            queries.push((v.what, v.query));
        }
        for (what, q) in queries {
            checked += 1;
            let (status, body) = influx.query_with(&basic, &db, &q);
            let (_, expected) = influx.query_with(&admin, &db, &q);
            if status != 200 {
                failed.push(format!("{what}: HTTP {status} {body}"));
            } else if let Some(e) = statement_error(&body) {
                failed.push(format!("{what}: InfluxQL error {e:?}: {q}"));
            } else if row_count(&body) == 0 {
                failed.push(format!("{what}: no row with a value: {q}"));
            } else if body != expected {
                failed.push(format!(
                    "{what}: answers differently than the admin token: {q}"
                ));
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} InfluxQL queries found in the dashboards"
    );
    assert!(
        failed.is_empty(),
        "{} of {checked} dashboard queries failed with the read-only credential:\n  {}",
        failed.len(),
        failed.join("\n  ")
    );
    eprintln!("{checked} dashboard and variable queries answered with the read-only credential");

    // 2. Deleting: refused, and nothing is gone.
    let before = point_counts(influx, &db);
    assert!(
        before.iter().all(|(_, n)| *n > 0),
        "the bucket holds data: {before:?}"
    );
    let mut statements = Vec::new();
    for m in MEASUREMENTS {
        statements.push(format!("DROP MEASUREMENT \"{m}\""));
        statements.push(format!("DELETE FROM \"{m}\""));
        statements.push(format!("DELETE FROM \"{m}\" WHERE time < now()"));
    }
    statements.push("DELETE WHERE time > 0".to_owned());
    for stmt in &statements {
        let (status, body) = influx.query_with(&basic, &db, stmt);
        let error = statement_error(&body);
        eprintln!("refused: {stmt} -> HTTP {status}, error {error:?}");
        assert_eq!(status, 200, "{stmt}: {body}");
        assert_eq!(
            error.as_deref(),
            Some("insufficient permissions"),
            "{stmt} must be refused: {body}"
        );
    }
    let write_url = format!(
        "{}/write?{}",
        influx.url,
        encode_query(&[("db", db.as_str()), ("precision", "ms")])
    );
    let (status, body) = post_body(
        &write_url,
        "text/plain",
        b"candle,symbol=EVIL,interval=1m,source=replay close=1 1700000000000",
        &[("Authorization", basic.as_str())],
    )
    .expect("influxd answers a write");
    eprintln!("refused: v1 write -> HTTP {status} {body}");
    assert_eq!(status, 403, "a write with the read-only credential: {body}");
    let after = point_counts(influx, &db);
    eprintln!("points before the refused statements {before:?}, after {after:?}");
    assert_eq!(
        after, before,
        "every point is still there after the refused statements"
    );

    // 3. Another bucket: not readable with this credential.
    let other = unique("readonly_other").replace('-', "_");
    influx.create_db(&other);
    influx.write_lines(
        &other,
        b"candle,symbol=X,interval=1m close=1 1700000000000\n",
    );
    let (status, body) =
        influx.query_with(&basic, &other, "SELECT count(\"close\") FROM \"candle\"");
    eprintln!("another bucket: HTTP {status} {body}");
    assert!(
        status >= 400 || (statement_error(&body).is_some() && row_count(&body) == 0),
        "the credential reads only its own bucket, {other} answered {status}: {body}"
    );

    // Control: the admin token can delete in that scratch bucket, so the refusals above are
    // the credential's, not statements InfluxDB 2 does not run.
    let (status, body) = influx.query_with(&admin, &other, "DROP MEASUREMENT \"candle\"");
    assert_eq!(status, 200, "{body}");
    assert_eq!(statement_error(&body), None, "the admin may drop: {body}");
    assert_eq!(count_points(influx, &other, "candle", "close", ""), 0);
}
