//! `tantra export-hf mamba[:VERSION] DIR [--shard-size SIZE] [--force] [--json]`: write a
//! registered Mamba version as a Hugging Face directory (`config.json` + `model.safetensors`,
//! or shards with `model.safetensors.index.json`) that transformers' `MambaForCausalLM` loads.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tantra_models::hf::{export_from_store, ExportOptions};
use tantra_store::WeightManager;

use crate::progress::Bar;
use crate::table::{group_digits, human_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// What to export: `mamba` (its default version) or `mamba:VERSION`.
    #[arg(value_name = "MODEL[:VERSION]")]
    pub model: String,
    /// The directory to write (created if missing).
    pub dir: PathBuf,
    /// Split the weights into shards of at most SIZE each: bytes, or with a unit
    /// (KB, MB, GB = powers of 1000; KiB, MiB, GiB = powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub shard_size: Option<u64>,
    /// Overwrite files that exist in DIR.
    #[arg(long)]
    pub force: bool,
    /// Print {model, version, from, dir, files, tensors, parameters, bytes} as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `export-hf --json` prints.
#[derive(serde::Serialize)]
struct HfReport<'a> {
    model: &'a str,
    version: &'a str,
    /// The registered file the weights were read from.
    from: String,
    dir: String,
    files: Vec<String>,
    tensors: usize,
    parameters: u64,
    bytes: u64,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let version = super::mamba_target(
        &a.model,
        "export-hf",
        "transformers' MambaForCausalLM layout",
    )?;
    let wm = WeightManager::open(root)?;
    let opts = ExportOptions {
        shard_size: a.shard_size,
        force: a.force,
    };
    let r = export_from_store(&wm, version, &a.dir, &opts, &Bar::new())?;
    if a.json {
        let out = HfReport {
            model: &r.model,
            version: &r.version,
            from: r.from.display().to_string(),
            dir: a.dir.display().to_string(),
            files: r
                .export
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect(),
            tensors: r.export.tensors,
            parameters: r.export.parameters,
            bytes: r.export.bytes,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let weight_files = r
        .export
        .files
        .len()
        .saturating_sub(1 + usize::from(a.shard_size.is_some()));
    println!(
        "exported {}:{} ({} tensors, {} parameters) to {}: config.json + {} weight file(s), {}",
        r.model,
        r.version,
        r.export.tensors,
        group_digits(r.export.parameters),
        a.dir.display(),
        weight_files,
        human_bytes(r.export.bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// `1000`, `500KB`, `2GB`, `1.5GiB`, `100mb` -> bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (expected e.g. 500MB, 2GB, 1GiB or bytes)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "unknown size unit {other:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ))
        }
    };
    let bytes = (value * mult).floor();
    if !(1.0..1.8e19).contains(&bytes) {
        return Err(format!("{s:?}: a shard size must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("100mb"), Ok(100_000_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("GB").is_err());
    }
}
