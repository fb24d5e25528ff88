//! Temporary files: the one way tantra creates a file before it takes its final name.
//!
//! Three promises hang on this module:
//! - **Modes follow the umask.** A temporary file is created `0666 & !umask` (the kernel applies
//!   the umask to the mode given to `open`), so the renamed file is as readable as any file the
//!   user creates and a weights root shared by a group works. (`tempfile`'s default is `0600`.)
//! - **A live writer's file is never swept.** The file holds an exclusive `flock` from its
//!   creation until it is renamed or dropped, and [`is_stale`] calls a temporary file stale only
//!   when that lock can be taken *and* the file was last modified more than [`STALE_AFTER`]
//!   ago. The age rule closes the instant between `open` and `flock`, and covers file systems
//!   without `flock`.
//! - **An interrupted command leaves nothing.** Every live temporary file is listed in a
//!   process-wide table; a signal handler (the CLI installs one for SIGINT, SIGTERM and SIGHUP)
//!   calls [`remove_live`] before the process exits. `SIGKILL` cannot be caught: what it leaves
//!   is stale by the rules above, and `tantra cleanup` removes it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tempfile::NamedTempFile;

use crate::failpoint;

/// Prefix of every temporary file tantra creates next to a target.
pub const TEMP_PREFIX: &str = ".tantra-tmp-";

/// A temporary file whose lock can be taken is removed by cleanup only when it is older than
/// this (`TANTRA_TEMP_GRACE` seconds overrides it, for tests).
pub const STALE_AFTER: Duration = Duration::from_secs(60);

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Creates a temporary file in `dir`: mode `0666 & !umask`, named with [`TEMP_PREFIX`], locked,
/// and listed for removal on a signal.
///
/// # Errors
/// The folder cannot be written (or a failpoint says so).
pub fn create_in(dir: &Path) -> io::Result<NamedTempFile> {
    failpoint::step("create", dir)?;
    let mut b = tempfile::Builder::new();
    b.prefix(TEMP_PREFIX).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(fs::Permissions::from_mode(0o666));
    }
    let tmp = b.tempfile_in(dir)?;
    // A file system without flock still works: the age rule of `is_stale` protects the file.
    let _ = tmp.as_file().try_lock();
    if let Ok(mut live) = LIVE.lock() {
        // Forget files that were renamed or removed since, so the table stays small.
        live.retain(|p| p.exists());
        live.push(tmp.path().to_path_buf());
    }
    Ok(tmp)
}

/// Removes every temporary file this process created and has not yet renamed or dropped.
/// Meant for signal handlers: it takes no lock that a writer could hold for long, and it never
/// removes a file that is not a tantra temporary file.
pub fn remove_live() {
    let paths: Vec<PathBuf> = match LIVE.try_lock() {
        Ok(mut live) => std::mem::take(&mut *live),
        Err(_) => return,
    };
    for p in paths {
        let is_temp = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if is_temp {
            let _ = fs::remove_file(&p);
        }
    }
}

/// True when the file name is one of tantra's temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

fn grace() -> Duration {
    std::env::var("TANTRA_TEMP_GRACE")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(STALE_AFTER)
}

/// True when the temporary file at `path` belongs to no live process: its lock can be taken and
/// it has not been modified for [`STALE_AFTER`].
pub fn is_stale(path: &Path) -> bool {
    let Ok(f) = fs::File::open(path) else {
        return false;
    };
    let unlocked = match f.try_lock() {
        Ok(()) => {
            let _ = f.unlock();
            true
        }
        Err(fs::TryLockError::WouldBlock) => false,
        Err(fs::TryLockError::Error(_)) => true,
    };
    let old = f
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|age| age >= grace());
    unlocked && old
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_follow_the_umask_and_are_locked() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = create_in(dir.path()).unwrap();
        assert!(is_temp_name(
            &tmp.path().file_name().unwrap().to_string_lossy()
        ));
        assert!(!is_stale(tmp.path()), "a live file is never stale");
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777;
            let status = fs::read_to_string("/proc/self/status").unwrap();
            let mask = status
                .lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
                .unwrap();
            assert_eq!(mode, 0o666 & !mask, "mode {mode:o}");
        }
    }

    #[test]
    fn an_unlocked_new_file_is_not_stale_until_it_is_old() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(format!("{TEMP_PREFIX}x.tmp"));
        fs::write(&p, b"x").unwrap();
        assert!(!is_stale(&p), "too young");
        let old = SystemTime::now() - Duration::from_secs(3600);
        fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(is_stale(&p));
    }

    #[test]
    fn remove_live_removes_only_live_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = create_in(dir.path()).unwrap();
        let path = tmp.path().to_path_buf();
        let keep = dir.path().join("weights.pt");
        fs::write(&keep, b"w").unwrap();
        std::mem::forget(tmp); // as if the process were interrupted mid-write
        remove_live();
        assert!(!path.exists());
        assert!(keep.exists());
    }
}
