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
//! [`SafetensorsFile::stream_tensor`] feeds bounded chunks and drops the pages it is done with
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
//! [`VALUES_METADATA_KEY`] as one compact JSON object from dotted name to [`Value::to_json`].
//! The reader moves them into [`TensorSource::values`] and *removes* the key from
//! [`TensorSource::metadata`], so that a read-then-write round trip writes them once, from the
//! values. A key whose string is not such an object (a file from some other tool) is left in the
//! metadata untouched and yields no values.
//!
//! # Nesting
//! The tree of a nested checkpoint ([`crate::structure`]) travels the same way, under
//! [`STRUCTURE_METADATA_KEY`], written only when the source has one that names exactly its
//! tensors and values; so `.pt` -> safetensors -> `.pt` gives back the nested checkpoint.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError, ResultExt};
use crate::mmap::{sub_range, Backing};
use crate::structure::{take_structure, Structure};
use crate::tensor::{bool_chunk, normalized_bools, range_outside, TensorInfo, TensorSource, Value};
use crate::{Format, Progress, STRUCTURE_METADATA_KEY, VALUES_METADATA_KEY};

/// The largest header the reference reader accepts (and so the largest tantra writes).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// The most tensors one header may declare. A header of [`MAX_HEADER_LEN`] bytes cannot hold more
/// than about two million entries anyway; this bound keeps the promise explicit.
pub const MAX_TENSORS: usize = 10_000_000;

/// The largest chunk [`SafetensorsFile::stream_tensor`] hands to its sink.
pub const STREAM_CHUNK: usize = crate::mmap::STREAM_CHUNK;

/// The header key that holds the string metadata.
pub const METADATA_KEY: &str = "__metadata__";

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

/// A validated safetensors header: what [`parse_header`] returns.
///
/// Every range it hands out lies inside the file it was parsed from, the ranges tile the data
/// buffer exactly, and each one's length is what its tensor's dtype and shape need.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    header_len: u64,
    /// In data-buffer order (by begin offset; the header's order among zero-size ties).
    tensors: Vec<TensorInfo>,
    /// Absolute byte ranges in the file, parallel to `tensors`.
    ranges: Vec<(u64, u64)>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
    structure: Option<Structure>,
}

impl Header {
    /// `N`, the length of the JSON header in bytes (padding included).
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Where the data buffer starts in the file (`8 + N`).
    pub fn data_start(&self) -> u64 {
        8 + self.header_len
    }

    /// The tensors, in the order their data is stored.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// `__metadata__`, without [`VALUES_METADATA_KEY`] when that held values.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The non-tensor values stored under [`VALUES_METADATA_KEY`].
    pub fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }

    /// The nesting stored under [`STRUCTURE_METADATA_KEY`], when that parsed.
    pub fn structure(&self) -> Option<&Structure> {
        self.structure.as_ref()
    }

    /// The absolute byte range of tensor `index` in the file.
    pub fn tensor_range(&self, index: usize) -> Option<Range<u64>> {
        self.ranges.get(index).map(|&(b, e)| b..e)
    }

    /// The bytes of tensor `index` within `file`, the bytes the header was parsed from.
    pub fn tensor_data<'a>(&self, file: &'a [u8], index: usize) -> Option<&'a [u8]> {
        let r = self.tensor_range(index)?;
        file.get(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?)
    }
}

/// Parses and validates a whole safetensors file held in memory: the header and the layout of
/// the data buffer (the data bytes themselves are not read).
///
/// # Errors
/// The first rule the file breaks, e.g. a file of 4 bytes:
/// ```
/// use tantra_formats::safetensors::{parse_header, SafetensorsError};
/// assert_eq!(parse_header(b"abcd").unwrap_err(), SafetensorsError::TooShort { len: 4 });
/// ```
pub fn parse_header(bytes: &[u8]) -> Result<Header, SafetensorsError> {
    parse_with_limit(bytes, MAX_TENSORS)
}

fn parse_with_limit(bytes: &[u8], max_tensors: usize) -> Result<Header, SafetensorsError> {
    let file_len = bytes.len() as u64;
    let Some(len_bytes) = bytes.first_chunk::<8>() else {
        return Err(SafetensorsError::TooShort { len: file_len });
    };
    let header_len = u64::from_le_bytes(*len_bytes);
    if header_len > MAX_HEADER_LEN {
        return Err(SafetensorsError::HeaderTooLarge { header_len });
    }
    // Cannot overflow: header_len <= MAX_HEADER_LEN.
    let data_start = 8 + header_len;
    let past_end = SafetensorsError::HeaderPastEnd {
        header_len,
        file_len,
    };
    if data_start > file_len {
        return Err(past_end);
    }
    let header_bytes = usize::try_from(data_start)
        .ok()
        .and_then(|end| bytes.get(8..end))
        .ok_or(past_end)?;
    let text = std::str::from_utf8(header_bytes).map_err(|e| SafetensorsError::HeaderNotUtf8 {
        valid_up_to: e.valid_up_to(),
    })?;
    if !text
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        return Err(SafetensorsError::HeaderNotObject);
    }
    let raw = parse_json(text, max_tensors)?;
    validate(raw, header_len, file_len - data_start)
}

/// One header entry as written, before the layout checks.
struct RawEntry {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    begin: u64,
    end: u64,
}

struct RawHeader {
    entries: Vec<RawEntry>,
    metadata: BTreeMap<String, String>,
}

fn validate(raw: RawHeader, header_len: u64, data_len: u64) -> Result<Header, SafetensorsError> {
    let RawHeader {
        mut entries,
        mut metadata,
    } = raw;

    // Each entry on its own: offsets in order, a size that fits, offsets that span that size.
    for e in &entries {
        if e.begin > e.end {
            return Err(SafetensorsError::OffsetsReversed {
                tensor: e.name.clone(),
                begin: e.begin,
                end: e.end,
            });
        }
        let overflow = || SafetensorsError::ShapeOverflow {
            tensor: e.name.clone(),
        };
        let numel = e
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        let bits = numel.checked_mul(e.dtype.bits()).ok_or_else(overflow)?;
        if !bits.is_multiple_of(8) {
            return Err(SafetensorsError::PartialByte {
                tensor: e.name.clone(),
                dtype: e.dtype,
                numel,
            });
        }
        let actual = e.end - e.begin;
        if actual != bits / 8 {
            return Err(SafetensorsError::ByteLengthMismatch {
                tensor: e.name.clone(),
                expected: bits / 8,
                actual,
            });
        }
    }

    // Duplicate names: sort indices by name, compare neighbours (O(n log n), no copies).
    let mut by_name: Vec<usize> = (0..entries.len()).collect();
    by_name.sort_unstable_by(|&a, &b| entries[a].name.cmp(&entries[b].name));
    if let Some(w) = by_name
        .windows(2)
        .find(|w| entries[w[0]].name == entries[w[1]].name)
    {
        return Err(SafetensorsError::DuplicateTensor {
            tensor: entries[w[0]].name.clone(),
        });
    }
    drop(by_name);

    // The layout: sorted by offsets, the tensors tile the data buffer exactly.
    entries.sort_by_key(|e| (e.begin, e.end));
    let mut prev: Option<&RawEntry> = None;
    for e in &entries {
        match prev {
            None if e.begin != 0 => {
                return Err(SafetensorsError::FirstOffsetNotZero {
                    tensor: e.name.clone(),
                    begin: e.begin,
                })
            }
            Some(p) if e.begin > p.end => {
                return Err(SafetensorsError::Gap {
                    tensor: e.name.clone(),
                    begin: e.begin,
                    previous: p.name.clone(),
                    previous_end: p.end,
                })
            }
            Some(p) if e.begin < p.end => {
                return Err(SafetensorsError::Overlap {
                    tensor: e.name.clone(),
                    begin: e.begin,
                    previous: p.name.clone(),
                    previous_end: p.end,
                })
            }
            _ => {}
        }
        if e.end > data_len {
            return Err(SafetensorsError::OffsetsPastEnd {
                tensor: e.name.clone(),
                end: e.end,
                data_len,
            });
        }
        prev = Some(e);
    }
    let data_end = prev.map_or(0, |p| p.end);
    if data_end != data_len {
        return Err(SafetensorsError::TrailingBytes { data_end, data_len });
    }

    let values = take_values(&mut metadata);
    let structure = take_structure(&mut metadata);
    let data_start = 8 + header_len;
    let mut tensors = Vec::with_capacity(entries.len());
    let mut ranges = Vec::with_capacity(entries.len());
    for e in entries {
        // Cannot overflow: e.end <= data_len and data_start + data_len is the file length.
        ranges.push((data_start + e.begin, data_start + e.end));
        tensors.push(TensorInfo::new(e.name, e.dtype, e.shape));
    }
    Ok(Header {
        header_len,
        tensors,
        ranges,
        metadata,
        values,
        structure,
    })
}

