//! Opening a PyTorch file as a [`TensorSource`]: find the storages the pickle names (zip records
//! `data/<key>` or the raw storages of a legacy file), check every view against the bytes that
//! exist, and serve tensors row-major, borrowed from the memory map or materialized once.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::hash::BuildHasher;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::detect::{detect_bytes, Detected, NotWeights, DETECT_PREFIX};
use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::mmap::{sub_range, Backing};
use crate::pickle::{
    self, ElementType, Leaf, Limits, NdArray, NdData, ParseOptions, PersistentIds, Pickle,
    PickleError, StorageRef,
};
use crate::structure::Structure;
use crate::tensor::{
    bool_chunk, normalized_bools, range_outside, sink_part, TensorInfo, TensorSource, Value,
};
use crate::zip::ZipArchive;
use crate::Format;

use super::legacy::parse_legacy;
use super::PytorchError;

/// Views larger than their storage (stride-0 expansions) are refused past this many bytes in
/// all (a stride-0 view of one element could otherwise claim terabytes, and 400 views just
/// under a per-view cap would still add up to 100 GB).
pub(super) const MAX_AMPLIFIED_BYTES: u64 = 256 << 20;
/// The bytes of all tensors, counted once per name, may reach this many times the file's
/// length plus [`VIEW_BYTES_EXTRA`]: tied weights and views repeat a few storages; one
/// storage read through 50,000 names is a file that writes 50 GB from 1 MB.
pub(super) const VIEW_BYTES_PER_FILE_BYTE: u64 = 4;
pub(super) const VIEW_BYTES_EXTRA: u64 = 1 << 30;

/// Where a tensor's storage bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Source {
    /// A byte range of the memory map.
    Map { start: usize, len: usize },
    /// An owned buffer (numpy arrays from the pickle), already row-major little-endian.
    Owned(usize),
}

/// How to produce one tensor's row-major bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Plan {
    source: Source,
    elsize: usize,
    /// First element, in elements.
    offset: u64,
    shape: Vec<u64>,
    /// Strides in elements; 0 for dimensions of size 1.
    stride: Vec<u64>,
    /// Bytes to reverse per unit when the file is big-endian (0: none).
    swap_unit: usize,
}

impl Plan {
    fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// The byte range within the storage, when the view is row-major contiguous.
    fn contiguous_range(&self) -> Option<(usize, usize)> {
        let numel = self.numel();
        if numel == 0 {
            return Some((0, 0));
        }
        let mut expected = 1u64;
        for (&d, &s) in self.shape.iter().zip(&self.stride).rev() {
            if d != 1 && s != expected {
                return None;
            }
            expected = expected.checked_mul(d)?;
        }
        let start = usize::try_from(self.offset.checked_mul(self.elsize as u64)?).ok()?;
        let len = usize::try_from(numel.checked_mul(self.elsize as u64)?).ok()?;
        Some((start, start.checked_add(len)?))
    }

    /// Copies the view out of `storage` row-major. The view was bounds-checked at open.
    fn materialize(&self, storage: &[u8]) -> Option<Vec<u8>> {
        let es = self.elsize;
        let numel = usize::try_from(self.numel()).ok()?;
        let mut out = Vec::with_capacity(numel.checked_mul(es)?);
        if numel > 0 {
            let rank = self.shape.len();
            let elem = |i: u64| -> Option<&[u8]> {
                let s = usize::try_from(i).ok()?.checked_mul(es)?;
                storage.get(s..s.checked_add(es)?)
            };
            if rank == 0 {
                out.extend_from_slice(elem(self.offset)?);
            } else {
                let (last_d, last_s) = (self.shape[rank - 1], self.stride[rank - 1]);
                let mut idx = vec![0u64; rank - 1];
                let mut base = self.offset;
                loop {
                    if last_s == 1 {
                        let s = usize::try_from(base).ok()?.checked_mul(es)?;
                        let n = usize::try_from(last_d).ok()?.checked_mul(es)?;
                        out.extend_from_slice(storage.get(s..s.checked_add(n)?)?);
                    } else {
                        for j in 0..last_d {
                            out.extend_from_slice(elem(base.checked_add(j.checked_mul(last_s)?)?)?);
                        }
                    }
                    // Odometer over the outer dimensions.
                    let mut d = rank - 1;
                    loop {
                        if d == 0 {
                            return self.finish(out);
                        }
                        d -= 1;
                        idx[d] += 1;
                        base = base.checked_add(self.stride[d])?;
                        if idx[d] < self.shape[d] {
                            break;
                        }
                        base = base.checked_sub(self.stride[d].checked_mul(self.shape[d])?)?;
                        idx[d] = 0;
                    }
                }
            }
        }
        self.finish(out)
    }

