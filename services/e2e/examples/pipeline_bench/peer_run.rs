//! One peer under measurement: any program that reads the topic and writes InfluxDB 2
//! (candlepipe's consumer, Spark, Telegraf, a Python script), measured the same way for all,
//! from the outside, without trusting what the peer says about itself.
//!
//! - It runs under [`crate::reaper`] (this example re-run as `reap`), so its CPU and peak RSS
//!   come from the kernel's rusage of the reaped process tree, the JVM included.
//! - Its own fresh InfluxDB 2 is sampled every [`SAMPLE_EVERY`] through InfluxDB's
//!   `/metrics`: `storage_writer_ok_points_sum` counts the points its storage engine
//!   accepted, whoever sent them. The first sample with a point is the first point, the last
//!   change of that counter is the last point.
//! - It is done when the counter has not moved for [`SETTLE`] and InfluxDB holds one `1m`
//!   candle point per candle of the topic; then it gets SIGTERM and must exit.
//!
//! A peer that fails (exits early, or has not written every candle by the timeout) is
//! reported as such with its log's tail, not left out.

use crate::consumer_run::metric_sum;
use crate::machine::{Conditions, Watch};
use crate::proc_tree::tree_cpu_seconds;
use crate::reaper::TreeUsage;
use candlepipe_testkit::pipeline::count_points;
use candlepipe_testkit::{get, Influxd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How often InfluxDB's `/metrics` is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);
/// How long the points counter must stay still before the peer is checked for completion.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a peer may take to write every candle (JVM start included).
pub const PEER_TIMEOUT: Duration = Duration::from_secs(900);
/// How long a peer may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(120);

/// A peer: what the report calls it, and how to start it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The report's row name, e.g. `Spark Structured Streaming`.
    pub name: String,
    /// The versions it ran, for the report.
    pub version: String,
    /// What it computes, for the report.
    pub computes: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment beyond the `PEER_*` variables every peer gets.
    pub env: Vec<(String, String)>,
}

impl Peer {
    /// `NAME|VERSION|COMPUTES|PROGRAM ARG…` (the program and arguments split on spaces).
    pub fn parse(spec: &str) -> Result<Peer, String> {
        let parts: Vec<&str> = spec.splitn(4, '|').collect();
        let [name, version, computes, command] = parts[..] else {
            return Err(format!(
                "--peer {spec:?}: expected NAME|VERSION|COMPUTES|PROGRAM ARG…"
            ));
        };
        let command: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
        if command.is_empty() {
            return Err(format!("--peer {spec:?}: no program"));
        }
        Ok(Peer {
            name: name.trim().to_owned(),
            version: version.trim().to_owned(),
            computes: computes.trim().to_owned(),
            command,
            env: Vec::new(),
        })
    }
}

/// Where a peer reads from and writes to.
pub struct Target<'a> {
    pub brokers: &'a str,
    pub topic: &'a str,
    pub influx: &'a Influxd,
    pub bucket: &'a str,
    pub group: &'a str,
}

impl Target<'_> {
    /// The `PEER_*` environment every peer is configured by.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("PEER_BROKERS", self.brokers),
            ("PEER_TOPIC", self.topic),
            ("PEER_GROUP", self.group),
            ("PEER_INFLUX_URL", &self.influx.url),
            ("PEER_INFLUX_ORG", candlepipe_testkit::INFLUX_ORG),
            ("PEER_INFLUX_TOKEN", candlepipe_testkit::INFLUX_TOKEN),
            ("PEER_INFLUX_BUCKET", self.bucket),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// What one peer run measured.
#[derive(Debug, Clone)]
pub struct PeerResult {
    pub peer: Peer,
    pub candles: u64,
    /// Why the run failed, if it did (then the numbers cover what it did until then).
    pub failure: Option<String>,
    /// Points InfluxDB had accepted at the first sample showing any.
    pub points_at_first_sample: u64,
    pub start_to_first_s: f64,
    pub first_to_last_s: f64,
    /// Points InfluxDB accepted in all (rewrites of a filling window included).
    pub points: u64,
    /// CPU of the tree when the first point was seen, s (JVM start, group join, first batch).
    pub cpu_at_first_s: f64,
    pub usage: Option<TreeUsage>,
    /// Points of `candle` in the bucket per interval: 1m, 5m, 15m, 1h.
    pub by_interval: [usize; 4],
    pub conditions: Conditions,
}

impl PeerResult {
    /// Candles per second from the first point to the last: the points written in that
    /// interval, per second, ÷ points per candle (as the consumer's own runs count).
    pub fn rate(&self) -> f64 {
        let per_candle = self.points as f64 / self.candles as f64;
        (self.points - self.points_at_first_sample) as f64 / self.first_to_last_s / per_candle
    }

    /// Whole-life CPU (user + system) of the tree, s.
    pub fn cpu_s(&self) -> f64 {
        self.usage.map_or(f64::NAN, |u| u.user_s + u.sys_s)
    }

    pub fn cpu_us_per_candle(&self) -> f64 {
        self.cpu_s() * 1e6 / self.candles as f64
    }

    pub fn wrote_every_candle(&self) -> bool {
        self.by_interval[0] as u64 == self.candles
    }

    pub fn summary(&self) -> String {
        format!(
            "{}: {:.0} candles/s, {:.2} µs CPU/candle ({:.1} s before the first point), \
             {} points, 1m/5m/15m/1h {:?}, tree RSS {:.0} MiB, load {} → {}{}",
            self.peer.name,
            self.rate(),
            self.cpu_us_per_candle(),
            self.cpu_at_first_s,
            self.points,
            self.by_interval,
            self.usage.map_or(0, |u| u.tree_rss_kib) as f64 / 1024.0,
            self.conditions.load_before,
            self.conditions.load_after,
            self.failure
                .as_ref()
                .map_or(String::new(), |f| format!("; FAILED: {f}"))
        )
    }
}

