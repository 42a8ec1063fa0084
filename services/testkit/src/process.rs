//! Child processes that die with the test: spawning, free ports, waiting on conditions.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// A free TCP port on 127.0.0.1 (bound and released; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Finds `name` on the PATH or in ~/.cargo/bin, or panics with how to install it.
pub fn require_binary(name: &str, install: &str) -> PathBuf {
    require_binary_named(&[name], install)
}

/// The first of `names` (one program's names across packagings, e.g. upstream's
/// `alertmanager` and Debian's `prometheus-alertmanager`) found on the PATH or in
/// ~/.cargo/bin, or panics with how to install it.
pub fn require_binary_named(names: &[&str], install: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    names
        .iter()
        .flat_map(|name| dirs.iter().map(move |d| d.join(name)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{}` is not installed, and the integration tests need the real server.\n\
                 Install it with:\n    {install}\n(or run scripts/test.sh, which installs everything)",
                names.join("` or `")
            )
        })
}

/// Polls `cond` until it returns true, panicking with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if cond() {
            return;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from a thread that lives as long as the process, with `PR_SET_PDEATHSIG`
/// set in the child: the kernel kills the child when that thread (the whole test binary)
/// exits. Spawning from short-lived test threads would kill the child when the test ends.
fn spawn_tied_to_process(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_deathsig(&mut cmd));
                }
                // Keep the thread (and so the children) alive until the process exits.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    tx.lock()
        .expect("spawner lock")
        .send((cmd, reply_tx))
        .expect("spawner alive");
    reply_rx.recv().expect("spawner replied")
}

fn spawn_with_deathsig(cmd: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A running server process with its log file; killed (SIGKILL) and reaped on drop.
pub struct ChildServer {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl ChildServer {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> ChildServer {
        let file = std::fs::File::create(&log).expect("create server log");
        cmd.stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone log handle"))
            .stderr(file);
        let child =
            spawn_tied_to_process(cmd).unwrap_or_else(|e| panic!("starting {name} failed: {e}"));
        ChildServer {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Everything the process logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last lines the server logged: for panic messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// Panics (with the log tail) when the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{} exited with {status}; its log ends with:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
        }
    }

    /// Waits for `ready`, failing early if the process dies.
    pub fn wait_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let name = self.name.clone();
        wait_until(timeout, &format!("{name} to answer"), || {
            self.assert_running();
            ready()
        });
    }

    /// The exit status, if the process has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server that fault tests kill and start again: on the same port, with the same data
/// folder, launched the same way each time. Dropping it kills the server, then removes the
/// folder.
pub(crate) struct Relaunchable {
    server: ChildServer,
    port: u16,
    dir: TempDir,
    launch: fn(u16, &TempDir) -> ChildServer,
}

impl Relaunchable {
    /// Launches a server on `port` with its data in `dir`.
    pub(crate) fn launch(
        port: u16,
        dir: TempDir,
        launch: fn(u16, &TempDir) -> ChildServer,
    ) -> Relaunchable {
        let server = launch(port, &dir);
        Relaunchable {
            server,
            port,
            dir,
            launch,
        }
    }

    /// Kills the server (SIGKILL); its data stays.
    pub(crate) fn kill(&mut self) {
        self.server.kill();
    }

    /// Kills the server and launches it again on the same port with the same data.
    pub(crate) fn relaunch(&mut self) {
        self.server.kill();
        self.server = (self.launch)(self.port, &self.dir);
    }
}
