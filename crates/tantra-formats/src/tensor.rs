//! The one shape every reader produces and every writer consumes.
//!
//! A [`TensorSource`] is a list of tensor descriptions plus, on demand, each tensor's bytes in
//! row-major little-endian order. Readers hide their container (strides, shared storages,
//! memory maps) behind it; writers pull one tensor at a time from it, which is what keeps a
//! conversion's memory bounded by the largest tensor instead of the file.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use crate::dtype::DType;
use crate::error::FormatError;
use crate::structure::Structure;
use crate::Format;

/// Name, dtype and shape of one tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorInfo {
    /// The dotted name (`backbone.layers.0.mixer.in_proj.weight`).
    pub name: String,
    pub dtype: DType,
    /// Dimensions, outermost first. Empty for a 0-rank (scalar) tensor.
    pub shape: Vec<u64>,
}

impl TensorInfo {
    pub fn new(name: impl Into<String>, dtype: DType, shape: Vec<u64>) -> Self {
        TensorInfo {
            name: name.into(),
            dtype,
            shape,
        }
    }

    /// Number of elements, `None` if the product overflows `u64`.
    pub fn numel(&self) -> Option<u64> {
        self.shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }

    /// Size of the row-major data in bytes, `None` on overflow or a fractional byte count.
    pub fn byte_len(&self) -> Option<u64> {
        self.dtype.byte_len(self.numel()?)
    }
}

/// A non-tensor leaf of a checkpoint (epoch, step, loss, a learning rate, a run name).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit `i64`, in decimal.
    BigInt(String),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// The JSON form used by `inspect --json` and by the safetensors `__metadata__` key
    /// [`crate::VALUES_METADATA_KEY`]. Bytes become `{"bytes_hex": "..."}`, big integers
    /// `{"bigint": "..."}`, non-finite floats `{"float": "nan"}` (or `"inf"`, `"-inf"`), so that
    /// a string value never turns into a float on the way back.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::None => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::BigInt(s) => serde_json::json!({ "bigint": s }),
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => J::Number(n),
                None if f.is_nan() => serde_json::json!({ "float": "nan" }),
                None if *f > 0.0 => serde_json::json!({ "float": "inf" }),
                None => serde_json::json!({ "float": "-inf" }),
            },
            Value::Str(s) => J::String(s.clone()),
            Value::Bytes(b) => serde_json::json!({ "bytes_hex": hex::encode(b) }),
        }
    }

    /// The inverse of [`Value::to_json`]; `None` for JSON that no `Value` produces.
    pub fn from_json(j: &serde_json::Value) -> Option<Value> {
        use serde_json::Value as J;
        Some(match j {
            J::Null => Value::None,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64()?),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Object(o) if o.len() == 1 => {
                if let Some(J::String(s)) = o.get("bigint") {
                    Value::BigInt(s.clone())
                } else if let Some(J::String(h)) = o.get("bytes_hex") {
                    Value::Bytes(hex::decode(h).ok()?)
                } else if let Some(J::String(f)) = o.get("float") {
                    Value::Float(match f.as_str() {
                        "nan" => f64::NAN,
                        "inf" => f64::INFINITY,
                        "-inf" => f64::NEG_INFINITY,
                        _ => return None,
                    })
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }
}

/// A block-quantized layout whose blocks a source can hand out as stored
/// ([`TensorSource::stored_blocks`]), for a consumer that computes on the blocks themselves
/// (the runtime's 8-bit matrices) instead of on dequantized values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlockLayout {
    /// ggml's `Q8_0`: blocks of 34 bytes, a little-endian f16 scale `d` then 32 signed bytes
    /// `q`; element `i` of a block is `q[i] * d`. Blocks run along the last (innermost) torch
    /// dimension, and each row holds whole blocks.
    Q8_0,
}

impl BlockLayout {
    /// Elements per block.
    pub const fn block_elements(self) -> usize {
        match self {
            BlockLayout::Q8_0 => 32,
        }
    }

    /// Bytes per block.
    pub const fn block_bytes(self) -> usize {
        match self {
            BlockLayout::Q8_0 => 34,
        }
    }

    /// The layout's usual name (`Q8_0`).
    pub const fn name(self) -> &'static str {
        match self {
            BlockLayout::Q8_0 => "Q8_0",
        }
    }
}

/// The stored blocks of one tensor: their layout and their length in bytes (what
/// [`TensorSource::stream_blocks`] serves ranges of).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlocks {
    pub layout: BlockLayout,
    pub bytes: u64,
}

/// Anything that can hand out tensors: an open file of any format, or tensors in memory.
///
/// Tensor bytes are always row-major, little-endian, with `bool` as one byte (0 or 1) and
/// sub-byte types packed as safetensors packs them.
pub trait TensorSource {
    /// The container this came from ([`Format::Memory`] for in-memory tensors).
    fn format(&self) -> Format;

    /// The tensors, in the order the source stores or lists them.
    fn tensors(&self) -> &[TensorInfo];

