//! File primitives of the store: locked temporary files, atomic placement, hashing while
//! writing, fast parallel hashing, hard links with a copy fallback.
//!
//! Every file the store writes goes to a temporary file in the target directory (named with
//! [`TEMP_PREFIX`], so cleanup recognises it), is flushed and `fsync`ed, renamed into place, and
//! the directory is synced. Unlike [`tantra_formats::fsutil::atomic_write`] the temporary file
//! also holds an exclusive `flock` while it lives: cleanup removes a temporary file only when it
//! can take that lock, that is when the process that wrote it is gone. That lets `cleanup` run
//! beside a long `register` without deleting its work in progress, with no grace period to guess.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use tantra_formats::fsutil::{parent_dir, sync_dir, TEMP_PREFIX};
use tantra_formats::Progress;
use tempfile::NamedTempFile;

use crate::error::{IoResultExt, Result, StoreError};

/// Read size for hashing and copying: large enough that system calls do not show, small enough
/// to stay in cache while the hash runs over it.
const CHUNK: usize = 1 << 20;

/// The sha256 and size of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    /// Lowercase hex.
    pub sha256: String,
    pub bytes: u64,
}

/// A finished temporary file waiting to be renamed into place, with the hash of what was
/// written to it.
#[derive(Debug)]
pub struct Staged<T = ()> {
    pub tmp: NamedTempFile,
    pub hash: FileHash,
    pub value: T,
}

impl<T> Staged<T> {
    /// The temporary file's current path.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// Creates a locked temporary file in `dir`; `target` names the file in errors.
pub fn new_temp(dir: &Path, target: &Path) -> Result<NamedTempFile> {
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)
        .at(target)?;
    // A file system without flock still works; cleanup then treats the file as stale.
    let _ = tmp.as_file().try_lock();
    Ok(tmp)
}

/// Counts and hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    pub fn finish(self) -> (W, FileHash) {
        (
            self.inner,
            FileHash {
                sha256: hex::encode(self.hasher.finalize()),
                bytes: self.bytes,
            },
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes a temporary file in `dir` through `write` (buffered; the bytes are hashed as they
/// reach the file), flushes and syncs it. `target` is the file this will become, for errors.
pub fn write_temp<T>(
    dir: &Path,
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<Staged<T>> {
    let tmp = new_temp(dir, target)?;
    let (value, hash) = {
        let mut w = BufWriter::with_capacity(CHUNK, HashingWriter::new(tmp.as_file()));
        let value = write(&mut w)?;
        let hw = w
            .into_inner()
            .map_err(|e| StoreError::io(target, e.into_error()))?;
        let (_, hash) = hw.finish();
        (value, hash)
    };
    tmp.as_file().sync_all().at(target)?;
    Ok(Staged { tmp, hash, value })
}

/// Copies `src` into a temporary file in `dir`, hashing the bytes as they are written.
pub fn copy_to_temp(
    src: &Path,
    dir: &Path,
    target: &Path,
    progress: &dyn Progress,
) -> Result<Staged> {
    let mut input = File::open(src).at(src)?;
    let total = input.metadata().at(src)?.len();
    progress.begin("copying", total);
    let tmp = new_temp(dir, target)?;
    let hash = {
        let mut w = HashingWriter::new(tmp.as_file());
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    progress.end();
                    return Err(StoreError::io(src, e));
                }
            };
            w.write_all(&buf[..n]).at(target)?;
            progress.advance(n as u64);
        }
        w.finish().1
    };
    progress.end();
    tmp.as_file().sync_all().at(target)?;
    Ok(Staged {
        tmp,
        hash,
        value: (),
    })
}

/// Renames a staged file to `target` and syncs the directory. With `overwrite` false an
/// existing `target` is an error.
pub fn persist(tmp: NamedTempFile, target: &Path, overwrite: bool) -> Result<()> {
    if overwrite {
        tmp.persist(target)
            .map_err(|e| StoreError::io(target, e.error))?;
    } else {
        tmp.persist_noclobber(target)
            .map_err(|e| StoreError::io(target, e.error))?;
    }
    let dir = parent_dir(target);
    sync_dir(&dir).at(&dir)
}

/// Writes `value` as compact JSON to `target` atomically.
pub fn write_json_atomic<T: serde::Serialize>(target: &Path, value: &T) -> Result<()> {
    let dir = parent_dir(target);
    let staged = write_temp(&dir, target, |w| {
        serde_json::to_writer(&mut *w, value).map_err(|e| StoreError::io(target, e.into()))?;
        w.write_all(b"\n").at(target)
    })?;
    persist(staged.tmp, target, true)
}

/// Writes `value` as indented JSON to `target` atomically (files people edit: configs).
pub fn write_json_pretty_atomic<T: serde::Serialize>(target: &Path, value: &T) -> Result<()> {
    let dir = parent_dir(target);
    let staged = write_temp(&dir, target, |w| {
        serde_json::to_writer_pretty(&mut *w, value)
            .map_err(|e| StoreError::io(target, e.into()))?;
        w.write_all(b"\n").at(target)
    })?;
    persist(staged.tmp, target, true)
}

/// Reads a JSON file; `Ok(None)` when it does not exist.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::corrupt(path, format!("not valid JSON for this file: {e}")))
}

