//! `tantra versions MODEL [--json]`: the versions of a model.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

use super::list_weights::short_time;
use crate::table::{group_digits, human_bytes, render};

#[derive(clap::Args)]
pub struct Args {
    /// The model.
    pub model: String,
    /// Print a JSON array of versions.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    let rows = wm.versions(&a.model)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|v| {
            vec![
                v.version.clone(),
                if v.default { "*".into() } else { String::new() },
                short_time(&v.created),
                v.formats.join(","),
                human_bytes(v.bytes),
                group_digits(v.parameters),
                v.tags.join(","),
                v.config.clone().unwrap_or_default(),
                v.note.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "version",
                "default",
                "created",
                "formats",
                "size",
                "parameters",
                "tags",
                "config",
                "note"
            ],
            &table
        )
    );
    Ok(ExitCode::SUCCESS)
}
