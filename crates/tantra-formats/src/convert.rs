//! Conversion between formats, with verification.
//!
//! A conversion streams: the writer pulls one tensor at a time from the reader, so peak memory
//! is bounded by the largest tensor (and for memory-mapped inputs not even that). The output is
//! then opened again like any other file (its header or pickle parsed anew), every tensor's
//! name, dtype and shape checked against the input's, and every tensor's bytes compared with
//! the input's, as are the non-tensor values. Only then does it take the output's name.
//!
//! # Why bytes are compared rather than digests
//! Equal bytes are what equal digests stand for; comparing the bytes themselves says the same
//! without the (remote) chance of a collision, and costs far less: a comparison reads both
//! files once at memory speed (about 22 GB/s here), where hashing both with BLAKE3 ran at
//! 4 GB/s a side. The comparison streams both sides in bounded chunks, releasing the pages it is
//! done with, so it keeps the conversion's memory bound.
//!
//! # Why most of the comparing happens while the file is written
//! Writing keeps one core busy (the copy into the page cache) and the kernel's write-back part
//! of another; comparing afterwards would add its own time on top. So a thread beside the
//! writer (`verify_beside`) compares each tensor of at least a mebibyte as soon as its bytes
//! have reached the temporary file, at the place the writer was seen to put them (`Tracking`). That thread can
//! only vouch: when the finished file has been parsed, a tensor counts as compared only if the
//! file's own header or pickle places it at exactly the bytes that were compared; every other
//! tensor (and any that differed or could not be read) is compared again, from the parsed file,
//! on up to four threads, and a difference is reported from there with the tensor and the first
//! byte that differs. On the benchmark file (16 tensors of 16 MiB) this made verification add
//! about 18 ms to the conversion instead of 45 ms (`bench/convert.sh`).
//!
//! The final check runs on the temporary file while its last bytes are synced to disk
//! ([`atomic_write_checked`]); a verification that fails therefore never replaces the file
//! that was there.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;

use crate::detect::extension_mismatch;
use crate::error::{ErrorKind, FormatError};
use crate::fsutil::{atomic_write, atomic_write_checked, FileWriter};
use crate::mmap::stream_file_range;
use crate::subtree::{Selection, Subtree};
use crate::tensor::{TensorInfo, TensorSource, Value};
use crate::{open, write_to, DynSource, Format, NoProgress, OutputFormat, Progress};

/// How to convert.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    /// The output format; `None` takes it from the output's extension.
    pub format: Option<OutputFormat>,
    /// Replace an existing output.
    pub force: bool,
    /// Re-read the output and compare every tensor with the input (default on).
    pub verify: bool,
    /// Only a subtree of the input, renamed (`--select`, `--strip`); everything by default.
    pub selection: Selection,
}

