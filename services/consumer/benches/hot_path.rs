//! The consumer's hot path per candle, without Kafka or HTTP: decode + validate the JSON
//! message → apply to the per-symbol state → flush the changed points → encode them as line
//! protocol. Input: 100 symbols × 1,000 minutes of synthetic candles, processed in
//! micro-batches of 10,000 messages like the real loop (each batch flushes ~2.3 points per
//! candle, ~780 bytes of line protocol). Throughput is candles per second on one core
//! (criterion runs single-threaded).
//!
//! `decode_aggregate_encode` is the whole path as the batch loop and the sink run it;
//! `decode`, `aggregate` and `encode` are its three stages alone, so a change can be
//! attributed to the stage it sped up.

use candlepipe_consumer::lineproto::encode_all;
use candlepipe_consumer::point::Point;
use candlepipe_consumer::state::Aggregator;
use candlepipe_model::{codec, Candle};
use common::{decode_aggregate_encode, messages, BATCH, HORIZON_MS};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

mod common;

fn hot_path(c: &mut Criterion) {
    let msgs = messages();
    let candles: Vec<Candle> = msgs.iter().map(|m| codec::decode(m).unwrap()).collect();
    // what each batch flushes, for the encode stage alone
    let flushed: Vec<Vec<Point>> = {
        let mut agg = Aggregator::new(HORIZON_MS);
        candles
            .chunks(BATCH)
            .map(|batch| {
                for c in batch {
                    agg.apply(c);
                }
                let mut points = Vec::new();
                agg.flush(&mut points);
                points
            })
            .collect()
    };
    let mut group = c.benchmark_group("consumer");
    group.throughput(Throughput::Elements(msgs.len() as u64));
    group.sample_size(10);

    group.bench_function("decode", |b| {
        b.iter(|| {
            for m in &msgs {
                black_box(codec::decode(m).unwrap());
            }
        })
    });

    group.bench_function("aggregate", |b| {
        b.iter_batched(
            || Aggregator::new(HORIZON_MS),
            |mut agg| {
                let mut points = Vec::new();
                let mut total = 0;
                for batch in candles.chunks(BATCH) {
                    for c in batch {
                        agg.apply(c);
                    }
                    points.clear();
                    agg.flush(&mut points);
                    total += points.len();
                }
                black_box(total)
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for points in &flushed {
                let encoded = encode_all(points);
                bytes += encoded.body(0..encoded.lines.len()).len();
            }
            black_box(bytes)
        })
    });

    group.bench_function("decode_aggregate_encode", |b| {
        b.iter_batched(
            || Aggregator::new(HORIZON_MS),
            |mut agg| black_box(decode_aggregate_encode(&mut agg, &msgs)),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
