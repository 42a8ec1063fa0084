//! # Every dashboard query, run against a live pipeline
//!
//! `dashboards_static.rs` proves the names in the dashboards exist; this test proves the
//! panels *show something*. It runs the real pipeline the way the stack does — the `producer`
//! binary replaying `testdata/real-ohlcv/XRP-ETH.parquet` into Apache Kafka, the `consumer`
//! binary writing candles, rollups and indicators into InfluxDB 2, and Prometheus scraping both with
//! the repository's `prometheus/rules.yml` — and then sends every panel query of every
//! provisioned dashboard to those servers, exactly as Grafana would send it:
//!
//! * InfluxQL: the template variables are resolved the way Grafana resolves them — `symbol`
//!   and `source` by running the variables' own queries against InfluxDB, `candle_interval`
//!   from its custom values (a query that reads `$candle_interval` runs once per value) — and
//!   the macros
//!   (`$timeFilter`, `$__interval`) for the dashboard's default time range (`now-6h` to
//!   `now`). Each query must return at least one row with a non-null value. Queries go to
//!   InfluxDB 2's `/query` as the provisioned datasource sends them (POST, HTTP Basic with a
//!   read-only v1 credential, the bucket as `db` through the virtual DBRP mapping). The
//!   datasource reads bucket `crypto` with the credential compose's init script creates;
//!   here the consumer writes a bucket of its own and the test creates the same kind of
//!   credential on it (`Influxd::create_read_only_credential`), so a panel that needed more
//!   than read access to its bucket would fail here.
//! * PromQL: the macros expanded ([`expand_promql`]), sent as instant queries. Each must
//!   return at least one series. A `rate()` needs two scrapes, so the queries are retried
//!   until they answer or a deadline passes; the scrape and rule intervals are 1 s instead of
//!   the stack's 5 s to keep that short. A quantile recording rule is NaN in a minute without
//!   observations: a returned series still counts (Grafana draws the gap).
//!
//! The producer replays with `--rebase --backfill 40h --speed max`: forty hours of candles
//! are stamped into the last forty hours at once, so the dashboards' default range (6 hours)
//! holds data and every interval's indicators, the 1h MACD signal included, have values,
//! and then it keeps ticking one candle a minute, so the producer's gauges stay up and the
//! flow rates (candles sent, messages consumed, points written) turn positive, which the
//! test waits for before running the panels.
//!
//! All failures are collected and reported together, one line per panel query, so one run
//! shows every empty panel rather than the first.

use candlepipe_e2e::grafana::{
    self, expand_influxql, expand_promql, template_refs, Dashboard, ExpandedInfluxQL, PanelQuery,
    TemplateVariable, CANDLE_INTERVAL_VAR, INFLUXDB_UID,
};
use candlepipe_model::time::{now_ms, parse_duration};
use candlepipe_model::{Interval, Source};
use candlepipe_testkit::pipeline::{count_points, ConsumerRun, ServiceProcess};
use candlepipe_testkit::{testdata, unique, wait_until, workspace_bin, Influxd, Prometheus};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use yaml_rust2::YamlLoader;

/// The replayed pair: the file stem, and so the `symbol` tag.
const SYMBOL: &str = "XRP-ETH";

/// How much market time the producer replays at once, stamped to end now: enough for the 1h
/// indicators (MACD's signal needs 34 hourly closes) to have values in the dashboards'
/// default 6 hours. The replayed file holds 41 hours.
const BACKFILL: &str = "40h";

/// How long the pipeline may take to fill InfluxDB and Prometheus. The machine running the
/// tests is small and busy (debug binaries, parallel builds): generous on purpose.
const FILL_TIMEOUT: Duration = Duration::from_secs(600);

/// How long all PromQL panel queries together may take to return a series (a `rate()` or a
/// recording rule over one needs two scrapes and a rule evaluation).
const PROMQL_TIMEOUT: Duration = Duration::from_secs(300);

// ------------------------------------------------------------------------------------------
// The running pipeline
// ------------------------------------------------------------------------------------------

