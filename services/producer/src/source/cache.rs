//! The replay cache: small-page copies of the dataset files whose pages are too large for the
//! replay's memory budget, made once, automatically, and reused on every later start.
//!
//! Why it exists: the replay merges all files by time, so every file whose history overlaps
//! the replay time is open at once, and an open parquet file costs one decompressed page of
//! each column plus each column's dictionary (`parquet.rs`). pandas/pyarrow, which wrote the
//! Kaggle "binance-full-history" files, makes those pages and dictionaries up to 1 MiB: about
//! 10 MB per open file, about 10 GB for the ~1,000 files. No reader can get around that by
//! itself: a snappy page is decompressed whole, and a float32 page of 1 MiB holds 262,144
//! rows, most of a file. So the files are rewritten once with [`PAGE_SIZE`] plain pages
//! (`candlepipe_model::repack`), which costs a small, fixed amount per open file (~100 KB:
//! 1,000 Kaggle-layout files replay in ~120 MiB, see dataset/README.md).
//!
//! How it decides, where it writes, and how it stays correct:
//!
//! * **Which files** ([`plan`]): the budget (`--replay-page-budget`, default
//!   [`DEFAULT_PAGE_BUDGET`]) is shared evenly by the replay's files. A file whose estimated
//!   page bytes ([`CandleFile::page_bytes`], from its footer) exceed its share, and exceed
//!   [`MIN_SHARE`] (below that a copy would not be smaller), is read through a copy. A
//!   handful of files, or files with small pages, are read directly, and no cache is made.
//! * **Where**: `--replay-cache DIR` (`REPLAY_CACHE_DIR`), by default
//!   `<dataset>/.candlepipe-cache` (the replay lists only the dataset's own `*.parquet`, not
//!   subfolders). A read-only dataset needs the flag; the error says so.
//! * **Which copy is valid**: each copy carries in its footer's key-value metadata
//!   ([`KEY`]) the size and modification time (ns) of its source, the page size and the
//!   cache format version. A copy whose key differs (the source changed) or whose footer
//!   cannot be read (torn, truncated) is made again; a valid copy is reused untouched.
//! * **Crash safety**: a copy is written to `NAME.partial`, synced, and only then renamed to
//!   `NAME`, so `NAME` only ever holds a complete copy and an interrupted conversion redoes
//!   only the files not renamed yet. Leftover `.partial` files are removed at the next start.
//! * **Disk**: before converting, the free space on the cache's filesystem is compared with
//!   the copies' estimated size (rows × plain column widths); too little is an error naming
//!   the folder and both sizes.
//! * **Progress**: a log line every few seconds (files done / total, rows/s) and a summary
//!   with the one-time cost. Conversion runs on up to [`MAX_WORKERS`] threads.

use crate::source::parquet::CandleFile;
pub use crate::source::stats::CacheCounts;
use candlepipe_model::repack::{repack_file, RepackError, RepackOptions};
use candlepipe_runtime::shutdown::Shutdown;
use parquet::file::metadata::ParquetMetaDataReader;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, UNIX_EPOCH};
use thiserror::Error;

/// Default total budget, bytes, for the decompressed pages of all open files.
pub const DEFAULT_PAGE_BUDGET: u64 = 64 * 1024 * 1024;
/// A file whose pages fit in this many bytes is always read directly: its copy would not
/// hold much less (a page of each of ~10 columns, plus the reader's buffers).
pub const MIN_SHARE: u64 = 192 * 1024;
/// The cache folder inside the dataset folder when `--replay-cache` is not given.
pub const DEFAULT_DIR_NAME: &str = ".candlepipe-cache";
/// The footer key-value entry that says what a copy was made from.
pub const KEY: &str = "candlepipe.replay_cache";
/// Data page size of the copies, bytes. Smaller pages cost less memory per open file and more
/// page switches (reads, decompressions) per row.
pub const PAGE_SIZE: usize = 4 * 1024;
/// Bumped when the copies' layout changes, so old copies are made again.
const FORMAT_VERSION: u32 = 1;
/// Suffix of a copy being written.
const PARTIAL: &str = "partial";
/// Most conversion threads (each holds one file's batch and row group, ~40 MB at most).
pub const MAX_WORKERS: usize = 2;
/// How often a progress line is logged while converting.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Kept free beyond the copies' estimated size.
const DISK_HEADROOM: u64 = 64 * 1024 * 1024;

