//! Conversion between formats, with verification.
//!
//! A conversion streams: the writer pulls one tensor at a time from the reader, so peak memory
//! is bounded by the largest tensor (and for memory-mapped inputs not even that). Each tensor
//! is hashed as the writer pulls it; once the output is written it is re-read and every
//! tensor's hash, name, dtype and shape compared, as are the non-tensor values. Verification
//! uses BLAKE3 rather than sha256: it only has to detect a difference, and it is several times
//! faster, which keeps a verified conversion close to the cost of a copy.
//!
//! # Where the time goes, and why it is spent this way
//! A conversion reads the input once (from the page cache, usually), hashes it, writes it, syncs
//! it and reads it back to hash it again. On a machine with two cores the hashing would be
//! about half of the CPU time, so it runs beside the work it would otherwise follow:
//! - while the writer copies a chunk of the input into the output, another thread hashes the
//!   same chunk ([`HashingSource`]);
//! - the output is verified as the temporary file, before it takes the output's name and while
//!   the last of it is synced to disk ([`atomic_write_checked`]), with its tensors hashed on up
//!   to four threads. A verification that fails therefore never replaces the file
//!   that was there.
//!
//! Threads are scoped and start per chunk or per verification; where none can be started the
//! same work runs on the calling thread.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::detect::extension_mismatch;
use crate::error::{ErrorKind, FormatError};
use crate::fsutil::{atomic_write, atomic_write_checked, CountingWriter, FileWriter};
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

/// Chunks at least this large are hashed on a second thread while the writer takes them; for
/// smaller ones starting a thread would cost more than it saves.
const PARALLEL_HASH_MIN: usize = 1 << 20;

/// The most threads that hash the output's tensors during verification. Hashing reads memory
/// as fast as one core can; beyond a few threads the memory bus, not the cores, is the limit.
const VERIFY_THREADS: usize = 4;

/// Hashes each tensor as a writer pulls it.
struct HashingSource<'a> {
    inner: &'a (dyn TensorSource + Sync),
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
        self.inner
            .stream_tensor(index, &mut |chunk| hash_beside(&mut h, chunk, &mut *sink))?;
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

/// Feeds `chunk` to `h` and to `sink`, the two at once where the chunk is large enough and a
/// thread can be started.
fn hash_beside(
    h: &mut blake3::Hasher,
    chunk: &[u8],
    sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
) -> Result<(), FormatError> {
    if chunk.len() < PARALLEL_HASH_MIN {
        h.update(chunk);
        return sink(chunk);
    }
    let beside = std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("tantra-hash".into())
            .spawn_scoped(s, || {
                h.update(chunk);
            });
        match helper {
            Ok(helper) => {
                let written = sink(chunk);
                let hashed = helper
                    .join()
                    .map_err(|_| FormatError::memory("the hashing thread panicked"));
                Some(hashed.and(written))
            }
            Err(_) => None,
        }
    });
    match beside {
        Some(done) => done,
        None => {
            h.update(chunk);
            sink(chunk)
        }
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
/// neither given nor implied by the extension, a failed write, or a verification mismatch. In
/// every case nothing new is left under the output name, and a file that was there with
/// `force` is still there: verification reads the finished temporary file before the rename.
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
    // Without verification nothing needs the hashes: write straight from the input.
    let pulled: &dyn TensorSource = if opts.verify { &hashing } else { src.as_ref() };
    let write = |w: &mut FileWriter<'_>| {
        let mut cw = CountingWriter::new(w);
        write_to(&mut cw, format, pulled, &archive, progress)?;
        Ok(cw.count())
    };
    // The check runs on the finished temporary file, before it takes the output's name.
    let check = |written: &Path| {
        let hashes = hashing
            .hashes
            .lock()
            .map_err(|_| FormatError::memory("hash table poisoned"))?
            .clone();
        verify_output(src.as_ref(), &hashes, written, output)
    };
    let bytes_written = if opts.verify {
        atomic_write_checked(output, opts.force, write, check)?
    } else {
        atomic_write(output, opts.force, write)?
    };
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