/// Producer and consumer binaries on their own topic and database; both stop on drop.
struct Pipeline {
    run: ConsumerRun,
    producer: ServiceProcess,
    consumer: ServiceProcess,
    /// The producer's `--dataset` folder (a copy of one real-data file).
    _dataset: tempfile::TempDir,
}

impl Pipeline {
    fn start(influx: &Influxd) -> Pipeline {
        let run = ConsumerRun::new("dashlive", 3);
        let dataset = tempfile::tempdir().expect("dataset dir");
        let file = format!("{SYMBOL}.parquet");
        std::fs::copy(
            testdata(&format!("real-ohlcv/{file}")),
            dataset.path().join(&file),
        )
        .unwrap_or_else(|e| panic!("copying testdata/real-ohlcv/{file}: {e}"));
        let consumer = run.consumer(influx, &[]);
        let args: Vec<String> = [
            "--mode",
            "replay",
            "--rebase",
            "--backfill",
            BACKFILL,
            "--speed",
            "max",
            "--brokers",
            &run.brokers,
            "--topic",
            &run.topic,
            "--dataset",
            &dataset.path().display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let producer = ServiceProcess::start(&workspace_bin("producer"), &args);
        Pipeline {
            run,
            producer,
            consumer,
            _dataset: dataset,
        }
    }
}

/// Waits until the consumer has written what the market dashboard reads: candles and
/// indicators (RSI and MACD's signal, the last to fill) at every interval.
fn wait_for_market_data(influx: &Influxd, pipeline: &mut Pipeline) {
    let db = pipeline.run.db.clone();
    wait_until(
        FILL_TIMEOUT,
        "candles and indicators of every interval in InfluxDB",
        || {
            pipeline.producer.assert_running();
            pipeline.consumer.assert_running();
            Interval::ALL.iter().all(|i| {
                let filter = format!("\"interval\" = '{}'", i.as_str());
                count_points(influx, &db, "candle", "close", &filter) > 0
                    && count_points(influx, &db, "indicator", "rsi_14", &filter) > 0
                    && count_points(influx, &db, "indicator", "macd_signal", &filter) > 0
            })
        },
    );
}

// ------------------------------------------------------------------------------------------
// Prometheus, scraping the two binaries under the stack's job names
// ------------------------------------------------------------------------------------------

/// The job names of `prometheus/prometheus.yml`, which the rules and dashboards select on.
fn stack_job_names() -> Vec<String> {
    let path = grafana::repo_root().join("prometheus/prometheus.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let docs = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    docs[0]["scrape_configs"]
        .as_vec()
        .expect("prometheus.yml: scrape_configs list")
        .iter()
        .map(|job| {
            job["job_name"]
                .as_str()
                .expect("every scrape config has a job_name")
                .to_owned()
        })
        .collect()
}

/// Prometheus with the stack's jobs pointed at the loopback ports, scraping and evaluating
/// every second, loading the repository's `rules.yml`.
///
/// Prometheus picks its own port when it starts, so its self-scrape target is not known when
/// the config is written: that job discovers its target from a file (`file_sd_configs`) the
/// test writes once the port is known.
struct ScrapingPrometheus {
    server: Prometheus,
    _sd_dir: tempfile::TempDir,
}

impl ScrapingPrometheus {
    fn start(pipeline: &Pipeline, influx: &Influxd) -> ScrapingPrometheus {
        let sd_dir = tempfile::tempdir().expect("file_sd dir");
        let self_targets = sd_dir.path().join("prometheus-self.json");
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - rules.yml\nscrape_configs:\n",
        );
        for job in stack_job_names() {
            let target = match job.as_str() {
                "producer" => pipeline.producer.http_port,
                "consumer" => pipeline.consumer.http_port,
                "influxdb" => influx
                    .url
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
                    .expect("InfluxDB's URL ends with its port"),
                "prometheus" => {
                    config.push_str(&format!(
                        "  - job_name: prometheus\n    file_sd_configs:\n      - files: [\"{}\"]\n        refresh_interval: 1s\n",
                        self_targets.display()
                    ));
                    continue;
                }
                other => panic!(
                    "prometheus.yml has a job {other:?} this test does not know how to \
                     reach: add its loopback target here"
                ),
            };
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: [\"127.0.0.1:{target}\"]\n"
            ));
        }
        let rules_path = grafana::repo_root().join("prometheus/rules.yml");
        let rules = std::fs::read_to_string(&rules_path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", rules_path.display()));
        let server = Prometheus::start(&config, &[("rules.yml", &rules)]);
        let port = server
            .url
            .rsplit(':')
            .next()
            .expect("prometheus url has a port");
        write_atomically(
            &self_targets,
            &format!("[{{\"targets\": [\"127.0.0.1:{port}\"]}}]"),
        );
        ScrapingPrometheus {
            server,
            _sd_dir: sd_dir,
        }
    }

    /// Waits until every job is scraped successfully and the recording rules over the
    /// pipeline's counters have values.
    fn wait_for_scrapes(&self) {
        let jobs: BTreeSet<String> = stack_job_names().into_iter().collect();
        wait_until(FILL_TIMEOUT, "up == 1 for every stack job", || {
            let up: BTreeSet<String> = series(&self.server.query("up == 1"))
                .iter()
                .filter_map(|s| s["metric"]["job"].as_str().map(str::to_owned))
                .collect();
            up == jobs
        });
        // A positive rate, not merely a series: the counters moved between two scrapes and
        // the rules turned that into flow (after the backfill, one candle a minute).
        for record in [
            "candlepipe:producer_candles_sent:rate1m",
            "candlepipe:consumer_messages:rate1m",
            "candlepipe:influx_points_written:rate1m",
        ] {
            wait_until(
                FILL_TIMEOUT,
                &format!("recording rule {record} to be positive"),
                || !series(&self.server.query(&format!("{record} > 0"))).is_empty(),
            );
        }
    }
}

/// Writes `text` to `path` through a rename, so a watcher never reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write file_sd targets");
    std::fs::rename(&tmp, path).expect("rename file_sd targets");
}

