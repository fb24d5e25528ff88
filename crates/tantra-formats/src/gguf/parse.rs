//! The GGUF header parser: magic, version, metadata, tensor infos and the data layout, every
//! rule checked before a byte of tensor data is handed out.
//!
//! # Why it is written this way
//! GGUF readers have had a run of CVEs (see `docs/gguf.md`): counts and string lengths that
//! overflowed an allocation, `n_dims` that wrote past a fixed array, `ne` products that wrapped
//! to a tiny size, offsets past the file. Here every length is compared with the bytes left
//! before anything is allocated from it (a count of entries is bounded by the smallest size an
//! entry can take), every size is `checked_*` u64 arithmetic, nothing is indexed by a number from
//! the file, and each broken rule is its own [`GgufError`] naming the key or tensor. The layout
//! rule is ggml's: tensors stored in info order, each at the running sum of the previous sizes
//! padded to the alignment (so no overlap and no gap), the last one allowed to lack its trailing
//! padding as llama.cpp's loader allows.

use std::collections::{BTreeMap, HashSet};

use super::error::GgufError;
use super::types::{GgmlType, TypeId};
use super::value::{type_id as vt, MetaArray, MetaValue};

/// The alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The largest `general.alignment` accepted (ggml has no bound; a huge one only pads).
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// ggml's cap on a string's length.
pub const MAX_STRING: u64 = 1 << 30;
/// ggml's cap on an array's element count.
pub const MAX_ARRAY: u64 = 1 << 30;
/// ggml's `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// ggml's `GGML_MAX_NAME` less the NUL.
pub const MAX_NAME: u64 = 63;
/// The spec's limit on a key's length.
pub const MAX_KEY: u64 = 65_535;

/// One tensor as the file describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufTensor {
    pub name: String,
    pub ty: GgmlType,
    /// Dimensions in ggml order (`ne[0]` moves fastest); the PyTorch shape reversed.
    pub ne: Vec<u64>,
    /// The offset from the data section's start, as written.
    pub offset: u64,
    /// The absolute offset of its first byte in the file.
    pub start: u64,
    /// Its size in bytes.
    pub nbytes: u64,
}

impl GgufTensor {
    /// The shape outermost first (as PyTorch and safetensors write it).
    pub fn shape(&self) -> Vec<u64> {
        self.ne.iter().rev().copied().collect()
    }

    /// Number of elements (checked at parse time to fit).
    pub fn numel(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// A validated GGUF header: every tensor lies inside the file, in info order, without overlap.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub version: u32,
    pub alignment: u64,
    /// Metadata in file order (keys unique).
    pub kv: Vec<(String, MetaValue)>,
    pub tensors: Vec<GgufTensor>,
    /// Where the data section starts (the end of the tensor infos, padded to the alignment).
    pub data_start: u64,
}

impl Header {
    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// `general.architecture`, when present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(MetaValue::as_str)
    }

    /// The metadata as short text (see [`MetaValue`]'s `Display`: long arrays summarized), by
    /// key: what `inspect` shows.
    pub fn metadata_text(&self) -> BTreeMap<String, String> {
        self.kv
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }

    /// The metadata as text without loss ([`MetaValue::full_text`]), by key.
    pub fn metadata_full_text(&self) -> BTreeMap<String, String> {
        self.kv
            .iter()
            .map(|(k, v)| (k.clone(), v.full_text()))
            .collect()
    }
}

/// Reads values from the file's bytes, each read checked against what is left.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn left(&self) -> u64 {
        (self.bytes.len() - self.pos.min(self.bytes.len())) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        let out = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n))
            .and_then(|end| self.bytes.get(self.pos..end));
        match out {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                file_len: self.bytes.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A string: u64 length, then UTF-8 bytes.
    fn string(&mut self, what: &dyn Fn() -> String, limit: u64) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > limit {
            return Err(GgufError::StringTooLong {
                what: what(),
                len,
                limit,
            });
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::NotUtf8 { what: what() })
    }

    /// A count of entries that each take at least `min_size` bytes: refused when the bytes
    /// left cannot hold them, so that it can size an allocation.
    fn count(&mut self, what: &'static str, min_size: u64) -> Result<u64, GgufError> {
        let count = self.u64(&|| format!("the count of {what}"))?;
        let left = self.left();
        match count.checked_mul(min_size) {
            Some(n) if n <= left => Ok(count),
            _ => Err(GgufError::CountTooLarge { what, count, left }),
        }
    }
}

