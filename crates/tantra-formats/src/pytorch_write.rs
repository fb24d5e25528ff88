//! Writing PyTorch zip archives in the layout `torch.save` (torch 2.x) produces.
//!
//! The goal is a file that `torch.load(path, weights_only=True)` loads to exactly the tensors of
//! the source, and that looks like torch's own output to any tool that inspects the bytes. So the
//! archive copies torch's choices (through its zip library, miniz) rather than a generic zip
//! writer's: the same entries in the same order, stored, every record's data at a multiple of 64
//! bytes (padding in an `FB` extra field of the local header), data descriptors after the data,
//! DOS time and date zero, a ZIP64 end record always and ZIP64 extra fields where a size or offset
//! needs them, and a `data.pkl` pickled (protocol 2, same memo numbering) as Python's pickler
//! pickles an `OrderedDict` state dict. For the dtypes of the fixture `all_dtypes.pt` the output
//! is byte-for-byte torch's, except the 40-digit serialization id.
//!
//! Memory stays bounded: `data.pkl` needs only names, dtypes and shapes, and each tensor's bytes
//! go from [`TensorSource::stream_tensor`] straight to `out` while their CRC-32 is computed; the
//! sizes are known up front from dtype and shape, and the CRC travels in a data descriptor after
//! the data, which is why `out` needs only [`Write`], not `Seek`.
//!
//! Deliberate differences from torch: CRCs are always computed (torch may write zeros), ZIP64
//! extra fields in local headers carry the real sizes (miniz writes a zero compressed size), and
//! the serialization id is derived from the record names and CRCs with a fixed hash rather than
//! `std::hash`, so that the same input gives the same bytes on every machine.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};

use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::structure::{Key, Node, Structure};
use crate::tensor::{TensorInfo, TensorSource, Value};
use crate::Progress;

/// Where every record's data starts: a multiple of this (`.storage_alignment`).
const ALIGNMENT: u64 = 64;
/// Items per `SETITEMS` batch, as Python's pickler batches them.
const BATCH_SIZE: usize = 1000;
/// The label of the [`Progress`] this writer reports.
const PROGRESS_LABEL: &str = "writing pytorch";

const LOCAL_HEADER_SIG: u32 = 0x0403_4b50;
const CENTRAL_HEADER_SIG: u32 = 0x0201_4b50;
const DATA_DESCRIPTOR_SIG: u32 = 0x0807_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const LOCAL_HEADER_LEN: u64 = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;
const PADDING_EXTRA_ID: &[u8; 2] = b"FB";
/// General purpose flags: bit 3 (sizes and CRC in a data descriptor), bit 11 (UTF-8 names).
const FLAG_DESCRIPTOR: u16 = 0x0008;
const FLAG_UTF8: u16 = 0x0800;
/// "Version made by" and "needed" of miniz's ZIP64 end record (UNIX, 3.0; 4.5 for ZIP64).
const ZIP64_MADE_BY: u16 = 0x031e;
const ZIP64_NEEDED: u16 = 0x002d;
const U32_LIMIT: u64 = u32::MAX as u64;

/// Writes `src` as a PyTorch zip archive that `torch.load(weights_only=True)` loads, with every
/// entry under `<archive_name>/`. Returns the number of bytes written.
///
/// The top-level object is a `collections.OrderedDict` holding the tensors in source order, then
/// the non-tensor values ([`TensorSource::values`]) under their dotted names; or, for a source
/// with a [`Structure`] that names exactly its tensors and values (a nested checkpoint read
/// from a `.pt` or from a safetensors file tantra wrote), that structure rebuilt, so that
/// `torch.load` returns the same nesting as the original. Each tensor gets its
/// own storage (`data/0`, `data/1`, ...). The same input always gives the same bytes.
///
/// # Errors
/// Before anything is written, [`ErrorKind::Unsupported`] naming the tensor for a dtype torch
/// cannot hold the same way (`F6_E2M3`, `F6_E3M2`; `F4` whose last dimension is odd, as torch's
/// `float4_e2m1fn_x2` packs two values per element) or a shape torch cannot index (a
/// dimension or stride above `i64::MAX`), for a tensor or value name used twice, for an
/// `archive_name` that is empty or holds `/` or `\`, and for an integer value that protocol 2
/// cannot carry within torch's allowed opcodes. While writing, [`ErrorKind::Io`] for a failed
/// write, or (kind `InvalidData`) for a source whose stream of a tensor is not as long as its dtype
/// and shape say; errors of the source are passed through. After an error `out` holds a partial
/// archive.
///
/// ```
/// use tantra_formats::{pytorch_write::write_pytorch, MemorySource, NoProgress};
/// let mut src = MemorySource::new();
/// src.push_f32("w", vec![2], &[1.0, 2.0])?;
/// let mut out = Vec::new();
/// let n = write_pytorch(&mut out, &src, "model", &NoProgress)?;
/// assert_eq!(n, out.len() as u64);
/// assert_eq!(&out[..4], b"PK\x03\x04");
/// # Ok::<(), tantra_formats::FormatError>(())
/// ```
///
/// A dtype torch has no matching type for is refused:
/// ```
/// use tantra_formats::{pytorch_write::write_pytorch, DType, ErrorKind, MemorySource, NoProgress, TensorInfo};
/// let mut src = MemorySource::new();
/// src.push(TensorInfo::new("packed", DType::F6E2M3, vec![4]), vec![0, 0, 0])?;
/// let err = write_pytorch(&mut Vec::new(), &src, "model", &NoProgress).unwrap_err();
/// assert!(matches!(err.kind, ErrorKind::Unsupported(ref m) if m.contains("packed")));
/// # Ok::<(), tantra_formats::FormatError>(())
/// ```
pub fn write_pytorch(
    out: &mut dyn Write,
    src: &dyn TensorSource,
    archive_name: &str,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    let plan = Plan::new(src, archive_name)?;
    progress.begin(PROGRESS_LABEL, plan.total_bytes);
    let result = write_archive(out, src, &plan, progress);
    progress.end();
    result
}

