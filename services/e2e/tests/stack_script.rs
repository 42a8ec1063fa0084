//! # scripts/stack.sh brings the whole pipeline up natively, and `down` leaves nothing behind
//!
//! The script is how people without Docker run candlepipe, so it is tested the way they use
//! it: `up` starts what docker-compose.yml runs (Apache Kafka in KRaft mode with the topics
//! kafka-init creates, InfluxDB 2 set up with an org, the bucket `crypto` and a token,
//! Alertmanager, Prometheus, the producer and the consumer on the real bundled `dataset/`,
//! replayed fast), the candles must reach InfluxDB, Prometheus must scrape both services and
//! InfluxDB and send to the stack's Alertmanager, then `down` must
//! stop every process it started. A second `up` on the same state must reuse it (Kafka's
//! storage is formatted once, InfluxDB is set up once), and `down -v` must delete it.
//!
//! Every port is moved to a free one and the state folder is a temp dir (STACK_DIR), so the
//! test never meets a developer's own stack. The binaries are the ones this test run built
//! (STACK_BIN_DIR), so the script builds nothing. If the test fails half-way, dropping
//! the [`NativeStack`] runs `down`.

use candlepipe_testkit::http_client::{encode_query, get, post_form};
use candlepipe_testkit::{free_port, wait_until, workspace_bin, V1Credential};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// How long the data may take to reach InfluxDB once `up` returned (it answers in seconds).
const DATA_TIMEOUT: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The services `up` starts here (no Grafana is installed in this environment).
const SERVICES: [&str; 6] = [
    "kafka",
    "influxdb",
    "alertmanager",
    "prometheus",
    "producer",
    "consumer",
];

/// The InfluxDB token this stack is set up with (not the default: it must pass through).
const TOKEN: &str = "stack-script-test-token";

/// Grafana's read-only InfluxDB credential the stack is started with (not the defaults:
/// INFLUXDB_READ_USER and INFLUXDB_READ_PASSWORD must pass through).
fn reader() -> V1Credential {
    V1Credential {
        username: "grafana-test".to_owned(),
        password: "stack-test-read-only".to_owned(),
    }
}

/// Partitions of `candles` (not the default 6: `KAFKA_PARTITIONS` must pass through).
const PARTITIONS: usize = 3;

/// One stack on private ports and a private state folder.
struct NativeStack {
    state: tempfile::TempDir,
    env: Vec<(&'static str, String)>,
    kafka: u16,
    influxdb: u16,
    prometheus: u16,
    alertmanager: u16,
}

impl NativeStack {
    fn new(extra: &[(&'static str, String)]) -> NativeStack {
        let names = [
            "KAFKA_PORT",
            "KAFKA_CONTROLLER_PORT",
            "INFLUXDB_PORT",
            "PROMETHEUS_PORT",
            "GRAFANA_PORT",
            "PRODUCER_PORT",
            "CONSUMER_PORT",
            "ALERTMANAGER_PORT",
        ];
        // Eight distinct free ports (the kernel could hand the same one out twice).
        let mut ports = BTreeSet::new();
        while ports.len() < names.len() {
            ports.insert(free_port());
        }
        let mut env: Vec<(&'static str, String)> = names
            .iter()
            .copied()
            .zip(ports.iter().map(u16::to_string))
            .collect();
        env.push(("INFLUXDB_TOKEN", TOKEN.to_owned()));
        env.push(("INFLUXDB_READ_USER", reader().username));
        env.push(("INFLUXDB_READ_PASSWORD", reader().password));
        env.push(("KAFKA_PARTITIONS", PARTITIONS.to_string()));
        // Values in `extra` win (the refusal test takes a port on purpose).
        env.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
        env.extend(extra.iter().cloned());
        let port = |name: &str| -> u16 {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.parse().unwrap())
                .unwrap()
        };
        NativeStack {
            state: tempfile::Builder::new()
                .prefix("candlepipe-stack-")
                .tempdir()
                .unwrap(),
            kafka: port("KAFKA_PORT"),
            influxdb: port("INFLUXDB_PORT"),
            prometheus: port("PROMETHEUS_PORT"),
            alertmanager: port("ALERTMANAGER_PORT"),
            env,
        }
    }

    /// Runs `scripts/stack.sh <args>` against this stack.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, &[], |_| true)
    }

    /// [`Self::run`] with the stack's settings that `keep` accepts, then `changed` over them.
    fn run_with(
        &self,
        args: &[&str],
        changed: &[(&str, &str)],
        keep: impl Fn(&str) -> bool,
    ) -> Output {
        Command::new("bash")
            .arg(repo().join("scripts/stack.sh"))
            .args(args)
            .env("STACK_DIR", self.state.path())
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| keep(k))
                    .map(|(k, v)| (k, v)),
            )
            .envs(changed.iter().copied())
            .output()
            .expect("bash runs scripts/stack.sh")
    }

