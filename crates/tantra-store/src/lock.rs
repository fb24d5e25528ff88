//! The root's advisory lock.
//!
//! Every read-modify-write of the registry, the backup manifest and the checkpoint records
//! happens while holding an exclusive `flock` on `<root>/.lock`, so that concurrent tantra
//! processes serialize their updates and none is lost. The lock is only ever held for short
//! critical sections (renames and small JSON writes): hashing, copying and converting happen
//! before it is taken. The kernel releases it when the holder exits, so a crashed process never
//! leaves it held; correctness does not rest on it alone (every write is atomic, and readers
//! never need it).
//!
//! Waiting uses `try_lock` in a loop with a growing sleep rather than a blocking `lock`, so that
//! the wait can time out with an error that names the lock file.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Result, StoreError};

/// The default time to wait for the lock; `TANTRA_LOCK_TIMEOUT` (seconds) overrides it.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The lock timeout from `TANTRA_LOCK_TIMEOUT` (seconds, fractions allowed), else the default.
pub fn lock_timeout_from_env() -> Result<Duration> {
    match std::env::var("TANTRA_LOCK_TIMEOUT") {
        Err(_) => Ok(DEFAULT_LOCK_TIMEOUT),
        Ok(s) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| StoreError::InvalidArgument {
                what: "TANTRA_LOCK_TIMEOUT",
                value: s.clone(),
                detail: "a number of seconds (e.g. 60 or 2.5)".into(),
            }),
    }
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct RootLock {
    file: File,
    path: PathBuf,
}

impl RootLock {
    /// Takes the exclusive lock on `path` (created if missing), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`StoreError::LockTimeout`] naming the lock file when another process holds it for
    /// longer; [`StoreError::Io`] when the file cannot be opened or locked at all.
    pub fn acquire(path: &Path, timeout: Duration) -> Result<RootLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => {
                    HELD.with(|h| h.borrow_mut().push(path.to_path_buf()));
                    return Ok(RootLock {
                        file,
                        path: path.to_path_buf(),
                    });
                }
                Err(TryLockError::WouldBlock) => {
                    let waited = start.elapsed();
                    if waited >= timeout {
                        return Err(StoreError::LockTimeout {
                            path: path.to_path_buf(),
                            waited,
                        });
                    }
                    std::thread::sleep(pause.min(timeout - waited));
                    pause = (pause * 2).min(Duration::from_millis(25));
                }
                Err(TryLockError::Error(e)) => return Err(StoreError::io(path, e)),
            }
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RootLock {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut held = h.borrow_mut();
            if let Some(i) = held.iter().position(|p| *p == self.path) {
                held.swap_remove(i);
            }
        });
        // Closing the file releases the lock anyway; unlocking first makes it prompt.
        let _ = self.file.unlock();
    }
}

thread_local! {
    /// Lock files this thread holds: a writer never waits for itself (other threads of the
    /// process do wait: their `flock`s conflict like other processes').
    static HELD: std::cell::RefCell<Vec<std::path::PathBuf>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Waits (at most `timeout`) while a writer holds the lock at `path`, without taking it for
/// more than an instant: readers use this when what they read looks like a write in flight
/// (a registry not yet there on a root's first registration). Opening the lock file read-only
/// and taking a shared lock works for a user who can only read the root. Returns true when a
/// writer was seen.
pub fn wait_for_writer(path: &Path, timeout: Duration) -> bool {
    if HELD.with(|h| h.borrow().iter().any(|p| p == path)) {
        return false;
    }
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let start = std::time::Instant::now();
    let mut seen = false;
    loop {
        match file.try_lock_shared() {
            Ok(()) => {
                let _ = file.unlock();
                return seen;
            }
            Err(std::fs::TryLockError::WouldBlock) => seen = true,
            Err(std::fs::TryLockError::Error(_)) => return seen,
        }
        if start.elapsed() >= timeout {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_times_out_with_the_lock_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        let held = RootLock::acquire(&p, Duration::from_secs(1)).unwrap();
        let err = RootLock::acquire(&p, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(err, StoreError::LockTimeout { .. }));
        assert!(err.to_string().contains(&p.display().to_string()));
        drop(held);
        RootLock::acquire(&p, Duration::from_millis(50)).unwrap();
    }

    #[test]
    fn waiters_get_the_lock_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        let counter = std::sync::Mutex::new(0u32);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let _l = RootLock::acquire(&p, Duration::from_secs(10)).unwrap();
                        let mut c = counter.lock().unwrap();
                        *c += 1;
                    }
                });
            }
        });
        assert_eq!(*counter.lock().unwrap(), 80);
    }
}
