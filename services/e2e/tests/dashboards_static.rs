//! # Dashboards, datasources and Prometheus rules checked against the code, without servers
//!
//! Grafana and Prometheus accept almost any JSON or PromQL and show an empty panel or a
//! silent rule when a name is wrong, so these checks read the files the stack provisions and
//! compare every name in them with its source of truth:
//!
//! * InfluxDB measurements, tags and fields: the consumer's own line-protocol encoder
//!   (`candlepipe_consumer::lineproto`) writing one full point of each measurement;
//! * Prometheus metric names and types: the two `metrics.rs` files (scanned as text: the
//!   field's type in the struct, the name string in the constructor), the recording rules of
//!   `prometheus/rules.yml`, and the standard `process_*` and `up` series;
//! * datasource UIDs: `grafana/provisioning/datasources/datasources.yml`.
//!
//! It also checks the layout (unique panel ids, grid positions that do not overlap), that every
//! template variable a query names is defined, that every query expands to text with no
//! template reference left (what the live test sends), that the dashboards hold the panels
//! issue 4 asks for, and runs `promtool check config` and `promtool test rules`.
//! The live test (a running pipeline, every query against real servers) is a separate file.

use candlepipe_consumer::lineproto::encode;
use candlepipe_consumer::lineproto_parse::parse_line;
use candlepipe_consumer::point::{CandlePoint, IndicatorPoint, Point};
use candlepipe_e2e::grafana::{
    self, expand_influxql, expand_promql, template_refs, Dashboard, PanelQuery, INFLUXDB_UID,
    MARKET_DASHBOARD_UID, PIPELINE_DASHBOARD_UID, PROMETHEUS_UID,
};
use candlepipe_model::{Interval, Source};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

// ------------------------------------------------------------------------------------------
// Sources of truth
// ------------------------------------------------------------------------------------------

fn repo(rel: &str) -> PathBuf {
    grafana::repo_root().join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    let mut docs = YamlLoader::load_from_str(&read(rel))
        .unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
    assert_eq!(docs.len(), 1, "{rel} should hold exactly one YAML document");
    docs.remove(0)
}

fn dashboards() -> Vec<Dashboard> {
    let all = grafana::load_dashboards().unwrap_or_else(|e| panic!("{e}"));
    assert!(!all.is_empty(), "no dashboard in grafana/dashboards");
    all
}

fn dashboard(uid: &str) -> Dashboard {
    dashboards()
        .into_iter()
        .find(|d| d.uid == uid)
        .unwrap_or_else(|| panic!("no dashboard with uid {uid} in grafana/dashboards"))
}

fn queries(d: &Dashboard) -> Vec<PanelQuery> {
    d.queries().unwrap_or_else(|e| panic!("{e}"))
}

/// Measurement → its tag and field names, from what the consumer actually writes: one point
/// of each measurement with every optional field set, encoded by the consumer's line-protocol
/// encoder and parsed back.
fn influx_schema() -> BTreeMap<String, BTreeSet<String>> {
    let symbol: std::sync::Arc<str> = "BTC-USDT".into();
    let candle = Point::Candle(CandlePoint {
        symbol: symbol.clone(),
        source: Source::Replay,
        interval: Interval::M1,
        time: 1_700_000_000_000,
        open: 1.0,
        high: 2.0,
        low: 0.5,
        close: 1.5,
        volume: 10.0,
        quote_volume: Some(15.0),
        trades: Some(3),
        taker_buy_base: Some(4.0),
        taker_buy_quote: Some(6.0),
        vwap: Some(1.5),
    });
    let indicator = Point::Indicator(IndicatorPoint {
        symbol,
        source: Some(Source::Replay),
        interval: Interval::H1,
        time: 1_700_000_000_000,
        sma_20: Some(1.0),
        ema_12: Some(1.0),
        ema_26: Some(1.0),
        macd: Some(0.1),
        macd_signal: Some(0.1),
        macd_hist: Some(0.0),
        rsi_14: Some(50.0),
        bb_mid: Some(1.0),
        bb_upper: Some(1.1),
        bb_lower: Some(0.9),
        log_return: Some(0.01),
        volatility_20: Some(0.02),
    });
    let mut schema = BTreeMap::new();
    for point in [candle, indicator] {
        let mut out = Vec::new();
        assert!(
            encode(&point, &mut out).expect("encodes"),
            "{point:?} wrote no line"
        );
        let text = String::from_utf8(out).expect("line protocol is UTF-8");
        let line = parse_line(text.trim_end()).expect("the encoder's line parses");
        let names = line
            .tags
            .iter()
            .map(|(k, _)| k.clone())
            .chain(line.fields.iter().map(|(k, _)| k.clone()))
            .collect();
        schema.insert(line.measurement, names);
    }
    schema
}

