//! Tensors by name, as f32 (vectors) or as matrices at the precision asked for, for the models
//! to build their layers from.
//!
//! This is the backend boundary the design asks for: a model's `load` asks for
//! `"backbone.layers.0.mixer.in_proj.weight"` with the shape its config implies, and gets f32
//! values. Whether the tensor came from one safetensors file, a set of shards, a PyTorch
//! archive or memory, and whether it was stored as f16 or bf16, is settled here. Every tensor
//! handed out is marked used, so that after loading the runtime can refuse weights that hold
//! more than the config accounts for (a sign that config and weights do not belong together).
//! Loaders read through the scoped view [`Vars`] (`weights.root().pp("backbone")`), with the
//! names of the model's table in tantra-models, so that no name is spelled here or in them.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use tantra_formats::{BlockLayout, DType, FormatError, StoredBlocks, TensorInfo, TensorSource};

use super::error::{Result, RuntimeError};
use super::join::Joiner;
use super::kernels::{Matrix, MatrixBuilder, Q8Builder, Q8_BLOCK};
use super::precision::Precision;

mod vars;
pub use vars::Vars;

/// One or more tensor sources seen as one set of named tensors.
pub struct Weights<'a> {
    sources: Vec<&'a dyn TensorSource>,
    by_name: HashMap<String, (usize, usize)>,
    used: RefCell<BTreeSet<String>>,
    /// The precision matrices are kept at.
    precision: Precision,
}

impl<'a> Weights<'a> {
    /// One source (a single file, or tensors in memory).
    pub fn new(source: &'a dyn TensorSource) -> Result<Self> {
        Self::from_sources(vec![source])
    }

    /// Several sources, for sharded checkpoints.
    ///
    /// # Errors
    /// [`RuntimeError::DuplicateTensor`] when two sources hold the same name.
    pub fn from_sources(sources: Vec<&'a dyn TensorSource>) -> Result<Self> {
        let mut by_name = HashMap::new();
        for (s, src) in sources.iter().enumerate() {
            for (i, info) in src.tensors().iter().enumerate() {
                if by_name.insert(info.name.clone(), (s, i)).is_some() {
                    return Err(RuntimeError::DuplicateTensor {
                        name: info.name.clone(),
                    });
                }
            }
        }
        Ok(Weights {
            sources,
            by_name,
            used: RefCell::new(BTreeSet::new()),
            precision: Precision::F32,
        })
    }

