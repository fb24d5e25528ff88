//! Failpoints: a way for tests to make any one file-system step of a tantra command fail, or
//! kill the process at that step, so that crash safety is tested at every step rather than
//! argued.
//!
//! Every step that changes the file system (creating, writing, syncing, renaming, linking and
//! removing files, creating folders) calls [`step`] first. Steps are counted per process, from 1.
//! Nothing happens unless the environment asks for it:
//!
//! - `TANTRA_FAILPOINT=N` makes step N fail with an I/O error ("injected failure").
//! - `TANTRA_FAILPOINT=N:kill` makes the process kill itself with `SIGKILL` at step N, as a
//!   power cut or `kill -9` would, before the step happens.
//! - `TANTRA_FAILPOINT_LOG=FILE` appends one line per step (`N KIND PATH`), so that a test can
//!   count the steps of a command and then fail each one in turn.
//!
//! The variables are read once per process. A program that never sets them pays one relaxed
//! atomic load per step. They are for tests: they are documented in `docs/store.md` and never
//! set by tantra itself.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// What a failpoint does when its step comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fail,
    Kill,
}

#[derive(Debug)]
struct Config {
    at: Option<(u64, Action)>,
    log: Option<std::path::PathBuf>,
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let at = std::env::var("TANTRA_FAILPOINT").ok().and_then(|s| {
            let (n, action) = match s.split_once(':') {
                Some((n, "kill")) => (n.to_string(), Action::Kill),
                Some(_) => return None,
                None => (s, Action::Fail),
            };
            n.trim().parse::<u64>().ok().map(|n| (n, action))
        });
        let log = std::env::var_os("TANTRA_FAILPOINT_LOG").map(std::path::PathBuf::from);
        Config { at, log }
    })
}

static STEPS: AtomicU64 = AtomicU64::new(0);

/// Called before every file-system step that changes something: `kind` names the step
/// (`create`, `write`, `fsync`, `rename`, `link`, `unlink`, `mkdir`, `syncdir`), `path` what it
/// acts on.
///
/// # Errors
/// The injected failure, when `TANTRA_FAILPOINT` names this step.
pub fn step(kind: &str, path: &Path) -> io::Result<()> {
    let cfg = config();
    if cfg.at.is_none() && cfg.log.is_none() {
        return Ok(());
    }
    let n = STEPS.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some(log) = &cfg.log {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{n} {kind} {}", path.display());
        }
    }
    match cfg.at {
        Some((at, Action::Fail)) if at == n => Err(io::Error::other(format!(
            "injected failure at step {n} ({kind})"
        ))),
        Some((at, Action::Kill)) if at == n => {
            #[cfg(target_os = "linux")]
            // SAFETY: kill(2) with our own pid and a valid signal number has no memory effects.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
            std::process::abort()
        }
        _ => Ok(()),
    }
}
