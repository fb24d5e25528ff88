//! The GGUF writer: any [`TensorSource`] to a version-3 GGUF file, plain or quantized, and
//! `convert` to GGUF with verification.
//!
//! # Why it is written this way
//! The output depends only on the source's tensors (in the source's order), its metadata and
//! the target type, so the same input always gives the same bytes. The layout is the one ggml
//! and gguf-py write (and the only one ggml reads): infos in data order, every tensor at an
//! offset that is a multiple of 32, zero padding after each one, the last included. Tensor names
//! are kept; shapes are written reversed (`ne[0]` is the innermost dimension).
//!
//! Quantizing ([`TargetType::Q8_0`], [`TargetType::Q4_0`]) follows llama-quantize `--pure`:
//! float tensors of rank 2 or more whose rows are whole blocks are quantized, other float
//! tensors are stored F32, integer tensors as they are. The quantizers are ggml's reference
//! ones (see `quant/legacy.rs`), so the bytes are llama.cpp's.
//!
//! Verification re-opens the finished file with the full reader, checks every tensor's name,
//! type and shape, compares a SHA-256 of its stored bytes with the one taken of the bytes the
//! writer produced (so a quantized tensor dequantizes exactly to what the quantizer made), and
//! reports the quantization error against the input.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::error::GgufError;
use super::file::GgufFile;
use super::parse::{align_up, DEFAULT_ALIGNMENT, MAX_NAME};
use super::quant::{dequantize, quantize};
use super::types::GgmlType;
use super::value::{MetaArray, MetaValue};
use super::{MAGIC, WRITE_VERSION};
use crate::detect::extension_mismatch;
use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::fsutil::{atomic_write, atomic_write_checked};
use crate::tensor::{TensorInfo, TensorSource};
use crate::{detect, open, Format, Progress, VALUES_METADATA_KEY};

/// What `--type` asks the tensors to be stored as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetType {
    /// Every tensor in its own type (which GGUF must have).
    #[default]
    Keep,
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
}

impl TargetType {
    /// `keep`, `f32`, `f16`, `bf16`, `q8_0`, `q4_0`.
    pub fn name(self) -> &'static str {
        match self {
            TargetType::Keep => "keep",
            TargetType::F32 => "f32",
            TargetType::F16 => "f16",
            TargetType::BF16 => "bf16",
            TargetType::Q8_0 => "q8_0",
            TargetType::Q4_0 => "q4_0",
        }
    }

    fn ggml(self) -> Option<GgmlType> {
        Some(match self {
            TargetType::Keep => return None,
            TargetType::F32 => GgmlType::F32,
            TargetType::F16 => GgmlType::F16,
            TargetType::BF16 => GgmlType::BF16,
            TargetType::Q8_0 => GgmlType::Q8_0,
            TargetType::Q4_0 => GgmlType::Q4_0,
        })
    }

    /// llama.cpp's `general.file_type` (`llama_ftype`) for a file mostly of this type.
    fn file_type(self) -> Option<u32> {
        Some(match self {
            TargetType::Keep => return None,
            TargetType::F32 => 0,
            TargetType::F16 => 1,
            TargetType::Q4_0 => 2,
            TargetType::Q8_0 => 7,
            TargetType::BF16 => 32,
        })
    }
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TargetType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "keep" => TargetType::Keep,
            "f32" => TargetType::F32,
            "f16" => TargetType::F16,
            "bf16" => TargetType::BF16,
            "q8_0" => TargetType::Q8_0,
            "q4_0" => TargetType::Q4_0,
            _ => {
                return Err(format!(
                    "unknown GGUF type {s:?} (expected f32, f16, bf16, q8_0 or q4_0)"
                ))
            }
        })
    }
}

/// One tensor as it will be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
    pub offset: u64,
    pub nbytes: u64,
}

/// What [`write_gguf`] wrote: the plan, the metadata, a SHA-256 of each tensor's stored bytes,
/// and the quantization error against the input.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub tensors: Vec<Planned>,
    pub kv: Vec<(String, MetaValue)>,
    pub digests: Vec<[u8; 32]>,
    pub bytes: u64,
    pub error: QuantError,
}

/// How far quantized tensors are from the input.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QuantError {
    /// Tensors that were quantized.
    pub tensors: usize,
    /// The largest `|x - q(x)|` over their elements.
    pub max_abs: f64,
    /// `sqrt(sum (x - q(x))^2 / sum x^2)` over their elements (0 when all are zero).
    pub relative: f64,
    sum_err2: f64,
    sum_x2: f64,
}