    /// The same weights, with matrices read at `precision` (f32 unless set).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The precision matrices are read at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// True when a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The shape of tensor `name`, if present.
    pub fn shape(&self, name: &str) -> Option<&[u64]> {
        let &(s, i) = self.by_name.get(name)?;
        Some(self.sources[s].tensors()[i].shape.as_slice())
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Marks a tensor as accounted for without reading it (a tied head saved beside the
    /// embeddings, say).
    pub fn mark_used(&self, name: &str) {
        if self.contains(name) {
            self.used.borrow_mut().insert(name.to_string());
        }
    }

    /// The tensor `name` as f32 values, checked to have `shape` exactly.
    ///
    /// # Errors
    /// [`RuntimeError::MissingTensor`], [`RuntimeError::Shape`], [`RuntimeError::DType`] for
    /// an element type other than F32/F16/BF16/F64, [`RuntimeError::NonFinite`], or a read
    /// error of the source.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.get_any(name, &[shape])
    }

    /// Like [`Weights::get`], accepting any of several shapes with the same element count
    /// (`[E, 1, K]` as transformers writes a depthwise convolution, `[E, K]` as others do).
    pub fn get_any(&self, name: &str, shapes: &[&[usize]]) -> Result<Vec<f32>> {
        let mut values = Vec::new();
        self.read_checked(name, shapes, &mut values)?;
        Ok(values)
    }

    /// A `[rows, cols]` matrix at the weights' precision, laid out for the matrix kernels. The
    /// tensor streams from its source a bounded range of rows at a time (about
    /// [`MATRIX_RANGE_BYTES`] of the file) and is converted row by row as it comes: loading
    /// holds no f32 or row-major copy of the tensor and, for a memory-mapped file, no more than
    /// one range of its pages, so the peak resident set stays close to the weights at their
    /// precision. A BF16 tensor read at bf16 keeps its bits, and a tensor stored as `Q8_0`
    /// blocks (a GGUF's) read at q8 keeps its blocks ([`q8_from_blocks`]).
    ///
    /// # Errors
    /// As [`Weights::get`].
    pub(crate) fn get_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Matrix> {
        let (src, i) = self.locate(name)?;
        let info = &src.tensors()[i];
        let shape_error = || RuntimeError::Shape {
            name: name.to_string(),
            expected: vec![rows, cols],
            found: info.shape.clone(),
        };
        if info.shape != [rows as u64, cols as u64] {
            return Err(shape_error());
        }
        if let Some(blocks) = src.stored_blocks(i) {
            // Rows of whole blocks only: the matrix pads a partial last block with zeros, which
            // a file's block would not hold.
            let whole = cols > 0 && cols.is_multiple_of(Q8_BLOCK);
            if self.precision == Precision::Q8 && blocks.layout == BlockLayout::Q8_0 && whole {
                let matrix = q8_from_blocks(src, i, name, rows, cols, blocks)?;
                self.used.borrow_mut().insert(name.to_string());
                return Ok(matrix);
            }
        }
        let size = element_size(info.dtype).ok_or_else(|| RuntimeError::DType {
            name: name.to_string(),
            dtype: info.dtype,
        })?;
        let mut builder = MatrixBuilder::new(rows, cols, self.precision);
        let mut non_finite: Option<usize> = None;
        let mut seen = 0usize;
        let mut f32s: Vec<f32> = Vec::new();
        let mut bits: Vec<u16> = Vec::new();
        let dtype = info.dtype;
        let keep_bf16 = dtype == DType::BF16;
        let row_bytes = (cols * size).max(1) as u64;
        let range_rows = (MATRIX_RANGE_BYTES as u64 / row_bytes).max(1);
        stream_elements(
            src,
            i,
            size,
            range_rows * row_bytes,
            &mut |bytes: &[u8]| {
                if keep_bf16 {
                    bits.clear();
                    bits.extend(
                        bytes
                            .chunks_exact(2)
                            .map(|c| u16::from_le_bytes([c[0], c[1]])),
                    );
                    if non_finite.is_none() {
                        // All exponent bits set: infinity or NaN.
                        non_finite = bits
                            .iter()
                            .position(|b| b & 0x7F80 == 0x7F80)
                            .map(|p| seen + p);
                    }
                    seen += bits.len();
                    builder.push_bf16_bits(&bits);
                } else {
                    f32s.clear();
                    convert(dtype, bytes, &mut f32s);
                    if non_finite.is_none() {
                        non_finite = f32s.iter().position(|v| !v.is_finite()).map(|p| seen + p);
                    }
                    seen += f32s.len();
                    builder.push_f32(&f32s);
                }
            },
        )
        .map_err(|e| match e {
            StreamError::Source(e) => RuntimeError::from(e),
            StreamError::Partial => shape_error(),
        })?;
        if let Some(index) = non_finite {
            return Err(RuntimeError::NonFinite {
                name: name.to_string(),
                index,
            });
        }
        let matrix = builder.finish().ok_or_else(shape_error)?;
        self.used.borrow_mut().insert(name.to_string());
        Ok(matrix)
    }

    /// The file holding tensor `name` and its index there.
    fn locate(&self, name: &str) -> Result<(&'a dyn TensorSource, usize)> {
        let &(s, i) = self
            .by_name
            .get(name)
            .ok_or_else(|| RuntimeError::MissingTensor {
                name: name.to_string(),
            })?;
        Ok((self.sources[s], i))
    }

    /// Reads tensor `name` into `values` (cleared first) after checking its shape against
    /// `shapes`; checks the values are finite and marks the tensor used.
    fn read_checked(&self, name: &str, shapes: &[&[usize]], values: &mut Vec<f32>) -> Result<()> {
        let (src, i) = self.locate(name)?;
        let info = &src.tensors()[i];
        let matches = |want: &[usize]| {
            want.len() == info.shape.len()
                && want.iter().zip(&info.shape).all(|(a, b)| *a as u64 == *b)
        };
        if !shapes.iter().any(|s| matches(s)) {
            return Err(RuntimeError::Shape {
                name: name.to_string(),
                expected: shapes.first().map(|s| s.to_vec()).unwrap_or_default(),
                found: info.shape.clone(),
            });
        }
        read_f32(src, i, name, info, values)?;
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(RuntimeError::NonFinite {
                name: name.to_string(),
                index,
            });
        }
        self.used.borrow_mut().insert(name.to_string());
        Ok(())
    }