    fn setting(&self, name: &str) -> &str {
        &self.env.iter().find(|(k, _)| *k == name).unwrap().1
    }

    fn pid_file(&self, service: &str) -> PathBuf {
        self.state.path().join(format!("{service}.pid"))
    }

    /// The pid each service's pid file records.
    fn pids(&self) -> Vec<(String, u32)> {
        SERVICES
            .iter()
            .map(|s| {
                let text = std::fs::read_to_string(self.pid_file(s))
                    .unwrap_or_else(|e| panic!("no pid file for {s} after `up`: {e}"));
                let pid = text
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("{s}.pid holds {text:?}"));
                (s.to_string(), pid)
            })
            .collect()
    }

    /// Runs InfluxQL on the stack's InfluxDB 2 with the admin token: `/query` with
    /// `db=crypto` (the bucket's virtual DBRP mapping), the statement as a form, and
    /// `Authorization: Token <token>`.
    fn influxql(&self, q: &str) -> Option<Value> {
        self.influxql_as(&format!("Token {TOKEN}"), q)
    }

    /// [`Self::influxql`] with another `Authorization` header (Grafana's Basic credentials).
    fn influxql_as(&self, authorization: &str, q: &str) -> Option<Value> {
        let url = format!(
            "http://127.0.0.1:{}/query?{}",
            self.influxdb,
            encode_query(&[("db", "crypto"), ("epoch", "ms")])
        );
        match post_form(&url, &[("q", q)], &[("Authorization", authorization)]) {
            Some((200, body)) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// Partition count of each topic the broker lists, from a metadata request.
    fn topics(&self) -> Vec<(String, usize)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", format!("127.0.0.1:{}", self.kafka))
            .set("log_level", "0")
            .create()
            .expect("a Kafka client");
        let md = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("the stack's Kafka answers a metadata request");
        md.topics()
            .iter()
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .collect()
    }
}

impl Drop for NativeStack {
    fn drop(&mut self) {
        // Whatever happened in the test, stop what the script started.
        let _ = self.run(&["down"]);
    }
}

