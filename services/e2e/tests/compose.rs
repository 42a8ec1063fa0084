//! # docker-compose.yml checked against the code, without a Docker engine
//!
//! No Docker engine runs here, so the stack cannot be started; what can go wrong in a compose
//! file is mostly a name or a number that no longer matches something else: an environment
//! variable the binary does not read (silently ignored), a port that is not the one the
//! binary listens on, a Prometheus target naming a service that does not exist, a mount
//! of a folder that moved. These tests compare the file with each source of truth:
//!
//! * the syntax and the interpolation: Debian's `docker-compose config`, which resolves the
//!   file exactly as on a user's machine (every test reads its resolved output);
//! * what the binaries read and accept: the clap definitions themselves
//!   (`ProducerConfig`/`ConsumerConfig`), each value compose hands over parsed as the flag
//!   it stands for, plus the logging variables of `candlepipe_runtime::telemetry`;
//! * ports and host names: the parsed `--http-addr`, `prometheus/prometheus.yml`, the Grafana
//!   datasources, the services' healthchecks and the Kafka advertised listeners;
//! * Grafana, Prometheus and Alertmanager files: the mounts, the dashboards provider path,
//!   the home dashboard, the datasource UIDs the dashboards use, the Alertmanager Prometheus
//!   sends to and the receiver its route ends at;
//! * `.env.example`: the same variables as the compose file, documented, and the same
//!   defaults;
//! * the image: the Dockerfile installs the healthcheck tool, bakes the dataset where
//!   DATASET_DIR points, runs as a non-root user;
//! * the server versions: compose's Kafka and InfluxDB images are the versions the tests run
//!   (`scripts/lib/versions.env`);
//! * Grafana's read-only InfluxDB credential: the init script mounted where the influxdb
//!   image runs it, executable, with its variables, and the same values handed to Grafana
//!   (never the admin token); the app image built once and never pulled.

use candlepipe_consumer::config::ConsumerConfig;
use candlepipe_consumer::sink::InfluxApi;
use candlepipe_e2e::grafana::{self, MARKET_DASHBOARD_UID};
use candlepipe_producer::config::ProducerConfig;
use candlepipe_testkit::require_binary;
use clap::Parser;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

const COMPOSE_INSTALL: &str = "apt-get update && apt-get install -y docker-compose";

// ------------------------------------------------------------------------------------------
// Reading the files
// ------------------------------------------------------------------------------------------

fn repo(rel: &str) -> PathBuf {
    grafana::repo_root().join(rel)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn parse_yaml(what: &str, text: &str) -> Yaml {
    let mut docs =
        YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "{what} should hold one YAML document");
    docs.remove(0)
}

/// `docker-compose [--env-file F] -f docker-compose.yml config [extra]`, in the repo, with
/// a clean environment so that nothing from the developer's shell leaks into the
/// interpolation. Panics (with compose's message) unless it succeeds; returns stdout.
fn compose(env_file: Option<&Path>, extra: &[&str]) -> String {
    let bin = require_binary("docker-compose", COMPOSE_INSTALL);
    let mut cmd = Command::new(bin);
    cmd.current_dir(grafana::repo_root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    if let Some(f) = env_file {
        cmd.arg("--env-file").arg(f);
    }
    cmd.args(["-f", "docker-compose.yml", "config"]).args(extra);
    let out = cmd.output().expect("docker-compose runs");
    assert!(
        out.status.success(),
        "docker-compose config rejected docker-compose.yml (env file {env_file:?}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The compose file as a user gets it with `.env.example` copied to `.env`.
fn resolved() -> Yaml {
    parse_yaml(
        "docker-compose config output",
        &compose(Some(&repo(".env.example")), &[]),
    )
}

fn service<'a>(doc: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &doc["services"][name];
    assert!(
        !s.is_badvalue(),
        "docker-compose.yml has no service {name:?}"
    );
    s
}

fn service_names(doc: &Yaml) -> BTreeSet<String> {
    doc["services"]
        .as_hash()
        .expect("services")
        .keys()
        .map(|k| k.as_str().expect("service name").to_owned())
        .collect()
}

/// A YAML scalar as the string a container sees.
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => panic!("expected a scalar, found {other:?}"),
    }
}

fn environment(svc: &Yaml) -> BTreeMap<String, String> {
    svc["environment"]
        .as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| (scalar(k), scalar(v)))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default()
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_vec()
        .map(|a| a.iter().map(scalar).collect())
        .unwrap_or_default()
}

/// One published or exposed port of a service: container port, and the host port when one
/// is fixed.
#[derive(Debug)]
struct PortMapping {
    container: u16,
    host: Option<String>,
}