/// Moves the values out of `metadata[VALUES_METADATA_KEY]` when it holds a JSON object whose
/// every member is a [`Value`]; otherwise leaves the metadata as it is.
fn take_values(metadata: &mut BTreeMap<String, String>) -> BTreeMap<String, Value> {
    let Some(text) = metadata.get(VALUES_METADATA_KEY) else {
        return BTreeMap::new();
    };
    let Ok(obj) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) else {
        return BTreeMap::new();
    };
    let mut values = BTreeMap::new();
    for (k, j) in &obj {
        match Value::from_json(j) {
            Some(v) => {
                values.insert(k.clone(), v);
            }
            None => return BTreeMap::new(),
        }
    }
    metadata.remove(VALUES_METADATA_KEY);
    values
}

// ---------------------------------------------------------------------------------------------
// The JSON header, parsed by visitors that know the schema.
//
// A visitor that finds a broken rule stores the typed error in `Ctx` and returns an opaque
// `serde` error to stop the parser; `parse_json` then returns the stored error. Errors that no
// visitor stored are JSON syntax errors.

struct Ctx {
    err: RefCell<Option<SafetensorsError>>,
    max_tensors: usize,
}

impl Ctx {
    fn fail<E: de::Error>(&self, e: SafetensorsError) -> E {
        let mut slot = self.err.borrow_mut();
        if slot.is_none() {
            *slot = Some(e);
        }
        E::custom("safetensors rule broken")
    }
}

fn parse_json(text: &str, max_tensors: usize) -> Result<RawHeader, SafetensorsError> {
    let ctx = Ctx {
        err: RefCell::new(None),
        max_tensors,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let result = de
        .deserialize_map(TopVisitor(&ctx))
        .and_then(|raw| de.end().map(|()| raw));
    result.map_err(|e| {
        ctx.err
            .into_inner()
            .unwrap_or_else(|| SafetensorsError::InvalidJson(e.to_string()))
    })
}

/// Deserializes with `deserialize_any`, so that the visitor sees whatever kind of JSON is there
/// and can name the rule a wrong kind breaks.
struct Any<V>(V);

impl<'de, V: Visitor<'de>> DeserializeSeed<'de> for Any<V> {
    type Value = V::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        d.deserialize_any(self.0)
    }
}

/// Implements the listed `Visitor` methods as refusals (`self.wrong()`).
macro_rules! refuse {
    ($($kind:ident)*) => { $( refuse!(@ $kind); )* };
    (@ unit) => {
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> { Err(self.wrong()) }
    };
    (@ bool) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> { Err(self.wrong()) }
    };
    (@ i64) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> { Err(self.wrong()) }
    };
    (@ u64) => {
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> { Err(self.wrong()) }
    };
    (@ f64) => {
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> { Err(self.wrong()) }
    };
    (@ str) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> { Err(self.wrong()) }
    };
    (@ seq) => {
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong())
        }
    };
    (@ map) => {
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
            Err(self.wrong())
        }
    };
}

struct TopVisitor<'c>(&'c Ctx);

impl<'de> Visitor<'de> for TopVisitor<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object of tensor entries")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let ctx = self.0;
        let mut entries = Vec::new();
        let mut metadata = None;
        while let Some(name) = map.next_key::<String>()? {
            if name == METADATA_KEY {
                if metadata.is_some() {
                    return Err(ctx.fail(SafetensorsError::DuplicateMetadata));
                }
                metadata = Some(map.next_value_seed(Any(MetadataVisitor(ctx)))?);
            } else {
                if entries.len() >= ctx.max_tensors {
                    return Err(ctx.fail(SafetensorsError::TooManyTensors {
                        limit: ctx.max_tensors,
                    }));
                }
                let (dtype, shape, (begin, end)) =
                    map.next_value_seed(Any(EntryVisitor { ctx, name: &name }))?;
                entries.push(RawEntry {
                    name,
                    dtype,
                    shape,
                    begin,
                    end,
                });
            }
        }
        Ok(RawHeader {
            entries,
            // `"__metadata__": null` is what the reference's `Option` accepts: no metadata.
            metadata: metadata.flatten().unwrap_or_default(),
        })
    }
}

struct MetadataVisitor<'c>(&'c Ctx);

impl MetadataVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.0.fail(SafetensorsError::MetadataNotObject)
    }
}

impl<'de> Visitor<'de> for MetadataVisitor<'_> {
    type Value = Option<BTreeMap<String, String>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of strings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.0;
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(ctx.fail(SafetensorsError::DuplicateMetadataKey { key }));
            }
            let value = map.next_value_seed(Any(MetadataValueVisitor { ctx, key: &key }))?;
            out.insert(key, value);
        }
        Ok(Some(out))
    }

    refuse!(bool i64 u64 f64 str seq);
}

struct MetadataValueVisitor<'c> {
    ctx: &'c Ctx,
    key: &'c str,
}

impl MetadataValueVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.ctx.fail(SafetensorsError::MetadataValueNotString {
            key: self.key.to_string(),
        })
    }
}

impl<'de> Visitor<'de> for MetadataValueVisitor<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    refuse!(unit bool i64 u64 f64 seq map);
}

struct EntryVisitor<'c> {
    ctx: &'c Ctx,
    name: &'c str,
}

impl EntryVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.ctx.fail(SafetensorsError::EntryNotObject {
            tensor: self.name.to_string(),
        })
    }
}

/// A field of a tensor entry: its name and what it must hold, for the errors.
#[derive(Clone, Copy)]
struct Field {
    name: &'static str,
    expected: &'static str,
}

const DTYPE: Field = Field {
    name: "dtype",
    expected: "a string",
};
const SHAPE: Field = Field {
    name: "shape",
    expected: "an array of non-negative integers",
};
const OFFSETS: Field = Field {
    name: "data_offsets",
    expected: "an array of two non-negative integers",
};

