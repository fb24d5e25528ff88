//! `tantra import-hf DIR --model mamba --version V [--formats LIST] [--force] [--default]
//! [--json]`: register a Hugging Face Mamba directory (`config.json` + single or sharded
//! safetensors or `pytorch_model*.bin`) as a version in the weights root; its files are
//! recorded as imported from DIR. See `tantra_models::hf` for the renames and checks.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use tantra_models::hf::{import_into_store, ImportOptions};
use tantra_models::Architecture;
use tantra_store::WeightManager;

use super::register::{parse_formats, print_report};
use crate::progress::Bar;

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
    /// Formats to store: a comma list of safetensors, pt, bin, or `all` (default: safetensors).
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    /// Replace a version or config that holds something else (backed up first).
    #[arg(long)]
    pub force: bool,
    /// Make this the model's default version.
    #[arg(long)]
    pub default: bool,
    /// Print `register --json`'s report plus {from, checkpoint_files, renamed,
    /// dropped_tied_head}.
    #[arg(long)]
    pub json: bool,
}

/// `register --json`'s report, plus what was read.
#[derive(serde::Serialize)]
struct ImportJson<'a> {
    #[serde(flatten)]
    registered: &'a tantra_store::RegisterReport,
    from: String,
    checkpoint_files: Vec<String>,
    renamed: Vec<Renamed<'a>>,
    dropped_tied_head: bool,
}

/// A tensor name the import changed.
#[derive(serde::Serialize)]
struct Renamed<'a> {
    from: &'a str,
    to: &'a str,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    if a.model != Architecture::Mamba {
        bail!("import-hf reads transformers' MambaForCausalLM layout, which only the mamba model has (got {}); register other weights with `tantra register FILE`", a.model);
    }
    let wm = WeightManager::open(root)?;
    let opts = ImportOptions {
        formats: parse_formats(a.formats.as_deref())?,
        force: a.force,
        make_default: a.default,
    };
    let r = import_into_store(&wm, &a.dir, &a.version, &opts, &Bar::new())?;
    for (from, to) in &r.renamed {
        crate::note!("renamed {from} -> {to}");
    }
    if r.dropped_tied_head {
        crate::note!("lm_head.weight equals the embeddings (tie_word_embeddings): not stored");
    }
    if a.json {
        let out = ImportJson {
            registered: &r.registered,
            from: a.dir.display().to_string(),
            checkpoint_files: r
                .checkpoint_files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            renamed: r
                .renamed
                .iter()
                .map(|(from, to)| Renamed { from, to })
                .collect(),
            dropped_tied_head: r.dropped_tied_head,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::note!(
        "imported {} ({} checkpoint file(s))",
        a.dir.display(),
        r.checkpoint_files.len()
    );
    print_report(&r.registered, false, true)?;
    Ok(ExitCode::SUCCESS)
}
