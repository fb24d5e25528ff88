//! The safetensors header: parsed by hand-written `serde` visitors straight into typed fields
//! (no `serde_json::Value`, duplicate names caught) and validated against every rule of the
//! reference reader, in `O(n log n)` for `n` tensors.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::dtype::DType;
use crate::structure::{take_structure, Structure};
use crate::tensor::{TensorInfo, Value};
use crate::VALUES_METADATA_KEY;

use super::{SafetensorsError, MAX_HEADER_LEN, MAX_TENSORS, METADATA_KEY};

/// A validated safetensors header: what [`parse_header`] returns.
///
/// Every range it hands out lies inside the file it was parsed from, the ranges tile the data
/// buffer exactly, and each one's length is what its tensor's dtype and shape need.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub(super) header_len: u64,
    /// In data-buffer order (by begin offset; the header's order among zero-size ties).
    pub(super) tensors: Vec<TensorInfo>,
    /// Absolute byte ranges in the file, parallel to `tensors`.
    pub(super) ranges: Vec<(u64, u64)>,
    pub(super) metadata: BTreeMap<String, String>,
    pub(super) values: BTreeMap<String, Value>,
    pub(super) structure: Option<Structure>,
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

    /// The nesting stored under [`crate::STRUCTURE_METADATA_KEY`], when that parsed.
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

pub(super) fn parse_with_limit(
    bytes: &[u8],
    max_tensors: usize,
) -> Result<Header, SafetensorsError> {
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
pub(super) struct RawEntry {
    info: TensorInfo,
    begin: u64,
    end: u64,
}

pub(super) struct RawHeader {
    entries: Vec<RawEntry>,
    metadata: BTreeMap<String, String>,
}

pub(super) fn validate(
    raw: RawHeader,
    header_len: u64,
    data_len: u64,
) -> Result<Header, SafetensorsError> {
    let RawHeader {
        mut entries,
        mut metadata,
    } = raw;

    // Each entry on its own: offsets in order, a size that fits, offsets that span that size.
    for e in &entries {
        if e.begin > e.end {
            return Err(SafetensorsError::OffsetsReversed {
                tensor: e.info.name.clone(),
                begin: e.begin,
                end: e.end,
            });
        }
        let overflow = || SafetensorsError::ShapeOverflow {
            tensor: e.info.name.clone(),
        };
        let numel = e
            .info
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(overflow)?;
        let bits = numel
            .checked_mul(e.info.dtype.bits())
            .ok_or_else(overflow)?;
        if !bits.is_multiple_of(8) {
            return Err(SafetensorsError::PartialByte {
                tensor: e.info.name.clone(),
                dtype: e.info.dtype,
                numel,
            });
        }
        let actual = e.end - e.begin;
        if actual != bits / 8 {
            return Err(SafetensorsError::ByteLengthMismatch {
                tensor: e.info.name.clone(),
                expected: bits / 8,
                actual,
            });
        }
    }

    // Duplicate names: sort indices by name, compare neighbours (O(n log n), no copies).
    let mut by_name: Vec<usize> = (0..entries.len()).collect();
    by_name.sort_unstable_by(|&a, &b| entries[a].info.name.cmp(&entries[b].info.name));
    if let Some(w) = by_name
        .windows(2)
        .find(|w| entries[w[0]].info.name == entries[w[1]].info.name)
    {
        return Err(SafetensorsError::DuplicateTensor {
            tensor: entries[w[0]].info.name.clone(),
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
                    tensor: e.info.name.clone(),
                    begin: e.begin,
                })
            }
            Some(p) if e.begin > p.end => {
                return Err(SafetensorsError::Gap {
                    tensor: e.info.name.clone(),
                    begin: e.begin,
                    previous: p.info.name.clone(),
                    previous_end: p.end,
                })
            }
            Some(p) if e.begin < p.end => {
                return Err(SafetensorsError::Overlap {
                    tensor: e.info.name.clone(),
                    begin: e.begin,
                    previous: p.info.name.clone(),
                    previous_end: p.end,
                })
            }
            _ => {}
        }
        if e.end > data_len {
            return Err(SafetensorsError::OffsetsPastEnd {
                tensor: e.info.name.clone(),
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
    // Cannot overflow: e.end <= data_len and data_start + data_len is the file length.
    let ranges = entries
        .iter()
        .map(|e| (data_start + e.begin, data_start + e.end))
        .collect();
    // Collected in place (std reuses the entries' buffer, shrunk), so the table is never held
    // twice: on a file of many small tensors that was 72 bytes a tensor at the peak.
    let tensors = entries.into_iter().map(|e| e.info).collect();
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
pub(super) fn take_values(metadata: &mut BTreeMap<String, String>) -> BTreeMap<String, Value> {
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

pub(super) struct Ctx {
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

pub(super) fn parse_json(text: &str, max_tensors: usize) -> Result<RawHeader, SafetensorsError> {
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
pub(super) struct Any<V>(V);

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

pub(super) struct TopVisitor<'c>(&'c Ctx);

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
                    info: TensorInfo::new(name, dtype, shape),
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

pub(super) struct MetadataVisitor<'c>(&'c Ctx);

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

pub(super) struct MetadataValueVisitor<'c> {
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

pub(super) struct EntryVisitor<'c> {
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
pub(super) struct Field {
    name: &'static str,
    expected: &'static str,
}

pub(super) const DTYPE: Field = Field {
    name: "dtype",
    expected: "a string",
};
pub(super) const SHAPE: Field = Field {
    name: "shape",
    expected: "an array of non-negative integers",
};
pub(super) const OFFSETS: Field = Field {
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
pub(super) struct FieldVisitor<'c> {
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

pub(super) struct DTypeVisitor<'c>(FieldVisitor<'c>);

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

pub(super) struct ShapeVisitor<'c>(FieldVisitor<'c>);

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
        // Pushing leaves room for 4 dimensions, and shrinking in place keeps the allocator's
        // block: an exact copy saves 16 bytes a tensor on a file of one-dimensional tensors.
        Ok(shape.as_slice().to_vec())
    }

    refuse!(unit bool i64 u64 f64 str map);
}

pub(super) struct DimVisitor<'c>(FieldVisitor<'c>);

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

pub(super) struct OffsetsVisitor<'c>(FieldVisitor<'c>);

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

pub(super) struct OffsetVisitor<'c>(FieldVisitor<'c>);

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
