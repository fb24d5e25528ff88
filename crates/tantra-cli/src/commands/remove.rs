//! `tantra remove MODEL VERSION [--format F] [--force] [--json]`: unregister and delete a
//! version (or one of its formats); every file is backed up first.

use std::path::Path;
use std::process::ExitCode;

use tantra_formats::OutputFormat;
use tantra_store::WeightManager;

use crate::table::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    pub model: String,
    pub version: String,
    /// Remove only this format.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
    /// Allow removing the model's default version.
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let r = WeightManager::open(root)?.remove(&a.model, &a.version, a.format, a.force)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (f, path) in &r.removed {
        println!("removed {f:<11} {path}");
    }
    println!(
        "{}:{}: {} removed{}; backups: {}",
        r.model,
        r.version,
        human_bytes(r.bytes),
        if r.version_removed {
            ", version gone"
        } else {
            ""
        },
        r.backups.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