/// The series of a Prometheus `data.result` (an empty list for anything else).
fn series(result: &Value) -> Vec<Value> {
    result.as_array().cloned().unwrap_or_default()
}

// ------------------------------------------------------------------------------------------
// Resolving template variables and the time range, as Grafana does
// ------------------------------------------------------------------------------------------

/// The dashboard's template variable `name`; a dashboard that runs InfluxQL must define it.
fn variable(d: &Dashboard, name: &str) -> TemplateVariable {
    d.variables()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| {
            panic!(
                "{}: runs InfluxQL but has no `{name}` template variable",
                d.title
            )
        })
}

/// The values an InfluxDB `query` variable offers: its `SHOW TAG VALUES` run against the
/// pipeline's database (after expanding the variables it depends on).
fn query_variable_values(ds: &Datasource, d: &Dashboard, v: &TemplateVariable) -> Vec<String> {
    assert_eq!(
        v.kind, "query",
        "{}: variable {} is a query",
        d.title, v.name
    );
    assert_eq!(
        v.datasource_uid.as_deref(),
        Some(INFLUXDB_UID),
        "{}: variable {} asks InfluxDB",
        d.title,
        v.name
    );
    // Only `$symbol` may appear in a variable query; the other values are placeholders.
    let q = expand_influxql(&v.query, SYMBOL, "", "", 0, 0);
    assert!(
        template_refs(&q).is_empty(),
        "{}: variable {} still has references after expansion: {q:?}",
        d.title,
        v.name
    );
    let answer = ds.query(&q);
    let mut values = Vec::new();
    for series in answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let col = series["columns"]
            .as_array()
            .and_then(|cols| cols.iter().position(|c| c == "value"))
            .expect("SHOW TAG VALUES answers a value column");
        for row in series["values"].as_array().into_iter().flatten() {
            values.extend(row[col].as_str().map(str::to_owned));
        }
    }
    values
}