    fn finish(&self, mut out: Vec<u8>) -> Option<Vec<u8>> {
        if self.swap_unit > 1 {
            for unit in out.chunks_exact_mut(self.swap_unit) {
                unit.reverse();
            }
        }
        Some(out)
    }
}

/// An open PyTorch file (zip archive or legacy).
pub struct PytorchFile {
    path: Option<PathBuf>,
    backing: Backing,
    format: Format,
    infos: Vec<TensorInfo>,
    same_as: Vec<Option<usize>>,
    plans: Vec<Plan>,
    owned: Vec<Vec<u8>>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
    structure: Option<Structure>,
}

/// Storage byte ranges by key, as the container lays them out.
pub(super) type Records = HashMap<String, (usize, usize)>;

pub(super) fn map_file(path: &Path) -> Result<Backing, FormatError> {
    let file = File::open(path).map_err(|e| FormatError::new(path, e))?;
    let len = file
        .metadata()
        .map_err(|e| FormatError::new(path, e))?
        .len();
    if len == 0 {
        // mmap refuses zero-length files on some systems.
        return Err(FormatError::new(path, NotWeights::Empty));
    }
    Backing::map(&file).map_err(|e| FormatError::new(path, e))
}

/// An error about the file at `path` (`None` for bytes in memory).
pub(super) fn fe(path: Option<&Path>, kind: impl Into<ErrorKind>) -> FormatError {
    FormatError {
        path: path.map(Path::to_path_buf),
        kind: kind.into(),
    }
}

pub(super) fn pt_err(path: Option<&Path>, e: PytorchError) -> FormatError {
    fe(path, e)
}

pub(super) fn pickle_err(path: Option<&Path>, part: &str, error: PickleError) -> FormatError {
    pt_err(
        path,
        PytorchError::Pickle {
            part: part.to_string(),
            error,
        },
    )
}

/// What was read out of the pickle(s), before tensors are laid out.
pub(super) struct Parsed {
    pub(super) format: Format,
    /// Length of the whole file: the budget of bytes read through names grows with it.
    pub(super) file_len: u64,
    pub(super) pickle: Pickle,
    pub(super) part: String,
    pub(super) records: Records,
    pub(super) big_endian: bool,
}

impl PytorchFile {
    /// Opens a zip archive or legacy file (detected by content).
    ///
    /// # Errors
    /// I/O errors; files that are not PyTorch files, TorchScript programs, torch.package
    /// archives and whole pickled modules (each said so); and every broken rule of the zip
    /// container, the pickle or the storages, naming the entry, tensor or opcode offset.
    pub fn open(path: &Path) -> Result<Self, FormatError> {
        PytorchFile::from_backing(Some(path), map_file(path)?)
    }

