//! Writing candles to parquet in the Kaggle "binance-full-history" layout, and in the
//! variants that converted or hand-made files use.
//!
//! The replay reader promises to read the real Kaggle files unchanged, so the bundled files
//! are written the way `pandas.DataFrame.to_parquet` (pyarrow) wrote those: float32 prices
//! and volumes, uint16 trade counts, the `open_time` index as a UTC nanosecond timestamp
//! column appended last, the `pandas` key-value metadata naming it as the index (so
//! `pd.read_parquet` gives back a `DatetimeIndex` named `open_time`), snappy compression,
//! dictionary encoding, ~1 MiB data pages and one row group per file.
//!
//! The variants ([`FileLayout::float64`], [`FileLayout::int_millis`],
//! [`FileLayout::signed_trades`], [`FileLayout::ohlcv_only`]) exist so tests can prove the
//! reader accepts every shape the design allows.

use crate::market::Kline;
use arrow_array::{
    ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, TimestampNanosecondArray,
    UInt16Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Rows per record batch handed to the parquet writer.
const WRITE_BATCH_ROWS: usize = 8192;

/// Why a file could not be written.
#[derive(Debug, Error)]
pub enum WriteError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{path}: {source}")]
    Arrow {
        path: PathBuf,
        source: arrow_schema::ArrowError,
    },
}

/// Width of the price and volume columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatWidth {
    /// float32, as in the Kaggle files.
    F32,
    /// float64, as pandas writes after most conversions.
    F64,
}

/// How `open_time` is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeColumn {
    /// `datetime64[ns, UTC]` as the pandas index (a column appended last + pandas metadata).
    PandasIndexNs,
    /// A plain int64 column of Unix milliseconds (first column, no pandas index).
    IntMillis,
}

/// Integer type of `number_of_trades`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TradesType {
    /// uint16, as in the Kaggle files.
    U16,
    /// int64, as pandas writes after a CSV conversion.
    I64,
}

/// The physical shape of one candle file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLayout {
    pub floats: FloatWidth,
    pub time: TimeColumn,
    pub trades: TradesType,
    /// Only open_time + open, high, low, close, volume.
    pub ohlcv_only: bool,
}

impl FileLayout {
    /// Exactly the Kaggle binance-full-history schema.
    pub const KAGGLE: FileLayout = FileLayout {
        floats: FloatWidth::F32,
        time: TimeColumn::PandasIndexNs,
        trades: TradesType::U16,
        ohlcv_only: false,
    };

    /// Kaggle schema with float64 prices and volumes.
    pub fn float64() -> Self {
        FileLayout {
            floats: FloatWidth::F64,
            ..Self::KAGGLE
        }
    }

    /// Kaggle columns, but `open_time` an int64 millisecond column and no pandas index.
    pub fn int_millis() -> Self {
        FileLayout {
            time: TimeColumn::IntMillis,
            ..Self::KAGGLE
        }
    }

    /// Kaggle schema with int64 trade counts.
    pub fn signed_trades() -> Self {
        FileLayout {
            trades: TradesType::I64,
            ..Self::KAGGLE
        }
    }

    /// open_time index + float32 OHLCV only.
    pub fn ohlcv_only() -> Self {
        FileLayout {
            ohlcv_only: true,
            ..Self::KAGGLE
        }
    }

    /// The layout named on the command line: `kaggle`, `float64`, `int-ms`,
    /// `signed-trades`, `ohlcv-only`.
    pub fn named(name: &str) -> Option<Self> {
        Some(match name {
            "kaggle" => Self::KAGGLE,
            "float64" => Self::float64(),
            "int-ms" => Self::int_millis(),
            "signed-trades" => Self::signed_trades(),
            "ohlcv-only" => Self::ohlcv_only(),
            _ => return None,
        })
    }