    /// The first of `names` that exists, read as [`Weights::get`] reads it; the error names
    /// the first alternative.
    pub fn get_alias(&self, names: &[&str], shape: &[usize]) -> Result<Vec<f32>> {
        for n in names {
            if self.contains(n) {
                return self.get(n, shape);
            }
        }
        Err(RuntimeError::MissingTensor {
            name: names.first().copied().unwrap_or_default().to_string(),
        })
    }

    /// Fails when some tensor was never asked for.
    ///
    /// # Errors
    /// [`RuntimeError::UnexpectedTensors`] with up to five of the unused names.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let mut unused: Vec<&String> = self.by_name.keys().filter(|n| !used.contains(*n)).collect();
        if unused.is_empty() {
            return Ok(());
        }
        unused.sort();
        Err(RuntimeError::UnexpectedTensors {
            count: unused.len(),
            examples: unused.iter().take(5).map(|s| s.to_string()).collect(),
        })
    }
}

/// Source bytes of one matrix [`Weights::get_matrix`] maps at a time: small beside the weights
/// (the file's pages are released after each range), large enough that the system calls that
/// populate and release them cost nothing measurable.
pub(crate) const MATRIX_RANGE_BYTES: usize = 256 << 10;

/// Bytes per element of the types the runtime reads, `None` for the others.
fn element_size(dtype: DType) -> Option<usize> {
    match dtype {
        DType::F32 => Some(4),
        DType::F16 | DType::BF16 => Some(2),
        DType::F64 => Some(8),
        _ => None,
    }
}

/// Why [`stream_elements`] stopped.
enum StreamError {
    Source(FormatError),
    /// The bytes ended inside an element.
    Partial,
}

/// Feeds the bytes of tensor `index` to `sink` as whole elements of `size` bytes (an element
/// split across two chunks is joined). A tensor stored as one run of a file is read in ranges
/// of `range` bytes, so a memory-mapped source holds the pages of one range at a time; other
/// sources stream the tensor their own way.
fn stream_elements(
    src: &dyn TensorSource,
    index: usize,
    size: usize,
    range: u64,
    sink: &mut dyn FnMut(&[u8]),
) -> std::result::Result<(), StreamError> {
    let mut elements = Joiner::new(size);
    let mut feed = |chunk: &[u8]| {
        elements.push(chunk, &mut |run| sink(run));
        Ok(())
    };
    match src.file_range(index) {
        Some(r) if r.end - r.start > range => {
            let total = r.end - r.start;
            let mut pos = 0u64;
            while pos < total {
                let end = pos.saturating_add(range).min(total);
                src.stream_tensor_range(index, pos..end, &mut feed)
                    .map_err(StreamError::Source)?;
                pos = end;
            }
        }
        _ => src
            .stream_tensor(index, &mut feed)
            .map_err(StreamError::Source)?,
    }
    if elements.is_empty() {
        Ok(())
    } else {
        Err(StreamError::Partial)
    }
}

