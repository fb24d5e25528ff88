//! The rules of GGUF a file (or a source handed to the writer) can break, one variant each.
//!
//! The rules are ggml's (`src/gguf.cpp`, the reader llama.cpp and ollama use) plus the checks
//! that its CVEs taught (see `docs/gguf.md`): every variant names the key or tensor and the
//! offending number, so that a refusal says what to look at.

/// A rule of the GGUF format that a file breaks, or a request the writer cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GgufError {
    #[error("the file is {len} bytes, too short for the 24-byte GGUF header")]
    TooShort { len: u64 },
    #[error("the file does not start with the GGUF magic")]
    BadMagic,
    #[error("the file is big-endian (version reads as {version:#010x}); tantra reads little-endian GGUF only")]
    BigEndian { version: u32 },
    #[error("GGUF version 1 is no longer supported (ggml refuses it too); re-convert the model")]
    VersionOne,
    #[error("unsupported GGUF version {version} (tantra reads 2 and 3)")]
    UnsupportedVersion { version: u32 },
    #[error("{what} at offset {offset} runs past the end of the file ({file_len} bytes)")]
    Truncated {
        what: String,
        offset: u64,
        file_len: u64,
    },
    #[error("the header declares {count} {what}, more than the {left} bytes left could hold")]
    CountTooLarge {
        what: &'static str,
        count: u64,
        left: u64,
    },
    #[error("{what}: a string of {len} bytes is longer than the {limit}-byte limit")]
    StringTooLong { what: String, len: u64, limit: u64 },
    #[error("{what}: the string is not UTF-8")]
    NotUtf8 { what: String },
    #[error("metadata key {index}: the key is empty")]
    EmptyKey { index: u64 },
    #[error("metadata {key:?}: the key appears twice")]
    DuplicateKey { key: String },
    #[error("metadata {key:?}: unknown value type {value_type}")]
    UnknownValueType { key: String, value_type: u32 },
    #[error("metadata {key:?}: an array of arrays (nested arrays are refused, as ggml does)")]
    NestedArray { key: String },
    #[error("metadata {key:?}: an array of {len} elements is over the limit of {limit}")]
    ArrayTooLong { key: String, len: u64, limit: u64 },
    #[error("metadata {key:?}: a bool must be 0 or 1, found {byte}")]
    BadBool { key: String, byte: u8 },
    #[error("\"general.alignment\" must be of type u32, found {found}")]
    AlignmentType { found: String },
    #[error("\"general.alignment\" = {alignment}: must be a power of two no larger than {limit}")]
    BadAlignment { alignment: u64, limit: u64 },
    #[error("tensor {index}: the name is empty")]
    EmptyName { index: u64 },
    #[error("tensor {tensor:?}: the name is {len} bytes, ggml allows at most 63")]
    NameTooLong { tensor: String, len: u64 },
    #[error("tensor {tensor:?}: the name is used twice")]
    DuplicateTensor { tensor: String },
    #[error("tensor {tensor:?}: {n_dims} dimensions, ggml allows at most 4")]
    TooManyDims { tensor: String, n_dims: u32 },
    #[error("tensor {tensor:?}: dimension {dim} is {value}, negative as ggml reads it (int64)")]
    NegativeDimension {
        tensor: String,
        dim: usize,
        value: u64,
    },
    #[error("tensor {tensor:?}: the number of elements or bytes overflows 63 bits")]
    ShapeOverflow { tensor: String },
    #[error("tensor {tensor:?}: unknown ggml type id {id}")]
    UnknownType { tensor: String, id: u32 },
    #[error("tensor {tensor:?}: ggml type id {id} was removed from ggml")]
    RemovedType { tensor: String, id: u32 },
    #[error("tensor {tensor:?}: ggml type id {id} has a block layout tantra does not know")]
    LayoutUnknown { tensor: String, id: u32 },
    #[error(
        "tensor {tensor:?}: the row length {row} is not a multiple of {ty}'s block of {block}"
    )]
    RowNotBlockMultiple {
        tensor: String,
        ty: String,
        row: u64,
        block: u64,
    },
    #[error("tensor {tensor:?}: offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedOffset {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error("tensor {tensor:?}: offset {offset} overlaps the tensor before it, which ends (padded) at {expected}")]
    Overlap {
        tensor: String,
        offset: u64,
        expected: u64,
    },
    #[error("tensor {tensor:?}: offset {offset} leaves a gap after the tensor before it, which ends (padded) at {expected}")]
    Gap {
        tensor: String,
        offset: u64,
        expected: u64,
    },
    #[error(
        "tensor {tensor:?}: its data ends at {end}, past the end of the file ({file_len} bytes)"
    )]
    DataPastEnd {
        tensor: String,
        end: u64,
        file_len: u64,
    },
    #[error("{extra} bytes follow the data (which ends, padded, at {data_end}); refusing a possible polyglot file")]
    TrailingBytes { data_end: u64, extra: u64 },
    #[error("no tensor at index {index}")]
    NoSuchTensor { index: usize },
    #[error("tensor {tensor:?}: tantra cannot decode ggml type {ty} (it decodes F32, F16, BF16, F64, I8-I64, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K-Q6_K)")]
    CannotDecode { tensor: String, ty: String },
    #[error("tensor {tensor:?}: not stored as blocks tantra hands out as they are (only Q8_0 is)")]
    NotBlocks { tensor: String },
    #[error("tensor {tensor:?}: bytes {start}..{end} of its blocks asked for; it has {len}")]
    BlocksOutside {
        tensor: String,
        start: u64,
        end: u64,
        len: u64,
    },
    #[error("tensor {tensor:?}: GGUF has no type for {dtype}")]
    UnsupportedDType { tensor: String, dtype: String },
    #[error("tensor {tensor:?}: {rank} dimensions, GGUF holds at most 4")]
    RankTooHigh { tensor: String, rank: usize },
    #[error("tensor {tensor:?}: the source gave {got} bytes, its dtype and shape need {expected}")]
    SourceLength {
        tensor: String,
        got: u64,
        expected: u64,
    },
}