impl<'de> Visitor<'de> for EntryVisitor<'_> {
    type Value = (DType, Vec<u64>, (u64, u64));

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a tensor entry object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let tensor = self.name;
        let mut dtype = None;
        let mut shape = None;
        let mut offsets = None;
        while let Some(key) = map.next_key::<String>()? {
            let field = match key.as_str() {
                "dtype" => DTYPE,
                "shape" => SHAPE,
                "data_offsets" => OFFSETS,
                // The reference ignores fields it does not know; so do we.
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            let taken = match field.name {
                "dtype" => dtype.is_some(),
                "shape" => shape.is_some(),
                _ => offsets.is_some(),
            };
            if taken {
                return Err(ctx.fail(SafetensorsError::DuplicateField {
                    tensor: tensor.to_string(),
                    field: field.name,
                }));
            }
            let fv = FieldVisitor { ctx, tensor, field };
            match field.name {
                "dtype" => dtype = Some(map.next_value_seed(Any(DTypeVisitor(fv)))?),
                "shape" => shape = Some(map.next_value_seed(Any(ShapeVisitor(fv)))?),
                _ => offsets = Some(map.next_value_seed(Any(OffsetsVisitor(fv)))?),
            }
        }
        let missing = |field: &'static str| {
            ctx.fail(SafetensorsError::MissingField {
                tensor: tensor.to_string(),
                field,
            })
        };
        let dtype = dtype.ok_or_else(|| missing("dtype"))?;
        let shape = shape.ok_or_else(|| missing("shape"))?;
        let offsets = offsets.ok_or_else(|| missing("data_offsets"))?;
        Ok((dtype, shape, offsets))
    }

    refuse!(unit bool i64 u64 f64 str seq);
}

/// What the visitors of one field share: where they are, for the errors.
#[derive(Clone, Copy)]
struct FieldVisitor<'c> {
    ctx: &'c Ctx,
    tensor: &'c str,
    field: Field,
}

impl FieldVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.ctx.fail(SafetensorsError::InvalidField {
            tensor: self.tensor.to_string(),
            field: self.field.name,
            expected: self.field.expected,
        })
    }
}

struct DTypeVisitor<'c>(FieldVisitor<'c>);

impl DTypeVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.0.wrong()
    }
}

impl<'de> Visitor<'de> for DTypeVisitor<'_> {
    type Value = DType;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a dtype name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<DType, E> {
        v.parse().map_err(|_| {
            self.0.ctx.fail(SafetensorsError::UnknownDType {
                tensor: self.0.tensor.to_string(),
                dtype: v.to_string(),
            })
        })
    }

    refuse!(unit bool i64 u64 f64 seq map);
}

struct ShapeVisitor<'c>(FieldVisitor<'c>);

impl ShapeVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.0.wrong()
    }
}

impl<'de> Visitor<'de> for ShapeVisitor<'_> {
    type Value = Vec<u64>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(SHAPE.expected)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
        // Grows with the elements actually parsed, never from a declared length.
        let mut shape = Vec::new();
        while let Some(d) = seq.next_element_seed(Any(DimVisitor(self.0)))? {
            shape.push(d);
        }
        Ok(shape)
    }

    refuse!(unit bool i64 u64 f64 str map);
}

struct DimVisitor<'c>(FieldVisitor<'c>);

impl DimVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.0.wrong()
    }
}

impl<'de> Visitor<'de> for DimVisitor<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| {
            self.0.ctx.fail(SafetensorsError::NegativeDimension {
                tensor: self.0.tensor.to_string(),
                dim: v,
            })
        })
    }

    refuse!(unit bool f64 str seq map);
}

struct OffsetsVisitor<'c>(FieldVisitor<'c>);

impl OffsetsVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.0.wrong()
    }
}

impl<'de> Visitor<'de> for OffsetsVisitor<'_> {
    type Value = (u64, u64);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(OFFSETS.expected)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(u64, u64), A::Error> {
        let begin = seq.next_element_seed(Any(OffsetVisitor(self.0)))?;
        let end = seq.next_element_seed(Any(OffsetVisitor(self.0)))?;
        let (Some(begin), Some(end)) = (begin, end) else {
            return Err(self.wrong());
        };
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(self.wrong());
        }
        Ok((begin, end))
    }

    refuse!(unit bool i64 u64 f64 str map);
}

struct OffsetVisitor<'c>(FieldVisitor<'c>);

impl OffsetVisitor<'_> {
    fn wrong<E: de::Error>(&self) -> E {
        self.0.wrong()
    }
}

impl<'de> Visitor<'de> for OffsetVisitor<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a non-negative integer")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    refuse!(unit bool i64 f64 str seq map);
}

// ---------------------------------------------------------------------------------------------
// The reader.

/// An open, validated safetensors file: memory-mapped ([`SafetensorsFile::open`]) or held in
/// memory ([`SafetensorsFile::from_bytes`]).
///
/// Tensors are listed in the order their data is stored. Metadata and values are described in
/// the module docs.
pub struct SafetensorsFile {
    path: Option<PathBuf>,
    backing: Backing,
    header: Header,
}

impl fmt::Debug for SafetensorsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SafetensorsFile")
            .field("path", &self.path)
            .field("len", &self.backing.bytes().len())
            .field("header", &self.header)
            .finish()
    }
}

impl SafetensorsFile {
    fn is_bool(&self, index: usize) -> bool {
        self.header
            .tensors
            .get(index)
            .is_some_and(|t| t.dtype == DType::Bool)
    }

    /// Maps `path` and validates it (see [`parse_header`]).
    ///
    /// # Errors
    /// An I/O error, or the first rule of the format the file breaks; the error names the file.
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let path = dir.path().join("short.safetensors");
    /// std::fs::write(&path, b"\x02\x00").unwrap();
    /// let err = tantra_formats::safetensors::SafetensorsFile::open(&path).unwrap_err();
    /// assert!(err.to_string().contains("shorter than the 8-byte header length"));
    /// ```
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len < 8 {
            // Also keeps a zero-length file away from mmap, which refuses it on some systems.
            return Err(SafetensorsError::TooShort { len }).at(path);
        }
        let backing = Backing::map(&file).at(path)?;
        let header = parse_header(backing.bytes()).at(path)?;
        Ok(SafetensorsFile {
            path: Some(path.to_path_buf()),
            backing,
            header,
        })
    }

    /// Validates a whole file held in memory and serves tensors from it.
    ///
    /// # Errors
    /// The first rule of the format the bytes break.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, FormatError> {
        let header = parse_header(&bytes).map_err(no_path)?;
        Ok(SafetensorsFile {
            path: None,
            backing: Backing::Owned(bytes),
            header,
        })
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file this was opened from (`None` for [`SafetensorsFile::from_bytes`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn error(&self, e: SafetensorsError) -> FormatError {
        FormatError {
            path: self.path.clone(),
            kind: e.into(),
        }
    }

    /// The absolute byte range of tensor `index`, as `usize`.
    fn range(&self, index: usize) -> Result<Range<usize>, FormatError> {
        let r = self
            .header
            .tensor_range(index)
            .ok_or_else(|| self.error(SafetensorsError::NoSuchTensor { index }))?;
        // Validated against the file's length, which is a usize.
        match (usize::try_from(r.start), usize::try_from(r.end)) {
            (Ok(s), Ok(e)) if e <= self.backing.bytes().len() => Ok(s..e),
            _ => Err(self.error(SafetensorsError::NoSuchTensor { index })),
        }
    }
}

impl TensorSource for SafetensorsFile {
    fn format(&self) -> Format {
        Format::Safetensors
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let r = self.range(index)?;
        let bytes = self
            .backing
            .bytes()
            .get(r)
            .ok_or_else(|| self.error(SafetensorsError::NoSuchTensor { index }))?;
        if self.is_bool(index) {
            if let Some(n) = normalized_bools(bytes) {
                return Ok(Cow::Owned(n));
            }
        }
        Ok(Cow::Borrowed(bytes))
    }

    /// Feeds chunks of at most [`STREAM_CHUNK`] bytes, cut at multiples of it in file offsets,
    /// and releases each chunk's pages once the sink has taken it.
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let r = self.range(index)?;
        let outside = || self.error(SafetensorsError::NoSuchTensor { index });
        if self.is_bool(index) {
            return self
                .backing
                .stream(r, &mut |c| bool_chunk(c, sink), &outside);
        }
        self.backing.stream(r, sink, &outside)
    }

    fn stream_tensor_range(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let r = self.range(index)?;
        let part = sub_range(&r, &range).ok_or_else(|| {
            range_outside(self.path.as_deref(), &self.header.tensors, index, &range)
        })?;
        let outside = || self.error(SafetensorsError::NoSuchTensor { index });
        if self.is_bool(index) {
            return self
                .backing
                .stream(part, &mut |c| bool_chunk(c, sink), &outside);
        }
        self.backing.stream(part, sink, &outside)
    }

    fn file_range(&self, index: usize) -> Option<Range<u64>> {
        // A bool tensor whose bytes are not all 0/1 is not handed out as it is stored.
        if self.is_bool(index) && !matches!(self.tensor_bytes(index), Ok(Cow::Borrowed(_))) {
            return None;
        }
        match &self.backing {
            Backing::Map(_) => self.range(index).ok().map(|r| r.start as u64..r.end as u64),
            Backing::Owned(_) => None,
        }
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.header.metadata
    }

    fn values(&self) -> &BTreeMap<String, Value> {
        &self.header.values
    }

    fn structure(&self) -> Option<&Structure> {
        self.header.structure()
    }
}