impl Default for ConvertOptions {
    fn default() -> Self {
        ConvertOptions {
            format: None,
            force: false,
            verify: true,
            selection: Selection::default(),
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

/// The most threads that compare the output's tensors with the input's during verification.
/// Comparing reads memory as fast as one core can; beyond a few threads the memory bus, not the
/// cores, is the limit.
const VERIFY_THREADS: usize = 4;

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
    let src: DynSource = if opts.selection.is_everything() {
        src
    } else {
        Box::new(Subtree::new(src, &opts.selection).map_err(|e| FormatError::new(input, e))?)
    };
    let mut warnings = Vec::new();
    if let Some(w) = extension_mismatch(input, src.format()) {
        warnings.push(w);
    }
    let archive = archive_name(output);
    let bytes_written = if opts.verify {
        write_verified(src.as_ref(), output, opts.force, format, &archive, progress)?
    } else {
        atomic_write(output, opts.force, |w| {
            write_to(w, format, src.as_ref(), &archive, progress)
        })?
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

/// Writes `src` to `output` and verifies it (see the module docs): a thread beside the writer
/// compares each tensor as soon as its bytes are in the temporary file, and the check before
/// the rename re-opens the file and compares whatever that thread could not vouch for.
fn write_verified(
    src: &(dyn TensorSource + Sync),
    output: &Path,
    force: bool,
    format: OutputFormat,
    archive: &str,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    let count = AtomicU64::new(0);
    let finished = AtomicBool::new(false);
    let (notes, heard) = mpsc::channel();
    std::thread::scope(|s| {
        let beside = std::thread::Builder::new()
            .name("tantra-verify".into())
            .spawn_scoped(s, || verify_beside(src, heard, &finished))
            .ok();
        let tracking = Tracking {
            inner: src,
            count: &count,
            notes,
        };
        // Owns `tracking`, so that the verifier hears the last note when the writing ends.
        let write = move |w: &mut FileWriter<'_>| {
            if let Ok(f) = w.file().try_clone() {
                let _ = tracking.notes.send(Note::Output(f));
            }
            let mut pw = Publishing {
                inner: w,
                count: tracking.count,
            };
            write_to(&mut pw, format, &tracking, archive, progress)
        };
        let check = |written: &Path| {
            // The file is complete and flushed: no byte is still to come.
            finished.store(true, Ordering::Release);
            let vouched = beside.and_then(|h| h.join().ok());
            verify_output(src, written, output, progress, vouched.as_ref())
        };
        let result = atomic_write_checked(output, force, write, check);
        finished.store(true, Ordering::Release);
        result
    })
}

/// A writer that publishes how many bytes have gone through it.
struct Publishing<'a, W> {
    inner: W,
    count: &'a AtomicU64,
}

impl<W: Write> Write for Publishing<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count.fetch_add(n as u64, Ordering::AcqRel);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the writer tells the verifier beside it.
enum Note {
    /// The file being written (a second handle, to read it back).
    Output(File),
    /// Tensor `.0` of the input went to bytes `.1` of the output.
    Tensor(usize, Range<u64>),
}

/// The output ranges `verify_beside` compared with the input, by input tensor.
type Vouched = BTreeMap<usize, Range<u64>>;

/// Tensors smaller than this are left to the check after the writing, which reads them out of
/// one map of the finished file: reading one back while the file grows costs a map of its own,
/// which for a file of 20,000 tensors of 4 KiB made verifying take five times as long as
/// writing.
const BESIDE_MIN: u64 = 1 << 20;

/// The input as the writer pulls it: for each tensor streamed, where its bytes went in the
/// output (the count of bytes written before its first chunk and after its last) is passed to
/// the verifier. A writer that put anything else between a tensor's chunks would only make
/// the range disagree with the finished file's, and that tensor is then compared again.
struct Tracking<'a> {
    inner: &'a (dyn TensorSource + Sync),
    count: &'a AtomicU64,
    notes: mpsc::Sender<Note>,
}

impl TensorSource for Tracking<'_> {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn tensors(&self) -> &[TensorInfo] {
        self.inner.tensors()
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        self.inner.tensor_bytes(index)
    }
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let mut start = None;
        self.inner.stream_tensor(index, &mut |chunk| {
            start.get_or_insert(self.count.load(Ordering::Acquire));
            sink(chunk)
        })?;
        if let Some(start) = start {
            let end = self.count.load(Ordering::Acquire);
            if end - start >= BESIDE_MIN {
                let _ = self.notes.send(Note::Tensor(index, start..end));
            }
        }
        Ok(())
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        self.inner.metadata()
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        self.inner.values()
    }
    fn structure(&self) -> Option<&crate::Structure> {
        self.inner.structure()
    }
}

/// Runs beside the writer: compares each tensor the writer reports with the input as soon as
/// its bytes have reached the file, and returns, for each input tensor, the range of the output
/// that holds the same bytes. It only ever vouches: a difference, a read error or a range it
/// could not read leaves the tensor to the check after the writing, which reports it.
fn verify_beside(
    input: &(dyn TensorSource + Sync),
    heard: mpsc::Receiver<Note>,
    finished: &AtomicBool,
) -> Vouched {
    // Only tensors of at least `BESIDE_MIN` bytes are reported: a map, not a slot per tensor
    // (24 bytes each on a file of a million small tensors).
    let mut vouched = Vouched::new();
    let mut out: Option<File> = None;
    for note in heard {
        match note {
            Note::Output(f) => out = Some(f),
            Note::Tensor(i, r) => {
                let Some(f) = &out else { continue };
                if !wait_for_length(f, r.end, finished) {
                    continue;
                }
                let same = compare_with(
                    input,
                    i,
                    r.end - r.start,
                    &mut |sink| stream_file_range(f, r.clone(), sink),
                    &NoProgress,
                );
                if same.is_ok() && i < input.tensors().len() {
                    vouched.insert(i, r);
                }
            }
        }
    }
    vouched
}

