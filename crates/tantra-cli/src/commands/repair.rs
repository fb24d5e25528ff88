//! `tantra repair [--dry-run] [--json]`: fix what `verify` finds (a damaged or missing registry,
//! damaged or missing registered files, digests, checkpoint records), each result proven before
//! it replaces anything; exit 1 when something could not be fixed.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

use crate::progress::Bar;
use crate::table::render;

#[derive(clap::Args)]
pub struct Args {
    /// Only say what would be fixed.
    #[arg(long)]
    pub dry_run: bool,
    /// Print {dry_run, actions: [...]} as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let report = WeightManager::open(root)?.repair(a.dry_run, &Bar::new())?;
    let code = if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    if report.actions.is_empty() {
        crate::note!("nothing to repair under {}", root.display());
        return Ok(code);
    }
    let rows: Vec<Vec<String>> = report
        .actions
        .iter()
        .map(|x| {
            let state = match (x.fixed, report.dry_run) {
                (true, true) => "fixable",
                (true, false) => "fixed",
                (false, _) => "NOT FIXED",
            };
            vec![
                state.into(),
                x.what.clone(),
                x.path.clone(),
                x.detail.clone(),
            ]
        })
        .collect();
    print!("{}", render(&["state", "what", "path", "detail"], &rows));
    let bad = report.actions.iter().filter(|x| !x.fixed).count();
    if bad > 0 {
        crate::note!(
            "{bad} problem{} could not be fixed: see the detail column",
            if bad == 1 { "" } else { "s" }
        );
    }
    Ok(code)
}
