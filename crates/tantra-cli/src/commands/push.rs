//! `tantra push MODEL[:VERSION] [--remote NAME] [--formats LIST] [--json]`: send a version to a
//! remote, each distinct tensor once; the report says what was sent against what is referenced.

use std::path::Path;
use std::process::ExitCode;

use tantra_remote::client::Client;
use tantra_remote::config::Remotes;
use tantra_remote::push::{push, PushOptions};
use tantra_store::WeightManager;

use crate::progress::Bar;
use crate::table::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// MODEL or MODEL:VERSION (default: the model's default version).
    pub target: String,
    /// The remote (default: the default or only one).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Only these formats: a comma list of safetensors, pt, bin, gguf (default: all registered).
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    let target = tantra_store::ModelRef::parse(&a.target)?;
    let (name, def) = Remotes::load(root)?.get(a.remote.as_deref())?;
    let client = Client::connect(&name, &def)?;
    let opts = PushOptions {
        formats: super::register::parse_formats(a.formats.as_deref())?,
    };
    let r = push(
        &client,
        &wm,
        &target.model,
        target.version.as_deref(),
        &opts,
        &Bar::new(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    let pct = if r.bytes_referenced == 0 {
        0.0
    } else {
        100.0 * r.bytes_uploaded as f64 / r.bytes_referenced as f64
    };
    println!(
        "pushed {}:{} to {name}: formats {} (already there: {}){}; uploaded {} in {} blobs of {} referenced in {} blobs ({pct:.1}%), files {}, manifests {}",
        r.model,
        r.version,
        list_or_none(&r.formats_pushed),
        list_or_none(&r.formats_present),
        if r.whole_files.is_empty() {
            String::new()
        } else {
            format!("; sent whole (not rebuilt byte for byte): {}", r.whole_files.join(", "))
        },
        human_bytes(r.bytes_uploaded),
        r.blobs_uploaded,
        human_bytes(r.bytes_referenced),
        r.blobs_referenced,
        human_bytes(r.file_bytes),
        human_bytes(r.manifest_bytes),
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}
