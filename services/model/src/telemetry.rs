//! Logging setup shared by both binaries: `tracing` to stderr, filtered by `RUST_LOG`
//! (default `info`), as text or, with `LOG_FORMAT=json`, one JSON object per line for log
//! shippers.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Call once at the top of `main`.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,hyper=warn,reqwest=warn"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// The process exit code for a binary's result: success, or the error with its whole
/// context chain logged and printed to stderr (where a supervisor shows it).
pub fn exit_code(binary: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("{binary}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
