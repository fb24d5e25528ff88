//! `tantra backups [--json]`: what was overwritten or removed, and can be restored;
//! `tantra backups rm ID... [--dry-run] [--json]` frees them.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

use super::list_weights::short_time;
use crate::table::{human_bytes, render};

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Print a JSON array of backups.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Delete backups by id (or unique prefix), freeing their space.
    Rm {
        /// The backup ids (see `tantra backups`).
        #[arg(required = true, value_name = "ID")]
        ids: Vec<String>,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Print {removed: [...], bytes, freed, dry_run} as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    if let Some(Action::Rm { ids, dry_run, json }) = a.action {
        let r = WeightManager::open(root)?.remove_backups(&ids, dry_run)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&r)?);
            return Ok(ExitCode::SUCCESS);
        }
        let verb = if r.dry_run { "would remove" } else { "removed" };
        for b in &r.removed {
            println!(
                "{verb} backup {} ({}, {})",
                b.id,
                b.original,
                human_bytes(b.bytes)
            );
        }
        println!(
            "{verb} {} backup{}, {}; {} freed{}",
            r.removed.len(),
            if r.removed.len() == 1 { "" } else { "s" },
            human_bytes(r.bytes),
            human_bytes(r.freed),
            if r.dry_run { " (dry run)" } else { "" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let list = WeightManager::open(root)?.backups()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if list.is_empty() {
        crate::note!("no backups under {}", root.display());
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
