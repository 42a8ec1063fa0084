//! The replay reader end to end, without Kafka: files on disk in, candles out of
//! `ReplaySource::run`, under a virtual clock (nothing here sleeps for real).
//!
//! Expected values never come from the reader under test: they come from the generator's
//! own in-memory candles, from parquet's independent row API (real candles in
//! `testdata/real-ohlcv`), or from hand-written tables.

use arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray, UInt16Array,
};
use arrow_schema::{Field, Schema};
use candlepipe_datagen::{
    klines, write_dataset, write_klines, FileLayout, Kline, MarketOptions, PairSpec, WriteOptions,
};
use candlepipe_model::candle::MINUTE_MS;
use candlepipe_model::validate::validate;
use candlepipe_model::{Candle, Source};
use candlepipe_producer::clock::{Clock, VirtualClock};
use candlepipe_producer::source::cache::{CacheError, DEFAULT_DIR_NAME};
use candlepipe_producer::source::replay::{
    ReplayEnd, ReplayError, ReplayOptions, ReplaySource, ReplayStats, Speed,
};
use candlepipe_runtime::shutdown;
use parquet::arrow::ArrowWriter;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// 2021-03-01T00:00Z: where the generator starts by default.
const T0: i64 = 1_614_556_800_000;

#[path = "common/replay.rs"]
mod common;
use common::{
    assert_bad_file_refused_then_skipped, assert_candles, capture_logs, capture_logs_at, plain,
    replay_all, NOW,
};

// ---------------------------------------------------------------------------------------
// helpers

fn market(minutes: u32, gap_rate: f64) -> MarketOptions {
    MarketOptions {
        minutes,
        gap_rate,
        ..MarketOptions::default()
    }
}

fn pair(symbol: &str) -> PairSpec {
    PairSpec::bundled_named(symbol).unwrap()
}

/// A float32 as the decimal Rust prints it as (shortest round-trip `Display`), as f64.
fn dec(v: f32) -> f64 {
    v.to_string().parse().unwrap()
}

/// The candle the replay must produce for a generated kline, per layout (up to the
/// tie-break of [`same_decimal`]).
fn expected(symbol: &str, k: &Kline, layout: &FileLayout) -> Candle {
    let mut c = Candle::ohlcv(
        symbol,
        Source::Replay,
        k.open_time_ms,
        dec(k.open),
        dec(k.high),
        dec(k.low),
        dec(k.close),
        dec(k.volume),
    );
    if !layout.ohlcv_only {
        c.quote_volume = Some(dec(k.quote_asset_volume));
        c.trades = Some(u64::from(k.number_of_trades));
        c.taker_buy_base = Some(dec(k.taker_buy_base_asset_volume));
        c.taker_buy_quote = Some(dec(k.taker_buy_quote_asset_volume));
    }
    c
}

/// `got` is a shortest decimal of the float32 behind `want` (= `dec(v)`): equal, or, where
/// two shortest decimals tie (445353.125 -> .12 or .13), the other one: same float32 and
/// the same number of digits. Rust's `Display` rounds such ties up, numpy and ryu to even.
fn same_decimal(got: f64, want: f64) -> bool {
    got == want || (got as f32 == want as f32 && got.to_string().len() == want.to_string().len())
}

/// Compares candles decoded from float32 files against [`expected`] ones.
#[track_caller]
fn assert_f32_candles(got: &[Candle], want: &[Candle], what: &str) {
    let same = |a: &Candle, b: &Candle| {
        let floats = |c: &Candle| [c.open, c.high, c.low, c.close, c.volume];
        let optional = |c: &Candle| [c.quote_volume, c.taker_buy_base, c.taker_buy_quote];
        (
            &a.symbol,
            a.open_time,
            a.trades,
            a.source,
            a.closed,
            a.produced_at,
        ) == (
            &b.symbol,
            b.open_time,
            b.trades,
            b.source,
            b.closed,
            b.produced_at,
        ) && floats(a)
            .iter()
            .zip(floats(b))
            .all(|(x, y)| same_decimal(*x, y))
            && optional(a)
                .iter()
                .zip(optional(b))
                .all(|(x, y)| match (x, y) {
                    (Some(x), Some(y)) => same_decimal(*x, y),
                    (x, y) => x.is_none() && y.is_none(),
                })
    };
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| !same(&got[i], &want[i])) {
        panic!(
            "{what}: candle {i} differs:\n got  {:?}\n want {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: candle count");
}

