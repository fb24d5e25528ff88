//! `-q/--quiet`: messages for people (confirmations, hints, speeds) go through [`note!`],
//! which `--quiet` silences; data on stdout, warnings and errors are never silenced.

use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Set once by `main` from `--quiet`.
pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

/// True under `--quiet`.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// `eprintln!` unless `--quiet`.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => {
        if !$crate::say::quiet() {
            eprintln!($($t)*);
        }
    };
}
