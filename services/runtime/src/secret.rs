//! Secrets read from files, the Docker-secrets convention: next to a secret variable such
//! as `ADMIN_TOKEN`, a binary accepts `ADMIN_TOKEN_FILE` naming a file that holds it
//! (compose mounts secrets at `/run/secrets/<name>`). A secret passed as a flag shows in
//! `ps`, and one passed in the environment shows in `docker inspect`; a file shows in
//! neither.
//!
//! The file's content is the secret, less one trailing newline (`echo token > file` writes
//! one). Setting both the variable and its `_FILE` is an error naming both, never a silent
//! choice; so is an empty or unreadable file. Both binaries resolve their secrets with
//! [`resolve`] right after parsing their flags.

use std::io::Read;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Largest secret file read: a token or password is far smaller, and a wrong path (a log
/// file, a device) must not be read whole.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Where a secret comes from: its variable and flag, and their `_FILE` / `-file` twins.
#[derive(Debug, Clone, Copy)]
pub struct SecretName {
    /// e.g. `ADMIN_TOKEN` (the file variable is `ADMIN_TOKEN_FILE`).
    pub var: &'static str,
    /// e.g. `--admin-token` (the file flag is `--admin-token-file`).
    pub flag: &'static str,
}

/// Why a secret could not be resolved.
#[derive(Debug, Error)]
pub enum SecretError {
    #[error("both {var} ({flag}) and {var}_FILE ({flag}-file) are set; set only one (the _FILE variant keeps the secret out of `ps` and the environment)", var = .0.var, flag = .0.flag)]
    Both(SecretName),
    #[error("{}_FILE ({}-file): cannot read {}: {cause}", name.var, name.flag, path.display())]
    Read {
        name: SecretName,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}_FILE ({}-file): {} {problem}", name.var, name.flag, path.display())]
    Unusable {
        name: SecretName,
        path: PathBuf,
        problem: &'static str,
    },
}

/// The secret: `value` (from the variable or flag), or the content of `file`, or `None`
/// when neither is set.
pub fn resolve(
    name: SecretName,
    value: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<String>, SecretError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(SecretError::Both(name)),
        (Some(v), None) => Ok(Some(v.to_owned())),
        (None, None) => Ok(None),
        (None, Some(path)) => read(name, path).map(Some),
    }
}

fn read(name: SecretName, path: &Path) -> Result<String, SecretError> {
    let unusable = |problem| SecretError::Unusable {
        name,
        path: path.to_owned(),
        problem,
    };
    let read_err = |cause| SecretError::Read {
        name,
        path: path.to_owned(),
        cause,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if !meta.is_file() {
        return Err(unusable("is not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(unusable("is larger than 64 KiB; is it really the secret?"));
    }
    let text = String::from_utf8(bytes).map_err(|_| unusable("is not UTF-8 text"))?;
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(unusable("is empty"));
    }
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: SecretName = SecretName {
        var: "ADMIN_TOKEN",
        flag: "--admin-token",
    };

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), content).unwrap();
        f
    }

    #[test]
    fn the_file_holds_the_secret_less_one_trailing_newline() {
        for (content, want) in [
            (&b"s3cret\n"[..], "s3cret"),
            (b"s3cret", "s3cret"),
            (b"s3cret\r\n", "s3cret"),
            (b"s3cret\n\n", "s3cret\n"),
            (b" s3cret \n", " s3cret "),
        ] {
            let f = file(content);
            assert_eq!(
                resolve(TOKEN, None, Some(f.path())).unwrap().as_deref(),
                Some(want),
                "{content:?}"
            );
        }
        assert_eq!(
            resolve(TOKEN, Some("v"), None).unwrap().as_deref(),
            Some("v")
        );
        assert_eq!(resolve(TOKEN, None, None).unwrap(), None);
    }

    #[test]
    fn both_set_or_a_bad_file_is_an_error_naming_them() {
        let f = file(b"x\n");
        let both = resolve(TOKEN, Some("v"), Some(f.path()))
            .unwrap_err()
            .to_string();
        for name in [
            "ADMIN_TOKEN (",
            "ADMIN_TOKEN_FILE (",
            "(--admin-token)",
            "(--admin-token-file)",
        ] {
            assert!(both.contains(name), "{both}");
        }
        let cases: [(&[u8], &str); 3] = [
            (b"\n", "is empty"),
            (b"\xff\xfe\n", "is not UTF-8"),
            (&[b'a'; 70_000], "larger than 64 KiB"),
        ];
        for (content, problem) in cases {
            let f = file(content);
            let e = resolve(TOKEN, None, Some(f.path()))
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with("ADMIN_TOKEN_FILE (--admin-token-file): ") && e.contains(problem),
                "{e}"
            );
            assert!(e.contains(&f.path().display().to_string()), "{e}");
        }
        let missing = resolve(TOKEN, None, Some(Path::new("/nonexistent/secret")))
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("cannot read /nonexistent/secret: No such file"),
            "{missing}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = resolve(TOKEN, None, Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a regular file"), "{e}");
    }
}