/// `ports` (short `[ip:][host:]container[/proto]` or long syntax) and `expose` of a service.
fn ports(svc: &Yaml) -> Vec<PortMapping> {
    let mut out = Vec::new();
    for p in svc["ports"].as_vec().into_iter().flatten() {
        if p.as_hash().is_some() {
            out.push(PortMapping {
                container: scalar(&p["target"]).parse().expect("target port"),
                host: Some(scalar(&p["published"])).filter(|h| !h.is_empty()),
            });
            continue;
        }
        let text = scalar(p);
        let text = text.split('/').next().unwrap();
        let parts: Vec<&str> = text.rsplitn(3, ':').collect();
        out.push(PortMapping {
            container: parts[0]
                .parse()
                .unwrap_or_else(|_| panic!("container port of {text:?}")),
            host: parts
                .get(1)
                .filter(|h| !h.is_empty())
                .map(|h| h.to_string()),
        });
    }
    for e in strings(&svc["expose"]) {
        out.push(PortMapping {
            container: e.split('/').next().unwrap().parse().expect("exposed port"),
            host: None,
        });
    }
    out
}

/// `source → target` of every bind mount (named volumes left out).
fn bind_mounts(svc: &Yaml) -> Vec<(PathBuf, String)> {
    strings(&svc["volumes"])
        .into_iter()
        .filter_map(|v| {
            let mut parts = v.split(':');
            let source = parts.next()?;
            let target = parts.next()?;
            source
                .starts_with('/')
                .then(|| (PathBuf::from(source), target.to_owned()))
        })
        .collect()
}

/// The host folder mounted at `target` in `svc`, which must exist.
fn mounted_at(svc: &Yaml, name: &str, target: &str) -> PathBuf {
    let (source, _) = bind_mounts(svc)
        .into_iter()
        .find(|(_, t)| t == target)
        .unwrap_or_else(|| panic!("{name} mounts nothing at {target}"));
    assert!(
        source.exists(),
        "{name} mounts {} at {target}, which does not exist",
        source.display()
    );
    source
}

/// `host:port` of a URL or of a bare `host:port`.
fn host_port(s: &str) -> (String, u16) {
    let rest = s.split_once("://").map_or(s, |(_, r)| r);
    let authority = rest.split('/').next().unwrap();
    let (host, port) = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{s:?} names no port"));
    (
        host.to_owned(),
        port.parse().unwrap_or_else(|_| panic!("port of {s:?}")),
    )
}

// ------------------------------------------------------------------------------------------
// What the binaries read
// ------------------------------------------------------------------------------------------

/// Variables the logging setup reads (`candlepipe_runtime::telemetry`), from its source:
/// every `env::var("NAME")`, and `RUST_LOG` when it builds its filter with tracing's
/// `EnvFilter::try_from_default_env` (whose variable is `RUST_LOG`).
fn logging_variables() -> BTreeSet<String> {
    let src = read(&repo("services/runtime/src/telemetry.rs"));
    let mut names: BTreeSet<String> = src
        .split("env::var(\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect();
    if src.contains("from_default_env") {
        names.insert("RUST_LOG".to_owned());
    }
    assert!(
        names.contains("RUST_LOG"),
        "telemetry.rs no longer reads RUST_LOG"
    );
    names
}

/// Parses the environment compose hands to `bin` as the command line it stands for: every
/// variable must be one of the binary's flags (or a logging variable), every value must be
/// one the flag accepts. Returns the parsed configuration.
fn parse_as_flags<C: Parser>(bin: &str, env: &BTreeMap<String, String>) -> C {
    let cmd = C::command();
    let logging = logging_variables();
    let mut argv = vec![bin.to_owned()];
    let mut unknown = Vec::new();
    for (name, value) in env {
        if logging.contains(name) {
            continue;
        }
        match cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()))
        {
            Some(arg) => {
                let long = arg
                    .get_long()
                    .expect("every env-backed flag has a long name");
                argv.push(format!("--{long}={value}"));
            }
            None => unknown.push(name.clone()),
        }
    }
    let reads: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .chain(logging)
        .collect();
    assert!(
        unknown.is_empty(),
        "docker-compose.yml hands {bin} {unknown:?}, which it never reads; it reads {reads:?}"
    );
    C::try_parse_from(&argv).unwrap_or_else(|e| {
        panic!("{bin} rejects the values docker-compose.yml gives it ({argv:?}):\n{e}")
    })
}

fn producer_config(doc: &Yaml) -> ProducerConfig {
    parse_as_flags("producer", &environment(service(doc, "producer")))
}

fn consumer_config(doc: &Yaml) -> ConsumerConfig {
    parse_as_flags("consumer", &environment(service(doc, "consumer")))
}

// ------------------------------------------------------------------------------------------
// Syntax and .env.example
// ------------------------------------------------------------------------------------------

