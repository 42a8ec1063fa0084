//! Driving candlepipe's own binaries in tests: start, scrape metrics, signal, and compare
//! what they wrote into InfluxDB.

use crate::http_client::{get, metrics_text};
use crate::process::{free_port, wait_until, ChildServer};
use crate::servers::Influxd;
use candlepipe_model::{codec, Candle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A candlepipe binary running in the background with its HTTP server on a free port.
pub struct ServiceProcess {
    server: ChildServer,
    /// Port of `/metrics`, `/healthz`, `/readyz`.
    pub http_port: u16,
    _logs: tempfile::TempDir,
}

impl ServiceProcess {
    /// Starts `bin args…` with `--http-addr 127.0.0.1:<free port>` appended.
    pub fn start(bin: &Path, args: &[String]) -> ServiceProcess {
        let logs = tempfile::tempdir().expect("log dir");
        let http_port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .env(
                "RUST_LOG",
                std::env::var("SERVICE_LOG").unwrap_or("info".into()),
            );
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        let log = logs.path().join(format!("{name}.log"));
        let mut server = ChildServer::spawn(&name, cmd, log);
        let url = format!("http://127.0.0.1:{http_port}/healthz");
        server.wait_ready(Duration::from_secs(60), || {
            matches!(get(&url), Some((200, _)))
        });
        ServiceProcess {
            server,
            http_port,
            _logs: logs,
        }
    }

    /// The value of a metric (summed over its label sets); 0 when absent.
    pub fn metric(&self, name: &str) -> f64 {
        metric_from(self.http_port, name)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// Resident memory now, in bytes (Linux `/proc/<pid>/status` VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// The whole `/metrics` text.
    pub fn metrics_text(&self) -> String {
        metrics_text(self.http_port)
    }

    /// Sends a signal (`libc::SIGTERM`, `libc::SIGKILL`, …).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.server.pid() as i32, sig);
        }
    }

    /// Waits for the process to exit and returns its exit code (`None` if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut code = None;
        let mut done = false;
        wait_until(timeout, "the service to exit", || {
            if let Some(status) = self.server.try_wait() {
                code = status.code();
                done = true;
            }
            done
        });
        code
    }

    /// Sends SIGTERM and asserts a clean exit (code 0) within [`PIPELINE_TIMEOUT`].
    pub fn stop_cleanly(&mut self) {
        self.signal(libc::SIGTERM);
        assert_eq!(
            self.wait_exit(PIPELINE_TIMEOUT),
            Some(0),
            "SIGTERM exits 0:\n{}",
            self.log()
        );
    }

    /// Panics (with the log tail) if the process has exited.
    pub fn assert_running(&mut self) {
        self.server.assert_running();
    }

    /// The end of the service's log so far (its last 60 lines).
    pub fn log(&self) -> String {
        self.server.log_tail()
    }

    /// Everything the process logged so far.
    pub fn full_log(&self) -> String {
        self.server.log_text()
    }
}

/// Reads one metric from a `/metrics` endpoint, summed over label sets (0 when nothing
/// answers).
pub fn metric_from(port: u16, name: &str) -> f64 {
    metric_sum(&metrics_text(port), name)
}

/// Sums a metric's samples over its label sets in a Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Creates a topic with `partitions` partitions (one replica).
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(brokers, topic, partitions, 1, &[]);
}

/// Creates a topic with `partitions` partitions, `replicas` replicas and topic configs
/// (e.g. `("min.insync.replicas", "2")`).
///
/// The request is sent again when the admin client itself lost it: on a cluster that just
/// started, librdkafka may retire its bootstrap connection once the metadata names the
/// brokers, and a request in flight on it fails with `DestroyBroker` ("Broker handle
/// destroyed without termination"; seen once in `failover.rs`). If the lost request had
/// reached the controller, the next attempt finds the topic existing, which is success.
pub fn create_topic_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replicas: i32,
    configs: &[(&str, &str)],
) {
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let rt = tokio_rt();
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replicas));
    for (k, v) in configs {
        new = new.set(k, v);
    }
    const ATTEMPTS: u32 = 5;
    for attempt in 1..=ATTEMPTS {
        let res = match rt.block_on(admin.create_topics([&new], &AdminOptions::new())) {
            Err(KafkaError::AdminOp(
                code @ (RDKafkaErrorCode::DestroyBroker
                | RDKafkaErrorCode::BrokerDestroy
                | RDKafkaErrorCode::BrokerTransportFailure),
            )) if attempt < ATTEMPTS => {
                eprintln!("creating {topic}: {code} (attempt {attempt}), sending it again");
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)));
                continue;
            }
            res => res.expect("create_topics"),
        };
        for r in res {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) if attempt > 1 => {}
                Err((t, e)) => panic!("creating {t}: {e}"),
            }
        }
        return;
    }
}