/// Parses and validates a whole GGUF file held in memory (the tensor data is not read).
///
/// # Errors
/// The first rule the file breaks:
/// ```
/// use tantra_formats::gguf::{parse_header, GgufError};
/// assert_eq!(parse_header(b"GGUF").unwrap_err(), GgufError::TooShort { len: 4 });
/// ```
pub fn parse_header(bytes: &[u8]) -> Result<Header, GgufError> {
    let file_len = bytes.len() as u64;
    if file_len < 24 {
        return Err(if bytes.starts_with(b"GGUF") || file_len < 4 {
            GgufError::TooShort { len: file_len }
        } else {
            GgufError::BadMagic
        });
    }
    let mut c = Cursor { bytes, pos: 0 };
    if c.array::<4>(&|| "the magic".into())? != *b"GGUF" {
        return Err(GgufError::BadMagic);
    }
    let version = c.u32(&|| "the version".into())?;
    match version {
        2 | 3 => {}
        1 => return Err(GgufError::VersionOne),
        v if v != 0 && v & 0xFFFF == 0 => return Err(GgufError::BigEndian { version }),
        _ => return Err(GgufError::UnsupportedVersion { version }),
    }
    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes;
    // a key/value at least 8 (key length) + 1 (key) + 4 (type) + 1 (value).
    let n_tensors = c.count("tensors", 24)?;
    let n_kv = c.count("metadata entries", 14)?;

    let mut kv: Vec<(String, MetaValue)> = Vec::with_capacity(n_kv as usize);
    let mut keys: HashSet<String> = HashSet::with_capacity(n_kv as usize);
    for index in 0..n_kv {
        let key = c.string(&|| format!("metadata key {index}"), MAX_KEY)?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { index });
        }
        if !keys.insert(key.clone()) {
            return Err(GgufError::DuplicateKey { key });
        }
        let value = read_value(&mut c, &key)?;
        kv.push((key, value));
    }

    let alignment = match kv.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, MetaValue::U32(a))) => {
            let a = u64::from(*a);
            if !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(GgufError::BadAlignment {
                    alignment: a,
                    limit: MAX_ALIGNMENT,
                });
            }
            a
        }
        Some((_, v)) => {
            return Err(GgufError::AlignmentType {
                found: v.type_name(),
            })
        }
    };

    let mut tensors = Vec::with_capacity(n_tensors as usize);
    let mut names: HashSet<String> = HashSet::with_capacity(n_tensors as usize);
    for index in 0..n_tensors {
        let t = read_tensor_info(&mut c, index)?;
        if !names.insert(t.name.clone()) {
            return Err(GgufError::DuplicateTensor { tensor: t.name });
        }
        tensors.push(t);
    }
    drop(names);

    let header_end = c.pos as u64;
    let data_start = align_up(header_end, alignment).ok_or(GgufError::Truncated {
        what: "the data section".into(),
        offset: header_end,
        file_len,
    })?;
    let mut expected = 0u64;
    let mut data_end = data_start;
    for t in &mut tensors {
        if !t.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedOffset {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        if t.offset < expected {
            return Err(GgufError::Overlap {
                tensor: t.name.clone(),
                offset: t.offset,
                expected,
            });
        }
        if t.offset > expected {
            return Err(GgufError::Gap {
                tensor: t.name.clone(),
                offset: t.offset,
                expected,
            });
        }
        let past = |end| GgufError::DataPastEnd {
            tensor: t.name.clone(),
            end,
            file_len,
        };
        let start = data_start
            .checked_add(t.offset)
            .ok_or_else(|| past(u64::MAX))?;
        let end = start.checked_add(t.nbytes).ok_or_else(|| past(u64::MAX))?;
        if end > file_len {
            return Err(past(end));
        }
        t.start = start;
        data_end = end;
        // Cannot overflow past the file by more than the alignment: end <= file_len.
        expected = align_up(t.offset + t.nbytes, alignment).ok_or_else(|| past(u64::MAX))?;
    }
    // The writer pads the last tensor (or, without tensors, the header) to the alignment;
    // anything beyond that padding is not GGUF.
    let padded_end = align_up(data_end.max(header_end), alignment).unwrap_or(u64::MAX);
    if file_len > padded_end {
        return Err(GgufError::TrailingBytes {
            data_end: padded_end,
            extra: file_len - padded_end,
        });
    }
    Ok(Header {
        version,
        alignment,
        kv,
        tensors,
        data_start,
    })
}

