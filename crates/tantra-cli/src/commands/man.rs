//! `tantra man [--dir DIR]`: the manual page, generated from the same clap definitions that
//! parse the command line. To stdout `tantra.1`; with `--dir`, one page per command
//! (`tantra.1`, `tantra-register.1`, ...) written into DIR, ready for `MANPATH`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Write every page (tantra.1 and tantra-COMMAND.1) into this folder instead of printing
    /// tantra.1 (e.g. ~/.local/share/man/man1).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let cmd = super::command();
    match a.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("{}: cannot create the folder", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("{}: cannot write the manual pages", dir.display()))?;
            let n = std::fs::read_dir(&dir)
                .map(|d| d.filter_map(Result::ok).count())
                .unwrap_or(0);
            crate::note!("wrote {n} manual pages to {}", dir.display());
        }
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out)?;
            use std::io::Write;
            std::io::stdout().write_all(&out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