/// The dashboard's default time range as Unix ms, `now-<duration>` to `now`.
fn time_range_ms(d: &Dashboard) -> (i64, i64) {
    let from = d.json["time"]["from"].as_str().unwrap_or_default();
    assert_eq!(
        d.json["time"]["to"].as_str(),
        Some("now"),
        "{}: the default range ends now",
        d.title
    );
    let back = from
        .strip_prefix("now-")
        .and_then(|s| parse_duration(s).ok())
        .unwrap_or_else(|| panic!("{}: time.from {from:?} is not now-<duration>", d.title));
    let to = now_ms();
    (to - back.as_millis() as i64, to)
}

// ------------------------------------------------------------------------------------------
// Running the queries
// ------------------------------------------------------------------------------------------

/// What each query returned (for the log) and what failed (for the assertion).
#[derive(Default)]
struct Outcome {
    ran: Vec<String>,
    failed: Vec<String>,
}

/// What the provisioned InfluxDB datasource sends: HTTP Basic with the read-only v1
/// credential (never the admin token, [`grafana::influx_datasource_auth`] checks), here the
/// one the test created on the pipeline's bucket as compose's init script creates it on
/// `crypto`.
struct Datasource<'a> {
    influx: &'a Influxd,
    db: String,
    authorization: String,
}

impl<'a> Datasource<'a> {
    fn new(influx: &'a Influxd, db: &str) -> Datasource<'a> {
        let auth = grafana::influx_datasource_auth().unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "the datasource sends Basic ${{{}}}:${{{}}}: a read-only v1 credential on {db}",
            auth.user_env, auth.password_env
        );
        let credential =
            influx.create_read_only_credential(db, &unique("grafana"), "dashboards-live-read-only");
        Datasource {
            influx,
            db: db.to_owned(),
            authorization: credential.basic_auth_header(),
        }
    }

    /// An InfluxQL query sent the way the datasource sends it: POST to `/query` with its
    /// Basic credentials; `db` is the bucket (its virtual DBRP mapping).
    fn query(&self, q: &str) -> Value {
        let (status, body) = self.influx.query_with(&self.authorization, &self.db, q);
        assert!(status < 300, "InfluxDB answered {status} to {q:?}: {body}");
        serde_json::from_str(&body).expect("InfluxDB answered JSON")
    }
}

