//! Apache Kafka in KRaft mode, as compose runs it: one node for most tests, a three-node
//! cluster for broker failover.
//!
//! Each node is a JVM (`java -cp '<libs>/*' kafka.Kafka server.properties`) acting as broker
//! and controller at once, its storage formatted first with `kafka.tools.StorageTool`. The
//! jars come from Maven Central through `scripts/lib/install.sh` (`ensure_kafka`), cached
//! outside the repo. The heap is kept small (256 MiB): the tests move megabytes, not
//! gigabytes.

use super::template::{render, KAFKA_LOG4J_PROPERTIES, KAFKA_SERVER_PROPERTIES};
use super::{cache_dir, temp_dir, version, INSTALL_ALL, START_TIMEOUT};
use crate::process::{free_port, require_binary, wait_until, ChildServer};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

/// One KRaft node: its ports and, while it runs, its process.
struct Node {
    id: i32,
    port: u16,
    controller_port: u16,
    server: Option<ChildServer>,
}

/// A Kafka cluster of one or more KRaft nodes on loopback ports; every node dies on drop.
pub struct Kafka {
    nodes: Vec<Node>,
    libs: PathBuf,
    dir: TempDir,
    /// `127.0.0.1:<port>,…` of every node, for `bootstrap.servers`.
    pub brokers: String,
}

