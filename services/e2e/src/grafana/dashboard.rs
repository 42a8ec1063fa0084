//! The dashboards as files: every `grafana/dashboards/*.json` read into a [`Dashboard`],
//! with the queries its panels and template variables run, each tagged with the language
//! its datasource speaks. What a query becomes once Grafana expands it is `expand.rs`'s
//! part; how the InfluxDB datasource authenticates is `datasource.rs`'s.

use serde_json::Value;
use std::path::{Path, PathBuf};

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
    /// The datasource provisioning is not what
    /// [`influx_datasource_auth`](super::influx_datasource_auth) expects.
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

#[cfg(test)]
mod tests {
    use super::*;

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
