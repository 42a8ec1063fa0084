//! # The Grafana dashboards, as queries a real server can run
//!
//! Dashboards are JSON that nothing compiles: a misspelt field, a wrong datasource UID or a
//! recording rule that does not exist shows up only as an empty panel in someone's browser.
//! This module reads the provisioned dashboards (`grafana/dashboards/*.json`) and hands the
//! tests every query a panel runs — InfluxQL against the market data, PromQL against the
//! pipeline metrics — plus the queries behind the template variables.
//!
//! Grafana never sends a query as written: it first replaces template variables (`$symbol`)
//! and its own macros (`$timeFilter`, `$__interval`, `$__rate_interval`). [`expand_influxql`]
//! and [`expand_promql`] do the same replacement, so a test can execute the exact text a
//! panel would send against a real influxd or Prometheus, and [`template_refs`] finds what is
//! left, so a test can prove nothing was missed.
//!
//! InfluxQL queries are raw (`rawQuery: true`) and use only `$timeFilter`, `$__interval`,
//! `$symbol`, `$candle_interval`, `$source`, `$__from` and `$__to`: that text runs unchanged
//! on InfluxDB 1.x, on 2.x through its v1-compatible `/query` endpoint and on 3.x. (The
//! candle interval variable is not called `interval`: that name would shadow Grafana's own
//! `$interval`, the older spelling of `$__interval`.)
//!
//! [`influx_datasource_auth`] reads how the provisioned InfluxDB datasource authenticates, so
//! a test sends its queries with the same credential Grafana sends.

use serde_json::Value;
use std::ops::Range;
use std::path::{Path, PathBuf};
use yaml_rust2::YamlLoader;

/// UID of the provisioned InfluxDB (InfluxQL) datasource.
pub const INFLUXDB_UID: &str = "candlepipe-influxdb";
/// UID of the provisioned Prometheus datasource.
pub const PROMETHEUS_UID: &str = "candlepipe-prometheus";
/// UID of the Crypto Market dashboard (Grafana's home dashboard).
pub const MARKET_DASHBOARD_UID: &str = "candlepipe-market";
/// UID of the Pipeline Health dashboard.
pub const PIPELINE_DASHBOARD_UID: &str = "candlepipe-pipeline";

/// The Crypto Market dashboard's candle interval variable (`1m`, `5m`, `15m`, `1h`).
pub const CANDLE_INTERVAL_VAR: &str = "candle_interval";

/// What [`expand_promql`] puts for `$__rate_interval` and `$__interval`: one minute holds
/// twelve 5 s scrapes, enough for `rate()` to have data everywhere.
pub const PROMQL_RATE_INTERVAL: &str = "1m";
/// What [`expand_promql`] puts for `$__range` (`$__range_s`, `$__range_ms` accordingly).
pub const PROMQL_RANGE: &str = "1h";
const PROMQL_RANGE_MS: i64 = 3_600_000;

/// The smallest `$__interval` Grafana uses for InfluxQL panels: the InfluxDB datasource's
/// `timeInterval` (candles are minutely, a finer bucket only adds empty ones).
pub const INFLUXQL_MIN_INTERVAL_MS: i64 = 60_000;
/// The number of points Grafana aims for when it picks `$__interval` (about a panel's
/// width in pixels).
pub const MAX_DATA_POINTS: i64 = 1_000;

/// Why the dashboards could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("cannot list the dashboards in {dir}: {source}")]
    List {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read dashboard {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dashboard {path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// The JSON parses but is not a dashboard this module understands (named in `what`).
    #[error("dashboard {path}: {what}")]
    Shape { path: PathBuf, what: String },
    /// The datasource provisioning is not what [`influx_datasource_auth`] expects.
    #[error("{path}: {what}")]
    Datasource { path: PathBuf, what: String },
}

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// The file it was read from (for error messages).
    pub path: PathBuf,
    pub uid: String,
    pub title: String,
    /// The whole document, for checks this module has no accessor for.
    pub json: Value,
}

/// One query a panel runs, by the language its datasource speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PanelQuery {
    /// A raw InfluxQL query (`target.query`) for the InfluxDB datasource.
    InfluxQL { panel_title: String, query: String },
    /// A PromQL expression (`target.expr`) for the Prometheus datasource.
    PromQL { panel_title: String, expr: String },
}