/// A q8 matrix built from tensor `index`'s stored `Q8_0` blocks as they are: each block's 32
/// signed bytes kept, its f16 scale widened to f32 (exactly), so the matrix holds the file's
/// weights bit for bit and nothing is dequantized or quantized again. The one exception is a
/// block holding -128, which llama.cpp never writes but other writers may: the 8-bit product
/// cannot take it, so that block alone is quantized again from its exact values
/// ([`Q8Builder::push_block`]), which is what quantizing the dequantized matrix would give it.
/// The blocks stream a bounded range at a time, as [`Weights::get_matrix`] streams values.
///
/// # Errors
/// Blocks whose length does not fit `[rows, cols]`, a scale that is infinite or NaN
/// ([`RuntimeError::NonFinite`], at the block's first element), a read error of the source.
fn q8_from_blocks(
    src: &dyn TensorSource,
    index: usize,
    name: &str,
    rows: usize,
    cols: usize,
    blocks: StoredBlocks,
) -> Result<Matrix> {
    let block_bytes = blocks.layout.block_bytes();
    let expected = (rows as u64)
        .checked_mul((cols / Q8_BLOCK) as u64)
        .and_then(|n| n.checked_mul(block_bytes as u64));
    if expected != Some(blocks.bytes) {
        return Err(RuntimeError::Format(FormatError::memory(format!(
            "tensor {name:?}: {} bytes of {} blocks, its shape [{rows}, {cols}] needs {}",
            blocks.bytes,
            blocks.layout.name(),
            expected.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
        ))));
    }
    let mut builder = Q8Builder::new(rows, cols);
    let mut joiner = Joiner::new(block_bytes);
    let mut non_finite: Option<usize> = None;
    let mut seen = 0usize;
    let mut q = [0i8; Q8_BLOCK];
    let range = (MATRIX_RANGE_BYTES / block_bytes * block_bytes) as u64;
    let mut pos = 0u64;
    while pos < blocks.bytes {
        let end = pos.saturating_add(range).min(blocks.bytes);
        src.stream_blocks(index, pos..end, &mut |chunk| {
            joiner.push(chunk, &mut |run: &[u8]| {
                for b in run.chunks_exact(block_bytes) {
                    let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                    if !d.is_finite() && non_finite.is_none() {
                        non_finite = Some(seen * Q8_BLOCK);
                    }
                    for (o, &v) in q.iter_mut().zip(&b[2..]) {
                        *o = v as i8;
                    }
                    builder.push_block(&q, d);
                    seen += 1;
                }
            });
            Ok(())
        })?;
        pos = end;
    }
    if let Some(index) = non_finite {
        return Err(RuntimeError::NonFinite {
            name: name.to_string(),
            index,
        });
    }
    let shape_error = || RuntimeError::Shape {
        name: name.to_string(),
        expected: vec![rows, cols],
        found: vec![seen as u64 * Q8_BLOCK as u64 / cols as u64, cols as u64],
    };
    if !joiner.is_empty() {
        return Err(shape_error());
    }
    builder.finish().map(Matrix::Q8).ok_or_else(shape_error)
}

/// Tensor `index` of `src` as f32, converted chunk by chunk as the source streams it: a
/// memory-mapped file releases the pages it has handed out, so loading holds the f32 copy and
/// not also the whole file in memory.
fn read_f32(
    src: &dyn TensorSource,
    index: usize,
    name: &str,
    info: &TensorInfo,
    values: &mut Vec<f32>,
) -> Result<()> {
    let size = element_size(info.dtype).ok_or_else(|| RuntimeError::DType {
        name: name.to_string(),
        dtype: info.dtype,
    })?;
    let numel = info
        .numel()
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(0);
    values.clear();
    values.reserve(numel);
    let dtype = info.dtype;
    let shape_error = |len: usize| RuntimeError::Shape {
        name: name.to_string(),
        expected: vec![len],
        found: info.shape.clone(),
    };
    stream_elements(src, index, size, u64::MAX, &mut |bytes| {
        convert(dtype, bytes, values)
    })
    .map_err(|e| match e {
        StreamError::Source(e) => RuntimeError::from(e),
        StreamError::Partial => shape_error(values.len()),
    })?;
    if values.len() != numel {
        return Err(shape_error(values.len()));
    }
    Ok(())
}

