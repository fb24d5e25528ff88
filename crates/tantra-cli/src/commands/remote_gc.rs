//! `tantra remote gc [NAME] [--dry-run] [--grace DURATION] [--json]`: remove the blobs of a
//! remote that no manifest references. A blob goes only when it has been unreferenced for a
//! whole grace period (two runs apart) and is older than it, so pushes in flight keep theirs.

use std::path::Path;
use std::process::ExitCode;

use tantra_remote::client::Client;
use tantra_remote::config::Remotes;
use tantra_remote::gc::{gc, GcOptions};

use crate::table::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// The remote (default: the default or only one).
    pub name: Option<String>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How long a blob must have been unreferenced (and old) before it goes: `30s`, `10m`,
    /// `24h`, `7d`. `0s` removes unreferenced blobs at once (only when nobody pushes).
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    pub grace: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let grace =
        tantra_store::parse_duration(&a.grace).map_err(|e| anyhow::anyhow!("--grace: {e}"))?;
    let (name, def) = Remotes::load(root)?.get(a.name.as_deref())?;
    let client = Client::connect(&name, &def)?;
    let r = gc(
        &client,
        &GcOptions {
            dry_run: a.dry_run,
            grace,
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        let verb = if r.dry_run { "would remove" } else { "removed" };
        println!(
            "{name}: {} manifests, {} blobs ({} referenced); {verb} {} blobs ({}); {} unreferenced blobs wait for the grace period ({}); {} stale claims removed",
            r.manifests,
            r.blobs,
            r.blobs_referenced,
            r.removed.len(),
            human_bytes(r.removed_bytes),
            r.pending,
            human_bytes(r.pending_bytes),
            r.stale_claims_removed
        );
    }
    Ok(ExitCode::SUCCESS)
}
