//! `tantra log [MODEL[:VERSION]] [-n N] [--json]`: the history of registry changes, newest
//! first: generation, time, user, command and what changed.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::{VerifyScope, WeightManager};

use super::list_weights::short_time;
use crate::table::render;

#[derive(clap::Args)]
pub struct Args {
    /// MODEL or MODEL:VERSION (default: everything).
    pub target: Option<String>,
    /// Show at most N entries.
    #[arg(short = 'n', long, value_name = "N")]
    pub limit: Option<usize>,
    /// Print a JSON array of entries (newest first).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let scope = match &a.target {
        Some(t) => VerifyScope::parse(t)?,
        None => VerifyScope::default(),
    };
    let mut entries =
        WeightManager::open(root)?.log(scope.model.as_deref(), scope.version.as_deref())?;
    entries.reverse();
    if let Some(n) = a.limit {
        entries.truncate(n);
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        crate::note!("no history under {}", root.display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for e in &entries {
        for (i, c) in e.changes.iter().enumerate() {
            let what = match &c.version {
                Some(v) => format!("{}:{v}", c.model),
                None => c.model.clone(),
            };
            let head = if i == 0 {
                vec![
                    e.generation.to_string(),
                    short_time(&e.time),
                    e.user.clone(),
                    e.command.clone(),
                ]
            } else {
                vec![String::new(); 4]
            };
            let mut row = head;
            row.extend([c.kind.name().to_string(), what, c.detail.clone()]);
            rows.push(row);
        }
    }
    print!(
        "{}",
        render(
            &["gen", "time", "user", "command", "change", "version", "detail"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}
