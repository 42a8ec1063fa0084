//! The machine under the benchmark: where the release binaries are, how busy the CPUs are,
//! and what the kernel says a process used.
//!
//! The benchmark runs on a shared 2-core machine, so every measurement carries its
//! [`Conditions`]: a number taken while other builds ran is a lower bound, and the report
//! must say so rather than hide it.

use std::path::PathBuf;

/// The release binaries this benchmark drives.
pub struct ReleaseBins {
    pub producer: PathBuf,
    pub consumer: PathBuf,
}

impl ReleaseBins {
    /// `dir`, or `target/release` found from this example's path
    /// (`target/<profile>/examples/pipeline_bench`). testkit's `workspace_bin` would look
    /// in `examples/`, and debug binaries would be the wrong thing to measure anyway.
    pub fn locate(dir: Option<PathBuf>) -> ReleaseBins {
        let dir = dir.unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("current exe");
            let target = exe
                .ancestors()
                .nth(3)
                .expect("the example runs from target/<profile>/examples/");
            target.join("release")
        });
        let bin = |name: &str| {
            let p = dir.join(name);
            assert!(
                p.is_file(),
                "{} is missing: run `cargo build --release --workspace --bins` first",
                p.display()
            );
            p
        };
        ReleaseBins {
            producer: bin("producer"),
            consumer: bin("consumer"),
        }
    }
}

/// `/proc/loadavg`'s 1, 5 and 15 minute load averages, as text.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Busy and total jiffies of all CPUs together (`/proc/stat`).
#[derive(Debug, Clone, Copy)]
struct MachineCpu {
    busy: u64,
    total: u64,
}

impl MachineCpu {
    fn now() -> MachineCpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is inside user).
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        let total: u64 = fields.iter().take(8).sum();
        MachineCpu {
            busy: total.saturating_sub(idle),
            total,
        }
    }

    /// Fraction of all CPUs busy since `self` (any process, ours or others').
    fn busy_since(&self) -> f64 {
        let now = MachineCpu::now();
        let total = now.total.saturating_sub(self.total).max(1);
        now.busy.saturating_sub(self.busy) as f64 / total as f64
    }
}

/// What was going on around one measurement.
#[derive(Debug, Clone)]
pub struct Conditions {
    pub load_before: String,
    pub load_after: String,
    /// Fraction of the machine's CPUs busy during the measurement (all processes).
    pub machine_busy: f64,
}

/// Records [`Conditions`] from [`Watch::start`] to [`Watch::end`].
pub struct Watch {
    load_before: String,
    cpu: MachineCpu,
}

impl Watch {
    pub fn start() -> Watch {
        Watch {
            load_before: load_average(),
            cpu: MachineCpu::now(),
        }
    }

    pub fn end(&self) -> Conditions {
        Conditions {
            load_before: self.load_before.clone(),
            load_after: load_average(),
            machine_busy: self.cpu.busy_since(),
        }
    }
}

/// utime + stime of a live process, seconds (`/proc/<pid>/stat`).
pub fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("process stat");
    let ticks = cpu_ticks_from_stat(&stat).expect("utime and stime in /proc/<pid>/stat");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line, in clock ticks. The
/// command name (field 2) may hold spaces and parentheses, so fields are counted after its
/// last closing parenthesis.
fn cpu_ticks_from_stat(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Peak resident set size of a live process, KiB (`VmHWM` in `/proc/<pid>/status`).
pub fn process_peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("process status")
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_14_and_15_even_with_spaces_in_the_name() {
        // A real line's shape: pid (comm) state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime ...
        let stat = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 900 0 3 0 170 25 0 0 20 0";
        assert_eq!(cpu_ticks_from_stat(stat), Some(195));
        assert_eq!(cpu_ticks_from_stat("4242 (cut) S 1 2"), None);
    }

    #[test]
    fn this_process_has_a_peak_rss() {
        assert!(process_peak_rss_kib(std::process::id()) > 0);
    }
}