/// Prometheus metric type, as the prometheus crate exposes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricType {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric the producer and consumer register: name → type. The name is the string in
/// the constructor; the type is the struct field's type, found through the field name that
/// precedes the string (`batch_duration: secs("candlepipe_...` → `pub batch_duration:
/// Histogram`).
fn code_metrics() -> BTreeMap<String, MetricType> {
    let mut out = BTreeMap::new();
    for rel in [
        "services/producer/src/metrics.rs",
        "services/consumer/src/metrics.rs",
    ] {
        let text = read(rel);
        let mut field_types = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.trim().strip_prefix("pub ") else {
                continue;
            };
            let Some((field, ty)) = rest.split_once(':') else {
                continue;
            };
            let ty = ty.trim().trim_end_matches(',');
            if !field.contains(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                let ty = ty.rsplit("::").next().unwrap_or(ty).to_owned();
                field_types.insert(field.to_owned(), ty);
            }
        }
        for (at, _) in text.match_indices("\"candlepipe_") {
            let name_end = text[at + 1..].find('"').expect("closing quote") + at + 1;
            let name = &text[at + 1..name_end];
            let before = &text[..at];
            let field = field_types
                .keys()
                .filter_map(|f| last_field_key(before, f).map(|pos| (pos, f)))
                .max()
                .map(|(_, f)| f)
                .unwrap_or_else(|| panic!("{rel}: no struct field precedes metric {name}"));
            let ty = &field_types[field];
            let kind = if ty.starts_with("Histogram") {
                MetricType::Histogram
            } else if ty.contains("Counter") {
                MetricType::Counter
            } else if ty.contains("Gauge") {
                MetricType::Gauge
            } else {
                panic!("{rel}: metric {name} (field {field}) has type {ty}, not a counter, gauge or histogram")
            };
            out.insert(name.to_owned(), kind);
        }
    }
    assert!(
        out.len() >= 20,
        "found only {} metrics in the two metrics.rs files: {out:?}",
        out.len()
    );
    out
}

/// Position of the last `field: ` in `text` that starts a word (so `messages: ` does not
/// match inside `rebuild_messages: `).
fn last_field_key(text: &str, field: &str) -> Option<usize> {
    text.rmatch_indices(&format!("{field}: "))
        .map(|(pos, _)| pos)
        .find(|&pos| {
            pos == 0 || {
                let c = text.as_bytes()[pos - 1];
                !(c.is_ascii_alphanumeric() || c == b'_')
            }
        })
}

/// Series names the prometheus crate's process collector exposes (Linux), and Prometheus' own.
const STANDARD_SERIES: &[&str] = &[
    "up",
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

fn rules() -> Yaml {
    yaml("prometheus/rules.yml")
}

/// Every rule of rules.yml (recording and alerting).
fn rule_list() -> Vec<Yaml> {
    let rules = rules();
    let groups = rules["groups"].as_vec().expect("rules.yml: groups list");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_vec().expect("every group has rules").clone())
        .collect()
}

fn record_names() -> BTreeSet<String> {
    rule_list()
        .iter()
        .filter_map(|r| r["record"].as_str().map(str::to_owned))
        .collect()
}

/// Every series name a query may read: the code's metrics (histograms as their `_bucket`,
/// `_sum` and `_count` series), the recording rules and the standard series.
fn known_series() -> BTreeSet<String> {
    let mut out: BTreeSet<String> = STANDARD_SERIES.iter().map(|s| s.to_string()).collect();
    for (name, kind) in code_metrics() {
        match kind {
            MetricType::Histogram => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{suffix}"));
                }
            }
            MetricType::Counter | MetricType::Gauge => {
                out.insert(name);
            }
        }
    }
    out.extend(record_names());
    out
}

// ------------------------------------------------------------------------------------------
// Small readers for the two query languages (enough for the names these files use)
// ------------------------------------------------------------------------------------------

/// The metric names a PromQL expression reads. Strips strings, label matchers `{...}`,
/// ranges `[...]` and grouping label lists (`by (...)`, `on (...)`, ...), then keeps the
/// identifiers that are neither functions (followed by `(`), aggregations nor keywords.
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b = expr.as_bytes();
    let is_ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut names = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < b.len() && b[i] != c {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == b'{' || c == b'[' {
            let close = if c == b'{' { b'}' } else { b']' };
            while i < b.len() && b[i] != close {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (is_ident(b[i]) || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && is_ident(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let call = b.get(j) == Some(&b'(');
            if LABEL_LISTS.contains(&word) && call {
                // skip the label list
                while j < b.len() && b[j] != b')' {
                    j += 1;
                }
                i = j + 1;
            } else if !call && !KEYWORDS.contains(&word) {
                names.push(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// An InfluxQL token.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// `"name"`
    Ident(String),
    /// `'text'`
    Str(String),
    /// a bare word: keyword, function, `time`
    Word(String),
    /// `12`, `1.5`, `1700000000000ms`
    Num(String),
    Punct(char),
}

fn influxql_tokens(q: &str) -> Vec<Tok> {
    let b = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c == b'"' || c == b'\'' {
            let mut s = String::new();
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && i + 1 < b.len() {
                    i += 1;
                }
                s.push(b[i] as char);
                i += 1;
            }
            i += 1;
            out.push(if c == b'"' {
                Tok::Ident(s)
            } else {
                Tok::Str(s)
            });
        } else if c.is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
            out.push(Tok::Num(q[start..i].to_owned()));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Word(q[start..i].to_owned()));
        } else {
            out.push(Tok::Punct(c as char));
            i += 1;
        }
    }
    out
}

/// InfluxQL keywords and functions the dashboards may use (case-insensitive).
const INFLUXQL_WORDS: &[&str] = &[
    "select", "from", "where", "and", "or", "as", "group", "by", "time", "fill", "none", "null",
    "previous", "linear", "order", "asc", "desc", "limit", "slimit", "tz", "show", "tag", "values",
    "with", "key", "last", "first", "mean", "median", "sum", "min", "max", "count", "spread",
    "stddev",
];

/// The macros an InfluxQL query may use besides the dashboard's variables: the ones that
/// run unchanged on InfluxDB 1.x, 2.x and 3.x through Grafana.
const INFLUXQL_MACROS: &[&str] = &["timeFilter", "__interval", "__from", "__to"];

/// Grafana's built-in variables a PromQL expression may use.
const PROMQL_MACROS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
];

/// A fixed time range and values to expand queries with.
const FROM_MS: i64 = 1_700_000_000_000;
const TO_MS: i64 = FROM_MS + 6 * 3_600_000;

fn expand_for_check(q: &PanelQuery) -> String {
    match q {
        PanelQuery::InfluxQL { query, .. } => {
            expand_influxql(query, "BTC-USDT", "5m", "replay", FROM_MS, TO_MS)
        }
        PanelQuery::PromQL { expr, .. } => expand_promql(expr),
    }
}

/// Every InfluxQL text of a dashboard: panel queries and variable queries, with a label for
/// messages.
fn influxql_texts(d: &Dashboard) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = queries(d)
        .into_iter()
        .filter_map(|q| match q {
            PanelQuery::InfluxQL { panel_title, query } => {
                Some((format!("{}: panel {panel_title:?}", d.title), query))
            }
            PanelQuery::PromQL { .. } => None,
        })
        .collect();
    for v in d.variables().unwrap_or_else(|e| panic!("{e}")) {
        if v.kind == "query" && v.datasource_uid.as_deref() == Some(INFLUXDB_UID) {
            out.push((format!("{}: variable {}", d.title, v.name), v.query));
        }
    }
    out
}