// ---------------------------------------------------------------------------------------------
// The writer.

fn no_path(e: SafetensorsError) -> FormatError {
    FormatError {
        path: None,
        kind: ErrorKind::Safetensors(e),
    }
}

fn io_error(e: io::Error) -> FormatError {
    FormatError {
        path: None,
        kind: ErrorKind::Io(e),
    }
}

/// The reference writer's dtype order (its `Dtype` enum, which lists dtypes by increasing
/// alignment). Tensors are written from the highest rank down, then by name.
fn reference_rank(d: DType) -> u8 {
    match d {
        DType::Bool => 0,
        DType::F4 => 1,
        DType::F6E2M3 => 2,
        DType::F6E3M2 => 3,
        DType::U8 => 4,
        DType::I8 => 5,
        DType::F8E5M2 => 6,
        DType::F8E4M3 => 7,
        DType::F8E8M0 => 8,
        DType::F8E4M3Fnuz => 9,
        DType::F8E5M2Fnuz => 10,
        DType::I16 => 11,
        DType::U16 => 12,
        DType::F16 => 13,
        DType::BF16 => 14,
        DType::I32 => 15,
        DType::U32 => 16,
        DType::F32 => 17,
        DType::C64 => 18,
        DType::F64 => 19,
        DType::I64 => 20,
        DType::U64 => 21,
    }
}

/// What to write, worked out before the first byte goes out.
struct Plan {
    /// The JSON header, padded.
    header: Vec<u8>,
    /// Source indices in write order, with their byte lengths.
    order: Vec<(usize, u64)>,
    total: u64,
}

struct HeaderOut<'a> {
    metadata: &'a BTreeMap<String, String>,
    entries: Vec<(&'a TensorInfo, u64, u64)>,
}

struct EntryOut<'a> {
    info: &'a TensorInfo,
    begin: u64,
    end: u64,
}

impl Serialize for HeaderOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len() + 1))?;
        map.serialize_entry(METADATA_KEY, self.metadata)?;
        for &(info, begin, end) in &self.entries {
            map.serialize_entry(&info.name, &EntryOut { info, begin, end })?;
        }
        map.end()
    }
}

impl Serialize for EntryOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("dtype", self.info.dtype.as_str())?;
        map.serialize_entry("shape", &self.info.shape)?;
        map.serialize_entry("data_offsets", &[self.begin, self.end])?;
        map.end()
    }
}

/// The metadata tantra writes: the source's, `"format": "pt"` unless a format is given
/// (transformers refuses a file without one of its known formats), and the values.
fn metadata_to_write(src: &dyn TensorSource) -> Result<BTreeMap<String, String>, FormatError> {
    let mut metadata = src.metadata().clone();
    metadata
        .entry("format".to_string())
        .or_insert_with(|| "pt".to_string());
    if !src.values().is_empty() {
        let obj: serde_json::Map<String, serde_json::Value> = src
            .values()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let text = serde_json::to_string(&obj).map_err(|e| io_error(e.into()))?;
        metadata.insert(VALUES_METADATA_KEY.to_string(), text);
    }
    // The nesting, when the writer of a `.pt` would use it too.
    if let Some(s) = src.structure().filter(|s| s.fits(src)) {
        metadata.insert(STRUCTURE_METADATA_KEY.to_string(), s.to_json().to_string());
    }
    Ok(metadata)
}

fn plan(src: &dyn TensorSource) -> Result<Plan, FormatError> {
    let infos = src.tensors();
    let mut by_name: Vec<usize> = (0..infos.len()).collect();
    by_name.sort_unstable_by(|&a, &b| infos[a].name.cmp(&infos[b].name));
    if let Some(w) = by_name
        .windows(2)
        .find(|w| infos[w[0]].name == infos[w[1]].name)
    {
        return Err(no_path(SafetensorsError::DuplicateTensor {
            tensor: infos[w[0]].name.clone(),
        }));
    }
    if infos.iter().any(|t| t.name == METADATA_KEY) {
        return Err(no_path(SafetensorsError::ReservedName));
    }

    let mut order: Vec<usize> = (0..infos.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&infos[a], &infos[b]);
        (Reverse(reference_rank(x.dtype)), &x.name)
            .cmp(&(Reverse(reference_rank(y.dtype)), &y.name))
    });

    let mut offset = 0u64;
    let mut entries = Vec::with_capacity(order.len());
    let mut lens = Vec::with_capacity(order.len());
    for &i in &order {
        let info = &infos[i];
        let overflow = || {
            no_path(SafetensorsError::ShapeOverflow {
                tensor: info.name.clone(),
            })
        };
        let numel = info.numel().ok_or_else(overflow)?;
        let bits = numel.checked_mul(info.dtype.bits()).ok_or_else(overflow)?;
        if !bits.is_multiple_of(8) {
            return Err(no_path(SafetensorsError::PartialByte {
                tensor: info.name.clone(),
                dtype: info.dtype,
                numel,
            }));
        }
        let len = bits / 8;
        let end = offset.checked_add(len).ok_or_else(overflow)?;
        entries.push((info, offset, end));
        lens.push((i, len));
        offset = end;
    }

    let metadata = metadata_to_write(src)?;
    let mut header = serde_json::to_vec(&HeaderOut {
        metadata: &metadata,
        entries,
    })
    .map_err(|e| io_error(e.into()))?;
    let pad = header.len().next_multiple_of(8) - header.len();
    header.resize(header.len() + pad, b' ');
    let header_len = header.len() as u64;
    if header_len > MAX_HEADER_LEN {
        return Err(no_path(SafetensorsError::HeaderTooLarge { header_len }));
    }
    // Cannot overflow in practice (offset <= u64::MAX and the header is small), but checked.
    let total = (8 + header_len).checked_add(offset).ok_or_else(|| {
        let last = lens.last().and_then(|&(i, _)| infos.get(i));
        no_path(SafetensorsError::ShapeOverflow {
            tensor: last.map(|t| t.name.clone()).unwrap_or_default(),
        })
    })?;
    Ok(Plan {
        header,
        order: lens,
        total,
    })
}