/// Why the cache could not be prepared. A source file that cannot be read is not one of
/// these: it is that file's error (or skip, with `--skip-bad-files`).
#[derive(Debug, Error)]
pub enum CacheError {
    #[error("cannot use the replay cache folder {}: {cause}; {files} dataset files have pages too large to read directly (see --replay-page-budget), so they need a small-page copy: point --replay-cache (REPLAY_CACHE_DIR) at a writable folder", dir.display())]
    Folder {
        dir: PathBuf,
        files: usize,
        cause: std::io::Error,
    },
    #[error("not enough disk space for the replay cache in {}: {files} small-page copies need about {}, {} is free; free some space or point --replay-cache (REPLAY_CACHE_DIR) at a larger disk", dir.display(), mib(*needed), mib(*available))]
    DiskFull {
        dir: PathBuf,
        files: usize,
        needed: u64,
        available: u64,
    },
    #[error("cannot write the replay cache: {0}; point --replay-cache (REPLAY_CACHE_DIR) at a writable folder with free space")]
    Write(RepackError),
    #[error("stopped while filling the replay cache ({done} of {total} copies made; the next start goes on from there)")]
    Interrupted { done: usize, total: usize },
}

/// The cache's settings (from `ReplayOptions`).
#[derive(Debug, Clone)]
pub(crate) struct CacheSettings<'a> {
    /// The dataset folder (for the default cache folder and the logs).
    pub dataset: &'a Path,
    /// `--replay-cache`; `None` = `<dataset>/.candlepipe-cache`.
    pub dir: Option<&'a Path>,
    /// `--replay-page-budget`, bytes.
    pub budget: u64,
}

impl CacheSettings<'_> {
    fn folder(&self) -> PathBuf {
        self.dir
            .map_or_else(|| self.dataset.join(DEFAULT_DIR_NAME), Path::to_owned)
    }
}

/// Which of `files` need a copy: `true` where the file's pages exceed its share of the
/// budget (see the module docs).
pub(crate) fn plan(files: &[CandleFile], budget: u64) -> Vec<bool> {
    let share = (budget / files.len().max(1) as u64).max(MIN_SHARE);
    files.iter().map(|f| f.page_bytes > share).collect()
}

/// Points every file that needs a copy at a valid one (`CandleFile::read_from`), making the
/// copies that are missing or stale. Files whose source cannot be converted are returned with
/// their error (the caller skips or fails them); they are left out of `files`.
pub(crate) fn prepare(
    files: &mut Vec<CandleFile>,
    settings: &CacheSettings,
    counts: &CacheCounts,
    stop: &Shutdown,
) -> Result<Vec<(PathBuf, RepackError)>, CacheError> {
    let wanted = plan(files, settings.budget);
    let needing = wanted.iter().filter(|w| **w).count();
    counts
        .direct
        .store((files.len() - needing) as u64, Ordering::Relaxed);
    if needing == 0 {
        return Ok(Vec::new());
    }
    let dir = settings.folder();
    let folder_err = |source| CacheError::Folder {
        dir: dir.clone(),
        files: needing,
        cause: source,
    };
    std::fs::create_dir_all(&dir).map_err(folder_err)?;
    remove_partials(&dir);

    let mut todo = Vec::new();
    for (i, file) in files.iter_mut().enumerate().filter(|(i, _)| wanted[*i]) {
        let key = source_key(&file.path).map_err(folder_err)?;
        let copy = copy_path(&dir, &file.path);
        if copy_is_valid(&copy, &key, file.rows) {
            file.read_from = copy;
            counts.reused.fetch_add(1, Ordering::Relaxed);
        } else {
            todo.push(Job {
                index: i,
                source: file.path.clone(),
                copy,
                key,
                rows: file.rows,
                bytes: file.copy_bytes,
            });
        }
    }
    let share = (settings.budget / files.len() as u64).max(MIN_SHARE);
    tracing::info!(
        dataset = %settings.dataset.display(),
        cache = %dir.display(),
        files = files.len(),
        need_copy = needing,
        reused = counts.reused(),
        to_convert = todo.len(),
        "replay cache: {needing} of {} files have pages too large to read directly (more than {} each of the {} page budget); {} copies are in {}, {} to make",
        files.len(),
        kib(share),
        mib(settings.budget),
        counts.reused(),
        dir.display(),
        todo.len()
    );
    if todo.is_empty() {
        return Ok(Vec::new());
    }
    let needed: u64 = todo.iter().map(|j| j.bytes).sum();
    if let Some(available) = free_bytes(&dir) {
        check_space(&dir, todo.len(), needed, available)?;
    }

    let outcome = convert(&todo, stop);
    let mut failed = Vec::new();
    for (job, result) in todo.iter().zip(outcome.results) {
        match result {
            Some(Ok(())) => {
                files[job.index].read_from = job.copy.clone();
                counts.converted.fetch_add(1, Ordering::Relaxed);
            }
            Some(Err(e)) if e.is_input_error() => failed.push((job.source.clone(), e)),
            Some(Err(e)) => return Err(CacheError::Write(e)),
            None => {}
        }
    }
    if outcome.interrupted {
        return Err(CacheError::Interrupted {
            done: counts.converted() as usize,
            total: todo.len(),
        });
    }
    let failed_paths: Vec<&PathBuf> = failed.iter().map(|(p, _)| p).collect();
    files.retain(|f| !failed_paths.contains(&&f.path));
    Ok(failed)
}

