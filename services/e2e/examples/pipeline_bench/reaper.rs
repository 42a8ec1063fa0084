//! `pipeline_bench reap --out FILE -- COMMAND ARGS…`: runs a peer as the child of a
//! subreaper, so that the kernel's resource usage covers the peer's whole process tree.
//!
//! A peer may be several processes: pyspark's Python driver starts the JVM that does the
//! work, and the JVM outlives the driver for a moment (it exits when its stdin closes), as an
//! orphan. A parent only gets the resource usage of the children it reaps, so this process
//! marks itself a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphans of the tree are handed
//! to it, it reaps every one of them, and `getrusage(RUSAGE_CHILDREN)` then holds the CPU of
//! the whole tree and the peak RSS of its largest process. It also samples the tree's summed
//! RSS every [`RSS_EVERY`] (the JVM and its driver together), and writes all of it to FILE.
//!
//! SIGTERM is forwarded to the command only, which shuts its tree down the way it does in
//! production; what is still alive [`GRACE`] after the command exited is killed.

use crate::proc_tree::tree_rss_kib;
use clap::Parser;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the tree's RSS is sampled.
const RSS_EVERY: Duration = Duration::from_millis(100);
/// How long descendants may outlive the command before they are killed.
const GRACE: Duration = Duration::from_secs(60);

/// `pipeline_bench reap`'s command line.
#[derive(Debug, Parser)]
#[command(name = "pipeline_bench reap")]
pub struct ReapArgs {
    /// Where to write the tree's resource usage when everything has exited.
    #[arg(long)]
    out: PathBuf,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    command: Vec<OsString>,
}

/// What the reaper writes to `--out`: one line of `key=value` pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TreeUsage {
    pub user_s: f64,
    pub sys_s: f64,
    /// The largest single process's peak RSS (`ru_maxrss` of RUSAGE_CHILDREN), KiB.
    pub max_rss_kib: u64,
    /// The largest summed RSS of the tree seen by sampling, KiB.
    pub tree_rss_kib: u64,
    /// The command's exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
}

impl TreeUsage {
    pub fn to_line(self) -> String {
        format!(
            "user_s={} sys_s={} max_rss_kib={} tree_rss_kib={} exit_code={}",
            self.user_s,
            self.sys_s,
            self.max_rss_kib,
            self.tree_rss_kib,
            self.exit_code
                .map_or("signal".to_owned(), |c| c.to_string())
        )
    }

    pub fn parse(line: &str) -> Option<TreeUsage> {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
        };
        Some(TreeUsage {
            user_s: field("user_s")?.parse().ok()?,
            sys_s: field("sys_s")?.parse().ok()?,
            max_rss_kib: field("max_rss_kib")?.parse().ok()?,
            tree_rss_kib: field("tree_rss_kib")?.parse().ok()?,
            exit_code: field("exit_code")?.parse().ok(),
        })
    }
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Runs the reaper; never returns.
pub fn main(args: ReapArgs) -> ! {
    // SAFETY: plain prctl/signal calls; the handler only stores an atomic.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
        libc::signal(
            libc::SIGTERM,
            on_terminate as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            on_terminate as *const () as libc::sighandler_t,
        );
    }
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..]);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setpgid and prctl are async-signal-safe. The command leads a process group
        // (so that what outlives it can be killed together) and dies with the reaper.
        unsafe {
            cmd.pre_exec(|| {
                libc::setpgid(0, 0);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    // Reaped below with waitpid(-1), like every orphan of the tree.
    let child = cmd.spawn().unwrap_or_else(|e| {
        eprintln!("reap: cannot start {:?}: {e}", args.command[0]);
        std::process::exit(127)
    });
    let pid = child.id() as libc::pid_t;
    let me = std::process::id();
    let (mut exit_code, mut command_done, mut forwarded) = (None, None::<Instant>, false);
    let (mut tree_rss, mut sampled) = (0u64, Instant::now() - RSS_EVERY);
    loop {
        if TERMINATE.load(Ordering::SeqCst) && !forwarded && command_done.is_none() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            forwarded = true;
        }
        if sampled.elapsed() >= RSS_EVERY {
            tree_rss = tree_rss.max(tree_rss_kib(me));
            sampled = Instant::now();
        }
        let mut status = 0;
        // SAFETY: waitpid on any child of ours, not blocking.
        let got = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if got == pid {
            exit_code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
            command_done = Some(Instant::now());
        } else if got < 0 {
            break; // ECHILD: the command and every orphan have been reaped.
        }
        if command_done.is_some_and(|t| t.elapsed() > GRACE) {
            // SAFETY: kill(2) on the command's process group.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
        if got <= 0 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // SAFETY: an all-zero rusage is a valid out-parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills `usage`.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let result = TreeUsage {
        user_s: secs(usage.ru_utime),
        sys_s: secs(usage.ru_stime),
        max_rss_kib: usage.ru_maxrss as u64,
        tree_rss_kib: tree_rss,
        exit_code,
    };
    std::fs::write(&args.out, result.to_line()).expect("write the usage file");
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usage_line_reads_back() {
        let u = TreeUsage {
            user_s: 12.5,
            sys_s: 0.25,
            max_rss_kib: 1024,
            tree_rss_kib: 4096,
            exit_code: Some(0),
        };
        assert_eq!(TreeUsage::parse(&u.to_line()), Some(u));
        let killed = TreeUsage {
            exit_code: None,
            ..u
        };
        assert_eq!(TreeUsage::parse(&killed.to_line()), Some(killed));
        assert_eq!(TreeUsage::parse("user_s=1"), None);
    }
}