/// Writes a parquet file from named columns (single row group, like pandas).
fn write_columns(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// An OHLCV file (ns UTC timestamps, float64) with one candle per given minute offset
/// from T0; prices encode the minute and the symbol's `base`, so every candle is unique.
fn ohlcv_file(dir: &Path, symbol: &str, minutes: &[i64], base: f64) -> Vec<Candle> {
    let candles: Vec<Candle> = minutes
        .iter()
        .map(|m| {
            let p = base + *m as f64;
            Candle::ohlcv(
                symbol,
                Source::Replay,
                T0 + m * MINUTE_MS,
                p,
                p + 2.0,
                p - 1.0,
                p + 1.0,
                10.0 + *m as f64,
            )
        })
        .collect();
    let f64s = |get: fn(&Candle) -> f64| -> ArrayRef {
        Arc::new(candles.iter().map(get).collect::<Float64Array>())
    };
    write_columns(
        &dir.join(format!("{symbol}.parquet")),
        vec![
            ("open", f64s(|c| c.open)),
            ("high", f64s(|c| c.high)),
            ("low", f64s(|c| c.low)),
            ("close", f64s(|c| c.close)),
            ("volume", f64s(|c| c.volume)),
            (
                "open_time",
                Arc::new(
                    TimestampNanosecondArray::from_iter_values(
                        candles.iter().map(|c| c.open_time * 1_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ),
        ],
    );
    candles
}

/// Asserts global `(open_time, symbol)` order.
fn assert_time_ordered(candles: &[Candle]) {
    for w in candles.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        assert!(
            (a.open_time, &a.symbol) < (b.open_time, &b.symbol),
            "out of order: {} {} then {} {}",
            a.symbol,
            a.open_time,
            b.symbol,
            b.open_time
        );
    }
}

// ---------------------------------------------------------------------------------------
// reading: the Kaggle layout, its variants, real files

#[test]
fn kaggle_typed_file_replays_every_value_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = pair("BTC-USDT");
    let rows: Vec<Kline> = klines(&spec, &market(3_000, 1.0 / 300.0)).collect();
    // Small pages: the file streams through many pages of its single row group.
    let options = WriteOptions {
        data_page_size: 8 * 1024,
        ..WriteOptions::default()
    };
    let path = dir.path().join("BTC-USDT.parquet");
    write_klines(&path, &FileLayout::KAGGLE, &options, rows.clone()).unwrap();

    let (out, stats) = replay_all(plain(dir.path())).unwrap();
    let want: Vec<Candle> = rows
        .iter()
        .map(|k| expected("BTC-USDT", k, &FileLayout::KAGGLE))
        .collect();
    assert!(want.len() < 3_000, "the sample should contain gaps");
    assert_f32_candles(&out, &want, "kaggle");
    // The documented example: 45134.11 as float32 travels as 45134.11, not 45134.109375.
    assert_eq!(out[0].open, 45134.11);
    assert_eq!(stats.rows_sent(), want.len() as u64);
    assert_eq!(stats.total_rows(), want.len() as u64);
    assert_eq!(stats.bad_rows(), 0);
    assert_eq!(stats.percent_done(), 100.0);
    assert_eq!(stats.loops(), 1);
    assert_eq!(stats.position_ms(), want.last().unwrap().open_time);
}

#[test]
fn every_variant_layout_is_accepted() {
    let variants = [
        ("float64", FileLayout::float64()),
        ("int-ms", FileLayout::int_millis()),
        ("signed-trades", FileLayout::signed_trades()),
        ("ohlcv-only", FileLayout::ohlcv_only()),
    ];
    let spec = pair("ETH-USDT");
    let rows: Vec<Kline> = klines(&spec, &market(1_500, 1.0 / 200.0)).collect();
    for (name, layout) in variants {
        let dir = tempfile::tempdir().unwrap();
        write_klines(
            &dir.path().join("ETH-USDT.parquet"),
            &layout,
            &WriteOptions::default(),
            rows.clone(),
        )
        .unwrap();
        let (out, stats) = replay_all(plain(dir.path())).unwrap();
        let want: Vec<Candle> = rows
            .iter()
            .map(|k| expected("ETH-USDT", k, &layout))
            .collect();
        assert_f32_candles(&out, &want, name);
        assert_eq!(stats.bad_rows(), 0, "layout {name}");
    }
}

#[test]
fn other_timestamp_units_and_naive_time_zones_are_accepted() {
    // pandas >= 3 writes datetime64[us]; files without a time zone are UTC.
    let dir = tempfile::tempdir().unwrap();
    let times = [T0, T0 + MINUTE_MS, T0 + 5 * MINUTE_MS];
    let f32s = |v: [f32; 3]| -> ArrayRef { Arc::new(Float32Array::from(v.to_vec())) };
    write_columns(
        &dir.path().join("SOL-USDT.parquet"),
        vec![
            (
                "open_time",
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    times.map(|t| t * 1000),
                )),
            ),
            ("open", f32s([15.47, 15.5, 15.3])),
            ("high", f32s([15.6, 15.5, 15.4])),
            ("low", f32s([15.4, 15.2, 15.3])),
            ("close", f32s([15.5, 15.3, 15.35])),
            ("volume", f32s([100.25, 0.0, 3.5])),
            (
                "number_of_trades",
                Arc::new(UInt16Array::from(vec![7, 0, 65535])),
            ),
            ("ignore", Arc::new(StringArray::from(vec!["x", "y", "z"]))),
        ],
    );
    let (out, _) = replay_all(plain(dir.path())).unwrap();
    let got: Vec<(i64, f64, f64, Option<u64>)> = out
        .iter()
        .map(|c| (c.open_time, c.open, c.volume, c.trades))
        .collect();
    assert_eq!(
        got,
        vec![
            (T0, 15.47, 100.25, Some(7)),
            (T0 + MINUTE_MS, 15.5, 0.0, Some(0)),
            (T0 + 5 * MINUTE_MS, 15.3, 3.5, Some(65535)),
        ]
    );
    assert!(out
        .iter()
        .all(|c| c.quote_volume.is_none() && c.taker_buy_base.is_none()));
}

/// Reads a real-ohlcv file with parquet's row API (a code path independent of the arrow
/// reader the replay uses): (open_time ms, open, high, low, close, volume).
fn rows_via_record_api(path: &Path) -> Vec<(i64, [f64; 5])> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field as Value;
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            let mut time = None;
            let mut values = HashMap::new();
            for (name, value) in row.get_column_iter() {
                match value {
                    // TIMESTAMP(NANOS) has no legacy converted type: the row API gives the raw i64.
                    Value::Long(ns) if name == "open_time" => time = Some(ns / 1_000_000),
                    Value::Double(v) => {
                        values.insert(name.clone(), *v);
                    }
                    other => panic!("unexpected {name} = {other:?}"),
                }
            }
            let v = |n: &str| values[n];
            (
                time.unwrap(),
                [v("open"), v("high"), v("low"), v("close"), v("volume")],
            )
        })
        .collect()
}

#[test]
fn real_candles_replay_equal_to_the_files_and_merge_in_time_order() {
    let dir = candlepipe_testkit::testdata("real-ohlcv");
    let (out, stats) = replay_all(plain(&dir)).unwrap();
    assert_time_ordered(&out);
    let mut total = 0;
    for symbol in ["XRP-ETH", "UNITTEST-BTC"] {
        let want = rows_via_record_api(&dir.join(format!("{symbol}.parquet")));
        let got: Vec<(i64, [f64; 5])> = out
            .iter()
            .filter(|c| c.symbol == symbol)
            .map(|c| (c.open_time, [c.open, c.high, c.low, c.close, c.volume]))
            .collect();
        assert!(want.len() > 2_000);
        assert_eq!(got, want, "{symbol}");
        total += want.len();
        // Gaps are kept, not filled.
        assert!(got.windows(2).any(|w| w[1].0 - w[0].0 > MINUTE_MS));
    }
    assert_eq!(out.len(), total);
    assert_eq!(stats.bad_rows(), 0);
    assert!(out
        .iter()
        .all(|c| c.trades.is_none() && c.quote_volume.is_none()));
}

#[test]
fn the_bundled_dataset_replays_completely() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dataset");
    let (out, stats) = replay_all(plain(&dir)).unwrap();
    assert_time_ordered(&out);
    let symbols: std::collections::BTreeSet<&str> = out.iter().map(|c| c.symbol.as_str()).collect();
    assert_eq!(
        symbols.into_iter().collect::<Vec<_>>(),
        ["BNB-USDT", "BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"]
    );
    assert_eq!(out.len() as u64, stats.total_rows());
    let span = out.last().unwrap().open_time - out[0].open_time;
    assert!(
        span >= 7 * 24 * 60 * MINUTE_MS,
        "at least 7 days, got {span} ms"
    );
    assert_eq!(stats.bad_rows(), 0);
}

#[test]
fn the_replay_logs_what_it_opened_and_its_progress() {
    let (dir, rows) = two_pairs(60, 0.0);
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let (result, logs) = capture_logs_at(tracing::Level::INFO, || replay_all(plain(dir.path())));
    result.unwrap();
    assert!(
        logs.contains(&format!(
            "replay dataset: 2 files, {total} rows, 2021-03-01T00:00:00.000Z"
        )),
        "{logs}"
    );
    let last = logs
        .lines()
        .rev()
        .find(|l| l.contains("% done"))
        .expect(&logs);
    assert!(
        last.contains("replay 100.0% done") && last.contains("candles/s"),
        "{last}"
    );
    assert!(last.contains(&format!("sent={total}")), "{last}");
}

// ---------------------------------------------------------------------------------------
// merging and filtering

