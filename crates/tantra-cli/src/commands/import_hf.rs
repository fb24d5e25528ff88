//! `tantra import-hf DIR --model mamba --version V [--formats LIST] [--force] [--default]`:
//! register a Hugging Face Mamba directory (`config.json` + single or sharded safetensors or
//! `pytorch_model*.bin`) as a version in the weights root. See `tantra_models::hf` for the
//! renames and checks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use tantra_formats::OutputFormat;
use tantra_models::hf::{import_into_store, ImportOptions};
use tantra_models::Architecture;
use tantra_store::WeightManager;

use crate::progress::Bar;
use crate::table::{group_digits, human_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The Hugging Face model directory.
    pub dir: PathBuf,
    /// The model to register it as (only mamba has the Hugging Face layout).
    #[arg(long)]
    pub model: Architecture,
    /// The version name to register.
    #[arg(long)]
    pub version: String,
    /// Formats to store, comma-separated (default: safetensors).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub formats: Vec<OutputFormat>,
    /// Replace a version or config that holds something else (backed up first).
    #[arg(long)]
    pub force: bool,
    /// Make this the model's default version.
    #[arg(long)]
    pub default: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    if a.model != Architecture::Mamba {
        bail!("import-hf reads transformers' MambaForCausalLM layout, which only the mamba model has (got {})", a.model);
    }
    let wm = WeightManager::open(root)?;
    let opts = ImportOptions {
        formats: a.formats.clone(),
        force: a.force,
        make_default: a.default,
    };
    let r = import_into_store(&wm, &a.dir, &a.version, &opts, &Bar::new())?;
    for (from, to) in &r.renamed {
        eprintln!("renamed {from} -> {to}");
    }
    if r.dropped_tied_head {
        eprintln!("lm_head.weight equals the embeddings (tie_word_embeddings): not stored");
    }
    let reg = &r.registered;
    let files: Vec<String> = reg
        .files
        .iter()
        .map(|f| {
            format!(
                "{} ({}, {})",
                f.path,
                human_bytes(f.bytes),
                serde_json::to_value(f.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            )
        })
        .collect();
    println!(
        "imported {} ({} file(s)) as {}:{}: {} tensors, {} parameters -> {}",
        a.dir.display(),
        r.checkpoint_files.len(),
        reg.model,
        reg.version,
        reg.tensors,
        group_digits(reg.parameters),
        files.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
