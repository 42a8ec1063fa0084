//! # candlepipe-testkit
//!
//! Integration tests run against the real servers users run, never mocks or stand-ins:
//! Apache Kafka in KRaft mode, InfluxDB 2 (and InfluxDB 1.x for the v1 write API),
//! Prometheus and Alertmanager. This crate starts them as child processes in temp dirs on
//! free loopback ports, waits until each answers, and makes sure they die with the test
//! process.
//!
//! Servers are expensive to start, so each test binary shares one broker and one influxd
//! ([`Kafka::shared`], [`Influxd::shared`]) and every test takes its own topic, consumer
//! group and bucket from [`unique`]. Tests that must stop or restart a server (fault tests)
//! start a private one with [`Kafka::start`] / [`Kafka::cluster`] / [`Influxd::start`];
//! dropping it kills it.
//!
//! A missing binary fails the test with the command that installs it. Nothing is skipped.
//!
//! Children are spawned from one long-lived thread with `PR_SET_PDEATHSIG`, so even the shared
//! servers (held in statics, which Rust never drops) are killed when the test binary exits.

mod background_server;
pub mod fixtures;
pub mod http_client;
mod kafka;
pub mod pipeline;
mod process;
mod servers;
pub mod slow_proxy;
pub mod webhook;
pub mod yahoo;

pub use http_client::{encode_query, get, percent};
pub use kafka::{produce_raw, read_topic, topic_configs, TopicRecord};
pub use process::{free_port, require_binary, require_binary_named, wait_until, ChildServer};
pub use servers::{
    java_partitions, version, Alertmanager, Influxd, Influxd1, Kafka, Prometheus, V1Credential,
    INFLUX_ORG, INFLUX_TOKEN,
};

use std::sync::atomic::{AtomicU64, Ordering};

/// A name no other test in this run (or a concurrent run) uses: `prefix-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path of a file under the workspace's `testdata/` folder (fixtures shared by crates).
pub fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

/// Path of a built binary of this workspace (`producer`, `consumer`), building nothing:
/// tests that need one depend on its crate so cargo builds it first.
pub fn workspace_bin(name: &str) -> std::path::PathBuf {
    let mut dir = std::env::current_exe().expect("current exe");
    dir.pop(); // deps/
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "binary {} not built; run `cargo build --workspace` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}
