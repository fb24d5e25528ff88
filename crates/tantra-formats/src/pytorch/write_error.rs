//! Why a `.pt` write was refused: one typed variant per thing torch's format cannot carry, so
//! that callers match on the reason instead of on the text of a message.

use std::io;

use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};

/// A request the PyTorch archive writer cannot represent. Refusals found by the plan come
/// before anything is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    #[error("tensor {name:?}: dtype {dtype} has no PyTorch equivalent; convert it to safetensors instead")]
    NoTorchDType { name: String, dtype: DType },
    #[error("tensor {name:?}: F4 shape {shape:?} has no even last dimension, so torch's float4_e2m1fn_x2 (two values per element) cannot hold it")]
    OddF4Shape { name: String, shape: Vec<u64> },
    #[error(
        "tensor {name:?}: shape {shape:?} of {dtype} is too large or not a whole number of bytes"
    )]
    TensorTooLarge {
        name: String,
        shape: Vec<u64>,
        dtype: DType,
    },
    #[error("tensor {name:?}: shape {shape:?} is beyond what torch can index (i64)")]
    BeyondI64 { name: String, shape: Vec<u64> },
    #[error("archive name {0:?}: must be non-empty and hold no '/', '\\' or NUL")]
    ArchiveName(String),
    #[error("the name {0:?} is used twice (a state dict holds each key once)")]
    DuplicateName(String),
    #[error("the structure names {0:?}, which the source does not hold")]
    NotInSource(String),
    #[error("value {name:?}: {decimal:?} is not a decimal integer")]
    NotDecimal { name: String, decimal: String },
    #[error(
        "value {name:?}: an integer of {bytes} bytes is too large for torch's weights-only loader"
    )]
    IntegerTooLarge { name: String, bytes: usize },
    #[error("a string of {0} bytes does not fit pickle protocol 2")]
    StringTooLong(usize),
    #[error("more than 2^32 pickled objects")]
    TooManyObjects,
    #[error("zip entry name {0:?} is too long")]
    EntryNameTooLong(String),
    #[error("the archive would be larger than 2^64 bytes")]
    ArchiveTooLarge,
}

impl From<WriteError> for FormatError {
    fn from(e: WriteError) -> Self {
        FormatError {
            path: None,
            kind: ErrorKind::PytorchWrite(e),
        }
    }
}

pub(crate) fn io_error(e: io::Error) -> FormatError {
    FormatError {
        path: None,
        kind: ErrorKind::Io(e),
    }
}