impl QuantError {
    fn add(&mut self, x: &[f32], q: &[f32]) {
        self.tensors += 1;
        for (&a, &b) in x.iter().zip(q) {
            let e = f64::from(a) - f64::from(b);
            self.max_abs = self.max_abs.max(e.abs());
            self.sum_err2 += e * e;
            self.sum_x2 += f64::from(a) * f64::from(a);
        }
        self.relative = if self.sum_x2 > 0.0 {
            (self.sum_err2 / self.sum_x2).sqrt()
        } else {
            0.0
        };
    }
}

/// The ggml type `info` is stored as under `target`.
pub fn plan_type(info: &TensorInfo, target: TargetType) -> Result<GgmlType, GgufError> {
    let unsupported = || GgufError::UnsupportedDType {
        tensor: info.name.clone(),
        dtype: info.dtype.to_string(),
    };
    let own = GgmlType::from_dtype(info.dtype).ok_or_else(unsupported)?;
    let float = matches!(
        own,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::F64
    );
    let Some(want) = target.ggml() else {
        return Ok(own);
    };
    if !float {
        return Ok(own);
    }
    if !want.is_quantized() {
        return Ok(want);
    }
    let row = info.shape.last().copied().unwrap_or(1);
    if info.shape.len() >= 2 && row.is_multiple_of(want.block_size()) {
        Ok(want)
    } else {
        Ok(GgmlType::F32)
    }
}

/// Which float tensors are stored F32 whatever the target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KeepF32 {
    /// Only those the target cannot hold: under a quantized target, tensors of rank below 2
    /// or whose rows are not whole blocks (llama-quantize `--pure`).
    #[default]
    Pure,
    /// Also those llama.cpp's own converter (`convert_hf_to_gguf.py`) always stores F32:
    /// tensors of rank 1 or less, `*_norm.weight`, `*.ssm_conv1d.weight`, and every tensor
    /// whose name does not end in `.weight` (`ssm_a`, `ssm_d`, biases). llama.cpp's CPU
    /// kernels for these (`ssm_conv` among them) take F32 only, so a bf16 or f16 file that
    /// stores them at 16 bits aborts in llama.cpp.
    LlamaCpp,
}

impl KeepF32 {
    fn keeps(self, info: &TensorInfo) -> bool {
        match self {
            KeepF32::Pure => false,
            KeepF32::LlamaCpp => {
                info.shape.len() <= 1
                    || info.name.ends_with("_norm.weight")
                    || info.name.ends_with(".ssm_conv1d.weight")
                    || !info.name.ends_with(".weight")
            }
        }
    }
}

/// Lays out `src` under `target`: types, `ne` and offsets.
pub fn plan(src: &dyn TensorSource, target: TargetType) -> Result<Vec<Planned>, GgufError> {
    plan_with(src, target, KeepF32::Pure)
}

/// [`plan`], with the float tensors `keep` names stored F32.
pub fn plan_with(
    src: &dyn TensorSource,
    target: TargetType,
    keep: KeepF32,
) -> Result<Vec<Planned>, GgufError> {
    let mut offset = 0u64;
    let mut out = Vec::with_capacity(src.tensors().len());
    for info in src.tensors() {
        if info.name.is_empty() {
            return Err(GgufError::EmptyName {
                index: out.len() as u64,
            });
        }
        if info.name.len() as u64 > MAX_NAME {
            return Err(GgufError::NameTooLong {
                tensor: info.name.clone(),
                len: info.name.len() as u64,
            });
        }
        if info.shape.len() > 4 {
            return Err(GgufError::RankTooHigh {
                tensor: info.name.clone(),
                rank: info.shape.len(),
            });
        }
        let ty = match plan_type(info, target)? {
            GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_0
                if target.ggml().is_some() && keep.keeps(info) =>
            {
                GgmlType::F32
            }
            ty => ty,
        };
        let ne: Vec<u64> = info.shape.iter().rev().copied().collect();
        let overflow = || GgufError::ShapeOverflow {
            tensor: info.name.clone(),
        };
        let nbytes = ty.nbytes(&ne).ok_or_else(overflow)?;
        out.push(Planned {
            name: info.name.clone(),
            ty,
            ne,
            offset,
            nbytes,
        });
        offset = offset
            .checked_add(nbytes)
            .and_then(|n| align_up(n, DEFAULT_ALIGNMENT))
            .ok_or_else(overflow)?;
    }
    Ok(out)
}

