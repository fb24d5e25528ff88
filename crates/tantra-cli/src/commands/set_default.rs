//! `tantra set-default MODEL VERSION`: the version loaded when none is named.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

#[derive(clap::Args)]
pub struct Args {
    pub model: String,
    pub version: String,
    /// Print {model, default} as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    WeightManager::open(root)?.set_default(&a.model, &a.version)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"model": a.model, "default": a.version})
        );
    } else {
        eprintln!("{}: default version is now {}", a.model, a.version);
    }
    Ok(ExitCode::SUCCESS)
}
