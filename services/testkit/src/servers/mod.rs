//! The real servers the integration tests use, one file each: Apache Kafka (KRaft), InfluxDB 2
//! (what compose runs and the consumer's default write API), InfluxDB 1.x (for the v1 write
//! API the README also promises), Prometheus and Alertmanager.
//!
//! Kafka and InfluxDB 2 are not Debian packages: `scripts/test.sh` (through
//! `scripts/lib/install.sh`) fetches Kafka's jars from Maven Central and builds `influxd` 2
//! from the Go module proxy into a cache outside the repo, keyed by the versions in
//! `scripts/lib/versions.env`. The harness finds them there (or where `CANDLEPIPE_KAFKA_LIBS`
//! and `CANDLEPIPE_INFLUXD2` point), and fails with the install command when they are missing.

mod alertmanager;
mod influxdb1;
mod influxdb2;
mod kafka;
mod key_partition;
mod prometheus;
mod template;

pub use alertmanager::Alertmanager;
pub use influxdb1::Influxd1;
pub use influxdb2::{Influxd, V1Credential, ORG as INFLUX_ORG, TOKEN as INFLUX_TOKEN};
pub use kafka::Kafka;
pub use key_partition::java_partitions;
pub use prometheus::Prometheus;

use std::path::PathBuf;
use std::time::Duration;
use tempfile::TempDir;

/// How long a server may take to answer after it was started.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The command that installs everything the harness runs.
pub(crate) const INSTALL_ALL: &str = "scripts/test.sh (or: bash -c 'source scripts/lib/install.sh && ensure_kafka && ensure_influxdb2')";

pub(crate) fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

/// One of `scripts/lib/versions.env`'s pins, e.g. `version("CANDLEPIPE_KAFKA_VERSION")`.
pub fn version(key: &str) -> &'static str {
    const VERSIONS: &str = include_str!("../../../../scripts/lib/versions.env");
    VERSIONS
        .lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("scripts/lib/versions.env has no {key}"))
}

/// Where `scripts/lib/install.sh` caches what it builds or fetches: `$CANDLEPIPE_CACHE`,
/// else `$XDG_CACHE_HOME/candlepipe`, else `~/.cache/candlepipe`.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CANDLEPIPE_CACHE") {
        return d.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache")
        });
    base.join("candlepipe")
}

/// Every row of a query answer's first statement, as (series tags + column → value) maps;
/// panics on an InfluxQL error. The same JSON shape from InfluxDB 1.x and 2.x.
pub(crate) fn influxql_rows(
    answer: &serde_json::Value,
    q: &str,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    if let Some(err) = answer["results"][0].get("error") {
        panic!("InfluxQL error for {q:?}: {err}");
    }
    let mut out = Vec::new();
    for series in answer["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let cols: Vec<String> = series["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_owned())
            .collect();
        for row in series["values"].as_array().unwrap() {
            let mut m = serde_json::Map::new();
            if let Some(tags) = series.get("tags").and_then(|t| t.as_object()) {
                for (k, v) in tags {
                    m.insert(k.clone(), v.clone());
                }
            }
            for (c, v) in cols.iter().zip(row.as_array().unwrap()) {
                m.insert(c.clone(), v.clone());
            }
            out.push(m);
        }
    }
    out
}