impl PanelQuery {
    /// Title of the panel the query belongs to (titles are unique within a dashboard).
    pub fn panel_title(&self) -> &str {
        match self {
            PanelQuery::InfluxQL { panel_title, .. } | PanelQuery::PromQL { panel_title, .. } => {
                panel_title
            }
        }
    }

    /// The query text as written in the dashboard.
    pub fn text(&self) -> &str {
        match self {
            PanelQuery::InfluxQL { query, .. } => query,
            PanelQuery::PromQL { expr, .. } => expr,
        }
    }
}

/// One template variable (`templating.list[]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVariable {
    pub name: String,
    /// Grafana's variable type: `query`, `custom`, `constant`, ...
    pub kind: String,
    /// The datasource a `query` variable asks; `None` for the others.
    pub datasource_uid: Option<String>,
    /// The InfluxQL/PromQL of a `query` variable; the comma-separated values of a `custom` one.
    pub query: String,
}

impl TemplateVariable {
    /// The values of a `custom` variable (`1m,5m` → `["1m", "5m"]`); empty for other kinds.
    pub fn custom_values(&self) -> Vec<String> {
        if self.kind != "custom" {
            return Vec::new();
        }
        self.query
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `grafana/provisioning/datasources/datasources.yml`.
pub fn datasources_path() -> PathBuf {
    repo_root().join("grafana/provisioning/datasources/datasources.yml")
}

/// How the provisioned InfluxDB datasource authenticates: HTTP Basic (`basicAuth: true`)
/// with a v1 authorization's user name and password, both filled by Grafana from the
/// environment variables named here (`${NAME}` in the YAML).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxDatasourceAuth {
    /// The variable `basicAuthUser` reads.
    pub user_env: String,
    /// The variable `secureJsonData.basicAuthPassword` reads.
    pub password_env: String,
}

/// Reads the InfluxDB datasource of [`datasources_path`] and checks that it sends raw
/// InfluxQL by POST with HTTP Basic credentials from the environment and nothing else that
/// authenticates (no custom `Authorization` header, so no token).
pub fn influx_datasource_auth() -> Result<InfluxDatasourceAuth, DashboardError> {
    let path = datasources_path();
    let bad = |what: String| DashboardError::Datasource {
        path: path.clone(),
        what,
    };
    let text = std::fs::read_to_string(&path).map_err(|source| DashboardError::Read {
        path: path.clone(),
        source,
    })?;
    let docs = YamlLoader::load_from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?;
    let ds = docs
        .first()
        .and_then(|d| d["datasources"].as_vec())
        .into_iter()
        .flatten()
        .find(|d| d["uid"].as_str() == Some(INFLUXDB_UID))
        .ok_or_else(|| bad(format!("no datasource with uid {INFLUXDB_UID}")))?;
    let json = &ds["jsonData"];
    if json["version"].as_str() != Some("InfluxQL") || json["httpMode"].as_str() != Some("POST") {
        return Err(bad(
            "the InfluxDB datasource must speak InfluxQL by POST".to_owned()
        ));
    }
    let mut header = 1;
    while let Some(name) = json[format!("httpHeaderName{header}").as_str()].as_str() {
        if name.eq_ignore_ascii_case("authorization") {
            return Err(bad(format!(
                "httpHeaderName{header} sends an Authorization header: the datasource must \
                 authenticate only with its read-only Basic credentials"
            )));
        }
        header += 1;
    }
    if ds["basicAuth"].as_bool() != Some(true) {
        return Err(bad(
            "the InfluxDB datasource needs basicAuth: true".to_owned()
        ));
    }
    let env_name = |value: Option<&str>, field: &str| {
        value
            .and_then(|v| v.strip_prefix("${"))
            .and_then(|v| v.strip_suffix('}'))
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .map(str::to_owned)
            .ok_or_else(|| {
                bad(format!(
                    "{field} must be ${{VARIABLE}} (from the environment), not {value:?}"
                ))
            })
    };
    Ok(InfluxDatasourceAuth {
        user_env: env_name(ds["basicAuthUser"].as_str(), "basicAuthUser")?,
        password_env: env_name(
            ds["secureJsonData"]["basicAuthPassword"].as_str(),
            "secureJsonData.basicAuthPassword",
        )?,
    })
}

/// `grafana/dashboards/`, the folder Grafana's file provider loads.
pub fn dashboards_dir() -> PathBuf {
    repo_root().join("grafana/dashboards")
}

/// Every dashboard of `grafana/dashboards/`, sorted by file name.
pub fn load_dashboards() -> Result<Vec<Dashboard>, DashboardError> {
    load_dashboards_from(&dashboards_dir())
}

/// Every `*.json` dashboard in `dir`, sorted by file name.
pub fn load_dashboards_from(dir: &Path) -> Result<Vec<Dashboard>, DashboardError> {
    let list = |source| DashboardError::List {
        dir: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(list)? {
        let path = entry.map_err(list)?.path();
        if path.extension().is_some_and(|e| e == "json") {
            paths.push(path);
        }
    }
    paths.sort();
    paths.iter().map(|p| Dashboard::load(p)).collect()
}

impl Dashboard {
    /// Reads and checks the top of one dashboard file (`uid`, `title`, `panels`).
    pub fn load(path: &Path) -> Result<Dashboard, DashboardError> {
        let text = std::fs::read_to_string(path).map_err(|source| DashboardError::Read {
            path: path.to_owned(),
            source,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|source| DashboardError::Json {
            path: path.to_owned(),
            source,
        })?;
        let field = |name: &str| {
            json[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| DashboardError::Shape {
                    path: path.to_owned(),
                    what: format!("no string `{name}` at the top level"),
                })
        };
        let (uid, title) = (field("uid")?, field("title")?);
        if !json["panels"].is_array() {
            return Err(DashboardError::Shape {
                path: path.to_owned(),
                what: "no `panels` array".to_owned(),
            });
        }
        Ok(Dashboard {
            path: path.to_owned(),
            uid,
            title,
            json,
        })
    }

    /// Every panel in layout order, including those nested in (collapsed) rows.
    pub fn panels(&self) -> Vec<&Value> {
        fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
            for p in panels.as_array().into_iter().flatten() {
                out.push(p);
                walk(&p["panels"], out);
            }
        }
        let mut out = Vec::new();
        walk(&self.json["panels"], &mut out);
        out
    }

    /// Every query the panels run (hidden targets excluded, as Grafana skips them).
    ///
    /// A target's datasource is its own `datasource` or else its panel's. An InfluxDB target
    /// must be raw InfluxQL (`rawQuery: true` and a `query`), a Prometheus one must have an
    /// `expr`; anything else is an error naming the panel and the target's `refId`.
    pub fn queries(&self) -> Result<Vec<PanelQuery>, DashboardError> {
        let mut out = Vec::new();
        for panel in self.panels() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            for target in panel["targets"].as_array().into_iter().flatten() {
                if target["hide"].as_bool() == Some(true) {
                    continue;
                }
                let shape = |what: String| DashboardError::Shape {
                    path: self.path.clone(),
                    what: format!(
                        "panel {title:?}, target {}: {what}",
                        target["refId"].as_str().unwrap_or("?")
                    ),
                };
                let datasource = if target["datasource"].is_null() {
                    &panel["datasource"]
                } else {
                    &target["datasource"]
                };
                match datasource_kind(datasource) {
                    Some(Language::InfluxQL) => {
                        if target["rawQuery"].as_bool() != Some(true) {
                            return Err(shape(
                                "InfluxDB targets must be raw InfluxQL (rawQuery: true), so the \
                                 same text runs on InfluxDB 1.x, 2.x and 3.x"
                                    .to_owned(),
                            ));
                        }
                        let query = target["query"]
                            .as_str()
                            .ok_or_else(|| shape("no `query` string".to_owned()))?;
                        out.push(PanelQuery::InfluxQL {
                            panel_title: title.to_owned(),
                            query: query.to_owned(),
                        });
                    }
                    Some(Language::PromQL) => {
                        let expr = target["expr"]
                            .as_str()
                            .ok_or_else(|| shape("no `expr` string".to_owned()))?;
                        out.push(PanelQuery::PromQL {
                            panel_title: title.to_owned(),
                            expr: expr.to_owned(),
                        });
                    }
                    None => {
                        return Err(shape(format!(
                            "datasource {datasource} is neither {INFLUXDB_UID} nor {PROMETHEUS_UID}"
                        )))
                    }
                }
            }
        }
        Ok(out)
    }

    /// The template variables, in the order Grafana shows them.
    pub fn variables(&self) -> Result<Vec<TemplateVariable>, DashboardError> {
        let list = &self.json["templating"]["list"];
        let mut out = Vec::new();
        for v in list.as_array().into_iter().flatten() {
            let shape = |what: &str| DashboardError::Shape {
                path: self.path.clone(),
                what: format!("template variable {}: {what}", v["name"]),
            };
            let name = v["name"].as_str().ok_or_else(|| shape("no name"))?;
            let kind = v["type"].as_str().ok_or_else(|| shape("no type"))?;
            // Newer Grafana versions store some variable queries as {"query": "..."}.
            let query = match &v["query"] {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("query")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                _ => String::new(),
            };
            let datasource_uid = match &v["datasource"] {
                Value::Object(o) => o.get("uid").and_then(Value::as_str).map(str::to_owned),
                Value::String(s) => Some(s.clone()),
                _ => None,
            };
            out.push(TemplateVariable {
                name: name.to_owned(),
                kind: kind.to_owned(),
                datasource_uid,
                query,
            });
        }
        Ok(out)
    }
}

/// The query language a datasource reference speaks, by UID or by type.
enum Language {
    InfluxQL,
    PromQL,
}

fn datasource_kind(datasource: &Value) -> Option<Language> {
    let uid = datasource["uid"].as_str().or(datasource.as_str());
    let kind = datasource["type"].as_str();
    match (uid, kind) {
        (Some(INFLUXDB_UID), _) | (_, Some("influxdb")) => Some(Language::InfluxQL),
        (Some(PROMETHEUS_UID), _) | (_, Some("prometheus")) => Some(Language::PromQL),
        _ => None,
    }
}

/// A template variable or macro reference in a query: `$name`, `${name}`,
/// `${name:format}` or the old `[[name]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateRef {
    /// `symbol`, `timeFilter`, `__interval`, ...
    pub name: String,
    /// Where the whole reference sits in the text.
    pub range: Range<usize>,
}

