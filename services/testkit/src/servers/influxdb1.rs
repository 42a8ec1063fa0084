//! The three real servers the integration tests use.

use crate::process::{free_port, require_binary, ChildServer};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

const TANSU_INSTALL: &str = "cargo install tansu --locked --features dynostore,libsql";
const INFLUXD_INSTALL: &str = "apt-get update && apt-get install -y influxdb";
const PROMETHEUS_INSTALL: &str = "apt-get update && apt-get install -y prometheus";
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create temp dir")
}

fn http_get(url: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .new_agent();
    let mut resp = agent.get(url).call().ok()?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((status, body))
}

fn http_post_form(url: &str, form: &[(&str, &str)]) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut resp = agent.post(url).send_form(form.iter().copied()).ok()?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// `k=v&…` with the values percent-encoded (RFC 3986 unreserved characters kept).
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Where tansu keeps the log.
#[derive(Clone, Debug)]
pub enum TansuStorage {
    /// `memory://`: gone when the broker stops.
    Memory,
    /// `sqlite://<file>`: survives a broker restart (fault tests).
    Sqlite(PathBuf),
}

/// A tansu broker on a loopback port.
pub struct Tansu {
    server: ChildServer,
    port: u16,
    storage: TansuStorage,
    _dir: TempDir,
    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub brokers: String,
}

impl Tansu {
    /// The broker shared by every test of this binary (memory storage).
    pub fn shared() -> &'static Tansu {
        static SHARED: OnceLock<Tansu> = OnceLock::new();
        SHARED.get_or_init(|| Tansu::start(TansuStorage::Memory))
    }

    /// A private broker; killed on drop.
    pub fn start(storage: TansuStorage) -> Tansu {
        let dir = temp_dir("tansu-");
        let port = free_port();
        let server = Self::launch(port, &storage, &dir);
        Tansu {
            server,
            port,
            storage,
            _dir: dir,
            brokers: format!("127.0.0.1:{port}"),
        }
    }

    fn launch(port: u16, storage: &TansuStorage, dir: &TempDir) -> ChildServer {
        let bin = require_binary("tansu", TANSU_INSTALL);
        let url = format!("tcp://127.0.0.1:{port}");
        let engine = match storage {
            TansuStorage::Memory => "memory://tansu/".to_owned(),
            // tansu reads `sqlite:///abs` as relative to its working directory: one more slash.
            TansuStorage::Sqlite(p) => format!("sqlite:///{}", p.display()),
        };
        let mut cmd = Command::new(bin);
        cmd.arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &engine])
            .current_dir(dir.path())
            // TANSU_LOG=<filter> raises the broker's log level when diagnosing a test.
            .env(
                "RUST_LOG",
                std::env::var("TANSU_LOG").unwrap_or("warn".into()),
            );
        let log = dir.path().join(format!("tansu-{port}.log"));
        let mut server = ChildServer::spawn("tansu", cmd, log);
        let brokers = format!("127.0.0.1:{port}");
        server.wait_ready(START_TIMEOUT, || crate::kafka::broker_answers(&brokers));
        server
    }

    /// Kills the broker (SIGKILL).
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts the broker again on the same port and storage.
    pub fn restart(&mut self) {
        self.server.kill();
        self.server = Self::launch(self.port, &self.storage, &self._dir);
    }
}

/// An InfluxDB 1.x server (`influxd`) on a loopback port.
pub struct Influxd {
    server: ChildServer,
    port: u16,
    dir: TempDir,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Influxd {
    /// The influxd shared by every test of this binary.
    pub fn shared() -> &'static Influxd {
        static SHARED: OnceLock<Influxd> = OnceLock::new();
        SHARED.get_or_init(Influxd::start)
    }

    /// A private influxd; killed on drop.
    pub fn start() -> Influxd {
        let dir = temp_dir("influxd-");
        let port = free_port();
        let server = Self::launch(port, &dir);
        Influxd {
            server,
            port,
            dir,
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
        server.wait_ready(START_TIMEOUT, || matches!(http_get(&ping), Some((204, _))));
        server
    }

    /// Kills the server (SIGKILL); its data stays in the temp dir.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port with the same data.
    pub fn restart(&mut self) {
        self.server.kill();
        self.server = Self::launch(self.port, &self.dir);
    }

    /// Runs InfluxQL and returns the JSON answer (timestamps as epoch ms). Panics on HTTP
    /// errors; InfluxQL errors come back in the JSON (`results[i].error`).
    pub fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let (status, body) = http_post_form(
            &format!("{}/query", self.url),
            &[("db", db), ("q", q), ("epoch", "ms")],
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
        let v = self.query(db, q);
        if let Some(err) = v["results"][0].get("error") {
            panic!("InfluxQL error for {q:?}: {err}");
        }
        let mut out = Vec::new();
        for series in v["results"][0]["series"].as_array().into_iter().flatten() {
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

    /// Whether the server is up (for tests that stop it).
    pub fn answers(&self) -> bool {
        matches!(http_get(&format!("{}/ping", self.url)), Some((204, _)))
    }
}

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
        server.wait_ready(START_TIMEOUT, || matches!(http_get(&ready), Some((200, _))));
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
        let (status, body) =
            http_get(&url).unwrap_or_else(|| panic!("prometheus did not answer {promql:?}"));
        assert!(
            status < 300,
            "prometheus answered {status} to {promql:?}: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus JSON");
        v["data"]["result"].clone()
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
        let (status, body) =
            http_get(&url).unwrap_or_else(|| panic!("prometheus did not answer {promql:?}"));
        assert!(
            status < 300,
            "prometheus answered {status} to {promql:?}: {body}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).expect("prometheus JSON");
        v["data"]["result"].clone()
    }
}

/// Plain HTTP GET for tests (status, body); `None` when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    http_get(url)
}