/// Appends the little-endian elements of `bytes` (whole elements of `dtype`) as f32.
fn convert(dtype: DType, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        DType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        DType::F16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        ),
        DType::F64 => {
            out.extend(bytes.chunks_exact(8).map(|c| {
                f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32
            }))
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantra_formats::MemorySource;

    #[test]
    fn converts_half_types_and_checks_shapes() {
        let mut m = MemorySource::new();
        let h: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
            .collect();
        m.push(TensorInfo::new("a", DType::F16, vec![2]), h)
            .unwrap();
        let b: Vec<u8> = [0.25f32]
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        m.push(TensorInfo::new("b", DType::BF16, vec![1, 1]), b)
            .unwrap();
        m.push(TensorInfo::new("c", DType::I32, vec![1]), vec![0; 4])
            .unwrap();
        let w = Weights::new(&m).unwrap();
        assert_eq!(w.get("a", &[2]).unwrap(), vec![1.5, -2.0]);
        assert_eq!(w.get_any("b", &[&[1], &[1, 1]]).unwrap(), vec![0.25]);
        assert!(matches!(w.get("a", &[3]), Err(RuntimeError::Shape { .. })));
        assert!(matches!(w.get("c", &[1]), Err(RuntimeError::DType { .. })));
        assert!(matches!(
            w.get("zz", &[1]),
            Err(RuntimeError::MissingTensor { .. })
        ));
        match w.check_all_used() {
            Err(RuntimeError::UnexpectedTensors { count, examples }) => {
                assert_eq!(count, 1);
                assert_eq!(examples, vec!["c".to_string()]);
            }
            other => panic!("{other:?}"),
        }
    }

    /// A source that streams in 3-byte chunks, splitting every element.
    struct Chunky(MemorySource);
    impl TensorSource for Chunky {
        fn format(&self) -> tantra_formats::Format {
            self.0.format()
        }
        fn tensors(&self) -> &[TensorInfo] {
            self.0.tensors()
        }
        fn tensor_bytes(
            &self,
            index: usize,
        ) -> Result<std::borrow::Cow<'_, [u8]>, tantra_formats::FormatError> {
            self.0.tensor_bytes(index)
        }
        fn stream_tensor(
            &self,
            index: usize,
            sink: &mut dyn FnMut(&[u8]) -> Result<(), tantra_formats::FormatError>,
        ) -> Result<(), tantra_formats::FormatError> {
            let b = self.0.tensor_bytes(index)?;
            for c in b.chunks(3) {
                sink(c)?;
            }
            Ok(())
        }
        fn metadata(&self) -> &std::collections::BTreeMap<String, String> {
            self.0.metadata()
        }
        fn values(&self) -> &std::collections::BTreeMap<String, tantra_formats::Value> {
            self.0.values()
        }
    }

    #[test]
    fn elements_split_across_chunks_are_joined() {
        let mut m = MemorySource::new();
        let v: Vec<f32> = (0..7).map(|i| i as f32 * 1.25 - 3.0).collect();
        m.push_f32("x", vec![7], &v).unwrap();
        let f64s: Vec<u8> = [0.5f64, -8.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        m.push(TensorInfo::new("y", DType::F64, vec![2]), f64s)
            .unwrap();
        let c = Chunky(m);
        let w = Weights::new(&c).unwrap();
        assert_eq!(w.get("x", &[7]).unwrap(), v);
        assert_eq!(w.get("y", &[2]).unwrap(), vec![0.5, -8.0]);
    }

    #[test]
    fn refuses_non_finite_and_duplicates() {
        let mut m = MemorySource::new();
        m.push_f32("x", vec![2], &[1.0, f32::NAN]).unwrap();
        let w = Weights::new(&m).unwrap();
        assert!(matches!(
            w.get("x", &[2]),
            Err(RuntimeError::NonFinite { index: 1, .. })
        ));
        let dup = Weights::from_sources(vec![&m, &m]);
        assert!(matches!(dup, Err(RuntimeError::DuplicateTensor { .. })));
    }

    #[test]
    fn matrices_stream_into_every_precision() {
        let (rows, cols) = (5, 37);
        let v: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.37).sin()).collect();
        let bits: Vec<u16> = v
            .iter()
            .map(|x| half::bf16::from_f32(*x).to_bits())
            .collect();
        let mut m = MemorySource::new();
        m.push_f32("w", vec![rows as u64, cols as u64], &v).unwrap();
        let b: Vec<u8> = bits.iter().flat_map(|x| x.to_le_bytes()).collect();
        m.push(
            TensorInfo::new("b", DType::BF16, vec![rows as u64, cols as u64]),
            b,
        )
        .unwrap();
        let mut bad = v.clone();
        bad[40] = f32::INFINITY;
        m.push_f32("bad", vec![rows as u64, cols as u64], &bad)
            .unwrap();
        let c = Chunky(m);
        for p in Precision::ALL {
            let w = Weights::new(&c).unwrap().with_precision(p);
            assert_eq!(
                w.get_matrix("w", rows, cols).unwrap(),
                Matrix::from_f32(&v, rows, cols, p)
            );
            let want = if p == Precision::Bf16 {
                Matrix::from_bf16_bits(&bits, rows, cols)
            } else {
                let widened: Vec<f32> = bits
                    .iter()
                    .map(|x| half::bf16::from_bits(*x).to_f32())
                    .collect();
                Matrix::from_f32(&widened, rows, cols, p)
            };
            assert_eq!(w.get_matrix("b", rows, cols).unwrap(), want);
            assert!(matches!(
                w.get_matrix("bad", rows, cols),
                Err(RuntimeError::NonFinite { index: 40, .. })
            ));
            assert!(matches!(
                w.get_matrix("w", cols, rows),
                Err(RuntimeError::Shape { .. })
            ));
        }
    }

    /// The blocks `m` holds (a q8 matrix), as (values, scales).
    fn q8_blocks(m: &Matrix) -> (Vec<i8>, Vec<f32>) {
        match m {
            Matrix::Q8(q) => {
                let (qs, d) = q.blocks();
                (qs.to_vec(), d.to_vec())
            }
            other => panic!("not q8: {:?}", other.precision()),
        }
    }

    /// A `Q8_0` file's blocks as (values, scales): the bytes as i8, the f16 scales widened.
    fn file_blocks(raw: &[u8]) -> (Vec<i8>, Vec<f32>) {
        let qs = raw
            .chunks_exact(34)
            .flat_map(|b| b[2..].iter().map(|&v| v as i8))
            .collect();
        let d = raw
            .chunks_exact(34)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        (qs, d)
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// `tantra export-gguf --type q8_0` of a Mamba, read back: at q8 every matrix stored as
    /// Q8_0 holds the file's blocks bit for bit; at f32 and bf16 it holds the dequantized values
    /// as before.
    #[test]
    fn a_q8_0_gguf_keeps_its_blocks_at_q8() {
        use tantra_formats::gguf::{GgufFile, GgufOptions, TargetType};
        use tantra_models::gguf::export_gguf;
        use tantra_models::gguf_source::MambaGgufSource;
        use tantra_models::{init_weights, Architecture, ModelConfig, Preset};

        let ModelConfig::Mamba(mut config) = Architecture::Mamba.preset(Preset::SampleSmall) else {
            panic!("mamba preset");
        };
        config.hidden_size = 64;
        config.intermediate_size = None;
        config.num_hidden_layers = 2;
        let src = init_weights(&ModelConfig::Mamba(config.clone()), 3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q8.gguf");
        let opts = GgufOptions {
            target: TargetType::Q8_0,
            ..Default::default()
        };
        let progress = tantra_formats::NoProgress;
        export_gguf(&config, &src, "mamba:test", &path, &opts, &progress).unwrap();
        let file = GgufFile::open(&path).unwrap();
        let gguf = MambaGgufSource::new(GgufFile::open(&path).unwrap());
        let mut checked = 0;
        for (i, t) in gguf.tensors().iter().enumerate() {
            if gguf.stored_blocks(i).is_none() {
                continue;
            }
            let [rows, cols] = t.shape[..] else {
                panic!("{}: {:?}", t.name, t.shape);
            };
            let (rows, cols) = (rows as usize, cols as usize);
            let q8 = Weights::new(&gguf).unwrap().with_precision(Precision::Q8);
            let got = q8_blocks(&q8.get_matrix(&t.name, rows, cols).unwrap());
            let want = file_blocks(file.raw_bytes(i).unwrap());
            assert_eq!(got.0, want.0, "{}: values", t.name);
            let bits = |d: &[f32]| d.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got.1), bits(&want.1), "{}: scales", t.name);
            let values = f32s(&file.tensor_bytes(i).unwrap());
            for p in [Precision::F32, Precision::Bf16] {
                let w = Weights::new(&gguf).unwrap().with_precision(p);
                assert_eq!(
                    w.get_matrix(&t.name, rows, cols).unwrap(),
                    Matrix::from_f32(&values, rows, cols, p),
                    "{} at {p}",
                    t.name
                );
            }
            checked += 1;
        }
        // in_proj, x_proj, out_proj of both layers and the embeddings.
        assert_eq!(checked, 7);
    }

    /// A hand-made Q8_0 file with a block holding -128 (which llama.cpp never writes): that
    /// block is quantized again from its exact values, every other block kept, and products
    /// stay right; an infinite scale is refused.
    #[test]
    fn a_block_holding_minus_128_is_quantized_again() {
        use tantra_formats::gguf::write::write_gguf_file;
        use tantra_formats::gguf::{GgufFile, GgufOptions, TargetType};

        let (rows, cols) = (3, 96);
        let v: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.61).sin()).collect();
        let mut m = MemorySource::new();
        m.push_f32("w.weight", vec![rows as u64, cols as u64], &v)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.gguf");
        let opts = GgufOptions {
            target: TargetType::Q8_0,
            ..Default::default()
        };
        write_gguf_file(&m, None, &path, &opts, &tantra_formats::NoProgress).unwrap();
        let start = GgufFile::open(&path).unwrap().gguf_tensor(0).unwrap().start as usize;
        let mut bytes = std::fs::read(&path).unwrap();
        // Block 4 (row 1, second block): its value 5 becomes -128.
        bytes[start + 4 * 34 + 2 + 5] = 0x80;
        std::fs::write(&path, &bytes).unwrap();

        let file = GgufFile::open(&path).unwrap();
        let raw = file.raw_bytes(0).unwrap().to_vec();
        let values = f32s(&file.tensor_bytes(0).unwrap());
        let w = Weights::new(&file).unwrap().with_precision(Precision::Q8);
        let matrix = w.get_matrix("w.weight", rows, cols).unwrap();
        let (qs, d) = q8_blocks(&matrix);
        let (fq, fd) = file_blocks(&raw);
        assert!(!qs.contains(&i8::MIN));
        // Quantizing the dequantized matrix: what the -128 block must become.
        let (rq, rd) = q8_blocks(&Matrix::from_f32(&values, rows, cols, Precision::Q8));
        for b in 0..rows * cols / 32 {
            let (q, want_q, want_d) = if b == 4 {
                (&qs[b * 32..][..32], &rq[b * 32..][..32], rd[b])
            } else {
                (&qs[b * 32..][..32], &fq[b * 32..][..32], fd[b])
            };
            assert_eq!(q, want_q, "block {b}");
            assert_eq!(d[b].to_bits(), want_d.to_bits(), "block {b}");
        }
        assert_eq!(d[4], fd[4] * 128.0 / 127.0);
        // The product of the row with -128 is still close to the exact one.
        let x: Vec<f32> = (0..cols).map(|i| (i as f32 * 0.3).cos()).collect();
        let mut y = vec![0.0; rows];
        matrix.matvec(&x, &mut y);
        for (r, yr) in y.iter().enumerate() {
            let exact: f32 = values[r * cols..][..cols]
                .iter()
                .zip(&x)
                .map(|(a, b)| a * b)
                .sum();
            assert!((yr - exact).abs() < 0.05, "row {r}: {yr} vs {exact}");
        }

        // An infinite scale in block 5.
        bytes[start + 5 * 34..][..2].copy_from_slice(&half::f16::INFINITY.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let file = GgufFile::open(&path).unwrap();
        let w = Weights::new(&file).unwrap().with_precision(Precision::Q8);
        assert!(matches!(
            w.get_matrix("w.weight", rows, cols),
            Err(RuntimeError::NonFinite { index: 160, .. })
        ));
    }
}
