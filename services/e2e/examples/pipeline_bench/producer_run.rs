//! The producer under measurement: `producer --no-loop` replaying a dataset folder into a
//! topic, timed from spawn to exit 0 (every candle acknowledged by the broker).
//!
//! The child is reaped with `wait4` rather than `Child::wait` because the kernel hands back
//! its resource usage there: peak RSS (`ru_maxrss`) and user/system CPU, exactly what
//! `/usr/bin/time -v` prints, with no sampling gap before the exit.

use crate::machine::{Conditions, ReleaseBins, Watch};
use crate::MEASUREMENT_TIMEOUT;
use candlepipe_testkit::free_port;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One finished `producer --no-loop` run.
#[derive(Debug, Clone)]
pub struct TimedProducer {
    /// The `--speed` it ran with.
    pub speed: String,
    pub wall_s: f64,
    pub user_s: f64,
    pub sys_s: f64,
    /// Peak RSS from the reaped child's rusage, KiB.
    pub max_rss_kib: u64,
    pub conditions: Conditions,
}

impl TimedProducer {
    /// Replays `dataset` into `topic` at `speed` (original timestamps) and waits for the
    /// producer to exit 0; its log goes to `logs/`.
    pub fn run(
        bins: &ReleaseBins,
        brokers: &str,
        topic: &str,
        dataset: &Path,
        speed: &str,
        logs: &Path,
    ) -> TimedProducer {
        let log_path = logs.join(format!("producer-{topic}.log"));
        let log = std::fs::File::create(&log_path).expect("producer log");
        let mut cmd = Command::new(&bins.producer);
        cmd.args(["--mode", "replay", "--brokers", brokers, "--topic", topic])
            .arg("--dataset")
            .arg(dataset)
            .args(["--speed", speed, "--no-loop", "--no-rebase"])
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .env(
                "RUST_LOG",
                std::env::var("SERVICE_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; the producer dies with the benchmark.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let watch = Watch::start();
        let started = Instant::now();
        #[expect(
            clippy::zombie_processes,
            reason = "reaped below with wait4, which also returns its rusage"
        )]
        let child = cmd.spawn().expect("spawn the producer");
        let pid = child.id() as libc::pid_t;
        let (status, usage) = loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid out-parameter.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: pid is our own child, not reaped yet.
            let got = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if got == pid {
                break (status, usage);
            }
            assert_eq!(got, 0, "wait4 on the producer failed");
            if started.elapsed() > MEASUREMENT_TIMEOUT {
                // SAFETY: kill(2) on our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the producer did not finish within {MEASUREMENT_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let wall_s = started.elapsed().as_secs_f64();
        let conditions = watch.end();
        let exit = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        assert_eq!(
            exit,
            Some(0),
            "the producer failed; its log:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        TimedProducer {
            speed: speed.to_owned(),
            wall_s,
            user_s: secs(usage.ru_utime),
            sys_s: secs(usage.ru_stime),
            max_rss_kib: usage.ru_maxrss as u64,
            conditions,
        }
    }

    /// Candles per second of wall time.
    pub fn rate(&self, candles: u64) -> f64 {
        candles as f64 / self.wall_s
    }

    /// CPU (user + system) per candle, µs.
    pub fn cpu_us_per_candle(&self, candles: u64) -> f64 {
        (self.user_s + self.sys_s) * 1e6 / candles as f64
    }
}
