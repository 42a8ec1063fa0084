//! The replay reader per row, without Kafka: file → k-way merge by time → validated
//! candles, over the bundled dataset (5 pairs, Kaggle schema). Throughput is rows per second
//! on one core.
//!
//! * `read_merge_validate`: the parquet files as they are.
//! * `read_merge_validate_csv` / `_zip`: the same candles re-typed as Binance kline files
//!   (one file per pair and day, 8-decimal text), as `.csv` and as deflated `.zip`.

use candlepipe_model::time::fmt_ms;
use candlepipe_model::Candle;
use candlepipe_producer::clock::SystemClock;
use candlepipe_producer::source::replay::{ReplayOptions, ReplaySource, Speed};
use candlepipe_runtime::shutdown;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::collections::BTreeMap;
use std::path::Path;

#[path = "../tests/common/binance.rs"]
mod binance;
use binance::{binance_line, write_kline_file, Digits, Unit};

fn options(dir: &Path) -> ReplayOptions {
    let mut opts = ReplayOptions::new(dir);
    opts.speed = Speed::Max;
    opts.looping = false;
    opts.rebase = false;
    opts
}

/// Replays `dir` to the end, handing every candle to `f`.
fn replay(dir: &Path, f: &mut dyn FnMut(Candle)) {
    let (_trigger, stop) = shutdown::channel();
    let mut source = ReplaySource::open(options(dir)).unwrap();
    source
        .run(&SystemClock, &stop, &mut |c| {
            f(c);
            true
        })
        .unwrap();
}

/// Writes `candles` as one Binance kline file per symbol and day, with `extension`.
fn write_daily_klines(dir: &Path, candles: &[Candle], extension: &str) {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for c in candles {
        let day = &fmt_ms(c.open_time)[..10];
        let name = format!("{}-1m-{day}.{extension}", c.symbol.replace('-', ""));
        let text = files.entry(name).or_default();
        text.push_str(&binance_line(c, Unit::Millis, Digits::Eight));
        text.push('\n');
    }
    for (name, text) in files {
        write_kline_file(dir, &name, &text);
    }
}

fn replay_reader(c: &mut Criterion) {
    let parquet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dataset");
    let mut candles = Vec::new();
    replay(&parquet, &mut |c| candles.push(c));
    let csv = tempfile::tempdir().unwrap();
    write_daily_klines(csv.path(), &candles, "csv");
    let zip = tempfile::tempdir().unwrap();
    write_daily_klines(zip.path(), &candles, "zip");

    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(candles.len() as u64));
    group.sample_size(10);
    for (name, dir) in [
        ("read_merge_validate", parquet.as_path()),
        ("read_merge_validate_csv", csv.path()),
        ("read_merge_validate_zip", zip.path()),
    ] {
        let mut n = 0u64;
        replay(dir, &mut |_| n += 1);
        assert_eq!(n, candles.len() as u64, "{name}: every candle");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut n = 0u64;
                replay(dir, &mut |c| n += c.open_time as u64 & 1);
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, replay_reader);
criterion_main!(benches);
