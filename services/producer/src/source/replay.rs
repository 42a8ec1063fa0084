//! The replay source: a folder of Binance-format parquet files and/or Binance kline files
//! (CSV or ZIP), played back as one time-ordered stream of candles, paced like a live
//! market.
//!
//! [`ReplaySource::open`] lists the dataset folder (`input.rs`: the symbol is a parquet
//! file's stem, or comes from a kline file's name), checks every file up front and prepares
//! the merge. [`ReplaySource::run`]
//! then blocks on a dedicated thread, pulling candles from the k-way merge (`merge.rs`)
//! in `(open_time, symbol)` order, holding each back until the pacer (`pacing.rs`) says
//! it is due, and handing it to `emit` (the Kafka sink's queue). `run` returns when the
//! dataset is done (without `--loop`), when the shutdown fires, or when `emit` reports the
//! receiver gone; calling it again resumes right after the last candle emitted, which is
//! how a runtime switch to live mode and back continues the replay. Across processes the
//! topic is the memory: before the first run the supervisor reads the topic's tail and
//! hands it to [`ReplaySource::continue_from_topic`], and the first pass skips what the
//! topic already holds and keeps its time shift (`timeline.rs`).
//!
//! Progress (percent of the pass, candles/s, market position) is logged every few seconds
//! and kept in [`ReplayStats`] for the metrics endpoint.

use crate::clock::Clock;
use crate::source::cache::{self, CacheSettings};
use crate::source::input::{self, Input, Listing};
use crate::source::merge::Merge;
use crate::source::pacing::Pacer;
use crate::source::row::Window;
use crate::source::timeline::{Continuation, Resume};
use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::time::fmt_ms;
use candlepipe_model::Candle;
use candlepipe_runtime::shutdown::{self, Shutdown};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::source::file_error::FileError;
pub use crate::source::klines::{BadLine, KlineError};
pub use crate::source::pacing::Speed;
pub use crate::source::parquet::BATCH_ROWS;
pub use crate::source::replay_error::ReplayError;
pub use crate::source::replay_options::ReplayOptions;
pub use crate::source::row::BadRow;
pub use crate::source::stats::ReplayStats;
pub use crate::source::timeline::ReplayTail;

/// How often a progress line is logged while candles flow.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How a [`ReplaySource::run`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayEnd {
    /// The dataset is done (no `--loop`). Further runs return this at once until
    /// [`ReplaySource::restart`].
    Finished,
    /// The shutdown fired or the receiver went away; the next run resumes.
    Stopped,
}

/// The parquet replay (see the module docs). Kept small (the bulky state is boxed)
/// because it moves between the supervisor and a blocking thread on every mode switch.
pub struct ReplaySource {
    /// The dataset folder, for log lines.
    dataset: PathBuf,
    /// Start over when a pass is done (`--loop`).
    looping: bool,
    merge: Box<Merge>,
    pacer: Pacer,
    stats: Arc<ReplayStats>,
    /// Taken from the merge but not accepted by `emit` (stop, receiver gone): sent first
    /// on the next run.
    held: Option<Box<Candle>>,
    /// Original open times of the first and last candle sent in the current pass.
    pass_first: Option<i64>,
    pass_last: Option<i64>,
    finished: bool,
    /// How this replay relates to the topic's timeline (boxed: rarely touched).
    topic: Box<TopicTimeline>,
}

/// What the replay knows of the topic's replay timeline (see `timeline.rs`).
#[derive(Debug, Default)]
struct TopicTimeline {
    /// The topic's tail has been read ([`ReplaySource::continue_from_topic`]).
    read: bool,
    /// [`ReplaySource::restart`] came before the tail was read: start over after it.
    start_over: bool,
    /// While the first pass after reading the tail runs: what it skips.
    plan: Option<Resume>,
    /// Candles skipped by `plan` so far.
    skipped: u64,
    /// The newest stamp on the topic: its tail's, or the last one sent since.
    newest: Option<i64>,
}

impl ReplaySource {
    /// Lists and checks the dataset. Every file's footer and schema is read now, so a bad
    /// file fails here (or, with `skip_bad_files`, is logged, counted and left out). Files
    /// whose pages are too large for the budget get their cached small-page copy, made now
    /// if missing (see `cache.rs`).
    pub fn open(opts: ReplayOptions) -> Result<Self, ReplayError> {
        let (_never_fired, stop) = shutdown::channel();
        Self::open_until(opts, &stop)
    }

