//! The rules of the safetensors format a file can break, one variant each, naming the tensor.

use crate::dtype::DType;

use super::MAX_HEADER_LEN;

/// A rule of the safetensors format that a file (or a source handed to the writer) breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafetensorsError {
    #[error("the file is {len} bytes, shorter than the 8-byte header length")]
    TooShort { len: u64 },
    #[error("the header length {header_len} is over the limit of {MAX_HEADER_LEN} bytes")]
    HeaderTooLarge { header_len: u64 },
    #[error("the header length {header_len} runs past the end of the file ({file_len} bytes)")]
    HeaderPastEnd { header_len: u64, file_len: u64 },
    #[error("the header is not UTF-8 (bad byte at header offset {valid_up_to})")]
    HeaderNotUtf8 { valid_up_to: usize },
    #[error("the header is not a JSON object (it must start with '{{')")]
    HeaderNotObject,
    #[error("the header is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the header declares more than {limit} tensors")]
    TooManyTensors { limit: usize },
    #[error("tensor {tensor:?}: the entry is not a JSON object")]
    EntryNotObject { tensor: String },
    #[error("tensor {tensor:?}: the field {field:?} is missing")]
    MissingField { tensor: String, field: &'static str },
    #[error("tensor {tensor:?}: the field {field:?} appears twice")]
    DuplicateField { tensor: String, field: &'static str },
    #[error("tensor {tensor:?}: the field {field:?} must be {expected}")]
    InvalidField {
        tensor: String,
        field: &'static str,
        expected: &'static str,
    },
    #[error("tensor {tensor:?}: unknown dtype {dtype:?} (expected one of BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, C64, F8_*, F4, F6_*)")]
    UnknownDType { tensor: String, dtype: String },
    #[error("tensor {tensor:?}: negative dimension {dim} in the shape")]
    NegativeDimension { tensor: String, dim: i64 },
    #[error("tensor {tensor:?}: the size of the shape overflows 64 bits")]
    ShapeOverflow { tensor: String },
    #[error("tensor {tensor:?}: {numel} elements of {dtype} are not a whole number of bytes")]
    PartialByte {
        tensor: String,
        dtype: DType,
        numel: u64,
    },
    #[error("tensor {tensor:?}: data_offsets span {actual} bytes, but its dtype and shape need {expected}")]
    ByteLengthMismatch {
        tensor: String,
        expected: u64,
        actual: u64,
    },
    #[error("tensor {tensor:?}: data_offsets [{begin}, {end}] end before they begin")]
    OffsetsReversed {
        tensor: String,
        begin: u64,
        end: u64,
    },
    #[error("tensor {tensor:?}: the name is used twice")]
    DuplicateTensor { tensor: String },
    #[error("\"__metadata__\" appears twice")]
    DuplicateMetadata,
    #[error("tensor {tensor:?}: the first tensor of the data buffer begins at {begin}, not 0")]
    FirstOffsetNotZero { tensor: String, begin: u64 },
    #[error("tensor {tensor:?}: begins at {begin}, leaving a gap after {previous:?}, which ends at {previous_end}")]
    Gap {
        tensor: String,
        begin: u64,
        previous: String,
        previous_end: u64,
    },
    #[error("tensor {tensor:?}: begins at {begin}, overlapping {previous:?}, which ends at {previous_end}")]
    Overlap {
        tensor: String,
        begin: u64,
        previous: String,
        previous_end: u64,
    },
    #[error(
        "tensor {tensor:?}: ends at {end}, past the end of the data buffer ({data_len} bytes)"
    )]
    OffsetsPastEnd {
        tensor: String,
        end: u64,
        data_len: u64,
    },
    #[error("{} bytes follow the last tensor (data ends at {data_end} of {data_len}); refusing a possible polyglot file", data_len.saturating_sub(*data_end))]
    TrailingBytes { data_end: u64, data_len: u64 },
    #[error("\"__metadata__\" is not a JSON object of strings")]
    MetadataNotObject,
    #[error("metadata {key:?}: the value is not a string")]
    MetadataValueNotString { key: String },
    #[error("metadata {key:?}: the key appears twice")]
    DuplicateMetadataKey { key: String },
    #[error("no tensor at index {index}")]
    NoSuchTensor { index: usize },
    #[error("a tensor may not be called \"__metadata__\"")]
    ReservedName,
    #[error("tensor {tensor:?}: the source streamed {streamed} bytes, but its dtype and shape need {declared}")]
    StreamedLength {
        tensor: String,
        declared: u64,
        streamed: u64,
    },
}
