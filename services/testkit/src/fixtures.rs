//! Test data as candles, read with a deliberately plain parquet reader (whole file, column
//! by column) that shares no code with the producer's streaming reader, so tests compare the
//! pipeline against an independent reading of the same file.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int64Type, TimestampNanosecondType, UInt16Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use candlepipe_model::{Candle, Source};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::path::Path;

/// Every row of a Binance-format parquet file as closed replay candles (symbol = file stem).
/// float32 values are widened through their shortest decimal form, as the pipeline promises.
pub fn read_candles(path: &Path) -> Vec<Candle> {
    let symbol = path
        .file_stem()
        .and_then(|s| s.to_str())
        .expect("file stem")
        .to_owned();
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.expect("batch");
        let times = column_i64_ms(&batch, "open_time");
        let f = |name: &str| column_f64(&batch, name);
        let (open, high, low, close, volume) =
            (f("open"), f("high"), f("low"), f("close"), f("volume"));
        let qv = optional_f64(&batch, "quote_asset_volume");
        let tbb = optional_f64(&batch, "taker_buy_base_asset_volume");
        let tbq = optional_f64(&batch, "taker_buy_quote_asset_volume");
        let trades = optional_u64(&batch, "number_of_trades");
        for i in 0..batch.num_rows() {
            out.push(Candle {
                symbol: symbol.clone(),
                source: Source::Replay,
                open_time: times[i],
                open: open[i],
                high: high[i],
                low: low[i],
                close: close[i],
                volume: volume[i],
                quote_volume: qv.as_ref().map(|v| v[i]),
                trades: trades.as_ref().map(|v| v[i]),
                taker_buy_base: tbb.as_ref().map(|v| v[i]),
                taker_buy_quote: tbq.as_ref().map(|v| v[i]),
                closed: true,
                produced_at: None,
            });
        }
    }
    out
}

/// `x` as the f64 nearest to its shortest decimal representation (`45134.11f32` → `45134.11`),
/// with ryu's choice on exact ties, as numpy and pandas print them (`422430.125f32` →
/// `422430.12`; Rust's `Display` would say `.13`).
pub fn widen_f32(x: f32) -> f64 {
    ryu::Buffer::new()
        .format_finite(x)
        .parse()
        .expect("ryu output parses")
}

fn column_i64_ms(batch: &RecordBatch, name: &str) -> Vec<i64> {
    let col = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name} missing"));
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Nanosecond, _) => col
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .iter()
            .map(|ns| ns / 1_000_000)
            .collect(),
        DataType::Int64 => col.as_primitive::<Int64Type>().values().to_vec(),
        other => panic!("open_time has type {other}"),
    }
}

fn column_f64(batch: &RecordBatch, name: &str) -> Vec<f64> {
    optional_f64(batch, name).unwrap_or_else(|| panic!("column {name} missing"))
}

fn optional_f64(batch: &RecordBatch, name: &str) -> Option<Vec<f64>> {
    let col = batch.column_by_name(name)?;
    Some(match col.data_type() {
        DataType::Float32 => col
            .as_primitive::<Float32Type>()
            .values()
            .iter()
            .map(|v| widen_f32(*v))
            .collect(),
        DataType::Float64 => col.as_primitive::<Float64Type>().values().to_vec(),
        other => panic!("column {name} has type {other}"),
    })
}

fn optional_u64(batch: &RecordBatch, name: &str) -> Option<Vec<u64>> {
    let col = batch.column_by_name(name)?;
    assert_eq!(col.null_count(), 0, "{name} has nulls");
    Some(match col.data_type() {
        DataType::UInt16 => col
            .as_primitive::<UInt16Type>()
            .values()
            .iter()
            .map(|v| u64::from(*v))
            .collect(),
        DataType::Int64 => col
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|v| u64::try_from(*v).expect("non-negative trades"))
            .collect(),
        other => panic!("column {name} has type {other}"),
    })
}

/// Deterministic synthetic candles: `symbols` symbols (`SYN0-USDT`, …) × `minutes` minutes
/// from 2021-03-01, a multiplicative random walk from a tiny LCG (no rand dependency so the
/// sequence never changes under us), with consistent OHLC and every optional field set.
pub fn synthetic(symbols: usize, minutes: usize, seed: u64) -> Vec<Candle> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64) / ((1u64 << 53) as f64)
    };
    let start = 1_614_556_800_000i64;
    let mut prices: Vec<f64> = (0..symbols).map(|i| 10.0 * (i + 1) as f64).collect();
    let mut out = Vec::with_capacity(symbols * minutes);
    for m in 0..minutes {
        for (s, price) in prices.iter_mut().enumerate() {
            let open = *price;
            let close = open * (1.0 + (next() - 0.5) * 0.01);
            let high = open.max(close) * (1.0 + next() * 0.002);
            let low = open.min(close) * (1.0 - next() * 0.002);
            let volume = (next() * 100.0 * 1000.0).round() / 1000.0;
            *price = close;
            out.push(Candle {
                symbol: format!("SYN{s}-USDT"),
                source: Source::Replay,
                open_time: start + m as i64 * 60_000,
                open,
                high,
                low,
                close,
                volume,
                quote_volume: Some(volume * (high + low) / 2.0),
                trades: Some((next() * 500.0) as u64),
                taker_buy_base: Some(volume / 2.0),
                taker_buy_quote: Some(volume * (high + low) / 4.0),
                closed: true,
                produced_at: Some(1),
            });
        }
    }
    out
}