#[test]
fn merge_orders_interleaved_gapped_and_tied_files_by_time_then_symbol() {
    let dir = tempfile::tempdir().unwrap();
    let mut all = Vec::new();
    all.extend(ohlcv_file(
        dir.path(),
        "A-X",
        &[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20],
        100.0,
    ));
    all.extend(ohlcv_file(dir.path(), "B-X", &[1, 2, 3, 10, 11, 30], 200.0));
    all.extend(ohlcv_file(dir.path(), "C-X", &[25, 26, 27, 28], 300.0)); // opens late
    all.extend(ohlcv_file(dir.path(), "D-X", &[0, 2, 4], 400.0)); // ties with A-X
    all.extend(ohlcv_file(dir.path(), "E-X", &[500], 500.0)); // far later
    std::fs::write(dir.path().join("README.md"), "not a data file").unwrap();
    all.sort_by(|a, b| (a.open_time, &a.symbol).cmp(&(b.open_time, &b.symbol)));

    let (out, _) = replay_all(plain(dir.path())).unwrap();
    assert_candles(&out, &all, "merge");
    let head: Vec<(i64, &str)> = out[..5]
        .iter()
        .map(|c| ((c.open_time - T0) / MINUTE_MS, c.symbol.as_str()))
        .collect();
    assert_eq!(
        head,
        [(0, "A-X"), (0, "D-X"), (1, "B-X"), (2, "A-X"), (2, "B-X")]
    );
}

#[test]
fn start_end_and_symbols_filter_the_replay() {
    let dir = tempfile::tempdir().unwrap();
    let a = ohlcv_file(dir.path(), "A-X", &(0..60).collect::<Vec<_>>(), 100.0);
    let b = ohlcv_file(dir.path(), "B-X", &(30..90).collect::<Vec<_>>(), 200.0);
    ohlcv_file(dir.path(), "C-X", &[0, 1, 2], 300.0); // wholly before --start

    let opts = ReplayOptions {
        start: Some(T0 + 20 * MINUTE_MS),
        end: Some(T0 + 40 * MINUTE_MS),
        ..plain(dir.path())
    };
    let (out, stats) = replay_all(opts).unwrap();
    let mut want: Vec<Candle> = a
        .iter()
        .chain(&b)
        .filter(|c| (T0 + 20 * MINUTE_MS..T0 + 40 * MINUTE_MS).contains(&c.open_time))
        .cloned()
        .collect();
    want.sort_by(|x, y| (x.open_time, &x.symbol).cmp(&(y.open_time, &y.symbol)));
    assert_candles(&out, &want, "window");
    assert_eq!(stats.percent_done(), 100.0);

    let opts = ReplayOptions {
        symbols: Some(vec!["B-X".into()]),
        ..plain(dir.path())
    };
    let (out, _) = replay_all(opts).unwrap();
    assert_candles(&out, &b, "symbols");

    let opts = ReplayOptions {
        symbols: Some(vec!["B-X".into(), "DOGE-USDT".into()]),
        ..plain(dir.path())
    };
    let err = ReplaySource::open(opts).err().unwrap().to_string();
    assert!(
        err.contains("DOGE-USDT") && err.contains("have no file"),
        "{err}"
    );

    let opts = ReplayOptions {
        start: Some(T0 + MINUTE_MS),
        end: Some(T0 + MINUTE_MS),
        ..plain(dir.path())
    };
    let err = ReplaySource::open(opts).err().unwrap().to_string();
    assert!(err.contains("is not before --end"), "{err}");
}

// ---------------------------------------------------------------------------------------
// pacing, rebase, loop, resume: all under the virtual clock

/// Two pairs, `minutes` of market time from T0, written to a temp dir.
fn two_pairs(minutes: u32, gap_rate: f64) -> (tempfile::TempDir, Vec<(String, u64)>) {
    let dir = tempfile::tempdir().unwrap();
    let written = write_dataset(
        dir.path(),
        &[pair("BTC-USDT"), pair("ETH-USDT")],
        &market(minutes, gap_rate),
        &FileLayout::KAGGLE,
        &WriteOptions::default(),
    )
    .unwrap();
    let rows = written
        .into_iter()
        .map(|(p, n)| (p.file_stem().unwrap().to_string_lossy().into_owned(), n))
        .collect();
    (dir, rows)
}

/// Runs until `limit` candles were emitted (then refuses the next one) or the end;
/// returns each candle with the virtual time it was emitted at.
fn run_recording(
    source: &mut ReplaySource,
    clock: &VirtualClock,
    limit: usize,
) -> (Vec<(Candle, i64)>, ReplayEnd) {
    let (_trigger, stop) = shutdown::channel();
    let mut out = Vec::new();
    let end = source
        .run(clock, &stop, &mut |c| {
            if out.len() == limit {
                return false;
            }
            out.push((c, clock.now_ms()));
            true
        })
        .unwrap();
    (out, end)
}

#[test]
fn speed_60_sends_one_market_minute_per_virtual_second() {
    let (dir, _) = two_pairs(240, 1.0 / 40.0);
    let opts = ReplayOptions {
        speed: Speed::Factor(60.0),
        ..plain(dir.path())
    };
    let mut source = ReplaySource::open(opts).unwrap();
    let clock = VirtualClock::new(NOW);
    let (out, end) = run_recording(&mut source, &clock, usize::MAX);
    assert_eq!(end, ReplayEnd::Finished);
    let first = out[0].0.open_time;
    for (c, sent_at) in &out {
        // Exactly (market offset / 60) after the start: a market minute per second.
        assert_eq!(sent_at - NOW, (c.open_time - first) / 60, "{c:?}");
    }
    // Gaps are waited through at the same pace.
    let span = out.last().unwrap().0.open_time - first;
    assert_eq!(clock.now_ms() - NOW, span / 60);
    assert!(clock.sleeps() > 100);
}

#[test]
fn speed_max_never_waits() {
    let (dir, rows) = two_pairs(300, 0.0);
    let mut source = ReplaySource::open(plain(dir.path())).unwrap();
    let clock = VirtualClock::new(NOW);
    let (out, _) = run_recording(&mut source, &clock, usize::MAX);
    assert_eq!(out.len() as u64, rows.iter().map(|r| r.1).sum::<u64>());
    assert_eq!(clock.now_ms(), NOW);
    assert_eq!(clock.sleeps(), 0);
}