#[test]
fn docker_compose_config_accepts_the_file_with_and_without_a_dot_env() {
    let bin = require_binary("docker-compose", COMPOSE_INSTALL);
    let out = Command::new(bin)
        .current_dir(grafana::repo_root())
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .output()
        .expect("docker-compose runs");
    assert!(
        out.status.success(),
        "docker-compose -f docker-compose.yml config -q failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    compose(Some(&repo(".env.example")), &["-q"]);
}

/// `NAME=value` lines of .env.example, each with the comment lines right above it.
fn env_example() -> Vec<(String, String, Vec<String>)> {
    let text = read(&repo(".env.example"));
    let mut out = Vec::new();
    let mut comments = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix('#') {
            comments.push(c.trim().to_owned());
        } else if line.is_empty() {
            comments.clear();
        } else {
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example: {line:?} is not NAME=value"));
            out.push((k.to_owned(), v.to_owned(), std::mem::take(&mut comments)));
        }
    }
    out
}

/// Every `${NAME...}` interpolation in the raw compose file: name → the defaults written
/// after `:-` (None when there is none). Comment lines are not interpolated; `$$` is
/// compose's escape for a literal `$`.
fn compose_interpolations() -> BTreeMap<String, Vec<Option<String>>> {
    let text: String = read(&repo("docker-compose.yml"))
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("$$", "");
    let mut out: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for piece in text.split("${").skip(1) {
        let inner = piece
            .split('}')
            .next()
            .expect("an interpolation closes with }");
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d.to_owned())),
            None => (inner, None),
        };
        out.entry(name.to_owned()).or_default().push(default);
    }
    let bare: Vec<&str> = text
        .split('$')
        .skip(1)
        .filter(|p| p.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .collect();
    assert!(
        bare.is_empty(),
        "docker-compose.yml uses $NAME without braces (write ${{NAME:-default}}): {bare:?}"
    );
    out
}

#[test]
fn env_example_documents_exactly_the_variables_compose_uses_with_the_same_defaults() {
    let example = env_example();
    let used = compose_interpolations();

    let documented: BTreeSet<&str> = example.iter().map(|(k, _, _)| k.as_str()).collect();
    let interpolated: BTreeSet<&str> = used.keys().map(String::as_str).collect();
    assert_eq!(
        documented,
        interpolated,
        ".env.example and docker-compose.yml must name the same variables \
         (only in .env.example: {:?}; only in docker-compose.yml: {:?})",
        documented.difference(&interpolated).collect::<Vec<_>>(),
        interpolated.difference(&documented).collect::<Vec<_>>()
    );

    for (name, value, comments) in &example {
        assert!(
            !comments.is_empty(),
            ".env.example: {name} has no comment saying what it does"
        );
        for default in &used[name] {
            let default = default.as_deref().unwrap_or_else(|| {
                panic!(
                    "docker-compose.yml uses ${{{name}}} without a default: \
                     it must work without a .env"
                )
            });
            assert_eq!(
                default, value,
                "docker-compose.yml defaults {name} to {default:?}, .env.example to {value:?}"
            );
        }
    }
    let text = read(&repo(".env.example"));
    assert!(
        text.contains("laptop") && text.contains("BIND_ADDRESS"),
        ".env.example must say its secrets are laptop defaults and what to change outside one"
    );

    // The same thing, as compose itself sees it: no .env and .env.example resolve alike.
    let empty = tempfile::NamedTempFile::new().unwrap();
    assert_eq!(
        compose(Some(empty.path()), &[]),
        compose(Some(&repo(".env.example")), &[]),
        "docker-compose.yml resolves differently with and without .env.example"
    );
}

// ------------------------------------------------------------------------------------------
// The binaries
// ------------------------------------------------------------------------------------------

