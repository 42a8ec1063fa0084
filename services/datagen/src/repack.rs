//! Rewriting real-world candle files with small pages, so a 1000-file replay fits in memory.
//!
//! The replay merge keeps every dataset file open at once and the parquet reader holds, per
//! open file, one decoded page of every column plus each column's dictionary. pandas
//! (pyarrow) writes data pages and dictionary pages of up to 1 MiB, so one open Kaggle
//! "binance-full-history" file costs about 10 MB of memory; a thousand of them, about 10 GB.
//! The same data with 8 KiB plain-encoded pages costs about a hundred KB per open file.
//!
//! [`repack_file`] streams a file (one record batch at a time) into a copy with the same
//! columns, types and `pandas` metadata (so `pd.read_parquet` reads it unchanged) but small
//! pages and no dictionary encoding. Row groups are capped at [`REPACK_ROW_GROUP_ROWS`]
//! rows so the writer's buffer stays small too; the replay reader does not care how many
//! row groups a file has.

use crate::layout::{WriteError, WriteOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use std::fs::File;
use std::path::Path;

/// Rows per row group of a repacked file.
pub const REPACK_ROW_GROUP_ROWS: usize = 256 * 1024;
/// Rows per record batch while copying.
const COPY_BATCH_ROWS: usize = 64 * 1024;
/// Default data page size of repacked files.
pub const REPACK_PAGE_SIZE: usize = 8 * 1024;

/// Copies `input` to `output` with small pages (see the module docs). Returns the rows copied.
pub fn repack_file(input: &Path, output: &Path, options: &WriteOptions) -> Result<u64, WriteError> {
    let read_err = |source| WriteError::Parquet {
        path: input.to_owned(),
        source,
    };
    let write_err = |source| WriteError::Parquet {
        path: output.to_owned(),
        source,
    };
    let file = File::open(input).map_err(|source| WriteError::Io {
        path: input.to_owned(),
        source,
    })?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(read_err)?;
    let schema = builder.schema().clone();
    // File key-value entries (pandas writes its metadata there) are carried over as such;
    // `ARROW:schema` is rewritten by the writer.
    let key_values: Vec<KeyValue> = builder
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key != "ARROW:schema")
        .cloned()
        .collect();
    let reader = builder
        .with_batch_size(COPY_BATCH_ROWS)
        .build()
        .map_err(read_err)?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_dictionary_enabled(options.dictionary)
        .set_data_page_size_limit(options.data_page_size)
        .set_data_page_row_count_limit(usize::MAX)
        .set_max_row_group_row_count(Some(REPACK_ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_offset_index_disabled(true)
        .set_created_by(format!(
            "candlepipe-datagen {} repack (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ))
        .build();
    let out = File::create(output).map_err(|source| WriteError::Io {
        path: output.to_owned(),
        source,
    })?;
    let mut writer = ArrowWriter::try_new(out, schema, Some(properties)).map_err(write_err)?;
    for kv in key_values {
        writer.append_key_value_metadata(kv);
    }
    let mut rows = 0u64;
    for batch in reader {
        let batch = batch.map_err(|source| WriteError::Arrow {
            path: input.to_owned(),
            source,
        })?;
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(write_err)?;
    }
    writer.close().map_err(write_err)?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{write_klines, FileLayout};
    use crate::market::{klines, MarketOptions, PairSpec};
    use arrow_array::RecordBatch;

    fn read_all(path: &Path) -> (Vec<RecordBatch>, arrow_schema::SchemaRef, usize) {
        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
        let schema = builder.schema().clone();
        let groups = builder.metadata().num_row_groups();
        let batches = builder.build().unwrap().map(|b| b.unwrap()).collect();
        (batches, schema, groups)
    }

    #[test]
    fn repacked_files_hold_the_same_rows_schema_and_pandas_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (
            dir.path().join("in.parquet"),
            dir.path().join("out.parquet"),
        );
        let spec = PairSpec::bundled_named("SOL-USDT").unwrap();
        let market = MarketOptions {
            minutes: 300_000,
            ..MarketOptions::default()
        };
        let written = write_klines(
            &src,
            &FileLayout::KAGGLE,
            &WriteOptions::default(),
            klines(&spec, &market),
        )
        .unwrap();
        let options = WriteOptions {
            data_page_size: REPACK_PAGE_SIZE,
            dictionary: false,
        };
        assert_eq!(repack_file(&src, &dst, &options).unwrap(), written);

        let (before, schema_before, groups_before) = read_all(&src);
        let (after, schema_after, groups_after) = read_all(&dst);
        assert_eq!(groups_before, 1);
        let expected_groups = (written as usize).div_ceil(REPACK_ROW_GROUP_ROWS);
        assert_eq!(groups_after, expected_groups);
        assert_eq!(
            schema_after, schema_before,
            "same types and pandas metadata"
        );
        assert!(schema_after.metadata().contains_key("pandas"));
        let file_kv = |p: &Path| {
            let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(p).unwrap()).unwrap();
            let kv = builder
                .metadata()
                .file_metadata()
                .key_value_metadata()
                .cloned();
            kv.unwrap()
                .into_iter()
                .filter(|kv| kv.key == "pandas")
                .collect::<Vec<_>>()
        };
        assert_eq!(file_kv(&dst), file_kv(&src));
        assert_eq!(file_kv(&dst).len(), 1);
        assert_eq!(after, before, "same values, batch for batch");
    }
}