pub(crate) fn tokio_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Encodes candles as JSON v1 and produces them keyed by symbol, waiting for every ack.
pub fn produce_candles(brokers: &str, topic: &str, candles: &[Candle]) {
    let encoded: Vec<(Vec<u8>, Vec<u8>)> = candles
        .iter()
        .map(|c| {
            let mut buf = Vec::new();
            codec::encode(c, c.produced_at.unwrap_or(1), &mut buf).expect("valid candle");
            (c.symbol.clone().into_bytes(), buf)
        })
        .collect();
    let records: Vec<(Option<&[u8]>, &[u8])> = encoded
        .iter()
        .map(|(k, v)| (Some(k.as_slice()), v.as_slice()))
        .collect();
    crate::produce_raw(brokers, topic, &records);
}

/// One InfluxDB point: (measurement, symbol, interval, source, time) → fields.
pub type Snapshot = BTreeMap<(String, String, String, String, i64), BTreeMap<String, Value>>;

/// Everything the consumer wrote into `db`.
pub fn snapshot(influx: &Influxd, db: &str) -> Snapshot {
    let mut out = Snapshot::new();
    for measurement in ["candle", "indicator"] {
        for row in influx.rows(db, &format!("SELECT * FROM \"{measurement}\" GROUP BY *")) {
            let s = |k: &str| row.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
            let key = (
                measurement.to_owned(),
                s("symbol"),
                s("interval"),
                s("source"),
                row["time"].as_i64().expect("epoch ms time"),
            );
            let fields = row
                .iter()
                .filter(|(k, v)| {
                    !matches!(k.as_str(), "time" | "symbol" | "interval" | "source") && !v.is_null()
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.insert(key, fields);
        }
    }
    out
}

/// Number of points in `db` of a measurement that have `field`, optionally filtered by a
/// `WHERE` clause.
pub fn count_points(
    influx: &Influxd,
    db: &str,
    measurement: &str,
    field: &str,
    filter: &str,
) -> usize {
    let where_clause = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {filter}")
    };
    let rows = influx.rows(
        db,
        &format!("SELECT count(\"{field}\") FROM \"{measurement}\"{where_clause}"),
    );
    rows.first()
        .and_then(|r| r.get("count"))
        .and_then(Value::as_u64)
        .unwrap_or(0) as usize
}

/// Asserts two snapshots hold the same points: `candle` fields exactly, `indicator` fields
/// within `indicator_rel_tol` relative (absolute near zero).
pub fn assert_same_content(expected: &Snapshot, got: &Snapshot, indicator_rel_tol: f64) {
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .keys()
        .filter(|k| !expected.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "point sets differ ({} expected, {} got); missing e.g. {missing:?}; extra e.g. {extra:?}",
        expected.len(),
        got.len()
    );
    for (key, want) in expected {
        let have = &got[key];
        assert_eq!(
            want.keys().collect::<Vec<_>>(),
            have.keys().collect::<Vec<_>>(),
            "fields of {key:?}"
        );
        for (field, w) in want {
            let h = &have[field];
            if key.0 == "indicator" {
                let (w, h) = (w.as_f64().unwrap(), h.as_f64().unwrap());
                let scale = w.abs().max(h.abs()).max(1e-12);
                assert!(
                    (w - h).abs() / scale <= indicator_rel_tol,
                    "{key:?}.{field}: expected {w}, got {h}"
                );
            } else {
                assert_eq!(w, h, "{key:?}.{field}");
            }
        }
    }
}

/// One consumer pipeline under test: its own topic, group, dead-letter topic and database.
pub struct ConsumerRun {
    pub topic: String,
    pub group: String,
    pub dlq: String,
    pub db: String,
    pub brokers: String,
}

/// How long a pipeline test waits for a condition before failing.
pub const PIPELINE_TIMEOUT: Duration = Duration::from_secs(300);

impl ConsumerRun {
    /// Fresh names on the shared broker, and the topic created with `partitions`.
    pub fn new(name: &str, partitions: i32) -> ConsumerRun {
        Self::on(&crate::Kafka::shared().brokers, name, partitions)
    }

    /// Fresh names on the broker at `brokers`, and the topic created with `partitions`.
    pub fn on(brokers: &str, name: &str, partitions: i32) -> ConsumerRun {
        Self::on_replicated(brokers, name, partitions, 1, &[])
    }

    /// [`Self::on`] with the topic created with `replicas` replicas and topic `configs`.
    pub fn on_replicated(
        brokers: &str,
        name: &str,
        partitions: i32,
        replicas: i32,
        configs: &[(&str, &str)],
    ) -> ConsumerRun {
        let run = ConsumerRun {
            topic: crate::unique(&format!("{name}-topic")),
            group: crate::unique(&format!("{name}-group")),
            dlq: crate::unique(&format!("{name}-dlq")),
            db: crate::unique(name).replace('-', "_"),
            brokers: brokers.to_owned(),
        };
        create_topic_with(brokers, &run.topic, partitions, replicas, configs);
        run
    }

    /// Starts the `consumer` binary writing to `influx` through the v2 API (its bucket
    /// created first), with short timeouts suited to tests, plus `extra` flags. It is group
    /// member 0: a consumer started again after this one died takes its place at once
    /// (static membership, the same `--group-instance-id`).
    pub fn consumer(&self, influx: &Influxd, extra: &[&str]) -> ServiceProcess {
        self.member(influx, 0, extra)
    }

    /// [`Self::consumer`] as group member `index`: members running at once need distinct
    /// indexes (Kafka fences the older of two members with one instance id).
    pub fn member(&self, influx: &Influxd, index: usize, extra: &[&str]) -> ServiceProcess {
        self.start_consumer(influx, &influx.url, index, extra)
    }

    /// [`Self::consumer`] with InfluxDB reached at `url` (a proxy in front of `influx`).
    pub fn consumer_via(&self, influx: &Influxd, url: &str, extra: &[&str]) -> ServiceProcess {
        self.start_consumer(influx, url, 0, extra)
    }

    fn start_consumer(
        &self,
        influx: &Influxd,
        url: &str,
        index: usize,
        extra: &[&str],
    ) -> ServiceProcess {
        influx.create_db(&self.db);
        let instance = format!("{}-member-{index}", self.group);
        let base = [
            ("--brokers", self.brokers.as_str()),
            ("--topic", &self.topic),
            ("--group", &self.group),
            ("--dlq-topic", &self.dlq),
            ("--influx-url", url),
            ("--trigger", "200ms"),
            ("--session-timeout", "6s"),
            ("--influx-max-backoff", "500ms"),
            ("--group-instance-id", &instance),
        ];
        // A flag in `extra` replaces the harness's default for it.
        let mut args: Vec<String> = base
            .iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [flag.to_string(), value.to_string()])
            .collect();
        args.extend(influx.consumer_args(&self.db));
        args.extend(extra.iter().map(|s| s.to_string()));
        ServiceProcess::start(&crate::workspace_bin("consumer"), &args)
    }

    /// Consumes until `messages` were processed, stops the consumer with SIGTERM (asserting
    /// exit 0) and returns what it wrote.
    pub fn consume_all(&self, influx: &Influxd, messages: usize, extra: &[&str]) -> Snapshot {
        let mut c = self.consumer(influx, extra);
        wait_until(PIPELINE_TIMEOUT, "every message to be processed", || {
            c.assert_running();
            c.metric("candlepipe_consumer_messages_total") >= messages as f64
        });
        c.stop_cleanly();
        snapshot(influx, &self.db)
    }

    /// The group's committed offsets summed over partitions.
    pub fn committed(&self) -> i64 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::{Offset, TopicPartitionList};
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("offset reader");
        let md = c
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            tpl.add_partition(&self.topic, p.id());
        }
        c.committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets")
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum()
    }
}

