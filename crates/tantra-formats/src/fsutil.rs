//! Crash-safe file writing: temporary file in the target directory, flush, `fsync`, rename,
//! `fsync` of the directory.
//!
//! A crash at any instant leaves either the old file or the new one under the final name, never
//! a half-written one. Temporary files carry the [`TEMP_PREFIX`] so that cleanup can recognise
//! what a crash left behind.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{ErrorKind, FormatError};

/// Prefix of every temporary file tantra creates next to a target.
pub const TEMP_PREFIX: &str = ".tantra-tmp-";

/// Counts bytes passing through a writer.
pub struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    pub fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }
    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The directory `path` lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `fsync`s a directory so that a rename inside it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    // Opening a directory read-only and calling fsync is the POSIX way; other platforms
    // do not allow it, and there a failure to open is not an error.
    match File::open(dir) {
        Ok(d) => d
            .sync_all()
            .or_else(|e| if cfg!(unix) { Err(e) } else { Ok(()) }),
        Err(e) if cfg!(unix) => Err(e),
        Err(_) => Ok(()),
    }
}

/// Creates a temporary file beside `target`, hands it (buffered) to `write`, then flushes,
/// syncs and renames it to `target` and syncs the directory. With `overwrite` false an existing
/// `target` is an [`ErrorKind::Exists`] error, checked again at the rename so that a file
/// created meanwhile is not clobbered. On any error the temporary file is removed.
pub fn atomic_write<T>(
    target: &Path,
    overwrite: bool,
    write: impl FnOnce(&mut BufWriter<&File>) -> Result<T, FormatError>,
) -> Result<T, FormatError> {
    if !overwrite && target.exists() {
        return Err(FormatError::new(target, ErrorKind::Exists));
    }
    let dir = parent_dir(target);
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| FormatError::new(target, e))?;
    let value = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let v = write(&mut w).map_err(|e| e.with_path(target))?;
        w.flush().map_err(|e| FormatError::new(target, e))?;
        v
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| FormatError::new(target, e))?;
    if overwrite {
        tmp.persist(target)
            .map_err(|e| FormatError::new(target, e.error))?;
    } else {
        tmp.persist_noclobber(target).map_err(|e| {
            if e.error.kind() == io::ErrorKind::AlreadyExists {
                FormatError::new(target, ErrorKind::Exists)
            } else {
                FormatError::new(target, e.error)
            }
        })?;
    }
    sync_dir(&dir).map_err(|e| FormatError::new(&dir, e))?;
    Ok(value)
}

/// Writes `bytes` to `target` atomically (see [`atomic_write`]).
pub fn atomic_write_bytes(target: &Path, bytes: &[u8], overwrite: bool) -> Result<(), FormatError> {
    atomic_write(target, overwrite, |w| {
        w.write_all(bytes).map_err(|e| FormatError::new(target, e))
    })
}

/// Removes stale temporary files (names starting with [`TEMP_PREFIX`]) from `dir`; returns the
/// removed paths and their sizes.
pub fn stale_temp_files(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) && entry.file_type()?.is_file() {
            out.push((entry.path(), entry.metadata()?.len()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        atomic_write_bytes(&p, b"one", false).unwrap();
        let err = atomic_write_bytes(&p, b"two", false).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::Exists));
        assert_eq!(fs::read(&p).unwrap(), b"one");
        atomic_write_bytes(&p, b"two", true).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(stale_temp_files(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        atomic_write_bytes(&p, b"old", false).unwrap();
        let r: Result<(), _> = atomic_write(&p, true, |w| {
            w.write_all(b"partial").unwrap();
            Err(FormatError::memory("boom"))
        });
        assert!(r.is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(stale_temp_files(dir.path()).unwrap().is_empty());
    }
}
