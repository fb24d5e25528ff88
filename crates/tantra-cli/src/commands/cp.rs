//! `tantra cp MODEL:VERSION MODEL2:VERSION2 [--default] [--tag T] [--force] [--json]`: the same
//! weights under a second name, without copying bytes (hard links), through the store's atomic
//! registration. Like `git tag`, a cheap name for what exists.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::{RegisterOptions, WeightManager};

use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// The version to copy: MODEL:VERSION, MODEL:TAG or MODEL (its default).
    #[arg(value_name = "FROM")]
    pub from: String,
    /// The new name: MODEL:VERSION.
    #[arg(value_name = "TO")]
    pub to: String,
    /// Make the new version its model's default.
    #[arg(long)]
    pub default: bool,
    /// A tag of the new version (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Replace TO if it holds other weights (its files are backed up first).
    #[arg(long)]
    pub force: bool,
    /// Print the registration report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let from = crate::target::model_ref(&a.from, None)?;
    let to = crate::target::versioned(&a.to, None, "cp")?;
    let wm = WeightManager::open(root)?;
    let (fm, fv) = wm.resolve_ref(&from)?;
    let opts = RegisterOptions {
        make_default: a.default,
        force: a.force,
        tags: a.tags,
        reason: Some("replaced by cp --force".into()),
        ..RegisterOptions::default()
    };
    let version = to.version.as_deref().unwrap_or_default();
    let report = wm.copy_version(&fm, &fv, &to.model, version, &opts, &Bar::new())?;
    // A second name is what cp is for: no duplicate warning.
    super::register::print_report(&report, a.json, false)?;
    Ok(ExitCode::SUCCESS)
}