// ------------------------------------------------------------------------------------------
// Layout
// ------------------------------------------------------------------------------------------

#[test]
fn panel_ids_and_titles_are_unique_per_dashboard() {
    for d in dashboards() {
        let mut ids = BTreeSet::new();
        let mut titles = BTreeSet::new();
        for p in d.panels() {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{}: panel {} has no integer id", d.title, p["title"]));
            assert!(ids.insert(id), "{}: panel id {id} is used twice", d.title);
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{}: panel {id} has no title", d.title);
            assert!(
                titles.insert(title.to_owned()),
                "{}: two panels are titled {title:?} (queries are reported by title)",
                d.title
            );
        }
    }
}

#[test]
fn every_panel_has_a_grid_position_and_none_overlap() {
    for d in dashboards() {
        let mut placed: Vec<(String, [u64; 4])> = Vec::new();
        for p in d.panels() {
            let title = p["title"].as_str().unwrap_or_default().to_owned();
            let g = &p["gridPos"];
            let get = |k: &str| {
                g[k].as_u64()
                    .unwrap_or_else(|| panic!("{}: panel {title:?} has no gridPos.{k}", d.title))
            };
            let (x, y, w, h) = (get("x"), get("y"), get("w"), get("h"));
            assert!(
                w >= 1 && h >= 1 && x + w <= 24,
                "{}: panel {title:?} gridPos {g} is outside the 24-column grid",
                d.title
            );
            for (other, [ox, oy, ow, oh]) in &placed {
                let apart = x + w <= *ox || *ox + ow <= x || y + h <= *oy || *oy + oh <= y;
                assert!(apart, "{}: panels {title:?} and {other:?} overlap", d.title);
            }
            placed.push((title, [x, y, w, h]));
        }
    }
}

// ------------------------------------------------------------------------------------------
// Datasources and variables
// ------------------------------------------------------------------------------------------

#[test]
fn provisioned_datasources_have_the_fixed_uids_and_point_at_the_compose_services() {
    let doc = yaml("grafana/provisioning/datasources/datasources.yml");
    let list = doc["datasources"].as_vec().expect("datasources list");
    let by_uid = |uid: &str| {
        list.iter()
            .find(|d| d["uid"].as_str() == Some(uid))
            .unwrap_or_else(|| panic!("datasources.yml has no datasource with uid {uid}"))
    };
    let influx = by_uid(INFLUXDB_UID);
    assert_eq!(influx["type"].as_str(), Some("influxdb"));
    assert_eq!(influx["url"].as_str(), Some("http://influxdb:8086"));
    assert_eq!(influx["jsonData"]["version"].as_str(), Some("InfluxQL"));
    assert_eq!(influx["jsonData"]["dbName"].as_str(), Some("crypto"));
    // Read-only Basic credentials from the environment, never the admin token in a header.
    let auth = grafana::influx_datasource_auth().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(auth.user_env, "INFLUX_READ_USER");
    assert_eq!(auth.password_env, "INFLUX_READ_PASSWORD");
    assert!(
        !read("grafana/provisioning/datasources/datasources.yml").contains("INFLUX_TOKEN"),
        "the datasource must not name the admin token"
    );
    let prom = by_uid(PROMETHEUS_UID);
    assert_eq!(prom["type"].as_str(), Some("prometheus"));
    assert_eq!(prom["url"].as_str(), Some("http://prometheus:9090"));
}

