//! The `tantra` command. Parsing and dispatch only; each command lives in `commands/`.

mod commands;
mod progress;
mod say;
mod signals;
mod table;
mod target;
mod when;

use std::process::ExitCode;

fn main() -> ExitCode {
    restore_sigpipe();
    signals::install();
    let cli = commands::Cli::parse_args();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", commands::error_line(&e));
            ExitCode::from(2)
        }
    }
}

/// Rust ignores SIGPIPE, which turns `tantra list-weights | head` into a panic on the next
/// `println!`. A command-line tool should instead end quietly when its reader goes away, as
/// `cat` does: restore the default action.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at startup, before any thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