#[test]
fn producer_and_consumer_get_only_variables_they_read_with_values_they_accept() {
    let doc = resolved();
    let producer = producer_config(&doc);
    let consumer = consumer_config(&doc);

    // What the stack relies on, read back from the parsed configuration.
    assert_eq!(producer.dataset, Path::new("/app/dataset"));
    assert_eq!(
        consumer.influx_bucket, "crypto",
        "the dashboards query `crypto`"
    );
    assert!(
        consumer.influx_org.is_some() && consumer.influx_token.is_some(),
        "the v2 API needs an org and a token"
    );
    assert_eq!(
        consumer.influx_api,
        InfluxApi::V2,
        "compose runs InfluxDB 2.7"
    );
    assert_eq!(
        producer.kafka.topic, consumer.kafka.topic,
        "producer and consumer must share the topic"
    );
    let influxdb = environment(service(&doc, "influxdb"));
    assert_eq!(
        influxdb["DOCKER_INFLUXDB_INIT_BUCKET"],
        consumer.influx_bucket
    );
    assert_eq!(
        Some(&influxdb["DOCKER_INFLUXDB_INIT_ORG"]),
        consumer.influx_org.as_ref()
    );
    assert_eq!(
        Some(&influxdb["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]),
        consumer.influx_token.as_ref(),
        "the consumer must write with the token InfluxDB is set up with"
    );
    // Grafana queries with the read-only credential the influxdb service creates from the
    // same values, and never holds the admin token.
    let grafana = environment(service(&doc, "grafana"));
    let auth = grafana::influx_datasource_auth().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        grafana.get(&auth.user_env),
        influxdb.get("INFLUXDB_READ_USER"),
        "Grafana's {} must be the user the influxdb service creates",
        auth.user_env
    );
    assert_eq!(
        grafana.get(&auth.password_env),
        influxdb.get("INFLUXDB_READ_PASSWORD"),
        "Grafana's {} must be the password the influxdb service sets",
        auth.password_env
    );
    let admin = &influxdb["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"];
    assert!(
        grafana.values().all(|v| !v.contains(admin.as_str())),
        "Grafana must not get InfluxDB's admin token: {grafana:?}"
    );
}

/// The influxdb image runs the executable `*.sh` of `/docker-entrypoint-initdb.d` once, after
/// the first-start setup: the repo's `influxdb/initdb/` is mounted there, every script in it
/// is executable (else the image skips it silently), and the variables the Grafana credential
/// script reads are set on the service.
#[test]
fn influxdb_runs_the_repo_init_scripts_that_create_grafanas_credential() {
    use std::os::unix::fs::PermissionsExt;
    let doc = resolved();
    let svc = service(&doc, "influxdb");
    let dir = mounted_at(svc, "influxdb", "/docker-entrypoint-initdb.d");
    assert_eq!(
        dir.canonicalize().unwrap(),
        repo("influxdb/initdb").canonicalize().unwrap()
    );
    let env = environment(svc);
    let mut scripts = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("influxdb/initdb") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sh") {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert!(
                mode & 0o111 != 0,
                "{} is not executable: the image would skip it",
                path.display()
            );
            scripts.push(path);
        }
    }
    let script = scripts
        .iter()
        .find(|p| read(p).contains("influx v1 auth create"))
        .unwrap_or_else(|| panic!("no script in {} creates a v1 authorization", dir.display()));
    let text = read(script);
    assert!(
        text.contains("--read-bucket") && !text.contains("--write-bucket"),
        "{}: the credential reads and never writes",
        script.display()
    );
    for var in ["INFLUXDB_READ_USER", "INFLUXDB_READ_PASSWORD"] {
        assert!(text.contains(var), "{} reads {var}", script.display());
        assert!(
            env.get(var).is_some_and(|v| !v.is_empty()),
            "the influxdb service must set {var} for {}",
            script.display()
        );
    }
    assert!(
        env["INFLUXDB_READ_PASSWORD"].len() >= 8,
        "InfluxDB refuses v1 passwords shorter than 8 characters"
    );
}

/// One service builds `candlepipe:local` (and never pulls it); every other service that runs
/// it has no `build:` and never pulls either, so compose builds the image once.
#[test]
fn the_app_image_is_built_once_and_never_pulled() {
    let doc = resolved();
    let mut builders = Vec::new();
    let mut users = Vec::new();
    for name in service_names(&doc) {
        let svc = service(&doc, &name);
        if !svc["build"].is_badvalue() {
            builders.push(name.clone());
            assert_eq!(scalar(&svc["image"]), "candlepipe:local", "{name} builds");
            assert_eq!(
                svc["pull_policy"].as_str(),
                Some("build"),
                "{name} builds, never pulls"
            );
        } else if scalar(&svc["image"]) == "candlepipe:local" {
            users.push(name.clone());
            assert_eq!(
                svc["pull_policy"].as_str(),
                Some("never"),
                "{name} runs the built image and must never try to pull it"
            );
        }
    }
    assert_eq!(
        builders,
        ["producer"],
        "exactly one service builds the image"
    );
    assert_eq!(users, ["consumer"]);
}

#[test]
fn the_app_services_reach_kafka_and_influxdb_by_service_name_and_port() {
    let doc = resolved();
    let producer = producer_config(&doc);
    let consumer = consumer_config(&doc);
    let kafka = environment(service(&doc, "kafka"));
    let advertised = &kafka["KAFKA_ADVERTISED_LISTENERS"];
    for brokers in [&producer.kafka.brokers, &consumer.kafka.brokers] {
        for b in brokers.split(',') {
            let (host, port) = host_port(b);
            assert_listens(&doc, &host, port, &format!("KAFKA_BROKERS {b}"));
            assert!(
                advertised.contains(&format!("//{b}")),
                "Kafka advertises {advertised}, not {b}: clients would be redirected elsewhere"
            );
        }
    }
    let (host, port) = host_port(&consumer.influx_url);
    assert_listens(&doc, &host, port, "INFLUX_URL");
}

