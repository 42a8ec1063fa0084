//! Alertmanager (from Debian, `prometheus-alertmanager` 0.25) with a given config: the
//! alerting test sends the repo's alerts from a real Prometheus through it to a local
//! webhook, so the shipped routing is what gets tested.
//!
//! Upstream names the binary `alertmanager`, Debian `prometheus-alertmanager`; either is
//! used. Clustering is switched off (`--cluster.listen-address=`): a single instance needs
//! no gossip, and its default port 9094 would clash between tests running at once.

use super::{temp_dir, START_TIMEOUT};
use crate::http_client::get;
use crate::process::{free_port, require_binary_named, ChildServer};
use std::process::Command;
use tempfile::TempDir;

const ALERTMANAGER_INSTALL: &str = "apt-get update && apt-get install -y prometheus-alertmanager";

/// An Alertmanager on a loopback port with a given config.
pub struct Alertmanager {
    server: ChildServer,
    _dir: TempDir,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `127.0.0.1:<port>`: what Prometheus' `alerting.alertmanagers` targets take.
    pub address: String,
}

impl Alertmanager {
    /// Starts Alertmanager with `config` (YAML), its data in a temp dir.
    pub fn start(config: &str) -> Alertmanager {
        let bin = require_binary_named(
            &["alertmanager", "prometheus-alertmanager"],
            ALERTMANAGER_INSTALL,
        );
        let dir = temp_dir("alertmanager-");
        let conf = dir.path().join("alertmanager.yml");
        std::fs::write(&conf, config).expect("write alertmanager.yml");
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn");
        let log = dir.path().join("alertmanager.log");
        let mut server = ChildServer::spawn("alertmanager", cmd, log);
        let ready = format!("http://127.0.0.1:{port}/-/ready");
        server.wait_ready(START_TIMEOUT, || matches!(get(&ready), Some((200, _))));
        Alertmanager {
            server,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
            address: format!("127.0.0.1:{port}"),
        }
    }

    /// The alerts Alertmanager holds now (`GET /api/v2/alerts`); panics unless it answered.
    pub fn alerts(&self) -> serde_json::Value {
        let url = format!("{}/api/v2/alerts", self.url);
        let (status, body) =
            get(&url).unwrap_or_else(|| panic!("alertmanager did not answer {url}"));
        assert!(
            status < 300,
            "alertmanager answered {status} to {url}: {body}"
        );
        serde_json::from_str(&body).expect("alertmanager JSON")
    }

    /// The last lines Alertmanager logged (notification failures show here).
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }
}