/// The metadata to write for `src`: `base` (a GGUF source's own key/values, in order; for other
/// sources its string metadata as string keys), less the keys the writer sets itself, then
/// tantra's non-tensor values, `general.file_type` and, for quantized output,
/// `general.quantization_version`.
pub fn metadata_for(
    src: &dyn TensorSource,
    base: Option<&[(String, MetaValue)]>,
    target: TargetType,
    planned: &[Planned],
) -> Vec<(String, MetaValue)> {
    const OWN: [&str; 4] = [
        "general.alignment",
        "general.file_type",
        "general.quantization_version",
        VALUES_METADATA_KEY,
    ];
    let mut kv: Vec<(String, MetaValue)> = match base {
        Some(b) => b.to_vec(),
        None => src
            .metadata()
            .iter()
            .map(|(k, v)| (k.clone(), MetaValue::Str(v.clone())))
            .collect(),
    };
    kv.retain(|(k, _)| !k.is_empty() && !OWN.contains(&k.as_str()));
    if !src.values().is_empty() {
        let obj: serde_json::Map<String, serde_json::Value> = src
            .values()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect();
        let text = serde_json::Value::Object(obj).to_string();
        kv.push((VALUES_METADATA_KEY.into(), MetaValue::Str(text)));
    }
    if let Some(ft) = target.file_type() {
        kv.push(("general.file_type".into(), MetaValue::U32(ft)));
    }
    if planned.iter().any(|p| p.ty.is_quantized()) {
        kv.push(("general.quantization_version".into(), MetaValue::U32(2)));
    }
    kv
}

/// Appends the encoding of a string.
fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends the encoding of `v` (type id, then the value).
pub fn encode_value(buf: &mut Vec<u8>, v: &MetaValue) {
    buf.extend_from_slice(&v.type_id().to_le_bytes());
    match v {
        MetaValue::U8(x) => buf.push(*x),
        MetaValue::I8(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => buf.push(u8::from(*x)),
        MetaValue::Str(s) => put_str(buf, s),
        MetaValue::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Array(a) => {
            buf.extend_from_slice(&a.element_type().to_le_bytes());
            buf.extend_from_slice(&(a.len() as u64).to_le_bytes());
            macro_rules! each {
                ($v:expr) => {
                    for x in $v {
                        buf.extend_from_slice(&x.to_le_bytes());
                    }
                };
            }
            match a {
                MetaArray::U8(v) => buf.extend_from_slice(v),
                MetaArray::I8(v) => each!(v),
                MetaArray::U16(v) => each!(v),
                MetaArray::I16(v) => each!(v),
                MetaArray::U32(v) => each!(v),
                MetaArray::I32(v) => each!(v),
                MetaArray::F32(v) => each!(v),
                MetaArray::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
                MetaArray::Str(v) => v.iter().for_each(|s| put_str(buf, s)),
                MetaArray::U64(v) => each!(v),
                MetaArray::I64(v) => each!(v),
                MetaArray::F64(v) => each!(v),
            }
        }
    }
}

/// The header: magic, version, counts, key/values, tensor infos, padding to the alignment.
pub fn encode_header(kv: &[(String, MetaValue)], tensors: &[Planned]) -> Vec<u8> {
    let mut buf = Vec::new();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&WRITE_VERSION.to_le_bytes());
    buf.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    buf.extend_from_slice(&(kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        put_str(&mut buf, k);
        encode_value(&mut buf, v);
    }
    for t in tensors {
        put_str(&mut buf, &t.name);
        buf.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
        for d in &t.ne {
            buf.extend_from_slice(&d.to_le_bytes());
        }
        buf.extend_from_slice(&t.ty.id().to_le_bytes());
        buf.extend_from_slice(&t.offset.to_le_bytes());
    }
    let padded = buf.len().next_multiple_of(DEFAULT_ALIGNMENT as usize);
    buf.resize(padded, 0);
    buf
}

/// The values of a float tensor's bytes as f32 (`None` for a non-float dtype).
fn to_f32(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        DType::F64 => bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a) as f32
            })
            .collect(),
        _ => return None,
    })
}