#[test]
fn rebase_sends_the_backfill_then_ticks_at_the_present_never_in_the_future() {
    // 3 hours of two pairs without gaps, 1 hour of backfill, speed max, looping.
    let (dir, _) = two_pairs(180, 0.0);
    let opts = ReplayOptions {
        speed: Speed::Max,
        looping: true,
        rebase: true,
        backfill: Duration::from_secs(3600),
        ..plain(dir.path())
    };
    let mut source = ReplaySource::open(opts).unwrap();
    let clock = VirtualClock::new(NOW);
    // Two and a half passes.
    let (out, end) = run_recording(&mut source, &clock, 2 * 360 + 180);
    assert_eq!(end, ReplayEnd::Stopped);
    let present = NOW - NOW.rem_euclid(MINUTE_MS);

    assert_eq!(
        out[0].0.open_time,
        present - 3_600_000,
        "the backfill ends at the present minute"
    );
    let mut last_stamp: HashMap<String, i64> = HashMap::new();
    let mut per_minute: HashMap<i64, usize> = HashMap::new();
    for (c, sent_at) in &out {
        assert!(
            c.open_time <= *sent_at,
            "stamped in the future: {} at {sent_at}",
            c.open_time
        );
        assert_eq!(c.open_time % MINUTE_MS, 0);
        if c.open_time < present {
            assert_eq!(*sent_at, NOW, "the backfill is sent at once at speed max");
        } else {
            assert_eq!(
                *sent_at,
                c.open_time.max(NOW),
                "live part: sent when its minute starts"
            );
        }
        if let Some(prev) = last_stamp.insert(c.symbol.clone(), c.open_time) {
            assert_eq!(
                c.open_time,
                prev + MINUTE_MS,
                "{}: one candle per minute, monotonic across loops",
                c.symbol
            );
        }
        *per_minute.entry(c.open_time).or_default() += 1;
        assert!(c.symbol == "BTC-USDT" || c.symbol == "ETH-USDT");
    }
    assert!(
        per_minute.values().all(|n| *n == 2),
        "one candle per symbol per minute"
    );
    assert_eq!(source.stats().loops(), 2);
    // Values are the dataset's: the second pass repeats the first pass's prices.
    assert_eq!(out[360].0.close, out[0].0.close);
    assert_eq!(out[360].0.open_time, out[359].0.open_time + MINUTE_MS);
}

#[test]
fn rebase_at_speed_paces_the_backfill_then_follows_the_wall_clock() {
    let (dir, _) = two_pairs(180, 0.0);
    let opts = ReplayOptions {
        speed: Speed::Factor(60.0),
        looping: false,
        rebase: true,
        backfill: Duration::from_secs(3600),
        ..plain(dir.path())
    };
    let mut source = ReplaySource::open(opts).unwrap();
    let clock = VirtualClock::new(NOW);
    let (out, end) = run_recording(&mut source, &clock, usize::MAX);
    assert_eq!(end, ReplayEnd::Finished);
    assert_eq!(out.len(), 360);
    let present = NOW - NOW.rem_euclid(MINUTE_MS);
    let first = out[0].0.open_time;
    for (c, sent_at) in &out {
        assert!(c.open_time <= *sent_at);
        let paced = NOW + (c.open_time - first) / 60;
        assert_eq!(*sent_at, paced.max(c.open_time), "{c:?}");
    }
    // The first hour (backfill) went out a minute per second, in the past.
    let backfill: Vec<_> = out.iter().filter(|(c, _)| c.open_time < present).collect();
    assert_eq!(backfill.len(), 120);
    assert_eq!(backfill.last().unwrap().1, NOW + 59_000);
}

#[test]
fn without_rebase_a_loop_repeats_the_original_timestamps() {
    let (dir, rows) = two_pairs(30, 0.0);
    let per_pass = rows.iter().map(|r| r.1).sum::<u64>() as usize;
    let opts = ReplayOptions {
        looping: true,
        ..plain(dir.path())
    };
    let mut source = ReplaySource::open(opts).unwrap();
    let clock = VirtualClock::new(NOW);
    let (out, end) = run_recording(&mut source, &clock, 3 * per_pass);
    assert_eq!(end, ReplayEnd::Stopped);
    let pass = |k: usize| {
        out[k * per_pass..(k + 1) * per_pass]
            .iter()
            .map(|(c, _)| c.clone())
            .collect::<Vec<_>>()
    };
    assert_candles(&pass(1), &pass(0), "pass 2");
    assert_candles(&pass(2), &pass(0), "pass 3");
    // The third pass completed; the first candle of the fourth was refused.
    assert_eq!(source.stats().loops(), 3);
}

#[test]
fn run_resumes_after_the_last_emitted_candle_and_restart_goes_back() {
    let (dir, _) = two_pairs(200, 1.0 / 50.0);
    let (all, _) = replay_all(plain(dir.path())).unwrap();

    let mut source = ReplaySource::open(plain(dir.path())).unwrap();
    let clock = VirtualClock::new(NOW);
    // 1) the receiver goes away after 37 candles: the 38th is not lost.
    let (first, end) = run_recording(&mut source, &clock, 37);
    assert_eq!(end, ReplayEnd::Stopped);
    // 2) the shutdown fires from inside emit after 100 more.
    let (trigger, stop) = shutdown::channel();
    let mut second = Vec::new();
    let end = source
        .run(&clock, &stop, &mut |c| {
            second.push(c);
            if second.len() == 100 {
                trigger.fire();
            }
            true
        })
        .unwrap();
    assert_eq!(end, ReplayEnd::Stopped);
    // 3) a fresh run finishes the dataset.
    let (third, end) = run_recording(&mut source, &clock, usize::MAX);
    assert_eq!(end, ReplayEnd::Finished);
    let joined: Vec<Candle> = first
        .into_iter()
        .map(|(c, _)| c)
        .chain(second)
        .chain(third.into_iter().map(|(c, _)| c))
        .collect();
    assert_candles(
        &joined,
        &all,
        "stop and resume neither lose nor repeat a candle",
    );

    // Finished stays finished until restart()...
    let (nothing, end) = run_recording(&mut source, &clock, usize::MAX);
    assert!(nothing.is_empty());
    assert_eq!(end, ReplayEnd::Finished);
    // ...which replays from the beginning.
    source.restart();
    let (again, end) = run_recording(&mut source, &clock, usize::MAX);
    assert_eq!(end, ReplayEnd::Finished);
    assert_candles(
        &again.into_iter().map(|(c, _)| c).collect::<Vec<_>>(),
        &all,
        "after restart",
    );
}

#[test]
fn a_stop_during_a_wait_keeps_the_waiting_candle() {
    // Real-time pacing; the shutdown fires while the replay waits for the next minute.
    let (dir, _) = two_pairs(10, 0.0);
    let opts = ReplayOptions {
        speed: Speed::Factor(1.0),
        ..plain(dir.path())
    };
    let (all, _) = replay_all(plain(dir.path())).unwrap();
    let mut source = ReplaySource::open(opts).unwrap();
    let clock = VirtualClock::new(NOW);
    let (trigger, stop) = shutdown::channel();
    let mut got = Vec::new();
    let end = source
        .run(&clock, &stop, &mut |c| {
            got.push(c);
            if got.len() == 2 {
                trigger.fire(); // BTC and ETH of minute 0 sent; minute 1 must wait 60 s
            }
            true
        })
        .unwrap();
    assert_eq!(end, ReplayEnd::Stopped);
    assert_eq!(clock.now_ms(), NOW, "the stopped wait did not advance time");
    let (rest, end) = run_recording(&mut source, &clock, usize::MAX);
    assert_eq!(end, ReplayEnd::Finished);
    got.extend(rest.into_iter().map(|(c, _)| c));
    assert_candles(&got, &all, "stop during a wait");
}

// ---------------------------------------------------------------------------------------
// bad input

