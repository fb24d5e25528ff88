//! `tantra cleanup [--keep N] [--model M] [--backups-older-than 7d] [--orphans] [--no-backup]
//! [--dry-run] [--json]`: retention and the sweep of what crashes leave behind. With no rule
//! given it sweeps orphans.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::parse_duration;
use tantra_store::{CleanupAction, CleanupOptions, WeightManager};

use crate::table::{human_bytes, render};

#[derive(clap::Args)]
pub struct Args {
    /// Keep the N newest versions of each model (the default and tagged versions always stay).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Apply --keep to this model only.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Remove backups older than this (90s, 15m, 12h, 7d, 2w).
    #[arg(long, value_name = "DURATION")]
    pub backups_older_than: Option<String>,
    /// Sweep what crashes leave: temp files are deleted; files in weights/ the registry does
    /// not name, checkpoint files without a record and unlisted backups are moved to
    /// quarantine/ (never deleted).
    #[arg(long)]
    pub orphans: bool,
    /// Delete removed versions and orphans without keeping a backup.
    #[arg(long)]
    pub no_backup: bool,
    /// Show what would go and how many bytes; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print {dry_run, bytes, items: [...]} as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let backups_older_than = match &a.backups_older_than {
        Some(s) => Some(
            parse_duration(s).map_err(|e| anyhow::anyhow!("--backups-older-than {s:?}: {e}"))?,
        ),
        None => None,
    };
    let nothing_chosen = a.keep.is_none() && backups_older_than.is_none() && !a.orphans;
    let opts = CleanupOptions {
        keep_versions: a.keep,
        model: a.model,
        backups_older_than,
        orphans: a.orphans || nothing_chosen,
        dry_run: a.dry_run,
        no_backup: a.no_backup,
    };
    let report = WeightManager::open(root)?.cleanup(&opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    let count = |a: CleanupAction| report.items.iter().filter(|i| i.action == a).count();
    if !report.items.is_empty() {
        let rows: Vec<Vec<String>> = report
            .items
            .iter()
            .map(|i| {
                vec![
                    i.action.name().into(),
                    i.kind.name().into(),
                    i.path.clone(),
                    human_bytes(i.bytes),
                    i.reason.clone(),
                    i.backup.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            render(
                &["action", "kind", "path", "size", "reason", "backup"],
                &rows
            )
        );
    }
    let moved = if report.dry_run {
        "would move"
    } else {
        "moved"
    };
    println!(
        "{verb} {} item{} ({}); {moved} {} to quarantine; {} kept",
        count(CleanupAction::Delete),
        if count(CleanupAction::Delete) == 1 {
            ""
        } else {
            "s"
        },
        human_bytes(report.bytes),
        count(CleanupAction::Quarantine),
        count(CleanupAction::Keep),
    );
    Ok(ExitCode::SUCCESS)
}