    /// Reads a whole file held in memory (a zip archive or legacy file).
    ///
    /// # Errors
    /// As [`PytorchFile::open`], without a path.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, FormatError> {
        PytorchFile::from_backing(None, Backing::Owned(bytes))
    }

    /// The file this was opened from (`None` for [`PytorchFile::from_bytes`]).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn from_backing(path: Option<&Path>, backing: Backing) -> Result<Self, FormatError> {
        let parsed = {
            let data = backing.bytes();
            let head = &data[..data.len().min(DETECT_PREFIX)];
            match detect_bytes(head) {
                Detected::Weights(Format::PytorchZip) => parse_zip(path, data)?,
                Detected::Weights(Format::PytorchLegacy) => parse_legacy(path, data)?,
                Detected::Weights(other) => {
                    return Err(pt_err(
                        path,
                        PytorchError::NotPytorch {
                            what: format!("the content is {other}"),
                        },
                    ))
                }
                Detected::NotWeights(n) => return Err(fe(path, n)),
            }
        };
        let layout = lay_out(path, &parsed)?;
        Ok(PytorchFile {
            path: path.map(Path::to_path_buf),
            backing,
            format: parsed.format,
            infos: layout.infos,
            same_as: layout.same_as,
            plans: layout.plans,
            owned: layout.owned,
            metadata: BTreeMap::new(),
            values: layout.values,
            structure: layout.structure,
        })
    }

    fn storage(&self, index: usize, plan: &Plan) -> Result<&[u8], FormatError> {
        let bytes = match plan.source {
            Source::Map { start, len } => start
                .checked_add(len)
                .and_then(|end| self.backing.bytes().get(start..end)),
            Source::Owned(i) => self.owned.get(i).map(Vec::as_slice),
        };
        bytes.ok_or_else(|| self.outside(index))
    }

    /// The error for a view that does not fit its storage (checked at open; kept as an error
    /// rather than a panic).
    fn outside(&self, index: usize) -> FormatError {
        let tensor = self
            .infos
            .get(index)
            .map(|t| t.name.clone())
            .unwrap_or_default();
        pt_err(
            self.path.as_deref(),
            PytorchError::ViewOutsideStorage { tensor },
        )
    }

    /// The bytes of tensor `index` as one run of the memory map, where they are stored that
    /// way (contiguous, little-endian, in a storage read in place); `None` where they have to
    /// be materialized.
    fn file_run(&self, index: usize) -> Result<Option<Range<usize>>, FormatError> {
        let plan = self.plan(index)?;
        if let (Source::Map { start, .. }, Some((s, e)), true) =
            (plan.source, plan.contiguous_range(), plan.swap_unit <= 1)
        {
            // Both within the storage, which lies within the map.
            if e <= self.storage(index, plan)?.len() {
                return Ok(Some(start + s..start + e));
            }
        }
        Ok(None)
    }

    fn plan(&self, index: usize) -> Result<&Plan, FormatError> {
        self.plans
            .get(index)
            .ok_or_else(|| pt_err(self.path.as_deref(), PytorchError::NoTensor { index }))
    }
}

/// Tensor plans and values, laid out from a parsed file.
#[derive(Default)]
pub(super) struct Layout {
    infos: Vec<TensorInfo>,
    /// For each tensor, an earlier one with the same bytes (the same view of one storage).
    same_as: Vec<Option<usize>>,
    plans: Vec<Plan>,
    owned: Vec<Vec<u8>>,
    values: BTreeMap<String, Value>,
    /// The nesting, for a checkpoint that is more than a plain state dict.
    structure: Option<Structure>,
}

