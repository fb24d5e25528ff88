//! `tantra backups [--json]`: what was overwritten or removed, and can be restored.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

use super::list_weights::short_time;
use crate::table::{human_bytes, render};

#[derive(clap::Args)]
pub struct Args {
    /// Print a JSON array of backups.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let list = WeightManager::open(root)?.backups()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        eprintln!("no backups under {}", root.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.id.clone(),
                b.kind.name().into(),
                b.original.clone(),
                human_bytes(b.bytes),
                short_time(&b.created),
                b.reason.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &["id", "kind", "original", "size", "taken", "reason"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}