/// Writes `src` as a safetensors file to `out`, one tensor at a time (through
/// [`TensorSource::stream_tensor`], so memory stays bounded by the chunks a source hands out),
/// and returns the number of bytes written.
///
/// The layout is the reference writer's (see the module docs) and depends only on the tensors,
/// the metadata and the values: the same input always gives the same bytes. Progress is reported
/// as `begin("writing safetensors", file_len)`, `advance` per chunk, `end`.
///
/// # Errors
/// A duplicate tensor name or one called `__metadata__`, a shape whose size overflows or is not
/// a whole number of bytes, a header over [`MAX_HEADER_LEN`], a source that streams a different
/// number of bytes than its dtype and shape need, or an error from the source or from `out`.
///
/// ```
/// use tantra_formats::{safetensors::write_safetensors, MemorySource, NoProgress, TensorInfo, DType};
/// let mut m = MemorySource::new();
/// m.push_f32("w", vec![2], &[1.0, 2.0])?;
/// let mut out = Vec::new();
/// let n = write_safetensors(&mut out, &m, &NoProgress)?;
/// assert_eq!(n as usize, out.len());
/// # Ok::<(), tantra_formats::FormatError>(())
/// ```
pub fn write_safetensors(
    out: &mut dyn Write,
    src: &dyn TensorSource,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    let plan = plan(src)?;
    progress.begin("writing safetensors", plan.total);
    let result = write_planned(out, src, &plan, progress);
    progress.end();
    result.map(|()| plan.total)
}