/// `n` rounded up to a multiple of `align` (a power of two), `None` on overflow.
pub fn align_up(n: u64, align: u64) -> Option<u64> {
    Some(n.checked_add(align - 1)? & !(align - 1))
}

fn read_value(c: &mut Cursor<'_>, key: &str) -> Result<MetaValue, GgufError> {
    let what = || format!("metadata {key:?}");
    let ty = c.u32(&what)?;
    if ty == vt::ARRAY {
        let elem = c.u32(&what)?;
        if elem == vt::ARRAY {
            return Err(GgufError::NestedArray { key: key.into() });
        }
        let min = match elem {
            vt::U8 | vt::I8 | vt::BOOL => 1,
            vt::U16 | vt::I16 => 2,
            vt::U32 | vt::I32 | vt::F32 => 4,
            vt::U64 | vt::I64 | vt::F64 | vt::STRING => 8,
            _ => {
                return Err(GgufError::UnknownValueType {
                    key: key.into(),
                    value_type: elem,
                })
            }
        };
        let len = c.u64(&what)?;
        if len > MAX_ARRAY {
            return Err(GgufError::ArrayTooLong {
                key: key.into(),
                len,
                limit: MAX_ARRAY,
            });
        }
        if len.checked_mul(min).is_none_or(|n| n > c.left()) {
            return Err(GgufError::Truncated {
                what: format!("metadata {key:?}: an array of {len} elements"),
                offset: c.pos as u64,
                file_len: c.bytes.len() as u64,
            });
        }
        return read_array(c, key, elem, len as usize).map(MetaValue::Array);
    }
    read_scalar(c, key, ty)
}

fn read_scalar(c: &mut Cursor<'_>, key: &str, ty: u32) -> Result<MetaValue, GgufError> {
    let what = || format!("metadata {key:?}");
    Ok(match ty {
        vt::U8 => MetaValue::U8(c.array::<1>(&what)?[0]),
        vt::I8 => MetaValue::I8(i8::from_le_bytes(c.array(&what)?)),
        vt::U16 => MetaValue::U16(u16::from_le_bytes(c.array(&what)?)),
        vt::I16 => MetaValue::I16(i16::from_le_bytes(c.array(&what)?)),
        vt::U32 => MetaValue::U32(c.u32(&what)?),
        vt::I32 => MetaValue::I32(i32::from_le_bytes(c.array(&what)?)),
        vt::F32 => MetaValue::F32(f32::from_le_bytes(c.array(&what)?)),
        vt::BOOL => MetaValue::Bool(read_bool(c, key)?),
        vt::STRING => MetaValue::Str(c.string(&what, MAX_STRING)?),
        vt::U64 => MetaValue::U64(c.u64(&what)?),
        vt::I64 => MetaValue::I64(i64::from_le_bytes(c.array(&what)?)),
        vt::F64 => MetaValue::F64(f64::from_le_bytes(c.array(&what)?)),
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.into(),
                value_type: ty,
            })
        }
    })
}

fn read_bool(c: &mut Cursor<'_>, key: &str) -> Result<bool, GgufError> {
    match c.array::<1>(&|| format!("metadata {key:?}"))?[0] {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::BadBool {
            key: key.into(),
            byte,
        }),
    }
}

