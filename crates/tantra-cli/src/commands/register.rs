//! `tantra register FILE MODEL:VERSION [--formats LIST] [--default] [--force] [--tag T]
//! [--note N] [--config C] [--json]`: add a weight file to the root (`--model M --version V`
//! is the older spelling, still read).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use tantra_formats::OutputFormat;
use tantra_store::{RegisterOptions, RegisterReport, WeightManager};

use crate::progress::Bar;
use crate::table::{group_digits, human_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The weight file (.safetensors, .pt, .pth, .bin; detected by content).
    pub file: PathBuf,
    /// The version to register it as: MODEL:VERSION (e.g. mamba:v2).
    #[arg(value_name = "MODEL:VERSION", required_unless_present_all = ["model", "version"])]
    pub target: Option<String>,
    /// The model (older spelling of MODEL:VERSION).
    #[arg(
        long,
        value_name = "MODEL",
        conflicts_with = "target",
        requires = "version"
    )]
    pub model: Option<String>,
    /// The version (older spelling of MODEL:VERSION).
    #[arg(
        long,
        value_name = "VERSION",
        conflicts_with = "target",
        requires = "model"
    )]
    pub version: Option<String>,
    /// Also write these formats: a comma list of safetensors, pt, bin, or `all`.
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    /// Make this the model's default version.
    #[arg(long)]
    pub default: bool,
    /// Replace a version that holds other weights (the old files are backed up first).
    #[arg(long)]
    pub force: bool,
    /// A tag (repeatable). Tagged versions survive `cleanup --keep`.
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// A free-form note.
    #[arg(long)]
    pub note: Option<String>,
    /// The config (configs/MODEL/NAME.json) these weights belong to.
    #[arg(long, value_name = "NAME")]
    pub config: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let target = match (&a.target, &a.model, &a.version) {
        (Some(t), _, _) => crate::target::versioned(t, None, "register")?,
        (None, Some(m), Some(v)) => crate::target::model_ref(m, Some(v))?,
        _ => bail!("name the version to register: tantra register FILE MODEL:VERSION"),
    };
    let version = target.version.as_deref().unwrap_or_default();
    let wm = WeightManager::open(root)?;
    let opts = RegisterOptions {
        formats: parse_formats(a.formats.as_deref())?,
        make_default: a.default,
        force: a.force,
        tags: a.tags,
        note: a.note,
        config: a.config,
        reason: None,
    };
    let report = wm.register(&a.file, &target.model, version, &opts, &Bar::new())?;
    print_report(&report, a.json, true)?;
    Ok(ExitCode::SUCCESS)
}

/// `safetensors,pt`, `all` or nothing.
pub(super) fn parse_formats(s: Option<&str>) -> anyhow::Result<Vec<OutputFormat>> {
    let Some(s) = s else { return Ok(Vec::new()) };
    if s.trim() == "all" {
        return Ok(OutputFormat::ALL.to_vec());
    }
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<OutputFormat>() {
            Ok(f) if !out.contains(&f) => out.push(f),
            Ok(_) => {}
            Err(e) => bail!("--formats: {e}, or all"),
        }
    }
    Ok(out)
}

/// Prints a registration; `warn_duplicates` warns when the weights are registered under
/// another name already (not for `cp`, whose point that is).
pub(super) fn print_report(
    r: &RegisterReport,
    json: bool,
    warn_duplicates: bool,
) -> anyhow::Result<()> {
    if warn_duplicates && !r.duplicates.is_empty() {
        let linked = r.files.iter().any(|f| f.same_as.is_some());
        eprintln!(
            "warning: {}:{} duplicates {}: the same weights under another name{}",
            r.model,
            r.version,
            r.duplicates.join(", "),
            if linked {
                "; identical files are stored once (hard links)"
            } else {
                ""
            }
        );
    }
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
        return Ok(());
    }
    println!(
        "{}:{}: {} tensors, {} parameters, {}{}",
        r.model,
        r.version,
        r.tensors,
        group_digits(r.parameters),
        r.dtypes.join(", "),
        if r.default { " (default)" } else { "" }
    );
    for f in &r.files {
        println!(
            "  {:<9} {:<11} {}  {}  sha256 {:.16}",
            f.action.name(),
            f.format,
            f.path,
            human_bytes(f.bytes),
            f.sha256
        );
    }
    for id in &r.backups {
        println!("  backed up the old file as {id} (tantra restore {id})");
    }
    Ok(())
}