#[test]
fn every_datasource_reference_is_a_provisioned_uid() {
    let doc = yaml("grafana/provisioning/datasources/datasources.yml");
    let provisioned: BTreeMap<String, String> = doc["datasources"]
        .as_vec()
        .expect("datasources list")
        .iter()
        .map(|d| {
            (
                d["uid"].as_str().expect("uid").to_owned(),
                d["type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(o) => {
                for (k, child) in o {
                    let here = format!("{path}.{k}");
                    if k == "datasource" {
                        out.push((here.clone(), child.clone()));
                    }
                    walk(child, &here, out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    for d in dashboards() {
        let mut refs = Vec::new();
        walk(&d.json, "", &mut refs);
        assert!(!refs.is_empty(), "{}: no datasource reference", d.title);
        for (at, r) in refs {
            let uid = r["uid"].as_str().unwrap_or_else(|| {
                panic!(
                    "{}{at}: datasource must be {{\"type\", \"uid\"}} with a provisioned uid, got {r}",
                    d.title
                )
            });
            let kind = provisioned.get(uid).unwrap_or_else(|| {
                panic!(
                    "{}{at}: datasource uid {uid:?} is not provisioned (datasources.yml has {:?})",
                    d.title,
                    provisioned.keys()
                )
            });
            assert_eq!(
                r["type"].as_str(),
                Some(kind.as_str()),
                "{}{at}: datasource {uid} is of type {kind}",
                d.title
            );
        }
        // every target and query variable names its datasource (no "default" guesses)
        for p in d.panels() {
            for t in p["targets"].as_array().into_iter().flatten() {
                assert!(
                    t["datasource"].is_object() || p["datasource"].is_object(),
                    "{}: panel {} target {} has no datasource",
                    d.title,
                    p["title"],
                    t["refId"]
                );
            }
        }
        for v in d.variables().unwrap_or_else(|e| panic!("{e}")) {
            if v.kind == "query" {
                assert!(
                    v.datasource_uid.is_some(),
                    "{}: variable {} has no datasource",
                    d.title,
                    v.name
                );
            }
        }
    }
}

#[test]
fn every_variable_a_dashboard_references_is_defined() {
    for d in dashboards() {
        let defined: BTreeSet<String> = d
            .variables()
            .unwrap_or_else(|e| panic!("{e}"))
            .into_iter()
            .map(|v| v.name)
            .collect();
        let check = |what: String, text: &str, builtins: &[&str]| {
            for r in template_refs(text) {
                assert!(
                    defined.contains(&r.name) || builtins.contains(&r.name.as_str()),
                    "{}: {what} uses ${} which is neither a variable of this dashboard \
                     ({defined:?}) nor one of {builtins:?}",
                    d.title,
                    r.name
                );
            }
        };
        for q in queries(&d) {
            match &q {
                PanelQuery::InfluxQL { panel_title, query } => {
                    check(format!("panel {panel_title:?}"), query, INFLUXQL_MACROS)
                }
                PanelQuery::PromQL { panel_title, expr } => {
                    check(format!("panel {panel_title:?}"), expr, PROMQL_MACROS)
                }
            }
        }
        for p in d.panels() {
            for key in ["title", "description"] {
                if let Some(text) = p[key].as_str() {
                    check(format!("panel {key} {text:?}"), text, &["__interval"]);
                }
            }
        }
        // a variable's query may use only the variables before it (Grafana resolves them in
        // order)
        let mut earlier = BTreeSet::new();
        for v in d.variables().unwrap_or_else(|e| panic!("{e}")) {
            for r in template_refs(&v.query) {
                assert!(
                    earlier.contains(&r.name),
                    "{}: variable {} uses ${}, which is not a variable defined before it",
                    d.title,
                    v.name,
                    r.name
                );
            }
            earlier.insert(v.name);
        }
    }
}

#[test]
fn every_query_expands_to_text_without_template_references() {
    for d in dashboards() {
        let all = queries(&d);
        assert!(!all.is_empty(), "{}: no query", d.title);
        for q in &all {
            let expanded = expand_for_check(q);
            let left: Vec<String> = template_refs(&expanded)
                .into_iter()
                .map(|r| r.name)
                .collect();
            assert!(
                left.is_empty(),
                "{}: panel {:?}: {left:?} left after expansion in {expanded:?}",
                d.title,
                q.panel_title()
            );
        }
        for v in d.variables().unwrap_or_else(|e| panic!("{e}")) {
            let expanded = expand_influxql(&v.query, "BTC-USDT", "1m", "replay", FROM_MS, TO_MS);
            assert!(
                template_refs(&expanded).is_empty(),
                "{}: variable {} does not expand: {expanded:?}",
                d.title,
                v.name
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// InfluxQL against the schema
// ------------------------------------------------------------------------------------------

#[test]
fn influxql_queries_name_only_measurements_tags_and_fields_the_consumer_writes() {
    let schema = influx_schema();
    assert_eq!(
        schema.keys().collect::<Vec<_>>(),
        ["candle", "indicator"],
        "the consumer writes these two measurements"
    );
    let mut checked = 0;
    for d in dashboards() {
        for (what, raw) in influxql_texts(&d) {
            let q = expand_influxql(&raw, "BTC-USDT", "5m", "replay", FROM_MS, TO_MS);
            let toks = influxql_tokens(&q);
            let from = toks
                .iter()
                .position(|t| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("from")))
                .unwrap_or_else(|| panic!("{what}: no FROM in {q:?}"));
            let measurement = match toks.get(from + 1) {
                Some(Tok::Ident(m)) => m.clone(),
                other => {
                    panic!("{what}: FROM must name a double-quoted measurement, got {other:?}")
                }
            };
            let names = schema.get(&measurement).unwrap_or_else(|| {
                panic!("{what}: measurement {measurement:?} is not one the consumer writes")
            });
            let aliases: BTreeSet<&str> = toks
                .windows(2)
                .filter_map(|w| match w {
                    [Tok::Word(a), Tok::Ident(alias)] if a.eq_ignore_ascii_case("as") => {
                        Some(alias.as_str())
                    }
                    _ => None,
                })
                .collect();
            for (i, t) in toks.iter().enumerate() {
                match t {
                    Tok::Ident(name) => {
                        let ok = (i == from + 1)
                            || names.contains(name)
                            || (aliases.contains(name.as_str())
                                && matches!(&toks[i - 1], Tok::Word(w) if w.eq_ignore_ascii_case("as")));
                        assert!(
                            ok,
                            "{what}: \"{name}\" is neither a tag nor a field of {measurement} \
                             ({names:?}) in {q:?}"
                        );
                    }
                    Tok::Word(w) => assert!(
                        INFLUXQL_WORDS.contains(&w.to_ascii_lowercase().as_str()),
                        "{what}: bare word {w:?} (quote names as \"name\"; keywords allowed: \
                         {INFLUXQL_WORDS:?}) in {q:?}"
                    ),
                    _ => {}
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} InfluxQL queries checked");
}

#[test]
fn influxql_selects_pin_the_interval_tag() {
    let intervals: Vec<&str> = Interval::ALL.iter().map(|i| i.as_str()).collect();
    for d in dashboards() {
        for (what, raw) in influxql_texts(&d) {
            let toks = influxql_tokens(&raw);
            if !matches!(toks.first(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("select")) {
                continue;
            }
            let measurement = toks
                .windows(2)
                .find_map(|w| match w {
                    [Tok::Word(f), Tok::Ident(m)] if f.eq_ignore_ascii_case("from") => {
                        Some(m.clone())
                    }
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{what}: no FROM"));
            // 1m candles and their rollups share the measurement: a query that does not
            // choose one interval would mix them (and sum volumes twice).
            let pinned: Vec<&str> = toks
                .windows(3)
                .filter_map(|w| match w {
                    [Tok::Ident(k), Tok::Punct('='), Tok::Str(v)] if k == "interval" => {
                        Some(v.as_str())
                    }
                    _ => None,
                })
                .collect();
            assert_eq!(
                pinned.len(),
                1,
                "{what}: a SELECT on {measurement} must filter \"interval\" = '...' once: {raw:?}"
            );
            let v = pinned[0];
            if measurement == "indicator" {
                // Indicators exist per interval, over that interval's closes: the overlays
                // show the selected interval's, never the 1m ones on a 1h chart.
                assert_eq!(
                    v, "$candle_interval",
                    "{what}: indicators follow the candle interval variable"
                );
            } else {
                assert!(
                    v == "$candle_interval" || intervals.contains(&v),
                    "{what}: interval {v:?} is not one of {intervals:?} or $candle_interval"
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// PromQL against the code's metrics and the recording rules
// ------------------------------------------------------------------------------------------

#[test]
fn prometheus_panels_read_only_metrics_the_code_registers_or_rules_record() {
    let known = known_series();
    let records = record_names();
    let mut checked = 0;
    for d in dashboards() {
        for q in queries(&d) {
            let PanelQuery::PromQL { panel_title, expr } = &q else {
                continue;
            };
            let names = promql_metric_names(&expand_promql(expr));
            assert!(
                !names.is_empty() || expr.contains("vector("),
                "{}: panel {panel_title:?} reads no metric: {expr:?}",
                d.title
            );
            for name in names {
                assert!(
                    known.contains(&name),
                    "{}: panel {panel_title:?} reads {name}, which neither metrics.rs, \
                     rules.yml nor the standard series define",
                    d.title
                );
                // where a recording rule exists for a histogram, panels use it
                assert!(
                    !name.ends_with("_bucket"),
                    "{}: panel {panel_title:?} computes a quantile itself; add a recording \
                     rule (rules.yml has {records:?})",
                    d.title
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric references checked");
}

#[test]
fn rules_read_only_metrics_the_code_registers() {
    let known = known_series();
    for rule in rule_list() {
        let name = rule["record"]
            .as_str()
            .or(rule["alert"].as_str())
            .expect("every rule has a record or alert name");
        let expr = rule["expr"]
            .as_str()
            .unwrap_or_else(|| panic!("rule {name} has no expr"));
        let metrics = promql_metric_names(expr);
        assert!(!metrics.is_empty(), "rule {name} reads no metric");
        for m in metrics {
            assert!(
                known.contains(&m),
                "rule {name} reads {m}, which is not a metric of metrics.rs, a recording rule \
                 or a standard series"
            );
        }
    }
}

#[test]
fn the_metric_scan_finds_the_types_the_code_declares() {
    // guards the scanner itself: a few metrics whose type is known from metrics.rs
    let m = code_metrics();
    assert_eq!(
        m["candlepipe_producer_candles_sent_total"],
        MetricType::Counter
    );
    assert_eq!(
        m["candlepipe_consumer_batch_duration_seconds"],
        MetricType::Histogram
    );
    assert_eq!(m["candlepipe_consumer_lag_messages"], MetricType::Gauge);
    assert_eq!(
        m["candlepipe_consumer_rebuild_messages_total"],
        MetricType::Counter
    );
    assert_eq!(
        m["candlepipe_producer_replay_progress_ratio"],
        MetricType::Gauge
    );
    assert_eq!(
        promql_metric_names(
            "sum by (le) (rate(a_bucket{job=\"x\"}[1m])) / on() group_left b:rec or vector(0) > bool 2e3"
        ),
        ["a_bucket", "b:rec"]
    );
}

// ------------------------------------------------------------------------------------------
// What issue 4 asks each dashboard to show
// ------------------------------------------------------------------------------------------

/// The panel titled `title`, or a failure naming the titles there are.
fn panel<'a>(d: &'a Dashboard, title: &str) -> &'a Value {
    let panels = d.panels();
    panels
        .iter()
        .copied()
        .find(|p| p["title"].as_str() == Some(title))
        .unwrap_or_else(|| {
            let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
            panic!("{}: no panel {title:?} (panels: {titles:?})", d.title)
        })
}

fn panel_texts(d: &Dashboard, title: &str) -> String {
    queries(d)
        .into_iter()
        .filter(|q| q.panel_title() == title)
        .map(|q| q.text().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn crypto_market_is_the_home_dashboard_with_the_panels_issue_4_asks_for() {
    let d = dashboard(MARKET_DASHBOARD_UID);
    assert_eq!(d.title, "Crypto Market");
    assert_eq!(
        d.path.file_name().and_then(|f| f.to_str()),
        Some("crypto-market.json"),
        "compose points Grafana's home dashboard at this file"
    );

    let vars = d.variables().unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["symbol", "candle_interval", "source"]);
    assert_eq!(vars[0].kind, "query");
    assert_eq!(
        vars[0].query,
        r#"SHOW TAG VALUES FROM "candle" WITH KEY = "symbol""#
    );
    assert_eq!(vars[1].kind, "custom");
    let intervals: Vec<&str> = Interval::ALL.iter().map(|i| i.as_str()).collect();
    assert_eq!(vars[1].custom_values(), intervals);
    assert_eq!(vars[2].kind, "query");
    assert!(vars[2]
        .query
        .starts_with(r#"SHOW TAG VALUES FROM "candle" WITH KEY = "source""#));

    let candles = panel(
        &d,
        "$symbol candles ($candle_interval) with VWAP, SMA 20, EMA 12/26 and Bollinger bands",
    );
    assert_eq!(candles["type"], "candlestick");
    assert_eq!(candles["options"]["mode"], "candles+volume");
    assert_eq!(
        candles["options"]["includeAllFields"], true,
        "overlays are drawn"
    );
    let text = panel_texts(&d, candles["title"].as_str().unwrap());
    for field in [
        "open", "high", "low", "close", "volume", "vwap", "sma_20", "ema_12", "ema_26", "bb_upper",
        "bb_mid", "bb_lower",
    ] {
        assert!(
            text.contains(&format!("\"{field}\"")),
            "the candlestick panel does not read {field}"
        );
    }
    assert!(
        text.contains("\"interval\" = '$candle_interval'"),
        "candles follow the candle interval variable"
    );

    assert!(panel_texts(&d, RSI_TITLE).contains("\"rsi_14\""));
    let macd = panel_texts(&d, "MACD (12, 26, 9) ($candle_interval)");
    for f in ["macd", "macd_signal", "macd_hist"] {
        assert!(macd.contains(&format!("\"{f}\"")), "MACD panel lacks {f}");
    }
    for (title, needle) in [
        ("Last price", "last(\"close\")"),
        ("Change over range", "first(\"open\")"),
        ("Change over range %", "first(\"open\")"),
    ] {
        assert_eq!(panel(&d, title)["type"], "stat", "{title} is a stat panel");
        assert!(panel_texts(&d, title).contains(needle), "{title}");
    }
    let table = panel(&d, "All symbols");
    assert_eq!(table["type"], "table");
    let text = panel_texts(&d, "All symbols");
    assert!(
        text.contains("GROUP BY \"symbol\"") && text.contains("sum(\"volume\")"),
        "the table lists every symbol with its volume: {text}"
    );
}

#[test]
fn pipeline_health_shows_every_signal_issue_4_asks_for() {
    let d = dashboard(PIPELINE_DASHBOARD_UID);
    assert_eq!(d.title, "Pipeline Health");
    let all: Vec<String> = queries(&d)
        .iter()
        .map(|q| {
            assert!(
                matches!(q, PanelQuery::PromQL { .. }),
                "Pipeline Health reads Prometheus only"
            );
            q.text().to_owned()
        })
        .collect();
    let reads = |series: &str| {
        all.iter()
            .any(|e| promql_metric_names(e).iter().any(|n| n == series))
    };
    for series in [
        "candlepipe:producer_candles_sent:rate1m",
        "candlepipe:consumer_messages:rate1m",
        "candlepipe:consumer_lag_messages:sum",
        "candlepipe_consumer_lag_messages",
        "candlepipe:consumer_batch_size_messages:p50_rate1m",
        "candlepipe:consumer_batch_size_messages:p99_rate1m",
        "candlepipe:consumer_batch_duration_seconds:p50_rate1m",
        "candlepipe:consumer_batch_duration_seconds:p99_rate1m",
        "candlepipe:end_to_end_latency_seconds:p50_rate1m",
        "candlepipe:end_to_end_latency_seconds:p99_rate1m",
        "candlepipe:influx_write_duration_seconds:p50_rate1m",
        "candlepipe:influx_write_duration_seconds:p99_rate1m",
        "candlepipe:influx_write_errors:rate1m",
        "candlepipe:consumer_dlq:rate1m",
        "candlepipe:consumer_late_dropped:rate1m",
        "candlepipe_producer_mode",
        "candlepipe_producer_replay_progress_ratio",
        "up",
    ] {
        assert!(reads(series), "no Pipeline Health panel reads {series}");
    }
}

// ------------------------------------------------------------------------------------------
// Grafana provider, Prometheus config and rules
// ------------------------------------------------------------------------------------------

#[test]
fn the_dashboard_provider_loads_the_mounted_folder() {
    let doc = yaml("grafana/provisioning/dashboards/dashboards.yml");
    let providers = doc["providers"].as_vec().expect("providers list");
    assert!(
        providers.iter().any(|p| p["type"].as_str() == Some("file")
            && p["options"]["path"].as_str() == Some("/var/lib/grafana/dashboards")),
        "dashboards.yml needs a file provider for /var/lib/grafana/dashboards"
    );
}

#[test]
fn prometheus_scrapes_the_compose_services_every_5s_and_loads_the_rules() {
    let doc = yaml("prometheus/prometheus.yml");
    assert_eq!(doc["global"]["scrape_interval"].as_str(), Some("5s"));
    let rule_files: Vec<&str> = doc["rule_files"]
        .as_vec()
        .expect("rule_files")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(rule_files, ["rules.yml"]);
    let mut targets = BTreeMap::new();
    for job in doc["scrape_configs"].as_vec().expect("scrape_configs") {
        let name = job["job_name"].as_str().expect("job_name").to_owned();
        let mut found = Vec::new();
        for sc in job["static_configs"].as_vec().into_iter().flatten() {
            for t in sc["targets"].as_vec().into_iter().flatten() {
                found.push(t.as_str().expect("target").to_owned());
            }
        }
        for dns in job["dns_sd_configs"].as_vec().into_iter().flatten() {
            let port = dns["port"].as_i64().expect("dns_sd port");
            for n in dns["names"].as_vec().into_iter().flatten() {
                found.push(format!("{}:{port}", n.as_str().expect("dns name")));
            }
        }
        targets.insert(name, found);
    }
    assert_eq!(targets["producer"], ["producer:9101"]);
    assert_eq!(targets["consumer"], ["consumer:9102"]);
    assert_eq!(targets["prometheus"], ["localhost:9090"]);
    assert_eq!(targets["influxdb"], ["influxdb:8086"]);
}

#[test]
fn every_alert_has_for_severity_annotations_and_a_unit_test() {
    let tests = read("prometheus/tests/rules_test.yml");
    let mut alerts = BTreeSet::new();
    for rule in rule_list() {
        if let Some(record) = rule["record"].as_str() {
            assert!(
                tests.contains(&format!("expr: {record}\n")),
                "recording rule {record} has no promql_expr_test in rules_test.yml"
            );
            continue;
        }
        let name = rule["alert"].as_str().expect("alert name").to_owned();
        assert!(rule["for"].as_str().is_some(), "alert {name} has no for:");
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "alert {name} needs severity warning or critical"
        );
        for a in ["summary", "description"] {
            assert!(
                rule["annotations"][a]
                    .as_str()
                    .is_some_and(|s| !s.is_empty()),
                "alert {name} has no {a} annotation"
            );
        }
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "alert {name} has no alert_rule_test in rules_test.yml"
        );
        alerts.insert(name);
    }
    for required in [
        "CandlepipeConsumerLagGrowing",
        "CandlepipeNoCandlesWritten",
        "CandlepipeInfluxWriteErrors",
        "CandlepipeDeadLetters",
        "CandlepipeProducerStalled",
        "CandlepipeTargetDown",
        "CandlepipeConsumerBackpressure",
        "CandlepipeYahooRateLimited",
        "CandlepipeEndToEndLatencyHigh",
        "CandlepipeLateCandlesDropped",
    ] {
        assert!(
            alerts.contains(required),
            "rules.yml lacks alert {required}"
        );
    }
}

fn promtool(args: &[&str]) {
    let bin = candlepipe_testkit::require_binary(
        "promtool",
        "apt-get update && apt-get install -y prometheus",
    );
    let out = Command::new(&bin)
        .args(args)
        .current_dir(grafana::repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
    assert!(
        out.status.success(),
        "promtool {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_config() {
    promtool(&["check", "config", "prometheus/prometheus.yml"]);
}

#[test]
fn promtool_rule_unit_tests_pass() {
    promtool(&["test", "rules", "prometheus/tests/rules_test.yml"]);
}

// ------------------------------------------------------------------------------------------
// What a trader sees: instant stats, honest gaps, units, thresholds (issue 11)
// ------------------------------------------------------------------------------------------

/// Title of the RSI panel.
const RSI_TITLE: &str = "RSI 14 ($candle_interval)";

/// The Prometheus targets of a panel.
fn prom_targets(p: &Value) -> Vec<&Value> {
    p["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["expr"].is_string())
        .collect()
}

/// The threshold step values of a panel's defaults (the base step has none).
fn threshold_values(p: &Value) -> Vec<f64> {
    p["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["value"].as_f64())
        .collect()
}

#[test]
fn stat_panels_read_the_current_value_not_the_range() {
    let mut checked = 0;
    for d in dashboards() {
        for p in d.panels() {
            if !matches!(p["type"].as_str(), Some("stat" | "gauge")) {
                continue;
            }
            let title = p["title"].as_str().unwrap_or_default();
            // PromQL: an instant query, so a switched mode or a scaled-away consumer is gone
            // at once instead of lingering for the whole range.
            for t in prom_targets(p) {
                assert_eq!(t["instant"], true, "{}: {title} must be instant", d.title);
                assert_eq!(
                    t["range"], false,
                    "{}: {title} must not be a range",
                    d.title
                );
                checked += 1;
            }
            // InfluxQL: one value for the range (last/first/sum), never a series over time.
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(q) = t["query"].as_str() {
                    assert!(
                        !q.contains("GROUP BY time("),
                        "{}: stat {title} reads one value, not a series: {q}",
                        d.title
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 8, "only {checked} stat targets found");
}

#[test]
fn gaps_stay_gaps_fill_null_and_no_line_across_them() {
    for d in dashboards() {
        for (what, q) in influxql_texts(&d) {
            assert!(
                !q.contains("fill(none)"),
                "{what}: fill(none) drops empty buckets and the line jumps across the gap: {q}"
            );
            if q.contains("GROUP BY time(") {
                assert!(
                    q.contains("fill(null)"),
                    "{what}: an empty bucket must be null (a gap): {q}"
                );
            }
        }
        for p in d.panels() {
            if matches!(p["type"].as_str(), Some("timeseries" | "candlestick")) {
                let span = &p["fieldConfig"]["defaults"]["custom"]["spanNulls"];
                assert!(
                    span == false || span.is_number(),
                    "{}: {}: spanNulls {span} joins every gap",
                    d.title,
                    p["title"]
                );
            }
        }
    }
}

#[test]
fn no_variable_shadows_grafanas_interval_and_indicators_follow_the_candle_interval() {
    for d in dashboards() {
        for v in d.variables().unwrap_or_else(|e| panic!("{e}")) {
            assert!(
                !matches!(v.name.as_str(), "interval" | "__interval" | "timeFilter"),
                "{}: variable {:?} shadows one of Grafana's own",
                d.title,
                v.name
            );
        }
    }
    let d = dashboard(MARKET_DASHBOARD_UID);
    for title in [
        "$symbol candles ($candle_interval) with VWAP, SMA 20, EMA 12/26 and Bollinger bands",
        RSI_TITLE,
        "MACD (12, 26, 9) ($candle_interval)",
    ] {
        let text = panel_texts(&d, title);
        assert!(
            text.contains("\"interval\" = '$candle_interval'")
                && text.contains("GROUP BY time($candle_interval)"),
            "{title}: one point per candle of the selected interval: {text}"
        );
    }
}

#[test]
fn rsi_draws_its_30_and_70_lines() {
    let d = dashboard(MARKET_DASHBOARD_UID);
    let rsi = panel(&d, RSI_TITLE);
    let style = rsi["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"]
        .as_str()
        .unwrap_or("off");
    assert!(
        matches!(style, "line" | "dashed" | "line+area" | "dashed+area"),
        "the thresholds must be drawn (thresholdsStyle), not only defined: {style:?}"
    );
    assert_eq!(threshold_values(rsi), [30.0, 70.0]);
    assert_eq!(rsi["fieldConfig"]["defaults"]["min"], 0);
    assert_eq!(rsi["fieldConfig"]["defaults"]["max"], 100);
}

#[test]
fn prices_have_a_currency_neutral_number_unit_with_decimals() {
    let d = dashboard(MARKET_DASHBOARD_UID);
    for title in [
        "Last price",
        "Change over range",
        "$symbol candles ($candle_interval) with VWAP, SMA 20, EMA 12/26 and Bollinger bands",
    ] {
        let defaults = &panel(&d, title)["fieldConfig"]["defaults"];
        // `locale`: thousands separators, up to `decimals` fraction digits, no currency sign
        // (pairs quote in USDT, USD, ETH, ...): 67,012.5 and 0.00021345 both read right.
        assert_eq!(defaults["unit"], "locale", "{title}: price unit");
        assert_eq!(
            defaults["decimals"], 8,
            "{title}: crypto prices need 8 decimals"
        );
    }
    let table = panel(&d, "All symbols");
    let overrides = table["fieldConfig"]["overrides"].to_string();
    assert!(
        overrides.contains("\"Last price\"") && overrides.contains("\"locale\""),
        "the table's price column has the price unit: {overrides}"
    );
}

#[test]
fn pipeline_thresholds_fit_a_steady_one_candle_a_minute_stream() {
    let d = dashboard(PIPELINE_DASHBOARD_UID);
    // Between two writes of a steady stream 60 s pass, plus the batch trigger: that must
    // stay green.
    let steps = threshold_values(panel(&d, "Since last InfluxDB write"));
    assert!(
        steps.first().is_some_and(|first| *first >= 120.0),
        "\"Since last InfluxDB write\" leaves green at {steps:?} s: a write a minute is normal"
    );
    let duration = d
        .panels()
        .into_iter()
        .find(|p| {
            p["targets"]
                .to_string()
                .contains("consumer_batch_duration_seconds")
        })
        .expect("a batch duration panel");
    let said = format!("{} {}", duration["title"], duration["description"]);
    assert!(
        said.contains("collect") && said.contains("BATCH_TRIGGER"),
        "the batch duration panel says it includes collecting the next batch: {said}"
    );
    let size = panel(&d, "Batch size p50 / p99 and mean");
    let text = size["targets"].to_string();
    assert!(
        text.contains("batch_size_messages_sum") && text.contains("batch_size_messages_count"),
        "the exact mean is shown next to the interpolated quantiles"
    );
}

/// The consumer's batch-size buckets have a bound at the default batch cap, so the
/// interpolated p99 of batches at the cap reads the cap, not more.
#[test]
fn batch_size_buckets_have_a_bound_at_the_default_cap() {
    use candlepipe_consumer::config::ConsumerConfig;
    use candlepipe_consumer::metrics::BATCH_SIZE_BUCKETS;
    use clap::Parser;
    let cap = ConsumerConfig::parse_from(["consumer"]).max_batch as f64;
    assert!(
        BATCH_SIZE_BUCKETS.contains(&cap),
        "{BATCH_SIZE_BUCKETS:?} lacks {cap}"
    );
}

#[test]
fn pipeline_health_shows_freshness_partitions_cpu_and_memory() {
    let d = dashboard(PIPELINE_DASHBOARD_UID);
    let find = |needle: &str| {
        d.panels()
            .into_iter()
            .find(|p| {
                prom_targets(p)
                    .iter()
                    .any(|t| t["expr"].to_string().contains(needle))
            })
            .unwrap_or_else(|| panic!("no panel reads {needle}"))
    };
    let fresh = find("candlepipe_producer_last_candle_timestamp_seconds");
    let t = prom_targets(fresh)[0];
    assert!(t["expr"].as_str().unwrap().contains("time() -"), "an age");
    assert!(
        t["legendFormat"].as_str().unwrap().contains("{{mode}}"),
        "the age is labelled with the source the producer runs"
    );
    let parts = find("candlepipe_consumer_assigned_partitions");
    assert!(prom_targets(parts)[0]["legendFormat"]
        .as_str()
        .unwrap()
        .contains("{{instance}}"));
    assert_eq!(
        find("process_cpu_seconds_total")["fieldConfig"]["defaults"]["unit"],
        "percentunit"
    );
    assert_eq!(
        find("process_resident_memory_bytes")["fieldConfig"]["defaults"]["unit"],
        "bytes"
    );
}
