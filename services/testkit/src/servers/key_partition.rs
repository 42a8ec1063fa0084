//! Where Apache Kafka's Java producer puts a key: the independent reference for the
//! producer's partitioner.
//!
//! The producer asks librdkafka for `murmur2_random`, which promises the Java client's
//! placement. Rather than re-implementing murmur2 in the test (which would check the code
//! against a copy of itself), this runs Kafka's own `BuiltInPartitioner.partitionForKey` from
//! the installed jars, through Java's single-file source launcher (`KeyPartition.java`).

use super::kafka::kafka_libs;
use std::collections::BTreeMap;
use std::process::Command;

/// The partition (of `partitions`) the Java producer picks for each key.
pub fn java_partitions(keys: &[&str], partitions: i32) -> BTreeMap<String, i32> {
    let dir = super::temp_dir("key-partition");
    let source = dir.path().join("KeyPartition.java");
    std::fs::write(&source, include_str!("KeyPartition.java")).expect("write KeyPartition.java");
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", kafka_libs().display()))
        .arg(&source)
        .arg(partitions.to_string())
        .args(keys)
        .output()
        .expect("run java (Java 17 is needed for Apache Kafka; install a JDK)");
    assert!(
        out.status.success(),
        "KeyPartition.java failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let (p, key) = l.split_once(' ').expect("`partition key` lines");
            (key.to_owned(), p.parse().expect("a partition number"))
        })
        .collect()
}
