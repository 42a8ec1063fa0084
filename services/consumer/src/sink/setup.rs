//! Before the first write: v1 creates the database when it is missing and checks the
//! retention policy (InfluxQL over `/query`), v2 checks that the bucket exists in the org.
//! Answers that retrying cannot fix fail the consumer at start, naming what to change.

use super::client::InfluxSink;
use super::config::{endpoint, InfluxApi};
use super::error::{error_chain, error_message, json_body, SinkError};
use super::retry::Backoff;
use candlepipe_model::shutdown::Shutdown;
use reqwest::StatusCode;

impl InfluxSink {
    /// Makes sure writes can succeed before the first one: v1 creates the database if it is
    /// missing and checks the retention policy; v2 checks that the bucket exists in the org.
    /// Retries while InfluxDB is unreachable or failing; [`SinkError::Fatal`] when it answers
    /// that the configuration is wrong.
    pub async fn prepare(&self, stop: &Shutdown) -> Result<(), SinkError> {
        let mut stop = stop.clone();
        let mut backoff = Backoff::new(self.inner.cfg.max_backoff);
        loop {
            let attempt = match self.inner.cfg.api {
                InfluxApi::V1 => self.prepare_v1().await,
                InfluxApi::V2 => self.prepare_v2().await,
            };
            match attempt {
                Ok(()) => return Ok(()),
                Err(Prepare::Fatal(why)) => {
                    tracing::error!(error = %why, "InfluxDB is not usable as configured");
                    return Err(SinkError::Fatal(why));
                }
                Err(Prepare::Retry(why)) => {
                    tracing::warn!(error = %why, attempt = backoff.attempts + 1,
                        "InfluxDB not ready yet; retrying");
                    backoff.pause(&mut stop).await?;
                }
            }
        }
    }

    async fn prepare_v1(&self) -> Result<(), Prepare> {
        let cfg = &self.inner.cfg;
        let databases = self.influxql("SHOW DATABASES").await?;
        if !first_column(&databases).iter().any(|d| d == &cfg.db) {
            self.create_database().await?;
            tracing::info!(db = %cfg.db, "created the InfluxDB database");
        }
        if let Some(rp) = &cfg.retention_policy {
            let policies = self
                .influxql(&format!(
                    "SHOW RETENTION POLICIES ON {}",
                    quote_ident(&cfg.db)
                ))
                .await?;
            if !first_column(&policies).iter().any(|p| p == rp) {
                return Err(Prepare::Fatal(format!(
                    "retention policy {rp:?} does not exist on database {:?}; create it or drop \
                     the retention policy setting",
                    cfg.db
                )));
            }
        }
        Ok(())
    }

    pub(super) async fn create_database(&self) -> Result<(), Prepare> {
        self.influxql(&format!(
            "CREATE DATABASE {}",
            quote_ident(&self.inner.cfg.db)
        ))
        .await
        .map(drop)
    }

    /// Runs one InfluxQL statement (v1 `/query`) and returns its first result.
    async fn influxql(&self, statement: &str) -> Result<serde_json::Value, Prepare> {
        let url = endpoint(&self.base(), &["query"], &[]);
        let req = self.inner.client.post(url).form(&[("q", statement)]);
        let resp = self
            .authorize(req)
            .send()
            .await
            .map_err(|e| Prepare::Retry(format!("{statement}: {}", error_chain(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            let message = error_message(resp).await;
            let why = format!("{statement}: InfluxDB answered {status}: {message}");
            return Err(
                if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    Prepare::Retry(why)
                } else {
                    Prepare::Fatal(why)
                },
            );
        }
        let json = json_body(resp).await.map_err(|e| {
            Prepare::Fatal(format!(
                "{statement}: InfluxDB answered non-JSON ({e}); is --influx-url an InfluxDB?"
            ))
        })?;
        let result = json["results"][0].clone();
        if let Some(err) = result.get("error").and_then(|e| e.as_str()) {
            return Err(Prepare::Fatal(format!("{statement}: {err}")));
        }
        Ok(result)
    }

    async fn prepare_v2(&self) -> Result<(), Prepare> {
        let cfg = &self.inner.cfg;
        let org = cfg.org.as_deref().unwrap_or_default();
        let url = endpoint(
            &self.base(),
            &["api", "v2", "buckets"],
            &[("name", &cfg.bucket), ("org", org)],
        );
        let resp = self
            .authorize(self.inner.client.get(url))
            .send()
            .await
            .map_err(|e| Prepare::Retry(error_chain(&e)))?;
        let status = resp.status();
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Prepare::Retry(format!(
                "bucket lookup: {status}: {}",
                error_message(resp).await
            )));
        }
        if !status.is_success() {
            return Err(Prepare::Fatal(format!(
                "looking up bucket {:?} in organization {org:?}: InfluxDB answered {status}: {}",
                cfg.bucket,
                error_message(resp).await
            )));
        }
        let json = json_body(resp)
            .await
            .map_err(|e| Prepare::Fatal(format!("bucket lookup answered non-JSON: {e}")))?;
        let found = json["buckets"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["name"].as_str() == Some(cfg.bucket.as_str()));
        if found {
            Ok(())
        } else {
            Err(Prepare::Fatal(format!(
                "bucket {:?} not found in organization {org:?}; create it (influx bucket create \
                 --name {} --org {org}) or fix --influx-bucket/--influx-org",
                cfg.bucket, cfg.bucket
            )))
        }
    }
}

/// Why a [`InfluxSink::prepare`] attempt failed.
pub(super) enum Prepare {
    Retry(String),
    Fatal(String),
}

impl Prepare {
    pub(super) fn message(&self) -> &str {
        match self {
            Prepare::Retry(m) | Prepare::Fatal(m) => m,
        }
    }
}

/// An InfluxQL double-quoted identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The first column of every row of an InfluxQL result (database or policy names).
fn first_column(result: &serde_json::Value) -> Vec<String> {
    result["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten())
        .filter_map(|row| row[0].as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_for_influxql() {
        assert_eq!(quote_ident(r#"my "db"\x"#), r#""my \"db\"\\x""#);
    }

    #[test]
    fn the_first_column_lists_database_names() {
        let result = serde_json::json!({"series": [{"name": "databases", "columns": ["name"],
            "values": [["_internal"], ["crypto"]]}]});
        assert_eq!(first_column(&result), ["_internal", "crypto"]);
        assert!(first_column(&serde_json::json!({"statement_id": 0})).is_empty());
    }
}
