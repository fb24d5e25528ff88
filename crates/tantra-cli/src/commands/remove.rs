//! `tantra remove MODEL:VERSION [--format F] [--force] [--no-backup] [--dry-run] [--json]`:
//! unregister a version (or one of its formats) and unlink its files; every file is backed up
//! first unless `--no-backup`, so the report says what is freed now and what stays in backups.

use std::path::Path;
use std::process::ExitCode;

use tantra_formats::OutputFormat;
use tantra_store::{RemoveOptions, WeightManager};

use crate::table::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// The version to remove: MODEL:VERSION (a tag names its version).
    #[arg(value_name = "MODEL:VERSION")]
    pub target: String,
    /// The version, when written apart (older spelling: MODEL VERSION).
    #[arg(value_name = "VERSION")]
    pub version: Option<String>,
    /// Remove only this format.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
    /// Allow removing the model's default version.
    #[arg(long)]
    pub force: bool,
    /// Delete without a backup, so that the space is freed now.
    #[arg(long)]
    pub no_backup: bool,
    /// Only say what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let opts = RemoveOptions {
        format: a.format,
        force: a.force,
        no_backup: a.no_backup,
        dry_run: a.dry_run,
    };
    let t = crate::target::versioned(&a.target, a.version.as_deref(), "remove")?;
    let version = t.version.as_deref().unwrap_or_default();
    let r = WeightManager::open(root)?.remove_with(&t.model, version, &opts)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if r.dry_run { "would remove" } else { "removed" };
    for (f, path) in &r.removed {
        println!("{verb} {f:<11} {path}");
    }
    println!(
        "{}:{}: {verb} {}{}; freed now {}, kept in backups {}{}",
        r.model,
        r.version,
        human_bytes(r.bytes),
        if r.version_removed {
            ", the version is gone"
        } else {
            ""
        },
        human_bytes(r.freed),
        human_bytes(r.kept_in_backups),
        if r.backups.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.backups.join(", "))
        }
    );
    Ok(ExitCode::SUCCESS)
}
