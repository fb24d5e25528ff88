//! Crash-safe file writing: temporary file in the target directory, flush, `fsync`, rename,
//! `fsync` of the directory.
//!
//! A crash at any instant leaves either the old file or the new one under the final name, never
//! a half-written one. Temporary files carry the [`TEMP_PREFIX`] so that cleanup can recognise
//! what a crash left behind.
//!
//! # Why write-back starts early
//! Weight files are hundreds of megabytes. Left alone, the kernel would hold all of it dirty in
//! memory until the final `fsync`, which then has to write the whole file before it returns:
//! the time of the disk comes after the time of producing the bytes instead of beside it.
//! [`FileWriter`] (on Linux) asks the kernel to start writing each window of
//! [`WRITEBACK_WINDOW`] bytes as soon as it is written (`sync_file_range(SYNC_FILE_RANGE_WRITE)`,
//! which queues the I/O and does not wait for it), so that the disk works while the rest of the
//! file is produced and the `fsync` finds little left. On a slow disk that hides most of the
//! disk's time; on a fast disk with few cores it mostly moves the kernel's work earlier. It
//! changes nothing about durability: the `fsync` still runs and still reports any write-back
//! error (starting write-back does not consume the error the way waiting for it would).
//!
//! [`atomic_write_checked`] also lets a caller check the finished temporary file (re-read it)
//! while that last `fsync` runs on another thread, before the file takes the target's name: a
//! check that fails leaves the old target untouched.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use crate::error::{ErrorKind, FormatError};
use crate::failpoint;
pub use crate::temp::TEMP_PREFIX;

/// [`FileWriter`] starts write-back each time this many more bytes have reached the file.
pub const WRITEBACK_WINDOW: u64 = 8 << 20;

/// The buffer of [`FileWriter`]; writes at least this large go straight to the file.
const BUFFER: usize = 1 << 20;

/// The most bytes one `write()` call is given. Larger calls measured slower, not faster: an
/// 8 MiB write of mapped input took three times as long as the same bytes in 1-2 MiB calls
/// (Linux 6.18, ext4; `bench/convert.sh`).
const MAX_WRITE: usize = 2 << 20;

/// The writer [`atomic_write`] hands out: buffered (1 MiB; larger writes go straight
/// through), and on Linux it starts the write-back of every [`WRITEBACK_WINDOW`] bytes as soon as
/// they are written (see the module docs).
pub struct FileWriter<'a> {
    inner: BufWriter<WritebackAhead<'a>>,
}

impl<'a> FileWriter<'a> {
    /// A writer that appends to `file` from offset 0 (a new, empty file).
    fn new(file: &'a File) -> Self {
        FileWriter {
            inner: BufWriter::with_capacity(
                BUFFER,
                WritebackAhead {
                    file,
                    written: 0,
                    started: 0,
                    enabled: cfg!(target_os = "linux"),
                },
            ),
        }
    }
}

impl FileWriter<'_> {
    /// The file written to (for reading back what has reached it; never for writing).
    pub fn file(&self) -> &File {
        self.inner.get_ref().file
    }
}

impl Write for FileWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes to a file from offset 0 and starts the write-back of each full window.
struct WritebackAhead<'a> {
    file: &'a File,
    /// Bytes written so far: the file's length, since it is written from the start.
    written: u64,
    /// Write-back has been started for `0..started`.
    started: u64,
    /// False where the system or the file system refuses `sync_file_range`.
    enabled: bool,
}

