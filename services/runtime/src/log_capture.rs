//! Test support: the log lines a piece of code writes, captured in memory, so tests can
//! assert what an operator would read (one line per error kind, a file named, no flood).
//! Compiled for this crate's own tests and, with the `test-support` feature, for other
//! crates' tests; never part of a binary.

use std::sync::{Arc, Mutex, OnceLock};
use tracing::subscriber::NoSubscriber;
use tracing::Dispatch;

/// Captures the log lines at `level` and above that `f` writes through `tracing` on this
/// thread, as plain text (no ANSI codes), and returns `f`'s result with them.
pub fn capture_logs_at<T>(level: tracing::Level, f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    // tracing caches whether each log line is wanted, process-wide, when the line is first
    // reached. While only one subscriber is registered, it asks just the reaching thread's:
    // a line first reached on a thread without one (a sibling test's) is cached as never
    // wanted, and the capture below then misses it. A second subscriber that stays
    // registered, wanting nothing, makes tracing ask every live one, the capture included.
    static ANCHOR: OnceLock<Dispatch> = OnceLock::new();
    ANCHOR.get_or_init(|| Dispatch::new(NoSubscriber::default()));
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (out, text)
}

#[cfg(test)]
mod tests {
    use super::capture_logs_at;

    #[test]
    fn a_line_whose_first_use_was_on_a_thread_without_logs_is_still_captured() {
        fn reached() {
            tracing::warn!("reached");
        }
        let ((), text) = capture_logs_at(tracing::Level::WARN, || {
            // A sibling test's thread, with no subscriber, reaches the line first.
            std::thread::spawn(reached).join().unwrap();
            reached();
        });
        assert!(text.contains("reached"), "captured: {text:?}");
    }
}
