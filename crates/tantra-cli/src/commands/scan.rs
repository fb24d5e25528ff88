//! `tantra scan FILE... [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Files to scan (PyTorch archives, legacy files, bare pickles).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    pub json: bool,
}

pub fn run(_a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("scan: being implemented")
}
