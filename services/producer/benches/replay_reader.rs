//! The replay reader per row, without Kafka: parquet pages → k-way merge by time →
//! validated candles, over the bundled dataset (5 pairs, Kaggle schema). Throughput is rows
//! per second on one core.

use candlepipe_model::shutdown;
use candlepipe_producer::clock::SystemClock;
use candlepipe_producer::source::replay::{ReplayOptions, ReplaySource, Speed};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::Path;

fn options() -> ReplayOptions {
    let mut opts = ReplayOptions::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dataset"));
    opts.speed = Speed::Max;
    opts.looping = false;
    opts.rebase = false;
    opts
}

fn replay_reader(c: &mut Criterion) {
    let (_trigger, stop) = shutdown::channel();
    let rows = {
        let mut source = ReplaySource::open(options()).unwrap();
        let mut n = 0u64;
        source
            .run(&SystemClock, &stop, &mut |_| {
                n += 1;
                true
            })
            .unwrap();
        n
    };
    let mut group = c.benchmark_group("replay");
    group.throughput(Throughput::Elements(rows));
    group.sample_size(10);
    group.bench_function("read_merge_validate", |b| {
        b.iter(|| {
            let mut source = ReplaySource::open(options()).unwrap();
            let mut n = 0u64;
            source
                .run(&SystemClock, &stop, &mut |c| {
                    n += c.open_time as u64 & 1;
                    true
                })
                .unwrap();
            n
        })
    });
    group.finish();
}

criterion_group!(benches, replay_reader);
criterion_main!(benches);