#[test]
fn bad_rows_are_counted_logged_and_never_emitted() {
    let dir = tempfile::tempdir().unwrap();
    let m = |k: i64| T0 + k * MINUTE_MS;
    // (open_time, open, high, low, close, volume, trades)
    type Row = (Option<i64>, f64, f64, f64, Option<f64>, f64, i64);
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        (Some(m(0)), 10.0, 12.0, 9.0, Some(11.0), 5.0, 3),      // 0 good
        (Some(m(1)), f64::NAN, 12.0, 9.0, Some(11.0), 5.0, 3),  // 1 NaN open
        (Some(m(2)), 10.0, 12.0, 9.0, Some(11.0), -5.0, 3),     // 2 negative volume
        (Some(m(3)), 10.0, 8.0, 9.0, Some(8.5), 5.0, 3),        // 3 high below low
        (Some(m(4)), 10.0, 12.0, 9.0, Some(13.0), 5.0, 3),      // 4 close above high
        (Some(m(5)), 10.0, 12.0, 9.0, None, 5.0, 3),            // 5 null close
        (Some(m(6)), 10.0, 12.0, 9.0, Some(11.0), 5.0, -1),     // 6 negative trades
        (Some(m(7)), 10.0, 12.0, 9.0, Some(11.0), 5.0, 3),      // 7 good
        (Some(m(7)), 10.0, 12.0, 9.0, Some(11.0), 5.0, 3),      // 8 duplicate time
        (Some(m(6)), 10.0, 12.0, 9.0, Some(11.0), 5.0, 3),      // 9 time goes back
        (Some(m(8) + 30_000), 10.0, 12.0, 9.0, Some(11.0), 5.0, 3), // 10 not on a minute
        (None, 10.0, 12.0, 9.0, Some(11.0), 5.0, 3),            // 11 null open_time
        (Some(m(9)), 10.0, 12.0, 9.0, Some(11.0), 0.0, 0),      // 12 good (zero volume is fine)
        (Some(m(10)), -1.0, 12.0, -2.0, Some(11.0), 5.0, 3),    // 13 negative prices
    ];
    write_columns(
        &dir.path().join("BAD-ROWS.parquet"),
        vec![
            (
                "open_time",
                Arc::new(rows.iter().map(|r| r.0).collect::<Int64Array>()),
            ),
            (
                "open",
                Arc::new(rows.iter().map(|r| r.1).collect::<Float64Array>()),
            ),
            (
                "high",
                Arc::new(rows.iter().map(|r| r.2).collect::<Float64Array>()),
            ),
            (
                "low",
                Arc::new(rows.iter().map(|r| r.3).collect::<Float64Array>()),
            ),
            (
                "close",
                Arc::new(rows.iter().map(|r| r.4).collect::<Float64Array>()),
            ),
            (
                "volume",
                Arc::new(rows.iter().map(|r| r.5).collect::<Float64Array>()),
            ),
            (
                "number_of_trades",
                Arc::new(rows.iter().map(|r| r.6).collect::<Int64Array>()),
            ),
        ],
    );
    let (result, logs) = capture_logs(|| replay_all(plain(dir.path())));
    let (out, stats) = result.unwrap();
    let times: Vec<i64> = out.iter().map(|c| (c.open_time - T0) / MINUTE_MS).collect();
    assert_eq!(times, [0, 7, 9]);
    assert!(out.iter().all(|c| validate(c).is_ok()));
    assert_eq!(stats.bad_rows(), 11);
    assert_eq!(stats.percent_done(), 100.0);
    for (row, reason) in [
        (1, "`open` is not a finite number"),
        (2, "`volume` is negative"),
        (3, "high 8 is below low 9"),
        (4, "`close` = 13 is outside"),
        (5, "column `close` is null"),
        (6, "`number_of_trades` is negative"),
        (8, "is not after the previous row's"),
        (9, "is not after the previous row's"),
    ] {
        let line = logs
            .lines()
            .find(|l| l.contains(&format!("bad row {row} of")))
            .unwrap_or_else(|| panic!("no log line for row {row}:\n{logs}"));
        assert!(
            line.contains("BAD-ROWS.parquet") && line.contains(reason),
            "{line}"
        );
    }
}

#[test]
fn a_dataset_of_only_bad_rows_finishes_even_when_looping() {
    let dir = tempfile::tempdir().unwrap();
    write_columns(
        &dir.path().join("NAN-X.parquet"),
        vec![
            (
                "open_time",
                Arc::new(Int64Array::from(vec![T0, T0 + MINUTE_MS])),
            ),
            (
                "open",
                Arc::new(Float64Array::from(vec![f64::NAN, f64::NAN])),
            ),
            ("high", Arc::new(Float64Array::from(vec![1.0, 1.0]))),
            ("low", Arc::new(Float64Array::from(vec![1.0, 1.0]))),
            ("close", Arc::new(Float64Array::from(vec![1.0, 1.0]))),
            ("volume", Arc::new(Float64Array::from(vec![1.0, 1.0]))),
        ],
    );
    let opts = ReplayOptions {
        looping: true,
        ..plain(dir.path())
    };
    let mut source = ReplaySource::open(opts).unwrap();
    let clock = VirtualClock::new(NOW);
    let (out, end) = run_recording(&mut source, &clock, usize::MAX);
    assert!(out.is_empty());
    assert_eq!(end, ReplayEnd::Finished);
    assert_eq!(source.stats().bad_rows(), 2);
}

/// A good file plus one bad file made by `make`; checks the error without
/// `--skip-bad-files` and the skip with it.
fn check_bad_file(name: &str, make: impl Fn(&Path), expected: &str) {
    let dir = tempfile::tempdir().unwrap();
    let good = ohlcv_file(dir.path(), "GOOD-X", &[0, 1, 2, 3], 100.0);
    make(dir.path());
    assert_bad_file_refused_then_skipped(dir.path(), &good, name, expected);
}

