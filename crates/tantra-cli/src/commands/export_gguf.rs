//! `tantra export-gguf mamba[:VERSION] OUT.gguf [--type T] [--force] [--json]`: write a
//! registered Mamba version as a GGUF file that llama.cpp's `mamba` architecture loads
//! (llama.cpp's tensor names and keys, tantra's byte-level vocabulary as a tokenizer).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tantra_formats::gguf::{GgufOptions, TargetType};
use tantra_models::gguf::export_gguf_from_store;
use tantra_store::WeightManager;

use crate::progress::Bar;
use crate::table::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// What to export: `mamba` (its default version) or `mamba:VERSION`.
    #[arg(value_name = "MODEL[:VERSION]")]
    pub model: String,
    /// The GGUF file to write.
    pub output: PathBuf,
    /// Store float matrices as f32, f16, bf16, q8_0 or q4_0 (default: as registered).
    #[arg(long = "type", value_name = "TYPE")]
    pub gguf_type: Option<TargetType>,
    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print {model, version, from, output, tensors, bytes, max_abs_error, relative_error} as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `export-gguf --json` prints.
#[derive(serde::Serialize)]
struct GgufReport<'a> {
    model: &'a str,
    version: &'a str,
    /// The registered file the weights were read from.
    from: String,
    output: String,
    tensors: usize,
    bytes: u64,
    quantized_tensors: usize,
    max_abs_error: f64,
    relative_error: f64,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let version = super::mamba_target(&a.model, "export-gguf", "llama.cpp's mamba architecture")?;
    let wm = WeightManager::open(root)?;
    let opts = GgufOptions {
        target: a.gguf_type.unwrap_or_default(),
        force: a.force,
        verify: true,
        ..Default::default()
    };
    let r = export_gguf_from_store(&wm, version, &a.output, &opts, &Bar::new())?;
    let e = r.written.error;
    if a.json {
        let out = GgufReport {
            model: &r.model,
            version: &r.version,
            from: r.from.display().to_string(),
            output: a.output.display().to_string(),
            tensors: r.tensors,
            bytes: r.bytes,
            quantized_tensors: e.tensors,
            max_abs_error: e.max_abs,
            relative_error: e.relative,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "exported {}:{} ({} tensors) to {} ({}, verified)",
        r.model,
        r.version,
        r.tensors,
        a.output.display(),
        human_bytes(r.bytes)
    );
    if e.tensors > 0 {
        println!(
            "quantization error over {} tensors: max abs {:.3e}, relative (rms) {:.3e}",
            e.tensors, e.max_abs, e.relative
        );
    }
    Ok(ExitCode::SUCCESS)
}
