//! InfluxDB 1.x (`influxd` from Debian, 1.6.7): the server behind the consumer's v1 write API
//! (`--influx-api v1`, `/write?db=`), which the README promises alongside the v2 default.

use super::{influxql_rows, temp_dir, START_TIMEOUT};
use crate::http_client::{get, post_form};
use crate::process::{free_port, require_binary, ChildServer, Relaunchable};
use std::process::Command;
use std::sync::OnceLock;
use tempfile::TempDir;

const INFLUXD_INSTALL: &str = "apt-get update && apt-get install -y influxdb";

/// An InfluxDB 1.x server (`/usr/bin/influxd`) on a loopback port.
pub struct Influxd1 {
    server: Relaunchable,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Influxd1 {
    /// The influxd shared by every test of this binary.
    pub fn shared() -> &'static Influxd1 {
        static SHARED: OnceLock<Influxd1> = OnceLock::new();
        SHARED.get_or_init(Influxd1::start)
    }

    /// A private influxd; killed on drop.
    pub fn start() -> Influxd1 {
        let dir = temp_dir("influxd-");
        let port = free_port();
        Influxd1 {
            server: Relaunchable::launch(port, dir, Self::launch),
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    fn launch(port: u16, dir: &TempDir) -> ChildServer {
        let bin = require_binary("influxd", INFLUXD_INSTALL);
        let root = dir.path();
        let rpc = free_port();
        let config = format!(
            r#"reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{root}/meta"
[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
[coordinator]
  write-timeout = "30s"
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"#,
            root = root.display()
        );
        let conf = root.join("influxdb.conf");
        std::fs::write(&conf, config).expect("write influxdb.conf");
        let mut cmd = Command::new(bin);
        cmd.arg("-config").arg(&conf);
        let log = root.join(format!("influxd-{port}.log"));
        let mut server = ChildServer::spawn("influxd", cmd, log);
        let ping = format!("http://127.0.0.1:{port}/ping");
        server.wait_ready(START_TIMEOUT, || matches!(get(&ping), Some((204, _))));
        server
    }

    /// Kills the server (SIGKILL); its data stays in the temp dir.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.server.relaunch();
    }

    /// Runs InfluxQL and returns the JSON answer (timestamps as epoch ms). Panics on HTTP
    /// errors; InfluxQL errors come back in the JSON (`results[i].error`).
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let (status, body) = post_form(
            &format!("{}/query", self.url),
            &[("db", db), ("q", q), ("epoch", "ms")],
            &[],
        )
        .unwrap_or_else(|| panic!("influxd at {} did not answer {q:?}", self.url));
        assert!(status < 300, "influxd answered {status} to {q:?}: {body}");
        serde_json::from_str(&body).expect("influxd answered JSON")
    }

    /// `CREATE DATABASE`.
    pub fn create_db(&self, db: &str) {
        self.query("", &format!("CREATE DATABASE \"{db}\""));
    }

    /// Every row of a query's first series set, as (series tags, column → value) pairs.
    pub fn rows(&self, db: &str, q: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        influxql_rows(&self.query(db, q), q)
    }

    /// Whether the server is up (for tests that stop it).
    pub fn answers(&self) -> bool {
        matches!(get(&format!("{}/ping", self.url)), Some((204, _)))
    }
}