/// Turns the flattened pickle into tensor plans and values, checking every view against the
/// storages the container holds. `open` and `scan` both go through here, so a file that does
/// not open never scans as safe.
pub(super) fn lay_out(path: Option<&Path>, parsed: &Parsed) -> Result<Layout, FormatError> {
    let mut out = Layout::default();
    // Bytes read through names (a storage read through many names counts for each) and
    // bytes of stride-0 views larger than their storage: both bounded, so that a file of a
    // few megabytes cannot make `convert` write or `inspect --hash` read terabytes.
    let view_limit = parsed
        .file_len
        .saturating_mul(VIEW_BYTES_PER_FILE_BYTE)
        .saturating_add(VIEW_BYTES_EXTRA);
    let mut view_bytes = 0u64;
    let mut amplified = 0u64;
    let flat = parsed
        .pickle
        .flatten(&Limits::default())
        .map_err(|e| pickle_err(path, &parsed.part, e))?;
    out.structure = parsed.pickle.structure();
    for (name, leaf) in flat.entries {
        match leaf {
            Leaf::Value(v) => {
                out.values.insert(name, v);
            }
            Leaf::Tensor(t) => {
                let ElementType::DType(dtype) = t.elem else {
                    return Err(pickle_err(
                        path,
                        &parsed.part,
                        PickleError::UnsupportedDType {
                            name,
                            dtype: "complex128",
                        },
                    ));
                };
                let plan = tensor_plan(&name, t, dtype, &parsed.records, parsed.big_endian)
                    .map_err(|e| pt_err(path, e))?;
                let bytes = t.numel().saturating_mul(plan.elsize as u64);
                if let Source::Map { len, .. } = plan.source {
                    if bytes > len as u64 {
                        amplified = amplified.saturating_add(bytes);
                        if amplified > MAX_AMPLIFIED_BYTES {
                            return Err(pt_err(
                                path,
                                PytorchError::AmplifyingView {
                                    tensor: name,
                                    bytes: amplified,
                                    storage_bytes: len as u64,
                                },
                            ));
                        }
                    }
                }
                view_bytes = view_bytes.saturating_add(bytes);
                if view_bytes > view_limit {
                    return Err(pt_err(
                        path,
                        PytorchError::ViewBudget {
                            tensor: name,
                            bytes: view_bytes,
                            limit: view_limit,
                        },
                    ));
                }
                let shape = match dtype {
                    // torch's float4_e2m1fn_x2 holds two values per element (byte).
                    DType::F4 => match t.shape.split_last() {
                        Some((&last, rest)) => {
                            let mut v = rest.to_vec();
                            v.push(last.saturating_mul(2));
                            v
                        }
                        None => {
                            return Err(pickle_err(
                                path,
                                &parsed.part,
                                PickleError::UnsupportedDType {
                                    name,
                                    dtype: "float4_e2m1fn_x2 of rank 0",
                                },
                            ))
                        }
                    },
                    _ => t.shape.clone(),
                };
                out.infos.push(TensorInfo::new(name, dtype, shape));
                out.plans.push(plan);
            }
            Leaf::Array(a) => match numpy_tensor(&name, a).map_err(|e| pt_err(path, e))? {
                Some((dtype, bytes)) => {
                    let shape = a.shape.clone();
                    let stride = row_major_strides(&shape);
                    out.plans.push(Plan {
                        source: Source::Owned(out.owned.len()),
                        elsize: dtype.size().unwrap_or(1) as usize,
                        offset: 0,
                        shape: shape.clone(),
                        stride,
                        swap_unit: 0,
                    });
                    out.owned.push(bytes);
                    out.infos.push(TensorInfo::new(name, dtype, shape));
                }
                None => {
                    if let NdData::Raw(raw) = &a.data {
                        out.values.insert(name, Value::Bytes(raw.clone()));
                    }
                }
            },
        }
    }
    out.same_as = same_plans(&out.plans);
    Ok(out)
}

/// For each plan, the first earlier one equal to it: the same view of the same storage under
/// another name, whose bytes are the same (hashed once by `inspect --hash`). Worked out from
/// the plans' hashes sorted, 16 bytes a tensor for a moment, where a map of the plans held a
/// copy of each (about 180 bytes a tensor on a state dict of many small tensors). The hasher's
/// keys are random, so that a file cannot make many different plans share a hash.
fn same_plans(plans: &[Plan]) -> Vec<Option<usize>> {
    let state = std::collections::hash_map::RandomState::new();
    let mut keyed: Vec<(u64, usize)> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| (state.hash_one(p), i))
        .collect();
    keyed.sort_unstable();
    let mut same_as = vec![None; plans.len()];
    for run in keyed.chunk_by(|a, b| a.0 == b.0) {
        // In index order: each plan's first equal plan is the earliest of the run equal to it.
        let mut firsts: Vec<usize> = Vec::new();
        for &(_, i) in run {
            match firsts.iter().find(|&&f| plans.get(f) == plans.get(i)) {
                Some(&f) => {
                    if let Some(slot) = same_as.get_mut(i) {
                        *slot = Some(f);
                    }
                }
                None => firsts.push(i),
            }
        }
    }
    same_as
}

pub(super) fn row_major_strides(shape: &[u64]) -> Vec<u64> {
    let mut stride = vec![0u64; shape.len()];
    let mut acc = 1u64;
    for (s, &d) in stride.iter_mut().zip(shape).rev() {
        *s = if d == 1 { 0 } else { acc };
        acc = acc.saturating_mul(d);
    }
    stride
}

