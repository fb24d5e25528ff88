//! GGUF, the weight format of llama.cpp and ollama: a checked reader, dequantization of the
//! common quantized types, and a deterministic writer.
//!
//! # Why this module exists
//! llama.cpp and ollama are what most people run on CPUs, and they trade weights as GGUF. A
//! GGUF file comes from strangers and its parsers have a history of CVEs, so the reader
//! ([`parse_header`], [`GgufFile`]) checks every count, length, offset and dimension before it
//! trusts it, with one [`GgufError`] per broken rule, in the style of the safetensors reader.
//! Quantized tensors are handed out as f32, dequantized exactly as ggml does ([`quant`]), so the
//! rest of tantra (convert, diff, digests) sees plain tensors. The writer ([`mod@write`]) turns any
//! readable source into GGUF, optionally quantized to Q8_0 or Q4_0 with quantizers that produce
//! llama.cpp's bytes.
//!
//! Layout: [`types`] (ggml's type table), [`value`] (metadata values), [`parse`] (the header
//! and its rules), [`mod@file`] (the mapped file as a [`crate::TensorSource`]), [`quant`] (one file
//! per quant family), [`mod@write`].
//!
//! The byte layout, the rules with the CVEs behind them, and the limits: `docs/gguf.md`; each
//! quant family's block layout: its file in [`quant`].

pub mod error;
pub mod file;
pub mod parse;
pub mod quant;
pub mod types;
pub mod value;
pub mod write;

pub use error::GgufError;
pub use file::GgufFile;
pub use parse::{parse_header, GgufTensor, Header};
pub use types::GgmlType;
pub use value::{MetaArray, MetaValue};
pub use write::{convert_to_gguf, write_gguf, GgufConvertReport, GgufOptions, KeepF32, TargetType};

/// The file magic.
pub const MAGIC: [u8; 4] = *b"GGUF";
/// The version tantra writes.
pub const WRITE_VERSION: u32 = 3;