    /// The bytes of tensor `index` (an index into [`TensorSource::tensors`]). Borrowed where
    /// the container holds them contiguously (a memory map), owned where a view had to be
    /// materialized.
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError>;

    /// Feeds the bytes of tensor `index` to `sink` in one or more chunks, in order. Sources
    /// backed by a memory map override this to hand out bounded chunks and release the pages
    /// they are done with, so that streaming a large file does not grow the resident set.
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let bytes = self.tensor_bytes(index)?;
        sink(&bytes)
    }

    /// Feeds bytes `range` of tensor `index` (offsets into its row-major bytes) to `sink`, as
    /// [`TensorSource::stream_tensor`] does for the whole tensor. Memory-mapped sources serve
    /// any part of a tensor stored as one run of the file without touching the rest; the
    /// default takes the part out of [`TensorSource::tensor_bytes`], which for a tensor that has
    /// to be materialized (a strided view) builds the whole tensor on every call.
    ///
    /// # Errors
    /// A range beyond the tensor's bytes, and the source's and the sink's errors.
    fn stream_tensor_range(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let outside = || range_outside(None, self.tensors(), index, &range);
        sink_part(&self.tensor_bytes(index)?, &range, outside, sink)
    }

    /// Where the bytes of tensor `index` lie in the source's file, as one run of it (offsets
    /// from the file's start), for a tensor stored that way; `None` for one that has to be
    /// materialized, and for sources that are not files.
    fn file_range(&self, index: usize) -> Option<Range<u64>> {
        let _ = index;
        None
    }

    /// The layout and length of tensor `index`'s blocks when it is stored block-quantized and
    /// the source can hand the blocks out as stored ([`TensorSource::stream_blocks`]); `None`
    /// (the default) for plain tensors and for sources that only hand out values. Such a tensor
    /// is still described by [`TensorSource::tensors`] as the type its values dequantize to,
    /// and every other method still hands out those values: the blocks are an extra view.
    fn stored_blocks(&self, index: usize) -> Option<StoredBlocks> {
        let _ = index;
        None
    }

    /// Feeds bytes `range` of tensor `index`'s stored blocks (offsets into the blocks, within
    /// [`StoredBlocks::bytes`]) to `sink` as they lie in the source, in one or more chunks, in
    /// order; chunks need not end on a block boundary. A memory-mapped file hands out bounded
    /// chunks and releases the pages it is done with, as [`TensorSource::stream_tensor`] does.
    ///
    /// # Errors
    /// A tensor without [`TensorSource::stored_blocks`] (the default for every tensor), a range
    /// beyond the blocks, and the source's and the sink's errors.
    fn stream_blocks(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let _ = (range, sink);
        let name = self.tensors().get(index).map_or("?", |t| t.name.as_str());
        Err(FormatError::memory(format!(
            "tensor {name:?} is not stored as quantized blocks"
        )))
    }

    /// An earlier tensor whose bytes are the same as those of tensor `index` by construction
    /// (the same view of the same storage, read through another name), so that work on the
    /// bytes (hashing) can be done once. `None` when there is none or the source cannot tell.
    fn same_bytes_as(&self, index: usize) -> Option<usize> {
        let _ = index;
        None
    }

    /// String metadata (the safetensors `__metadata__`); empty for formats without it.
    fn metadata(&self) -> &BTreeMap<String, String>;

    /// Non-tensor leaves by dotted name (`epoch`, `optimizer.param_groups.0.lr`).
    fn values(&self) -> &BTreeMap<String, Value>;

    /// The nesting of a checkpoint whose tensors and values were read from a tree (see
    /// [`crate::structure`]); `None` for a plain state dict and for sources that do not know.
    fn structure(&self) -> Option<&Structure> {
        None
    }

    /// Index of the tensor called `name`.
    fn find(&self, name: &str) -> Option<usize> {
        self.tensors().iter().position(|t| t.name == name)
    }

    /// Sum of element counts over all tensors (saturating).
    fn parameter_count(&self) -> u64 {
        self.tensors()
            .iter()
            .map(|t| t.numel().unwrap_or(u64::MAX))
            .fold(0u64, |a, b| a.saturating_add(b))
    }
}

/// The error for a part of tensor `index` (of the file at `path`) that lies beyond its bytes.
pub(crate) fn range_outside(
    path: Option<&Path>,
    infos: &[TensorInfo],
    index: usize,
    range: &Range<u64>,
) -> FormatError {
    let (name, len) = infos
        .get(index)
        .map(|t| (t.name.as_str(), t.byte_len().unwrap_or(0)))
        .unwrap_or(("?", 0));
    FormatError {
        path: path.map(Path::to_path_buf),
        ..FormatError::memory(format!(
            "bytes {}..{} of tensor {name:?} asked for; it has {len}",
            range.start, range.end
        ))
    }
}