/// `host` is a compose service and `port` one it listens on inside the network.
fn assert_listens(doc: &Yaml, host: &str, port: u16, what: &str) {
    let names = service_names(doc);
    assert!(
        names.contains(host),
        "{what} names host {host:?}, which is no compose service ({names:?})"
    );
    let listening = container_ports(doc, host);
    assert!(
        listening.contains(&port),
        "{what} uses {host}:{port}, but {host} listens on {listening:?}"
    );
}

/// Ports a service listens on inside the network: its `ports`/`expose`, and for the two
/// binaries the port of their parsed `--http-addr`.
fn container_ports(doc: &Yaml, name: &str) -> BTreeSet<u16> {
    let mut out: BTreeSet<u16> = ports(service(doc, name))
        .iter()
        .map(|p| p.container)
        .collect();
    match name {
        "producer" => {
            out.insert(producer_config(doc).http_addr.port());
        }
        "consumer" => {
            out.insert(consumer_config(doc).http_addr.port());
        }
        _ => {}
    }
    out
}

#[test]
fn metrics_ports_match_the_binaries_and_the_consumer_scales() {
    let doc = resolved();
    let producer_port = producer_config(&doc).http_addr.port();
    let consumer_port = consumer_config(&doc).http_addr.port();
    // Compose keeps the binaries' own defaults: a reader of the README's "Ports" finds what
    // it says.
    assert_eq!(
        producer_port,
        ProducerConfig::parse_from(["producer"]).http_addr.port()
    );
    assert_eq!(
        consumer_port,
        ConsumerConfig::parse_from(["consumer"]).http_addr.port()
    );

    for (name, port) in [("producer", producer_port), ("consumer", consumer_port)] {
        let svc = service(&doc, name);
        assert!(
            ports(svc).iter().any(|p| p.container == port),
            "{name} listens on {port} but docker-compose.yml does not publish it"
        );
        let health = strings(&svc["healthcheck"]["test"]).join(" ");
        assert!(
            health.contains(&format!(":{port}/healthz")),
            "{name}'s healthcheck ({health}) must ask /healthz on {port}"
        );
        assert_eq!(scalar(&svc["restart"]), "unless-stopped");
    }

    // `--scale consumer=3`: no fixed name, no fixed host port.
    let consumer = service(&doc, "consumer");
    assert!(
        consumer["container_name"].is_badvalue(),
        "a container_name makes `--scale consumer=N` fail"
    );
    for p in ports(consumer) {
        assert!(
            p.host.is_none(),
            "consumer publishes {p:?} on a fixed host port: a second replica could not start"
        );
    }
}

/// The value of `--{flag}=` in the command of service `name`.
fn command_flag(doc: &Yaml, name: &str, flag: &str) -> String {
    let command = strings(&service(doc, name)["command"]);
    command
        .iter()
        .find_map(|c| c.strip_prefix(&format!("--{flag}=")))
        .unwrap_or_else(|| panic!("{name} command sets no --{flag}: {command:?}"))
        .to_owned()
}

/// Service `name`'s `--config.file`, read from the repo folder mounted at `mount`, and
/// that folder.
fn mounted_config(doc: &Yaml, name: &str, mount: &str) -> (Yaml, PathBuf) {
    let dir = mounted_at(service(doc, name), name, mount);
    let config_file = command_flag(doc, name, "config.file");
    let rel = config_file
        .strip_prefix(&format!("{mount}/"))
        .unwrap_or_else(|| panic!("{name}'s --config.file={config_file} is outside {mount}"));
    (parse_yaml(&config_file, &read(&dir.join(rel))), dir)
}