/// One copy to make.
struct Job {
    /// Index in the caller's `files`.
    index: usize,
    source: PathBuf,
    copy: PathBuf,
    key: String,
    rows: u64,
    /// Estimated size of the copy.
    bytes: u64,
}

/// What [`convert`] did: per job, `None` when it was not started (stop).
struct Outcome {
    results: Vec<Option<Result<(), RepackError>>>,
    interrupted: bool,
}

/// Makes the copies of `jobs` on up to [`MAX_WORKERS`] threads, logging progress.
fn convert(jobs: &[Job], stop: &Shutdown) -> Outcome {
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let rows_done = AtomicU64::new(0);
    let total_rows: u64 = jobs.iter().map(|j| j.rows).sum();
    let results: Mutex<Vec<Option<Result<(), RepackError>>>> =
        Mutex::new(jobs.iter().map(|_| None).collect());
    let last_log = Mutex::new(Instant::now());
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS)
        .min(jobs.len());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                if stop.is_shutdown() {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { return };
                let result = make_copy(job);
                if result.is_ok() {
                    rows_done.fetch_add(job.rows, Ordering::Relaxed);
                }
                results.lock().expect("no worker panics holding it")[i] = Some(result);
                let files = done.fetch_add(1, Ordering::Relaxed) + 1;
                let mut last = last_log.lock().expect("no worker panics holding it");
                if last.elapsed() >= PROGRESS_EVERY {
                    *last = Instant::now();
                    log_progress(
                        files,
                        jobs.len(),
                        rows_done.load(Ordering::Relaxed),
                        total_rows,
                        started,
                    );
                }
            });
        }
    });
    let files = done.load(Ordering::Relaxed);
    let interrupted = files < jobs.len();
    if !interrupted {
        let secs = started.elapsed().as_secs_f64();
        let bytes: u64 = jobs
            .iter()
            .filter_map(|j| std::fs::metadata(&j.copy).ok())
            .map(|m| m.len())
            .sum();
        tracing::info!(
            files,
            rows = total_rows,
            seconds = format!("{secs:.1}"),
            bytes,
            "replay cache: made {files} copies ({total_rows} rows, {}) in {secs:.1} s, {:.0} rows/s; later starts reuse them",
            mib(bytes),
            total_rows as f64 / secs.max(1e-3)
        );
    }
    let results = results.into_inner().expect("no worker panicked");
    Outcome {
        results,
        interrupted,
    }
}

fn log_progress(files: usize, total: usize, rows: u64, total_rows: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    let rate = rows as f64 / secs;
    let eta = total_rows.saturating_sub(rows) as f64 / rate.max(1.0);
    tracing::info!(
        files,
        total,
        rows_per_sec = rate.round() as u64,
        "replay cache: {files}/{total} copies made ({:.0}%), {rate:.0} rows/s, about {eta:.0} s left",
        files as f64 * 100.0 / total.max(1) as f64
    );
}

