//! safetensors: a memory-mapped reader that checks every rule of the format before it hands out
//! a byte, and a deterministic writer that streams one tensor at a time.
//!
//! # Why the reader is written this way
//! A safetensors file comes from strangers, and everything in it can lie: the header length, the
//! shapes, the offsets. [`parse_header`] checks the whole file (header and the layout of the data
//! buffer) against the rules of the reference reader (huggingface/safetensors
//! `safetensors/src/tensor.rs`) plus the ones the reference leaves out (duplicate names, which
//! `serde_json` would silently collapse to the last one). Each rule broken has its own
//! [`SafetensorsError`] variant that names the tensor. Sizes use `checked_*` arithmetic, nothing
//! is allocated from a length before the bytes behind it are known to exist, and the work is
//! `O(n log n)` in the number of tensors, so a header of a million zero-size tensors costs a sort,
//! not a quadratic scan. The JSON is parsed by hand-written `serde` visitors straight into typed
//! fields; a generic `serde_json::Value` would both hide duplicate keys and cost tens of bytes of
//! memory per byte of a hostile `shape` array.
//!
//! [`SafetensorsFile`] maps the file and hands out borrowed slices of the map (no copy).
//! Tensor data may sit at any offset, so bytes are never reinterpreted as `&[f32]`.
//! [`crate::TensorSource::stream_tensor`] feeds bounded chunks and drops the pages it is done with
//! from the resident set, so hashing or converting a 100 GB file does not look like a 100 GB
//! process.
//!
//! # Why the writer is written this way
//! [`write_safetensors`] reproduces the reference writer's layout byte for byte: `__metadata__`
//! first, tensors ordered by the reference's dtype order (which is increasing alignment) from the
//! largest down and then by name, compact JSON, the header padded with spaces to a multiple of 8 so
//! that every tensor is naturally aligned. The output depends only on the tensors and metadata,
//! never on the order a source lists them in, so the same weights always give the same file (and
//! the same sha256). The one difference: the reference keeps `__metadata__` in a hash map and writes
//! its keys in an arbitrary order; tantra writes them sorted.
//!
//! # Non-tensor values
//! Values (epoch, step, learning rates) travel in `__metadata__` under
//! [`crate::VALUES_METADATA_KEY`] as one compact JSON object from dotted name to [`crate::Value::to_json`].
//! The reader moves them into [`crate::TensorSource::values`] and *removes* the key from
//! [`crate::TensorSource::metadata`], so that a read-then-write round trip writes them once, from the
//! values. A key whose string is not such an object (a file from some other tool) is left in the
//! metadata untouched and yields no values.
//!
//! # Nesting
//! The tree of a nested checkpoint ([`crate::structure`]) travels the same way, under
//! [`crate::STRUCTURE_METADATA_KEY`], written only when the source has one that names exactly its
//! tensors and values; so `.pt` -> safetensors -> `.pt` gives back the nested checkpoint.

//!
//! [`header`] parses and validates, [`read`](mod@read) serves tensors from a map, [`write`](mod@write) writes.

mod error;
pub mod header;
pub mod read;
#[cfg(test)]
mod tests;
pub mod write;

pub use error::SafetensorsError;
pub use header::{parse_header, Header};
pub use read::SafetensorsFile;
pub use write::write_safetensors;

/// The largest header the reference reader accepts (and so the largest tantra writes).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The most tensors one header may declare. A header of [`MAX_HEADER_LEN`] bytes cannot hold more
/// than about two million entries anyway; this bound keeps the promise explicit.
pub const MAX_TENSORS: usize = 10_000_000;

/// The largest chunk [`crate::TensorSource::stream_tensor`] hands to its sink.
pub const STREAM_CHUNK: usize = crate::mmap::STREAM_CHUNK;

/// The header key that holds the string metadata.
pub const METADATA_KEY: &str = "__metadata__";