/// Rows of an InfluxQL answer that hold at least one non-null value besides `time`; an
/// InfluxQL error is an `Err` with its message.
fn rows_with_values(ds: &Datasource, q: &str) -> Result<usize, String> {
    let answer = ds.query(q);
    let result = &answer["results"][0];
    if let Some(err) = result.get("error") {
        return Err(format!("InfluxQL error: {err}"));
    }
    let mut n = 0;
    for s in result["series"].as_array().into_iter().flatten() {
        let time_col = s["columns"]
            .as_array()
            .and_then(|cols| cols.iter().position(|c| c == "time"));
        for row in s["values"].as_array().into_iter().flatten() {
            let values = row.as_array().into_iter().flatten().enumerate();
            if values
                .filter(|(i, _)| Some(*i) != time_col)
                .any(|(_, v)| !v.is_null())
            {
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Runs every InfluxQL query of `d` for the variable values Grafana would offer.
fn run_influxql(ds: &Datasource, d: &Dashboard, out: &mut Outcome) {
    let symbols = query_variable_values(ds, d, &variable(d, "symbol"));
    assert!(
        symbols.iter().any(|s| s == SYMBOL),
        "{}: the symbol variable lists {symbols:?}, not {SYMBOL}",
        d.title
    );
    let intervals = variable(d, CANDLE_INTERVAL_VAR).custom_values();
    let all: Vec<&str> = Interval::ALL.iter().map(|i| i.as_str()).collect();
    assert_eq!(intervals, all, "{}: the candle interval variable", d.title);
    let sources = query_variable_values(ds, d, &variable(d, "source"));
    let source = Source::Replay.as_str();
    assert_eq!(
        sources,
        [source],
        "{}: the source variable for {SYMBOL} (the producer replays)",
        d.title
    );

    let (from_ms, to_ms) = time_range_ms(d);
    let variants = grafana::influxql_variants(d, SYMBOL, &intervals, source, from_ms, to_ms)
        .unwrap_or_else(|e| panic!("{e}"));
    for ExpandedInfluxQL { what, query: q } in variants {
        let left = template_refs(&q);
        if !left.is_empty() {
            let names: Vec<&str> = left.iter().map(|r| r.name.as_str()).collect();
            out.failed.push(format!(
                "{what}: references left after expansion {names:?}: {q}"
            ));
            continue;
        }
        match rows_with_values(ds, &q) {
            Ok(0) => out.failed.push(format!("{what}: no row with a value: {q}")),
            Ok(n) => out.ran.push(format!("{what}: {n} rows: {q}")),
            Err(e) => out.failed.push(format!("{what}: {e}: {q}")),
        }
    }
}

/// Runs every PromQL query of `d`, retrying each until it returns a series or the shared
/// deadline passes.
fn run_promql(prom: &Prometheus, d: &Dashboard, queries: &[(String, String)], out: &mut Outcome) {
    let mut pending = Vec::new();
    for (panel, expr) in queries {
        let what = format!("{} / {panel}", d.title);
        let q = expand_promql(expr);
        let left = template_refs(&q);
        if left.is_empty() {
            pending.push((what, q));
        } else {
            let names: Vec<&str> = left.iter().map(|r| r.name.as_str()).collect();
            out.failed.push(format!(
                "{what}: references left after expansion {names:?}: {q}"
            ));
        }
    }
    // One deadline for all: a query that still has no series when it passes is reported
    // with the others instead of ending the test on the first.
    let give_up = Instant::now() + PROMQL_TIMEOUT;
    wait_until(
        PROMQL_TIMEOUT + Duration::from_secs(60),
        "every PromQL panel query to return a series",
        || {
            pending.retain(|(what, q)| {
                let result = series(&prom.query(q));
                if result.is_empty() {
                    return true;
                }
                let values: Vec<&str> = result
                    .iter()
                    .filter_map(|s| s["value"][1].as_str())
                    .collect();
                out.ran.push(format!(
                    "{what}: {} series, values {values:?}: {q}",
                    result.len()
                ));
                false
            });
            pending.is_empty() || Instant::now() >= give_up
        },
    );
    for (what, q) in pending {
        out.failed
            .push(format!("{what}: no series after {PROMQL_TIMEOUT:?}: {q}"));
    }
}

#[test]
fn every_panel_query_of_every_dashboard_returns_data_from_a_running_pipeline() {
    let influx = Influxd::shared();
    let mut pipeline = Pipeline::start(influx);
    let prometheus = ScrapingPrometheus::start(&pipeline, influx);
    wait_for_market_data(influx, &mut pipeline);
    prometheus.wait_for_scrapes();

    let datasource = Datasource::new(influx, &pipeline.run.db);

    let dashboards = grafana::load_dashboards().unwrap_or_else(|e| panic!("{e}"));
    assert!(!dashboards.is_empty(), "no dashboard in grafana/dashboards");
    let mut out = Outcome::default();
    let (mut influxql_count, mut promql_count) = (0, 0);
    for d in &dashboards {
        let mut influxql = 0;
        let mut promql = Vec::new();
        for q in d.queries().unwrap_or_else(|e| panic!("{e}")) {
            match q {
                PanelQuery::InfluxQL { .. } => influxql += 1,
                PanelQuery::PromQL { panel_title, expr } => promql.push((panel_title, expr)),
            }
        }
        influxql_count += influxql;
        promql_count += promql.len();
        if influxql > 0 {
            run_influxql(&datasource, d, &mut out);
        }
        if !promql.is_empty() {
            run_promql(&prometheus.server, d, &promql, &mut out);
        }
    }
    pipeline.producer.assert_running();
    pipeline.consumer.assert_running();

    eprintln!("panel queries that returned data:");
    for line in &out.ran {
        eprintln!("  ok   {line}");
    }
    assert!(
        influxql_count > 0 && promql_count > 0,
        "the dashboards hold {influxql_count} InfluxQL and {promql_count} PromQL queries: \
         both kinds should be checked"
    );
    assert!(
        out.failed.is_empty(),
        "{} panel queries returned no data:\n  {}",
        out.failed.len(),
        out.failed.join("\n  ")
    );
}
