//! `tantra show MODEL[:VERSION] [--history N] [--json]`: everything about one version, as
//! `ollama show` does for a model: files (path, size, sha256), contents, config, tags and
//! default, lineage, and the last history entries. The report is the store's typed
//! [`ShowReport`]; `--json` prints it as is, this file holds the human printer.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::{ShowReport, WeightManager};

use crate::table::{group_digits, human_bytes, render};
use crate::when::when;

#[derive(clap::Args)]
pub struct Args {
    /// The version: MODEL (its default), MODEL:VERSION or MODEL:TAG.
    #[arg(value_name = "MODEL[:VERSION]")]
    pub target: String,
    /// How many of the last history entries to show.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub history: usize,
    /// Print the report as JSON (times as stored: RFC 3339 UTC).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let r = crate::target::model_ref(&a.target, None)?;
    let report = WeightManager::open(root)?.show(&r.model, r.version.as_deref(), a.history)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The human form of a [`ShowReport`].
pub fn human(r: &ShowReport) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("  {k:<12}{v}\n"));
    let head = format!(
        "{}:{}{}\n",
        r.model,
        r.version,
        if r.default { " (default)" } else { "" }
    );
    line(
        "parameters",
        format!(
            "{} in {} tensors ({})",
            group_digits(r.parameters),
            group_digits(r.tensors),
            r.dtypes.join(", ")
        ),
    );
    line("created", when(&r.created));
    line(
        "default",
        r.default_version.clone().unwrap_or_else(|| "(none)".into()),
    );
    if !r.tags.is_empty() {
        line("tags", r.tags.join(", "));
    }
    if let Some(n) = &r.note {
        line("note", n.clone());
    }
    line("content", format!("{:.16}", r.content));
    if !r.same_content.is_empty() {
        line("same as", r.same_content.join(", "));
    }
    if let Some(p) = &r.promoted_from {
        let metrics = match &p.metrics {
            Some(m) if !m.is_empty() => format!(
                " ({})",
                m.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => String::new(),
        };
        line(
            "promoted",
            format!("from checkpoint step {}{metrics}", p.step),
        );
    }
    let mut out = head + &out;
    out.push_str("\nformats\n");
    let rows: Vec<Vec<String>> = r
        .formats
        .iter()
        .map(|f| {
            vec![
                f.format.clone(),
                human_bytes(f.bytes),
                format!("{:.16}", f.sha256),
                f.path.clone(),
                f.source.describe(),
            ]
        })
        .collect();
    out.push_str(&indent(&render(
        &["format", "size", "sha256", "path", "source"],
        &rows,
    )));
    if let Some(c) = &r.config {
        out.push_str(&format!("\nconfig {}\n", c.name));
        if let Some(obj) = c.values.as_object() {
            let rows: Vec<Vec<String>> = obj
                .iter()
                .map(|(k, v)| vec![k.clone(), v.to_string()])
                .collect();
            out.push_str(&indent(&render(&["key", "value"], &rows)));
        }
    }
    if !r.history.is_empty() {
        out.push_str("\nhistory\n");
        let rows: Vec<Vec<String>> = r
            .history
            .iter()
            .map(|e| {
                let changes = e
                    .changes
                    .iter()
                    .map(|c| format!("{} {}", c.kind.name(), c.detail))
                    .collect::<Vec<_>>()
                    .join("; ");
                vec![
                    e.generation.to_string(),
                    when(&e.time),
                    e.user.clone(),
                    e.command.clone(),
                    changes,
                ]
            })
            .collect();
        out.push_str(&indent(&render(
            &["gen", "time", "user", "command", "change"],
            &rows,
        )));
    }
    out
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
