//! `replay_rss`: the replay reader's memory and speed on a whole dataset folder, without
//! Kafka. It opens the dataset exactly as the producer does (including the replay cache's
//! one-time conversion when the files' pages are too large), replays every candle at
//! `--speed max` without rebase or loop, and prints one line of numbers:
//!
//! ```text
//! REPLAY files=1000 candles=100000000 open_s=.. replay_s=.. rows_per_s=.. peak_rss_mib=..
//!        cache_converted=.. cache_reused=.. cache_direct=..
//! ```
//!
//! `peak_rss_mib` is the process's VmHWM: the open (and any conversion) and the replay
//! together. `scripts/bench.sh` runs it on a Kaggle-layout folder twice: the first run
//! pays for the cache, the second reuses it.
//!
//! ```text
//! cargo run --release -p producer --example replay_rss -- --dataset /tmp/kaggle
//! ```

use candlepipe_producer::clock::SystemClock;
use candlepipe_producer::config::parse_bytes;
use candlepipe_producer::source::cache::DEFAULT_PAGE_BUDGET;
use candlepipe_producer::source::replay::{ReplayEnd, ReplayOptions, ReplaySource, Speed};
use candlepipe_runtime::{alloc, shutdown, telemetry};
use clap::Parser;
use std::path::PathBuf;
use std::time::Instant;

/// Replays a dataset folder at max speed without Kafka and reports peak RSS and rows/s.
#[derive(Debug, Parser)]
#[command(name = "replay_rss")]
struct Args {
    /// The dataset folder, as the producer's --dataset.
    #[arg(long, env = "DATASET_DIR")]
    dataset: PathBuf,
    /// As the producer's --replay-cache.
    #[arg(long, env = "REPLAY_CACHE_DIR")]
    replay_cache: Option<PathBuf>,
    /// As the producer's --replay-page-budget (e.g. 64MiB; a huge value reads every file
    /// directly, which is how the replay behaved before the cache).
    #[arg(long, env = "REPLAY_PAGE_BUDGET", value_parser = parse_bytes)]
    replay_page_budget: Option<u64>,
}

fn main() -> anyhow::Result<()> {
    alloc::tune();
    telemetry::init();
    let args = Args::parse();
    let opts = ReplayOptions {
        speed: Speed::Max,
        looping: false,
        rebase: false,
        cache_dir: args.replay_cache,
        page_budget: args.replay_page_budget.unwrap_or(DEFAULT_PAGE_BUDGET),
        ..ReplayOptions::new(&args.dataset)
    };
    let started = Instant::now();
    let mut source = ReplaySource::open(opts)?;
    let open_s = started.elapsed().as_secs_f64();
    let stats = source.stats();
    let (_trigger, stop) = shutdown::channel();
    let replay_started = Instant::now();
    let mut candles = 0u64;
    let end = source.run(&SystemClock, &stop, &mut |c| {
        candles += u64::from(c.open_time != 0);
        true
    })?;
    anyhow::ensure!(end == ReplayEnd::Finished, "the replay did not finish");
    let replay_s = replay_started.elapsed().as_secs_f64();
    println!(
        "REPLAY files={} candles={candles} open_s={open_s:.1} replay_s={replay_s:.1} rows_per_s={:.0} peak_rss_mib={:.1} cache_converted={} cache_reused={} cache_direct={}",
        source.symbols().len(),
        candles as f64 / replay_s.max(1e-9),
        peak_rss_kib()? as f64 / 1024.0,
        stats.cache().converted(),
        stats.cache().reused(),
        stats.cache().direct(),
    );
    Ok(())
}

/// VmHWM (peak resident set size) of this process, KiB.
fn peak_rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmHWM in /proc/self/status"))
}
