//! Errors: one type for the crate's public API, one enum per container for the rules it breaks.
//!
//! Every error a caller sees carries the file it is about; the container enums
//! ([`crate::safetensors::SafetensorsError`], [`crate::pickle::PickleError`],
//! [`crate::zip::ZipError`], [`crate::pytorch::PytorchError`]) name the place (tensor, entry,
//! opcode offset) and the rule.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::detect::NotWeights;
use crate::gguf::GgufError;
use crate::pickle::PickleError;
use crate::pytorch::PytorchError;
use crate::safetensors::SafetensorsError;
use crate::zip::ZipError;

/// An error from reading, writing, detecting or converting a weight file.
#[derive(Debug)]
pub struct FormatError {
    /// The file concerned; `None` for tensors in memory.
    pub path: Option<PathBuf>,
    pub kind: ErrorKind,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    NotWeights(#[from] NotWeights),
    #[error("safetensors: {0}")]
    Safetensors(#[from] SafetensorsError),
    #[error("pickle: {0}")]
    Pickle(#[from] PickleError),
    #[error("zip: {0}")]
    Zip(#[from] ZipError),
    #[error("{0}")]
    Pytorch(#[from] PytorchError),
    #[error("gguf: {0}")]
    Gguf(#[from] GgufError),
    /// The output of a conversion did not re-read to the same tensors.
    #[error("verification failed: {0}")]
    Verify(String),
    /// What a PyTorch archive cannot carry (a dtype torch lacks, say).
    #[error("unsupported: {0}")]
    PytorchWrite(#[from] crate::pytorch::WriteError),
    /// A request the format cannot represent (a dtype it lacks, say).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// `--select`/`--strip` cannot be applied.
    #[error("{0}")]
    Select(#[from] crate::subtree::SelectError),
    /// The output exists and overwriting was not asked for.
    #[error("already exists (use --force to overwrite)")]
    Exists,
    /// Misuse of an in-memory source.
    #[error("{0}")]
    Memory(String),
}

impl FormatError {
    pub fn new(path: impl Into<PathBuf>, kind: impl Into<ErrorKind>) -> Self {
        FormatError {
            path: Some(path.into()),
            kind: kind.into(),
        }
    }

    /// An error about tensors held in memory (no file).
    pub fn memory(msg: impl Into<String>) -> Self {
        FormatError {
            path: None,
            kind: ErrorKind::Memory(msg.into()),
        }
    }

    /// Attaches `path` when the error has none yet.
    pub fn with_path(mut self, path: &Path) -> Self {
        if self.path.is_none() {
            self.path = Some(path.to_path_buf());
        }
        self
    }

    /// True when the input was refused as unsafe or malformed (as opposed to an I/O failure).
    pub fn is_refusal(&self) -> bool {
        !matches!(self.kind, ErrorKind::Io(_) | ErrorKind::Exists)
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}: {}", p.display(), self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

impl std::error::Error for FormatError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Extension for attaching a path to container-level results.
pub trait ResultExt<T> {
    fn at(self, path: &Path) -> Result<T, FormatError>;
}

impl<T, E: Into<ErrorKind>> ResultExt<T> for Result<T, E> {
    fn at(self, path: &Path) -> Result<T, FormatError> {
        self.map_err(|e| FormatError::new(path, e))
    }
}