/// Waits until `file` holds at least `len` bytes: true once it does, false once `finished`
/// says no more will come (or the file cannot be asked).
fn wait_for_length(file: &File, len: u64, finished: &AtomicBool) -> bool {
    loop {
        match file.metadata() {
            Ok(m) if m.len() >= len => return true,
            Ok(_) if !finished.load(Ordering::Acquire) => {
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
            _ => return false,
        }
    }
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
    written: &Path,
    output: &Path,
    progress: &dyn Progress,
    vouched: Option<&Vouched>,
) -> Result<(), FormatError> {
    let fail = |msg: String| FormatError::new(output, ErrorKind::Verify(msg));
    let out = open(written).map_err(|e| FormatError {
        path: Some(output.to_path_buf()),
        kind: e.kind,
    })?;
    // The output's tensors by name: indices sorted by name (8 bytes a tensor; a map of names
    // took 65 on a file of many small tensors, held beside both tables).
    let mut by_name: Vec<usize> = (0..out.tensors().len()).collect();
    by_name.sort_unstable_by(|&a, &b| out.tensors()[a].name.cmp(&out.tensors()[b].name));
    let find = |name: &str| {
        by_name
            .binary_search_by(|&j| out.tensors()[j].name.as_str().cmp(name))
            .ok()
            .and_then(|k| by_name.get(k).copied())
    };
    if out.tensors().len() != input.tensors().len() {
        return Err(fail(format!(
            "the output holds {} tensors, the input {}",
            out.tensors().len(),
            input.tensors().len()
        )));
    }
    // Names, dtypes and shapes first (cheap), then the bytes of every tensor.
    let mut pairs = Vec::with_capacity(input.tensors().len());
    for (i, t) in input.tensors().iter().enumerate() {
        let Some(j) = find(t.name.as_str()) else {
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
        // Compared already, at the very bytes the finished file gives this tensor.
        let seen = vouched.and_then(|v| v.get(&i)).cloned();
        if seen.is_none() || seen != out.file_range(j) {
            pairs.push((i, j));
        }
    }
    let total = pairs.iter().map(|&(i, _)| size_of(input, i)).sum();
    progress.begin("verifying", total);
    drop(by_name);
    let compared = compare_tensors(input, out.as_ref(), pairs, VERIFY_THREADS, progress);
    progress.end();
    compared.map_err(|e| match e {
        Compared::Differ { tensor, at } => fail(format!(
            "tensor {:?}: byte {at} differs from the input",
            input.tensors().get(tensor).map_or("?", |t| t.name.as_str())
        )),
        Compared::Length {
            tensor,
            input: a,
            output: b,
        } => fail(format!(
            "tensor {:?}: {a} bytes in the input, {b} in the output",
            input.tensors().get(tensor).map_or("?", |t| t.name.as_str())
        )),
        Compared::Failed(e) => e.with_path(output),
    })?;
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
    // The nesting, where the writer rebuilt it (every format but GGUF carries it).
    if out.format() != Format::Gguf {
        if let Some(s) = input.structure().filter(|s| s.fits(input)) {
            if out.structure() != Some(s) {
                return Err(fail(
                    "the nesting of the input (its structure) is not the output's".into(),
                ));
            }
        }
    }
    Ok(())
}

/// Why a comparison of two sources' tensors did not pass.
#[derive(Debug)]
enum Compared {
    /// Input tensor `tensor` differs from its output at byte `at`.
    Differ { tensor: usize, at: u64 },
    /// Input tensor `tensor` has a different number of bytes than its output.
    Length {
        tensor: usize,
        input: u64,
        output: u64,
    },
    /// Reading one of the sources failed.
    Failed(FormatError),
}

impl From<FormatError> for Compared {
    fn from(e: FormatError) -> Self {
        Compared::Failed(e)
    }
}

/// Compares the bytes of each pair `(i, j)`: tensor `i` of `a` with tensor `j` of `b`, on up to
/// `threads` threads (as many as the machine has, at most). Each thread takes the largest pair
/// not yet taken, so one huge tensor does not leave the others waiting behind it; once one pair
/// fails, the threads take no more.
///
/// # Errors
/// The first difference found (by the pair's input tensor and the byte offset), or the first
/// error of a source.
fn compare_tensors(
    a: &(dyn TensorSource + Sync),
    b: &(dyn TensorSource + Sync),
    pairs: Vec<(usize, usize)>,
    threads: usize,
    progress: &dyn Progress,
) -> Result<(), Compared> {
    // Sorted in place: a copy would cost 16 bytes a tensor more on a file of many small ones.
    let mut order = pairs;
    let size = |i: usize| {
        a.tensors()
            .get(i)
            .and_then(TensorInfo::byte_len)
            .unwrap_or(0)
    };
    order.sort_by_key(|&(i, _)| std::cmp::Reverse(size(i)));
    let threads = threads
        .min(std::thread::available_parallelism().map_or(1, |n| n.get()))
        .min(order.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first: Mutex<Option<Compared>> = Mutex::new(None);
    let work = || {
        while !failed.load(Ordering::Relaxed) {
            let Some(&(i, j)) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            if let Err(e) = compare_tensor(a, i, b, j, progress) {
                failed.store(true, Ordering::Relaxed);
                if let Ok(mut f) = first.lock() {
                    f.get_or_insert(e);
                }
            }
        }
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
        work();
        for h in helpers {
            if h.join().is_err() {
                failed.store(true, Ordering::Relaxed);
                if let Ok(mut f) = first.lock() {
                    f.get_or_insert(Compared::Failed(FormatError::memory(
                        "a verification thread panicked",
                    )));
                }
            }
        }
    });
    match first.into_inner() {
        Ok(None) => Ok(()),
        Ok(Some(e)) => Err(e),
        Err(_) => Err(Compared::Failed(FormatError::memory(
            "verification state poisoned",
        ))),
    }
}

/// Compares tensor `i` of `a` with tensor `j` of `b`, streaming `b` in chunks and taking the
/// same bytes of `a` part by part: a tensor `a` holds in one run of its file is never in memory
/// whole, one it has to materialize (a strided view) is built once.
fn compare_tensor(
    a: &dyn TensorSource,
    i: usize,
    b: &dyn TensorSource,
    j: usize,
    progress: &dyn Progress,
) -> Result<(), Compared> {
    compare_with(
        a,
        i,
        size_of(b, j),
        &mut |sink| b.stream_tensor(j, sink),
        progress,
    )
}

/// Feeds a sink with chunks of some bytes, in order.
type Stream<'s> =
    dyn FnMut(&mut dyn FnMut(&[u8]) -> Result<(), FormatError>) -> Result<(), FormatError> + 's;

/// Compares tensor `i` of `a` with `len_b` bytes that `stream_b` hands out in chunks.
fn compare_with(
    a: &dyn TensorSource,
    i: usize,
    len_b: u64,
    stream_b: &mut Stream<'_>,
    progress: &dyn Progress,
) -> Result<(), Compared> {
    let materialized = match a.tensor_bytes(i)? {
        Cow::Owned(v) => Some(v),
        Cow::Borrowed(_) => None,
    };
    let len_a = size_of(a, i);
    let length = || Compared::Length {
        tensor: i,
        input: len_a,
        output: len_b,
    };
    // Why the stream stopped early, when it was not a read error.
    let mut verdict: Option<Compared> = None;
    let stop = || FormatError::memory("comparison stopped");
    let mut pos = 0u64;
    let streamed = stream_b(&mut |chunk| {
        let end = pos + chunk.len() as u64;
        if end > len_a {
            verdict = Some(length());
            return Err(stop());
        }
        let mut off = 0usize;
        let mut against = |part: &[u8]| -> Result<(), FormatError> {
            let theirs = chunk.get(off..off + part.len()).unwrap_or(&[]);
            if theirs != part {
                let k = part.iter().zip(theirs).take_while(|(x, y)| x == y).count();
                verdict = Some(Compared::Differ {
                    tensor: i,
                    at: pos + (off + k) as u64,
                });
                return Err(stop());
            }
            off += part.len();
            Ok(())
        };
        match &materialized {
            // `end <= len_a`, the length of `v`.
            Some(v) => against(v.get(pos as usize..end as usize).unwrap_or(&[])),
            None => a.stream_tensor_range(i, pos..end, &mut against),
        }?;
        progress.advance(end - pos);
        pos = end;
        Ok(())
    });
    if let Some(v) = verdict {
        return Err(v);
    }
    streamed?;
    if pos != len_a {
        return Err(length());
    }
    Ok(())
}

/// The bytes of tensor `i` of `src` (0 for a size that does not fit).
fn size_of(src: &dyn TensorSource, i: usize) -> u64 {
    src.tensors()
        .get(i)
        .and_then(TensorInfo::byte_len)
        .unwrap_or(0)
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
    use crate::NoProgress;

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

    /// A source that materializes every tensor (as a strided view would be), so that the
    /// comparison takes the path that holds the input tensor whole.
    struct Materializing(MemorySource);

    impl TensorSource for Materializing {
        fn format(&self) -> Format {
            Format::Memory
        }
        fn tensors(&self) -> &[TensorInfo] {
            self.0.tensors()
        }
        fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
            Ok(Cow::Owned(self.0.tensor_bytes(index)?.into_owned()))
        }
        fn metadata(&self) -> &BTreeMap<String, String> {
            self.0.metadata()
        }
        fn values(&self) -> &BTreeMap<String, Value> {
            self.0.values()
        }
    }

    fn all_pairs(m: &MemorySource) -> Vec<(usize, usize)> {
        (0..m.tensors().len()).map(|i| (i, i)).collect()
    }

    #[test]
    fn equal_tensors_compare_equal_on_any_number_of_threads() {
        let m = tensors();
        let owned = Materializing(tensors());
        for threads in [1, 2, 4, 64] {
            compare_tensors(&m, &m, all_pairs(&m), threads, &NoProgress).unwrap();
            compare_tensors(&owned, &m, all_pairs(&m), threads, &NoProgress).unwrap();
        }
        compare_tensors(&m, &m, Vec::new(), 4, &NoProgress).unwrap();
        // Progress counts every compared byte once, whichever thread compared it.
        struct Count(AtomicUsize);
        impl Progress for Count {
            fn advance(&self, n: u64) {
                self.0.fetch_add(n as usize, Ordering::Relaxed);
            }
        }
        let count = Count(AtomicUsize::new(0));
        compare_tensors(&m, &m, all_pairs(&m), 4, &count).unwrap();
        let total: u64 = (0..m.tensors().len()).map(|i| size_of(&m, i)).sum();
        assert_eq!(count.0.load(Ordering::Relaxed) as u64, total);
        assert_eq!(total, 1 + 4096 + (3 << 20) + (1 << 20) + 5);
    }

    #[test]
    fn the_first_differing_byte_is_named() {
        let m = tensors();
        // Tensor 3 (3 MiB) with one byte changed past the first megabyte.
        let mut changed = MemorySource::new();
        for (i, t) in m.tensors().iter().enumerate() {
            let mut data = m.tensor_bytes(i).unwrap().into_owned();
            if i == 3 {
                data[1_234_567] ^= 0x40;
            }
            changed.push(t.clone(), data).unwrap();
        }
        for a in [&m as &(dyn TensorSource + Sync), &Materializing(tensors())] {
            for threads in [1, 4] {
                match compare_tensors(a, &changed, all_pairs(&m), threads, &NoProgress) {
                    Err(Compared::Differ {
                        tensor: 3,
                        at: 1_234_567,
                    }) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_different_length_is_named() {
        // The short tensor is a prefix of the long one: only the lengths differ.
        let mut m = MemorySource::new();
        m.push(
            TensorInfo::new("long", DType::U8, vec![10]),
            (0..10).collect(),
        )
        .unwrap();
        m.push(
            TensorInfo::new("short", DType::U8, vec![4]),
            (0..4).collect(),
        )
        .unwrap();
        match compare_tensors(&m, &m, vec![(0, 1)], 1, &NoProgress) {
            Err(Compared::Length {
                tensor: 0,
                input: 10,
                output: 4,
            }) => {}
            other => panic!("{other:?}"),
        }
        match compare_tensors(&m, &m, vec![(1, 0)], 1, &NoProgress) {
            Err(Compared::Length {
                tensor: 1,
                input: 4,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // A tensor that does not exist is a read error, not a difference.
        assert!(matches!(
            compare_tensors(&m, &m, vec![(0, 99)], 1, &NoProgress),
            Err(Compared::Failed(_))
        ));
    }

    /// Writes `m` through [`Tracking`] and [`Publishing`] as the conversion does, and returns
    /// the file and the ranges the writer was seen to put each tensor at.
    fn tracked_write(
        m: &MemorySource,
        format: OutputFormat,
    ) -> (tempfile::NamedTempFile, Vec<(usize, Range<u64>)>) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let count = AtomicU64::new(0);
        let (notes, heard) = mpsc::channel();
        let tracking = Tracking {
            inner: m,
            count: &count,
            notes,
        };
        let mut out = Publishing {
            inner: file.as_file(),
            count: &count,
        };
        let n = write_to(&mut out, format, &tracking, "archive", &NoProgress).unwrap();
        drop(tracking);
        assert_eq!(n, count.load(Ordering::Acquire));
        let ranges = heard
            .into_iter()
            .filter_map(|note| match note {
                Note::Tensor(i, r) => Some((i, r)),
                Note::Output(_) => None,
            })
            .collect();
        (file, ranges)
    }

    #[test]
    fn tracked_ranges_are_where_the_finished_file_puts_each_tensor() {
        let m = tensors();
        for format in [OutputFormat::Safetensors, OutputFormat::Pt] {
            let (file, ranges) = tracked_write(&m, format);
            // Only the tensors of at least BESIDE_MIN bytes (3 MiB and 1 MiB) are noted.
            let noted: Vec<usize> = ranges.iter().map(|(i, _)| *i).collect();
            assert_eq!(noted, vec![3, 4], "{format:?}");
            let out = open(file.path()).unwrap();
            for (i, r) in ranges {
                let j = out.find(&m.tensors()[i].name).unwrap();
                assert_eq!(out.file_range(j), Some(r.clone()), "{format:?} t{i}");
                assert_eq!(r.end - r.start, size_of(&m, i));
            }
        }
    }

    #[test]
    fn the_verifier_beside_vouches_only_for_equal_bytes() {
        let m = tensors();
        let (file, _) = tracked_write(&m, OutputFormat::Safetensors);
        // Every tensor at the place the finished file gives it, small ones included.
        let out = open(file.path()).unwrap();
        let ranges: Vec<(usize, Range<u64>)> = (0..m.tensors().len())
            .map(|i| {
                let j = out.find(&m.tensors()[i].name).unwrap();
                (i, out.file_range(j).unwrap())
            })
            .collect();
        let (notes, heard) = mpsc::channel();
        notes.send(Note::Output(file.reopen().unwrap())).unwrap();
        for (i, r) in &ranges {
            let r = match i {
                // The same length, shifted by a byte: other bytes.
                3 => r.start + 1..r.end + 1,
                // Past the end of the file, with nothing more to come: no wait.
                4 => 1 << 40..(1 << 40) + (1 << 20),
                _ => r.clone(),
            };
            notes.send(Note::Tensor(*i, r)).unwrap();
        }
        drop(notes);
        let finished = AtomicBool::new(true);
        let vouched = verify_beside(&m, heard, &finished);
        for (i, r) in &ranges {
            match i {
                3 | 4 => assert_eq!(vouched.get(i), None, "t{i}"),
                _ => assert_eq!(vouched.get(i), Some(r), "t{i}"),
            }
        }
    }

    #[test]
    fn the_final_check_compares_what_was_not_vouched_for_at_its_place() {
        let m = tensors();
        // The output as written, with one byte of tensor 3 changed.
        let mut changed = MemorySource::new();
        for (i, t) in m.tensors().iter().enumerate() {
            let mut data = m.tensor_bytes(i).unwrap().into_owned();
            if i == 3 {
                data[2_000_000] ^= 1;
            }
            changed.push(t.clone(), data).unwrap();
        }
        let (file, ranges) = tracked_write(&changed, OutputFormat::Safetensors);
        let path = file.path();
        let mut vouched = Vouched::new();
        for (i, r) in ranges {
            // Tensor 3 vouched for at a place the file does not give it.
            vouched.insert(i, if i == 3 { r.start + 8..r.end + 8 } else { r });
        }
        for v in [None, Some(&vouched)] {
            let err = verify_output(&m, path, path, &NoProgress, v).unwrap_err();
            assert!(
                err.to_string()
                    .contains("tensor \"t3\": byte 2000000 differs"),
                "{err}"
            );
        }
        // The same file against its own tensors passes, vouched for or not.
        let fine: Vouched = tracked_write(&changed, OutputFormat::Safetensors)
            .1
            .into_iter()
            .collect();
        verify_output(&changed, path, path, &NoProgress, None).unwrap();
        verify_output(&changed, path, path, &NoProgress, Some(&fine)).unwrap();
    }
}
