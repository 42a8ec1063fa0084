//! InfluxDB 2 (`influxd` 2.7, compose's version): the consumer's default write API
//! (`/api/v2/write` with a token) and the server Grafana queries with InfluxQL through
//! `/query`, `Authorization: Token`, and the bucket's virtual DBRP mapping (database = bucket
//! name, retention policy `autogen`).
//!
//! Every test takes its own bucket; [`Influxd::create_db`] creates it, so a test written
//! against "a database" reads the same on 1.x and 2.x. The server is set up through
//! `POST /api/v2/setup` with a known org, user and all-access token, as the compose image's
//! `DOCKER_INFLUXDB_INIT_*` first start does.
//!
//! Grafana does not query with that token: [`Influxd::create_read_only_credential`] creates the
//! v1 authorization (user name and password, read permission on one bucket) that compose's
//! `influxdb/initdb/` script and `scripts/stack.sh` create for it, through the same API
//! (`/private/legacy/authorizations`, what `influx v1 auth create --read-bucket` calls), and
//! [`Influxd::query_with`] sends InfluxQL with any `Authorization` header, so a test can send
//! exactly what the provisioned datasource sends (`Basic <user:password>`).

use super::template::{render, INFLUXD_CONFIG_TOML};
use super::{cache_dir, influxql_rows, temp_dir, version, INSTALL_ALL, START_TIMEOUT};
use crate::http_client::{encode_query, get, get_with, post_body, post_form};
use crate::process::{free_port, wait_until, ChildServer, Relaunchable};
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use tempfile::TempDir;

/// The organization every test server is set up with.
pub const ORG: &str = "candlepipe";
/// The all-access operator token every test server is set up with.
pub const TOKEN: &str = "candlepipe-test-token";

/// A v1 authorization: a user name and password that InfluxQL's `/query` accepts as HTTP
/// Basic credentials, with only the permissions it was created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Credential {
    pub username: String,
    pub password: String,
}