#[test]
fn prometheus_scrapes_the_compose_services_on_their_metrics_ports() {
    let doc = resolved();
    let (config, config_dir) = mounted_config(&doc, "prometheus", "/etc/prometheus");
    let self_port = host_port(&command_flag(&doc, "prometheus", "web.listen-address")).1;
    assert!(container_ports(&doc, "prometheus").contains(&self_port));

    for rules in strings(&config["rule_files"]) {
        assert!(
            config_dir.join(&rules).exists(),
            "prometheus.yml loads {rules}, which is not in the mounted folder"
        );
    }

    let mut scraped = BTreeSet::new();
    for job in config["scrape_configs"].as_vec().expect("scrape_configs") {
        let name = scalar(&job["job_name"]);
        let mut targets: Vec<(String, u16)> = Vec::new();
        for sc in job["static_configs"].as_vec().into_iter().flatten() {
            targets.extend(strings(&sc["targets"]).iter().map(|t| host_port(t)));
        }
        for dns in job["dns_sd_configs"].as_vec().into_iter().flatten() {
            let port = u16::try_from(dns["port"].as_i64().expect("dns_sd port")).unwrap();
            targets.extend(strings(&dns["names"]).into_iter().map(|n| (n, port)));
        }
        assert!(!targets.is_empty(), "scrape job {name} has no target");
        for (host, port) in targets {
            let host = if host == "localhost" || host == "127.0.0.1" {
                "prometheus".to_owned() // its own container
            } else {
                host
            };
            assert_listens(&doc, &host, port, &format!("scrape job {name}"));
            scraped.insert(host);
        }
    }
    for app in ["producer", "consumer", "influxdb"] {
        assert!(scraped.contains(app), "Prometheus does not scrape {app}");
    }
}

#[test]
fn prometheus_sends_alerts_to_the_alertmanager_service_which_loads_the_repo_config() {
    let doc = resolved();
    let (prometheus, _) = mounted_config(&doc, "prometheus", "/etc/prometheus");
    let managers = prometheus["alerting"]["alertmanagers"]
        .as_vec()
        .expect("prometheus.yml has alerting.alertmanagers");
    let targets: Vec<String> = managers
        .iter()
        .flat_map(|m| m["static_configs"].as_vec().cloned().unwrap_or_default())
        .flat_map(|sc| strings(&sc["targets"]))
        .collect();
    assert_eq!(
        targets,
        ["alertmanager:9093"],
        "prometheus.yml alerting targets"
    );
    let listen = host_port(&command_flag(&doc, "alertmanager", "web.listen-address")).1;
    assert_listens(&doc, "alertmanager", listen, "alerting.alertmanagers");
    assert_eq!(listen, 9093);

    // Alertmanager runs the repo's file, whose root route ends at a receiver it defines.
    let (config, _) = mounted_config(&doc, "alertmanager", "/etc/alertmanager");
    let receiver = scalar(&config["route"]["receiver"]);
    let receivers: Vec<String> = config["receivers"]
        .as_vec()
        .expect("alertmanager.yml has receivers")
        .iter()
        .map(|r| scalar(&r["name"]))
        .collect();
    assert!(
        receivers.contains(&receiver),
        "the root route sends to {receiver:?}, not one of the receivers {receivers:?}"
    );
    assert!(
        read(&repo(".gitignore")).contains("/alertmanager/secrets/"),
        "the secrets folder alertmanager.yml suggests must be git-ignored"
    );
}

// ------------------------------------------------------------------------------------------
// Grafana
// ------------------------------------------------------------------------------------------

/// Every `{"uid": ...}` under a `datasource` key of a dashboard.
fn datasource_uids(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                if k == "datasource" {
                    if let Some(uid) = child.get("uid").and_then(Value::as_str) {
                        out.insert(uid.to_owned());
                    }
                }
                datasource_uids(child, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| datasource_uids(i, out)),
        _ => {}
    }
}