/// The stored bytes of tensor `index` of `src` as `p` plans it; quantized tensors add their
/// error to `err`.
fn tensor_data(
    src: &dyn TensorSource,
    index: usize,
    p: &Planned,
    err: &mut QuantError,
) -> Result<Vec<u8>, FormatError> {
    let info = src.tensors().get(index).ok_or_else(|| FormatError {
        path: None,
        kind: GgufError::NoSuchTensor { index }.into(),
    })?;
    let bytes = src.tensor_bytes(index)?;
    if bytes.len() as u64 != info.byte_len().unwrap_or(u64::MAX) {
        return Err(FormatError {
            path: None,
            kind: GgufError::SourceLength {
                tensor: info.name.clone(),
                got: bytes.len() as u64,
                expected: info.byte_len().unwrap_or(0),
            }
            .into(),
        });
    }
    if GgmlType::from_dtype(info.dtype) == Some(p.ty) {
        return Ok(bytes.into_owned());
    }
    let cannot = || FormatError {
        path: None,
        kind: GgufError::UnsupportedDType {
            tensor: info.name.clone(),
            dtype: info.dtype.to_string(),
        }
        .into(),
    };
    let x = to_f32(info.dtype, &bytes).ok_or_else(cannot)?;
    drop(bytes);
    Ok(match p.ty {
        GgmlType::F32 => x.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => x
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
        GgmlType::BF16 => x
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        ty => {
            let mut q = Vec::new();
            if !quantize(ty, &x, &mut q) {
                return Err(cannot());
            }
            let mut back = Vec::with_capacity(x.len());
            dequantize(ty, &q, &mut back);
            err.add(&x, &back);
            q
        }
    })
}

/// Writes `src` as GGUF with metadata `kv` and tensors laid out by `planned` (see [`plan`],
/// [`metadata_for`]).
///
/// # Errors
/// A source error, a source tensor of the wrong length, and write errors.
pub fn write_gguf(
    out: &mut dyn Write,
    src: &dyn TensorSource,
    kv: Vec<(String, MetaValue)>,
    planned: Vec<Planned>,
    progress: &dyn Progress,
) -> Result<Written, FormatError> {
    let io = |e: std::io::Error| FormatError {
        path: None,
        kind: e.into(),
    };
    let header = encode_header(&kv, &planned);
    out.write_all(&header).map_err(io)?;
    let mut written = header.len() as u64;
    let total: u64 = planned.iter().map(|p| p.nbytes).sum();
    progress.begin("writing GGUF", total);
    let mut err = QuantError::default();
    let mut digests = Vec::with_capacity(planned.len());
    for (i, p) in planned.iter().enumerate() {
        let data = tensor_data(src, i, p, &mut err)?;
        digests.push(Sha256::digest(&data).into());
        out.write_all(&data).map_err(io)?;
        let pad = data.len().next_multiple_of(DEFAULT_ALIGNMENT as usize) - data.len();
        out.write_all(&[0u8; DEFAULT_ALIGNMENT as usize][..pad])
            .map_err(io)?;
        written += (data.len() + pad) as u64;
        progress.advance(p.nbytes);
    }
    progress.end();
    Ok(Written {
        tensors: planned,
        kv,
        digests,
        bytes: written,
        error: err,
    })
}

/// How to convert to GGUF.
#[derive(Debug, Clone, Default)]
pub struct GgufOptions {
    pub target: TargetType,
    /// Replace an existing output.
    pub force: bool,
    /// Re-read the output and check every tensor (default in the CLI).
    pub verify: bool,
    /// Float tensors stored F32 whatever `target` ([`KeepF32::Pure`] unless set).
    pub keep_f32: KeepF32,
}

/// What a conversion to GGUF did.
#[derive(Debug, Clone)]
pub struct GgufConvertReport {
    pub input_format: Format,
    pub target: TargetType,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes_written: u64,
    pub verified: bool,
    /// Tensors by the ggml type they were stored as.
    pub types: BTreeMap<String, usize>,
    /// The quantization error against the input (zeros when nothing was quantized).
    pub error: QuantError,
    pub warnings: Vec<String>,
}

/// Converts `input` (any readable format) to the GGUF file `output`.
///
/// # Errors
/// An unreadable input, an output that exists without `force`, a tensor GGUF cannot hold, a
/// failed write or a failed verification; nothing is left under `output` then.
pub fn convert_to_gguf(
    input: &Path,
    output: &Path,
    opts: &GgufOptions,
    progress: &dyn Progress,
) -> Result<GgufConvertReport, FormatError> {
    if !opts.force && output.exists() {
        return Err(FormatError::new(output, ErrorKind::Exists));
    }
    if let (Ok(a), Ok(b)) = (input.canonicalize(), output.canonicalize()) {
        if a == b {
            return Err(FormatError::new(
                output,
                ErrorKind::Unsupported("the output is the input file".into()),
            ));
        }
    }
    let gguf_in;
    let other_in;
    let (src, base): (&dyn TensorSource, Option<&[(String, MetaValue)]>) =
        if detect(input)? == Format::Gguf {
            gguf_in = GgufFile::open(input)?;
            (&gguf_in, Some(&gguf_in.header().kv))
        } else {
            other_in = open(input)?;
            (other_in.as_ref(), None)
        };
    let mut warnings = Vec::new();
    if let Some(w) = extension_mismatch(input, src.format()) {
        warnings.push(w);
    }
    let (bytes_written, written) =
        write_gguf_file(src, base, output, opts, progress).map_err(|e| e.with_path(input))?;
    let mut types = BTreeMap::new();
    for p in &written.tensors {
        *types.entry(p.ty.name().to_string()).or_insert(0) += 1;
    }
    Ok(GgufConvertReport {
        input_format: src.format(),
        target: opts.target,
        tensors: src.tensors().len(),
        parameters: src.parameter_count(),
        bytes_written,
        verified: opts.verify,
        types,
        error: written.error,
        warnings,
    })
}

