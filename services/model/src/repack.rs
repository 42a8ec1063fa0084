//! Rewriting a parquet candle file with small pages, so that replaying ~1000 of them at once
//! fits in a small memory budget. Shared by the producer's replay cache (which does it
//! automatically, see `services/producer/src/source/cache.rs`) and `datagen --repack-from`
//! (which does it on request, into a folder of the user's choice).
//!
//! Why: the replay merge keeps every overlapping dataset file open at once, and the parquet
//! reader holds, per open file, one decompressed data page of every column plus each
//! column's dictionary. pandas (pyarrow) writes data pages and dictionary pages of up to
//! 1 MiB, so one open Kaggle "binance-full-history" file costs about 10 MB of memory and a
//! thousand of them about 10 GB. The same data in 8 KiB plain-encoded pages costs a small
//! fraction of that per open file.
//!
//! [`repack_file`] streams a file (one record batch at a time) into a copy with the same
//! columns, types, values and `pandas` metadata (so `pd.read_parquet` reads it unchanged)
//! but small pages and no dictionary encoding. Row groups are capped at
//! [`REPACK_ROW_GROUP_ROWS`] rows so that the writer's buffer stays small too. The copy has
//! an offset index, so a reader can tell from the footer alone how large its pages are.

use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::fs::File;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Rows per row group of a repacked file.
pub const REPACK_ROW_GROUP_ROWS: usize = 256 * 1024;
/// Default data page size of repacked files, bytes.
pub const REPACK_PAGE_SIZE: usize = 8 * 1024;
/// Rows per record batch while copying.
const COPY_BATCH_ROWS: usize = 64 * 1024;

/// How to repack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepackOptions {
    /// Target size of a data page, bytes.
    pub data_page_size: usize,
    /// Extra file key-value metadata written into the copy (e.g. what it was made from).
    pub key_values: Vec<(String, String)>,
    /// The `created_by` of the copy's footer.
    pub created_by: String,
}

impl Default for RepackOptions {
    fn default() -> Self {
        RepackOptions {
            data_page_size: REPACK_PAGE_SIZE,
            key_values: Vec::new(),
            created_by: format!(
                "candlepipe {} repack (parquet-rs)",
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
}

/// Why a file could not be repacked: the input could not be read, or the output written.
#[derive(Debug, Error)]
pub enum RepackError {
    #[error("{}: {cause}", path.display())]
    ReadIo {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {cause}", path.display())]
    Read { path: PathBuf, cause: ParquetError },
    #[error("{}: {cause}", path.display())]
    WriteIo {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {cause}", path.display())]
    Write { path: PathBuf, cause: ParquetError },
}

impl RepackError {
    /// True when the input file is at fault (unreadable, corrupt), false when the output is.
    pub fn is_input_error(&self) -> bool {
        matches!(self, RepackError::ReadIo { .. } | RepackError::Read { .. })
    }
}

/// Copies `input` to `output` with small pages (see the module docs), and syncs the copy to
/// disk before returning. Returns the rows copied.
pub fn repack_file(
    input: &Path,
    output: &Path,
    options: &RepackOptions,
) -> Result<u64, RepackError> {
    let read_err = |source| RepackError::Read {
        path: input.to_owned(),
        cause: source,
    };
    let write_err = |source| RepackError::Write {
        path: output.to_owned(),
        cause: source,
    };
    let file = File::open(input).map_err(|source| RepackError::ReadIo {
        path: input.to_owned(),
        cause: source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_err)?;
    let schema = builder.schema().clone();
    // File key-value entries (pandas writes its metadata there) are carried over as such;
    // `ARROW:schema` is rewritten by the writer.
    let mut key_values: Vec<KeyValue> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != "ARROW:schema")
        .filter(|kv| !options.key_values.iter().any(|(k, _)| *k == kv.key))
        .cloned()
        .collect();
    key_values.extend(
        options
            .key_values
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
    );
    let reader = builder
        .with_batch_size(COPY_BATCH_ROWS)
        .build()
        .map_err(read_err)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(false)
        .set_data_page_size_limit(options.data_page_size)
        .set_data_page_row_count_limit(usize::MAX)
        .set_max_row_group_row_count(Some(REPACK_ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(options.created_by.clone())
        .build();
    let out = File::create(output).map_err(|source| RepackError::WriteIo {
        path: output.to_owned(),
        cause: source,
    })?;
    let mut writer = ArrowWriter::try_new(out, schema, Some(properties)).map_err(write_err)?;
    for kv in key_values {
        writer.append_key_value_metadata(kv);
    }
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| read_err(e.into()))?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(write_err)?;
    }
    writer.finish().map_err(write_err)?;
    writer
        .inner()
        .sync_all()
        .map_err(|source| RepackError::WriteIo {
            path: output.to_owned(),
            cause: source,
        })?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{ArrayRef, Float32Array, RecordBatch, TimestampNanosecondArray, UInt16Array};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use parquet::file::properties::WriterProperties;
    use std::sync::Arc;

    const ROWS: usize = 300_000;

    /// A pyarrow-like input: one row group, dictionary encoding, 1 MiB pages, pandas
    /// metadata as a file key-value entry.
    fn write_input(path: &Path) -> u64 {
        let time = DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()));
        let schema = Arc::new(
            Schema::new(vec![
                Field::new("open", DataType::Float32, true),
                Field::new("number_of_trades", DataType::UInt16, true),
                Field::new("open_time", time, true),
            ])
            .with_metadata([(
                "pandas".to_owned(),
                r#"{"index_columns": ["open_time"]}"#.to_owned(),
            )]),
        );
        let properties = WriterProperties::builder()
            .set_data_page_size_limit(1024 * 1024)
            .set_data_page_row_count_limit(usize::MAX)
            .set_max_row_group_row_count(None)
            .build();
        let mut writer = ArrowWriter::try_new(
            File::create(path).unwrap(),
            schema.clone(),
            Some(properties),
        )
        .unwrap();
        writer.append_key_value_metadata(KeyValue::new(
            "pandas".to_owned(),
            r#"{"index_columns": ["open_time"]}"#.to_owned(),
        ));
        for start in (0..ROWS).step_by(50_000) {
            let n = 50_000.min(ROWS - start);
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Float32Array::from_iter_values(
                    (start..start + n).map(|i| 100.0 + (i % 977) as f32 * 0.01),
                )),
                Arc::new(UInt16Array::from_iter_values(
                    (start..start + n).map(|i| (i % 60_000) as u16),
                )),
                Arc::new(
                    TimestampNanosecondArray::from_iter_values(
                        (start..start + n)
                            .map(|i| 1_614_556_800_000_000_000 + i as i64 * 60_000_000_000),
                    )
                    .with_timezone("UTC"),
                ),
            ];
            writer
                .write(&RecordBatch::try_new(schema.clone(), columns).unwrap())
                .unwrap();
        }
        writer.close().unwrap();
        ROWS as u64
    }

    fn read_all(path: &Path) -> (Vec<RecordBatch>, arrow_schema::SchemaRef, usize) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let schema = builder.schema().clone();
        let groups = builder.metadata().num_row_groups();
        let batches = builder
            .with_batch_size(ROWS)
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
        (batches, schema, groups)
    }

