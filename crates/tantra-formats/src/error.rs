//! Errors: one type for the crate's public API, one enum per container for the rules it breaks,
//! and [`chain`], the one way tantra renders an error together with its causes.
//!
//! Every error a caller sees carries the file it is about; the container enums
//! ([`crate::safetensors::SafetensorsError`], [`crate::pickle::PickleError`],
//! [`crate::zip::ZipError`], [`crate::pytorch::PytorchError`]) name the place (tensor, entry,
//! opcode offset) and the rule.
//!
//! # Causes are printed once
//! An error's `Display` says only what failed at its own level (`Model/x.pt: I/O error`); what
//! caused it (the `io::Error`, a format error under a store error) is its
//! [`source`](std::error::Error::source), never repeated in its text. [`chain`] walks the sources
//! and joins the levels with `": "`, so each cause appears exactly once:
//! `Model/x.pt: I/O error: No such file or directory (os error 2)`. The CLI prints its errors
//! this way, the Python package puts the same text in its exceptions, and a library that turns
//! an error into a message (a verify problem, a scan verdict) uses it too, so that no cause is
//! lost or doubled. A container enum nested inside [`ErrorKind`] is not a cause but the
//! description of this error (which rule the file breaks), so it is displayed, not a source.

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
    /// Reading or writing failed; the `io::Error` is the source.
    #[error("I/O error")]
    Io(#[from] io::Error),
    // The rule enums below describe this error (they are not causes): displayed, not sources,
    // hence the `From` impls by hand (thiserror's `#[from]` would make them sources).
    #[error("{0}")]
    NotWeights(NotWeights),
    #[error("safetensors: {0}")]
    Safetensors(SafetensorsError),
    #[error("pickle: {0}")]
    Pickle(PickleError),
    #[error("zip: {0}")]
    Zip(ZipError),
    #[error("{0}")]
    Pytorch(PytorchError),
    #[error("gguf: {0}")]
    Gguf(GgufError),
    /// The output of a conversion did not re-read to the same tensors.
    #[error("verification failed: {0}")]
    Verify(String),
    /// What a PyTorch archive cannot carry (a dtype torch lacks, say).
    #[error("unsupported: {0}")]
    PytorchWrite(crate::pytorch::WriteError),
    /// A request the format cannot represent (a dtype it lacks, say).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// `--select`/`--strip` cannot be applied.
    #[error("{0}")]
    Select(crate::subtree::SelectError),
    /// The output exists and overwriting was not asked for.
    #[error("already exists (use --force to overwrite)")]
    Exists,
    /// Misuse of an in-memory source.
    #[error("{0}")]
    Memory(String),
}

/// `From` for the rule enums that [`ErrorKind`] displays rather than treats as sources.
macro_rules! kind_from {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for ErrorKind {
            fn from(e: $ty) -> Self {
                ErrorKind::$variant(e)
            }
        })*
    };
}

kind_from!(
    NotWeights(NotWeights),
    Safetensors(SafetensorsError),
    Pickle(PickleError),
    Zip(ZipError),
    Pytorch(PytorchError),
    Gguf(GgufError),
    PytorchWrite(crate::pytorch::WriteError),
    Select(crate::subtree::SelectError),
);

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

/// Renders `error` and each of its causes once, joined by `": "` (see the module docs).
///
/// ```
/// use tantra_formats::{chain, FormatError};
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file");
/// let e = FormatError::new("/x.pt", io);
/// assert_eq!(e.to_string(), "/x.pt: I/O error");
/// assert_eq!(chain(&e).to_string(), "/x.pt: I/O error: No such file");
/// ```
pub fn chain<'a>(error: &'a (dyn std::error::Error + 'a)) -> ErrorChain<'a> {
    ErrorChain(error)
}

/// An error with its causes, displayed on one line: see [`chain`].
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            write!(f, ": {e}")?;
            cause = e.source();
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause that is itself an error with a source: [`chain`] prints every level once.
    #[derive(Debug, thiserror::Error)]
    #[error("reading the index")]
    struct Outer(#[source] FormatError);

    #[test]
    fn each_cause_is_printed_once() {
        let io = io::Error::new(io::ErrorKind::UnexpectedEof, "failed to fill whole buffer");
        let e = FormatError::new("/w/a.safetensors", io);
        assert_eq!(e.to_string(), "/w/a.safetensors: I/O error");
        assert_eq!(
            chain(&e).to_string(),
            "/w/a.safetensors: I/O error: failed to fill whole buffer"
        );
        let outer = Outer(e);
        assert_eq!(
            chain(&outer).to_string(),
            "reading the index: /w/a.safetensors: I/O error: failed to fill whole buffer"
        );
    }

    #[test]
    fn a_rule_is_the_description_not_a_cause() {
        let e = FormatError::new("/w/a.zip", ZipError::NoEntries);
        assert!(std::error::Error::source(&e).is_none());
        assert!(std::error::Error::source(&e.kind).is_none());
        assert_eq!(
            chain(&e).to_string(),
            "/w/a.zip: zip: the archive has no entries"
        );
    }
}
