//! `tantra list-weights [--model M] [--format F] [--json]`: every registered weight file.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use tantra_formats::OutputFormat;
use tantra_store::{ListFilter, WeightManager};

use crate::table::{group_digits, human_bytes, render};

#[derive(clap::Args)]
pub struct Args {
    /// Only this model.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Only this format: safetensors, pt or bin.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
    /// Print a JSON array of {model, version, format, path, bytes, sha256, parameters,
    /// default, created} (path relative to the root).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    let rows = wm.list(&ListFilter {
        model: a.model,
        format: a.format,
    })?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut s = serde_json::to_string_pretty(&rows)?;
        s.push('\n');
        out.write_all(s.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no weights registered under {}", root.display());
        return Ok(ExitCode::SUCCESS);
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.model.clone(),
                r.version.clone(),
                r.format.clone(),
                if r.default { "*".into() } else { String::new() },
                human_bytes(r.bytes),
                group_digits(r.parameters),
                short_time(&r.created),
                r.path.clone(),
            ]
        })
        .collect();
    let text = render(
        &["model", "version", "format", "default", "size", "parameters", "created", "path"],
        &table,
    );
    out.write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// `2025-01-02T03:04:05.123456Z` -> `2025-01-02 03:04:05`.
pub(super) fn short_time(t: &str) -> String {
    match t.get(..19) {
        Some(s) => s.replacen('T', " ", 1),
        None => t.to_string(),
    }
}
