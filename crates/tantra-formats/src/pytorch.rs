//! PyTorch `torch.save` files: zip archives and legacy files. (Being implemented.)

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use crate::error::{ErrorKind, FormatError};
use crate::tensor::{TensorInfo, TensorSource, Value};
use crate::{Format, Progress};

/// Something in a PyTorch file that is not a state dict tantra can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PytorchError {
    #[error("this is a TorchScript program, not a state dict")]
    TorchScript,
}

/// An open PyTorch file (zip archive or legacy).
pub struct PytorchFile {
    format: Format,
    infos: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
}

impl PytorchFile {
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        Err(FormatError::new(path, ErrorKind::Unsupported("pytorch reader in progress".into())))
    }
}

impl TensorSource for PytorchFile {
    fn format(&self) -> Format {
        self.format
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, _index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        Err(FormatError::memory("in progress"))
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
}

/// Writes `src` as a PyTorch zip archive that `torch.load(weights_only=True)` loads.
pub fn write_pytorch(
    _out: &mut dyn Write,
    _src: &dyn TensorSource,
    _archive_name: &str,
    _progress: &dyn Progress,
) -> Result<u64, FormatError> {
    Err(FormatError::memory("pytorch writer in progress"))
}