#[test]
fn unreadable_files_are_errors_naming_file_and_column_or_skipped() {
    let valid_bytes = {
        let dir = tempfile::tempdir().unwrap();
        ohlcv_file(dir.path(), "TMP-X", &(0..500).collect::<Vec<_>>(), 1.0);
        std::fs::read(dir.path().join("TMP-X.parquet")).unwrap()
    };
    let f64s = |v: Vec<f64>| -> ArrayRef { Arc::new(Float64Array::from(v)) };
    let times = || -> ArrayRef { Arc::new(Int64Array::from(vec![T0])) };

    check_bad_file(
        "EMPTY-X.parquet",
        |d| std::fs::write(d.join("EMPTY-X.parquet"), b"").unwrap(),
        "file is empty",
    );
    check_bad_file(
        "TEXT-X.parquet",
        |d| std::fs::write(d.join("TEXT-X.parquet"), b"open_time,open\n1,2\n").unwrap(),
        "not a readable parquet file",
    );
    let half = valid_bytes[..valid_bytes.len() / 2].to_vec();
    check_bad_file(
        "TRUNCATED-X.parquet",
        |d| std::fs::write(d.join("TRUNCATED-X.parquet"), &half).unwrap(),
        "not a readable parquet file",
    );
    check_bad_file(
        "NOCLOSE-X.parquet",
        |d| {
            write_columns(
                &d.join("NOCLOSE-X.parquet"),
                vec![
                    ("open_time", times()),
                    ("open", f64s(vec![1.0])),
                    ("high", f64s(vec![1.0])),
                    ("low", f64s(vec![1.0])),
                    ("volume", f64s(vec![1.0])),
                ],
            )
        },
        "missing column `close`",
    );
    check_bad_file(
        "TEXTCLOSE-X.parquet",
        |d| {
            write_columns(
                &d.join("TEXTCLOSE-X.parquet"),
                vec![
                    ("open_time", times()),
                    ("open", f64s(vec![1.0])),
                    ("high", f64s(vec![1.0])),
                    ("low", f64s(vec![1.0])),
                    ("close", Arc::new(StringArray::from(vec!["1.0"]))),
                    ("volume", f64s(vec![1.0])),
                ],
            )
        },
        "column `close` has type Utf8; expected float32 or float64",
    );
    check_bad_file(
        "STRTIME-X.parquet",
        |d| {
            write_columns(
                &d.join("STRTIME-X.parquet"),
                vec![
                    ("open_time", Arc::new(StringArray::from(vec!["2021-03-01"]))),
                    ("open", f64s(vec![1.0])),
                    ("high", f64s(vec![1.0])),
                    ("low", f64s(vec![1.0])),
                    ("close", f64s(vec![1.0])),
                    ("volume", f64s(vec![1.0])),
                ],
            )
        },
        "column `open_time` has type Utf8",
    );
    check_bad_file(
        "NOROWS-X.parquet",
        |d| {
            let empty = || -> ArrayRef { Arc::new(Float64Array::from(Vec::<f64>::new())) };
            write_columns(
                &d.join("NOROWS-X.parquet"),
                vec![
                    ("open_time", Arc::new(Int64Array::from(Vec::<i64>::new()))),
                    ("open", empty()),
                    ("high", empty()),
                    ("low", empty()),
                    ("close", empty()),
                    ("volume", empty()),
                ],
            )
        },
        "holds no rows",
    );
    check_bad_file(
        "BTC USDT.parquet",
        |d| std::fs::write(d.join("BTC USDT.parquet"), &valid_bytes).unwrap(),
        "not a usable symbol",
    );
}

/// Makes a FIFO (named pipe) at `path`.
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system node.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Keeps a test that hangs in `open()` on a FIFO from hanging for good: after a generous
/// deadline, it keeps opening every FIFO in `dir` for writing without blocking (which
/// succeeds only while a reader is stuck in its open, and lets that open return), so the
/// test fails on its assertions instead. Stops when dropped.
struct FifoWatchdog(Arc<std::sync::atomic::AtomicBool>);

impl FifoWatchdog {
    fn start(dir: &Path) -> FifoWatchdog {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, dir) = (done.clone(), dir.to_owned());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if std::time::Instant::now() < deadline {
                    continue;
                }
                for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_fifo()) {
                        let _ = std::fs::OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NONBLOCK)
                            .open(entry.path());
                    }
                }
            }
        });
        FifoWatchdog(done)
    }
}