/// Makes `dst` name the same bytes as `src`: a hard link where the file system allows it, else
/// a copy through a temporary file. `dst` must not exist. Returns true for a link.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<bool> {
    match fs::hard_link(src, dst) {
        Ok(()) => {
            let dir = parent_dir(dst);
            sync_dir(&dir).at(&dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::io(dst, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::io(src, e)),
        Err(_) => {
            let dir = parent_dir(dst);
            let staged = copy_to_temp(src, &dir, dst, &tantra_formats::NoProgress)?;
            persist(staged.tmp, dst, false)?;
            Ok(false)
        }
    }
}

/// Removes a file (missing is fine) and syncs its directory.
pub fn remove_synced(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(path, e)),
    }
    let dir = parent_dir(path);
    sync_dir(&dir).at(&dir)
}

/// sha256 of a file, read in large chunks.
pub fn hash_file(path: &Path, progress: &dyn Progress) -> Result<FileHash> {
    let mut f = File::open(path).at(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut bytes = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StoreError::io(path, e)),
        };
        h.update(&buf[..n]);
        bytes += n as u64;
        progress.advance(n as u64);
    }
    Ok(FileHash {
        sha256: hex::encode(h.finalize()),
        bytes,
    })
}

/// [`hash_file`] of a file of `len` bytes, drawn as one `label` bar of `progress`.
pub fn hash_file_with(
    path: &Path,
    label: &str,
    len: u64,
    progress: &dyn Progress,
) -> Result<FileHash> {
    progress.begin(label, len);
    let h = hash_file(path, progress);
    progress.end();
    h
}

/// Hashes `paths` on `jobs` threads (largest files first, so the threads finish together).
/// Results come back in the order of `paths`. `progress` is advanced by bytes; the caller
/// begins and ends it.
pub fn hash_files_parallel(
    paths: &[PathBuf],
    jobs: usize,
    progress: &dyn Progress,
) -> Vec<Result<FileHash>> {
    let mut order: Vec<(usize, u64)> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (i, fs::metadata(p).map(|m| m.len()).unwrap_or(0)))
        .collect();
    order.sort_by_key(|b| std::cmp::Reverse(b.1));
    let next = AtomicUsize::new(0);
    let jobs = jobs.clamp(1, paths.len().max(1));
    let mut results: Vec<Option<Result<FileHash>>> = (0..paths.len()).map(|_| None).collect();
    let collected = std::sync::Mutex::new(Vec::with_capacity(paths.len()));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(i, _)) = order.get(k) else { break };
                let r = hash_file(&paths[i], progress);
                if let Ok(mut c) = collected.lock() {
                    c.push((i, r));
                }
            });
        }
    });
    let collected = collected.into_inner().unwrap_or_default();
    for (i, r) in collected {
        if let Some(slot) = results.get_mut(i) {
            *slot = Some(r);
        }
    }
    results
        .into_iter()
        .zip(paths)
        .map(|(r, p)| {
            r.unwrap_or_else(|| {
                Err(StoreError::io(
                    p,
                    io::Error::other("hashing thread did not report"),
                ))
            })
        })
        .collect()
}

/// The number of hashing threads: `TANTRA_JOBS`, else the available parallelism capped at 2
/// (hashing is limited by one core per file; more threads mostly fight over the disk).
pub fn default_jobs() -> usize {
    std::env::var("TANTRA_JOBS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get().min(2))
                .unwrap_or(1)
        })
}

/// True when `name` is a temporary file of tantra's.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// True when the temporary file at `path` belongs to no live process (its lock can be taken).
pub fn is_stale_temp(path: &Path) -> bool {
    match File::open(path) {
        Ok(f) => match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
                true
            }
            Err(fs::TryLockError::WouldBlock) => false,
            Err(fs::TryLockError::Error(_)) => true,
        },
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantra_formats::NoProgress;

    #[test]
    fn hashes_match_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        fs::write(&p, b"abc").unwrap();
        let h = hash_file(&p, &NoProgress).unwrap();
        assert_eq!(
            h.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.bytes, 3);
        let big = dir.path().join("b");
        fs::write(&big, vec![7u8; 3 * CHUNK + 5]).unwrap();
        let paths = vec![p.clone(), big.clone(), dir.path().join("missing")];
        let r = hash_files_parallel(&paths, 2, &NoProgress);
        assert_eq!(r[0].as_ref().unwrap(), &h);
        assert_eq!(
            r[1].as_ref().unwrap().sha256,
            hex::encode(Sha256::digest(vec![7u8; 3 * CHUNK + 5]))
        );
        assert!(r[2].is_err());
    }

    #[test]
    fn staged_files_are_locked_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let staged =
            write_temp(dir.path(), &target, |w| w.write_all(b"hello").at(&target)).unwrap();
        assert_eq!(staged.hash.bytes, 5);
        assert!(is_temp_name(
            &staged.path().file_name().unwrap().to_string_lossy()
        ));
        assert!(!is_stale_temp(staged.path()));
        let leftover = dir.path().join(format!("{TEMP_PREFIX}old.tmp"));
        fs::write(&leftover, b"x").unwrap();
        assert!(is_stale_temp(&leftover));
        persist(staged.tmp, &target, false).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"hello");
    }

    #[test]
    fn link_or_copy_refuses_existing_target() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        fs::write(&a, b"1").unwrap();
        assert!(link_or_copy(&a, &b).unwrap());
        assert!(link_or_copy(&a, &b).is_err());
        assert_eq!(fs::read(&b).unwrap(), b"1");
    }
}
