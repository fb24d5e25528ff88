//! `tantra verify [MODEL[:VERSION]] [--json]`: re-hash registered files and checkpoints;
//! exit 1 when anything is missing, changed or unregistered.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::{VerifyScope, WeightManager};

use crate::progress::Bar;
use crate::table::{human_bytes, render};

#[derive(clap::Args)]
pub struct Args {
    /// MODEL or MODEL:VERSION (default: everything).
    pub target: Option<String>,
    /// Print {files, bytes, seconds, problems: [...]} as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let scope = match &a.target {
        Some(t) => VerifyScope::parse(t)?,
        None => VerifyScope::default(),
    };
    let report = WeightManager::open(root)?.verify(&scope, &Bar::new())?;
    let code = if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(code);
    }
    if !report.problems.is_empty() {
        let rows: Vec<Vec<String>> = report
            .problems
            .iter()
            .map(|p| vec![p.kind.name().into(), p.path.clone(), p.detail.clone()])
            .collect();
        print!("{}", render(&["problem", "path", "detail"], &rows));
    }
    let rate = if report.seconds > 0.0 {
        report.bytes as f64 / report.seconds
    } else {
        0.0
    };
    println!(
        "verified {} files, {} in {:.2}s ({}/s): {}",
        report.files,
        human_bytes(report.bytes),
        report.seconds,
        human_bytes(rate as u64),
        if report.ok() {
            "all good".to_string()
        } else {
            let n = report.problems.len();
            format!("{n} problem{}", if n == 1 { "" } else { "s" })
        }
    );
    Ok(code)
}