impl Drop for FifoWatchdog {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A FIFO, a directory or a symlink to a character device named like a dataset file is
/// refused by its type before it is opened, naming it (a FIFO used to hang `open()` for
/// good; `/dev/urandom` behind a link was "file is empty"); `--skip-bad-files` skips it.
#[test]
fn non_regular_files_are_refused_by_type_naming_them() {
    type Make = fn(&Path);
    let cases: [(&str, Make, &str); 5] = [
        (
            "PIPE-X.parquet",
            |d| mkfifo(&d.join("PIPE-X.parquet")),
            "not a regular file: a FIFO (named pipe)",
        ),
        (
            "PIPEUSDT-1m-2024-03.csv",
            |d| mkfifo(&d.join("PIPEUSDT-1m-2024-03.csv")),
            "not a regular file: a FIFO (named pipe)",
        ),
        (
            "PIPEUSDT-1m-2024-03.zip",
            |d| mkfifo(&d.join("PIPEUSDT-1m-2024-03.zip")),
            "not a regular file: a FIFO (named pipe)",
        ),
        (
            "RANDOM-X.parquet",
            |d| std::os::unix::fs::symlink("/dev/urandom", d.join("RANDOM-X.parquet")).unwrap(),
            "not a regular file: a symbolic link to /dev/urandom, which is a character device",
        ),
        (
            "DIR-X.parquet",
            |d| std::fs::create_dir(d.join("DIR-X.parquet")).unwrap(),
            "not a regular file: a directory",
        ),
    ];
    for (name, make, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let good = ohlcv_file(dir.path(), "GOOD-X", &[0, 1, 2, 3], 100.0);
        make(dir.path());
        let _watchdog = FifoWatchdog::start(dir.path());
        assert_bad_file_refused_then_skipped(dir.path(), &good, name, expected);
    }
}

#[test]
fn a_corrupt_page_is_an_error_naming_the_file_or_a_skip_after_its_good_rows() {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    use parquet::file::metadata::PageIndexPolicy;
    let dir = tempfile::tempdir().unwrap();
    let spec = pair("BNB-USDT");
    let rows: Vec<Kline> = klines(&spec, &market(20_000, 0.0)).collect();
    let path = dir.path().join("BNB-USDT.parquet");
    let options = WriteOptions {
        data_page_size: 4 * 1024,
        dictionary: false,
    };
    write_klines(&path, &FileLayout::KAGGLE, &options, rows.clone()).unwrap();
    let good = ohlcv_file(dir.path(), "GOOD-X", &[0, 1, 2], 100.0);

    // Zero the header of a page in the middle of the `close` column chunk (the file
    // footer stays intact, so the damage is only found while streaming).
    let file = std::fs::File::open(&path).unwrap();
    let meta = ArrowReaderMetadata::load(
        &file,
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
    )
    .unwrap();
    let close = meta.schema().index_of("close").unwrap();
    let pages = meta
        .metadata()
        .page_index()
        .unwrap()
        .page_locations(0, close)
        .unwrap()
        .to_vec();
    assert!(pages.len() > 10);
    let victim = &pages[pages.len() / 2];
    let mut bytes = std::fs::read(&path).unwrap();
    let at = victim.offset as usize;
    bytes[at..at + 16].fill(0);
    std::fs::write(&path, &bytes).unwrap();
    let rows_before_victim = victim.first_row_index as usize;

    let mut source = ReplaySource::open(plain(dir.path())).unwrap();
    let clock = VirtualClock::new(NOW);
    let (_t, stop) = shutdown::channel();
    let mut sent = Vec::new();
    let err = source.run(&clock, &stop, &mut |c| {
        sent.push(c);
        true
    });
    let text = err.unwrap_err().to_string();
    assert!(
        text.contains("BNB-USDT.parquet") && text.contains("cannot decode rows"),
        "{text}"
    );

    let opts = ReplayOptions {
        skip_bad_files: true,
        ..plain(dir.path())
    };
    let (out, stats) = replay_all(opts).unwrap();
    assert_eq!(stats.bad_files(), 1);
    let from_bad: Vec<Candle> = out
        .iter()
        .filter(|c| c.symbol == "BNB-USDT")
        .cloned()
        .collect();
    let want: Vec<Candle> = rows
        .iter()
        .map(|k| expected("BNB-USDT", k, &FileLayout::KAGGLE))
        .collect();
    // Whatever came out of the damaged file is an exact prefix of it, up to the damage.
    assert!(from_bad.len() <= rows_before_victim);
    assert_f32_candles(&from_bad, &want[..from_bad.len()], "damaged file prefix");
    let from_good: Vec<Candle> = out.into_iter().filter(|c| c.symbol == "GOOD-X").collect();
    assert_candles(&from_good, &good, "good file");
}

#[test]
fn a_missing_or_empty_dataset_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = ReplaySource::open(plain(&dir.path().join("nope")))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("dataset folder") && err.contains("nope"),
        "{err}"
    );
    std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
    let err = ReplaySource::open(plain(dir.path()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no *.parquet, *.csv or *.zip files"), "{err}");
    std::fs::write(dir.path().join("JUNK-X.parquet"), "x").unwrap();
    let opts = ReplayOptions {
        skip_bad_files: true,
        ..plain(dir.path())
    };
    let err = ReplaySource::open(opts).err().unwrap().to_string();
    assert!(
        err.contains("every *.parquet, *.csv and *.zip file") && err.contains("1 skipped"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// the Kaggle layout: pages larger than the budget are replayed from the replay cache

/// A page budget far below one Kaggle-layout file's pages (the default is 64 MiB).
const SMALL_BUDGET: u64 = 256 * 1024;

/// Writes a Kaggle-layout file as pyarrow does (one row group, dictionary encoding, 1 MiB
/// pages: each column is one page holding every row) and returns the candles it must replay
/// as.
fn kaggle_file(dir: &Path, symbol: &str, offset_minutes: i64, minutes: u32) -> Vec<Candle> {
    let market = MarketOptions {
        start_ms: T0 + offset_minutes * MINUTE_MS,
        ..market(minutes, 1.0 / 500.0)
    };
    let rows: Vec<Kline> = klines(&pair(symbol), &market).collect();
    let path = dir.join(format!("{symbol}.parquet"));
    write_klines(
        &path,
        &FileLayout::KAGGLE,
        &WriteOptions::default(),
        rows.clone(),
    )
    .unwrap();
    rows.iter()
        .map(|k| expected(symbol, k, &FileLayout::KAGGLE))
        .collect()
}

/// Three overlapping Kaggle-layout files; all their candles in replay order.
fn kaggle_folder(dir: &Path) -> Vec<Candle> {
    let mut all = kaggle_file(dir, "BTC-USDT", 0, 20_000);
    all.extend(kaggle_file(dir, "ETH-USDT", 5_000, 20_000));
    all.extend(kaggle_file(dir, "SOL-USDT", 100, 15_000));
    all.sort_by(|a, b| (a.open_time, &a.symbol).cmp(&(b.open_time, &b.symbol)));
    all
}

/// The replay of `dir` with [`SMALL_BUDGET`], its cache in `cache` (default: the dataset's).
fn small_budget(dir: &Path, cache: Option<&Path>) -> ReplayOptions {
    ReplayOptions {
        page_budget: SMALL_BUDGET,
        cache_dir: cache.map(Path::to_owned),
        ..plain(dir)
    }
}

/// Per column chunk of the file's single row group: (data pages, largest data page,
/// uncompressed bytes of all its pages, has a dictionary), from its footer and offset index.
fn page_layout(path: &Path) -> Vec<(usize, i32, i64, bool)> {
    use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    use parquet::file::metadata::PageIndexPolicy;
    let meta = ArrowReaderMetadata::load(
        &std::fs::File::open(path).unwrap(),
        ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
    )
    .unwrap();
    let metadata = meta.metadata();
    assert_eq!(metadata.num_row_groups(), 1, "{}", path.display());
    let index = metadata.page_index().unwrap();
    metadata
        .row_group(0)
        .columns()
        .iter()
        .enumerate()
        .map(|(c, column)| {
            let pages = index.page_locations(0, c).unwrap();
            let largest = pages.iter().map(|p| p.compressed_page_size).max().unwrap();
            let dictionary = column.dictionary_page_offset().is_some();
            (pages.len(), largest, column.uncompressed_size(), dictionary)
        })
        .collect()
}

/// Inode and modification time of each file in `dir`, by name.
fn snapshot(dir: &Path) -> HashMap<String, (u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, (meta.ino(), meta.modified().unwrap()))
        })
        .collect()
}

#[test]
fn pages_larger_than_the_budget_are_replayed_from_small_page_copies_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let want = kaggle_folder(dir.path());
    // The layout under test: one row group, a dictionary and one data page per column,
    // and each file's pages together larger than the whole budget.
    for symbol in ["BTC-USDT", "ETH-USDT", "SOL-USDT"] {
        let layout = page_layout(&dir.path().join(format!("{symbol}.parquet")));
        assert!(layout
            .iter()
            .all(|(pages, _, _, dict)| *pages == 1 && *dict));
        let bytes: i64 = layout.iter().map(|(_, _, bytes, _)| bytes).sum();
        assert!(bytes > SMALL_BUDGET as i64, "{symbol}: {bytes} B of pages");
    }
    let cache = dir.path().join(DEFAULT_DIR_NAME);

    // Within the default budget the three files are read directly; no cache is made.
    let (direct, stats) = replay_all(plain(dir.path())).unwrap();
    assert_eq!(stats.cache().direct(), 3);
    assert_eq!(stats.cache().converted() + stats.cache().reused(), 0);
    assert!(!cache.exists());
    assert_f32_candles(&direct, &want, "read directly");

    // With a small budget each file gets a small-page copy, made while opening.
    let (source, logs) = capture_logs_at(tracing::Level::INFO, || {
        ReplaySource::open(small_budget(dir.path(), None)).unwrap()
    });
    let mut source = source;
    let stats = source.stats();
    assert_eq!(
        (
            stats.cache().direct(),
            stats.cache().converted(),
            stats.cache().reused()
        ),
        (0, 3, 0)
    );
    assert!(logs.contains("3 of 3 files have pages too large"), "{logs}");
    assert!(logs.contains("made 3 copies"), "{logs}");
    let mut names: Vec<String> = snapshot(&cache).into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["BTC-USDT.parquet", "ETH-USDT.parquet", "SOL-USDT.parquet"]
    );
    for name in &names {
        for (pages, largest, _, dict) in page_layout(&cache.join(name)) {
            assert!(
                pages > 1 && !dict,
                "{name}: {pages} pages, dictionary {dict}"
            );
            assert!(largest <= 16 * 1024, "{name}: a page of {largest} B");
        }
    }

    // The replay streams the copies: with the sources gone, every candle still comes out,
    // exactly as read directly.
    for name in &names {
        std::fs::write(dir.path().join(name), b"overwritten").unwrap();
    }
    let (_trigger, stop) = shutdown::channel();
    let mut cached = Vec::new();
    let end = source
        .run(&VirtualClock::new(NOW), &stop, &mut |c| {
            cached.push(c);
            true
        })
        .unwrap();
    assert_eq!(end, ReplayEnd::Finished);
    assert_candles(&cached, &direct, "from the copies");
    assert_eq!(stats.bad_rows(), 0);
}

