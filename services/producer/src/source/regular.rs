//! Opening a dataset file safely: only regular files are read.
//!
//! A dataset folder is whatever an operator (or an attacker with write access to it) put
//! there. A FIFO named `X.parquet` would block `open()` forever (no log line, no HTTP
//! server, SIGTERM ignored), and a link to a device such as `/dev/urandom` reads as a file
//! of 0 bytes or of endless noise. So a file's type is checked before it is opened
//! (following links, since a link to a regular file is fine), and once more on the open
//! handle: the open itself is non-blocking, so a path swapped for a FIFO between the check
//! and the open cannot hang it either.

use std::fs::{File, FileType, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Why [`open`] refused or failed.
#[derive(Debug)]
pub enum OpenError {
    /// The path could not be inspected or opened.
    Io(std::io::Error),
    /// Not a regular file: what it is instead (e.g. "a FIFO (named pipe)").
    NotRegular(String),
    /// A regular file of 0 bytes.
    Empty,
}

impl From<std::io::Error> for OpenError {
    fn from(e: std::io::Error) -> Self {
        OpenError::Io(e)
    }
}

/// Opens `path` for reading if it is a non-empty regular file (or a link to one).
pub fn open(path: &Path) -> Result<File, OpenError> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(describe(path, meta.file_type())));
    }
    // O_NONBLOCK only matters for FIFOs and devices (refused below); reads of a regular
    // file are unaffected by it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(OpenError::NotRegular(describe(path, meta.file_type())));
    }
    if meta.len() == 0 {
        return Err(OpenError::Empty);
    }
    Ok(file)
}

/// What a non-regular file is, in words; for a symbolic link, also where it points.
fn describe(path: &Path, target: FileType) -> String {
    let kind = kind(target);
    match std::fs::read_link(path) {
        Ok(to) => format!("a symbolic link to {}, which is {kind}", to.display()),
        Err(_) => kind.to_owned(),
    }
}

fn kind(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_open_and_others_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.parquet");
        std::fs::write(&file, b"x").unwrap();
        assert!(open(&file).is_ok());
        let link = dir.path().join("link.parquet");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(open(&link).is_ok(), "a link to a regular file is fine");
        let empty = dir.path().join("e.parquet");
        std::fs::write(&empty, b"").unwrap();
        assert!(matches!(open(&empty), Err(OpenError::Empty)));
        let null = dir.path().join("null.parquet");
        std::os::unix::fs::symlink("/dev/null", &null).unwrap();
        match open(&null) {
            Err(OpenError::NotRegular(what)) => assert_eq!(
                what,
                "a symbolic link to /dev/null, which is a character device"
            ),
            other => panic!("{other:?}"),
        }
        match open(dir.path()) {
            Err(OpenError::NotRegular(what)) => assert_eq!(what, "a directory"),
            other => panic!("{other:?}"),
        }
    }
}
