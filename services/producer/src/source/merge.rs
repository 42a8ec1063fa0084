//! The k-way merge: many per-symbol files, one stream in global `(open_time, symbol)` order.
//!
//! Each file is sorted by time, so the next candle of the whole dataset is the smallest
//! head among the files: a `BinaryHeap` of one `(open_time, file)` entry per open file
//! gives it in O(log k). Ties are broken by the file's rank in symbol order, so the
//! output order is fully determined by the data.
//!
//! Files are opened lazily: a file's reader is started only when the merge reaches the
//! file's first timestamp (known from the parquet statistics or a kline file's name; without
//! statistics the file is opened at the start), and dropped as soon as the file is
//! exhausted. A merge input is one symbol (`input.rs`): a parquet file, or a symbol's kline
//! files read one after the other. So a dataset of
//! pairs listed in different years only holds the files that overlap the current replay
//! time, and each open file costs one [`FileCursor`]'s small buffers.

use crate::source::file_error::FileError;
use crate::source::input::{Input, InputCursor};
use crate::source::replay_error::ReplayError;
use crate::source::row::Window;
use crate::source::stats::ReplayStats;
use candlepipe_model::Candle;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;

/// An open file: its cursor and its head candle (the smallest not yet handed out).
struct OpenFile {
    cursor: InputCursor,
    head: Option<Candle>,
}

/// Merges the dataset's files by time; one pass at a time (see [`Merge::rewind`]).
pub struct Merge {
    /// The files, sorted by symbol: the index is the tie-break rank.
    files: Vec<Input>,
    window: Window,
    skip_bad_files: bool,
    /// Files that failed while streaming (with `skip_bad_files`): never opened again.
    broken: Vec<bool>,
    /// Files of this pass not opened yet, latest first start last (`pop` = next due).
    pending: Vec<usize>,
    /// `(open_time, file)` of every open file's head, smallest first.
    heap: BinaryHeap<Reverse<(i64, usize)>>,
    /// Open files by index.
    open: Vec<Option<OpenFile>>,
    /// The file whose head was handed out last: advanced on the next call, so a read
    /// error never loses a candle already taken from the heap.
    advance: Option<usize>,
}

impl Merge {
    /// A merge over `files` restricted to `window`. Call [`Merge::rewind`] before reading.
    pub fn new(mut files: Vec<Input>, window: Window, skip_bad_files: bool) -> Self {
        files.sort_by(|a, b| a.symbol().cmp(b.symbol()));
        raise_open_file_limit(files.len() as u64 + 64);
        let n = files.len();
        Merge {
            files,
            window,
            skip_bad_files,
            broken: vec![false; n],
            pending: Vec::new(),
            heap: BinaryHeap::new(),
            open: (0..n).map(|_| None).collect(),
            advance: None,
        }
    }

    /// The files of the replay, in symbol order.
    pub fn files(&self) -> &[Input] {
        &self.files
    }

    /// Starts a new pass from the beginning of the window: closes every open file and
    /// queues all usable files by their first timestamp. Rows of files that cannot take
    /// part (outside the window, broken) count as read at once, for the progress figure.
    pub fn rewind(&mut self, stats: &ReplayStats) {
        self.heap.clear();
        self.advance = None;
        self.open.iter_mut().for_each(|o| *o = None);
        let mut queue: Vec<(i64, usize)> = Vec::with_capacity(self.files.len());
        for (i, f) in self.files.iter().enumerate() {
            let before_start =
                matches!((f.last_ms(), self.window.start), (Some(l), Some(s)) if l < s);
            let after_end = matches!((f.first_ms(), self.window.end), (Some(b), Some(e)) if b >= e);
            if self.broken[i] || before_start || after_end {
                stats.note_rows_read(f.rows());
                continue;
            }
            queue.push((self.due_at(i), i));
        }
        // Latest first, so popping from the end yields the earliest; ties by symbol rank.
        queue.sort_unstable_by(|a, b| b.cmp(a));
        self.pending = queue.into_iter().map(|(_, i)| i).collect();
    }

    /// The next candle of the pass in `(open_time, symbol)` order; `None` when the pass is
    /// done. With `skip_bad_files` a file that fails is logged, counted and dropped;
    /// otherwise its error ends the call.
    pub fn next(&mut self, stats: &ReplayStats) -> Result<Option<Candle>, ReplayError> {
        if let Some(f) = self.advance.take() {
            self.advance_file(f, stats)?;
        }
        self.open_due(stats)?;
        let Some(Reverse((_, f))) = self.heap.pop() else {
            return Ok(None);
        };
        let head = self.open[f]
            .as_mut()
            .and_then(|o| o.head.take())
            .expect("every heap entry has an open file with a head");
        self.advance = Some(f);
        Ok(Some(head))
    }

    /// When file `i` must be open: its first timestamp (clamped to the window start), or
    /// at once when the file has no statistics.
    fn due_at(&self, i: usize) -> i64 {
        match (self.files[i].first_ms(), self.window.start) {
            (Some(first), Some(start)) => first.max(start),
            (Some(first), None) => first,
            (None, _) => i64::MIN,
        }
    }