pub(super) fn tensor_plan(
    name: &str,
    t: &pickle::TensorRef,
    dtype: DType,
    records: &Records,
    big_endian: bool,
) -> Result<Plan, PytorchError> {
    let storage: &StorageRef = &t.storage;
    let &(start, len) = records
        .get(&storage.key)
        .ok_or_else(|| PytorchError::MissingStorage {
            tensor: name.to_string(),
            key: storage.key.clone(),
        })?;
    let expected = storage.byte_len().unwrap_or(u64::MAX);
    if expected != len as u64 {
        return Err(PytorchError::StorageSize {
            tensor: name.to_string(),
            key: storage.key.clone(),
            expected,
            actual: len as u64,
        });
    }
    // The view was checked against the storage when the tensor was rebuilt; views larger
    // than their storage are bounded in total by `lay_out`.
    let elsize = dtype.size().unwrap_or(1);
    let stride = t
        .shape
        .iter()
        .zip(&t.stride)
        .map(|(&d, &s)| if d == 1 { 0 } else { s })
        .collect();
    let swap_unit = match (big_endian, dtype) {
        (false, _) => 0,
        (true, DType::C64) => 4,
        (true, d) => d.size().unwrap_or(1) as usize,
    };
    Ok(Plan {
        source: Source::Map { start, len },
        elsize: elsize as usize,
        offset: t.offset,
        shape: t.shape.clone(),
        stride,
        swap_unit,
    })
}

/// The row-major little-endian bytes of a numpy array, or `None` when its dtype has no
/// safetensors equivalent (it then travels as bytes among the values).
pub(super) fn numpy_tensor(
    name: &str,
    a: &NdArray,
) -> Result<Option<(DType, Vec<u8>)>, PytorchError> {
    let (Some(dtype), NdData::Raw(raw)) = (a.dtype.dtype(), &a.data) else {
        return Ok(None);
    };
    let bad = |why| PytorchError::BadNumpyArray {
        name: name.to_string(),
        why,
    };
    let elsize = dtype.size().unwrap_or(1) as usize;
    let swap_unit = match (a.dtype.big_endian(), dtype) {
        (false, _) => 0,
        (true, DType::C64) => 4,
        (true, _) => elsize,
    };
    let stride = if a.fortran_order {
        // Column-major: the first dimension varies fastest.
        let mut acc = 1u64;
        a.shape
            .iter()
            .map(|&d| {
                let s = if d == 1 { 0 } else { acc };
                acc = acc.saturating_mul(d);
                s
            })
            .collect()
    } else {
        row_major_strides(&a.shape)
    };
    let plan = Plan {
        source: Source::Owned(0),
        elsize,
        offset: 0,
        shape: a.shape.clone(),
        stride,
        swap_unit,
    };
    let bytes = plan
        .materialize(raw)
        .ok_or(bad("the data does not match its shape"))?;
    Ok(Some((dtype, bytes)))
}

pub(super) fn parse_zip(path: Option<&Path>, data: &[u8]) -> Result<Parsed, FormatError> {
    let zip = ZipArchive::parse(data).map_err(|e| fe(path, e))?;
    classify_archive(&zip).map_err(|e| pt_err(path, e))?;
    let pkl = zip
        .get("data.pkl")
        .ok_or_else(|| pt_err(path, PytorchError::MissingRecord { name: "data.pkl" }))?;
    let version = zip
        .get("version")
        .or_else(|| zip.get(".data/version"))
        .ok_or_else(|| pt_err(path, PytorchError::MissingRecord { name: "version" }))?;
    let vtext = String::from_utf8_lossy(zip.data(data, version).map_err(|e| fe(path, e))?)
        .trim()
        .to_string();
    match vtext.parse::<u32>() {
        Ok(1..=10) => {}
        _ => return Err(pt_err(path, PytorchError::BadVersion { value: vtext })),
    }
    let big_endian = match zip.get("byteorder") {
        None => false,
        Some(e) => {
            let text = zip.data(data, e).map_err(|e| fe(path, e))?;
            match String::from_utf8_lossy(text).trim() {
                "little" => false,
                "big" => true,
                other => {
                    return Err(pt_err(
                        path,
                        PytorchError::BadByteorder {
                            value: other.to_string(),
                        },
                    ))
                }
            }
        }
    };
    let part = zip.relative_name(pkl).to_string();
    let bytes = zip.data(data, pkl).map_err(|e| fe(path, e))?;
    let pickle = Pickle::parse(bytes, &ParseOptions::new(PersistentIds::Zip))
        .map_err(|e| pickle_err(path, &part, e))?;
    let mut records = Records::new();
    for e in zip.entries() {
        if let Some(key) = zip.relative_name(e).strip_prefix("data/") {
            let start = usize::try_from(e.data_offset);
            let len = usize::try_from(e.size);
            if let (Ok(start), Ok(len)) = (start, len) {
                records.insert(key.to_string(), (start, len));
            }
        }
    }
    Ok(Parsed {
        format: Format::PytorchZip,
        file_len: data.len() as u64,
        pickle,
        part,
        records,
        big_endian,
    })
}

