//! File primitives of the store: hashing while writing, atomic placement, fast parallel
//! hashing, hard links with a copy fallback, folders that are synced when created.
//!
//! There is one atomic-write stack in tantra, [`tantra_formats::fsutil`] and
//! [`tantra_formats::temp`]: every temporary file here comes from [`tantra_formats::temp::create_in`]
//! (mode from the umask, locked from birth, removed on SIGINT/SIGTERM), every directory sync from
//! [`tantra_formats::fsutil::sync_dir`]. What this module adds is what the store needs on top:
//! the sha256 of what is written, no-clobber placement, links that never copy a link, and a
//! [`failpoint`] before every step that changes the file system, so that tests can fail or kill
//! each step in turn.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};
use tantra_formats::failpoint;
use tantra_formats::fsutil::{parent_dir, sync_dir};
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
pub struct Staged {
    pub tmp: NamedTempFile,
    pub hash: FileHash,
}

impl Staged {
    /// The temporary file's current path.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }
}

/// Creates a locked temporary file in `dir`; `target` names the file in errors.
pub fn new_temp(dir: &Path, target: &Path) -> Result<NamedTempFile> {
    tantra_formats::temp::create_in(dir).at(target)
}

/// Creates `dir` and any missing parents, syncing the parent of each folder it creates so that
/// the new folder survives a crash.
pub fn create_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    failpoint::step("mkdir", dir).at(dir)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    }
    let parent = parent_dir(dir);
    sync_dir(&parent).at(&parent)
}