fn write_planned(
    out: &mut dyn Write,
    src: &dyn TensorSource,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<(), FormatError> {
    let header_len = plan.header.len() as u64;
    out.write_all(&header_len.to_le_bytes()).map_err(io_error)?;
    out.write_all(&plan.header).map_err(io_error)?;
    progress.advance(8 + header_len);
    let infos = src.tensors();
    for &(index, declared) in &plan.order {
        let name = || infos.get(index).map(|t| t.name.clone()).unwrap_or_default();
        let mut streamed = 0u64;
        src.stream_tensor(index, &mut |chunk| {
            let n = chunk.len() as u64;
            // Refuse before writing: never put more bytes in the file than the header declares.
            match streamed.checked_add(n) {
                Some(s) if s <= declared => streamed = s,
                _ => {
                    return Err(no_path(SafetensorsError::StreamedLength {
                        tensor: name(),
                        declared,
                        streamed: streamed.saturating_add(n),
                    }))
                }
            }
            out.write_all(chunk).map_err(io_error)?;
            progress.advance(n);
            Ok(())
        })?;
        if streamed != declared {
            return Err(no_path(SafetensorsError::StreamedLength {
                tensor: name(),
                declared,
                streamed,
            }));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::MemorySource;
    use crate::NoProgress;
    use std::sync::Mutex;

    /// A file with `header` as its JSON (unpadded) and `data` as its data buffer.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    fn err(header: &str, data: &[u8]) -> SafetensorsError {
        parse_header(&file(header, data)).unwrap_err()
    }

    fn ok(header: &str, data: &[u8]) -> Header {
        parse_header(&file(header, data)).unwrap()
    }

    const F32X2: &str = r#""dtype":"F32","shape":[2]"#;

    fn entry(name: &str, begin: u64, end: u64) -> String {
        format!(r#""{name}":{{{F32X2},"data_offsets":[{begin},{end}]}}"#)
    }

    fn one(e: &str) -> String {
        format!("{{{e}}}")
    }

    fn tensor(s: &str) -> String {
        s.to_string()
    }

    // --- accepted files -----------------------------------------------------------------------

    #[test]
    fn accepts_a_plain_file_and_lists_by_offset() {
        let h = ok(
            &format!(
                r#"{{"__metadata__":{{"format":"pt"}},{},{}}}"#,
                entry("b", 8, 16),
                entry("a", 0, 8)
            ),
            &[0; 16],
        );
        let names: Vec<_> = h.tensors().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(h.metadata().get("format").map(String::as_str), Some("pt"));
        assert_eq!(
            h.tensor_range(1),
            Some(h.data_start() + 8..h.data_start() + 16)
        );
        assert!(h.values().is_empty());
    }

    #[test]
    fn accepts_empty_scalar_and_no_tensors() {
        let h = ok(
            r#"{"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}"#,
            &[1; 8],
        );
        assert_eq!(h.tensors()[0].shape, vec![0, 4]);
        assert_eq!(h.tensors()[1].shape, Vec::<u64>::new());
        let h = ok("{}", &[]);
        assert!(h.tensors().is_empty());
        let h = ok(r#"  {"__metadata__":null}   "#, &[]);
        assert!(h.metadata().is_empty());
    }

    #[test]
    fn accepts_sub_byte_dtypes_in_whole_bytes() {
        let h = ok(
            r#"{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"b":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[2,5]}}"#,
            &[0; 5],
        );
        assert_eq!(h.tensors()[1].dtype, DType::F6E2M3);
    }

    #[test]
    fn accepts_unaligned_data_and_unknown_fields() {
        // A 3-byte header puts the data at offset 11; bytes are served as bytes.
        let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":[{"x":1}]}}"#;
        let bytes = file(header, &1.5f32.to_le_bytes());
        let src = SafetensorsFile::from_bytes(bytes).unwrap();
        assert_eq!(src.header().data_start() % 4, (8 + header.len() as u64) % 4);
        assert_eq!(&*src.tensor_bytes(0).unwrap(), &1.5f32.to_le_bytes());
    }

    // --- one test per refusal -----------------------------------------------------------------

    #[test]
    fn refuses_shorter_than_8_bytes() {
        assert_eq!(
            parse_header(b""),
            Err(SafetensorsError::TooShort { len: 0 })
        );
        assert_eq!(
            parse_header(b"1234567"),
            Err(SafetensorsError::TooShort { len: 7 })
        );
    }

    #[test]
    fn refuses_header_past_end() {
        let mut b = 100u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert_eq!(
            parse_header(&b),
            Err(SafetensorsError::HeaderPastEnd {
                header_len: 100,
                file_len: 10
            })
        );
        let b = u64::MAX.to_le_bytes();
        assert!(matches!(
            parse_header(&b),
            Err(SafetensorsError::HeaderTooLarge { .. })
        ));
    }

    #[test]
    fn refuses_absurd_header_length() {
        let mut b = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        assert_eq!(
            parse_header(&b),
            Err(SafetensorsError::HeaderTooLarge {
                header_len: MAX_HEADER_LEN + 1
            })
        );
    }

    #[test]
    fn refuses_non_utf8_header() {
        let mut b = 4u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{\xff}\x20");
        assert_eq!(
            parse_header(&b),
            Err(SafetensorsError::HeaderNotUtf8 { valid_up_to: 1 })
        );
    }

    #[test]
    fn refuses_header_that_is_not_an_object() {
        for h in ["[1,2]", "\"x\"", "", "   ", "null", "7"] {
            assert_eq!(err(h, &[]), SafetensorsError::HeaderNotObject, "{h:?}");
        }
    }

    #[test]
    fn refuses_invalid_json() {
        for h in [r#"{"a":"#, "{} x", r#"{"a" 1}"#, "{\u{0}}"] {
            assert!(
                matches!(err(h, &[]), SafetensorsError::InvalidJson(_)),
                "{h:?}"
            );
        }
    }

    #[test]
    fn refuses_entry_that_is_not_an_object() {
        for v in ["5", "[1]", "\"F32\"", "null", "true", "-1", "1.5"] {
            assert_eq!(
                err(&format!(r#"{{"w":{v}}}"#), &[]),
                SafetensorsError::EntryNotObject {
                    tensor: tensor("w")
                },
                "{v}"
            );
        }
    }

    #[test]
    fn refuses_missing_fields() {
        for (body, field) in [
            (r#""shape":[2],"data_offsets":[0,8]"#, "dtype"),
            (r#""dtype":"F32","data_offsets":[0,8]"#, "shape"),
            (r#""dtype":"F32","shape":[2]"#, "data_offsets"),
        ] {
            assert_eq!(
                err(&format!(r#"{{"w":{{{body}}}}}"#), &[0; 8]),
                SafetensorsError::MissingField {
                    tensor: tensor("w"),
                    field
                }
            );
        }
    }

    #[test]
    fn refuses_duplicate_fields() {
        assert_eq!(
            err(
                r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"dtype":"I32"}}"#,
                &[0; 8]
            ),
            SafetensorsError::DuplicateField {
                tensor: tensor("w"),
                field: "dtype"
            }
        );
    }

    #[test]
    fn refuses_fields_of_the_wrong_kind() {
        for (body, field) in [
            (r#""dtype":32,"shape":[2],"data_offsets":[0,8]"#, "dtype"),
            (r#""dtype":"F32","shape":"2","data_offsets":[0,8]"#, "shape"),
            (
                r#""dtype":"F32","shape":[2.0],"data_offsets":[0,8]"#,
                "shape",
            ),
            (
                r#""dtype":"F32","shape":[[2]],"data_offsets":[0,8]"#,
                "shape",
            ),
            (
                r#""dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]"#,
                "shape",
            ),
            (
                r#""dtype":"F32","shape":[2],"data_offsets":[0]"#,
                "data_offsets",
            ),
            (
                r#""dtype":"F32","shape":[2],"data_offsets":[0,8,8]"#,
                "data_offsets",
            ),
            (
                r#""dtype":"F32","shape":[2],"data_offsets":[-1,8]"#,
                "data_offsets",
            ),
            (
                r#""dtype":"F32","shape":[2],"data_offsets":{"0":8}"#,
                "data_offsets",
            ),
        ] {
            let e = err(&format!(r#"{{"w":{{{body}}}}}"#), &[0; 8]);
            assert!(
                matches!(&e, SafetensorsError::InvalidField { tensor, field: f, .. } if tensor == "w" && *f == field),
                "{body}: {e:?}"
            );
        }
    }

    #[test]
    fn refuses_unknown_dtype() {
        assert_eq!(
            err(
                r#"{"w":{"dtype":"F128","shape":[2],"data_offsets":[0,32]}}"#,
                &[0; 32]
            ),
            SafetensorsError::UnknownDType {
                tensor: tensor("w"),
                dtype: "F128".into()
            }
        );
        // Case matters, as in the reference.
        assert!(matches!(
            err(
                r#"{"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8]
            ),
            SafetensorsError::UnknownDType { .. }
        ));
    }

    #[test]
    fn refuses_negative_dimensions() {
        assert_eq!(
            err(
                r#"{"w":{"dtype":"F32","shape":[-2,-1],"data_offsets":[0,8]}}"#,
                &[0; 8]
            ),
            SafetensorsError::NegativeDimension {
                tensor: tensor("w"),
                dim: -2
            }
        );
    }

    #[test]
    fn refuses_shapes_whose_size_overflows() {
        // The element count overflows.
        assert_eq!(
            err(
                r#"{"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
                &[]
            ),
            SafetensorsError::ShapeOverflow {
                tensor: tensor("w")
            }
        );
        // The count fits, count * bits does not.
        assert_eq!(
            err(
                r#"{"w":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,0]}}"#,
                &[]
            ),
            SafetensorsError::ShapeOverflow {
                tensor: tensor("w")
            }
        );
        // A zero anywhere makes the product 0, even after huge dims (no false overflow).
        ok(
            r#"{"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#,
            &[],
        );
    }

    #[test]
    fn refuses_a_fractional_byte_count() {
        assert_eq!(
            err(
                r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
                &[0; 2]
            ),
            SafetensorsError::PartialByte {
                tensor: tensor("w"),
                dtype: DType::F4,
                numel: 3
            }
        );
        assert!(matches!(
            err(
                r#"{"w":{"dtype":"F6_E3M2","shape":[2],"data_offsets":[0,2]}}"#,
                &[0; 2]
            ),
            SafetensorsError::PartialByte { .. }
        ));
    }

    #[test]
    fn refuses_byte_length_that_disagrees_with_the_shape() {
        assert_eq!(
            err(&one(&entry("w", 0, 4)), &[0; 4]),
            SafetensorsError::ByteLengthMismatch {
                tensor: tensor("w"),
                expected: 8,
                actual: 4
            }
        );
    }

    #[test]
    fn refuses_reversed_offsets() {
        assert_eq!(
            err(&one(&entry("w", 8, 0)), &[0; 8]),
            SafetensorsError::OffsetsReversed {
                tensor: tensor("w"),
                begin: 8,
                end: 0
            }
        );
    }

    #[test]
    fn refuses_a_first_tensor_not_at_zero() {
        assert_eq!(
            err(&one(&entry("w", 8, 16)), &[0; 16]),
            SafetensorsError::FirstOffsetNotZero {
                tensor: tensor("w"),
                begin: 8
            }
        );
    }

    #[test]
    fn refuses_gaps() {
        let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 12, 20));
        assert_eq!(
            err(&h, &[0; 20]),
            SafetensorsError::Gap {
                tensor: tensor("b"),
                begin: 12,
                previous: tensor("a"),
                previous_end: 8
            }
        );
    }

    #[test]
    fn refuses_overlaps() {
        let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 4, 12));
        assert_eq!(
            err(&h, &[0; 12]),
            SafetensorsError::Overlap {
                tensor: tensor("b"),
                begin: 4,
                previous: tensor("a"),
                previous_end: 8
            }
        );
        // Aliasing: two tensors on the same bytes.
        let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 0, 8));
        assert!(matches!(err(&h, &[0; 8]), SafetensorsError::Overlap { .. }));
        // A zero-size tensor inside another one.
        let h = format!(
            r#"{{{},"z":{{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}}}"#,
            entry("a", 0, 8)
        );
        assert!(matches!(err(&h, &[0; 8]), SafetensorsError::Overlap { .. }));
    }

    #[test]
    fn refuses_offsets_past_the_end() {
        let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 8, 16));
        assert_eq!(
            err(&h, &[0; 12]),
            SafetensorsError::OffsetsPastEnd {
                tensor: tensor("b"),
                end: 16,
                data_len: 12
            }
        );
    }

    #[test]
    fn refuses_trailing_bytes() {
        assert_eq!(
            err(&one(&entry("a", 0, 8)), &[0; 9]),
            SafetensorsError::TrailingBytes {
                data_end: 8,
                data_len: 9
            }
        );
        // A header with no tensors and a zip appended: the classic polyglot.
        assert_eq!(
            err("{}", b"PK\x03\x04"),
            SafetensorsError::TrailingBytes {
                data_end: 0,
                data_len: 4
            }
        );
    }

    #[test]
    fn refuses_duplicate_tensor_names() {
        // serde_json into a map would keep only the second entry and accept the file.
        let h = format!("{{{},{}}}", entry("a", 0, 8), entry("a", 8, 16));
        assert_eq!(
            err(&h, &[0; 16]),
            SafetensorsError::DuplicateTensor {
                tensor: tensor("a")
            }
        );
        // Also when the duplicates' offsets alias, which would otherwise read as an overlap.
        let h = format!("{{{},{}}}", entry("a", 0, 8), entry("a", 0, 8));
        assert!(matches!(
            err(&h, &[0; 8]),
            SafetensorsError::DuplicateTensor { .. }
        ));
    }

    #[test]
    fn refuses_metadata_twice() {
        assert_eq!(
            err(r#"{"__metadata__":{},"__metadata__":{"a":"b"}}"#, &[]),
            SafetensorsError::DuplicateMetadata
        );
    }

    #[test]
    fn refuses_metadata_that_is_not_an_object() {
        for v in ["[]", "\"pt\"", "1", "true"] {
            assert_eq!(
                err(&format!(r#"{{"__metadata__":{v}}}"#), &[]),
                SafetensorsError::MetadataNotObject,
                "{v}"
            );
        }
    }

    #[test]
    fn refuses_non_string_metadata_values() {
        for v in ["1", "null", "[\"a\"]", "{\"x\":\"y\"}", "false"] {
            assert_eq!(
                err(&format!(r#"{{"__metadata__":{{"ok":"s","k":{v}}}}}"#), &[]),
                SafetensorsError::MetadataValueNotString { key: "k".into() },
                "{v}"
            );
        }
    }

    #[test]
    fn refuses_duplicate_metadata_keys() {
        assert_eq!(
            err(r#"{"__metadata__":{"format":"pt","format":"tf"}}"#, &[]),
            SafetensorsError::DuplicateMetadataKey {
                key: "format".into()
            }
        );
    }

    #[test]
    fn refuses_too_many_tensors() {
        let h = format!(
            "{{{},{},{}}}",
            entry("a", 0, 8),
            entry("b", 8, 16),
            entry("c", 16, 24)
        );
        let b = file(&h, &[0; 24]);
        assert!(parse_with_limit(&b, 3).is_ok());
        assert_eq!(
            parse_with_limit(&b, 2).unwrap_err(),
            SafetensorsError::TooManyTensors { limit: 2 }
        );
    }

    /// A header of many zero-size tensors costs a sort, not a quadratic scan.
    fn zero_size_tensors(n: usize) -> Vec<u8> {
        let mut h = String::with_capacity(n * 60);
        h.push('{');
        for i in 0..n {
            if i > 0 {
                h.push(',');
            }
            h.push_str(&format!(
                r#""t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#
            ));
        }
        h.push('}');
        file(&h, &[])
    }

    #[test]
    fn many_zero_size_tensors_parse_quickly() {
        let b = zero_size_tensors(200_000);
        let h = parse_header(&b).unwrap();
        assert_eq!(h.tensors().len(), 200_000);
    }

    /// `cargo test -p tantra-formats --release -- --ignored million --nocapture`
    #[test]
    #[ignore = "a 60 MB header; run by hand to measure"]
    fn a_million_zero_size_tensors() {
        let b = zero_size_tensors(1_000_000);
        let t = std::time::Instant::now();
        let h = parse_header(&b).unwrap();
        eprintln!(
            "1M zero-size tensors, {} MB header: parsed in {:?}",
            b.len() >> 20,
            t.elapsed()
        );
        assert_eq!(h.tensors().len(), 1_000_000);
    }

    #[test]
    fn never_panics_on_truncations_and_byte_flips() {
        let mut m = MemorySource::new();
        m.push_f32("a", vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        m.push(
            TensorInfo::new("b", DType::F4, vec![2, 3]),
            vec![0x12, 0x34, 0x56],
        )
        .unwrap();
        m.metadata_mut().insert("k".into(), "v".into());
        m.values_mut().insert("epoch".into(), Value::Int(3));
        let mut good = Vec::new();
        write_safetensors(&mut good, &m, &NoProgress).unwrap();
        assert!(parse_header(&good).is_ok());
        for len in 0..good.len() {
            assert!(parse_header(&good[..len]).is_err(), "truncated to {len}");
        }
        for i in 0..good.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] ^= x;
                let _ = parse_header(&b);
            }
        }
    }

    // --- values -------------------------------------------------------------------------------

    #[test]
    fn values_move_out_of_metadata() {
        let h = ok(
            r#"{"__metadata__":{"format":"pt","tantra.values":"{\"epoch\":3,\"lr\":0.001,\"name\":\"run\",\"nan\":{\"float\":\"nan\"},\"s\":\"nan\"}"}}"#,
            &[],
        );
        assert_eq!(h.metadata().len(), 1);
        assert_eq!(h.values().get("epoch"), Some(&Value::Int(3)));
        assert_eq!(h.values().get("lr"), Some(&Value::Float(0.001)));
        assert_eq!(h.values().get("name"), Some(&Value::Str("run".into())));
        assert!(matches!(h.values().get("nan"), Some(Value::Float(f)) if f.is_nan()));
        assert_eq!(h.values().get("s"), Some(&Value::Str("nan".into())));
    }

    #[test]
    fn values_that_do_not_parse_stay_in_metadata() {
        for v in [r#"not json"#, r#"[1]"#, r#"{\"x\":[1]}"#] {
            let h = ok(
                &format!(r#"{{"__metadata__":{{"tantra.values":"{v}"}}}}"#),
                &[],
            );
            assert!(h.values().is_empty());
            assert!(h.metadata().contains_key(VALUES_METADATA_KEY));
        }
    }

    // --- the reader as a source ---------------------------------------------------------------

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<SafetensorsFile>();
        check::<Header>();
    }

    #[test]
    fn streams_in_bounded_chunks_from_a_map() {
        let n = STREAM_CHUNK * 2 + 1000;
        let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let header = format!(r#"{{"big":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.safetensors");
        std::fs::write(&path, file(&header, &data)).unwrap();
        let src = SafetensorsFile::open(&path).unwrap();
        let mut got = Vec::new();
        let mut chunks = 0;
        src.stream_tensor(0, &mut |c| {
            assert!(c.len() <= STREAM_CHUNK);
            got.extend_from_slice(c);
            chunks += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(chunks, 3);
        assert!(got == data);
        // The pages released while streaming read back the same.
        assert!(*src.tensor_bytes(0).unwrap() == data[..]);
        assert!(matches!(src.tensor_bytes(0).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn stream_errors_stop_the_stream_and_bad_indices_are_errors() {
        let src = SafetensorsFile::from_bytes(file(&one(&entry("a", 0, 8)), &[7; 8])).unwrap();
        let e = src
            .stream_tensor(0, &mut |_| Err(FormatError::memory("stop")))
            .unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Memory(_)));
        assert!(src.tensor_bytes(1).is_err());
        assert!(src.stream_tensor(1, &mut |_| Ok(())).is_err());
    }

    #[test]
    fn open_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.safetensors");
        std::fs::write(&path, file("{}", b"tail")).unwrap();
        let e = SafetensorsFile::open(&path).unwrap_err();
        assert_eq!(e.path.as_deref(), Some(path.as_path()));
        assert!(matches!(
            e.kind,
            ErrorKind::Safetensors(SafetensorsError::TrailingBytes { .. })
        ));
        assert!(e.to_string().contains("bad.safetensors"));
        assert!(e.is_refusal());
        let e = SafetensorsFile::open(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Io(_)));
    }

    // --- the writer ---------------------------------------------------------------------------

    fn write(src: &dyn TensorSource) -> Vec<u8> {
        let mut out = Vec::new();
        let n = write_safetensors(&mut out, src, &NoProgress).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    fn header_text(bytes: &[u8]) -> &str {
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        std::str::from_utf8(&bytes[8..8 + n]).unwrap()
    }

    #[test]
    fn writes_the_reference_layout() {
        let mut m = MemorySource::new();
        m.push(TensorInfo::new("z", DType::U8, vec![3]), vec![1, 2, 3])
            .unwrap();
        m.push(TensorInfo::new("b", DType::F64, vec![1]), vec![0; 8])
            .unwrap();
        m.push_f32("a", vec![1], &[1.0]).unwrap();
        m.push(TensorInfo::new("c", DType::I64, vec![1]), vec![0; 8])
            .unwrap();
        let out = write(&m);
        let text = header_text(&out);
        assert_eq!(text.len() % 8, 0);
        assert_eq!(
            text.trim_end(),
            r#"{"__metadata__":{"format":"pt"},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},"z":{"dtype":"U8","shape":[3],"data_offsets":[20,23]}}"#
        );
        let back = SafetensorsFile::from_bytes(out).unwrap();
        assert_eq!(back.tensors().len(), 4);
    }

    #[test]
    fn writes_the_same_bytes_whatever_the_source_order() {
        let mut a = MemorySource::new();
        a.push_f32("x", vec![1], &[1.0]).unwrap();
        a.push_f32("y", vec![1], &[2.0]).unwrap();
        let mut b = MemorySource::new();
        b.push_f32("y", vec![1], &[2.0]).unwrap();
        b.push_f32("x", vec![1], &[1.0]).unwrap();
        assert_eq!(write(&a), write(&b));
    }

    #[test]
    fn keeps_a_given_format_and_adds_pt_otherwise() {
        let mut m = MemorySource::new();
        m.metadata_mut().insert("format".into(), "mlx".into());
        m.metadata_mut().insert("a".into(), "\"quoted\"\n".into());
        let back = SafetensorsFile::from_bytes(write(&m)).unwrap();
        assert_eq!(back.metadata(), m.metadata());
    }

    #[test]
    fn round_trips_every_dtype_values_and_metadata() {
        let mut m = MemorySource::new();
        for (i, d) in crate::dtype::ALL_DTYPES.iter().enumerate() {
            let shape = vec![2, 4];
            let len = TensorInfo::new("", *d, shape.clone()).byte_len().unwrap() as usize;
            let data = (0..len).map(|j| (i * 31 + j) as u8).collect();
            m.push(
                TensorInfo::new(format!("t.{}", d.as_str()), *d, shape),
                data,
            )
            .unwrap();
        }
        m.metadata_mut().insert("source".into(), "test".into());
        let values = m.values_mut();
        values.insert("epoch".into(), Value::Int(7));
        values.insert("loss".into(), Value::Float(0.123_456_789_012_345_67));
        values.insert("tiny".into(), Value::Float(-1.819_967_304_027_17e-179));
        values.insert("inf".into(), Value::Float(f64::INFINITY));
        values.insert(
            "big".into(),
            Value::BigInt("123456789012345678901234567890".into()),
        );
        values.insert("raw".into(), Value::Bytes(vec![0, 1, 255]));
        values.insert("none".into(), Value::None);
        values.insert("flag".into(), Value::Bool(true));
        values.insert("optimizer.param_groups.0.lr".into(), Value::Float(3e-4));
        let out = write(&m);
        let back = SafetensorsFile::from_bytes(out.clone()).unwrap();
        assert_eq!(back.values(), m.values());
        let mut want_meta = m.metadata().clone();
        want_meta.insert("format".into(), "pt".into());
        assert_eq!(back.metadata(), &want_meta);
        for (i, t) in m.tensors().iter().enumerate() {
            let j = back.find(&t.name).unwrap();
            assert_eq!(&back.tensors()[j], t);
            assert_eq!(back.tensor_bytes(j).unwrap(), m.tensor_bytes(i).unwrap());
        }
        // Every tensor of a whole-byte dtype is aligned to its element size.
        for (j, t) in back.tensors().iter().enumerate() {
            let start = back.header().tensor_range(j).unwrap().start;
            assert_eq!(start % t.dtype.alignment(), 0, "{}", t.name);
        }
        // Read back and written again: the same bytes.
        assert_eq!(write(&back), out);
    }

    /// A source that lies about its tensors, for the writer's own checks.
    struct Lying {
        infos: Vec<TensorInfo>,
        data: Vec<Vec<u8>>,
        meta: BTreeMap<String, String>,
        values: BTreeMap<String, Value>,
    }

    impl Lying {
        fn new(infos: Vec<TensorInfo>, data: Vec<Vec<u8>>) -> Self {
            Lying {
                infos,
                data,
                meta: BTreeMap::new(),
                values: BTreeMap::new(),
            }
        }
    }

    impl TensorSource for Lying {
        fn format(&self) -> Format {
            Format::Memory
        }
        fn tensors(&self) -> &[TensorInfo] {
            &self.infos
        }
        fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
            Ok(Cow::Borrowed(&self.data[index]))
        }
        fn metadata(&self) -> &BTreeMap<String, String> {
            &self.meta
        }
        fn values(&self) -> &BTreeMap<String, Value> {
            &self.values
        }
    }

    fn write_err(src: &dyn TensorSource) -> SafetensorsError {
        let mut out = Vec::new();
        match write_safetensors(&mut out, src, &NoProgress)
            .unwrap_err()
            .kind
        {
            ErrorKind::Safetensors(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writer_refuses_duplicate_names() {
        let t = TensorInfo::new("a", DType::U8, vec![1]);
        let src = Lying::new(vec![t.clone(), t], vec![vec![1], vec![2]]);
        assert_eq!(
            write_err(&src),
            SafetensorsError::DuplicateTensor {
                tensor: tensor("a")
            }
        );
    }

    #[test]
    fn writer_refuses_the_metadata_name() {
        let t = TensorInfo::new(METADATA_KEY, DType::U8, vec![1]);
        let src = Lying::new(vec![t], vec![vec![1]]);
        assert_eq!(write_err(&src), SafetensorsError::ReservedName);
    }

    #[test]
    fn writer_refuses_sizes_it_cannot_write() {
        let src = Lying::new(
            vec![TensorInfo::new("h", DType::F4, vec![3])],
            vec![vec![0; 2]],
        );
        assert!(matches!(
            write_err(&src),
            SafetensorsError::PartialByte { .. }
        ));
        let src = Lying::new(
            vec![TensorInfo::new("o", DType::F64, vec![u64::MAX / 4])],
            vec![vec![]],
        );
        assert!(matches!(
            write_err(&src),
            SafetensorsError::ShapeOverflow { .. }
        ));
    }

    #[test]
    fn writer_refuses_a_source_that_streams_the_wrong_length() {
        let t = TensorInfo::new("a", DType::F32, vec![2]);
        let src = Lying::new(vec![t.clone()], vec![vec![0; 4]]);
        assert_eq!(
            write_err(&src),
            SafetensorsError::StreamedLength {
                tensor: tensor("a"),
                declared: 8,
                streamed: 4
            }
        );
        let src = Lying::new(vec![t], vec![vec![0; 12]]);
        let mut out = Vec::new();
        assert!(write_safetensors(&mut out, &src, &NoProgress).is_err());
        // Nothing past the header was written: the extra bytes were refused up front.
        let header_end = 8 + u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
        assert_eq!(out.len(), header_end);
    }

    #[test]
    fn writer_reports_progress() {
        /// Calls to `begin`, units advanced, calls to `end`.
        type Calls = (Vec<(String, u64)>, u64, u32);
        #[derive(Default)]
        struct Rec(Mutex<Calls>);
        impl Progress for Rec {
            fn begin(&self, label: &str, total: u64) {
                self.0.lock().unwrap().0.push((label.into(), total));
            }
            fn advance(&self, n: u64) {
                self.0.lock().unwrap().1 += n;
            }
            fn end(&self) {
                self.0.lock().unwrap().2 += 1;
            }
        }
        let mut m = MemorySource::new();
        m.push_f32("a", vec![3], &[1.0, 2.0, 3.0]).unwrap();
        let rec = Rec::default();
        let mut out = Vec::new();
        let n = write_safetensors(&mut out, &m, &rec).unwrap();
        let (begins, advanced, ends) = rec.0.into_inner().unwrap();
        assert_eq!(begins, vec![("writing safetensors".to_string(), n)]);
        assert_eq!(advanced, n);
        assert_eq!(ends, 1);
    }

    #[test]
    fn writer_passes_on_io_errors() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let m = MemorySource::new();
        let e = write_safetensors(&mut Full, &m, &NoProgress).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Io(_)));
    }
}
