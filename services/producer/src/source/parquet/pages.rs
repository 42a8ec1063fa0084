//! How many bytes of decompressed pages a cursor over a parquet file will hold, estimated
//! from the footer alone (module docs of `parquet.rs`): the replay cache (`cache.rs`)
//! copies the files whose estimate does not fit the memory budget.

use parquet::arrow::arrow_reader::ArrowReaderMetadata;
use parquet::basic::{PageType, Type as PhysicalType};
use parquet::file::metadata::ColumnChunkMetaData;
use parquet::file::page_index::offset_index::OffsetIndexMetaData;

/// Estimated bytes of decompressed pages a cursor over this file holds at once: for the
/// row group where it is largest, the sum over the candle `columns` of each column's
/// dictionary page plus its largest data page. The footer tells page sizes exactly when the
/// file has an offset index (parquet-rs writes one); otherwise the number of data pages
/// (encoding stats, which pyarrow writes) gives their mean size, counted twice for slack;
/// with neither, the whole column chunk counts. Compressed sizes are scaled by the chunk's
/// compression ratio. Never more than the column chunks' uncompressed size.
pub(super) fn page_bytes(meta: &ArrowReaderMetadata, columns: &[usize]) -> u64 {
    let names: Vec<&str> = columns
        .iter()
        .map(|&i| meta.schema().field(i).name().as_str())
        .collect();
    let metadata = meta.metadata();
    let offsets = metadata.page_index();
    metadata
        .row_groups()
        .iter()
        .enumerate()
        .map(|(g, group)| {
            group
                .columns()
                .iter()
                .enumerate()
                .filter(|(_, chunk)| names.contains(&chunk.column_descr().name()))
                .map(|(c, chunk)| {
                    let index = offsets.and_then(|o| o.offset_index(g, c));
                    column_page_bytes(chunk, index)
                })
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// The size of every column chunk of the file when plain-encoded: rows times the physical
/// width (variable-width columns: their uncompressed size).
pub(super) fn plain_bytes(meta: &ArrowReaderMetadata) -> u64 {
    let groups = meta.metadata().row_groups();
    groups
        .iter()
        .flat_map(|g| {
            g.columns()
                .iter()
                .map(move |c| (g.num_rows().max(0) as u64, c))
        })
        .map(|(rows, chunk)| match chunk.column_type() {
            PhysicalType::BOOLEAN => rows.div_ceil(8),
            PhysicalType::INT32 | PhysicalType::FLOAT => rows * 4,
            PhysicalType::INT64 | PhysicalType::DOUBLE => rows * 8,
            PhysicalType::INT96 => rows * 12,
            _ => chunk.uncompressed_size().max(0) as u64,
        })
        .sum()
}

/// [`page_bytes`] for one column chunk.
fn column_page_bytes(chunk: &ColumnChunkMetaData, index: Option<&OffsetIndexMetaData>) -> u64 {
    let whole = chunk.uncompressed_size().max(0) as u64;
    let compressed = chunk.compressed_size().max(1) as u64;
    let scale =
        |bytes: u64| (u128::from(bytes) * u128::from(whole) / u128::from(compressed)) as u64;
    let dictionary = chunk
        .dictionary_page_offset()
        .map_or(0, |d| scale((chunk.data_page_offset() - d).max(0) as u64));
    let largest = if let Some(pages) = index.filter(|i| !i.page_locations().is_empty()) {
        let largest = pages
            .page_locations()
            .iter()
            .map(|p| p.compressed_page_size);
        scale(largest.max().unwrap_or(0).max(0) as u64)
    } else if let Some(stats) = chunk.page_encoding_stats() {
        let data_pages: u64 = stats
            .iter()
            .filter(|s| matches!(s.page_type, PageType::DATA_PAGE | PageType::DATA_PAGE_V2))
            .map(|s| s.count.max(0) as u64)
            .sum();
        let data = whole.saturating_sub(dictionary);
        match data_pages {
            0 => data,
            n => (2 * data / n).min(data),
        }
    } else {
        whole
    };
    (dictionary + largest).min(whole)
}
