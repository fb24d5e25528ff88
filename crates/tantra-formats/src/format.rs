//! The names of formats: [`Format`] for what tantra reads (what `inspect` reports) and
//! [`OutputFormat`] for what it writes (what `--formats` and output extensions ask for).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

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
/// which is what people and other tools go by. `Gguf` written through [`crate::write_to`] keeps every
/// tensor's type (lossless); quantized GGUF comes from [`crate::gguf::write::convert_to_gguf`].
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
