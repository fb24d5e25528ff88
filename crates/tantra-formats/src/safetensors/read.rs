//! Reading a safetensors file: a memory map whose header was validated first, handing out
//! borrowed slices and streaming tensors in bounded chunks.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::dtype::DType;
use crate::error::{FormatError, ResultExt};
use crate::mmap::{sub_range, Backing};
use crate::structure::Structure;
use crate::tensor::{bool_chunk, normalized_bools, range_outside, TensorInfo, TensorSource, Value};
use crate::Format;

use super::write::no_path;
use super::{parse_header, Header, SafetensorsError};

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
        // Everything the header says is now in `header`; its bytes need not stay resident.
        backing.release_parsed(usize::try_from(8 + header.header_len()).unwrap_or(usize::MAX));
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

    /// Feeds chunks of at most [`super::STREAM_CHUNK`] bytes, cut at multiples of it in file offsets,
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