#[test]
fn grafana_gets_the_repo_provisioning_dashboards_and_home_page() {
    let doc = resolved();
    let svc = service(&doc, "grafana");
    let env = environment(svc);
    let provisioning = mounted_at(svc, "grafana", "/etc/grafana/provisioning");
    let dashboards_target = "/var/lib/grafana/dashboards";
    let dashboards = mounted_at(svc, "grafana", dashboards_target);
    assert_eq!(
        provisioning.canonicalize().unwrap(),
        repo("grafana/provisioning").canonicalize().unwrap()
    );
    assert_eq!(
        dashboards.canonicalize().unwrap(),
        repo("grafana/dashboards").canonicalize().unwrap()
    );

    // The file provider loads the folder compose mounts the dashboards into.
    let mut provider_paths = Vec::new();
    for entry in std::fs::read_dir(provisioning.join("dashboards")).expect("dashboards/") {
        let path = entry.unwrap().path();
        let file = parse_yaml(&path.display().to_string(), &read(&path));
        for p in file["providers"].as_vec().into_iter().flatten() {
            provider_paths.push(scalar(&p["options"]["path"]));
        }
    }
    assert_eq!(provider_paths, vec![dashboards_target.to_owned()]);

    // The home dashboard is a mounted file: the Crypto Market dashboard.
    let home = &env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"];
    let rel = home
        .strip_prefix(&format!("{dashboards_target}/"))
        .unwrap_or_else(|| panic!("home dashboard {home} is outside {dashboards_target}"));
    let home_json: Value = serde_json::from_str(&read(&dashboards.join(rel))).unwrap();
    assert_eq!(home_json["uid"], MARKET_DASHBOARD_UID);
    assert_eq!(env["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer");
    assert!(env.contains_key("GF_SECURITY_ADMIN_PASSWORD"));

    // Datasources: at compose services and ports, with every ${VAR} they use provided, and
    // with the UIDs the dashboards use.
    let mut provisioned = BTreeSet::new();
    for entry in std::fs::read_dir(provisioning.join("datasources")).expect("datasources/") {
        let path = entry.unwrap().path();
        let text = read(&path);
        for var in text.split("${").skip(1) {
            let var = var.split('}').next().unwrap();
            assert!(
                env.contains_key(var),
                "{} uses ${{{var}}}, which compose does not set for grafana",
                path.display()
            );
        }
        let file = parse_yaml(&path.display().to_string(), &text);
        for ds in file["datasources"].as_vec().into_iter().flatten() {
            let uid = scalar(&ds["uid"]);
            let (host, port) = host_port(&scalar(&ds["url"]));
            assert_listens(&doc, &host, port, &format!("datasource {uid}"));
            provisioned.insert(uid);
        }
    }
    let mut used = BTreeSet::new();
    for d in grafana::load_dashboards_from(&dashboards).unwrap_or_else(|e| panic!("{e}")) {
        datasource_uids(&d.json, &mut used);
    }
    assert!(!used.is_empty(), "the dashboards name no datasource uid");
    let missing: Vec<_> = used.difference(&provisioned).collect();
    assert!(
        missing.is_empty(),
        "the dashboards use datasource uids {missing:?} that the mounted provisioning \
         does not define ({provisioned:?})"
    );
}

// ------------------------------------------------------------------------------------------
// Start order and the image
// ------------------------------------------------------------------------------------------

#[test]
fn services_start_in_order_and_the_topics_exist_first() {
    let doc = resolved();
    for name in service_names(&doc) {
        let svc = service(&doc, &name);
        for (dep, cond) in svc["depends_on"].as_hash().into_iter().flatten() {
            let dep = scalar(dep);
            match scalar(&cond["condition"]).as_str() {
                "service_healthy" => assert!(
                    !service(&doc, &dep)["healthcheck"]["test"].is_badvalue(),
                    "{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
                ),
                "service_completed_successfully" => {}
                other => panic!("{name} depends on {dep} with condition {other:?}"),
            }
        }
    }
    let condition =
        |svc: &str, dep: &str| scalar(&service(&doc, svc)["depends_on"][dep]["condition"]);
    assert_eq!(condition("producer", "kafka"), "service_healthy");
    assert_eq!(
        condition("producer", "kafka-init"),
        "service_completed_successfully"
    );
    assert_eq!(condition("consumer", "kafka"), "service_healthy");
    assert_eq!(condition("consumer", "influxdb"), "service_healthy");

    // kafka-init creates the topic both binaries use (partitions as the producer would) and
    // the consumer's dead-letter topic: the broker does not auto-create topics.
    let producer = producer_config(&doc);
    let consumer = consumer_config(&doc);
    let script = strings(&service(&doc, "kafka-init")["command"]).join("\n");
    assert!(
        script.contains(&format!(
            "--topic {} --partitions {} ",
            producer.kafka.topic, producer.partitions
        )),
        "kafka-init must create {} with {} partitions:\n{script}",
        producer.kafka.topic,
        producer.partitions
    );
    assert!(
        script.contains(&format!("--topic {} ", consumer.dlq_topic)),
        "kafka-init must create {}:\n{script}",
        consumer.dlq_topic
    );
    // the candle topic keeps everything, with the same configs the producer creates it with
    let candles_line = script
        .lines()
        .find(|l| l.contains(&format!("--topic {} ", producer.kafka.topic)))
        .expect("the candle topic's line");
    for (key, value) in candlepipe_runtime::kafka::KEEP_FOREVER {
        assert!(
            candles_line.contains(&format!("--config {key}={value}")),
            "kafka-init must create {} with {key}={value}:\n{candles_line}",
            producer.kafka.topic
        );
    }
    assert_eq!(
        environment(service(&doc, "kafka"))["KAFKA_AUTO_CREATE_TOPICS_ENABLE"],
        "false"
    );
}

/// The tests, the native stack and the benchmark run the Kafka and InfluxDB versions that
/// `scripts/lib/versions.env` pins; users run the images compose pins. They must be the same.
#[test]
fn compose_runs_the_server_versions_the_tests_run() {
    let doc = resolved();
    let image = |name: &str| scalar(&service(&doc, name)["image"]);
    let kafka = candlepipe_testkit::version("CANDLEPIPE_KAFKA_VERSION");
    let influxdb = candlepipe_testkit::version("CANDLEPIPE_INFLUXDB2_VERSION");
    assert_eq!(image("kafka"), format!("apache/kafka:{kafka}"));
    assert_eq!(image("kafka-init"), format!("apache/kafka:{kafka}"));
    assert_eq!(image("influxdb"), format!("influxdb:{influxdb}"));
}

/// The last stage of the Dockerfile (the runtime image), line by line with continuations
/// joined.
fn runtime_stage() -> Vec<String> {
    let text = read(&repo("Dockerfile")).replace("\\\n", " ");
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("Dockerfile has a FROM");
    lines[last_from..].to_vec()
}

#[test]
fn the_image_has_the_healthcheck_tool_the_dataset_and_a_non_root_user() {
    let doc = resolved();
    let stage = runtime_stage();
    let has = |pred: &dyn Fn(&str) -> bool| stage.iter().any(|l| pred(l));

    for name in ["producer", "consumer"] {
        let svc = service(&doc, name);
        // Both run the image the producer service builds from the Dockerfile.
        assert_eq!(scalar(&svc["image"]), "candlepipe:local");
        let build = scalar(&service(&doc, "producer")["build"]["dockerfile"]);
        assert_eq!(build, "Dockerfile");
        let bin = strings(&svc["command"])[0].clone();
        assert_eq!(bin, name);
        assert!(
            has(&|l| l.starts_with("COPY --from=") && l.contains(&format!("/{bin} "))),
            "the runtime image does not copy the {bin} binary"
        );
        let test = strings(&svc["healthcheck"]["test"]);
        assert_eq!(test[0], "CMD");
        let tool = &test[1];
        assert!(
            has(&|l| l.starts_with("RUN ")
                && l.contains("apt-get install")
                && l.contains(&format!(" {tool}"))),
            "{name}'s healthcheck runs {tool}, which the runtime image does not install"
        );
    }

    let dataset_dir = &environment(service(&doc, "producer"))["DATASET_DIR"];
    assert!(
        has(&|l| *l == format!("ENV DATASET_DIR={dataset_dir}")),
        "the image's DATASET_DIR is not {dataset_dir}"
    );
    assert!(
        has(&|l| l.starts_with("COPY dataset/ ")
            && l.trim_end_matches('/').ends_with(dataset_dir.as_str())),
        "the image does not bake dataset/ into {dataset_dir}"
    );
    let user = stage
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime image sets a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "the runtime image runs as {user}"
    );
    assert!(
        repo("dataset").read_dir().unwrap().any(|e| e
            .unwrap()
            .path()
            .extension()
            .is_some_and(|x| x == "parquet")),
        "dataset/ holds no parquet file to bake in"
    );
}