/// The file's type without following a link: `Ok(true)` for a regular file, `Ok(false)` for
/// anything else (a symlink, a folder, a device), an error when it cannot be looked at.
pub fn is_regular(path: &Path) -> io::Result<bool> {
    Ok(fs::symlink_metadata(path)?.file_type().is_file())
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
pub fn write_temp(
    dir: &Path,
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<Staged> {
    let tmp = new_temp(dir, target)?;
    failpoint::step("write", tmp.path()).at(target)?;
    let hash = {
        let mut w = BufWriter::with_capacity(CHUNK, HashingWriter::new(tmp.as_file()));
        write(&mut w)?;
        let hw = w
            .into_inner()
            .map_err(|e| StoreError::io(target, e.into_error()))?;
        let (_, hash) = hw.finish();
        hash
    };
    failpoint::step("fsync", tmp.path()).at(target)?;
    tmp.as_file().sync_all().at(target)?;
    Ok(Staged { tmp, hash })
}

/// A temporary file in `dir` that is a hard link of `src` (no bytes copied), or `None` where
/// the file system cannot link (the caller copies then). The link is made under a temporary
/// name and renamed over the fresh temporary file, so no other name is ever visible.
pub fn link_to_temp(src: &Path, dir: &Path, target: &Path) -> Result<Option<NamedTempFile>> {
    let tmp = new_temp(dir, target)?;
    let mut side = tmp.path().as_os_str().to_owned();
    side.push(".link");
    let side = PathBuf::from(side);
    if fs::hard_link(src, &side).is_err() {
        return Ok(None);
    }
    if let Err(e) = fs::rename(&side, tmp.path()) {
        let _ = fs::remove_file(&side);
        return Err(StoreError::io(tmp.path(), e));
    }
    Ok(Some(tmp))
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
    failpoint::step("write", tmp.path()).at(target)?;
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
    failpoint::step("fsync", tmp.path()).at(target)?;
    tmp.as_file().sync_all().at(target)?;
    Ok(Staged { tmp, hash })
}

/// Renames a staged file to `target` and syncs the directory. With `overwrite` false an
/// existing `target` is an error.
pub fn persist(tmp: NamedTempFile, target: &Path, overwrite: bool) -> Result<()> {
    failpoint::step("rename", target).at(target)?;
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
    write_json_with(target, |w| serde_json::to_writer(w, value))
}

/// Writes JSON already serialized (`json`, without the final newline) to `target` atomically.
pub fn write_json_bytes_atomic(target: &Path, json: &[u8]) -> Result<()> {
    write_json_with(target, |w| w.write_all(json).map_err(serde_json::Error::io))
}

/// Writes `value` as indented JSON to `target` atomically (files people edit: configs).
pub fn write_json_pretty_atomic<T: serde::Serialize>(target: &Path, value: &T) -> Result<()> {
    write_json_with(target, |w| serde_json::to_writer_pretty(w, value))
}

/// Metadata files are not hashed while they are written (a 4 MB registry's sha256 cost 8 ms
/// of every change): temp file, buffered write, sync, rename, folder sync.
fn write_json_with(
    target: &Path,
    to_writer: impl FnOnce(&mut BufWriter<&File>) -> serde_json::Result<()>,
) -> Result<()> {
    let dir = parent_dir(target);
    let tmp = new_temp(&dir, target)?;
    failpoint::step("write", tmp.path()).at(target)?;
    {
        let mut w = BufWriter::with_capacity(CHUNK, tmp.as_file());
        to_writer(&mut w).map_err(|e| StoreError::io(target, e.into()))?;
        w.write_all(b"\n").at(target)?;
        w.flush().at(target)?;
    }
    failpoint::step("fsync", tmp.path()).at(target)?;
    tmp.as_file().sync_all().at(target)?;
    persist(tmp, target, true)
}

/// Appends `line` to `path` (created if missing) and syncs it: the append-only logs of the
/// root (`history.jsonl`, `quarantine/index.jsonl`).
pub fn append_synced(path: &Path, line: &[u8]) -> Result<()> {
    failpoint::step("write", path).at(path)?;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .at(path)?;
    f.write_all(line).at(path)?;
    failpoint::step("fsync", path).at(path)?;
    f.sync_all().at(path)
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

/// Makes `dst` name the same bytes as `src`: a hard link where the file system allows it and
/// `src` is a regular file, else a copy through a temporary file (so a symlink is never linked:
/// the copy holds the bytes it points to). `dst` must not exist. Returns true for a link.
pub fn link_or_copy(src: &Path, dst: &Path) -> Result<bool> {
    if !is_regular(src).at(src)? {
        let dir = parent_dir(dst);
        let staged = copy_to_temp(src, &dir, dst, &tantra_formats::NoProgress)?;
        persist(staged.tmp, dst, false)?;
        return Ok(false);
    }
    failpoint::step("link", dst).at(dst)?;
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
    failpoint::step("unlink", path).at(path)?;
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

/// The number of hashing threads: `TANTRA_JOBS` (anything but a positive number is an error,
/// never silently ignored), else the available parallelism capped at 2
/// (hashing is limited by one core per file; more threads mostly fight over the disk).
pub fn default_jobs() -> Result<usize> {
    match std::env::var("TANTRA_JOBS") {
        Err(_) => Ok(std::thread::available_parallelism()
            .map(|n| n.get().min(2))
            .unwrap_or(1)),
        Ok(s) => s
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| StoreError::InvalidArgument {
                what: "TANTRA_JOBS",
                value: s.clone(),
                detail: "a number of threads, 1 or more".into(),
            }),
    }
}

/// True when `name` is a temporary file of tantra's.
pub fn is_temp_name(name: &str) -> bool {
    tantra_formats::temp::is_temp_name(name)
}

/// True when the temporary file at `path` belongs to no live process (see
/// [`tantra_formats::temp::is_stale`]).
pub fn is_stale_temp(path: &Path) -> bool {
    tantra_formats::temp::is_stale(path)
}

/// Renames `from` to `to`, a name that does not exist (the caller picks a fresh one under the
/// root's lock), and syncs both folders. One rename: the file never has two names or none.
pub fn rename_fresh(from: &Path, to: &Path) -> Result<()> {
    if fs::symlink_metadata(to).is_ok() {
        return Err(StoreError::io(
            to,
            io::Error::new(io::ErrorKind::AlreadyExists, "already exists"),
        ));
    }
    failpoint::step("rename", to).at(to)?;
    fs::rename(from, to).at(to)?;
    let dir = parent_dir(to);
    sync_dir(&dir).at(&dir)?;
    let src_dir = parent_dir(from);
    sync_dir(&src_dir).at(&src_dir)
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
        let leftover = dir
            .path()
            .join(format!("{}old.tmp", tantra_formats::temp::TEMP_PREFIX));
        fs::write(&leftover, b"x").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&leftover)
            .unwrap()
            .set_modified(old)
            .unwrap();
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
