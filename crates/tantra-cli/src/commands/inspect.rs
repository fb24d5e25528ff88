//! `tantra inspect FILE [--json] [--hash]`: what a weight file holds.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use tantra_formats::digest::tensor_sha256;
use tantra_formats::{detect::extension_mismatch, open};

use super::with_bar;
use crate::progress::Bar;
use crate::table::{group_digits, human_bytes, write_rows};

#[derive(clap::Args)]
pub struct Args {
    /// The weight file (.safetensors, .pt, .pth, .bin; detected by content).
    pub file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also compute each tensor's sha256 (of its row-major little-endian bytes).
    #[arg(long)]
    pub hash: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let src = open(&a.file)?;
    if let Some(w) = extension_mismatch(&a.file, src.format()) {
        eprintln!("warning: {w}");
    }
    let bytes = std::fs::metadata(&a.file)
        .with_context(|| format!("{}: cannot stat", a.file.display()))?
        .len();
    let digests = if a.hash {
        let bar = Bar::new();
        // A tensor read through several names (tied weights) is hashed once.
        // Raw 32-byte digests (a million hex strings would take 88 MB).
        let found = with_bar(&bar, "hashing tensors", src.as_ref(), |i| {
            match src.same_bytes_as(i) {
                Some(j) => Ok(Err(j)),
                None => tensor_sha256(src.as_ref(), i).map(Ok),
            }
        })?;
        let mut digests: Vec<[u8; 32]> = Vec::with_capacity(found.len());
        for f in found {
            let d = match f {
                Ok(d) => d,
                Err(j) => digests.get(j).copied().unwrap_or_default(),
            };
            digests.push(d);
        }
        digests
    } else {
        Vec::new()
    };
    if a.json {
        let tensors: Vec<_> = src
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut o = json!({"name": t.name, "dtype": t.dtype.as_str(), "shape": t.shape});
                if let Some(d) = digests.get(i) {
                    o["sha256"] = json!(hex(d));
                }
                o
            })
            .collect();
        let values: serde_json::Map<String, serde_json::Value> = src
            .values()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let out = json!({
            "path": a.file.display().to_string(),
            "format": src.format().name(),
            "bytes": bytes,
            "parameters": src.parameter_count(),
            "tensors": tensors,
            "metadata": src.metadata(),
            "values": values,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{}: {}, {}, {} tensors, {} parameters",
        a.file.display(),
        src.format().name(),
        human_bytes(bytes),
        src.tensors().len(),
        group_digits(src.parameter_count())
    );
    let mut header = vec!["name", "dtype", "shape", "elements"];
    if a.hash {
        header.push("sha256");
    }
    let tensors = src.tensors();
    let row = |i: usize| -> Vec<String> {
        let Some(t) = tensors.get(i) else {
            return Vec::new();
        };
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        let mut row = vec![
            t.name.clone(),
            t.dtype.to_string(),
            format!("[{}]", shape.join(", ")),
            t.numel()
                .map(group_digits)
                .unwrap_or_else(|| "overflow".into()),
        ];
        if let Some(d) = digests.get(i) {
            row.push(hex(d));
        }
        row
    };
    // Rows are made as they are written: a million tensors never sit in memory as text.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write_rows(&mut out, &header, tensors.len(), row)?;
    out.flush()?;
    drop(out);
    if !src.metadata().is_empty() {
        println!("metadata:");
        for (k, v) in src.metadata() {
            println!("  {k} = {v}");
        }
    }
    if !src.values().is_empty() {
        println!("values:");
        for (k, v) in src.values() {
            println!("  {k} = {}", v.to_json());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Lower-case hex of a digest.
fn hex(d: &[u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