/// Refuses archives that are not state dicts: TorchScript, torch.package, several data.pkl.
pub(super) fn classify_archive(zip: &ZipArchive) -> Result<(), PytorchError> {
    let names: Vec<&str> = zip.entries().iter().map(|e| zip.relative_name(e)).collect();
    if names
        .iter()
        .any(|n| *n == "constants.pkl" || n.starts_with("code/"))
    {
        return Err(PytorchError::TorchScript);
    }
    if names.contains(&".data/extern_modules") {
        return Err(PytorchError::TorchPackage);
    }
    let count = names
        .iter()
        .filter(|n| **n == "data.pkl" || n.ends_with("/data.pkl"))
        .count();
    if count > 1 {
        return Err(PytorchError::MultipleDataPkl { count });
    }
    Ok(())
}

impl TensorSource for PytorchFile {
    fn format(&self) -> Format {
        self.format
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    /// Bool bytes other than 0 and 1 read as true and come out as 1 (torch reads any non-zero
    /// byte of a `BoolStorage` as `True`), as for safetensors.
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let bytes = self.raw_tensor_bytes(index)?;
        if self.is_bool(index) {
            if let Some(n) = normalized_bools(&bytes) {
                return Ok(Cow::Owned(n));
            }
        }
        Ok(bytes)
    }

    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        if self.is_bool(index) {
            return self.stream_raw(index, &mut |c| bool_chunk(c, sink));
        }
        self.stream_raw(index, sink)
    }

    fn stream_tensor_range(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        if self.is_bool(index) {
            return self.stream_raw_range(index, range, &mut |c| bool_chunk(c, sink));
        }
        self.stream_raw_range(index, range, sink)
    }

    fn same_bytes_as(&self, index: usize) -> Option<usize> {
        self.same_as.get(index).copied().flatten()
    }

    fn file_range(&self, index: usize) -> Option<Range<u64>> {
        // A bool tensor whose bytes are not all 0/1 is not handed out as it is stored.
        if self.is_bool(index) && !matches!(self.tensor_bytes(index), Ok(Cow::Borrowed(_))) {
            return None;
        }
        match &self.backing {
            Backing::Map(_) => match self.file_run(index) {
                Ok(Some(r)) => Some(r.start as u64..r.end as u64),
                _ => None,
            },
            Backing::Owned(_) => None,
        }
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

impl PytorchFile {
    fn is_bool(&self, index: usize) -> bool {
        self.infos
            .get(index)
            .is_some_and(|t| t.dtype == DType::Bool)
    }

    /// The bytes of a tensor as its storage holds them.
    fn raw_tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let plan = self.plan(index)?;
        let storage = self.storage(index, plan)?;
        if plan.swap_unit <= 1 {
            if let Some((s, e)) = plan.contiguous_range() {
                if let Some(b) = storage.get(s..e) {
                    return Ok(Cow::Borrowed(b));
                }
            }
        }
        plan.materialize(storage)
            .map(Cow::Owned)
            .ok_or_else(|| self.outside(index))
    }

    fn stream_raw(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        match self.file_run(index)? {
            Some(run) => self.backing.stream(run, sink, &|| self.outside(index)),
            None => sink(&self.raw_tensor_bytes(index)?),
        }
    }

    fn stream_raw_range(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let outside = || range_outside(self.path.as_deref(), &self.infos, index, &range);
        match self.file_run(index)? {
            Some(run) => {
                let part = sub_range(&run, &range).ok_or_else(outside)?;
                self.backing.stream(part, sink, &|| self.outside(index))
            }
            None => sink_part(&self.raw_tensor_bytes(index)?, &range, outside, sink),
        }
    }
}