    /// The arrow schema of this layout, with the `pandas` metadata pandas would write.
    pub fn schema(&self) -> SchemaRef {
        let float = match self.floats {
            FloatWidth::F32 => DataType::Float32,
            FloatWidth::F64 => DataType::Float64,
        };
        let time_field = match self.time {
            TimeColumn::PandasIndexNs => Field::new(
                "open_time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                true,
            ),
            TimeColumn::IntMillis => Field::new("open_time", DataType::Int64, true),
        };
        let mut fields = Vec::new();
        if self.time == TimeColumn::IntMillis {
            fields.push(time_field.clone());
        }
        for name in ["open", "high", "low", "close", "volume"] {
            fields.push(Field::new(name, float.clone(), true));
        }
        if !self.ohlcv_only {
            let trades = match self.trades {
                TradesType::U16 => DataType::UInt16,
                TradesType::I64 => DataType::Int64,
            };
            fields.push(Field::new("quote_asset_volume", float.clone(), true));
            fields.push(Field::new("number_of_trades", trades, true));
            fields.push(Field::new(
                "taker_buy_base_asset_volume",
                float.clone(),
                true,
            ));
            fields.push(Field::new("taker_buy_quote_asset_volume", float, true));
        }
        if self.time == TimeColumn::PandasIndexNs {
            // pyarrow appends index columns after the data columns.
            fields.push(time_field);
        }
        let pandas = pandas_metadata(&fields, self.time == TimeColumn::PandasIndexNs);
        Arc::new(Schema::new(fields).with_metadata([("pandas".to_owned(), pandas)]))
    }

    fn batch(
        &self,
        schema: &SchemaRef,
        rows: &[Kline],
    ) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let float = |get: fn(&Kline) -> f32| -> ArrayRef {
            match self.floats {
                FloatWidth::F32 => Arc::new(rows.iter().map(get).collect::<Float32Array>()),
                // Widen through the shortest decimal (45134.11f32 -> 45134.11f64, ties to
                // the even digit as numpy prints them), the way a CSV round trip produces
                // float64 files.
                FloatWidth::F64 => Arc::new(
                    rows.iter()
                        .map(|k| {
                            let mut text = ryu::Buffer::new();
                            text.format_finite(get(k))
                                .parse::<f64>()
                                .expect("ryu prints a number")
                        })
                        .collect::<Float64Array>(),
                ),
            }
        };
        let columns: Vec<ArrayRef> = schema
            .fields()
            .iter()
            .map(|f| match f.name().as_str() {
                "open_time" => match self.time {
                    TimeColumn::PandasIndexNs => Arc::new(
                        TimestampNanosecondArray::from_iter_values(
                            rows.iter().map(|k| k.open_time_ms * 1_000_000),
                        )
                        .with_timezone("UTC"),
                    ) as ArrayRef,
                    TimeColumn::IntMillis => {
                        Arc::new(rows.iter().map(|k| k.open_time_ms).collect::<Int64Array>())
                    }
                },
                "open" => float(|k| k.open),
                "high" => float(|k| k.high),
                "low" => float(|k| k.low),
                "close" => float(|k| k.close),
                "volume" => float(|k| k.volume),
                "quote_asset_volume" => float(|k| k.quote_asset_volume),
                "taker_buy_base_asset_volume" => float(|k| k.taker_buy_base_asset_volume),
                "taker_buy_quote_asset_volume" => float(|k| k.taker_buy_quote_asset_volume),
                "number_of_trades" => match self.trades {
                    TradesType::U16 => Arc::new(
                        rows.iter()
                            .map(|k| k.number_of_trades)
                            .collect::<UInt16Array>(),
                    ) as ArrayRef,
                    TradesType::I64 => Arc::new(
                        rows.iter()
                            .map(|k| i64::from(k.number_of_trades))
                            .collect::<Int64Array>(),
                    ),
                },
                other => unreachable!("layout has no column {other}"),
            })
            .collect();
        RecordBatch::try_new(schema.clone(), columns)
    }
}

