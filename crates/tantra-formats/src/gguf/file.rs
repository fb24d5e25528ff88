//! [`GgufFile`]: an open, validated GGUF file served as a [`TensorSource`].
//!
//! The file is memory-mapped like safetensors. Plain tensors (F32, F16, BF16, F64, I8-I64) are
//! borrowed slices of the map; block-quantized ones are listed as `F32` and dequantized when
//! their bytes are asked for (in bounded pieces when streamed), so `convert`, `diff` and
//! `inspect --hash` work on any GGUF tantra can decode. [`GgufFile::header`] keeps what the file
//! says itself: each tensor's ggml type, its `ne`, the typed metadata.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::GgufError;
use super::parse::{parse_header, GgufTensor, Header};
use super::quant::dequantize;
use super::types::GgmlType;
use super::value::MetaValue;
use crate::dtype::DType;
use crate::error::{FormatError, ResultExt};
use crate::mmap::{sub_range, Backing};
use crate::tensor::{range_outside, BlockLayout, StoredBlocks, TensorInfo, TensorSource, Value};
use crate::{Format, VALUES_METADATA_KEY};

/// Blocks dequantized per piece when a quantized tensor is streamed (256 Ki elements at most).
const DEQUANT_BLOCKS: usize = 8192;

/// An open, validated GGUF file.
pub struct GgufFile {
    path: Option<PathBuf>,
    backing: Backing,
    header: Header,
    infos: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("len", &self.backing.bytes().len())
            .field("header", &self.header)
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` and validates it (see [`parse_header`]).
    ///
    /// # Errors
    /// An I/O error, or the first rule of the format the file breaks; the error names the file.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        let file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len < 24 {
            // Also keeps a zero-length file away from mmap, which refuses it on some systems.
            return Err(GgufError::TooShort { len }).at(path);
        }
        let backing = Backing::map(&file).at(path)?;
        let header = parse_header(backing.bytes()).at(path)?;
        Ok(Self::build(Some(path.to_path_buf()), backing, header))
    }

    /// Validates a whole file held in memory and serves tensors from it.
    ///
    /// # Errors
    /// The first rule of the format the bytes break.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, FormatError> {
        let header = parse_header(&bytes).map_err(|e| FormatError {
            path: None,
            kind: e.into(),
        })?;
        Ok(Self::build(None, Backing::Owned(bytes), header))
    }

    fn build(path: Option<PathBuf>, backing: Backing, header: Header) -> Self {
        let infos = header
            .tensors
            .iter()
            .map(|t| TensorInfo::new(&t.name, t.ty.plain_dtype().unwrap_or(DType::F32), t.shape()))
            .collect();
        let mut metadata = header.metadata_full_text();
        let values = take_values(&header, &mut metadata);
        GgufFile {
            path,
            backing,
            header,
            infos,
            metadata,
            values,
        }
    }

    /// The validated header: version, alignment, typed metadata, tensors as the file lists them.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file this was opened from (`None` for [`GgufFile::from_bytes`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The tensor at `index` as the file describes it (ggml type, `ne`, offsets).
    pub fn gguf_tensor(&self, index: usize) -> Result<&GgufTensor, FormatError> {
        self.header
            .tensors
            .get(index)
            .ok_or_else(|| self.error(GgufError::NoSuchTensor { index }))
    }

    /// The bytes of tensor `index` exactly as stored (quantized blocks for a quantized type).
    pub fn raw_bytes(&self, index: usize) -> Result<&[u8], FormatError> {
        let r = self.range(index)?;
        self.backing
            .bytes()
            .get(r)
            .ok_or_else(|| self.error(GgufError::NoSuchTensor { index }))
    }

    fn error(&self, e: GgufError) -> FormatError {
        FormatError {
            path: self.path.clone(),
            kind: e.into(),
        }
    }

    /// The absolute byte range of tensor `index` in the file, as `usize`.
    fn range(&self, index: usize) -> Result<Range<usize>, FormatError> {
        let t = self.gguf_tensor(index)?;
        let end = t.start.checked_add(t.nbytes);
        match (usize::try_from(t.start), end.map(usize::try_from)) {
            (Ok(s), Some(Ok(e))) if e <= self.backing.bytes().len() => Ok(s..e),
            _ => Err(self.error(GgufError::NoSuchTensor { index })),
        }
    }

    /// The f32 values of blocks `blocks` (whole blocks of the tensor's type) as LE bytes.
    fn dequantized(&self, index: usize, blocks: &[u8]) -> Result<Vec<u8>, FormatError> {
        let t = self.gguf_tensor(index)?;
        let mut values = Vec::new();
        if !dequantize(t.ty, blocks, &mut values) {
            return Err(self.error(GgufError::CannotDecode {
                tensor: t.name.clone(),
                ty: t.ty.name().into(),
            }));
        }
        Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Moves the values out of the string key [`VALUES_METADATA_KEY`] when it holds a JSON object
/// of [`Value`]s (tantra's writer puts them there); otherwise leaves the metadata as it is.
fn take_values(
    header: &Header,
    metadata: &mut BTreeMap<String, String>,
) -> BTreeMap<String, Value> {
    let Some(MetaValue::Str(text)) = header.get(VALUES_METADATA_KEY) else {
        return BTreeMap::new();
    };
    let Ok(obj) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text) else {
        return BTreeMap::new();
    };
    let mut values = BTreeMap::new();
    for (k, j) in &obj {
        match Value::from_json(j) {
            Some(v) => values.insert(k.clone(), v),
            None => return BTreeMap::new(),
        };
    }
    metadata.remove(VALUES_METADATA_KEY);
    values
}

impl TensorSource for GgufFile {
    fn format(&self) -> Format {
        Format::Gguf
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// Plain tensors are borrowed from the map; quantized ones are dequantized to f32.
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let raw = self.raw_bytes(index)?;
        if self.gguf_tensor(index)?.ty.is_quantized() {
            return self.dequantized(index, raw).map(Cow::Owned);
        }
        Ok(Cow::Borrowed(raw))
    }

    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let r = self.range(index)?;
        let t = self.gguf_tensor(index)?;
        if !t.ty.is_quantized() {
            return self
                .backing
                .stream(r, sink, &|| self.error(GgufError::NoSuchTensor { index }));
        }
        let raw = self.raw_bytes(index)?;
        if raw.is_empty() {
            return sink(&[]);
        }
        for piece in raw.chunks(t.ty.type_size() as usize * DEQUANT_BLOCKS) {
            sink(&self.dequantized(index, piece)?)?;
        }
        Ok(())
    }

    fn stream_tensor_range(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let r = self.range(index)?;
        let t = self.gguf_tensor(index)?;
        let outside = || range_outside(self.path.as_deref(), &self.infos, index, &range);
        if !t.ty.is_quantized() {
            let part = sub_range(&r, &range).ok_or_else(outside)?;
            return self.backing.stream(part, sink, &|| {
                self.error(GgufError::NoSuchTensor { index })
            });
        }
        // The blocks that hold f32 bytes `range`, dequantized, then cut to the range.
        let total = t.numel().saturating_mul(4);
        if range.start > range.end || range.end > total {
            return Err(outside());
        }
        let block_bytes = t.ty.block_size() * 4;
        let first = range.start / block_bytes;
        let last = range.end.div_ceil(block_bytes);
        let size = t.ty.type_size();
        let raw = self.raw_bytes(index)?;
        let blocks = usize::try_from(first * size)
            .ok()
            .zip(usize::try_from(last * size).ok())
            .and_then(|(a, b)| raw.get(a..b))
            .ok_or_else(outside)?;
        let values = self.dequantized(index, blocks)?;
        let skip = (range.start - first * block_bytes) as usize;
        let len = (range.end - range.start) as usize;
        sink(values.get(skip..skip + len).ok_or_else(outside)?)
    }

    /// `Q8_0` tensors, whose blocks the runtime's 8-bit matrices take as they are.
    fn stored_blocks(&self, index: usize) -> Option<StoredBlocks> {
        let t = self.header.tensors.get(index)?;
        let layout = match t.ty {
            GgmlType::Q8_0 => BlockLayout::Q8_0,
            _ => return None,
        };
        Some(StoredBlocks {
            layout,
            bytes: t.nbytes,
        })
    }

    fn stream_blocks(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let Some(blocks) = self.stored_blocks(index) else {
            let name = self.infos.get(index).map_or("?", |t| t.name.as_str());
            return Err(self.error(GgufError::NotBlocks {
                tensor: name.to_string(),
            }));
        };
        let r = self.range(index)?;
        let part = sub_range(&r, &range).ok_or_else(|| {
            let name = self.infos.get(index).map_or("?", |t| t.name.as_str());
            self.error(GgufError::BlocksOutside {
                tensor: name.to_string(),
                start: range.start,
                end: range.end,
                len: blocks.bytes,
            })
        })?;
        self.backing.stream(part, sink, &|| {
            self.error(GgufError::NoSuchTensor { index })
        })
    }

    fn file_range(&self, index: usize) -> Option<Range<u64>> {
        let plain = !self.header.tensors.get(index)?.ty.is_quantized();
        match &self.backing {
            Backing::Map(_) if plain => {
                self.range(index).ok().map(|r| r.start as u64..r.end as u64)
            }
            _ => None,
        }
    }

    /// The metadata as text, arrays as whole JSON arrays ([`MetaValue::full_text`]); the typed
    /// values are in [`GgufFile::header`], a summarized form in [`Header::metadata_text`].
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
}