/// Writes `job`'s copy under a temporary name, then renames it into place.
fn make_copy(job: &Job) -> Result<(), RepackError> {
    let partial = job.copy.with_extension(format!("parquet.{PARTIAL}"));
    let options = RepackOptions {
        data_page_size: PAGE_SIZE,
        key_values: vec![(KEY.to_owned(), job.key.clone())],
        created_by: format!(
            "candlepipe producer {} replay cache (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ),
    };
    let result = repack_file(&job.source, &partial, &options).and_then(|_| {
        std::fs::rename(&partial, &job.copy).map_err(|source| RepackError::WriteIo {
            path: job.copy.clone(),
            cause: source,
        })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result
}

/// Where the copy of `source` lives: the same file name in the cache folder.
fn copy_path(dir: &Path, source: &Path) -> PathBuf {
    dir.join(source.file_name().expect("dataset files have names"))
}

/// What a valid copy of `source` must carry in its footer: the source's size and
/// modification time, the page size and the format version.
fn source_key(source: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(source)?;
    let mtime_ns = meta
        .modified()?
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(format!(
        "v{FORMAT_VERSION} page={PAGE_SIZE} size={} mtime_ns={mtime_ns}",
        meta.len()
    ))
}

/// True when `copy` is a complete parquet file made from the source `key` describes.
fn copy_is_valid(copy: &Path, key: &str, rows: u64) -> bool {
    let Ok(file) = File::open(copy) else {
        return false;
    };
    let Ok(meta) = ParquetMetaDataReader::new().parse_and_finish(&file) else {
        return false;
    };
    let file_meta = meta.file_metadata();
    let carried = file_meta
        .key_value_metadata()
        .and_then(|kvs| kvs.iter().find(|kv| kv.key == KEY))
        .and_then(|kv| kv.value.as_deref());
    carried == Some(key) && file_meta.num_rows() == rows as i64
}

/// Removes copies left half-written by an interrupted run.
fn remove_partials(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_some_and(|e| e == PARTIAL) {
            tracing::info!(file = %path.display(), "replay cache: removing an unfinished copy");
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// Fails when `available` bytes cannot hold `needed` plus some headroom.
fn check_space(dir: &Path, files: usize, needed: u64, available: u64) -> Result<(), CacheError> {
    if available < needed.saturating_add(DISK_HEADROOM) {
        return Err(CacheError::DiskFull {
            dir: dir.to_owned(),
            files,
            needed,
            available,
        });
    }
    tracing::info!(
        cache = %dir.display(),
        needed,
        available,
        "replay cache: the copies need about {}, {} is free",
        mib(needed),
        mib(available)
    );
    Ok(())
}

/// Bytes available to this user on the filesystem holding `dir`; `None` when unknown.
fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        // SAFETY: statvfs only writes the struct we pass; `path` is NUL-terminated.
        unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
                return None;
            }
            Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
        }
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, page_bytes: u64) -> CandleFile {
        CandleFile {
            path: PathBuf::from(format!("{name}.parquet")),
            read_from: PathBuf::from(format!("{name}.parquet")),
            symbol: name.to_owned(),
            rows: 1,
            first_ms: None,
            last_ms: None,
            page_bytes,
            copy_bytes: 48,
        }
    }

    #[test]
    fn the_budget_is_shared_by_the_files_and_small_files_are_never_copied() {
        let mib = 1024 * 1024;
        // Five bundled-size files (~1 MB of pages each) fit a 64 MiB budget.
        let bundled: Vec<_> = (0..5).map(|i| file(&format!("B{i}"), mib)).collect();
        assert_eq!(plan(&bundled, 64 * mib), vec![false; 5]);
        // A thousand Kaggle files (~5 MB each) do not: every one gets a copy.
        let kaggle: Vec<_> = (0..1000).map(|i| file(&format!("K{i}"), 5 * mib)).collect();
        assert!(plan(&kaggle, 64 * mib).iter().all(|c| *c));
        // Only the files above the share; never one below MIN_SHARE, even with no budget.
        let mixed = vec![
            file("A", MIN_SHARE),
            file("B", MIN_SHARE + 1),
            file("C", 10),
        ];
        assert_eq!(plan(&mixed, 0), vec![false, true, false]);
        assert_eq!(plan(&mixed, 3 * (MIN_SHARE + 1)), vec![false; 3]);
    }

    #[test]
    fn too_little_disk_is_an_error_naming_the_folder_and_both_sizes() {
        let dir = Path::new("/data/cache");
        let err = check_space(dir, 3, 3 << 30, 1 << 30)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/data/cache"), "{err}");
        assert!(
            err.contains("3072.0 MiB") && err.contains("1024.0 MiB"),
            "{err}"
        );
        assert!(err.contains("--replay-cache"), "{err}");
        assert!(check_space(dir, 3, 1 << 30, 2 << 30).is_ok());
        // The headroom counts: exactly the estimate is not enough.
        assert!(check_space(dir, 3, 1 << 30, 1 << 30).is_err());
    }

    #[test]
    fn free_space_of_a_real_folder_is_known() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert_eq!(free_bytes(&dir.path().join("missing")), None);
    }

    #[test]
    fn the_key_changes_with_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("A.parquet");
        std::fs::write(&path, b"one").unwrap();
        let first = source_key(&path).unwrap();
        assert_eq!(source_key(&path).unwrap(), first, "stable");
        std::fs::write(&path, b"other").unwrap();
        assert_ne!(source_key(&path).unwrap(), first, "size");
        let before = source_key(&path).unwrap();
        let f = File::options().write(true).open(&path).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        assert_ne!(source_key(&path).unwrap(), before, "modification time");
    }
}
