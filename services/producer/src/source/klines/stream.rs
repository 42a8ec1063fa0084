//! The lines of a kline file, streamed: a `.csv` as it is, or the one CSV inside a `.zip`
//! as Binance ships it, inflated as it is read (never unpacked to disk or held whole).
//!
//! For a zip, the `zip` crate reads the central directory and the entry's local header
//! ([`Container::inspect`]); the entry's bytes are then read straight from the file and
//! inflated with `flate2`, behind a check of the CRC-32 and size the directory records. (The
//! `zip` crate's own entry reader borrows its archive, so it cannot live in a cursor that
//! the merge keeps between calls.) An open file costs a few tens of KiB: the line buffer,
//! the read buffers and the inflater's 32 KiB window.

use super::error::KlineError;
use crate::source::file_error::FileError;
use crate::source::regular;
use flate2::bufread::DeflateDecoder;
use flate2::Crc;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use zip::{CompressionMethod, ZipArchive};

/// Bytes read from the file (or inflated) at a time.
const READ_BUFFER: usize = 16 * 1024;
/// The UTF-8 byte order mark some tools put before the first line.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// How a kline file holds its CSV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    Csv,
    Zip(ZipEntry),
}

/// Where the CSV's bytes are inside a zip, and what they must add up to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    data_start: u64,
    compressed_size: u64,
    size: u64,
    crc32: u32,
    deflated: bool,
}

impl Container {
    /// Checks that `path` can be read as a CSV (`zipped = false`) or as a zip holding one
    /// stored or deflated file.
    pub fn inspect(path: &Path, zipped: bool) -> Result<Self, FileError> {
        let file = regular::open(path)?;
        if !zipped {
            return Ok(Container::Csv);
        }
        let mut archive = ZipArchive::new(BufReader::new(file)).map_err(KlineError::NotZip)?;
        let mut files = Vec::new();
        for i in 0..archive.len() {
            if !archive
                .by_index_raw(i)
                .map_err(KlineError::NotZip)?
                .is_dir()
            {
                files.push(i);
            }
        }
        let [index] = files[..] else {
            return Err(KlineError::ZipEntries(files.len()).into());
        };
        let entry = archive.by_index_raw(index).map_err(KlineError::NotZip)?;
        if entry.encrypted() {
            return Err(KlineError::ZipEntry("encrypted".into()).into());
        }
        let deflated = match entry.compression() {
            CompressionMethod::Stored => false,
            CompressionMethod::Deflated => true,
            other => return Err(KlineError::ZipEntry(format!("compressed with {other}")).into()),
        };
        Ok(Container::Zip(ZipEntry {
            data_start: entry
                .data_start()
                .ok_or(KlineError::ZipEntry("without a local header".into()))?,
            compressed_size: entry.compressed_size(),
            size: entry.size(),
            crc32: entry.crc32(),
            deflated,
        }))
    }
}

/// The lines of one file, in order, with their 1-based numbers; see [`Lines::next_line`].
pub struct Lines {
    reader: BufReader<Box<dyn Read + Send>>,
    line: Vec<u8>,
    /// How many lines were read so far.
    number: u64,
}

impl Lines {
    pub fn open(path: &Path, container: &Container) -> Result<Self, FileError> {
        let mut file = regular::open(path)?;
        let bytes: Box<dyn Read + Send> = match container {
            Container::Csv => Box::new(file),
            Container::Zip(entry) => {
                file.seek(SeekFrom::Start(entry.data_start))?;
                let raw = BufReader::with_capacity(READ_BUFFER, file.take(entry.compressed_size));
                let inflated: Box<dyn Read + Send> = if entry.deflated {
                    Box::new(DeflateDecoder::new(raw))
                } else {
                    Box::new(raw)
                };
                Box::new(Checked {
                    inner: inflated,
                    crc: Crc::new(),
                    read: 0,
                    entry: entry.clone(),
                })
            }
        };
        Ok(Lines {
            reader: BufReader::with_capacity(READ_BUFFER, bytes),
            line: Vec::with_capacity(256),
            number: 0,
        })
    }

    /// The next line that is not empty and not the header (an optional first line, see
    /// [`super::line::is_header`]), without its line break; `None` at the end.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        loop {
            self.line.clear();
            if self.reader.read_until(b'\n', &mut self.line)? == 0 {
                return Ok(None);
            }
            self.number += 1;
            let first = self.number == 1;
            let start = if first && self.line.starts_with(BOM) {
                BOM.len()
            } else {
                0
            };
            let mut end = self.line.len();
            while end > start && matches!(self.line[end - 1], b'\n' | b'\r') {
                end -= 1;
            }
            let line = &self.line[start..end];
            if line.is_empty() || (first && super::line::is_header(line)) {
                continue;
            }
            return Ok(Some((self.number, &self.line[start..end])));
        }
    }

    /// Number of the last line read (0 before the first).
    pub fn number(&self) -> u64 {
        self.number
    }
}

/// A zip entry's inflated bytes, failing at the end unless their CRC-32 and size are the
/// ones the zip directory records: a damaged or truncated deflate stream is an error, not
/// a silently short file.
struct Checked {
    inner: Box<dyn Read + Send>,
    crc: Crc,
    read: u64,
    entry: ZipEntry,
}

impl Read for Checked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let damaged = |e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("damaged zip entry: {e}"),
            )
        };
        let n = self.inner.read(buf).map_err(|e| damaged(&e))?;
        self.crc.update(&buf[..n]);
        self.read += n as u64;
        let entry = &self.entry;
        if n == 0 && !buf.is_empty() && (self.read != entry.size || self.crc.sum() != entry.crc32) {
            return Err(damaged(&format!(
                "inflated {} bytes with CRC-32 {:08x}; the zip directory says {} bytes, CRC-32 {:08x}",
                self.read,
                self.crc.sum(),
                entry.size,
                entry.crc32
            )));
        }
        Ok(n)
    }
}