impl WritebackAhead<'_> {
    /// Starts (does not wait for) the write-back of `started..written`.
    ///
    /// # Errors
    /// An I/O error the kernel reports on starting (EIO, ENOSPC): the file will not be written.
    /// A refusal of the call itself (a sandbox, a file system without it) is no error: the final
    /// `fsync` then does all the work, as on other systems.
    #[cfg(target_os = "linux")]
    fn start_writeback(&mut self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (
            libc::off64_t::try_from(self.started),
            libc::off64_t::try_from(self.written - self.started),
        ) else {
            self.enabled = false;
            return Ok(());
        };
        // SAFETY: a plain system call on a file descriptor that `self.file` keeps open; it reads
        // no memory of this process.
        let rc = unsafe {
            libc::sync_file_range(
                self.file.as_raw_fd(),
                offset,
                len,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
        if rc == 0 {
            self.started = self.written;
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL | libc::ESPIPE | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP) => {
                self.enabled = false;
                Ok(())
            }
            _ => Err(e),
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn start_writeback(&mut self) -> io::Result<()> {
        self.enabled = false;
        Ok(())
    }
}

impl Write for WritebackAhead<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(&buf[..buf.len().min(MAX_WRITE)])?;
        self.written += n as u64;
        if self.enabled && self.written - self.started >= WRITEBACK_WINDOW {
            self.start_writeback()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
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
    failpoint::step("syncdir", dir)?;
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
    write: impl FnOnce(&mut FileWriter<'_>) -> Result<T, FormatError>,
) -> Result<T, FormatError> {
    write_and_place(target, overwrite, write, None::<fn(&Path) -> _>)
}

/// [`atomic_write`], and before the file takes `target`'s name, `check` reads it back: it gets
/// the path of the finished temporary file and runs while the file is being synced to disk (on
/// another thread), so that it costs no extra time while the disk catches up.
///
/// # Errors
/// As [`atomic_write`], and `check`'s error. Whenever an error is returned, the temporary file
/// is removed and `target` is as it was: a file that fails its check never replaces one that is
/// there.
pub fn atomic_write_checked<T>(
    target: &Path,
    overwrite: bool,
    write: impl FnOnce(&mut FileWriter<'_>) -> Result<T, FormatError>,
    check: impl FnOnce(&Path) -> Result<(), FormatError>,
) -> Result<T, FormatError> {
    write_and_place(target, overwrite, write, Some(check))
}

fn write_and_place<T>(
    target: &Path,
    overwrite: bool,
    write: impl FnOnce(&mut FileWriter<'_>) -> Result<T, FormatError>,
    check: Option<impl FnOnce(&Path) -> Result<(), FormatError>>,
) -> Result<T, FormatError> {
    if !overwrite && target.exists() {
        return Err(FormatError::new(target, ErrorKind::Exists));
    }
    let dir = parent_dir(target);
    let tmp = crate::temp::create_in(&dir).map_err(|e| {
        // The temporary file's own name means nothing to the user: say which folder failed.
        let what = if dir.is_dir() {
            format!("cannot create a file in {}: {e}", dir.display())
        } else {
            format!("the folder {} does not exist", dir.display())
        };
        FormatError::new(target, std::io::Error::new(e.kind(), what))
    })?;
    let value = {
        failpoint::step("write", tmp.path()).map_err(|e| FormatError::new(target, e))?;
        let mut w = FileWriter::new(tmp.as_file());
        let v = write(&mut w).map_err(|e| e.with_path(target))?;
        w.flush().map_err(|e| FormatError::new(target, e))?;
        v
    };
    failpoint::step("fsync", tmp.path()).map_err(|e| FormatError::new(target, e))?;
    match check {
        None => tmp.as_file().sync_all(),
        Some(check) => sync_while(&tmp, check)?,
    }
    .map_err(|e| FormatError::new(target, e))?;
    failpoint::step("rename", target).map_err(|e| FormatError::new(target, e))?;
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

/// Runs `check` on `tmp`'s path while `tmp` is synced on another thread (one after the other
/// when no thread can be started). The check's error comes first; the sync's result is
/// returned for the caller to report.
fn sync_while(
    tmp: &NamedTempFile,
    check: impl FnOnce(&Path) -> Result<(), FormatError>,
) -> Result<io::Result<()>, FormatError> {
    let file = tmp.as_file();
    let (checked, synced) = std::thread::scope(|s| {
        match std::thread::Builder::new()
            .name("tantra-fsync".into())
            .spawn_scoped(s, || file.sync_all())
        {
            Ok(sync) => {
                let checked = check(tmp.path());
                let synced = sync
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the fsync thread panicked")));
                (checked, synced)
            }
            Err(_) => {
                let synced = file.sync_all();
                (check(tmp.path()), synced)
            }
        }
    });
    checked.map(|()| synced)
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
    fn large_writes_arrive_whole_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.bin");
        // Odd sizes around the buffer and the write-back window.
        let data: Vec<u8> = (0..3 * WRITEBACK_WINDOW as usize + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let n = atomic_write(&p, false, |w| {
            let mut pos = 0;
            for step in [7, BUFFER - 1, BUFFER + 3, 5 << 20, 9 << 20].iter().cycle() {
                let end = data.len().min(pos + step);
                w.write_all(&data[pos..end])
                    .map_err(|e| FormatError::new(&p, e))?;
                pos = end;
                if pos == data.len() {
                    return Ok(pos);
                }
            }
            Ok(pos)
        })
        .unwrap();
        assert_eq!(n, data.len());
        assert!(fs::read(&p).unwrap() == data);
    }

    #[test]
    fn a_failed_check_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        atomic_write_bytes(&p, b"old", false).unwrap();
        let mut seen = Vec::new();
        let r = atomic_write_checked(
            &p,
            true,
            |w| w.write_all(b"new").map_err(|e| FormatError::new(&p, e)),
            |tmp| {
                // The check reads the finished temporary file, not the target.
                seen = fs::read(tmp).map_err(|e| FormatError::new(tmp, e))?;
                assert_ne!(tmp, p.as_path());
                Err(FormatError::new(tmp, ErrorKind::Verify("differs".into())))
            },
        );
        assert!(matches!(r.unwrap_err().kind, ErrorKind::Verify(_)));
        assert_eq!(seen, b"new");
        assert_eq!(fs::read(&p).unwrap(), b"old");
        assert!(stale_temp_files(dir.path()).unwrap().is_empty());
        atomic_write_checked(
            &p,
            true,
            |w| w.write_all(b"new").map_err(|e| FormatError::new(&p, e)),
            |_| Ok(()),
        )
        .unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"new");
    }

    #[test]
    fn a_missing_folder_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("x.bin");
        let err = atomic_write_bytes(&p, b"one", false).unwrap_err();
        let err = crate::chain(&err).to_string();
        assert!(err.contains("x.bin"), "{err}");
        assert!(err.contains("missing does not exist"), "{err}");
        assert!(!err.contains(TEMP_PREFIX), "{err}");
    }

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