/// Feeds bytes `range` of a whole tensor's `bytes` to `sink` (the error of `outside` when the
/// range does not lie within them).
pub(crate) fn sink_part(
    bytes: &[u8],
    range: &Range<u64>,
    outside: impl FnOnce() -> FormatError,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    let part = usize::try_from(range.start)
        .ok()
        .zip(usize::try_from(range.end).ok())
        .filter(|(s, e)| s <= e)
        .and_then(|(s, e)| bytes.get(s..e))
        .ok_or_else(outside)?;
    sink(part)
}

/// Tensors held in memory: what model initialization produces and what tests build.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    infos: Vec<TensorInfo>,
    data: Vec<Vec<u8>>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
    structure: Option<Structure>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor. Fails if the name is taken or `data` does not match dtype and shape.
    pub fn push(&mut self, info: TensorInfo, data: Vec<u8>) -> Result<(), FormatError> {
        if self.infos.iter().any(|t| t.name == info.name) {
            return Err(FormatError::memory(format!(
                "duplicate tensor name {:?}",
                info.name
            )));
        }
        match info.byte_len() {
            Some(n) if n == data.len() as u64 => {}
            _ => {
                return Err(FormatError::memory(format!(
                    "tensor {:?}: {} bytes do not match dtype {} and shape {:?}",
                    info.name,
                    data.len(),
                    info.dtype,
                    info.shape
                )))
            }
        }
        // Bool bytes are 0 or 1 whatever the caller gave (see `normalized_bools`).
        let data = match info.dtype {
            DType::Bool => normalized_bools(&data).unwrap_or(data),
            _ => data,
        };
        self.infos.push(info);
        self.data.push(data);
        Ok(())
    }

    /// Adds an `F32` tensor from values.
    pub fn push_f32(
        &mut self,
        name: impl Into<String>,
        shape: Vec<u64>,
        values: &[f32],
    ) -> Result<(), FormatError> {
        let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push(TensorInfo::new(name, DType::F32, shape), data)
    }

    pub fn metadata_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.metadata
    }

    pub fn values_mut(&mut self) -> &mut BTreeMap<String, Value> {
        &mut self.values
    }

    /// Sets the nesting writers rebuild (used only if its leaves are exactly the tensor and
    /// value names, [`Structure::fits`]).
    pub fn set_structure(&mut self, structure: Option<Structure>) {
        self.structure = structure;
    }

    /// Copies every tensor, the metadata, the values and the structure out of another source.
    pub fn copy_from(src: &dyn TensorSource) -> Result<Self, FormatError> {
        let mut out = MemorySource::new();
        for (i, info) in src.tensors().iter().enumerate() {
            out.push(info.clone(), src.tensor_bytes(i)?.into_owned())?;
        }
        out.metadata = src.metadata().clone();
        out.values = src.values().clone();
        out.structure = src.structure().cloned();
        Ok(out)
    }
}

impl TensorSource for MemorySource {
    fn format(&self) -> Format {
        Format::Memory
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        self.data
            .get(index)
            .map(|d| Cow::Borrowed(d.as_slice()))
            .ok_or_else(|| FormatError::memory(format!("no tensor at index {index}")))
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }

    fn structure(&self) -> Option<&Structure> {
        self.structure.as_ref()
    }
}

/// Bool is one byte, 0 or 1 (DESIGN.md, "Names"). A file may hold other bytes in a bool
/// tensor; like torch, any non-zero byte reads as true, and it is handed out (hashed, written)
/// as 1. `None` when the bytes are already 0/1 (nothing to copy).
pub(crate) fn normalized_bools(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.iter().all(|&b| b <= 1) {
        return None;
    }
    Some(bytes.iter().map(|&b| u8::from(b != 0)).collect())
}

/// Passes chunks of a bool tensor to `sink` with each byte made 0 or 1.
pub(crate) fn bool_chunk(
    chunk: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    match normalized_bools(chunk) {
        Some(n) => sink(&n),
        None => sink(chunk),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_json() {
        for v in [
            Value::None,
            Value::Bool(true),
            Value::Int(-3),
            Value::BigInt("123456789012345678901234567890".into()),
            Value::Float(0.125),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NEG_INFINITY),
            Value::Str("nan".into()),
            Value::Str("inf".into()),
            Value::Bytes(vec![0, 1, 255]),
        ] {
            assert_eq!(Value::from_json(&v.to_json()), Some(v.clone()), "{v:?}");
        }
        let nan = Value::from_json(&Value::Float(f64::NAN).to_json());
        assert!(matches!(nan, Some(Value::Float(f)) if f.is_nan()));
    }

    #[test]
    fn memory_source_checks_sizes_and_names() {
        let mut m = MemorySource::new();
        m.push_f32("a", vec![2], &[1.0, 2.0]).unwrap();
        assert!(m.push_f32("a", vec![1], &[1.0]).is_err());
        assert!(m.push_f32("b", vec![3], &[1.0]).is_err());
        assert_eq!(m.parameter_count(), 2);
        assert_eq!(m.find("a"), Some(0));
    }
}
