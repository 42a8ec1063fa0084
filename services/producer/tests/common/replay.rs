//! Helpers both replay test files use (`replay_reader.rs` for parquet, `klines_reader.rs`
//! for Binance kline files): running a replay to its end under a virtual clock, comparing
//! candles, and capturing the log.

use candlepipe_model::Candle;
use candlepipe_producer::clock::VirtualClock;
use candlepipe_producer::source::replay::{
    ReplayEnd, ReplayError, ReplayOptions, ReplaySource, ReplayStats, Speed,
};
use candlepipe_runtime::shutdown;
use std::path::Path;
use std::sync::Arc;

/// A wall-clock "now" for the virtual clock, deliberately not minute aligned.
pub const NOW: i64 = 1_732_250_000_123;

/// Options for an analysis-style run: as fast as possible, original timestamps, one pass.
pub fn plain(dir: &Path) -> ReplayOptions {
    ReplayOptions {
        speed: Speed::Max,
        looping: false,
        rebase: false,
        ..ReplayOptions::new(dir)
    }
}

/// Replays to the end under a virtual clock; returns the candles and the stats.
pub fn replay_all(opts: ReplayOptions) -> Result<(Vec<Candle>, Arc<ReplayStats>), ReplayError> {
    let mut source = ReplaySource::open(opts)?;
    let (_trigger, stop) = shutdown::channel();
    let clock = VirtualClock::new(NOW);
    let mut out = Vec::new();
    let end = source.run(&clock, &stop, &mut |c| {
        out.push(c);
        true
    })?;
    assert_eq!(end, ReplayEnd::Finished);
    Ok((out, source.stats()))
}

/// Asserts two candle sequences are equal, reporting the first difference compactly.
#[track_caller]
pub fn assert_candles(got: &[Candle], want: &[Candle], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: candle {i} differs:\n got  {:?}\n want {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: candle count");
}

/// Captures the `warn`-level log lines written while `f` runs.
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    capture_logs_at(tracing::Level::WARN, f)
}

pub use candlepipe_runtime::log_capture::capture_logs_at;

/// A folder holding the good files whose candles are `good` plus one bad file called `name`:
/// opening it without `--skip-bad-files` is an error naming the file and `expected`; with it,
/// the bad file is skipped, counted and logged, and exactly `good` is replayed.
#[track_caller]
pub fn assert_bad_file_refused_then_skipped(
    dir: &Path,
    good: &[Candle],
    name: &str,
    expected: &str,
) {
    let err = ReplaySource::open(plain(dir))
        .err()
        .unwrap_or_else(|| panic!("{name}: opened"));
    let text = err.to_string();
    assert!(matches!(err, ReplayError::File { .. }), "{name}: {text}");
    assert!(
        text.contains(name) && text.contains(expected),
        "{name}: {text:?} should mention {expected:?}"
    );
    let opts = ReplayOptions {
        skip_bad_files: true,
        ..plain(dir)
    };
    let ((out, stats), logs) = capture_logs(|| replay_all(opts).unwrap());
    assert_candles(&out, good, name);
    assert_eq!(stats.bad_files(), 1, "{name}");
    assert!(
        logs.contains("skipping bad file") && logs.contains(name),
        "{name}: {logs}"
    );
}
