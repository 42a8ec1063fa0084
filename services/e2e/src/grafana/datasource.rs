//! The provisioned datasources (`grafana/provisioning/datasources/datasources.yml`): how
//! Grafana's InfluxDB datasource authenticates, so a test sends its queries with the same
//! credential Grafana sends, and fails if the file ever gives Grafana a token instead.

use super::dashboard::{repo_root, DashboardError, INFLUXDB_UID};
use std::path::PathBuf;
use yaml_rust2::YamlLoader;

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