/// `len` elements of type `elem`; the caller checked that the bytes left can hold them.
fn read_array(
    c: &mut Cursor<'_>,
    key: &str,
    elem: u32,
    len: usize,
) -> Result<MetaArray, GgufError> {
    let what = || format!("metadata {key:?}");
    macro_rules! fixed {
        ($variant:ident, $t:ty) => {{
            const N: usize = std::mem::size_of::<$t>();
            let bytes = c.take((len * N) as u64, &what)?;
            MetaArray::$variant(
                bytes
                    .chunks_exact(N)
                    .map(|b| {
                        let mut a = [0u8; N];
                        a.copy_from_slice(b);
                        <$t>::from_le_bytes(a)
                    })
                    .collect(),
            )
        }};
    }
    Ok(match elem {
        vt::U8 => MetaArray::U8(c.take(len as u64, &what)?.to_vec()),
        vt::I8 => fixed!(I8, i8),
        vt::U16 => fixed!(U16, u16),
        vt::I16 => fixed!(I16, i16),
        vt::U32 => fixed!(U32, u32),
        vt::I32 => fixed!(I32, i32),
        vt::F32 => fixed!(F32, f32),
        vt::U64 => fixed!(U64, u64),
        vt::I64 => fixed!(I64, i64),
        vt::F64 => fixed!(F64, f64),
        vt::BOOL => {
            let mut v = Vec::with_capacity(len);
            for _ in 0..len {
                v.push(read_bool(c, key)?);
            }
            MetaArray::Bool(v)
        }
        vt::STRING => {
            let mut v = Vec::with_capacity(len);
            for i in 0..len {
                v.push(c.string(&|| format!("metadata {key:?}[{i}]"), MAX_STRING)?);
            }
            MetaArray::Str(v)
        }
        _ => {
            return Err(GgufError::UnknownValueType {
                key: key.into(),
                value_type: elem,
            })
        }
    })
}

fn read_tensor_info(c: &mut Cursor<'_>, index: u64) -> Result<GgufTensor, GgufError> {
    let name = c.string(&|| format!("tensor {index}: the name"), MAX_STRING)?;
    if name.is_empty() {
        return Err(GgufError::EmptyName { index });
    }
    if name.len() as u64 > MAX_NAME {
        return Err(GgufError::NameTooLong {
            len: name.len() as u64,
            tensor: name,
        });
    }
    let what = || format!("tensor {name:?}");
    let n_dims = c.u32(&what)?;
    if n_dims > MAX_DIMS {
        return Err(GgufError::TooManyDims {
            tensor: name,
            n_dims,
        });
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        ne.push(c.u64(&what)?);
    }
    let id = c.u32(&what)?;
    let offset = c.u64(&what)?;
    if let Some((dim, &value)) = ne.iter().enumerate().find(|(_, &d)| d > i64::MAX as u64) {
        return Err(GgufError::NegativeDimension {
            tensor: name,
            dim,
            value,
        });
    }
    let numel = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
    if numel.is_none_or(|n| n > i64::MAX as u64) {
        return Err(GgufError::ShapeOverflow { tensor: name });
    }
    let ty = match GgmlType::from_id(id) {
        TypeId::Known(t) => t,
        TypeId::Removed => return Err(GgufError::RemovedType { tensor: name, id }),
        TypeId::LayoutUnknown => return Err(GgufError::LayoutUnknown { tensor: name, id }),
        TypeId::Unknown => return Err(GgufError::UnknownType { tensor: name, id }),
    };
    let row = ne.first().copied().unwrap_or(1);
    if !row.is_multiple_of(ty.block_size()) {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name,
            ty: ty.name().into(),
            row,
            block: ty.block_size(),
        });
    }
    let nbytes = ty
        .nbytes(&ne)
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| GgufError::ShapeOverflow {
            tensor: name.clone(),
        })?;
    Ok(GgufTensor {
        name,
        ty,
        ne,
        offset,
        start: 0,
        nbytes,
    })
}
