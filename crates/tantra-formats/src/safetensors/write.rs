//! Writing safetensors in the reference writer's layout, byte for byte: dtype-ordered, compact
//! JSON padded to 8, one tensor streamed at a time; the same tensors always give the same file.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::tensor::{TensorInfo, TensorSource};
use crate::{Progress, STRUCTURE_METADATA_KEY, VALUES_METADATA_KEY};

use super::{SafetensorsError, MAX_HEADER_LEN, METADATA_KEY};

// ---------------------------------------------------------------------------------------------
// The writer.

pub(super) fn no_path(e: SafetensorsError) -> FormatError {
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
