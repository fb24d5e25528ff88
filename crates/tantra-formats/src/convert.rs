//! Conversion between formats, with verification.
//!
//! A conversion streams: the writer pulls one tensor at a time from the reader, so peak memory
//! is bounded by the largest tensor (and for memory-mapped inputs not even that). Each tensor
//! is hashed as the writer pulls it; after the output is in place it is re-read and every
//! tensor's hash, name, dtype and shape compared, as are the non-tensor values. Verification
//! uses BLAKE3 rather than sha256: it only has to detect a difference, and it is several times
//! faster, which keeps a verified conversion close to the cost of a copy.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use crate::detect::extension_mismatch;
use crate::error::{ErrorKind, FormatError};
use crate::fsutil::{atomic_write, CountingWriter};
use crate::tensor::{TensorInfo, TensorSource, Value};
use crate::{open, write_to, Format, OutputFormat, Progress};

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The output format; `None` takes it from the output's extension.
    pub format: Option<OutputFormat>,
    /// Replace an existing output.
    pub force: bool,
    /// Re-read the output and compare every tensor with the input (default on).
    pub verify: bool,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            format: None,
            force: false,
            verify: true,
        }
    }
}

/// What a conversion did.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub input_format: Format,
    pub output_format: OutputFormat,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes_written: u64,
    pub verified: bool,
    /// Things the user should know (an extension that disagrees with the content).
    pub warnings: Vec<String>,
}

/// Hashes each tensor as a writer pulls it.
struct HashingSource<'a> {
    inner: &'a dyn TensorSource,
    hashes: Mutex<Vec<Option<blake3::Hash>>>,
}

impl HashingSource<'_> {
    fn record(&self, index: usize, hash: blake3::Hash) {
        if let Ok(mut h) = self.hashes.lock() {
            if let Some(slot) = h.get_mut(index) {
                *slot = Some(hash);
            }
        }
    }
}

impl TensorSource for HashingSource<'_> {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn tensors(&self) -> &[TensorInfo] {
        self.inner.tensors()
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let b = self.inner.tensor_bytes(index)?;
        self.record(index, blake3::hash(&b));
        Ok(b)
    }
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let mut h = blake3::Hasher::new();
        self.inner.stream_tensor(index, &mut |chunk| {
            h.update(chunk);
            sink(chunk)
        })?;
        self.record(index, h.finalize());
        Ok(())
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        self.inner.metadata()
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        self.inner.values()
    }
}

/// BLAKE3 of one tensor, streamed.
pub fn tensor_blake3(src: &dyn TensorSource, index: usize) -> Result<blake3::Hash, FormatError> {
    let mut h = blake3::Hasher::new();
    src.stream_tensor(index, &mut |c| {
        h.update(c);
        Ok(())
    })?;
    Ok(h.finalize())
}

/// Converts `input` to `output`.
///
/// # Errors
/// An unreadable input, an output that exists without `force`, an output format that is
/// neither given nor implied by the extension, a failed write (nothing is left under the
/// output name), or a verification mismatch (the output is removed).
pub fn convert(
    input: &Path,
    output: &Path,
    opts: &ConvertOptions,
    progress: &dyn Progress,
) -> Result<ConvertReport, FormatError> {
    let format =
        match opts.format.or_else(|| OutputFormat::from_path(output)) {
            Some(f) => f,
            None => return Err(FormatError::new(
                output,
                ErrorKind::Unsupported(
                    "cannot tell the output format from the extension; use --to safetensors|pt|bin"
                        .into(),
                ),
            )),
        };
    if same_file(input, output) {
        return Err(FormatError::new(
            output,
            ErrorKind::Unsupported("the output is the input file".into()),
        ));
    }
    if !opts.force && output.exists() {
        return Err(FormatError::new(output, ErrorKind::Exists));
    }
    let src = open(input)?;
    let mut warnings = Vec::new();
    if let Some(w) = extension_mismatch(input, src.format()) {
        warnings.push(w);
    }
    let hashing = HashingSource {
        inner: src.as_ref(),
        hashes: Mutex::new(vec![None; src.tensors().len()]),
    };
    let archive = archive_name(output);
    let bytes_written = atomic_write(output, opts.force, |w| {
        let mut cw = CountingWriter::new(w);
        write_to(&mut cw, format, &hashing, &archive, progress)?;
        Ok(cw.count())
    })?;
    let hashes = hashing
        .hashes
        .into_inner()
        .map_err(|_| FormatError::memory("hash table poisoned"))?;
    if opts.verify {
        if let Err(e) = verify_output(src.as_ref(), &hashes, output) {
            // A file that does not hold what the input held must not stay under the name.
            let _ = std::fs::remove_file(output);
            return Err(e);
        }
    }
    Ok(ConvertReport {
        input_format: src.format(),
        output_format: format,
        tensors: src.tensors().len(),
        parameters: src.parameter_count(),
        bytes_written,
        verified: opts.verify,
        warnings,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// The top-level folder name torch would use for `output` (its stem), restricted to
/// characters that are safe inside a zip entry name.
pub fn archive_name(output: &Path) -> String {
    let stem = output
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("archive");
    let clean: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        "archive".into()
    } else {
        clean
    }
}

fn verify_output(
    input: &dyn TensorSource,
    input_hashes: &[Option<blake3::Hash>],
    output: &Path,
) -> Result<(), FormatError> {
    let fail = |msg: String| FormatError::new(output, ErrorKind::Verify(msg));
    let out = open(output)?;
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, t) in out.tensors().iter().enumerate() {
        by_name.insert(t.name.as_str(), i);
    }
    if out.tensors().len() != input.tensors().len() {
        return Err(fail(format!(
            "the output holds {} tensors, the input {}",
            out.tensors().len(),
            input.tensors().len()
        )));
    }
    for (i, t) in input.tensors().iter().enumerate() {
        let Some(&j) = by_name.get(t.name.as_str()) else {
            return Err(fail(format!(
                "tensor {:?} is missing from the output",
                t.name
            )));
        };
        let o = &out.tensors()[j];
        if o.dtype != t.dtype || o.shape != t.shape {
            return Err(fail(format!(
                "tensor {:?}: {} {:?} in the input, {} {:?} in the output",
                t.name, t.dtype, t.shape, o.dtype, o.shape
            )));
        }
        let want = match input_hashes.get(i).copied().flatten() {
            Some(h) => h,
            None => tensor_blake3(input, i)?,
        };
        if tensor_blake3(out.as_ref(), j)? != want {
            return Err(fail(format!(
                "tensor {:?}: the values differ from the input",
                t.name
            )));
        }
    }
    for (k, v) in input.values() {
        match out.values().get(k) {
            Some(w) if values_equal(v, w) => {}
            Some(w) => {
                return Err(fail(format!(
                    "value {k:?}: {v:?} in the input, {w:?} in the output"
                )))
            }
            None => return Err(fail(format!("value {k:?} is missing from the output"))),
        }
    }
    Ok(())
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}