impl V1Credential {
    /// The `Authorization` header value Grafana sends for a datasource with `basicAuth: true`,
    /// `basicAuthUser` and `basicAuthPassword`: `Basic base64(user:password)`.
    pub fn basic_auth_header(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// An InfluxDB 2 server on a loopback port, set up with [`ORG`] and [`TOKEN`].
pub struct Influxd {
    server: Relaunchable,
    /// The organization's id (for bucket creation).
    pub org_id: String,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl Influxd {
    /// The server shared by every test of this binary.
    pub fn shared() -> &'static Influxd {
        static SHARED: OnceLock<Influxd> = OnceLock::new();
        SHARED.get_or_init(Influxd::start)
    }

    /// A private server; killed on drop.
    pub fn start() -> Influxd {
        let dir = temp_dir("influxd2-");
        let port = free_port();
        let server = Relaunchable::launch(port, dir, Self::launch);
        let url = format!("http://127.0.0.1:{port}");
        let org_id = setup(&url);
        Influxd {
            server,
            org_id,
            url,
        }
    }

    fn launch(port: u16, dir: &TempDir) -> ChildServer {
        let bin = influxd2_binary();
        let root = dir.path();
        let config = render(
            INFLUXD_CONFIG_TOML,
            &[("DIR", &root.display()), ("PORT", &port)],
        );
        std::fs::write(root.join("config.toml"), config).expect("write config.toml");
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            // Quieter than the native stack's: the tests' logs are read only when one fails.
            .arg("--log-level=warn")
            // Its config-file lookup starts in the working directory: keep it in the temp dir.
            .current_dir(root)
            .env("INFLUXD_CONFIG_PATH", root);
        let log = root.join(format!("influxd2-{port}.log"));
        let mut server = ChildServer::spawn("influxd 2", cmd, log);
        let health = format!("http://127.0.0.1:{port}/health");
        server.wait_ready(START_TIMEOUT, || matches!(get(&health), Some((200, _))));
        server
    }

    /// Kills the server (SIGKILL); its data stays in the temp dir.
    pub fn stop(&mut self) {
        self.server.kill();
    }

    /// Starts it again on the same port with the same data (already set up).
    pub fn restart(&mut self) {
        self.server.relaunch();
    }

    /// Whether the server is up (for tests that stop it).
    pub fn answers(&self) -> bool {
        matches!(get(&format!("{}/health", self.url)), Some((200, _)))
    }

    fn auth() -> [(&'static str, String); 1] {
        [("Authorization", format!("Token {TOKEN}"))]
    }

    /// Runs InfluxQL through `/query` exactly as Grafana's InfluxQL datasource does in POST
    /// mode on InfluxDB 2: `db` and `epoch` in the URL, the statement as a form body `q`,
    /// and the datasource's custom header (`Authorization: Token <token>`). Returns (status,
    /// body).
    pub fn query_as(&self, token: &str, db: &str, q: &str) -> (u16, String) {
        self.query_with(&format!("Token {token}"), db, q)
    }

    /// [`Self::query_as`] with any `Authorization` header value (`Basic …` for a v1
    /// credential, see [`V1Credential::basic_auth_header`]). Returns (status, body).
    pub fn query_with(&self, authorization: &str, db: &str, q: &str) -> (u16, String) {
        let url = format!(
            "{}/query?{}",
            self.url,
            encode_query(&[("db", db), ("epoch", "ms")])
        );
        post_form(&url, &[("q", q)], &[("Authorization", authorization)])
            .unwrap_or_else(|| panic!("influxd 2 at {} did not answer {q:?}", self.url))
    }

    /// Runs InfluxQL with the operator token and returns the JSON answer (timestamps as
    /// epoch ms). Panics on HTTP errors; InfluxQL errors come back in the JSON.
    pub fn query(&self, db: &str, q: &str) -> Value {
        let (status, body) = self.query_as(TOKEN, db, q);
        assert!(status < 300, "influxd 2 answered {status} to {q:?}: {body}");
        serde_json::from_str(&body).expect("influxd 2 answered JSON")
    }

    /// Every row of a query's first series set, as (series tags, column → value) pairs.
    pub fn rows(&self, db: &str, q: &str) -> Vec<serde_json::Map<String, Value>> {
        influxql_rows(&self.query(db, q), q)
    }

    /// Creates bucket `db` (infinite retention) in [`ORG`]; InfluxQL reaches it as database
    /// `db` through its virtual DBRP mapping.
    pub fn create_db(&self, db: &str) {
        let body = json!({"orgID": self.org_id, "name": db, "retentionRules": []}).to_string();
        let (status, answer) = self.api_post("/api/v2/buckets", &body);
        assert!(
            status == 201 || (status == 422 && answer.contains("already exists")),
            "creating bucket {db}: {status} {answer}"
        );
    }

    /// The flags that point the consumer at bucket `db` through the v2 write API.
    pub fn consumer_args(&self, db: &str) -> Vec<String> {
        [
            "--influx-api",
            "v2",
            "--influx-org",
            ORG,
            "--influx-bucket",
            db,
            "--influx-token",
            TOKEN,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Writes line protocol (`precision=ms`, as the consumer writes) into bucket `db` with
    /// the operator token; panics unless InfluxDB answers 204.
    pub fn write_lines(&self, db: &str, lines: &[u8]) {
        let auth = Self::auth();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let query = encode_query(&[("org", ORG), ("bucket", db), ("precision", "ms")]);
        let (status, body) = post_body(
            &format!("{}/api/v2/write?{query}", self.url),
            "text/plain; charset=utf-8",
            lines,
            &headers,
        )
        .unwrap_or_else(|| panic!("influxd 2 did not answer a write to {db}"));
        assert_eq!(status, 204, "writing {} bytes to {db}: {body}", lines.len());
    }

    /// The id of bucket `name` in [`ORG`].
    pub fn bucket_id(&self, name: &str) -> String {
        let path = format!(
            "/api/v2/buckets?{}",
            encode_query(&[("orgID", &self.org_id), ("name", name)])
        );
        let answer = self.api_get(&path);
        answer["buckets"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no bucket {name} in org {ORG}: {answer}"))
            .to_owned()
    }

    /// Creates a v1 authorization `username`/`password` whose only permission is reading
    /// bucket `bucket`, as `influx v1 auth create --read-bucket <id>` does: `POST
    /// /private/legacy/authorizations` (the user name is the authorization's `token`), then
    /// `POST …/{id}/password`. The same two calls as `scripts/stack.sh` and compose's
    /// `influxdb/initdb/` script (through the CLI) make for Grafana.
    pub fn create_read_only_credential(
        &self,
        bucket: &str,
        username: &str,
        password: &str,
    ) -> V1Credential {
        let bucket_id = self.bucket_id(bucket);
        let body = json!({
            "orgID": self.org_id,
            "token": username,
            "description": format!("read-only {bucket}"),
            "permissions": [{
                "action": "read",
                "resource": {"type": "buckets", "id": bucket_id, "orgID": self.org_id},
            }],
        })
        .to_string();
        let created = self.api_post("/private/legacy/authorizations", &body);
        assert_eq!(
            created.0, 201,
            "creating v1 authorization {username}: {created:?}"
        );
        let v: Value = serde_json::from_str(&created.1).expect("authorization JSON");
        let id = v["id"].as_str().expect("authorization id");
        let password_body = json!({ "password": password }).to_string();
        let set = self.api_post(
            &format!("/private/legacy/authorizations/{id}/password"),
            &password_body,
        );
        assert_eq!(set.0, 204, "setting the password of {username}: {set:?}");
        V1Credential {
            username: username.to_owned(),
            password: password.to_owned(),
        }
    }

    /// POST of a JSON body with the operator token; returns (status, body).
    fn api_post(&self, path: &str, body: &str) -> (u16, String) {
        let auth = Self::auth();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        post_body(
            &format!("{}{path}", self.url),
            "application/json",
            body.as_bytes(),
            &headers,
        )
        .unwrap_or_else(|| panic!("influxd 2 did not answer POST {path}"))
    }

    /// GET on the v2 API with the operator token; returns the JSON answer.
    pub fn api_get(&self, path_and_query: &str) -> Value {
        let auth = Self::auth();
        let headers: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = get_with(&format!("{}{path_and_query}", self.url), &headers)
            .unwrap_or_else(|| panic!("influxd 2 did not answer GET {path_and_query}"));
        assert!(status < 300, "GET {path_and_query}: {status} {body}");
        serde_json::from_str(&body).expect("influxd 2 answered JSON")
    }
}

/// `POST /api/v2/setup`: the first user, [`ORG`], a bucket `default` and [`TOKEN`]. Returns
/// the org id.
fn setup(url: &str) -> String {
    let body = json!({
        "username": "candlepipe",
        "password": "candlepipe-test-password",
        "org": ORG,
        "bucket": "default",
        "token": TOKEN,
    })
    .to_string();
    let mut answer = None;
    wait_until(START_TIMEOUT, "influxd 2 to accept its setup", || {
        answer = post_body(
            &format!("{url}/api/v2/setup"),
            "application/json",
            body.as_bytes(),
            &[],
        );
        answer.is_some()
    });
    let (status, text) = answer.expect("setup answered");
    assert_eq!(status, 201, "influxd 2 setup: {text}");
    let v: Value = serde_json::from_str(&text).expect("setup JSON");
    v["org"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("setup answer without org id: {text}"))
        .to_owned()
}

/// The `influxd` 2 that `scripts/lib/install.sh` built, or a panic saying how to build it.
fn influxd2_binary() -> PathBuf {
    let bin = std::env::var_os("CANDLEPIPE_INFLUXD2")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir()
                .join(format!(
                    "influxdb-{}",
                    version("CANDLEPIPE_INFLUXDB2_VERSION")
                ))
                .join("influxd")
        });
    assert!(
        bin.is_file(),
        "InfluxDB {} (influxd) is not installed at {}, and the integration tests need the real \
         server.\nInstall it with:\n    {INSTALL_ALL}",
        version("CANDLEPIPE_INFLUXDB2_VERSION"),
        bin.display()
    );
    bin
}