/// The README's `POST /mode` example works when pasted: it reads `ADMIN_TOKEN_FILE` from
/// `.env` and falls back to the very file compose hands the producer as its admin-token
/// secret without a `.env`; the producer reads that secret through `ADMIN_TOKEN_FILE`.
#[test]
fn the_readme_mode_switch_example_sends_the_compose_token() {
    let readme = read(&repo("README.md"));
    assert!(
        readme
            .lines()
            .any(|l| l.starts_with("ADMIN_TOKEN_FILE=$(sed -n 's/^ADMIN_TOKEN_FILE=//p' .env")),
        "the README's POST /mode example reads ADMIN_TOKEN_FILE from .env first"
    );
    let post = readme
        .lines()
        .find(|l| l.contains("curl -s -X POST localhost:9101/mode"))
        .expect("a POST /mode example");
    let fallback = post
        .split("Authorization: Bearer $(cat ${ADMIN_TOKEN_FILE:-")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("the example sends the token file's content: {post}"));
    let empty = tempfile::NamedTempFile::new().unwrap();
    let doc = parse_yaml("compose config", &compose(Some(empty.path()), &[]));
    let secret = scalar(&doc["secrets"]["admin_token"]["file"]);
    assert_eq!(
        std::fs::canonicalize(repo(fallback)).expect("the README's fallback file exists"),
        std::fs::canonicalize(&secret).expect("compose's admin_token secret file exists"),
        "the README falls back to compose's default admin-token secret"
    );
    let producer = service(&doc, "producer");
    assert_eq!(
        environment(producer)["ADMIN_TOKEN_FILE"],
        "/run/secrets/admin_token",
        "the producer reads the token from its secret"
    );
    assert!(
        !environment(producer).contains_key("ADMIN_TOKEN"),
        "the token itself is not in the producer's environment"
    );
    let token = std::fs::read_to_string(&secret).unwrap();
    assert!(
        !token.trim_end_matches('\n').is_empty(),
        "the laptop token file is not empty"
    );
}