/// `storage_writer_ok_points_sum`: points InfluxDB's storage engine accepted so far.
pub fn points_accepted(influx: &Influxd) -> Option<u64> {
    let (status, text) = get(&format!("{}/metrics", influx.url))?;
    (status == 200).then(|| metric_sum(&text, "storage_writer_ok_points_sum") as u64)
}

/// `candle` points of one interval in `bucket`.
pub fn candle_points(influx: &Influxd, bucket: &str, interval: &str) -> usize {
    count_points(
        influx,
        bucket,
        "candle",
        "close",
        &format!("\"interval\" = '{interval}'"),
    )
}

/// The peer running under the reaper.
pub struct Running {
    pub child: Child,
    usage_file: PathBuf,
    log: PathBuf,
}

impl Running {
    pub fn start(peer: &Peer, target: &Target, logs: &Path) -> Running {
        let slug: String = peer
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let log = logs.join(format!("peer-{slug}-{}.log", target.bucket));
        let usage_file = logs.join(format!("peer-{slug}-{}.usage", target.bucket));
        let out = std::fs::File::create(&log).expect("peer log");
        let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
        cmd.arg("reap")
            .arg("--out")
            .arg(&usage_file)
            .arg("--")
            .args(&peer.command)
            .envs(target.env())
            .envs(peer.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log handle"))
            .stderr(out);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the reaper dies with the benchmark.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().expect("start the reaper");
        Running {
            child,
            usage_file,
            log,
        }
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, then the reaper's usage file once the whole tree exited.
    pub fn stop(mut self) -> (Option<TreeUsage>, Option<String>) {
        // SAFETY: kill(2) on our own child, the reaper, which forwards it.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > STOP_TIMEOUT {
                self.child.kill().ok();
                self.child.wait().ok();
                return (
                    None,
                    Some(format!("did not exit {STOP_TIMEOUT:?} after SIGTERM")),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let usage = std::fs::read_to_string(&self.usage_file)
            .ok()
            .and_then(|l| TreeUsage::parse(&l));
        let problem = match usage {
            None => Some("the reaper wrote no usage".to_owned()),
            Some(TreeUsage {
                exit_code: Some(0), ..
            }) => None,
            Some(u) => Some(format!(
                "exited with {:?} after SIGTERM; log tail:\n{}",
                u.exit_code,
                self.log_tail()
            )),
        };
        (usage, problem)
    }
}

/// Runs `peer` against `target` until it wrote every one of `candles` candles (or failed),
/// then stops it and counts what InfluxDB holds.
pub fn measure(peer: &Peer, target: &Target, candles: u64, logs: &Path) -> PeerResult {
    let influx = target.influx;
    let watch = Watch::start();
    let started = Instant::now();
    let mut run = Running::start(peer, target, logs);
    let reaper_pid = run.child.id();
    let mut first: Option<(Instant, u64, f64)> = None;
    let (mut points, mut changed_at, mut checked_at) = (0u64, started, None::<Instant>);
    let mut failure = None;
    loop {
        if let Some(status) = run.child.try_wait().expect("poll the reaper") {
            failure = Some(format!(
                "exited on its own ({status}); log tail:\n{}",
                run.log_tail()
            ));
            break;
        }
        let now = Instant::now();
        let seen = points_accepted(influx).unwrap_or(points);
        if seen != points {
            points = seen;
            changed_at = now;
            if first.is_none() {
                first = Some((now, seen, tree_cpu_seconds(reaper_pid)));
            }
        }
        let settled = first.is_some() && now - changed_at >= SETTLE;
        if settled && checked_at != Some(changed_at) {
            checked_at = Some(changed_at);
            if candle_points(influx, target.bucket, "1m") as u64 >= candles {
                break;
            }
        }
        if started.elapsed() > PEER_TIMEOUT {
            failure = Some(format!(
                "had not written every candle after {PEER_TIMEOUT:?}; log tail:\n{}",
                run.log_tail()
            ));
            break;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    let conditions = watch.end();
    let (usage, stop_problem) = if failure.is_some() {
        // It may be gone already; the usage file is there if the reaper finished.
        let (usage, _) = run.stop();
        (usage, None)
    } else {
        run.stop()
    };
    let (first_at, points_at_first_sample, cpu_at_first_s) =
        first.unwrap_or((changed_at, points, f64::NAN));
    let by_interval = ["1m", "5m", "15m", "1h"].map(|i| candle_points(influx, target.bucket, i));
    let failure = failure.or(stop_problem).or_else(|| {
        (by_interval[0] as u64 != candles)
            .then(|| format!("InfluxDB holds {} 1m candles of {candles}", by_interval[0]))
    });
    PeerResult {
        peer: peer.clone(),
        candles,
        failure,
        points_at_first_sample,
        start_to_first_s: (first_at - started).as_secs_f64(),
        first_to_last_s: (changed_at - first_at).as_secs_f64(),
        points,
        cpu_at_first_s,
        usage,
        by_interval,
        conditions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_spec_has_four_parts_and_a_program() {
        let p = Peer::parse("Telegraf|1.37.2|1m candles only|/opt/telegraf --config t.conf")
            .expect("valid spec");
        assert_eq!(p.name, "Telegraf");
        assert_eq!(p.version, "1.37.2");
        assert_eq!(p.computes, "1m candles only");
        assert_eq!(p.command, ["/opt/telegraf", "--config", "t.conf"]);
        assert!(Peer::parse("Telegraf|1.37.2|/opt/telegraf").is_err());
        assert!(Peer::parse("Telegraf|1.37.2|x|  ").is_err());
    }
}
