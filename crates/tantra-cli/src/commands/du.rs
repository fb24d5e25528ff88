//! `tantra du [--json]`: the bytes a root uses for weights, backups and checkpoints, and how
//! many of them are shared through hard links (counted once on disk).

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

use crate::table::{human_bytes, render};

#[derive(clap::Args)]
pub struct Args {
    /// Print {weights, backups, checkpoints, other, total, shared, files} (bytes) as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let u = WeightManager::open(root)?.disk_usage()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&u)?);
        return Ok(ExitCode::SUCCESS);
    }
    let row = |k: &str, v: u64| vec![k.to_string(), human_bytes(v)];
    print!(
        "{}",
        render(
            &["what", "size"],
            &[
                row("weights", u.weights),
                row("backups", u.backups),
                row("checkpoints", u.checkpoints),
                row("other", u.other),
                row("shared", u.shared),
                row("on disk", u.total),
            ]
        )
    );
    if u.backups > 0 {
        crate::note!("free backups with `tantra backups rm ID...` or `tantra cleanup --backups-older-than 30d`");
    }
    Ok(ExitCode::SUCCESS)
}
