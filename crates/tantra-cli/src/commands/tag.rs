//! `tantra tag MODEL VERSION TAG [--remove]`: label a version (tagged versions survive
//! `cleanup --keep`).

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

#[derive(clap::Args)]
pub struct Args {
    pub model: String,
    pub version: String,
    pub tag: String,
    /// Remove the tag instead.
    #[arg(long)]
    pub remove: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    WeightManager::open(root)?.tag(&a.model, &a.version, &a.tag, a.remove)?;
    let what = if a.remove { "removed tag" } else { "tagged" };
    eprintln!("{}:{}: {what} {}", a.model, a.version, a.tag);
    Ok(ExitCode::SUCCESS)
}
