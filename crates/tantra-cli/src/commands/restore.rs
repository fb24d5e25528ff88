//! `tantra restore ID [--json]`: put a backed-up file back where it was, atomically.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// The backup id (see `tantra backups`); a unique prefix is enough.
    pub id: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let r = WeightManager::open(root)?.restore(&a.id, &Bar::new())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("restored {} to {}", r.id, r.path);
    for id in &r.backups {
        println!("  what was there is backed up as {id}");
    }
    Ok(ExitCode::SUCCESS)
}