    /// [`ReplaySource::open`], giving up (`ReplayError::Cache(Interrupted)`) between two
    /// cache copies once `stop` fires; the copies made so far are kept for the next start.
    pub fn open_until(opts: ReplayOptions, stop: &Shutdown) -> Result<Self, ReplayError> {
        if let (Some(start), Some(end)) = (opts.start, opts.end) {
            if start >= end {
                return Err(ReplayError::EmptyWindow { start, end });
            }
        }
        let dir = &opts.dataset;
        let stats = Arc::new(ReplayStats::default());
        let Listing {
            parquet: mut files,
            klines,
        } = input::list(&opts, &stats)?;
        let settings = CacheSettings {
            dataset: dir,
            dir: opts.cache_dir.as_deref(),
            budget: opts.page_budget,
        };
        for (path, error) in cache::prepare(&mut files, &settings, &stats.cache, stop)? {
            let cause =
                std::error::Error::source(&error).map_or(error.to_string(), |e| e.to_string());
            let source = FileError::Convert(cause);
            if !opts.skip_bad_files {
                return Err(ReplayError::File {
                    path,
                    cause: source,
                });
            }
            tracing::warn!(file = %path.display(), "skipping bad file {}: {source}", path.display());
            stats.note_bad_file();
        }
        let files = Listing {
            parquet: files,
            klines,
        }
        .into_inputs();
        if files.is_empty() {
            return Err(ReplayError::NothingReadable {
                dir: dir.clone(),
                skipped: stats.bad_files(),
            });
        }
        let total: u64 = files.iter().map(Input::rows).sum();
        stats.total_rows.store(total, Ordering::Relaxed);
        let first = files.iter().filter_map(Input::first_ms).min();
        let last = files.iter().filter_map(Input::last_ms).max();
        tracing::info!(
            dataset = %dir.display(),
            files = files.len(),
            rows = total,
            "replay dataset: {} files, {total} rows, {} .. {}",
            files.len(),
            first.map_or("?".into(), fmt_ms),
            last.map_or("?".into(), fmt_ms),
        );

        let window = Window {
            start: opts.start,
            end: opts.end,
        };
        let mut merge = Merge::new(files, window, opts.skip_bad_files);
        merge.rewind(stats.as_ref());
        Ok(ReplaySource {
            pacer: Pacer::new(opts.speed, opts.rebase, opts.backfill),
            dataset: opts.dataset,
            looping: opts.looping,
            merge: Box::new(merge),
            stats,
            held: None,
            pass_first: None,
            pass_last: None,
            finished: false,
            topic: Box::default(),
        })
    }

    /// The live counters (for metrics and logs).
    pub fn stats(&self) -> Arc<ReplayStats> {
        self.stats.clone()
    }

    /// The symbols replayed, in tie-break (alphabetical) order.
    pub fn symbols(&self) -> Vec<String> {
        self.merge
            .files()
            .iter()
            .map(|f| f.symbol().to_owned())
            .collect()
    }

    /// Whether the topic's tail has not been read yet: the supervisor reads it before the
    /// first run (`timeline.rs`) and calls [`ReplaySource::continue_from_topic`].
    pub fn wants_topic_tail(&self) -> bool {
        !self.topic.read
    }

    /// Continues the timeline of the replay candles already on the topic: `tails` holds each
    /// replay symbol's newest one (symbols never published are absent), read at wall time
    /// `now_ms`. Call before the first run; the first pass then skips what the topic holds
    /// and keeps its shift (or starts over after it, after a [`ReplaySource::restart`]).
    pub fn continue_from_topic(&mut self, tails: &HashMap<String, ReplayTail>, now_ms: i64) {
        let how = if self.topic.start_over {
            Continuation::StartOver
        } else {
            Continuation::Continue
        };
        let plan = Resume::plan(
            tails,
            how,
            self.pacer.rebase(),
            self.pacer.backfill_ms(),
            now_ms,
        );
        tracing::info!(symbols = tails.len(), "replay: {}", plan.describe());
        if let Some(shift) = plan.shift {
            self.pacer.keep_shift(shift);
        }
        if let Some(floor) = plan.floor {
            self.pacer.set_floor(floor);
        }
        self.topic.newest = self.topic.newest.max(plan.newest);
        self.topic.read = true;
        self.topic.plan = Some(plan);
    }

