//! tantra-formats: bytes <-> tensors.
//!
//! Reads `.safetensors` (memory-mapped), PyTorch zip archives and legacy `torch.save` files
//! (through a pickle reader that executes nothing and resolves only an allowlist of globals),
//! writes safetensors and PyTorch zip archives, detects formats by content and converts between
//! them with verification. It knows nothing of models or registries.
//!
//! ```no_run
//! use tantra_formats::{open, TensorSource};
//! let src = open(std::path::Path::new("model.safetensors"))?;
//! for t in src.tensors() {
//!     println!("{} {} {:?}", t.name, t.dtype, t.shape);
//! }
//! # Ok::<(), tantra_formats::FormatError>(())
//! ```

pub mod convert;
pub mod detect;
pub mod diff;
pub mod digest;
pub mod dtype;
pub mod error;
pub mod failpoint;
pub mod fsutil;
pub mod gguf;
mod mmap;
pub mod pickle;
pub mod pytorch;
pub mod pytorch_write;
pub mod safetensors;
pub mod structure;
pub mod subtree;
mod tar;
pub mod temp;
pub mod tensor;
pub mod zip;

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

pub use convert::{convert, ConvertOptions, ConvertReport};
pub use detect::{detect, detect_bytes, Detected, NotWeights};
pub use diff::{diff, DiffOptions, DiffReport};
pub use digest::{all_digests, tensor_digest};
pub use dtype::DType;
pub use error::{ErrorKind, FormatError};
pub use structure::Structure;
pub use tensor::{MemorySource, TensorInfo, TensorSource, Value};

/// The `__metadata__` key under which non-tensor checkpoint values travel in a safetensors
/// file: a JSON object from dotted name to [`Value::to_json`].
pub const VALUES_METADATA_KEY: &str = "tantra.values";

/// The `__metadata__` key under which the nesting of a checkpoint travels in a safetensors
/// file: the JSON of [`structure::Structure::to_json`], whose leaves are the dotted names of the
/// tensors and of the values under [`VALUES_METADATA_KEY`].
pub const STRUCTURE_METADATA_KEY: &str = "tantra.structure";

/// A container format tantra reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Safetensors,
    /// A `torch.save` zip archive (torch >= 1.6).
    PytorchZip,
    /// A `torch.save` legacy file (`_use_new_zipfile_serialization=False`).
    PytorchLegacy,
    /// A GGUF file (llama.cpp, ollama), versions 2 and 3.
    Gguf,
    /// Tensors in memory, not read from a file.
    Memory,
}

impl Format {
    /// The name `inspect --json` prints: `safetensors`, `pytorch-zip`, `pytorch-legacy`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::PytorchZip => "pytorch-zip",
            Format::PytorchLegacy => "pytorch-legacy",
            Format::Gguf => "gguf",
            Format::Memory => "memory",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format tantra writes. `Pt` and `Bin` are the same zip archive; they differ in extension,
/// which is what people and other tools go by. `Gguf` written through [`write_to`] keeps every
/// tensor's type (lossless); quantized GGUF comes from [`gguf::write::convert_to_gguf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OutputFormat {
    Safetensors,
    Pt,
    Bin,
    Gguf,
}

impl OutputFormat {
    /// What `--formats all` means: the formats every tensor kind fits in.
    pub const ALL: [OutputFormat; 3] = [
        OutputFormat::Safetensors,
        OutputFormat::Pt,
        OutputFormat::Bin,
    ];

    /// Every format, in the order a loader prefers them.
    pub const EVERY: [OutputFormat; 4] = [
        OutputFormat::Safetensors,
        OutputFormat::Pt,
        OutputFormat::Bin,
        OutputFormat::Gguf,
    ];

    /// `safetensors`, `pt`, `bin` or `gguf`.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Safetensors => "safetensors",
            OutputFormat::Pt => "pt",
            OutputFormat::Bin => "bin",
            OutputFormat::Gguf => "gguf",
        }
    }

    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        self.name()
    }

    /// The format an output path's extension asks for (`.pth` counts as `pt`).
    pub fn from_path(path: &Path) -> Option<OutputFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "safetensors" => Some(OutputFormat::Safetensors),
            "pt" | "pth" => Some(OutputFormat::Pt),
            "bin" => Some(OutputFormat::Bin),
            "gguf" => Some(OutputFormat::Gguf),
            _ => None,
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "safetensors" => Ok(OutputFormat::Safetensors),
            "pt" | "pth" => Ok(OutputFormat::Pt),
            "bin" => Ok(OutputFormat::Bin),
            "gguf" => Ok(OutputFormat::Gguf),
            _ => Err(format!(
                "unknown format {s:?} (expected safetensors, pt, bin or gguf)"
            )),
        }
    }
}

/// Progress of long work, drawn by the caller (the CLI draws a bar; libraries never print).
pub trait Progress: Sync {
    /// Work named `label` of `total` units (bytes, unless said otherwise) starts.
    fn begin(&self, _label: &str, _total: u64) {}
    /// `n` more units are done.
    fn advance(&self, _n: u64) {}
    /// The work ended.
    fn end(&self) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// An open weight file of any readable format.
pub type DynSource = Box<dyn TensorSource + Send + Sync>;

/// Detects the format of `path` and opens it.
///
/// # Errors
/// A file that is not weights (with what it is instead), or one that breaks a rule of its
/// format; the error names the file.
pub fn open(path: &Path) -> Result<DynSource, FormatError> {
    match detect(path)? {
        Format::Safetensors => Ok(Box::new(safetensors::SafetensorsFile::open(path)?)),
        Format::PytorchZip | Format::PytorchLegacy => {
            Ok(Box::new(pytorch::PytorchFile::open(path)?))
        }
        Format::Gguf => Ok(Box::new(gguf::GgufFile::open(path)?)),
        Format::Memory => Err(FormatError::memory("memory is not a file format")),
    }
}

/// Writes `src` to `out` in `format`, one tensor at a time. Returns the bytes written.
/// `archive_name` is the top-level folder of a PyTorch archive (torch uses the file stem).
pub fn write_to(
    out: &mut dyn Write,
    format: OutputFormat,
    src: &dyn TensorSource,
    archive_name: &str,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    match format {
        OutputFormat::Safetensors => safetensors::write_safetensors(out, src, progress),
        OutputFormat::Pt | OutputFormat::Bin => {
            pytorch_write::write_pytorch(out, src, archive_name, progress)
        }
        OutputFormat::Gguf => {
            let target = gguf::write::TargetType::Keep;
            let planned = gguf::write::plan(src, target).map_err(|e| FormatError {
                path: None,
                kind: e.into(),
            })?;
            let kv = gguf::write::metadata_for(src, None, target, &planned);
            gguf::write::write_gguf(out, src, kv, planned, progress).map(|w| w.bytes)
        }
    }
}
