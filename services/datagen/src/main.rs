//! `datagen`: writes the synthetic Binance-format dataset (see `dataset/README.md`).
//!
//! ```text
//! cargo run -p candlepipe-datagen -- --out dataset                 # the bundled files
//! cargo run -p candlepipe-datagen -- --out /tmp/big --synthetic 1000 --duration 1d
//! cargo run --release -p candlepipe-datagen -- --repack-from ~/kaggle --out ~/kaggle-small
//! ```
//!
//! Every flag is also an environment variable (`DATAGEN_*`), like the services' flags.

use anyhow::{bail, Context, Result};
use candlepipe_datagen::{write_dataset, FileLayout, MarketOptions, PairSpec, WriteOptions};
use candlepipe_model::repack::{repack_file, RepackOptions, REPACK_PAGE_SIZE};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Generate synthetic Binance 1m candle parquet files in the Kaggle binance-full-history schema.
#[derive(Debug, Parser)]
#[command(name = "datagen", version)]
struct Args {
    /// Output directory (created if missing); one BASE-QUOTE.parquet per pair.
    #[arg(long, env = "DATAGEN_OUT", default_value = "dataset")]
    out: PathBuf,
    /// Pairs from the built-in list (BTC-USDT, ETH-USDT, BNB-USDT, SOL-USDT, XRP-USDT),
    /// comma separated. Empty with --synthetic to write only synthetic pairs.
    #[arg(
        long,
        env = "DATAGEN_PAIRS",
        value_delimiter = ',',
        default_value = "BTC-USDT,ETH-USDT,BNB-USDT,SOL-USDT,XRP-USDT"
    )]
    pairs: Vec<String>,
    /// Also write this many made-up pairs SYN0000-USDT, SYN0001-USDT, … (scale tests).
    #[arg(long, env = "DATAGEN_SYNTHETIC", default_value_t = 0)]
    synthetic: u32,
    /// Open time of the first candle, UTC (RFC 3339 or a bare date).
    #[arg(long, env = "DATAGEN_START", default_value = "2021-03-01")]
    start: String,
    /// Span of market time to simulate (whole minutes), e.g. 14d, 36h.
    #[arg(long, env = "DATAGEN_DURATION", default_value = "14d", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of every random stream: the same seed writes the same bytes of data.
    #[arg(long, env = "DATAGEN_SEED", default_value_t = 20_210_301)]
    seed: u64,
    /// Chance per minute that a gap of missing candles starts (0 = no gaps).
    #[arg(long, env = "DATAGEN_GAP_RATE", default_value_t = 0.0003)]
    gap_rate: f64,
    /// File layout: kaggle, float64, int-ms, signed-trades or ohlcv-only.
    #[arg(long, env = "DATAGEN_LAYOUT", default_value = "kaggle")]
    layout: String,
    /// Target data page size in bytes [default: 1 MiB like pyarrow; 8 KiB with --repack-from].
    #[arg(long, env = "DATAGEN_PAGE_SIZE")]
    page_size: Option<usize>,
    /// Write plain-encoded columns (pyarrow dictionary-encodes, with up to 1 MiB
    /// dictionary pages per column). Repacked copies are always plain-encoded.
    #[arg(long, env = "DATAGEN_NO_DICTIONARY")]
    no_dictionary: bool,
    /// Instead of generating: copy every *.parquet of this folder (e.g. the Kaggle
    /// binance-full-history files) into --out with small plain pages. The producer makes
    /// such copies by itself when it needs them (its replay cache, see dataset/README.md);
    /// this makes a permanent copy, e.g. for a read-only image.
    #[arg(long, env = "DATAGEN_REPACK_FROM")]
    repack_from: Option<PathBuf>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(from) = &args.repack_from {
        return repack(from, &args);
    }
    let layout = FileLayout::named(&args.layout).with_context(|| {
        format!(
            "unknown --layout {:?} (kaggle, float64, int-ms, signed-trades, ohlcv-only)",
            args.layout
        )
    })?;
    let mut pairs = Vec::new();
    for name in args
        .pairs
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
    {
        match PairSpec::bundled_named(name) {
            Some(spec) => pairs.push(spec),
            None => bail!(
                "unknown pair {name:?}; built in are {} (use --synthetic N for more)",
                PairSpec::bundled()
                    .iter()
                    .map(|p| p.symbol.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
    pairs.extend((0..args.synthetic).map(PairSpec::synthetic));
    if pairs.is_empty() {
        bail!("nothing to write: --pairs is empty and --synthetic is 0");
    }
    let minutes = args.duration.as_secs() / 60;
    if minutes == 0 || args.duration.as_secs() % 60 != 0 || args.duration.subsec_nanos() != 0 {
        bail!(
            "--duration must be a positive whole number of minutes, got {:?}",
            args.duration
        );
    }
    if !(0.0..1.0).contains(&args.gap_rate) {
        bail!("--gap-rate must be in [0, 1), got {}", args.gap_rate);
    }
    let market = MarketOptions {
        seed: args.seed,
        start_ms: candlepipe_model::time::parse_instant_ms(&args.start)
            .map_err(|e| anyhow::anyhow!("--start: {e}"))?,
        minutes: u32::try_from(minutes).context("--duration too long")?,
        gap_rate: args.gap_rate,
    };
    let options = WriteOptions {
        data_page_size: args.page_size.unwrap_or(1024 * 1024).max(1024),
        dictionary: !args.no_dictionary,
    };
    let written = write_dataset(&args.out, &pairs, &market, &layout, &options)?;
    let total: u64 = written.iter().map(|(_, rows)| rows).sum();
    for (path, rows) in &written {
        println!("{rows:>8} rows  {}", path.display());
    }
    println!("{total} rows in {} files", written.len());
    Ok(())
}

/// `--repack-from`: every *.parquet of `from` into `--out`, small plain pages.
fn repack(from: &Path, args: &Args) -> Result<()> {
    if from == args.out {
        bail!("--repack-from and --out must be different folders");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let options = RepackOptions {
        data_page_size: args.page_size.unwrap_or(REPACK_PAGE_SIZE).max(1024),
        created_by: format!(
            "candlepipe-datagen {} repack (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ),
        ..RepackOptions::default()
    };
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(from)
        .with_context(|| format!("reading {}", from.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    inputs.sort();
    if inputs.is_empty() {
        bail!("no *.parquet files in {}", from.display());
    }
    let mut total = 0;
    for input in &inputs {
        let output = args
            .out
            .join(input.file_name().expect("listed files have names"));
        let rows = repack_file(input, &output, &options)?;
        println!("{rows:>9} rows  {}", output.display());
        total += rows;
    }
    println!("{total} rows in {} files", inputs.len());
    Ok(())
}
