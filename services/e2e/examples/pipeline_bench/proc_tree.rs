//! A process and all its descendants, read from `/proc`: the CPU and memory of a peer that
//! is more than one process (pyspark's Python driver starts a JVM; a shell script starts its
//! program), where one process's numbers would undercount it.

use std::collections::HashMap;

/// One process's line of `/proc/<pid>/stat`, the fields the benchmark needs.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Stat {
    ppid: u32,
    /// utime + stime, clock ticks.
    own_ticks: u64,
    /// cutime + cstime: the children it has already reaped, and theirs.
    reaped_ticks: u64,
    /// Resident pages.
    rss_pages: u64,
}

/// Parses a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last closing parenthesis.
fn parse_stat(line: &str) -> Option<Stat> {
    let after = line.get(line.rfind(')')? + 1..)?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // `f[0]` is field 3 (state): ppid is field 4, utime..cstime 14..17, rss 24.
    let num = |i: usize| f.get(i)?.parse::<u64>().ok();
    Some(Stat {
        ppid: num(1)? as u32,
        own_ticks: num(11)? + num(12)?,
        reaped_ticks: num(13)? + num(14)?,
        rss_pages: num(21)?,
    })
}

fn all_processes() -> HashMap<u32, Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parse_stat(&line)?))
        })
        .collect()
}

/// `root` and every process below it.
fn tree(root: u32, all: &HashMap<u32, Stat>) -> Vec<(u32, Stat)> {
    let mut out: Vec<(u32, Stat)> = all.get(&root).map(|s| (root, *s)).into_iter().collect();
    let mut i = 0;
    while i < out.len() {
        let parent = out[i].0;
        out.extend(
            all.iter()
                .filter(|(_, s)| s.ppid == parent)
                .map(|(p, s)| (*p, *s)),
        );
        i += 1;
    }
    out
}

/// CPU (user + system) the tree under `root` has used so far, `root` excluded, seconds:
/// the live descendants, what they reaped, and what `root` reaped.
pub fn tree_cpu_seconds(root: u32) -> f64 {
    let all = all_processes();
    let ticks: u64 = tree(root, &all)
        .iter()
        .map(|(pid, s)| {
            if *pid == root {
                s.reaped_ticks
            } else {
                s.own_ticks + s.reaped_ticks
            }
        })
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// Resident memory of the processes below `root` (not `root` itself), KiB.
pub fn tree_rss_kib(root: u32) -> u64 {
    let all = all_processes();
    // SAFETY: sysconf has no preconditions.
    let page_kib = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64 / 1024;
    tree(root, &all)
        .iter()
        .skip(1)
        .map(|(_, s)| s.rss_pages * page_kib)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime priority nice threads itrealvalue starttime vsize rss
        let line = "42 (a (b) c) S 7 42 42 0 -1 0 0 0 0 0 100 20 3 4 20 0 1 0 99 1000 256 x";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 7,
                own_ticks: 120,
                reaped_ticks: 7,
                rss_pages: 256
            })
        );
        assert_eq!(parse_stat("42 (cut) S 7"), None);
    }

    #[test]
    fn a_child_is_in_its_parents_tree() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        let me = std::process::id();
        let all = all_processes();
        let pids: Vec<u32> = tree(me, &all).iter().map(|(p, _)| *p).collect();
        child.kill().ok();
        child.wait().ok();
        assert_eq!(pids[0], me);
        assert!(pids.contains(&child.id()), "{pids:?}");
    }
}
