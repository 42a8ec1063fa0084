//! The opening both binaries share, in the order it must happen: malloc settings before any
//! thread exists, then the tokio runtime, logging, the flags (one clap struct per binary,
//! every flag also an environment variable) with their secrets read from files, and only
//! then the binary's own `run`. Its error becomes the exit code, with the whole context
//! chain logged and printed.
//!
//! Why one function: the producer and the consumer opened this way line for line, and a
//! mistake in the order (malloc tuned after the runtime's threads start, a flag error
//! before logging exists) would be silent. Each `main.rs` is one call to [`main`], and
//! then the wiring that is its own.

use crate::{alloc, telemetry};
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Runs a binary: tunes malloc, starts a multi-threaded tokio runtime, sets up logging,
/// parses `C` from the command line and the environment, resolves its secrets, and awaits
/// `run` with it. Returns the process exit code (`binary` names the program in the error
/// line on stderr).
///
/// When `run` returns, tasks still on the runtime's blocking threads get one second before
/// the process exits: after a shutdown that gave up, one may still wait on a broker, and it
/// must not hold the exit past `--shutdown-timeout`.
pub fn main<C, E, F, Fut>(
    binary: &'static str,
    resolve_secrets: impl FnOnce(&mut C) -> Result<(), E>,
    run: F,
) -> ExitCode
where
    C: clap::Parser,
    E: Into<anyhow::Error>,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    // Before the runtime exists: malloc settings should hold for every thread it starts.
    let malloc = alloc::tune();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the tokio runtime");
    let code = runtime.block_on(async {
        telemetry::init();
        tracing::debug!(settings = %malloc.describe(), "malloc");
        finish(binary, C::parse(), resolve_secrets, run).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Resolves the secrets of the parsed `cfg`, runs the binary unless that failed, and turns
/// the outcome into the exit code.
async fn finish<C, E, F, Fut>(
    binary: &'static str,
    mut cfg: C,
    resolve_secrets: impl FnOnce(&mut C) -> Result<(), E>,
    run: F,
) -> ExitCode
where
    E: Into<anyhow::Error>,
    F: FnOnce(C) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let result = match resolve_secrets(&mut cfg) {
        Ok(()) => run(cfg).await,
        Err(e) => Err(e.into()),
    };
    telemetry::exit_code(binary, result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A parsed config with one secret to resolve.
    struct Cfg {
        token: Option<String>,
    }

    fn resolve_ok(cfg: &mut Cfg) -> Result<(), std::io::Error> {
        cfg.token = Some("from a file".into());
        Ok(())
    }

    fn resolve_fails(_: &mut Cfg) -> Result<(), std::io::Error> {
        Err(std::io::Error::other("TOKEN and TOKEN_FILE are both set"))
    }

    fn block_on<T>(f: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn run_sees_the_resolved_secrets_and_its_result_is_the_exit_code() {
        let ran_with = Cell::new(None);
        let code = block_on(finish(
            "toy",
            Cfg { token: None },
            resolve_ok,
            |cfg: Cfg| {
                ran_with.set(cfg.token);
                async { Ok(()) }
            },
        ));
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(ran_with.take().as_deref(), Some("from a file"));

        let code = block_on(finish("toy", Cfg { token: None }, resolve_ok, |_| async {
            Err(anyhow::anyhow!("the broker is gone"))
        }));
        assert_eq!(code, ExitCode::FAILURE);
    }

    #[test]
    fn a_secret_that_cannot_be_resolved_stops_before_run() {
        let ran = Cell::new(false);
        let code = block_on(finish("toy", Cfg { token: None }, resolve_fails, |_| {
            ran.set(true);
            async { Ok(()) }
        }));
        assert_eq!(code, ExitCode::FAILURE);
        assert!(!ran.get(), "run must not start with unresolved secrets");
    }
}