/// Parquet writer settings. The default mimics pandas/pyarrow: snappy, dictionary encoding,
/// ~1 MiB data pages, row-group statistics, one row group per file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteOptions {
    /// Target encoded size of a data page, bytes.
    pub data_page_size: usize,
    /// Dictionary-encode columns (pyarrow does, with dictionary pages of up to 1 MiB).
    pub dictionary: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            data_page_size: 1024 * 1024,
            dictionary: true,
        }
    }
}

impl WriteOptions {
    fn properties(&self) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(self.dictionary)
            .set_data_page_size_limit(self.data_page_size)
            .set_dictionary_page_size_limit(1024 * 1024)
            // pyarrow limits pages by bytes only; parquet-rs also caps rows (20k) by default.
            .set_data_page_row_count_limit(usize::MAX)
            .set_max_row_group_row_count(None)
            .set_max_row_group_bytes(None)
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_created_by(format!(
                "candlepipe-datagen {} (parquet-rs)",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
    }
}

/// Writes `klines` (in open_time order) to `path` as one single-row-group file. Returns the
/// number of rows written. Streams: holds one 8k-row batch plus the encoded row group.
pub fn write_klines(
    path: &Path,
    layout: &FileLayout,
    options: &WriteOptions,
    klines: impl IntoIterator<Item = Kline>,
) -> Result<u64, WriteError> {
    let parquet_err = |source| WriteError::Parquet {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(|source| WriteError::Io {
        path: path.to_owned(),
        source,
    })?;
    let schema = layout.schema();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(options.properties()))
        .map_err(parquet_err)?;
    // pyarrow stores the pandas metadata both inside `ARROW:schema` (parquet-rs does that
    // from the schema) and as a file key-value entry of its own (done here).
    if let Some(pandas) = schema.metadata().get("pandas") {
        writer.append_key_value_metadata(KeyValue::new("pandas".to_owned(), pandas.clone()));
    }
    let mut rows = 0u64;
    let mut buffer = Vec::with_capacity(WRITE_BATCH_ROWS);
    let mut klines = klines.into_iter().peekable();
    while klines.peek().is_some() {
        buffer.clear();
        buffer.extend(klines.by_ref().take(WRITE_BATCH_ROWS));
        let batch = layout
            .batch(&schema, &buffer)
            .map_err(|source| WriteError::Arrow {
                path: path.to_owned(),
                source,
            })?;
        writer.write(&batch).map_err(parquet_err)?;
        rows += buffer.len() as u64;
    }
    writer.close().map_err(parquet_err)?;
    Ok(rows)
}

/// The `pandas` key-value metadata that `DataFrame.to_parquet` writes, for these fields,
/// with pandas' key order (serde_json's map would sort the keys).
fn pandas_metadata(fields: &[Field], time_is_index: bool) -> String {
    let columns: Vec<String> = fields
        .iter()
        .map(|f| {
            let (pandas_type, numpy_type, metadata) = match f.data_type() {
                DataType::Float32 => ("float32", "float32", "null"),
                DataType::Float64 => ("float64", "float64", "null"),
                DataType::UInt16 => ("uint16", "uint16", "null"),
                DataType::Int64 => ("int64", "int64", "null"),
                DataType::Timestamp(_, _) => {
                    ("datetimetz", "datetime64[ns]", r#"{"timezone": "UTC"}"#)
                }
                other => unreachable!("no pandas type for {other}"),
            };
            let name = serde_json::Value::from(f.name().as_str());
            format!(
                r#"{{"name": {name}, "field_name": {name}, "pandas_type": "{pandas_type}", "numpy_type": "{numpy_type}", "metadata": {metadata}}}"#
            )
        })
        .collect();
    let index_columns = if time_is_index {
        r#"["open_time"]"#
    } else {
        "[]"
    };
    format!(
        concat!(
            r#"{{"index_columns": {}, "column_indexes": [{{"name": null, "field_name": null, "#,
            r#""pandas_type": "unicode", "numpy_type": "object", "metadata": {{"encoding": "UTF-8"}}}}], "#,
            r#""columns": [{}], "attributes": {{}}, "#,
            r#""creator": {{"library": "candlepipe-datagen", "version": "{}"}}, "pandas_version": "2.2.3"}}"#
        ),
        index_columns,
        columns.join(", "),
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::{klines, MarketOptions, PairSpec};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn sample(minutes: u32) -> Vec<Kline> {
        let spec = PairSpec::bundled_named("BTC-USDT").unwrap();
        klines(
            &spec,
            &MarketOptions {
                minutes,
                ..MarketOptions::default()
            },
        )
        .collect()
    }

    #[test]
    fn kaggle_layout_has_the_kaggle_schema_and_one_row_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BTC-USDT.parquet");
        let rows = sample(3000);
        // Small pages, so the file has many pages but still one row group.
        let options = WriteOptions {
            data_page_size: 4096,
            ..WriteOptions::default()
        };
        assert_eq!(
            write_klines(&path, &FileLayout::KAGGLE, &options, rows.clone()).unwrap(),
            rows.len() as u64
        );

        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        assert_eq!(builder.metadata().num_row_groups(), 1);
        let schema = builder.schema().clone();
        let names: Vec<_> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "open",
                "high",
                "low",
                "close",
                "volume",
                "quote_asset_volume",
                "number_of_trades",
                "taker_buy_base_asset_volume",
                "taker_buy_quote_asset_volume",
                "open_time"
            ]
        );
        assert_eq!(schema.field(6).data_type(), &DataType::UInt16);
        assert_eq!(schema.field(0).data_type(), &DataType::Float32);
        assert_eq!(
            schema.field(9).data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        );
        let file_kv = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        let pandas_kv = file_kv.iter().find(|kv| kv.key == "pandas").unwrap();
        assert_eq!(pandas_kv.value.as_ref(), schema.metadata().get("pandas"));
        let pandas: serde_json::Value =
            serde_json::from_str(schema.metadata().get("pandas").unwrap()).unwrap();
        assert_eq!(pandas["index_columns"], serde_json::json!(["open_time"]));

        let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        let total: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(total, rows.len());
        let first = &batches[0];
        let open = first
            .column(0)
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        let time = first
            .column(9)
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        assert_eq!(open.value(0), rows[0].open);
        assert_eq!(time.value(1), rows[1].open_time_ms * 1_000_000);
    }