/// Writes `src` to the GGUF file `output` with metadata `base` (see [`metadata_for`]) under
/// `opts`, atomically, and with `opts.verify` checks it before it takes the name
/// ([`verify_written`]). Returns the bytes written and what was written.
///
/// # Errors
/// A tensor GGUF cannot hold (the error names no file: the caller adds the input's), an output
/// that exists without `opts.force`, a failed write or verification.
pub fn write_gguf_file(
    src: &dyn TensorSource,
    base: Option<&[(String, MetaValue)]>,
    output: &Path,
    opts: &GgufOptions,
    progress: &dyn Progress,
) -> Result<(u64, Written), FormatError> {
    let planned = plan_with(src, opts.target, opts.keep_f32).map_err(|e| FormatError {
        path: None,
        kind: e.into(),
    })?;
    let kv = metadata_for(src, base, opts.target, &planned);
    let slot: RefCell<Option<Written>> = RefCell::new(None);
    let write = |w: &mut crate::fsutil::FileWriter<'_>| {
        let done = write_gguf(w, src, kv, planned, progress)?;
        let bytes = done.bytes;
        *slot.borrow_mut() = Some(done);
        Ok(bytes)
    };
    let bytes_written = if opts.verify {
        atomic_write_checked(output, opts.force, write, |tmp| {
            match slot.borrow().as_ref() {
                Some(w) => verify_written(tmp, w, src).map_err(|e| e.with_path(output)),
                None => Err(FormatError::new(
                    output,
                    ErrorKind::Verify("nothing was written".into()),
                )),
            }
        })?
    } else {
        atomic_write(output, opts.force, write)?
    };
    Ok((bytes_written, slot.into_inner().unwrap_or_default()))
}

/// Re-opens the written file `path` and checks it against what the writer produced.
pub fn verify_written(path: &Path, w: &Written, src: &dyn TensorSource) -> Result<(), FormatError> {
    let fail = |msg: String| FormatError::new(path, ErrorKind::Verify(msg));
    let back = GgufFile::open(path)?;
    let h = back.header();
    if h.tensors.len() != w.tensors.len() {
        return Err(fail(format!(
            "{} tensors written, {} read back",
            w.tensors.len(),
            h.tensors.len()
        )));
    }
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for ((k, v), (k2, v2)) in w.kv.iter().zip(&h.kv) {
        ours.clear();
        theirs.clear();
        encode_value(&mut ours, v);
        encode_value(&mut theirs, v2);
        if k != k2 || ours != theirs {
            return Err(fail(format!("metadata {k:?} did not read back as written")));
        }
    }
    if w.kv.len() != h.kv.len() {
        return Err(fail("the metadata did not read back as written".into()));
    }
    for (i, (p, t)) in w.tensors.iter().zip(&h.tensors).enumerate() {
        if p.name != t.name || p.ty != t.ty || p.ne != t.ne || p.offset != t.offset {
            return Err(fail(format!(
                "tensor {:?} did not read back as written",
                p.name
            )));
        }
        let digest: [u8; 32] = Sha256::digest(back.raw_bytes(i)?).into();
        if w.digests.get(i) != Some(&digest) {
            return Err(fail(format!(
                "tensor {:?}: the stored bytes differ from what was written",
                p.name
            )));
        }
    }
    let json = |m: &BTreeMap<String, crate::Value>| {
        m.iter()
            .map(|(k, v)| (k.clone(), v.to_json().to_string()))
            .collect::<Vec<_>>()
    };
    if json(back.values()) != json(src.values()) {
        return Err(fail(
            "the non-tensor values did not read back as written".into(),
        ));
    }
    Ok(())
}