    /// Blocking: runs on a dedicated thread until the dataset is done (no loop) or `stop`
    /// fires. Calls `emit` for each candle in global (open_time, symbol) order; `emit`
    /// returns false when the receiver is gone (then returns `Stopped`). Calling `run`
    /// again resumes after the last emitted candle. `restart` resets to the beginning.
    pub fn run(
        &mut self,
        clock: &dyn Clock,
        stop: &Shutdown,
        emit: &mut dyn FnMut(Candle) -> bool,
    ) -> Result<ReplayEnd, ReplayError> {
        self.run_shifted(clock, stop, &mut |c, _| emit(c))
    }

    /// [`ReplaySource::run`], handing `emit` each candle's time shift too: milliseconds
    /// added to its dataset open time (0 without rebase), which the sink publishes in a
    /// header so a later start can continue the timeline.
    pub fn run_shifted(
        &mut self,
        clock: &dyn Clock,
        stop: &Shutdown,
        emit: &mut dyn FnMut(Candle, i64) -> bool,
    ) -> Result<ReplayEnd, ReplayError> {
        if self.finished {
            return Ok(ReplayEnd::Finished);
        }
        let mut progress = Progress::new(&self.stats);
        let mut anchored = false;
        loop {
            if stop.is_shutdown() {
                return Ok(ReplayEnd::Stopped);
            }
            let candle = match self.held.take() {
                Some(c) => *c,
                None => match self.merge.next(self.stats.as_ref())? {
                    Some(c) if self.on_topic_already(&c) => continue,
                    Some(c) => c,
                    None => {
                        if self.end_pass() {
                            continue;
                        }
                        progress.log(&self.stats);
                        return Ok(ReplayEnd::Finished);
                    }
                },
            };
            if !anchored {
                self.pacer.begin(clock.now_ms(), candle.open_time);
                anchored = true;
                if self.topic.skipped > 0 {
                    tracing::info!(
                        skipped = self.topic.skipped,
                        "replay: skipped {} candles the topic already holds; continuing at the dataset candle of {}",
                        self.topic.skipped,
                        fmt_ms(candle.open_time)
                    );
                    self.topic.skipped = 0;
                }
            }
            let slot = self.pacer.slot(candle.open_time);
            if let Some(due) = slot.due {
                if due > clock.now_ms() {
                    clock.sleep_until_ms(due, stop);
                    if stop.is_shutdown() {
                        self.held = Some(Box::new(candle));
                        return Ok(ReplayEnd::Stopped);
                    }
                }
            }
            let original = candle.open_time;
            let mut out = candle.clone();
            out.open_time = slot.stamp;
            if !emit(out, slot.stamp - original) {
                self.held = Some(Box::new(candle));
                return Ok(ReplayEnd::Stopped);
            }
            self.topic.newest = self.topic.newest.max(Some(slot.stamp));
            self.stats.note_sent(original);
            self.pass_first.get_or_insert(original);
            self.pass_last = Some(original);
            progress.tick(&self.stats);
        }
    }

    /// Goes back to the beginning of the dataset. Under rebase the timeline continues (as
    /// after a loop) after the newest replay candle on the topic, so stamps stay
    /// monotonic. Before the topic's tail is read, the next read starts over after it.
    pub fn restart(&mut self) {
        self.held = None;
        if let (Some(first), Some(last)) = (self.pass_first, self.pass_last) {
            self.pacer.end_pass(first, last);
        }
        self.topic.start_over = !self.topic.read;
        self.topic.plan = None;
        if let Some(newest) = self.topic.newest {
            self.pacer.set_floor(newest + MINUTE_MS);
        }
        self.begin_pass();
        self.finished = false;
    }

    /// The pass is over: counts it and either starts the next (`true`) or finishes.
    fn end_pass(&mut self) -> bool {
        let (Some(first), Some(last)) = (self.pass_first, self.pass_last) else {
            tracing::warn!(
                dataset = %self.dataset.display(),
                "nothing to replay: no valid candle in the dataset (or in --start/--end)"
            );
            self.finished = true;
            return false;
        };
        let loops = self.stats.loops.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::info!(
            loops,
            "replay pass {loops} done: {} .. {}",
            fmt_ms(first),
            fmt_ms(last)
        );
        if !self.looping {
            self.finished = true;
            return false;
        }
        self.pacer.end_pass(first, last);
        self.begin_pass();
        true
    }