/// Re-reads the output written to `written` (to be named `output`, which errors name) and
/// compares it with the input.
fn verify_output(
    input: &(dyn TensorSource + Sync),
    input_hashes: &[Option<blake3::Hash>],
    written: &Path,
    output: &Path,
) -> Result<(), FormatError> {
    let fail = |msg: String| FormatError::new(output, ErrorKind::Verify(msg));
    let out = open(written).map_err(|e| FormatError {
        path: Some(output.to_path_buf()),
        kind: e.kind,
    })?;
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
    // Names, dtypes and shapes first (cheap), then the hashes of every output tensor at once.
    let mut pairs = Vec::with_capacity(input.tensors().len());
    for t in input.tensors() {
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
        pairs.push(j);
    }
    let out_hashes =
        hash_tensors(out.as_ref(), &pairs, VERIFY_THREADS).map_err(|e| e.with_path(output))?;
    for (i, (t, got)) in input.tensors().iter().zip(out_hashes).enumerate() {
        let want = match input_hashes.get(i).copied().flatten() {
            Some(h) => h,
            None => tensor_blake3(input, i)?,
        };
        if got != want {
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

/// BLAKE3 of the tensors `indices` of `src`, in that order, hashed on up to `threads` threads
/// (as many as the machine has, at most). Each thread takes the largest tensor not yet taken,
/// so one huge tensor does not leave the others waiting behind it.
///
/// # Errors
/// The first error of the source.
fn hash_tensors(
    src: &(dyn TensorSource + Sync),
    indices: &[usize],
    threads: usize,
) -> Result<Vec<blake3::Hash>, FormatError> {
    let size = |i: usize| {
        src.tensors()
            .get(i)
            .and_then(TensorInfo::byte_len)
            .unwrap_or(0)
    };
    // Positions in `indices`, largest tensor first.
    let mut order: Vec<usize> = (0..indices.len()).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(size(indices[k])));
    let threads = threads
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(indices.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<blake3::Hash>>> = Mutex::new(vec![None; indices.len()]);
    let work = || -> Result<(), FormatError> {
        while let Some(&k) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            let h = tensor_blake3(src, indices[k])?;
            let mut r = results
                .lock()
                .map_err(|_| FormatError::memory("hash table poisoned"))?;
            if let Some(slot) = r.get_mut(k) {
                *slot = Some(h);
            }
        }
        Ok(())
    };
    std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("tantra-verify".into())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mine = work();
        let theirs = helpers.into_iter().try_for_each(|h| {
            h.join()
                .map_err(|_| FormatError::memory("a hashing thread panicked"))?
        });
        mine.and(theirs)
    })?;
    let results = results
        .into_inner()
        .map_err(|_| FormatError::memory("hash table poisoned"))?;
    results
        .into_iter()
        .zip(indices)
        .map(|(h, &i)| match h {
            Some(h) => Ok(h),
            // Every position is taken by some thread before all of them finish.
            None => tensor_blake3(src, i),
        })
        .collect()
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::MemorySource;
    use crate::DType;

    /// Tensors of 0 bytes to a few MiB (so that some chunks are hashed beside the sink).
    fn tensors() -> MemorySource {
        let mut m = MemorySource::new();
        for (i, len) in [0usize, 1, 4096, 3 << 20, 1 << 20, 5]
            .into_iter()
            .enumerate()
        {
            let data = (0..len).map(|j| (j * 7 + i) as u8).collect();
            m.push(
                TensorInfo::new(format!("t{i}"), DType::U8, vec![len as u64]),
                data,
            )
            .unwrap();
        }
        m
    }

    #[test]
    fn hashing_while_streaming_gives_the_hash_and_the_bytes() {
        let m = tensors();
        let src = HashingSource {
            inner: &m,
            hashes: Mutex::new(vec![None; m.tensors().len()]),
        };
        for i in 0..m.tensors().len() {
            let mut got = Vec::new();
            src.stream_tensor(i, &mut |c| {
                got.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            let want = m.tensor_bytes(i).unwrap();
            assert!(got == *want);
            let hashes = src.hashes.lock().unwrap();
            assert_eq!(hashes[i], Some(blake3::hash(&want)));
        }
        // A sink's error comes back, after the hashing thread is done with the chunk.
        let e = src
            .stream_tensor(3, &mut |_| Err(FormatError::memory("full")))
            .unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Memory(_)));
    }

    #[test]
    fn hashing_on_threads_keeps_the_order_asked_for() {
        let m = tensors();
        let indices = [5, 3, 0, 1, 4, 2, 3];
        let want: Vec<_> = indices
            .iter()
            .map(|&i| blake3::hash(&m.tensor_bytes(i).unwrap()))
            .collect();
        for threads in [1, 2, 4, 64] {
            assert_eq!(hash_tensors(&m, &indices, threads).unwrap(), want);
        }
        assert!(hash_tensors(&m, &[], 4).unwrap().is_empty());
        assert!(hash_tensors(&m, &[0, 99], 2).is_err());
    }
}