fn describe(what: &str, out: &Output) -> String {
    format!(
        "{what} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// True while `pid` is a live process (a zombie left for its parent to reap is not).
fn process_runs(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The symbols of the bundled dataset: the file stems of `dataset/*.parquet`.
fn dataset_symbols() -> BTreeSet<String> {
    let symbols: BTreeSet<String> = std::fs::read_dir(repo().join("dataset"))
        .expect("dataset/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(!symbols.is_empty(), "dataset/ holds no parquet file");
    symbols
}

/// Symbols with at least one 1m candle in InfluxDB.
fn symbols_with_candles(stack: &NativeStack) -> BTreeSet<String> {
    let Some(v) = stack.influxql(
        "SELECT count(\"close\") FROM \"candle\" WHERE \"interval\" = '1m' GROUP BY \"symbol\"",
    ) else {
        return BTreeSet::new();
    };
    v["results"][0]["series"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["values"][0][1].as_u64().unwrap_or(0) > 0)
        .filter_map(|s| s["tags"]["symbol"].as_str().map(str::to_owned))
        .collect()
}

/// Jobs whose every target Prometheus reports as up.
fn jobs_up(stack: &NativeStack) -> BTreeSet<String> {
    let url = format!(
        "http://127.0.0.1:{}/api/v1/query?query=up",
        stack.prometheus
    );
    let Some((200, body)) = get(&url) else {
        return BTreeSet::new();
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let results = v["data"]["result"].as_array().cloned().unwrap_or_default();
    let all: BTreeSet<String> = results
        .iter()
        .filter_map(|r| r["metric"]["job"].as_str().map(str::to_owned))
        .collect();
    all.into_iter()
        .filter(|job| {
            results
                .iter()
                .filter(|r| r["metric"]["job"] == job.as_str())
                .all(|r| r["value"][1] == "1")
        })
        .collect()
}

#[test]
fn up_runs_the_pipeline_into_influxdb_and_down_leaves_no_process() {
    let bin_dir = workspace_bin("producer").parent().unwrap().to_owned();
    assert!(
        bin_dir.join("consumer").exists(),
        "consumer not built; run `cargo build --workspace --bins` first"
    );
    let stack = NativeStack::new(&[
        ("STACK_BIN_DIR", bin_dir.display().to_string()),
        // The real dataset, its first two hours sent at once (then real time).
        ("REPLAY_SPEED", "max".to_owned()),
        ("REPLAY_BACKFILL", "2h".to_owned()),
    ]);

    let up = stack.run(&["up"]);
    assert!(up.status.success(), "{}", describe("stack.sh up", &up));
    let printed = String::from_utf8_lossy(&up.stdout);
    assert!(
        printed.contains(&format!("http://127.0.0.1:{}", stack.prometheus)),
        "`up` should print the URLs:\n{printed}"
    );
    let pids = stack.pids();
    for (service, pid) in &pids {
        assert!(
            process_runs(*pid),
            "{service} (pid {pid}) is not running after `up`"
        );
    }

    // The topics compose's kafka-init creates, with KAFKA_PARTITIONS for `candles`.
    let topics = stack.topics();
    for (topic, partitions) in [("candles", PARTITIONS), ("candles.dlq", 1)] {
        assert!(
            topics.contains(&(topic.to_owned(), partitions)),
            "`up` should create {topic} with {partitions} partition(s); the broker lists {topics:?}"
        );
    }
    // `candles` is the log of record: kept forever, in time and size.
    let configs =
        candlepipe_testkit::topic_configs(&format!("127.0.0.1:{}", stack.kafka), "candles");
    for key in ["retention.ms", "retention.bytes"] {
        assert_eq!(
            configs.get(key).map(String::as_str),
            Some("-1"),
            "candles {key}"
        );
    }

    // Data flows: dataset → producer → Kafka → consumer → InfluxDB 2, for every symbol.
    let expected = dataset_symbols();
    wait_until(
        DATA_TIMEOUT,
        "1m candles of every dataset symbol in InfluxDB",
        || symbols_with_candles(&stack) == expected,
    );
    // Grafana's read-only credential, created by `up`: it reads the candles, and InfluxDB
    // refuses it DROP MEASUREMENT.
    let basic = reader().basic_auth_header();
    let counted = |auth: &str| {
        stack
            .influxql_as(auth, "SELECT count(\"close\") FROM \"candle\"")
            .and_then(|v| v["results"][0]["series"][0]["values"][0][1].as_u64())
    };
    assert!(
        counted(&basic).is_some_and(|n| n > 0),
        "the read-only credential reads the candles"
    );
    let dropped = stack
        .influxql_as(&basic, "DROP MEASUREMENT \"candle\"")
        .expect("InfluxDB answers the DROP");
    assert_eq!(
        dropped["results"][0]["error"], "insufficient permissions",
        "the read-only credential may not drop: {dropped}"
    );
    assert!(
        counted(&format!("Token {TOKEN}")).is_some_and(|n| n > 0),
        "the candles are still there"
    );
    // Prometheus (on its generated loopback config) scrapes both services, InfluxDB and
    // itself, and sends alerts to the stack's Alertmanager.
    let jobs: BTreeSet<String> = ["producer", "consumer", "influxdb", "prometheus"]
        .map(str::to_owned)
        .into();
    wait_until(DATA_TIMEOUT, "Prometheus to scrape every job", || {
        jobs.is_subset(&jobs_up(&stack))
    });
    let alertmanager = format!("127.0.0.1:{}", stack.alertmanager);
    wait_until(
        DATA_TIMEOUT,
        "Prometheus to list the stack's Alertmanager",
        || {
            get(&format!(
                "http://127.0.0.1:{}/api/v1/alertmanagers",
                stack.prometheus
            ))
            .is_some_and(|(status, body)| status == 200 && body.contains(&alertmanager))
        },
    );

    let status = stack.run(&["status"]);
    assert!(
        status.status.success(),
        "{}",
        describe("stack.sh status", &status)
    );
    let table = String::from_utf8_lossy(&status.stdout);
    for service in SERVICES {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(service) && l.contains("running")),
            "status does not show {service} running:\n{table}"
        );
    }

    // Without the port variables, `status` still probes the ports the stack runs on (it
    // remembers them), never the defaults someone else may use.
    let bare = stack.run_with(&["status"], &[], |k| !k.ends_with("_PORT"));
    assert!(
        bare.status.success(),
        "{}",
        describe("stack.sh status without the port variables", &bare)
    );
    let table = String::from_utf8_lossy(&bare.stdout);
    assert!(
        table.lines().any(|l| l.starts_with("influxdb")
            && l.contains(stack.setting("INFLUXDB_PORT"))
            && l.contains("/health 200")),
        "status uses the recorded InfluxDB port:\n{table}"
    );

    // `up` on the running stack keeps it, and names what it did not apply.
    let producer_pid = |s: &NativeStack| {
        s.pids()
            .into_iter()
            .find(|(n, _)| n == "producer")
            .unwrap()
            .1
    };
    let before = producer_pid(&stack);
    let ignored = stack.run_with(&["up"], &[("REPLAY_BACKFILL", "3h")], |_| true);
    assert!(
        ignored.status.success(),
        "{}",
        describe("stack.sh up again", &ignored)
    );
    let said = String::from_utf8_lossy(&ignored.stderr);
    assert!(
        said.contains("producer runs with REPLAY_BACKFILL=2h; ignored REPLAY_BACKFILL=3h")
            && said.contains("scripts/stack.sh restart producer"),
        "`up` names the ignored setting and how to apply it:\n{said}"
    );
    assert_eq!(producer_pid(&stack), before, "`up` left the producer alone");

    // `restart producer` applies it, and touches nothing else.
    let kafka_pid = |s: &NativeStack| s.pids().into_iter().find(|(n, _)| n == "kafka").unwrap().1;
    let kafka_before = kafka_pid(&stack);
    let restarted = stack.run_with(
        &["restart", "producer"],
        &[("REPLAY_BACKFILL", "3h")],
        |_| true,
    );
    assert!(
        restarted.status.success(),
        "{}",
        describe("stack.sh restart producer", &restarted)
    );
    assert_ne!(producer_pid(&stack), before, "a new producer runs");
    assert!(process_runs(producer_pid(&stack)));
    assert!(!process_runs(before), "the old producer is gone");
    assert_eq!(kafka_pid(&stack), kafka_before, "Kafka was not restarted");
    let settings = std::fs::read_to_string(stack.state.path().join("producer.settings")).unwrap();
    assert!(settings.contains("REPLAY_BACKFILL=3h"), "{settings}");
    let quiet = stack.run_with(&["up"], &[("REPLAY_BACKFILL", "3h")], |_| true);
    assert!(
        !String::from_utf8_lossy(&quiet.stderr).contains("not applied"),
        "{}",
        describe("`up` with the settings the stack runs with", &quiet)
    );
    let logs = stack.run(&["logs", "producer", "kafka"]);
    assert!(
        logs.status.success(),
        "{}",
        describe("stack.sh logs producer kafka", &logs)
    );
    let pids = stack.pids();

    let down = stack.run(&["down"]);
    assert!(
        down.status.success(),
        "{}",
        describe("stack.sh down", &down)
    );
    let left: Vec<_> = pids.iter().filter(|(_, pid)| process_runs(*pid)).collect();
    assert!(left.is_empty(), "still running after `down`: {left:?}");
    for service in SERVICES {
        assert!(
            !stack.pid_file(service).exists(),
            "`down` left {service}.pid behind"
        );
    }
    let after = stack.run(&["status"]);
    assert_eq!(
        after.status.code(),
        Some(3),
        "{}",
        describe(
            "stack.sh status after down (expected exit 3: stopped)",
            &after
        )
    );

    // A second `up` reuses the state: Kafka's storage is not formatted again and InfluxDB's
    // setup is not repeated (either would fail), and the token still opens the bucket.
    let again = stack.run(&["up"]);
    assert!(
        again.status.success(),
        "{}",
        describe("stack.sh up on the state of a previous run", &again)
    );
    let log = String::from_utf8_lossy(&again.stderr);
    assert!(
        !log.contains("formatting Kafka") && !log.contains("setting InfluxDB up"),
        "the second `up` should reuse Kafka's storage and InfluxDB's setup:\n{log}"
    );
    assert_eq!(
        symbols_with_candles(&stack),
        expected,
        "data lost across down/up"
    );
    let pids = stack.pids();
    let down = stack.run(&["down", "-v"]);
    assert!(
        down.status.success(),
        "{}",
        describe("stack.sh down -v", &down)
    );
    let left: Vec<_> = pids.iter().filter(|(_, pid)| process_runs(*pid)).collect();
    assert!(left.is_empty(), "still running after `down -v`: {left:?}");
    for data in ["kafka", "influxdb2", "alertmanager", "prometheus"] {
        assert!(
            !stack.state.path().join(data).exists(),
            "`down -v` left {data}/ behind"
        );
    }
}

#[test]
fn up_refuses_a_taken_port_and_starts_nothing() {
    // Someone else listens on the port Prometheus would take.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let stack = NativeStack::new(&[("PROMETHEUS_PORT", port.to_string())]);

    let up = stack.run(&["up"]);
    assert!(!up.status.success(), "{}", describe("stack.sh up", &up));
    let stderr = String::from_utf8_lossy(&up.stderr);
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("PROMETHEUS_PORT"),
        "the refusal should name the port and the variable that moves it:\n{stderr}"
    );
    for service in SERVICES {
        assert!(
            !stack.pid_file(service).exists(),
            "`up` started {service} although a port was taken"
        );
    }
}
