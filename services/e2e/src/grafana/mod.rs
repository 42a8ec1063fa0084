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

mod dashboard;
mod datasource;
mod expand;

pub use dashboard::{
    dashboards_dir, load_dashboards, load_dashboards_from, repo_root, Dashboard, DashboardError,
    PanelQuery, TemplateVariable, CANDLE_INTERVAL_VAR, INFLUXDB_UID, MARKET_DASHBOARD_UID,
    PIPELINE_DASHBOARD_UID, PROMETHEUS_UID,
};
pub use datasource::{datasources_path, influx_datasource_auth, InfluxDatasourceAuth};
pub use expand::{
    expand_influxql, expand_promql, influxql_interval, influxql_variants, template_refs,
    ExpandedInfluxQL, TemplateRef, INFLUXQL_MIN_INTERVAL_MS, MAX_DATA_POINTS, PROMQL_RANGE,
    PROMQL_RATE_INTERVAL,
};
