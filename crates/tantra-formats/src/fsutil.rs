//! Crash-safe file writing: temporary file in the target directory, flush, `fsync`, rename,
//! `fsync` of the directory.
//!
//! A crash at any instant leaves either the old file or the new one under the final name, never
//! a half-written one. Temporary files carry the [`TEMP_PREFIX`] so that cleanup can recognise
//! what a crash left behind.
//!
//! # Why the `fsync` is not slow
//! Weight files are hundreds of megabytes. Left alone, the kernel would hold all of it dirty in
//! memory until the final `fsync`, which then waits for the whole file to reach the disk: for a
//! conversion that was a third of its time, with the CPU idle. [`FileWriter`] (on Linux) asks the
//! kernel to start writing each window of [`WRITEBACK_WINDOW`] bytes as soon as it is written
//! (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which starts the I/O and does not wait for it), so
//! the disk works while the rest of the file is produced and the `fsync` finds little left. It
//! changes nothing about durability: the `fsync` still runs and still reports any write-back
//! error (starting write-back does not consume the error the way waiting for it would).
//!
//! [`atomic_write_checked`] also lets a caller check the finished temporary file (re-read it)
//! while that last `fsync` runs on another thread, before the file takes the target's name: a
//! check that fails leaves the old target untouched.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tempfile::NamedTempFile;

use crate::error::{ErrorKind, FormatError};

/// Prefix of every temporary file tantra creates next to a target.
pub const TEMP_PREFIX: &str = ".tantra-tmp-";

/// [`FileWriter`] starts write-back each time this many more bytes have reached the file.
pub const WRITEBACK_WINDOW: u64 = 8 << 20;

/// The buffer of [`FileWriter`]; writes at least this large go straight to the file.
const BUFFER: usize = 1 << 20;

/// The writer [`atomic_write`] hands out: buffered ([`BUFFER`] bytes; larger writes go straight
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
                    kicked: 0,
                    kick: if cfg!(target_os = "linux") && std::env::var_os("XX_NO_SFR").is_none() {
                        Kick::Idle
                    } else {
                        Kick::Off
                    },
                },
            ),
        }
    }

    /// Flushes, and waits for the write-back thread to have started the write-back of all it
    /// was asked for.
    ///
    /// # Errors
    /// The flush's error, or an I/O error the kernel reported when write-back was started.
    fn finish(mut self) -> io::Result<()> {
        self.inner.flush()?;
        self.inner.get_mut().finish()
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

/// Who starts the write-back of what [`WritebackAhead`] has written.
enum Kick {
    /// Nobody yet: less than a window has been written (most files never get further).
    Idle,
    /// A thread of its own, told how far the file is written, so that the writer does not wait
    /// while the kernel queues the pages for the disk.
    Thread {
        lengths: mpsc::Sender<u64>,
        thread: JoinHandle<io::Result<()>>,
    },
    /// Nobody: no `sync_file_range` here, or no thread or file descriptor to spare.
    Off,
}

/// Writes to a file from offset 0 and has the write-back of each full window started.
struct WritebackAhead<'a> {
    file: &'a File,
    /// Bytes written so far: the file's length, since it is written from the start.
    written: u64,
    /// Write-back was asked for up to here.
    kicked: u64,
    kick: Kick,
}

impl WritebackAhead<'_> {
    /// Has the write-back of `0..written` started, starting the thread on first use.
    fn kick(&mut self) {
        self.kicked = self.written;
        if let Kick::Idle = self.kick {
            // The thread gets a file descriptor of its own, so that it borrows nothing.
            self.kick = match self.file.try_clone() {
                Ok(file) => start_writeback_thread(file),
                Err(_) => Kick::Off,
            };
        }
        if let Kick::Thread { lengths, .. } = &self.kick {
            // A thread that has stopped (it failed; its error is reported when it is joined,
            // or it was refused the call) costs only the head start.
            let _ = lengths.send(self.written);
        }
    }

    /// Hangs up on the write-back thread and returns what it found.
    fn finish(&mut self) -> io::Result<()> {
        match std::mem::replace(&mut self.kick, Kick::Off) {
            Kick::Thread { lengths, thread } => {
                drop(lengths);
                thread
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("the write-back thread panicked")))
            }
            Kick::Idle | Kick::Off => Ok(()),
        }
    }
}

impl Write for WritebackAhead<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.kicked >= std::env::var("XX_WINDOW").ok().and_then(|v| v.parse().ok()).unwrap_or(WRITEBACK_WINDOW) {
            self.kick();
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Starts the thread that starts write-back up to the latest length it is told, until the
/// writer hangs up. Without a thread, the final `fsync` does all the work.
fn start_writeback_thread(file: File) -> Kick {
    let (lengths, rx) = mpsc::channel::<u64>();
    let spawned = std::thread::Builder::new()
        .name("tantra-writeback".into())
        .spawn(move || {
            let mut started = 0;
            while let Ok(mut upto) = rx.recv() {
                // Catch up in one call when the writer got ahead.
                while let Ok(more) = rx.try_recv() {
                    upto = more;
                }
                if !start_writeback(&file, started, upto)? {
                    break;
                }
                started = upto;
            }
            Ok(())
        });
    match spawned {
        Ok(thread) => Kick::Thread { lengths, thread },
        Err(_) => Kick::Off,
    }
}

/// Starts (does not wait for) the write-back of `from..to` of `file`. `Ok(false)` when the
/// system or the file system refuses the call (a sandbox, a file system without it): no error,
/// the final `fsync` then does all the work, as on other systems.
///
/// # Errors
/// An I/O error the kernel reports on starting (EIO, ENOSPC): the file will not be written.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, from: u64, to: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (
        libc::off64_t::try_from(from),
        libc::off64_t::try_from(to.saturating_sub(from)),
    ) else {
        return Ok(false);
    };
    // SAFETY: a plain system call on a file descriptor that `file` keeps open; it reads no
    // memory of this process.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ESPIPE | libc::ENOSYS | libc::EPERM | libc::EOPNOTSUPP) => {
            Ok(false)
        }
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _from: u64, _to: u64) -> io::Result<bool> {
    Ok(false)
}

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
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(|e| FormatError::new(target, e))?;
    let xx_t0 = std::time::Instant::now();
    let value = {
        let mut w = FileWriter::new(tmp.as_file());
        let v = write(&mut w).map_err(|e| e.with_path(target))?;
        w.finish().map_err(|e| FormatError::new(target, e))?;
        v
    };
    let xx_t1 = std::time::Instant::now();
    match check {
        None => tmp.as_file().sync_all(),
        Some(check) => sync_while(&tmp, check)?,
    }
    .map_err(|e| FormatError::new(target, e))?;
    let xx_t2 = std::time::Instant::now();
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
    if std::env::var_os("XX_TIMING").is_some() {
        eprintln!("XX write {:.3} sync+check {:.3} place {:.3}", (xx_t1-xx_t0).as_secs_f64(), (xx_t2-xx_t1).as_secs_f64(), xx_t2.elapsed().as_secs_f64());
    }
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
                let xx = std::time::Instant::now();
                let checked = check(tmp.path());
                if std::env::var_os("XX_TIMING").is_some() { eprintln!("XX check {:.3}", xx.elapsed().as_secs_f64()); }
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