impl Kafka {
    /// The single-node broker shared by every test of this binary.
    pub fn shared() -> &'static Kafka {
        static SHARED: OnceLock<Kafka> = OnceLock::new();
        SHARED.get_or_init(Kafka::start)
    }

    /// A private single-node broker; killed on drop.
    pub fn start() -> Kafka {
        Self::cluster(1)
    }

    /// A private cluster of `n` nodes, each broker and controller. With three or more, the
    /// internal topics are replicated three times and topics default to three replicas;
    /// `min.insync.replicas` stays 1 broker-wide (set it per topic, as the failover test does,
    /// so that single-replica topics such as a dead-letter topic still take writes).
    pub fn cluster(n: usize) -> Kafka {
        assert!(n >= 1, "a cluster needs a node");
        let libs = kafka_libs();
        let dir = temp_dir("kafka-");
        let nodes: Vec<Node> = (1..=n as i32)
            .map(|id| Node {
                id,
                port: free_port(),
                controller_port: free_port(),
                server: None,
            })
            .collect();
        let brokers = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",");
        let mut kafka = Kafka {
            nodes,
            libs,
            dir,
            brokers,
        };
        let cluster_id = cluster_id();
        for i in 0..n {
            let conf = kafka.write_config(i);
            kafka.format(&conf, &cluster_id);
        }
        for i in 0..n {
            kafka.launch(i);
        }
        kafka.wait_brokers(n);
        kafka
    }

    /// Kills every node (SIGKILL); the logs stay on disk.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut s) = node.server.take() {
                s.kill();
            }
        }
    }

    /// Starts every node again on the same ports and storage, and waits until all answer.
    pub fn restart(&mut self) {
        self.stop();
        for i in 0..self.nodes.len() {
            self.launch(i);
        }
        self.wait_brokers(self.nodes.len());
    }

    /// Kills one node (SIGKILL).
    pub fn kill_node(&mut self, id: i32) {
        let node = self.node_mut(id);
        if let Some(mut s) = node.server.take() {
            s.kill();
        }
    }

    /// The node leading `topic`'s `partition` now, from a metadata request.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<i32> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("log_level", "0")
            .create()
            .ok()?;
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5)).ok()?;
        let t = md.topics().iter().find(|t| t.name() == topic)?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        (p.leader() >= 0).then_some(p.leader())
    }

    fn node_mut(&mut self, id: i32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no Kafka node {id}"))
    }

    fn node_dir(&self, id: i32) -> PathBuf {
        self.dir.path().join(format!("node-{id}"))
    }

    /// Writes node `i`'s `server.properties` and returns its path.
    fn write_config(&self, i: usize) -> PathBuf {
        let n = self.nodes.len();
        let node = &self.nodes[i];
        let voters = self
            .nodes
            .iter()
            .map(|v| format!("{}@127.0.0.1:{}", v.id, v.controller_port))
            .collect::<Vec<_>>()
            .join(",");
        let replicas = n.min(3);
        let dir = self.node_dir(node.id);
        std::fs::create_dir_all(&dir).expect("node dir");
        let mut config = render(
            KAFKA_SERVER_PROPERTIES,
            &[
                ("NODE_ID", &node.id),
                ("VOTERS", &voters),
                ("PORT", &node.port),
                ("CONTROLLER_PORT", &node.controller_port),
                ("LOG_DIRS", &dir.join("data").display()),
                ("REPLICAS", &replicas),
                ("MIN_ISR", &replicas.min(2)),
            ],
        );
        // The tests' own additions: a topic created without a count gets one partition and
        // every node's copy; fewer offsets partitions start faster; records up to 10 MB.
        config.push_str(&format!(
            "num.partitions=1\n\
             default.replication.factor={replicas}\n\
             offsets.topic.num.partitions=10\n\
             message.max.bytes=10485760\n"
        ));
        let path = dir.join("server.properties");
        std::fs::write(&path, config).expect("write server.properties");
        std::fs::write(dir.join("log4j.properties"), KAFKA_LOG4J_PROPERTIES)
            .expect("write log4j.properties");
        path
    }

    fn java(&self, dir: &Path) -> Command {
        let java = require_binary("java", "apt-get install -y openjdk-17-jre-headless");
        let mut cmd = Command::new(java);
        cmd.arg("-Xms64m")
            .arg("-Xmx256m")
            .arg("-XX:+UseSerialGC")
            .arg("-Djava.awt.headless=true")
            .arg(format!(
                "-Dlog4j.configuration=file:{}",
                dir.join("log4j.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .current_dir(dir);
        cmd
    }

    /// `kafka-storage.sh format`: writes the cluster id and node id into the log dir.
    fn format(&self, conf: &Path, cluster_id: &str) {
        let dir = conf.parent().expect("config dir");
        let out = self
            .java(dir)
            .args(["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c"])
            .arg(conf)
            .output()
            .expect("run kafka.tools.StorageTool");
        assert!(
            out.status.success(),
            "formatting Kafka's storage failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn launch(&mut self, i: usize) {
        let id = self.nodes[i].id;
        let dir = self.node_dir(id);
        let mut cmd = self.java(&dir);
        cmd.arg("kafka.Kafka").arg(dir.join("server.properties"));
        let log = self.dir.path().join(format!("node-{id}.log"));
        let server = ChildServer::spawn(&format!("kafka node {id}"), cmd, log);
        self.nodes[i].server = Some(server);
    }

    /// Waits until a metadata request lists `n` brokers (KRaft brokers register with the
    /// controller quorum before they serve), failing early if a node died.
    fn wait_brokers(&mut self, n: usize) {
        let brokers = self.brokers.clone();
        let nodes = &mut self.nodes;
        wait_until(
            START_TIMEOUT,
            &format!("{n} Kafka broker(s) to answer"),
            || {
                for node in nodes.iter_mut() {
                    if let Some(s) = node.server.as_mut() {
                        s.assert_running();
                    }
                }
                crate::kafka::brokers_listed(&brokers) >= n
            },
        );
    }
}

/// The jars `scripts/lib/install.sh` fetched, or a panic saying how to fetch them.
pub(crate) fn kafka_libs() -> PathBuf {
    let libs = std::env::var_os("CANDLEPIPE_KAFKA_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir()
                .join(format!("kafka-{}", version("CANDLEPIPE_KAFKA_VERSION")))
                .join("libs")
        });
    assert!(
        libs.join(".complete").is_file() || has_kafka_jar(&libs),
        "Apache Kafka {} is not installed at {}, and the integration tests need the real broker.\n\
         Install it with:\n    {INSTALL_ALL}",
        version("CANDLEPIPE_KAFKA_VERSION"),
        libs.display()
    );
    libs
}

fn has_kafka_jar(libs: &Path) -> bool {
    std::fs::read_dir(libs).is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
    })
}

/// A KRaft cluster id: 16 random bytes, base64url without padding (what
/// `kafka-storage.sh random-uuid` prints), without starting a JVM for it.
///
/// Never one starting with `-`: `StorageTool format -t -abc…` reads it as an option and fails
/// ("argument --cluster-id/-t: expected one argument"), which made 1 Kafka start in 64 fail.
/// Kafka's own `Uuid.randomUuid()` draws again for the same reason.
fn cluster_id() -> String {
    loop {
        let id = random_base64url_id();
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// 16 random bytes, base64url without padding.
fn random_base64url_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for chunk in bytes.chunks_mut(8) {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            out.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn cluster_ids_are_22_base64url_characters() {
        let id = super::cluster_id();
        assert_eq!(id.len(), 22, "{id}");
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(id, super::cluster_id());
    }

    /// One draw in 64 used to start with `-`, which `StorageTool format -t` takes for an
    /// option: 2,000 draws without one would happen by chance about once in 10^13.
    #[test]
    fn cluster_ids_never_start_with_a_dash() {
        for _ in 0..2000 {
            let id = super::cluster_id();
            assert!(!id.starts_with('-'), "{id}");
        }
    }
}