/// What torch calls a storage class, for one dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TorchStorage {
    /// A legacy typed storage (`torch.FloatStorage`), rebuilt by `_rebuild_tensor_v2`; the
    /// persistent id counts elements.
    Typed(&'static str),
    /// `torch.storage.UntypedStorage` plus a dtype global (`torch.float8_e4m3fn`), rebuilt by
    /// `_rebuild_tensor_v3`; the persistent id counts bytes. torch 2.x uses this for every dtype
    /// without a legacy storage class.
    Untyped(&'static str),
}

/// How torch stores `dtype`, or `None` where torch has no type with the same elements and shape.
fn torch_storage(dtype: DType) -> Option<TorchStorage> {
    use TorchStorage::{Typed, Untyped};
    Some(match dtype {
        DType::F64 => Typed("DoubleStorage"),
        DType::F32 => Typed("FloatStorage"),
        DType::F16 => Typed("HalfStorage"),
        DType::BF16 => Typed("BFloat16Storage"),
        DType::I64 => Typed("LongStorage"),
        DType::I32 => Typed("IntStorage"),
        DType::I16 => Typed("ShortStorage"),
        DType::I8 => Typed("CharStorage"),
        DType::U8 => Typed("ByteStorage"),
        DType::Bool => Typed("BoolStorage"),
        DType::C64 => Typed("ComplexFloatStorage"),
        DType::F8E4M3 => Untyped("float8_e4m3fn"),
        DType::F8E5M2 => Untyped("float8_e5m2"),
        DType::F8E4M3Fnuz => Untyped("float8_e4m3fnuz"),
        DType::F8E5M2Fnuz => Untyped("float8_e5m2fnuz"),
        // torch >= 2.7; what safetensors maps F8_E8M0 to.
        DType::F8E8M0 => Untyped("float8_e8m0fnu"),
        DType::U16 => Untyped("uint16"),
        DType::U32 => Untyped("uint32"),
        DType::U64 => Untyped("uint64"),
        // torch's `float4_e2m1fn_x2` counts a byte (two values) as one element: its last
        // dimension is half of safetensors' (see `torch_shape`). torch has no 6-bit floats.
        DType::F4 => Untyped("float4_e2m1fn_x2"),
        DType::F6E2M3 | DType::F6E3M2 => return None,
    })
}

/// The shape torch gives a tensor: the safetensors shape, except for `F4`, which torch holds
/// as `float4_e2m1fn_x2` (two values per element), so the last dimension is halved, as
/// `safetensors.torch` does the other way.
fn torch_shape(info: &TensorInfo) -> Result<Vec<u64>, FormatError> {
    if info.dtype != DType::F4 {
        return Ok(info.shape.clone());
    }
    let mut shape = info.shape.clone();
    match shape.last_mut() {
        Some(d) if *d % 2 == 0 => {
            *d /= 2;
            Ok(shape)
        }
        _ => Err(unsupported(format!(
            "tensor {:?}: F4 shape {:?} has no even last dimension, so torch's \
             float4_e2m1fn_x2 (two values per element) cannot hold it",
            info.name, info.shape
        ))),
    }
}

fn unsupported(msg: String) -> FormatError {
    FormatError {
        path: None,
        kind: ErrorKind::Unsupported(msg),
    }
}

fn io_error(e: io::Error) -> FormatError {
    FormatError {
        path: None,
        kind: ErrorKind::Io(e),
    }
}

fn too_large() -> FormatError {
    unsupported("the archive would be larger than 2^64 bytes".into())
}

/// Everything decided before the first byte is written.
struct Plan {
    archive_name: String,
    data_pkl: Vec<u8>,
    /// Byte length of each tensor, in source order.
    byte_lens: Vec<u64>,
    total_bytes: u64,
}

impl Plan {
    fn new(src: &dyn TensorSource, archive_name: &str) -> Result<Plan, FormatError> {
        if archive_name.is_empty() || archive_name.contains(['/', '\\', '\0']) {
            return Err(unsupported(format!(
                "archive name {archive_name:?}: must be non-empty and hold no '/', '\\' or NUL"
            )));
        }
        let mut names = HashSet::new();
        for name in src
            .tensors()
            .iter()
            .map(|t| t.name.as_str())
            .chain(src.values().keys().map(String::as_str))
        {
            if !names.insert(name) {
                return Err(unsupported(format!(
                    "the name {name:?} is used twice (a state dict holds each key once)"
                )));
            }
        }
        if let Some(structure) = src.structure().filter(|s| s.fits(src)) {
            return Plan::nested(src, archive_name, structure);
        }
        let mut p = Pickler::default();
        p.proto();
        p.global("collections", "OrderedDict")?;
        p.op(EMPTY_TUPLE);
        p.op(REDUCE);
        p.memoize()?;
        let mut byte_lens = Vec::with_capacity(src.tensors().len());
        let mut total_bytes = 0u64;
        // Items: tensors in source order, then values in name order.
        let count = src
            .tensors()
            .len()
            .checked_add(src.values().len())
            .ok_or_else(too_large)?;
        let mut tensors = src.tensors().iter().enumerate();
        let mut values = src.values().iter();
        let mut done = 0usize;
        while done < count {
            let batch = (count - done).min(BATCH_SIZE);
            if batch > 1 {
                p.op(MARK);
            }
            for _ in 0..batch {
                if let Some((key, info)) = tensors.next() {
                    p.str(&info.name)?;
                    let byte_len = p.source_tensor(key, info)?;
                    byte_lens.push(byte_len);
                    total_bytes = total_bytes.checked_add(byte_len).ok_or_else(too_large)?;
                } else if let Some((name, value)) = values.next() {
                    p.str(name)?;
                    p.value(name, value)?;
                }
            }
            p.op(if batch > 1 { SETITEMS } else { SETITEM });
            done += batch;
        }
        p.op(STOP);
        Ok(Plan {
            archive_name: archive_name.to_string(),
            data_pkl: p.buf,
            byte_lens,
            total_bytes,
        })
    }
}

impl Plan {
    /// The plan for a source written with its nesting: the pickle rebuilds `structure` (dicts,
    /// `OrderedDict`s, lists, tuples) with each tensor and value where its leaf is; storages are
    /// still keyed and written in source order. `structure` fits `src` ([`Structure::fits`]).
    fn nested(
        src: &dyn TensorSource,
        archive_name: &str,
        structure: &Structure,
    ) -> Result<Plan, FormatError> {
        let by_name: HashMap<&str, usize> = src
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut p = Pickler::default();
        p.proto();
        let mut byte_lens = vec![0u64; src.tensors().len()];
        p.node(&structure.root, src, &by_name, &mut byte_lens)?;
        p.op(STOP);
        let total_bytes = byte_lens
            .iter()
            .try_fold(0u64, |a, &b| a.checked_add(b))
            .ok_or_else(too_large)?;
        Ok(Plan {
            archive_name: archive_name.to_string(),
            data_pkl: p.buf,
            byte_lens,
            total_bytes,
        })
    }
}

fn write_archive(
    out: &mut dyn Write,
    src: &dyn TensorSource,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    let mut zip = ZipWriter::new(out, &plan.archive_name);
    zip.record("data.pkl", &plan.data_pkl)?;
    zip.record(".format_version", b"1")?;
    zip.record(".storage_alignment", ALIGNMENT.to_string().as_bytes())?;
    zip.record("byteorder", b"little")?;
    for (index, (info, &byte_len)) in src.tensors().iter().zip(&plan.byte_lens).enumerate() {
        let what = format!("tensor {:?}", info.name);
        let mut entry = zip.begin(&format!("data/{index}"), byte_len, what)?;
        // The writer's own failure, kept whole; the source gets a stand-in to pass back.
        let mut failure: Option<FormatError> = None;
        let streamed = src.stream_tensor(index, &mut |chunk| match entry.write(&mut zip, chunk) {
            Ok(()) => {
                progress.advance(chunk.len() as u64);
                Ok(())
            }
            Err(e) => {
                let stand_in = io_error(io::Error::other(e.to_string()));
                failure.get_or_insert(e);
                Err(stand_in)
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        streamed?;
        zip.finish(entry)?;
    }
    zip.record("version", b"3\n")?;
    let id = zip.serialization_id();
    zip.record(".data/serialization_id", id.as_bytes())?;
    zip.finish_archive()
}

/// `what` (`tensor "w"`) came with `got` bytes where `expected` were announced.
fn wrong_length(what: &str, expected: u64, got: u64) -> FormatError {
    io_error(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{what}: the source gave {} {got} bytes, its dtype and shape say {expected}",
            if got > expected { "at least" } else { "only" }
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// Zip

/// One central directory record, kept until the end.
struct CentralEntry {
    name: String,
    offset: u64,
    size: u64,
    crc: u32,
    flags: u16,
}

/// An entry whose data is being written.
struct OpenEntry {
    /// What the entry holds, for errors (`tensor "w"`).
    what: String,
    expected: u64,
    written: u64,
    crc: crc32fast::Hasher,
    central: CentralEntry,
    /// The local header carries a ZIP64 extra field, so the data descriptor has 64-bit sizes.
    zip64: bool,
}

impl OpenEntry {
    fn write(&mut self, zip: &mut ZipWriter<'_>, chunk: &[u8]) -> Result<(), FormatError> {
        let after = self
            .written
            .checked_add(chunk.len() as u64)
            .filter(|&n| n <= self.expected)
            .ok_or_else(|| {
                wrong_length(
                    &self.what,
                    self.expected,
                    self.written.saturating_add(chunk.len() as u64),
                )
            })?;
        zip.put(chunk)?;
        self.crc.update(chunk);
        self.written = after;
        Ok(())
    }
}

/// A zip archive written front to back in the layout miniz gives torch.
struct ZipWriter<'a> {
    out: &'a mut dyn Write,
    /// `<archive_name>/`.
    prefix: String,
    pos: u64,
    entries: Vec<CentralEntry>,
    /// Folded over the names and CRCs of the records written, for the serialization id.
    name_hash: u64,
    crc_hash: u64,
}

impl<'a> ZipWriter<'a> {
    fn new(out: &'a mut dyn Write, archive_name: &str) -> Self {
        ZipWriter {
            out,
            prefix: format!("{archive_name}/"),
            pos: 0,
            entries: Vec::new(),
            name_hash: 0,
            crc_hash: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.out.write_all(bytes).map_err(io_error)?;
        self.pos = self
            .pos
            .checked_add(bytes.len() as u64)
            .ok_or_else(too_large)?;
        Ok(())
    }

    /// Writes a whole small record.
    fn record(&mut self, name: &str, data: &[u8]) -> Result<(), FormatError> {
        let mut entry = self.begin(name, data.len() as u64, format!("record {name:?}"))?;
        entry.write(self, data)?;
        self.finish(entry)
    }

    /// Writes the local header of `name` (under the prefix) whose data will be `size` bytes,
    /// padded so that the data starts at a multiple of [`ALIGNMENT`].
    fn begin(&mut self, name: &str, size: u64, what: String) -> Result<OpenEntry, FormatError> {
        let full = format!("{}{name}", self.prefix);
        let name_len = u16::try_from(full.len())
            .map_err(|_| unsupported(format!("zip entry name {full:?} is too long")))?;
        let offset = self.pos;
        let large_size = size >= U32_LIMIT;
        let large_offset = offset >= U32_LIMIT;
        let mut zip64 = Vec::new();
        if large_size || large_offset {
            let mut fields = Vec::new();
            if large_size {
                fields.extend_from_slice(&size.to_le_bytes());
                fields.extend_from_slice(&size.to_le_bytes());
            }
            if large_offset {
                fields.extend_from_slice(&offset.to_le_bytes());
            }
            zip64.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
            zip64.extend_from_slice(&(fields.len() as u16).to_le_bytes());
            zip64.extend_from_slice(&fields);
        }
        // Data start without padding: header, name, ZIP64 field, `FB` id and length.
        let unpadded = [LOCAL_HEADER_LEN, u64::from(name_len), zip64.len() as u64, 4]
            .iter()
            .try_fold(offset, |acc, &n| acc.checked_add(n))
            .ok_or_else(too_large)?;
        let padding = (ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT;
        let extra_len = zip64.len() as u64 + 4 + padding;
        let flags = if size > 0 {
            FLAG_UTF8 | FLAG_DESCRIPTOR
        } else {
            FLAG_UTF8
        };
        let mut header = Vec::with_capacity(LOCAL_HEADER_LEN as usize + full.len() + 128);
        header.extend_from_slice(&LOCAL_HEADER_SIG.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // version needed
        header.extend_from_slice(&flags.to_le_bytes());
        header.extend_from_slice(&0u16.to_le_bytes()); // stored
        header.extend_from_slice(&0u16.to_le_bytes()); // DOS time
        header.extend_from_slice(&0u16.to_le_bytes()); // DOS date
        header.extend_from_slice(&[0; 12]); // CRC and sizes: in the data descriptor
        header.extend_from_slice(&name_len.to_le_bytes());
        header.extend_from_slice(&(extra_len as u16).to_le_bytes());
        header.extend_from_slice(full.as_bytes());
        header.extend_from_slice(&zip64);
        header.extend_from_slice(PADDING_EXTRA_ID);
        header.extend_from_slice(&(padding as u16).to_le_bytes());
        header.resize(header.len() + padding as usize, b'Z');
        self.put(&header)?;
        Ok(OpenEntry {
            what,
            expected: size,
            written: 0,
            crc: crc32fast::Hasher::new(),
            central: CentralEntry {
                name: full,
                offset,
                size,
                crc: 0,
                flags,
            },
            zip64: !zip64.is_empty(),
        })
    }

    /// Writes the data descriptor of a fully written entry and records it for the central
    /// directory.
    fn finish(&mut self, entry: OpenEntry) -> Result<(), FormatError> {
        let OpenEntry {
            what,
            expected,
            written,
            crc,
            mut central,
            zip64,
        } = entry;
        if written != expected {
            return Err(wrong_length(&what, expected, written));
        }
        central.crc = crc.finalize();
        if central.size > 0 {
            let mut d = Vec::with_capacity(24);
            d.extend_from_slice(&DATA_DESCRIPTOR_SIG.to_le_bytes());
            d.extend_from_slice(&central.crc.to_le_bytes());
            if zip64 {
                d.extend_from_slice(&central.size.to_le_bytes());
                d.extend_from_slice(&central.size.to_le_bytes());
            } else {
                d.extend_from_slice(&(central.size as u32).to_le_bytes());
                d.extend_from_slice(&(central.size as u32).to_le_bytes());
            }
            self.put(&d)?;
        }
        self.name_hash = hash_combine(self.name_hash, fnv1a(central.name.as_bytes()));
        self.crc_hash = hash_combine(self.crc_hash, u64::from(central.crc));
        self.entries.push(central);
        Ok(())
    }

    /// Forty decimal digits, like torch's: twenty from the record names, twenty from their CRCs.
    fn serialization_id(&self) -> String {
        format!("{:020}{:020}", self.name_hash, self.crc_hash)
    }

    /// Writes the central directory and the end records; returns the archive's length.
    fn finish_archive(mut self) -> Result<u64, FormatError> {
        let cd_offset = self.pos;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let large_size = e.size >= U32_LIMIT;
            let large_offset = e.offset >= U32_LIMIT;
            let mut zip64 = Vec::new();
            if large_size {
                zip64.extend_from_slice(&e.size.to_le_bytes());
                zip64.extend_from_slice(&e.size.to_le_bytes());
            }
            if large_offset {
                zip64.extend_from_slice(&e.offset.to_le_bytes());
            }
            let extra_len = if zip64.is_empty() { 0 } else { zip64.len() + 4 };
            let mut h = Vec::with_capacity(46 + e.name.len() + extra_len);
            h.extend_from_slice(&CENTRAL_HEADER_SIG.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // version made by
            h.extend_from_slice(&0u16.to_le_bytes()); // version needed
            h.extend_from_slice(&e.flags.to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u16.to_le_bytes()); // DOS time
            h.extend_from_slice(&0u16.to_le_bytes()); // DOS date
            h.extend_from_slice(&e.crc.to_le_bytes());
            h.extend_from_slice(&clamp32(e.size).to_le_bytes());
            h.extend_from_slice(&clamp32(e.size).to_le_bytes());
            // The name length was checked when the local header was written.
            h.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            h.extend_from_slice(&(extra_len as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // comment length
            h.extend_from_slice(&0u16.to_le_bytes()); // disk
            h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            h.extend_from_slice(&0u32.to_le_bytes()); // external attributes
            h.extend_from_slice(&clamp32(e.offset).to_le_bytes());
            h.extend_from_slice(e.name.as_bytes());
            if !zip64.is_empty() {
                h.extend_from_slice(&ZIP64_EXTRA_ID.to_le_bytes());
                h.extend_from_slice(&(zip64.len() as u16).to_le_bytes());
                h.extend_from_slice(&zip64);
            }
            self.put(&h)?;
        }
        let cd_size = self.pos - cd_offset;
        let count = entries.len() as u64;
        let zip64_eocd_offset = self.pos;
        let mut t = Vec::with_capacity(56 + 20 + 22);
        t.extend_from_slice(&ZIP64_EOCD_SIG.to_le_bytes());
        t.extend_from_slice(&44u64.to_le_bytes()); // size of the rest of this record
        t.extend_from_slice(&ZIP64_MADE_BY.to_le_bytes());
        t.extend_from_slice(&ZIP64_NEEDED.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes()); // this disk
        t.extend_from_slice(&0u32.to_le_bytes()); // disk of the central directory
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&count.to_le_bytes());
        t.extend_from_slice(&cd_size.to_le_bytes());
        t.extend_from_slice(&cd_offset.to_le_bytes());
        t.extend_from_slice(&ZIP64_LOCATOR_SIG.to_le_bytes());
        t.extend_from_slice(&0u32.to_le_bytes());
        t.extend_from_slice(&zip64_eocd_offset.to_le_bytes());
        t.extend_from_slice(&1u32.to_le_bytes()); // total disks
        t.extend_from_slice(&EOCD_SIG.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes());
        t.extend_from_slice(&(count.min(0xffff) as u16).to_le_bytes());
        t.extend_from_slice(&(count.min(0xffff) as u16).to_le_bytes());
        t.extend_from_slice(&clamp32(cd_size).to_le_bytes());
        t.extend_from_slice(&clamp32(cd_offset).to_le_bytes());
        t.extend_from_slice(&0u16.to_le_bytes()); // comment length
        self.put(&t)?;
        self.out.flush().map_err(io_error)?;
        Ok(self.pos)
    }
}

fn clamp32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// FNV-1a, 64-bit: a fixed hash for the serialization id.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// boost's `hash_combine`, which torch (`c10::hash_combine`) also uses for this id.
fn hash_combine(seed: u64, value: u64) -> u64 {
    seed ^ value
        .wrapping_add(0x9e37_79b9)
        .wrapping_add(seed << 6)
        .wrapping_add(seed >> 2)
}

// ---------------------------------------------------------------------------------------------
// Pickle (protocol 2), emitted the way Python's `pickle.Pickler` emits it for torch.

const PROTO: u8 = 0x80;
const MARK: u8 = b'(';
const STOP: u8 = b'.';
const GLOBAL: u8 = b'c';
const BINPUT: u8 = b'q';
const LONG_BINPUT: u8 = b'r';
const BINGET: u8 = b'h';
const LONG_BINGET: u8 = b'j';
const EMPTY_TUPLE: u8 = b')';
const TUPLE: u8 = b't';
const TUPLE1: u8 = 0x85;
const TUPLE2: u8 = 0x86;
const TUPLE3: u8 = 0x87;
const REDUCE: u8 = b'R';
const BINPERSID: u8 = b'Q';
const BININT: u8 = b'J';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const LONG1: u8 = 0x8a;
const BINFLOAT: u8 = b'G';
const BINUNICODE: u8 = b'X';
const NONE: u8 = b'N';
const NEWTRUE: u8 = 0x88;
const NEWFALSE: u8 = 0x89;
const SETITEM: u8 = b's';
const SETITEMS: u8 = b'u';
const EMPTY_DICT: u8 = b'}';
const EMPTY_LIST: u8 = b']';
const APPEND: u8 = b'a';
const APPENDS: u8 = b'e';

/// An object Python's pickler would see as the same object every time, so that only its first
/// appearance is written out and later ones are memo references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shared {
    Global(&'static str, &'static str),
    /// A string literal of torch's or pickle's own code (`'storage'`, `'cpu'`, `'latin1'`).
    Str(&'static str),
}

#[derive(Default)]
struct Pickler {
    buf: Vec<u8>,
    /// Entries in the memo so far; the next memoized object gets this index.
    memo_len: u32,
    shared: HashMap<Shared, u32>,
}

impl Pickler {
    fn op(&mut self, op: u8) {
        self.buf.push(op);
    }

    fn proto(&mut self) {
        self.buf.extend_from_slice(&[PROTO, 2]);
    }

    /// Puts the object on top of the stack into the memo (`BINPUT`/`LONG_BINPUT`).
    fn memoize(&mut self) -> Result<u32, FormatError> {
        let index = self.memo_len;
        match u8::try_from(index) {
            Ok(i) => self.buf.extend_from_slice(&[BINPUT, i]),
            Err(_) => {
                self.buf.push(LONG_BINPUT);
                self.buf.extend_from_slice(&index.to_le_bytes());
            }
        }
        self.memo_len = index
            .checked_add(1)
            .ok_or_else(|| unsupported("more than 2^32 pickled objects".into()))?;
        Ok(index)
    }

    fn get(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.buf.extend_from_slice(&[BINGET, i]),
            Err(_) => {
                self.buf.push(LONG_BINGET);
                self.buf.extend_from_slice(&index.to_le_bytes());
            }
        }
    }

    /// Emits `obj` for the first time, or a reference to its memo entry.
    fn shared(
        &mut self,
        obj: Shared,
        first: impl FnOnce(&mut Self) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        if let Some(&index) = self.shared.get(&obj) {
            self.get(index);
            return Ok(());
        }
        first(self)?;
        let index = self.memoize()?;
        self.shared.insert(obj, index);
        Ok(())
    }

    fn global(&mut self, module: &'static str, name: &'static str) -> Result<(), FormatError> {
        self.shared(Shared::Global(module, name), |p| {
            p.buf.push(GLOBAL);
            p.buf.extend_from_slice(module.as_bytes());
            p.buf.push(b'\n');
            p.buf.extend_from_slice(name.as_bytes());
            p.buf.push(b'\n');
            Ok(())
        })
    }

    fn raw_str(&mut self, s: &str) -> Result<(), FormatError> {
        let len = u32::try_from(s.len()).map_err(|_| {
            unsupported(format!(
                "a string of {} bytes does not fit pickle protocol 2",
                s.len()
            ))
        })?;
        self.buf.push(BINUNICODE);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// A fresh string object, memoized as Python memoizes every string it pickles.
    fn str(&mut self, s: &str) -> Result<(), FormatError> {
        self.raw_str(s)?;
        self.memoize().map(|_| ())
    }

    fn shared_str(&mut self, s: &'static str) -> Result<(), FormatError> {
        self.shared(Shared::Str(s), |p| p.raw_str(s))
    }

    /// An integer as `save_long` writes it: the shortest of `BININT1`, `BININT2`, `BININT`,
    /// else `LONG1`.
    fn int(&mut self, v: i128) {
        if let Ok(b) = u8::try_from(v) {
            self.buf.extend_from_slice(&[BININT1, b]);
        } else if let Ok(w) = u16::try_from(v) {
            self.buf.push(BININT2);
            self.buf.extend_from_slice(&w.to_le_bytes());
        } else if let Ok(d) = i32::try_from(v) {
            self.buf.push(BININT);
            self.buf.extend_from_slice(&d.to_le_bytes());
        } else {
            let magnitude = v.unsigned_abs().to_le_bytes();
            // An i128 needs at most 17 bytes: always within LONG1's one-byte length.
            let bytes = encode_long(v < 0, &magnitude);
            self.buf.extend_from_slice(&[LONG1, bytes.len() as u8]);
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// A tuple of integers as `save_tuple` writes it, memoized unless empty.
    fn int_tuple(&mut self, items: &[u64]) -> Result<(), FormatError> {
        if items.is_empty() {
            self.op(EMPTY_TUPLE);
            return Ok(());
        }
        if items.len() > 3 {
            self.op(MARK);
        }
        for &i in items {
            self.int(i128::from(i));
        }
        self.op(match items.len() {
            1 => TUPLE1,
            2 => TUPLE2,
            3 => TUPLE3,
            _ => TUPLE,
        });
        self.memoize().map(|_| ())
    }

    /// A tensor as `torch.Tensor.__reduce_ex__` hands it to the pickler: a rebuild function
    /// applied to (storage via persistent id, offset 0, size, row-major stride, False,
    /// `OrderedDict()`[, dtype]).
    fn tensor(
        &mut self,
        key: &str,
        name: &str,
        storage: TorchStorage,
        shape: &[u64],
        byte_len: u64,
    ) -> Result<(), FormatError> {
        let stride = contiguous_stride(shape).ok_or_else(|| {
            unsupported(format!(
                "tensor {name:?}: shape {shape:?} is beyond what torch can index (i64)"
            ))
        })?;
        let (rebuild, numel) = match storage {
            TorchStorage::Typed(_) => {
                let numel = shape.iter().product::<u64>(); // byte_len exists, so no overflow
                ("_rebuild_tensor_v2", numel)
            }
            TorchStorage::Untyped(_) => ("_rebuild_tensor_v3", byte_len),
        };
        self.global("torch._utils", rebuild)?;
        self.op(MARK);
        // The persistent id ('storage', storage class, key, location, numel).
        self.op(MARK);
        self.shared_str("storage")?;
        match storage {
            TorchStorage::Typed(class) => self.global("torch", class)?,
            TorchStorage::Untyped(_) => self.global("torch.storage", "UntypedStorage")?,
        }
        self.str(key)?;
        self.shared_str("cpu")?;
        self.int(i128::from(numel));
        self.op(TUPLE);
        self.memoize()?;
        self.op(BINPERSID);
        self.int(0); // storage offset
        self.int_tuple(shape)?;
        self.int_tuple(&stride)?;
        self.op(NEWFALSE); // requires_grad
        self.global("collections", "OrderedDict")?; // backward hooks: OrderedDict()
        self.op(EMPTY_TUPLE);
        self.op(REDUCE);
        self.memoize()?;
        if let TorchStorage::Untyped(dtype_name) = storage {
            self.global("torch", dtype_name)?;
        }
        self.op(TUPLE);
        self.memoize()?;
        self.op(REDUCE);
        self.memoize().map(|_| ())
    }

    /// Tensor `key` of the source (its storage key is its index), checked for torch.
    /// Returns its byte length.
    fn source_tensor(&mut self, key: usize, info: &TensorInfo) -> Result<u64, FormatError> {
        let storage = torch_storage(info.dtype).ok_or_else(|| {
            unsupported(format!(
                "tensor {:?}: dtype {} has no PyTorch equivalent; convert it to \
                 safetensors instead",
                info.name, info.dtype
            ))
        })?;
        let byte_len = info.byte_len().ok_or_else(|| {
            unsupported(format!(
                "tensor {:?}: shape {:?} of {} is too large or not a whole number of bytes",
                info.name, info.shape, info.dtype
            ))
        })?;
        let shape = torch_shape(info)?;
        self.tensor(&key.to_string(), &info.name, storage, &shape, byte_len)?;
        Ok(byte_len)
    }

    /// One node of a [`Structure`] as Python's pickler writes the same object: `EMPTY_DICT`
    /// or `OrderedDict()` then `SETITEMS` batches, `EMPTY_LIST` then `APPENDS` batches, tuples
    /// by `TUPLE1..3` or `MARK ... TUPLE`. Recursion is bounded by the structure's depth cap.
    fn node(
        &mut self,
        node: &Node,
        src: &dyn TensorSource,
        by_name: &HashMap<&str, usize>,
        byte_lens: &mut [u64],
    ) -> Result<(), FormatError> {
        match node {
            Node::Leaf(name) => {
                if let Some((i, info)) = by_name
                    .get(name.as_str())
                    .and_then(|&i| Some((i, src.tensors().get(i)?)))
                {
                    let len = self.source_tensor(i, info)?;
                    if let Some(slot) = byte_lens.get_mut(i) {
                        *slot = len;
                    }
                } else if let Some(v) = src.values().get(name) {
                    self.value(name, v)?;
                } else {
                    return Err(unsupported(format!(
                        "the structure names {name:?}, which the source does not hold"
                    )));
                }
            }
            Node::Dict(items) | Node::OrderedDict(items) => {
                if matches!(node, Node::Dict(_)) {
                    self.op(EMPTY_DICT);
                } else {
                    self.global("collections", "OrderedDict")?;
                    self.op(EMPTY_TUPLE);
                    self.op(REDUCE);
                }
                self.memoize()?;
                for batch in items.chunks(BATCH_SIZE) {
                    if batch.len() > 1 {
                        self.op(MARK);
                    }
                    for (key, child) in batch {
                        match key {
                            Key::Str(s) => self.str(s)?,
                            Key::Int(i) => self.int(i128::from(*i)),
                            Key::Bool(b) => self.op(if *b { NEWTRUE } else { NEWFALSE }),
                        }
                        self.node(child, src, by_name, byte_lens)?;
                    }
                    self.op(if batch.len() > 1 { SETITEMS } else { SETITEM });
                }
            }
            Node::List(items) => {
                self.op(EMPTY_LIST);
                self.memoize()?;
                for batch in items.chunks(BATCH_SIZE) {
                    if batch.len() > 1 {
                        self.op(MARK);
                    }
                    for child in batch {
                        self.node(child, src, by_name, byte_lens)?;
                    }
                    self.op(if batch.len() > 1 { APPENDS } else { APPEND });
                }
            }
            Node::Tuple(items) => {
                if items.is_empty() {
                    self.op(EMPTY_TUPLE);
                    return Ok(());
                }
                if items.len() > 3 {
                    self.op(MARK);
                }
                for child in items {
                    self.node(child, src, by_name, byte_lens)?;
                }
                self.op(match items.len() {
                    1 => TUPLE1,
                    2 => TUPLE2,
                    3 => TUPLE3,
                    _ => TUPLE,
                });
                self.memoize()?;
            }
        }
        Ok(())
    }

    /// A non-tensor value called `name`.
    fn value(&mut self, name: &str, value: &Value) -> Result<(), FormatError> {
        match value {
            Value::None => self.op(NONE),
            Value::Bool(true) => self.op(NEWTRUE),
            Value::Bool(false) => self.op(NEWFALSE),
            Value::Int(i) => self.int(i128::from(*i)),
            Value::BigInt(decimal) => {
                let (negative, magnitude) = parse_decimal(decimal).ok_or_else(|| {
                    unsupported(format!(
                        "value {name:?}: {decimal:?} is not a decimal integer"
                    ))
                })?;
                match to_i128(negative, &magnitude) {
                    Some(v) => self.int(v),
                    None => {
                        let bytes = encode_long(negative, &magnitude);
                        // LONG4 would carry more, but torch's weights-only loader refuses it.
                        let len = u8::try_from(bytes.len()).map_err(|_| {
                            unsupported(format!(
                                "value {name:?}: an integer of {} bytes is too large for \
                                 torch's weights-only loader",
                                bytes.len()
                            ))
                        })?;
                        self.buf.extend_from_slice(&[LONG1, len]);
                        self.buf.extend_from_slice(&bytes);
                    }
                }
            }
            Value::Float(f) => {
                self.op(BINFLOAT);
                self.buf.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => self.str(s)?,
            Value::Bytes(b) => self.bytes(b)?,
        }
        Ok(())
    }

    /// Bytes as protocol 2 writes them: `_codecs.encode(<latin-1 text>, 'latin1')`. (Python
    /// writes empty bytes as `__builtin__.bytes()`, which torch's weights-only loader refuses;
    /// `_codecs.encode('', 'latin1')` gives the same `b''` and is allowed.)
    fn bytes(&mut self, b: &[u8]) -> Result<(), FormatError> {
        self.global("_codecs", "encode")?;
        let text: String = b.iter().map(|&c| char::from(c)).collect();
        self.str(&text)?;
        self.shared_str("latin1")?;
        self.op(TUPLE2);
        self.memoize()?;
        self.op(REDUCE);
        self.memoize().map(|_| ())
    }
}

/// Row-major strides in elements, as torch computes them (a zero-length dimension counts as 1),
/// or `None` if a size or stride exceeds `i64::MAX`.
fn contiguous_stride(shape: &[u64]) -> Option<Vec<u64>> {
    let limit = i64::MAX as u64;
    let mut stride = vec![0u64; shape.len()];
    let mut acc = 1u64;
    for (s, &d) in stride.iter_mut().zip(shape).rev() {
        if d > limit || acc > limit {
            return None;
        }
        *s = acc;
        acc = acc.checked_mul(d.max(1))?;
    }
    Some(stride)
}

/// Python's `pickle.encode_long`: the shortest little-endian two's complement of the integer
/// whose magnitude is `magnitude` (little-endian), empty for zero.
fn encode_long(negative: bool, magnitude: &[u8]) -> Vec<u8> {
    let mut mag: Vec<u8> = magnitude.to_vec();
    while mag.last() == Some(&0) {
        mag.pop();
    }
    if mag.is_empty() {
        return Vec::new();
    }
    // nbytes = bit_length / 8 + 1, as Python computes it from the magnitude.
    let top = mag.last().copied().unwrap_or(0);
    let nbytes = if top & 0x80 != 0 {
        mag.len() + 1
    } else {
        mag.len()
    };
    let mut out = mag;
    out.resize(nbytes, 0);
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in out.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
        let n = out.len();
        if n > 1 && out[n - 1] == 0xff && out[n - 2] & 0x80 != 0 {
            out.pop();
        }
    }
    out
}

/// Parses `[-]digits` into a sign and a little-endian magnitude.
fn parse_decimal(s: &str) -> Option<(bool, Vec<u8>)> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut mag: Vec<u8> = Vec::new();
    for c in digits.bytes() {
        let mut carry = u32::from(c - b'0');
        for b in mag.iter_mut() {
            let v = u32::from(*b) * 10 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push(carry as u8);
            carry >>= 8;
        }
    }
    Some((negative, mag))
}

/// The integer as an `i128`, if it fits.
fn to_i128(negative: bool, magnitude: &[u8]) -> Option<i128> {
    let significant = magnitude.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if significant > 16 {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..significant].copy_from_slice(&magnitude[..significant]);
    let m = u128::from_le_bytes(bytes);
    if negative {
        0i128.checked_sub_unsigned(m)
    } else {
        i128::try_from(m).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pickled(v: &Value) -> Vec<u8> {
        let mut p = Pickler::default();
        p.proto();
        p.value("v", v).unwrap();
        p.op(STOP);
        p.buf
    }

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Expected bytes from CPython's `pickle.dumps(x, protocol=2)`.
    #[test]
    fn integers_match_python() {
        let cases: &[(i128, &str)] = &[
            (0, "4b00"),
            (255, "4bff"),
            (256, "4d0001"),
            (65535, "4dffff"),
            (65536, "4a00000100"),
            (-1, "4affffffff"),
            (2147483647, "4affffff7f"),
            (2147483648, "8a050000008000"),
            (-2147483648, "4a00000080"),
            (-2147483649, "8a05ffffff7fff"),
            (9223372036854775808, "8a09000000000000008000"),
            (18446744073709551615, "8a09ffffffffffffffff00"),
            (-9223372036854775808, "8a080000000000000080"),
            (-1180591620717411303424, "8a090000000000000000c0"),
        ];
        for &(v, want) in cases {
            let mut p = Pickler::default();
            p.int(v);
            assert_eq!(p.buf, hex(want), "{v}");
        }
    }

    #[test]
    fn big_integers_match_python() {
        let two_200 = "1606938044258990275541962092341162602522202993782792835301376";
        let mut want = hex("80028a1a");
        want.extend(std::iter::repeat_n(0, 25));
        want.extend([1, b'.']);
        assert_eq!(pickled(&Value::BigInt(two_200.into())), want);
        let minus_2_255 =
            "-57896044618658097711785492504343953926634992332820282019728792003956564819968";
        let mut want = hex("80028a20");
        want.extend(std::iter::repeat_n(0, 31));
        want.extend([0x80, b'.']);
        assert_eq!(pickled(&Value::BigInt(minus_2_255.into())), want);
        // A "big" integer that fits i64 is written like any other.
        assert_eq!(
            pickled(&Value::BigInt("-1".into())),
            hex("80024affffffff2e")
        );
        assert!(matches!(
            Pickler::default().value("v", &Value::BigInt("12a".into())),
            Err(FormatError {
                kind: ErrorKind::Unsupported(_),
                ..
            })
        ));
        let huge = "9".repeat(700);
        assert!(matches!(
            Pickler::default().value("v", &Value::BigInt(huge)),
            Err(FormatError {
                kind: ErrorKind::Unsupported(_),
                ..
            })
        ));
    }

    #[test]
    fn other_values_match_python() {
        assert_eq!(pickled(&Value::Float(1.5)), hex("8002473ff80000000000002e"));
        assert_eq!(
            pickled(&Value::Str("h\u{e9}".into())),
            hex("8002580300000068c3a971002e")
        );
        assert_eq!(pickled(&Value::Bool(true)), hex("8002882e"));
        assert_eq!(pickled(&Value::None), hex("80024e2e"));
        assert_eq!(
            pickled(&Value::Bytes(b"ab\xff".to_vec())),
            hex("8002635f636f646563730a656e636f64650a710058040000006162c3bf710158060000006c6174696e3171028671035271042e")
        );
    }

    #[test]
    fn second_bytes_value_reuses_globals_and_literals() {
        // pickle.dumps([b'ab', b'cd'], 2), without the list around them.
        let mut p = Pickler::default();
        p.bytes(b"ab").unwrap();
        p.bytes(b"cd").unwrap();
        assert_eq!(
            p.buf,
            hex("635f636f646563730a656e636f64650a710058020000006162710158060000006c6174696e31710286710352710468005802000000636471056802867106527107")
        );
    }

    #[test]
    fn memo_indices_switch_to_long_form() {
        let mut p = Pickler::default();
        for _ in 0..256 {
            p.memoize().unwrap();
        }
        assert_eq!(&p.buf[p.buf.len() - 2..], &[BINPUT, 255]);
        p.memoize().unwrap();
        assert_eq!(&p.buf[p.buf.len() - 5..], &[LONG_BINPUT, 0, 1, 0, 0]);
        p.get(256);
        assert_eq!(&p.buf[p.buf.len() - 5..], &[LONG_BINGET, 0, 1, 0, 0]);
    }

    #[test]
    fn strides_are_torchs() {
        assert_eq!(contiguous_stride(&[]), Some(vec![]));
        assert_eq!(contiguous_stride(&[4, 3]), Some(vec![3, 1]));
        assert_eq!(contiguous_stride(&[0, 4]), Some(vec![4, 1]));
        assert_eq!(contiguous_stride(&[3, 0, 2]), Some(vec![2, 2, 1]));
        assert_eq!(contiguous_stride(&[u64::MAX]), None);
        assert_eq!(contiguous_stride(&[0, 1 << 40, 1 << 40]), None);
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_decimal("256"), Some((false, vec![0, 1])));
        assert_eq!(parse_decimal("-0"), Some((true, vec![])));
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("-"), None);
        assert_eq!(to_i128(true, &[0, 1]), Some(-256));
        assert_eq!(encode_long(false, &[]), Vec::<u8>::new());
    }
}
