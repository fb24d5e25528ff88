//! What a PyTorch file can be instead of a readable state dict, and the container rules it can
//! break; the read side's one error enum.

/// Something in a PyTorch file that is not a state dict tantra can read, or a rule of the
/// container that the file breaks.
use crate::pickle::PickleError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PytorchError {
    #[error("this is a TorchScript program, not a state dict (the archive holds constants.pkl or code/); load it with torch.jit.load and save model.state_dict() instead")]
    TorchScript,
    #[error("this is a torch.package archive (it holds .data/extern_modules), not a state dict")]
    TorchPackage,
    #[error("the archive holds {count} data.pkl records; exactly one is allowed")]
    MultipleDataPkl { count: usize },
    #[error("the archive has no {name} record")]
    MissingRecord { name: &'static str },
    #[error("unsupported archive version {value:?} (versions 1 to 10 are read)")]
    BadVersion { value: String },
    #[error("the byteorder record says {value:?} (expected \"little\" or \"big\")")]
    BadByteorder { value: String },
    #[error("{part}: pickle: {error}")]
    Pickle { part: String, error: PickleError },
    #[error("tensor {tensor:?}: its storage {key:?} is not in the file")]
    MissingStorage { tensor: String, key: String },
    #[error("tensor {tensor:?}: storage {key:?} holds {actual} bytes but the pickle declares {expected}")]
    StorageSize {
        tensor: String,
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("tensor {tensor:?}: the tensors' views add up to {bytes} bytes, more than the {limit} allowed (4 times the file plus 1 GiB): a storage read through very many names?")]
    ViewBudget {
        tensor: String,
        bytes: u64,
        limit: u64,
    },
    #[error("tensor {tensor:?}: views larger than their storage (stride-0 expansions) add up to {bytes} bytes, more than 256 MiB (this one's storage holds {storage_bytes} bytes)")]
    AmplifyingView {
        tensor: String,
        bytes: u64,
        storage_bytes: u64,
    },
    #[error("legacy file: the first pickle is not the magic number 0x1950a86a20f9469cfc6c")]
    LegacyMagic,
    #[error("legacy file: protocol version {found} (expected 1001)")]
    LegacyProtocol { found: String },
    #[error("legacy file: malformed system info: {why}")]
    LegacySysInfo { why: &'static str },
    #[error("legacy file: malformed storage key list: {why}")]
    LegacyKeys { why: String },
    #[error("legacy file: storage {key:?} at offset {offset} needs {needed} bytes but {remaining} remain")]
    LegacyStorageTruncated {
        key: String,
        offset: u64,
        needed: u64,
        remaining: u64,
    },
    #[error("legacy file: storage {key:?} is referred to with element sizes that disagree")]
    LegacyStorageKinds { key: String },
    #[error("legacy file: storage {key:?} is listed but no tensor refers to it, so its element size is unknown")]
    LegacyUnknownStorage { key: String },
    #[error("legacy file: its first 512 bytes are also a valid tar header, and torch.load reads such a file as a (pre-1.0) tar archive; the file is ambiguous")]
    LegacyIsTar,
    #[error("legacy file: {bytes} bytes after the last storage")]
    LegacyTrailing { bytes: u64 },
    #[error("numpy array {name:?}: {why}")]
    BadNumpyArray { name: String, why: &'static str },
    #[error("not a PyTorch file: {what}")]
    NotPytorch { what: String },
    #[error("no tensor at index {index}")]
    NoTensor { index: usize },
    #[error("tensor {tensor:?}: its view lies outside its storage")]
    ViewOutsideStorage { tensor: String },
}
