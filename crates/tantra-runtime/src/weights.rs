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

use tantra_formats::{DType, TensorInfo, TensorSource};

use super::error::{Result, RuntimeError};
use super::kernels::{Matrix, MatrixBuilder};
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
    /// precision. A BF16 tensor read at bf16 keeps its bits.
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
    Source(tantra_formats::FormatError),
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
    // Bytes of an element split across two chunks.
    let mut carry: Vec<u8> = Vec::with_capacity(8);
    let mut feed = |chunk: &[u8]| {
        let mut chunk = chunk;
        if !carry.is_empty() {
            let take = (size - carry.len()).min(chunk.len());
            carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if carry.len() == size {
                sink(&carry);
                carry.clear();
            }
        }
        let whole = chunk.len() / size * size;
        if whole > 0 {
            sink(&chunk[..whole]);
        }
        carry.extend_from_slice(&chunk[whole..]);
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
    if carry.is_empty() {
        Ok(())
    } else {
        Err(StreamError::Partial)
    }
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
}