    /// Whether the first pass after reading the topic's tail skips `c` (the topic holds
    /// it); a skipped candle still counts as passed, so a loop's length stays the dataset's.
    fn on_topic_already(&mut self, c: &Candle) -> bool {
        let skip = self
            .topic
            .plan
            .as_ref()
            .is_some_and(|p| p.skips(&c.symbol, c.open_time));
        if skip {
            self.topic.skipped += 1;
            self.pass_first.get_or_insert(c.open_time);
            self.pass_last = Some(c.open_time);
        }
        skip
    }

    fn begin_pass(&mut self) {
        self.topic.plan = None;
        self.pass_first = None;
        self.pass_last = None;
        self.stats.rows_read.store(0, Ordering::Relaxed);
        self.merge.rewind(self.stats.as_ref());
    }
}

/// The periodic progress log line.
struct Progress {
    last_at: Instant,
    last_sent: u64,
}

impl Progress {
    fn new(stats: &ReplayStats) -> Self {
        Progress {
            last_at: Instant::now(),
            last_sent: stats.rows_sent(),
        }
    }

    fn tick(&mut self, stats: &ReplayStats) {
        if self.last_at.elapsed() >= PROGRESS_EVERY {
            self.log(stats);
        }
    }

    fn log(&mut self, stats: &ReplayStats) {
        let secs = self.last_at.elapsed().as_secs_f64().max(1e-3);
        let sent = stats.rows_sent();
        let rate = (sent - self.last_sent) as f64 / secs;
        tracing::info!(
            percent = format!("{:.1}", stats.percent_done()),
            candles_per_sec = rate.round() as u64,
            sent,
            bad_rows = stats.bad_rows(),
            "replay {:.1}% done, {:.0} candles/s, at {}",
            stats.percent_done(),
            rate,
            fmt_ms(stats.position_ms())
        );
        self.last_at = Instant::now();
        self.last_sent = sent;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::cache::CacheError;

    /// Each cause shows once in the whole chain as the binary prints it (`{:#}` of the
    /// anyhow error at the edge): a message that embeds its cause must not also hand it
    /// out as `source()`, or the cause prints twice (three times two layers down).
    #[test]
    fn error_causes_print_once() {
        let io = || std::io::Error::other("disk on fire");
        let file = |source| ReplayError::File {
            path: PathBuf::from("d/X.parquet"),
            cause: source,
        };
        let cases: Vec<(ReplayError, &str)> = vec![
            (
                file(FileError::Io(io())),
                "d/X.parquet: cannot read: disk on fire",
            ),
            (
                file(FileError::Decode {
                    row: 7,
                    cause: arrow_schema::ArrowError::ComputeError("bad page".into()),
                }),
                "d/X.parquet: cannot decode rows from row 7 on: Compute error: bad page",
            ),
            (
                file(FileError::Klines(KlineError::Read {
                    line: 3,
                    cause: io(),
                })),
                "d/X.parquet: cannot read past line 3: disk on fire",
            ),
            (
                ReplayError::Dataset {
                    path: PathBuf::from("d"),
                    cause: io(),
                },
                "dataset folder d: disk on fire",
            ),
            (
                ReplayError::Cache(CacheError::Folder {
                    dir: PathBuf::from("c"),
                    files: 2,
                    cause: io(),
                }),
                "cannot use the replay cache folder c: disk on fire; 2 dataset files",
            ),
        ];
        for (error, starts) in cases {
            let shown = format!("{:#}", anyhow::Error::new(error).context("opening"));
            assert!(
                shown.starts_with(&format!("opening: {starts}")),
                "{shown:?} should start with {starts:?}"
            );
            let innermost = starts.rsplit(": ").next().unwrap();
            let innermost = innermost.split(';').next().unwrap();
            assert_eq!(shown.matches(innermost).count(), 1, "{shown:?}");
        }
    }

    #[test]
    fn replay_source_can_move_to_its_own_thread() {
        fn send<T: Send>() {}
        send::<ReplaySource>();
        send::<Arc<ReplayStats>>();
        // Cheap to move in and out of `spawn_blocking` (and below clippy's large-variant bar).
        assert!(std::mem::size_of::<ReplaySource>() <= 200);
    }

    #[test]
    fn options_default_to_the_documented_flags() {
        let o = ReplayOptions::new("dataset");
        assert_eq!(o.speed, Speed::Factor(60.0));
        assert!(o.looping && o.rebase && !o.skip_bad_files);
        assert_eq!(o.backfill, Duration::from_secs(86_400));
    }
}