    #[test]
    fn variants_change_only_what_they_name() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (FileLayout::float64(), "high", DataType::Float64, 10),
            (FileLayout::int_millis(), "open_time", DataType::Int64, 10),
            (
                FileLayout::signed_trades(),
                "number_of_trades",
                DataType::Int64,
                10,
            ),
            (FileLayout::ohlcv_only(), "volume", DataType::Float32, 6),
        ];
        for (i, (layout, column, expected, width)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("V{i}-USDT.parquet"));
            write_klines(&path, &layout, &WriteOptions::default(), sample(100)).unwrap();
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
            let schema = builder.schema();
            assert_eq!(schema.fields().len(), width, "{layout:?}");
            assert_eq!(
                schema.field_with_name(column).unwrap().data_type(),
                &expected
            );
        }
        let layout = FileLayout::named("int-ms").unwrap();
        assert_eq!(layout, FileLayout::int_millis());
        assert!(FileLayout::named("csv").is_none());
    }

    #[test]
    fn float64_widening_keeps_the_shortest_decimal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BTC-USDT.parquet");
        write_klines(
            &path,
            &FileLayout::float64(),
            &WriteOptions::default(),
            sample(1),
        )
        .unwrap();
        let mut reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batch = reader.next().unwrap().unwrap();
        let open = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(open.value(0), 45134.11);
    }
}