/// Every template reference in `text`, in order. Names are the longest run of letters,
/// digits and `_` (so `$__interval_ms` is not `$__interval`), as in Grafana.
pub fn template_refs(text: &str) -> Vec<TemplateRef> {
    let bytes = text.as_bytes();
    let word_end = |from: usize| {
        let mut i = from;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        i
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let found = match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => text[i + 2..].find('}').and_then(|len| {
                let inner = &text[i + 2..i + 2 + len];
                let name = inner.split([':', '.']).next().unwrap_or_default();
                (!name.is_empty() && word_end(i + 2) == i + 2 + name.len())
                    .then(|| (name.to_owned(), i + 3 + len))
            }),
            b'$' => {
                let end = word_end(i + 1);
                (end > i + 1).then(|| (text[i + 1..end].to_owned(), end))
            }
            b'[' if text[i..].starts_with("[[") => text[i + 2..].find("]]").and_then(|len| {
                let inner = &text[i + 2..i + 2 + len];
                let name = inner.split(':').next().unwrap_or_default();
                (!name.is_empty() && word_end(i + 2) == i + 2 + name.len())
                    .then(|| (name.to_owned(), i + 4 + len))
            }),
            _ => None,
        };
        match found {
            Some((name, end)) => {
                out.push(TemplateRef {
                    name,
                    range: i..end,
                });
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

/// Replaces every reference `resolve` knows; leaves the others as written.
fn expand(text: &str, resolve: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len() + 32);
    let mut last = 0;
    for r in template_refs(text) {
        if let Some(value) = resolve(&r.name) {
            out.push_str(&text[last..r.range.start]);
            out.push_str(&value);
            last = r.range.end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// An InfluxQL query as Grafana would send it for this symbol, candle interval, source and
/// time range (Unix ms, both ends included):
///
/// * `$timeFilter` → `time >= {from_ms}ms and time <= {to_ms}ms` (Grafana's own spelling);
/// * `$__interval` → [`influxql_interval`]`(from_ms, to_ms)`, `$__interval_ms` in ms;
/// * `$__from` / `$__to` → `from_ms` / `to_ms`;
/// * `$symbol`, `$candle_interval`, `$source` → the values, with `\` and `'` escaped because
///   the dashboards put them inside single-quoted InfluxQL strings.
///
/// Any other reference stays as written (see [`template_refs`] to find it).
pub fn expand_influxql(
    query: &str,
    symbol: &str,
    interval: &str,
    source: &str,
    from_ms: i64,
    to_ms: i64,
) -> String {
    expand(query, |name| match name {
        "timeFilter" => Some(format!("time >= {from_ms}ms and time <= {to_ms}ms")),
        "__interval" => Some(influxql_interval(from_ms, to_ms)),
        "__interval_ms" => Some(influxql_interval_ms(from_ms, to_ms).to_string()),
        "__from" => Some(from_ms.to_string()),
        "__to" => Some(to_ms.to_string()),
        "symbol" => Some(influxql_string_escape(symbol)),
        CANDLE_INTERVAL_VAR => Some(influxql_string_escape(interval)),
        "source" => Some(influxql_string_escape(source)),
        _ => None,
    })
}

/// One InfluxQL panel query with its variables and macros replaced, as Grafana sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandedInfluxQL {
    /// `dashboard / panel`, plus `[candle_interval X]` for a per-interval query.
    pub what: String,
    pub query: String,
}

/// Every InfluxQL panel query of `d` as Grafana would send it for this symbol, source and
/// time range: a query that reads `$candle_interval` once per value in `intervals`, the
/// others once (with the first value). Identical texts are sent once.
pub fn influxql_variants(
    d: &Dashboard,
    symbol: &str,
    intervals: &[String],
    source: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<ExpandedInfluxQL>, DashboardError> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for q in d.queries()? {
        let PanelQuery::InfluxQL { panel_title, query } = q else {
            continue;
        };
        let per_interval = template_refs(&query)
            .iter()
            .any(|r| r.name == CANDLE_INTERVAL_VAR);
        let values = if per_interval {
            intervals
        } else {
            &intervals[..intervals.len().min(1)]
        };
        for interval in values {
            let text = expand_influxql(&query, symbol, interval, source, from_ms, to_ms);
            if !seen.insert(text.clone()) {
                continue;
            }
            let what = if per_interval {
                format!(
                    "{} / {panel_title} [{CANDLE_INTERVAL_VAR} {interval}]",
                    d.title
                )
            } else {
                format!("{} / {panel_title}", d.title)
            };
            out.push(ExpandedInfluxQL { what, query: text });
        }
    }
    Ok(out)
}

/// A PromQL expression as Grafana would send it: `$__rate_interval` and `$__interval` →
/// [`PROMQL_RATE_INTERVAL`], `$__range` → [`PROMQL_RANGE`] (`$__range_s`, `$__range_ms`,
/// `$__interval_ms` as numbers). Any other reference stays as written.
pub fn expand_promql(expr: &str) -> String {
    expand(expr, |name| match name {
        "__rate_interval" | "__interval" => Some(PROMQL_RATE_INTERVAL.to_owned()),
        "__interval_ms" => Some(duration_ms(PROMQL_RATE_INTERVAL).to_string()),
        "__range" => Some(PROMQL_RANGE.to_owned()),
        "__range_s" => Some((PROMQL_RANGE_MS / 1000).to_string()),
        "__range_ms" => Some(PROMQL_RANGE_MS.to_string()),
        _ => None,
    })
}

/// The `$__interval` Grafana picks for an InfluxQL panel over `[from_ms, to_ms]`: the range
/// divided by [`MAX_DATA_POINTS`], rounded up the way Grafana rounds intervals (1m, 2m, 5m,
/// 10m, 15m, 20m, 30m, 1h, 2h, 3h, 6h, 12h, 1d, 7d, 30d, 365d) and never below
/// [`INFLUXQL_MIN_INTERVAL_MS`]. Always a valid InfluxQL duration (`5m`, `1h`, `7d`).
pub fn influxql_interval(from_ms: i64, to_ms: i64) -> String {
    let ms = influxql_interval_ms(from_ms, to_ms);
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

fn influxql_interval_ms(from_ms: i64, to_ms: i64) -> i64 {
    const MINUTE: i64 = 60_000;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    // (below this raw interval, use this one), after Grafana's kbn.roundInterval
    const LADDER: [(i64, i64); 15] = [
        (90_000, MINUTE),
        (210_000, 2 * MINUTE),
        (450_000, 5 * MINUTE),
        (750_000, 10 * MINUTE),
        (1_050_000, 15 * MINUTE),
        (1_500_000, 20 * MINUTE),
        (2_700_000, 30 * MINUTE),
        (5_400_000, HOUR),
        (9_000_000, 2 * HOUR),
        (16_200_000, 3 * HOUR),
        (30_600_000, 6 * HOUR),
        (86_400_000, 12 * HOUR),
        (604_800_000, DAY),
        (1_814_400_000, 7 * DAY),
        (3_628_800_000, 30 * DAY),
    ];
    let raw = (to_ms - from_ms).max(0) / MAX_DATA_POINTS;
    let rounded = LADDER
        .iter()
        .find(|(below, _)| raw < *below)
        .map_or(365 * DAY, |(_, interval)| *interval);
    rounded.max(INFLUXQL_MIN_INTERVAL_MS)
}

/// Milliseconds of a simple duration such as `1m`, `30s`, `1h` (the constants above).
fn duration_ms(d: &str) -> i64 {
    let (n, unit) = d.split_at(d.len() - 1);
    let n: i64 = n.parse().expect("a constant duration");
    n * match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => unreachable!("constant durations use s, m or h"),
    }
}

fn influxql_string_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_reference_form_with_its_longest_name() {
        let text =
            "a $symbol b ${candle_interval} c ${source:raw} d [[old]] e $__interval_ms f $__interval";
        let refs = template_refs(text);
        let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "symbol",
                "candle_interval",
                "source",
                "old",
                "__interval_ms",
                "__interval"
            ]
        );
        assert_eq!(&text[refs[2].range.clone()], "${source:raw}");
        assert_eq!(&text[refs[3].range.clone()], "[[old]]");
    }

    #[test]
    fn a_dollar_without_a_name_is_not_a_reference() {
        assert!(template_refs("x =~ /^BTC$/ and $ and ${} and [[]]").is_empty());
    }

    #[test]
    fn influxql_expansion_matches_grafanas_spelling() {
        let q = "SELECT last(\"close\") FROM \"candle\" WHERE \"symbol\" = '$symbol' AND \
                 \"interval\" = '${candle_interval}' AND \"source\" = '$source' AND $timeFilter \
                 GROUP BY time($__interval) fill(null)";
        // 6 hours → 21.6 s raw, below Grafana's 1m minimum for this datasource
        let from = 1_700_000_000_000;
        let to = from + 6 * 3_600_000;
        assert_eq!(
            expand_influxql(q, "BTC-USDT", "5m", "replay", from, to),
            "SELECT last(\"close\") FROM \"candle\" WHERE \"symbol\" = 'BTC-USDT' AND \
             \"interval\" = '5m' AND \"source\" = 'replay' AND \
             time >= 1700000000000ms and time <= 1700021600000ms \
             GROUP BY time(1m) fill(null)"
        );
    }

    #[test]
    fn influxql_values_are_escaped_for_single_quoted_strings() {
        let q = r#"WHERE "symbol" = '$symbol'"#;
        assert_eq!(
            expand_influxql(q, r"O'B\X", "1m", "live", 0, 1),
            r#"WHERE "symbol" = 'O\'B\\X'"#
        );
    }

    #[test]
    fn unknown_references_are_left_for_the_caller_to_find() {
        let out = expand_influxql(
            "SELECT $nope FROM x WHERE $timeFilter",
            "A",
            "1m",
            "s",
            0,
            1,
        );
        assert_eq!(out, "SELECT $nope FROM x WHERE time >= 0ms and time <= 1ms");
        let left: Vec<String> = template_refs(&out).into_iter().map(|r| r.name).collect();
        assert_eq!(left, ["nope"]);
    }

    #[test]
    fn interval_follows_the_range_and_never_drops_below_a_minute() {
        let h = 3_600_000;
        assert_eq!(influxql_interval(0, h), "1m");
        assert_eq!(influxql_interval(0, 24 * h), "1m"); // 86.4 s
        assert_eq!(influxql_interval(0, 48 * h), "2m"); // 172.8 s
        assert_eq!(influxql_interval(0, 7 * 24 * h), "10m"); // 604.8 s
        assert_eq!(influxql_interval(0, 30 * 24 * h), "30m"); // 2592 s
        assert_eq!(influxql_interval(0, 400 * 24 * h), "12h"); // 34560 s
        assert_eq!(influxql_interval(5, 5), "1m");
    }

    #[test]
    fn promql_macros_become_fixed_windows() {
        assert_eq!(
            expand_promql("sum(rate(x_total[$__rate_interval])) / $__range_s + y[$__range]"),
            "sum(rate(x_total[1m])) / 3600 + y[1h]"
        );
        assert_eq!(expand_promql("up"), "up");
    }

    #[test]
    fn custom_variables_list_their_values() {
        let v = TemplateVariable {
            name: CANDLE_INTERVAL_VAR.into(),
            kind: "custom".into(),
            datasource_uid: None,
            query: "1m, 5m,15m,1h".into(),
        };
        assert_eq!(v.custom_values(), ["1m", "5m", "15m", "1h"]);
    }
}