/// The reference content for `candles`: delivered once into a fresh topic on the shared
/// broker and consumed by one uninterrupted consumer into the shared influxd.
pub fn reference_content(name: &str, candles: &[Candle]) -> Snapshot {
    let influx = Influxd::shared();
    let run = ConsumerRun::new(name, 3);
    produce_candles(&run.brokers, &run.topic, candles);
    run.consume_all(influx, candles.len(), &[])
}

/// A dataset folder holding copies of `testdata/real-ohlcv/<name>.parquet` for each name;
/// removed on drop.
pub fn real_dataset(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("dataset dir");
    for name in names {
        let file = format!("{name}.parquet");
        std::fs::copy(
            crate::testdata(&format!("real-ohlcv/{file}")),
            dir.path().join(&file),
        )
        .unwrap_or_else(|e| panic!("copying testdata/real-ohlcv/{file}: {e}"));
    }
    dir
}

/// Starts the `producer` binary replaying `dataset` once into `topic`, as recorded (no
/// rebase), at `speed` market minutes per second, plus `extra` flags; it exits 0 once every
/// candle is acknowledged.
pub fn replay_once(
    brokers: &str,
    topic: &str,
    dataset: &Path,
    speed: &str,
    extra: &[&str],
) -> ServiceProcess {
    let mut args: Vec<String> = [
        "--mode",
        "replay",
        "--speed",
        speed,
        "--no-loop",
        "--no-rebase",
        "--brokers",
        brokers,
        "--topic",
        topic,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push("--dataset".into());
    args.push(dataset.display().to_string());
    args.extend(extra.iter().map(|s| s.to_string()));
    ServiceProcess::start(&crate::workspace_bin("producer"), &args)
}
