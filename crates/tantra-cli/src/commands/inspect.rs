//! `tantra inspect FILE|MODEL[:VERSION] [--json] [--hash]`: what a weight file holds.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::ser::{Serialize, SerializeMap, Serializer};
use tantra_formats::digest::tensor_sha256;
use tantra_formats::gguf::GgufFile;
use tantra_formats::TensorInfo;
use tantra_formats::{detect::extension_mismatch, open, Format};

use super::with_bar;
use crate::progress::Bar;
use crate::table::{group_digits, human_bytes, push_grouped, write_rows};

#[derive(clap::Args)]
pub struct Args {
    /// The weight file (.safetensors, .pt, .pth, .bin, .gguf; detected by content), or a
    /// registered MODEL[:VERSION] (its best format).
    #[arg(value_name = "FILE|MODEL[:VERSION]")]
    pub file: PathBuf,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also compute each tensor's sha256 (of its row-major little-endian bytes).
    #[arg(long)]
    pub hash: bool,
}

pub fn run(mut a: Args, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    a.file = crate::target::weight_path(&a.file, root)?;
    let src = open(&a.file)?;
    // GGUF: each tensor's stored ggml type (quantized ones are listed, and hashed, as F32).
    let gguf = match src.format() {
        Format::Gguf => Some(GgufFile::open(&a.file)?),
        _ => None,
    };
    // GGUF metadata with long arrays (a tokenizer's tokens) summarized.
    let metadata = match &gguf {
        Some(g) => g.header().metadata_text(),
        None => src.metadata().clone(),
    };
    let gguf_types: Vec<&'static str> = gguf
        .as_ref()
        .map(|g| g.header().tensors.iter().map(|t| t.ty.name()).collect())
        .unwrap_or_default();
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
        let values: serde_json::Map<String, serde_json::Value> = src
            .values()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        // Serialized as it is written (keys in the order `json!` used to give them), so
        // that a million tensors are never held as JSON values.
        let out = JsonOut {
            bytes,
            format: src.format().name(),
            metadata: &metadata,
            parameters: src.parameter_count(),
            path: a.file.display().to_string(),
            tensors: src.tensors(),
            digests: &digests,
            gguf_types: &gguf_types,
            values: &values,
        };
        let mut w = std::io::BufWriter::new(std::io::stdout().lock());
        serde_json::to_writer_pretty(&mut w, &out)?;
        writeln!(w)?;
        w.flush()?;
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
    if gguf.is_some() {
        header.push("gguf type");
    }
    if a.hash {
        header.push("sha256");
    }
    let tensors = src.tensors();
    let row = |i: usize, cells: &mut [String]| {
        use std::fmt::Write as _;
        let (Some(t), [name, dtype, shape, elements, rest @ ..]) = (tensors.get(i), cells) else {
            return;
        };
        name.push_str(&t.name);
        let _ = write!(dtype, "{}", t.dtype);
        shape.push('[');
        for (j, d) in t.shape.iter().enumerate() {
            if j > 0 {
                shape.push_str(", ");
            }
            let _ = write!(shape, "{d}");
        }
        shape.push(']');
        match t.numel() {
            Some(n) => push_grouped(elements, n),
            None => elements.push_str("overflow"),
        }
        let mut rest = rest.iter_mut();
        if let (Some(ty), Some(cell)) = (gguf_types.get(i), rest.next()) {
            let _ = write!(cell, "{ty}");
        }
        if let (Some(d), Some(cell)) = (digests.get(i), rest.next()) {
            cell.push_str(&hex(d));
        }
    };
    // Rows are made as they are written: a million tensors never sit in memory as text.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    write_rows(&mut out, &header, tensors.len(), row)?;
    out.flush()?;
    drop(out);
    if !metadata.is_empty() {
        println!("metadata:");
        for (k, v) in &metadata {
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

/// `inspect --json`'s object.
struct JsonOut<'a> {
    bytes: u64,
    format: &'static str,
    metadata: &'a std::collections::BTreeMap<String, String>,
    parameters: u64,
    path: String,
    tensors: &'a [TensorInfo],
    digests: &'a [[u8; 32]],
    gguf_types: &'a [&'static str],
    values: &'a serde_json::Map<String, serde_json::Value>,
}

impl Serialize for JsonOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(7))?;
        m.serialize_entry("path", &self.path)?;
        m.serialize_entry("format", self.format)?;
        m.serialize_entry("bytes", &self.bytes)?;
        m.serialize_entry("parameters", &self.parameters)?;
        m.serialize_entry(
            "tensors",
            &TensorsJson {
                tensors: self.tensors,
                digests: self.digests,
                gguf_types: self.gguf_types,
            },
        )?;
        m.serialize_entry("metadata", self.metadata)?;
        m.serialize_entry("values", self.values)?;
        m.end()
    }
}

struct TensorsJson<'a> {
    tensors: &'a [TensorInfo],
    digests: &'a [[u8; 32]],
    gguf_types: &'a [&'static str],
}

impl Serialize for TensorsJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.tensors.iter().enumerate().map(|(i, t)| TensorJson {
            t,
            digest: self.digests.get(i),
            gguf_type: self.gguf_types.get(i).copied(),
        }))
    }
}

struct TensorJson<'a> {
    t: &'a TensorInfo,
    digest: Option<&'a [u8; 32]>,
    gguf_type: Option<&'static str>,
}

impl Serialize for TensorJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &self.t.name)?;
        m.serialize_entry("dtype", self.t.dtype.as_str())?;
        m.serialize_entry("shape", &self.t.shape)?;
        if let Some(ty) = self.gguf_type {
            m.serialize_entry("gguf_type", ty)?;
        }
        if let Some(d) = self.digest {
            m.serialize_entry("sha256", &hex(d))?;
        }
        m.end()
    }
}