    /// Opens every pending file that may hold a candle at or before the heap's smallest.
    fn open_due(&mut self, stats: &ReplayStats) -> Result<(), ReplayError> {
        while let Some(&f) = self.pending.last() {
            if let Some(Reverse((t, _))) = self.heap.peek() {
                if self.due_at(f) > *t {
                    break;
                }
            }
            self.pending.pop();
            match self.files[f].open(self.window) {
                Ok(cursor) => {
                    self.open[f] = Some(OpenFile { cursor, head: None });
                    self.advance_file(f, stats)?;
                }
                Err(e) => {
                    stats.note_rows_read(self.files[f].rows());
                    let path = self.files[f].path().to_owned();
                    self.fail(f, path, e, stats)?;
                }
            }
        }
        Ok(())
    }

    /// Reads file `f`'s next candle into the heap, or closes the file at its end.
    fn advance_file(&mut self, f: usize, stats: &ReplayStats) -> Result<(), ReplayError> {
        let Some(open) = self.open[f].as_mut() else {
            return Ok(());
        };
        let result = open.cursor.next_candle(stats);
        match result {
            Ok(Some(candle)) => {
                self.heap.push(Reverse((candle.open_time, f)));
                open.head = Some(candle);
                Ok(())
            }
            Ok(None) => {
                self.close(f, stats);
                Ok(())
            }
            Err(e) => {
                let path = open.cursor.path().to_owned();
                self.close(f, stats);
                self.fail(f, path, e, stats)
            }
        }
    }

    /// Drops file `f`'s reader; rows it did not read (window end, error) count as read.
    fn close(&mut self, f: usize, stats: &ReplayStats) {
        if let Some(open) = self.open[f].take() {
            stats.note_rows_read(self.files[f].rows().saturating_sub(open.cursor.rows_read()));
        }
    }

    /// Input `f` failed in its file `path`: skip the input for good (logged, counted) or
    /// return the error.
    fn fail(
        &mut self,
        f: usize,
        path: PathBuf,
        error: FileError,
        stats: &ReplayStats,
    ) -> Result<(), ReplayError> {
        if !self.skip_bad_files {
            return Err(ReplayError::File { path, cause: error });
        }
        tracing::warn!(file = %path.display(), "skipping bad file {}: {error}", path.display());
        self.broken[f] = true;
        stats.note_bad_file();
        Ok(())
    }
}

/// Raises the soft limit on open files towards `wanted` (bounded by the hard limit): the
/// merge may hold every file of a ~1000-pair dataset open at once, more than the common
/// default soft limit of 1024.
fn raise_open_file_limit(wanted: u64) {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            let wanted = wanted as libc::rlim_t;
            if limit.rlim_cur >= wanted {
                return;
            }
            let old = limit.rlim_cur;
            limit.rlim_cur = wanted.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::info!(
                    from = old,
                    to = limit.rlim_cur,
                    "raised the open-file limit for the replay merge"
                );
            }
            if limit.rlim_cur < wanted {
                tracing::warn!(
                    limit = limit.rlim_cur,
                    wanted,
                    "open-file hard limit is below the number of dataset files; raise `ulimit -n` if files overlap in time"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = wanted;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::parquet::CandleFile;
    use candlepipe_datagen::{
        klines, write_klines, FileLayout, MarketOptions, PairSpec, WriteOptions,
    };
    use std::path::Path;

    const T0: i64 = 1_614_556_800_000;

    /// Writes `minutes` of gap-free candles for `symbol` starting `offset` minutes after T0.
    fn file(dir: &Path, symbol: &str, offset: i64, minutes: u32) -> Input {
        let path = dir.join(format!("{symbol}.parquet"));
        let market = MarketOptions {
            start_ms: T0 + offset * 60_000,
            minutes,
            gap_rate: 0.0,
            ..MarketOptions::default()
        };
        let spec = PairSpec::bundled_named("BTC-USDT").unwrap();
        write_klines(
            &path,
            &FileLayout::KAGGLE,
            &WriteOptions::default(),
            klines(&spec, &market),
        )
        .unwrap();
        Input::Parquet(CandleFile::inspect(&path).unwrap())
    }

    fn open_files(m: &Merge) -> usize {
        m.open.iter().filter(|o| o.is_some()).count()
    }

    #[test]
    fn files_open_when_the_merge_reaches_them_and_close_at_their_end() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![
            file(dir.path(), "A-X", 0, 10),
            file(dir.path(), "B-X", 10, 10),
            file(dir.path(), "C-X", 20, 10),
            file(dir.path(), "D-X", 5, 20), // overlaps the end of A, all of B, the start of C
        ];
        assert_eq!(
            files[1].first_ms(),
            Some(T0 + 600_000),
            "statistics give the first time"
        );
        let window = Window {
            start: None,
            end: None,
        };
        let mut merge = Merge::new(files, window, false);
        let stats = ReplayStats::default();
        merge.rewind(&stats);
        assert_eq!(
            open_files(&merge),
            0,
            "nothing is opened before the first read"
        );
        let mut most_open = 0;
        let mut seen = Vec::new();
        while let Some(c) = merge.next(&stats).unwrap() {
            let minute = (c.open_time - T0) / 60_000;
            most_open = most_open.max(open_files(&merge));
            // Before D starts only A is open; after D ends only C is.
            if !(5..25).contains(&minute) {
                assert_eq!(open_files(&merge), 1, "minute {minute} {}", c.symbol);
            }
            seen.push((minute, c.symbol));
        }
        assert_eq!(
            most_open, 2,
            "never more than the files overlapping in time"
        );
        assert_eq!(open_files(&merge), 0, "every file closed at its end");
        assert_eq!(seen.len(), 50);
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(seen, sorted, "time order, ties by symbol");
    }
}