#[test]
fn the_cache_is_reused_redone_when_a_source_changes_and_a_torn_copy_is_never_used() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let cache = dir.path().join("cache");
    let mut want = kaggle_folder(&data);
    let counts = |stats: &ReplayStats| {
        let c = stats.cache();
        (c.converted(), c.reused(), c.direct())
    };

    let (out, stats) = replay_all(small_budget(&data, Some(&cache))).unwrap();
    assert_eq!(counts(&stats), (3, 0, 0));
    assert_f32_candles(&out, &want, "first open");
    assert!(
        !data.join(DEFAULT_DIR_NAME).exists(),
        "--replay-cache moves the cache"
    );
    let made = snapshot(&cache);

    // Second open: every copy reused as it is.
    let (again, stats) = replay_all(small_budget(&data, Some(&cache))).unwrap();
    assert_eq!(counts(&stats), (0, 3, 0));
    assert_eq!(snapshot(&cache), made, "no copy rewritten");
    assert_candles(&again, &out, "second open");

    // A source that changes gets a new copy; the others are kept.
    std::fs::remove_file(data.join("ETH-USDT.parquet")).unwrap();
    want.retain(|c| c.symbol != "ETH-USDT");
    want.extend(kaggle_file(&data, "ETH-USDT", 7_000, 12_000));
    want.sort_by(|a, b| (a.open_time, &a.symbol).cmp(&(b.open_time, &b.symbol)));
    let (out, stats) = replay_all(small_budget(&data, Some(&cache))).unwrap();
    assert_eq!(counts(&stats), (1, 2, 0));
    assert_f32_candles(&out, &want, "after ETH changed");
    let now = snapshot(&cache);
    assert_ne!(now["ETH-USDT.parquet"], made["ETH-USDT.parquet"]);
    assert_eq!(now["BTC-USDT.parquet"], made["BTC-USDT.parquet"]);

    // A crash: SOL's copy torn at its final name, BTC's never renamed into place (only a
    // half-written `.partial` left). Both are made again, the leftover is removed.
    let sol = cache.join("SOL-USDT.parquet");
    let bytes = std::fs::read(&sol).unwrap();
    std::fs::write(&sol, &bytes[..bytes.len() / 2]).unwrap();
    let btc = cache.join("BTC-USDT.parquet");
    let half = std::fs::read(&btc).unwrap();
    std::fs::remove_file(&btc).unwrap();
    std::fs::write(
        cache.join("BTC-USDT.parquet.partial"),
        &half[..half.len() / 3],
    )
    .unwrap();
    let (out, stats) = replay_all(small_budget(&data, Some(&cache))).unwrap();
    assert_eq!(counts(&stats), (2, 1, 0));
    assert_f32_candles(&out, &want, "after a crash");
    let mut names: Vec<String> = snapshot(&cache).into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["BTC-USDT.parquet", "ETH-USDT.parquet", "SOL-USDT.parquet"]
    );
}

#[test]
fn a_stop_while_filling_the_cache_keeps_what_is_done_and_a_bad_cache_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let want = kaggle_folder(dir.path());
    let (trigger, stop) = shutdown::channel();
    trigger.fire();
    let err = ReplaySource::open_until(small_budget(dir.path(), None), &stop)
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            ReplayError::Cache(CacheError::Interrupted { done: 0, total: 3 })
        ),
        "{err}"
    );
    let (out, stats) = replay_all(small_budget(dir.path(), None)).unwrap();
    assert_eq!(stats.cache().converted(), 3);
    assert_f32_candles(&out, &want, "after the stop");

    // A cache folder that cannot be made (here: below a plain file) is an error naming it
    // and the flag.
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, b"x").unwrap();
    let err = ReplaySource::open(small_budget(dir.path(), Some(&file.join("cache"))))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("not-a-folder/cache") && err.contains("--replay-cache"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// scale: ~1000 single-row-group files in one merge

const SCALE_FILES: u32 = 1000;
const SCALE_MINUTES: u32 = 1440;
const SCALE_DIR_ENV: &str = "CANDLEPIPE_SCALE_DIR";

/// Generates 1000 one-day files and replays them in one merge in a child process (so
/// the peak RSS measured is the replay's, not other tests'), then checks what it reported.
#[test]
fn a_thousand_files_merge_in_order_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    // Simulating 1000 markets is slow in a debug build: 20 distinct series, each written
    // under 50 names (the merge and the memory do not care that prices repeat).
    let series: Vec<Vec<Kline>> = (0..20)
        .map(|i| {
            klines(
                &PairSpec::synthetic(i),
                &market(SCALE_MINUTES, 1.0 / 2000.0),
            )
            .collect()
        })
        .collect();
    let started = std::time::Instant::now();
    let mut total = 0;
    for i in 0..SCALE_FILES as usize {
        let path = dir.path().join(format!("SYN{i:04}-USDT.parquet"));
        let rows = series[i % series.len()].iter().copied();
        total += write_klines(&path, &FileLayout::KAGGLE, &WriteOptions::default(), rows).unwrap();
    }
    println!("wrote {SCALE_FILES} files in {:?}", started.elapsed());

    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "scale_child_replays_the_folder",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCALE_DIR_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = stdout
        .lines()
        .find_map(|l| l.find("SCALE ").map(|at| &l[at..]))
        .unwrap_or_else(|| panic!("no report:\n{stdout}"));
    println!("{report}");
    let field = |name: &str| -> u64 {
        report
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(field("files"), u64::from(SCALE_FILES));
    assert_eq!(field("candles"), total);
    assert_eq!(field("symbols"), u64::from(SCALE_FILES));
    let peak_mib = field("peak_rss_kib") / 1024;
    assert!(
        peak_mib < 256,
        "peak RSS {peak_mib} MiB for {SCALE_FILES} open files"
    );
}

/// The measuring half of the test above; run by it in a fresh process.
#[test]
#[ignore = "run in its own process by a_thousand_files_merge_in_order_within_bounded_memory"]
fn scale_child_replays_the_folder() {
    let dir = PathBuf::from(std::env::var(SCALE_DIR_ENV).expect("set by the parent test"));
    let started = std::time::Instant::now();
    let mut source = ReplaySource::open(plain(&dir)).unwrap();
    let files = source.symbols().len();
    let clock = VirtualClock::new(NOW);
    let (_t, stop) = shutdown::channel();
    let mut count = 0u64;
    let mut last: Option<(i64, String)> = None;
    let mut per_symbol: HashMap<String, i64> = HashMap::new();
    let end = source
        .run(&clock, &stop, &mut |c| {
            let key = (c.open_time, c.symbol.clone());
            if let Some(prev) = &last {
                assert!(*prev < key, "out of order: {prev:?} then {key:?}");
            }
            if let Some(t) = per_symbol.insert(c.symbol.clone(), c.open_time) {
                assert!(t < c.open_time);
            }
            last = Some(key);
            count += 1;
            true
        })
        .unwrap();
    assert_eq!(end, ReplayEnd::Finished);
    // Informational only (no timing assertions): the reader's own rate, no sink.
    let rate = count as f64 / started.elapsed().as_secs_f64();
    println!(
        "SCALE files={files} candles={count} symbols={} peak_rss_kib={} candles_per_s={rate:.0}",
        per_symbol.len(),
        peak_rss_kib()
    );
}

/// VmHWM (peak resident set size) of this process, KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
