//! The replay's live counters ([`ReplayStats`], with the replay cache's [`CacheCounts`]):
//! bumped by the readers, the merge, the cache and the replay as rows and files go by,
//! and read by the metrics. They sit below all of those, so that each can count
//! without importing the others.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Live counters of a replay, shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct ReplayStats {
    rows_sent: AtomicU64,
    bad_rows: AtomicU64,
    bad_files: AtomicU64,
    pub(crate) total_rows: AtomicU64,
    /// Rows taken out of the files in the current pass (sent, bad, filtered, skipped).
    pub(crate) rows_read: AtomicU64,
    position_ms: AtomicI64,
    pub(crate) loops: AtomicU64,
    pub(crate) cache: CacheCounts,
}

impl ReplayStats {
    /// Candles handed to `emit` and accepted, over all passes.
    pub fn rows_sent(&self) -> u64 {
        self.rows_sent.load(Ordering::Relaxed)
    }
    /// Rows skipped as invalid, over all passes.
    pub fn bad_rows(&self) -> u64 {
        self.bad_rows.load(Ordering::Relaxed)
    }
    /// Files skipped as unreadable (`--skip-bad-files`).
    pub fn bad_files(&self) -> u64 {
        self.bad_files.load(Ordering::Relaxed)
    }
    /// Rows in the replayed files (from parquet footers; for kline files, the minutes
    /// their names cover, as their rows are not counted before reading).
    pub fn total_rows(&self) -> u64 {
        self.total_rows.load(Ordering::Relaxed)
    }
    /// Original open time (Unix ms) of the last candle sent; 0 before the first.
    pub fn position_ms(&self) -> i64 {
        self.position_ms.load(Ordering::Relaxed)
    }
    /// What the replay cache did when the dataset was opened.
    pub fn cache(&self) -> &CacheCounts {
        &self.cache
    }
    /// Passes over the dataset completed.
    pub fn loops(&self) -> u64 {
        self.loops.load(Ordering::Relaxed)
    }
    /// Share of the current pass's rows read so far, 0 to 100.
    pub fn percent_done(&self) -> f64 {
        let total = self.total_rows();
        if total == 0 {
            return 100.0;
        }
        (self.rows_read.load(Ordering::Relaxed) as f64 * 100.0 / total as f64).min(100.0)
    }

    pub(crate) fn note_rows_read(&self, n: u64) {
        self.rows_read.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn note_bad_row(&self) {
        self.bad_rows.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn note_bad_file(&self) {
        self.bad_files.fetch_add(1, Ordering::Relaxed);
    }
    pub(crate) fn note_sent(&self, original_open_time: i64) {
        self.rows_sent.fetch_add(1, Ordering::Relaxed);
        self.position_ms
            .store(original_open_time, Ordering::Relaxed);
    }
}

/// What the cache did at the last open, for logs, tests and the operator.
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub(crate) direct: AtomicU64,
    pub(crate) reused: AtomicU64,
    pub(crate) converted: AtomicU64,
}

impl CacheCounts {
    /// Files read directly (pages small enough).
    pub fn direct(&self) -> u64 {
        self.direct.load(Ordering::Relaxed)
    }
    /// Files read through a copy that was already in the cache.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
    /// Files read through a copy made at this open.
    pub fn converted(&self) -> u64 {
        self.converted.load(Ordering::Relaxed)
    }
}