    fn file_kv(path: &Path, key: &str) -> Vec<KeyValue> {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let kv = builder
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .cloned();
        kv.unwrap_or_default()
            .into_iter()
            .filter(|kv| kv.key == key)
            .collect()
    }

    #[test]
    fn repacked_files_hold_the_same_rows_schema_and_pandas_metadata_in_small_pages() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (
            dir.path().join("in.parquet"),
            dir.path().join("out.parquet"),
        );
        let written = write_input(&src);
        let options = RepackOptions {
            key_values: vec![("candlepipe.test".into(), "42".into())],
            ..RepackOptions::default()
        };
        assert_eq!(repack_file(&src, &dst, &options).unwrap(), written);

        let (before, schema_before, groups_before) = read_all(&src);
        let (after, schema_after, groups_after) = read_all(&dst);
        assert_eq!(groups_before, 1);
        assert_eq!(groups_after, ROWS.div_ceil(REPACK_ROW_GROUP_ROWS));
        assert_eq!(
            schema_after.fields(),
            schema_before.fields(),
            "same columns and types"
        );
        let pandas = |s: &arrow_schema::SchemaRef| s.metadata().get("pandas").cloned();
        assert!(pandas(&schema_before).is_some());
        assert_eq!(pandas(&schema_after), pandas(&schema_before));
        assert_eq!(before.len(), 1, "one batch of every row");
        assert_eq!(after, before, "same values");
        assert_eq!(file_kv(&dst, "pandas"), file_kv(&src, "pandas"));
        assert_eq!(file_kv(&dst, "pandas").len(), 1);
        assert_eq!(
            file_kv(&dst, "candlepipe.test")[0].value.as_deref(),
            Some("42")
        );

        // Small plain pages, as the offset index of the copy says.
        use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        use parquet::file::metadata::PageIndexPolicy;
        let meta = ArrowReaderMetadata::load(
            &File::open(&dst).unwrap(),
            ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required),
        )
        .unwrap();
        let index = meta.metadata().page_index().unwrap();
        for (g, group) in meta.metadata().row_groups().iter().enumerate() {
            for (c, column) in group.columns().iter().enumerate() {
                assert!(column.dictionary_page_offset().is_none(), "no dictionary");
                let pages = index.page_locations(g, c).unwrap();
                assert!(pages.len() > 10, "column {c}: {} pages", pages.len());
                let largest = pages.iter().map(|p| p.compressed_page_size).max().unwrap();
                assert!(
                    largest <= 2 * REPACK_PAGE_SIZE as i32,
                    "column {c}: page of {largest} B"
                );
            }
        }
    }

    #[test]
    fn an_unreadable_input_is_an_input_error_and_a_bad_output_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.parquet");
        std::fs::write(&bad, b"not parquet at all").unwrap();
        let err = repack_file(
            &bad,
            &dir.path().join("o.parquet"),
            &RepackOptions::default(),
        )
        .unwrap_err();
        assert!(err.is_input_error(), "{err}");
        assert!(err.to_string().contains("bad.parquet"), "{err}");

        let good = dir.path().join("in.parquet");
        write_input(&good);
        let nowhere = dir.path().join("no-such-dir").join("o.parquet");
        let err = repack_file(&good, &nowhere, &RepackOptions::default()).unwrap_err();
        assert!(!err.is_input_error(), "{err}");
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
