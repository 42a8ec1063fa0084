//! Prometheus (from Debian) with a given config: the tests load the repo's scrape config and
//! rules and run the dashboards' PromQL against it.

use super::{temp_dir, START_TIMEOUT};
use crate::http_client::{encode_query, get};
use crate::process::{free_port, require_binary, ChildServer};
use std::process::Command;
use tempfile::TempDir;

const PROMETHEUS_INSTALL: &str = "apt-get update && apt-get install -y prometheus";

/// A Prometheus server on a loopback port with a given config.
pub struct Prometheus {
    _server: ChildServer,
    _dir: TempDir,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML). `files` are written next to it first
    /// (rule files the config names, relative to the config's folder).
    pub fn start(config: &str, files: &[(&str, &str)]) -> Prometheus {
        let bin = require_binary("prometheus", PROMETHEUS_INSTALL);
        let dir = temp_dir("prometheus-");
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).expect("write prometheus file");
        }
        let conf = dir.path().join("prometheus.yml");
        std::fs::write(&conf, config).expect("write prometheus.yml");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let log = dir.path().join("prometheus.log");
        let mut server = ChildServer::spawn("prometheus", cmd, log);
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        server.wait_ready(START_TIMEOUT, || matches!(get(&ready), Some((200, _))));
        Prometheus {
            _server: server,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Runs an instant PromQL query; returns `data.result`.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let url = format!(
            "{}/api/v1/query?{}",
            self.url,
            encode_query(&[("query", promql)])
        );
        self.result(&url, promql)
    }

    /// Runs a range query over the last `secs` seconds at `step` seconds; returns `data.result`.
    pub fn query_range(&self, promql: &str, secs: u64, step: u64) -> serde_json::Value {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url = format!(
            "{}/api/v1/query_range?{}",
            self.url,
            encode_query(&[
                ("query", promql),
                ("start", &(now - secs).to_string()),
                ("end", &now.to_string()),
                ("step", &step.to_string()),
            ])
        );
        self.result(&url, promql)
    }

    /// `data` of the answer to `GET /api/v1/<path>` (e.g. `alerts`, `alertmanagers`);
    /// panics unless Prometheus answered it.
    pub fn api(&self, path: &str) -> serde_json::Value {
        self.data(&format!("{}/api/v1/{path}", self.url), path)
    }

    /// `data.result` of a query API answer; panics unless Prometheus answered it.
    fn result(&self, url: &str, promql: &str) -> serde_json::Value {
        self.data(url, promql)["result"].clone()
    }

    /// `data` of an API answer; panics unless Prometheus answered it.
    fn data(&self, url: &str, what: &str) -> serde_json::Value {
        let (status, body) =
            get(url).unwrap_or_else(|| panic!("prometheus did not answer {what:?}"));
        assert!(
            status < 300,
            "prometheus answered {status} to {what:?}: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus JSON");
        v["data"].clone()
    }
}
