//! 8-bit weights in the style of llama.cpp's Q8_0: each row cut into blocks of 32, each block
//! stored as 32 signed bytes and one f32 scale (`w ~ q * d`, `d = max|w| / 127`). The input
//! vector is quantized the same way, block by block, so a block's dot product is an exact sum
//! of 32 int8 products: 4.5x fewer bytes to stream than f32 and integer multiply-adds.
//!
//! Why the accumulation has the shape it has: the AVX2 path (`vpmaddubsw` + `vpmaddwd`) sums
//! the products of each block in eight i32 lanes of four products each, converts the lanes to
//! f32 and adds `lane * (d_w * d_x)` into eight f32 accumulators with one fused multiply-add,
//! then reduces the eight pairwise. The integer part is exact, so the portable path computes
//! the very same lane sums and the same fused multiply-adds in the same order: both give
//! bit-identical results (tested), and a row's value never depends on threads or batch size.
//! Columns past a multiple of 32 are padded with zeros, in the weights and in the input.

use rayon::prelude::*;

use super::packed::rows_per_task;
use super::PARALLEL_MIN_WORK;

/// Elements per block.
pub(crate) const QK: usize = 32;

/// The largest magnitude a quantized value takes: symmetric, so `-128` never appears (the AVX2
/// path takes absolute values of bytes).
const QMAX: f32 = 127.0;

/// Quantizes `x` into whole blocks: `qs` gets `blocks * 32` values (zero-padded), `d` one scale
/// per block. Both are cleared first.
pub(crate) fn quantize(x: &[f32], qs: &mut Vec<i8>, d: &mut Vec<f32>) {
    let blocks = x.len().div_ceil(QK);
    qs.clear();
    d.clear();
    qs.resize(blocks * QK, 0);
    d.resize(blocks, 0.0);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::quantize(x, qs, d) };
    }
    quantize_body(x, qs, d)
}

/// [`quantize`] into zeroed `qs` (`blocks * 32`) and `d` (`blocks`). The largest magnitude of
/// a block is taken over eight partial maxima (the same value as one running maximum: a
/// maximum is exact), which lets the loop vectorize.
#[inline(always)]
fn quantize_body(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
    for ((chunk, q), dv) in x.chunks(QK).zip(qs.chunks_exact_mut(QK)).zip(d.iter_mut()) {
        let mut m = [0.0f32; 8];
        let full = chunk.len() / 8 * 8;
        for c in chunk[..full].chunks_exact(8) {
            for (mi, v) in m.iter_mut().zip(c) {
                *mi = mi.max(v.abs());
            }
        }
        for (mi, v) in m.iter_mut().zip(&chunk[full..]) {
            *mi = mi.max(v.abs());
        }
        let amax = m.iter().fold(0.0f32, |a, &b| a.max(b));
        let scale = amax / QMAX;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        for (o, v) in q.iter_mut().zip(chunk) {
            *o = round_away(v * inv).clamp(-QMAX, QMAX) as i8;
        }
        *dv = scale;
    }
}

/// `x.round()` (halves away from zero) for `|x| < 2^31`, without the libm call that `round`
/// is on baseline x86-64: the integer part by truncation, then one step where the exact
/// fraction reaches a half. Beyond 2^31 (and for infinities) it returns a value beyond 2^31 of
/// the same sign, and 0 for NaN, which the clamp to +-127 and the cast to i8 map exactly as
/// they map `round`'s result.
#[inline(always)]
fn round_away(x: f32) -> f32 {
    let t = (x as i32) as f32;
    let frac = x - t;
    let step = if frac >= 0.5 {
        1.0
    } else if frac <= -0.5 {
        -1.0
    } else {
        0.0
    };
    t + step
}

/// Pairwise sum 8 -> 4 -> 2 -> 1, the order both paths use.
#[inline(always)]
pub(super) fn reduce8(mut acc: [f32; 8]) -> f32 {
    for width in [4, 2, 1] {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// The portable dot product of quantized `w` and `x` (`blocks * 32` values, one scale each).
pub(crate) fn dot_scalar(wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (((wb, &dw), xb), &dx) in wq.chunks_exact(QK).zip(wd).zip(xq.chunks_exact(QK)).zip(xd) {
        let d = dw * dx;
        for (j, a) in acc.iter_mut().enumerate() {
            let mut s = 0i32;
            for i in 4 * j..4 * j + 4 {
                s += i32::from(wb[i]) * i32::from(xb[i]);
            }
            *a = (s as f32).mul_add(d, *a);
        }
    }
    reduce8(acc)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::QK;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    /// [`super::quantize_body`] eight lanes at a time for whole blocks (the compiler left its
    /// float-to-byte loop scalar, 4 ns a value), the same operations in the same order, so the
    /// same bits (tested): the largest magnitude ignoring NaN, `x * (1 / scale)`, truncation
    /// plus one step where the fraction reaches a half, the clamp to +-127, and NaN to 0. A
    /// last partial block goes through the body.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn quantize(x: &[f32], qs: &mut [i8], d: &mut [f32]) {
        let whole = (x.len() / QK).min(d.len()).min(qs.len() / QK);
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let (half, minus_half) = (_mm256_set1_ps(0.5), _mm256_set1_ps(-0.5));
        let (one, minus_one) = (_mm256_set1_ps(1.0), _mm256_set1_ps(-1.0));
        let (hi, lo) = (_mm256_set1_ps(super::QMAX), _mm256_set1_ps(-super::QMAX));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for (b, db) in d[..whole].iter_mut().enumerate() {
            // SAFETY: b < whole, so the 32 values at b * 32 are inside `x`.
            let v: [__m256; 4] =
                std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.as_ptr().add(b * QK + 8 * k)) });
            // max(|v|, m) keeps m where |v| is NaN, as f32::max does.
            let mut m = _mm256_setzero_ps();
            for vk in v {
                m = _mm256_max_ps(_mm256_and_ps(vk, abs_mask), m);
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let mut lanes = [0.0f32; 4];
            // SAFETY: four f32 of room.
            unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), m4) };
            let amax = lanes.iter().fold(0.0f32, |a, &l| a.max(l));
            let scale = amax / super::QMAX;
            let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|k| {
                let y = _mm256_mul_ps(v[k], inv);
                let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(y);
                let frac = _mm256_sub_ps(y, t);
                let up = _mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(frac, half), one);
                let down = _mm256_and_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(frac, minus_half), minus_one);
                let r = _mm256_add_ps(t, _mm256_or_ps(up, down));
                let r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
                // NaN (where y is) to 0, as `NaN as i8` is.
                let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_ORD_Q>(y, y));
                _mm256_cvtps_epi32(r)
            });
            let words = (
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words.0, words.1), order);
            // SAFETY: b < whole, so the 32 bytes at b * 32 are inside `qs`.
            unsafe { _mm256_storeu_si256(qs.as_mut_ptr().add(b * QK).cast::<__m256i>(), bytes) };
            *db = scale;
        }
        let rest = whole * QK;
        if rest < x.len() {
            super::quantize_body(&x[rest..], &mut qs[rest..], &mut d[whole..]);
        }
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA; `wq`, `xq` hold `wd.len() * 32` and `xd.len() * 32`
    /// values (the loop stops at the shorter).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32]) -> f32 {
        let blocks = wd.len().min(xd.len()).min(wq.len() / QK).min(xq.len() / QK);
        let ones = _mm256_set1_epi16(1);
        let mut acc = _mm256_setzero_ps();
        for b in 0..blocks {
            // SAFETY: b * 32 + 32 <= len of both slices (blocks is bounded by both above).
            let (w, x) = unsafe {
                (
                    _mm256_loadu_si256(wq.as_ptr().add(b * QK).cast::<__m256i>()),
                    _mm256_loadu_si256(xq.as_ptr().add(b * QK).cast::<__m256i>()),
                )
            };
            // |w| (unsigned) times x with w's sign: w * x, as vpmaddubsw wants u8 x i8.
            let aw = _mm256_sign_epi8(w, w);
            let sx = _mm256_sign_epi8(x, w);
            let pairs = _mm256_maddubs_epi16(aw, sx);
            let quads = _mm256_madd_epi16(pairs, ones);
            let d = _mm256_set1_ps(wd[b] * xd[b]);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), d, acc);
        }
        let mut lanes = [0.0f32; 8];
        // SAFETY: lanes has room for 8 f32.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc) };
        super::reduce8(lanes)
    }
}

/// True when the AVX2 path runs (AVX2 and FMA present).
#[inline]
fn has_avx2() -> bool {
    super::has_fma()
}

/// The dot product of quantized `w` and `x`, AVX2 where the CPU has it.
#[inline]
pub(crate) fn dot(wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above); lengths are bounded
        // inside.
        return unsafe { x86::dot(wq, wd, xq, xd) };
    }
    dot_scalar(wq, wd, xq, xd)
}

/// A `[rows, cols]` matrix of 8-bit blocks, rows stored one after the other.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Q8Matrix {
    qs: Vec<i8>,
    d: Vec<f32>,
    rows: usize,
    cols: usize,
    /// Blocks per row: `ceil(cols / 32)`.
    blocks: usize,
}

/// An input vector (or several) quantized for a [`Q8Matrix`].
pub(crate) struct Q8Input {
    qs: Vec<i8>,
    d: Vec<f32>,
    blocks: usize,
}

impl Q8Input {
    /// Quantizes `n` vectors of `cols` values each (`xs.len() == n * cols`).
    pub(crate) fn new(xs: &[f32], cols: usize) -> Self {
        let blocks = cols.div_ceil(QK);
        let n = xs.len() / cols.max(1);
        let mut qs = Vec::with_capacity(n * blocks * QK);
        let mut d = Vec::with_capacity(n * blocks);
        let (mut q1, mut d1) = (Vec::new(), Vec::new());
        for x in xs.chunks_exact(cols.max(1)).take(n) {
            quantize(x, &mut q1, &mut d1);
            qs.extend_from_slice(&q1);
            d.extend_from_slice(&d1);
        }
        Q8Input { qs, d, blocks }
    }

    fn vector(&self, t: usize) -> (&[i8], &[f32]) {
        let b = self.blocks;
        (
            &self.qs[t * b * QK..(t + 1) * b * QK],
            &self.d[t * b..(t + 1) * b],
        )
    }

    fn len(&self) -> usize {
        self.d.len() / self.blocks.max(1)
    }
}

/// Builds a [`Q8Matrix`] row by row (each row quantized as it comes), or block by block from
/// blocks already quantized (a `Q8_0` file's), for loading a tensor while it streams from the
/// file without an f32 copy of it.
#[derive(Debug)]
pub(crate) struct Q8Builder {
    m: Q8Matrix,
    q1: Vec<i8>,
    d1: Vec<f32>,
    /// Whole rows pushed.
    pushed: usize,
    /// Blocks of the row being pushed block by block.
    row_blocks: usize,
}

impl Q8Builder {
    pub(crate) fn new(rows: usize, cols: usize) -> Self {
        let blocks = cols.div_ceil(QK);
        Q8Builder {
            m: Q8Matrix {
                qs: Vec::with_capacity(rows * blocks * QK),
                d: Vec::with_capacity(rows * blocks),
                rows,
                cols,
                blocks,
            },
            q1: Vec::new(),
            d1: Vec::new(),
            pushed: 0,
            row_blocks: 0,
        }
    }

    /// Quantizes and appends the next row (`row.len() == cols`); rows past `rows` are ignored,
    /// and so is a row pushed while one is being pushed block by block.
    pub(crate) fn push_row(&mut self, row: &[f32]) {
        if self.pushed == self.m.rows || row.len() != self.m.cols || self.row_blocks != 0 {
            return;
        }
        self.pushed += 1;
        quantize(row, &mut self.q1, &mut self.d1);
        self.m.qs.extend_from_slice(&self.q1);
        self.m.d.extend_from_slice(&self.d1);
    }

    /// Appends the next block as it is stored: 32 values `q` (`q.len() == 32`) and the scale
    /// `d` (`w = q * d`), rows filled in order, `ceil(cols / 32)` blocks a row. Blocks past
    /// the last row are ignored. A block that holds -128, which the AVX2 product cannot take
    /// (it takes absolute values of bytes) and which a quantizer of this module never writes,
    /// is quantized again from its values `q * d` (exact in f32): its largest magnitude
    /// becomes 127 with the scale `128 d / 127`, as quantizing the dequantized matrix gives.
    pub(crate) fn push_block(&mut self, q: &[i8], d: f32) {
        if self.pushed == self.m.rows || q.len() != QK {
            return;
        }
        if q.contains(&i8::MIN) {
            let mut values = [0.0f32; QK];
            for (v, &x) in values.iter_mut().zip(q) {
                *v = f32::from(x) * d;
            }
            quantize(&values, &mut self.q1, &mut self.d1);
            self.m.qs.extend_from_slice(&self.q1);
            self.m.d.extend_from_slice(&self.d1);
        } else {
            self.m.qs.extend_from_slice(q);
            self.m.d.push(d);
        }
        self.row_blocks += 1;
        if self.row_blocks == self.m.blocks {
            self.row_blocks = 0;
            self.pushed += 1;
        }
    }

    /// The matrix, equal to [`Q8Matrix::from_row_major`] of the rows pushed; `None` unless
    /// exactly `rows` rows were pushed (whole, or as all their blocks).
    pub(crate) fn finish(self) -> Option<Q8Matrix> {
        (self.pushed == self.m.rows && self.row_blocks == 0).then_some(self.m)
    }
}

impl Q8Matrix {
    /// Quantizes a row-major matrix (`w.len() == rows * cols`; missing values count as 0).
    pub(crate) fn from_row_major(w: &[f32], rows: usize, cols: usize) -> Self {
        let blocks = cols.div_ceil(QK);
        let mut qs = Vec::with_capacity(rows * blocks * QK);
        let mut d = Vec::with_capacity(rows * blocks);
        let (mut q1, mut d1) = (Vec::new(), Vec::new());
        let mut row = vec![0.0f32; cols];
        for r in 0..rows {
            row.fill(0.0);
            let src = w.get(r * cols..).unwrap_or_default();
            let take = src.len().min(cols);
            row[..take].copy_from_slice(&src[..take]);
            quantize(&row, &mut q1, &mut d1);
            qs.extend_from_slice(&q1);
            d.extend_from_slice(&d1);
        }
        Q8Matrix {
            qs,
            d,
            rows,
            cols,
            blocks,
        }
    }

    /// The stored values (`ceil(cols / 32)` blocks of 32 a row, rows in order) and the scale
    /// of each block.
    #[cfg(test)]
    pub(crate) fn blocks(&self) -> (&[i8], &[f32]) {
        (&self.qs, &self.d)
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of the weights (values and scales).
    pub(crate) fn bytes(&self) -> usize {
        self.qs.len() + self.d.len() * 4
    }

    fn row_dot(&self, r: usize, xq: &[i8], xd: &[f32]) -> f32 {
        let b = self.blocks;
        dot(
            &self.qs[r * b * QK..(r + 1) * b * QK],
            &self.d[r * b..(r + 1) * b],
            xq,
            xd,
        )
    }

    /// Row `r` dequantized into `out` (`cols` values); nothing for a row past the end.
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
        if r >= self.rows || out.len() < self.cols {
            return;
        }
        let b = self.blocks;
        let qs = &self.qs[r * b * QK..(r + 1) * b * QK];
        let ds = &self.d[r * b..(r + 1) * b];
        for (i, o) in out[..self.cols].iter_mut().enumerate() {
            *o = f32::from(qs[i]) * ds[i / QK];
        }
    }

    /// Rows `r0..r1` of `W x` for an input already quantized, into `out[..r1 - r0]`.
    fn rows_into(&self, r0: usize, x: &Q8Input, t: usize, out: &mut [f32]) {
        let (xq, xd) = x.vector(t);
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.row_dot(r0 + i, xq, xd);
        }
    }

    /// `y = W x` (`x.len() == cols`, `y.len() == rows`).
    pub(crate) fn matvec(&self, x: &[f32], y: &mut [f32]) {
        let rows_n = self.rows.min(y.len());
        let xin = Q8Input::new(&x[..self.cols.min(x.len())], self.cols);
        if xin.len() == 0 {
            return;
        }
        let y = &mut y[..rows_n];
        if rows_n * self.cols < PARALLEL_MIN_WORK || rayon::current_num_threads() < 2 {
            self.rows_into(0, &xin, 0, y);
            return;
        }
        let per = rows_per_task(rows_n, self.cols, 1);
        y.par_chunks_mut(per)
            .enumerate()
            .for_each(|(i, out)| self.rows_into(i * per, &xin, 0, out));
    }

    /// Rows `r0..r1` of `W x` on the calling thread, bit-identical to those of
    /// [`Q8Matrix::matvec`].
    pub(crate) fn matvec_rows(&self, r0: usize, r1: usize, x: &[f32], out: &mut [f32]) {
        let r1 = r1.min(self.rows).min(r0.saturating_add(out.len()));
        if r0 >= r1 || x.len() < self.cols {
            return;
        }
        let xin = Q8Input::new(&x[..self.cols], self.cols);
        if xin.len() == 0 {
            out[..r1 - r0].fill(0.0);
            return;
        }
        self.rows_into(r0, &xin, 0, &mut out[..r1 - r0]);
    }

    /// Rows `r0..r1` of `Y = X W^T` for the vectors of `x` (quantized once for several
    /// products), on the calling thread, into `out` laid out `[t][r - r0]`; each value
    /// bit-identical to [`Q8Matrix::matvec`]'s. Nothing is written when `out` is too short.
    pub(crate) fn matmul_rows(&self, r0: usize, r1: usize, x: &Q8Input, out: &mut [f32]) {
        let r1 = r1.min(self.rows);
        if r0 >= r1 || x.blocks != self.blocks {
            return;
        }
        let (m, n, bl) = (r1 - r0, x.len(), self.blocks);
        let Some(out) = out.get_mut(..n * m) else {
            return;
        };
        if bl == 0 {
            out.fill(0.0);
            return;
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above); `out` is `[n][m]`,
            // as `band` writes it.
            unsafe {
                super::q8gemm::band(
                    &self.qs[r0 * bl * QK..r1 * bl * QK],
                    &self.d[r0 * bl..r1 * bl],
                    &x.qs,
                    &x.d,
                    bl,
                    out,
                    m,
                )
            };
            return;
        }
        for (t, o) in out.chunks_exact_mut(m).enumerate() {
            self.rows_into(r0, x, t, o);
        }
    }

    /// `Y = X W^T` for `n` input vectors (`[n, cols]`), each element bit-identical to
    /// [`Q8Matrix::matvec`] of that vector. Rows are taken in bands small enough to stay in
    /// cache while every input passes over them, so each weight is read from memory once.
    pub(crate) fn matmul(&self, xs: &[f32], ys: &mut [f32]) {
        let (rows_n, cols) = (self.rows, self.cols);
        let n = xs.len() / cols.max(1);
        if n <= 1 || cols == 0 {
            self.matvec(xs, ys);
            return;
        }
        let xin = Q8Input::new(&xs[..n * cols], cols);
        const BLOCK_BYTES: usize = 128 * 1024;
        let row_bytes = self.blocks * (QK + 4);
        let band = (BLOCK_BYTES / row_bytes.max(1)).clamp(1, rows_n.max(1));
        // Each task owns a band of rows and writes [t][row in band] into its own scratch.
        let per = if rows_n * cols * n < PARALLEL_MIN_WORK * 2 || rayon::current_num_threads() < 2 {
            band
        } else {
            rows_per_task(rows_n, cols, n).min(band)
        };
        let mut scratch = vec![0.0f32; rows_n * n];
        scratch
            .par_chunks_mut(per * n)
            .enumerate()
            .for_each(|(b, out)| {
                let r0 = b * per;
                self.matmul_rows(r0, r0 + out.len() / n, &xin, out);
            });
        super::scatter_bands(&scratch, per, n, rows_n, ys);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
    use super::*;

    #[test]
    fn round_away_is_round() {
        let mut xs: Vec<f32> = (-3000..=3000).map(|i| i as f32 * 0.0625).collect();
        for k in 0..=130 {
            let h = k as f32 + 0.5;
            for v in [
                h,
                -h,
                f32::from_bits(h.to_bits() - 1),
                f32::from_bits(h.to_bits() + 1),
            ] {
                xs.extend([v, -v]);
            }
        }
        xs.extend([0.0, -0.0, 1e-30, 126.99999, 127.00001, 3e9, -3e9]);
        xs.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
        for x in xs {
            let want = x.round().clamp(-QMAX, QMAX) as i8;
            let got = round_away(x).clamp(-QMAX, QMAX) as i8;
            assert_eq!(got, want, "{x}");
            if x.abs() < 1e9 {
                assert_eq!(round_away(x), x.round(), "{x}");
            }
        }
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let x = data(100, 3);
        let (mut q, mut d) = (Vec::new(), Vec::new());
        quantize(&x, &mut q, &mut d);
        assert_eq!(q.len(), 128);
        assert_eq!(d.len(), 4);
        assert!(q[100..].iter().all(|&v| v == 0));
        for (i, v) in x.iter().enumerate() {
            let back = f32::from(q[i]) * d[i / QK];
            assert!(
                (back - v).abs() <= d[i / QK] * 0.5 + 1e-7,
                "{i}: {back} vs {v}"
            );
        }
        // The largest magnitude of each block maps to +-127 exactly.
        for (b, chunk) in x.chunks(QK).enumerate() {
            let (i, _) = chunk
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            assert_eq!(q[b * QK + i].unsigned_abs(), 127);
        }
        // The dispatched path (AVX2 here) and the portable body agree bit for bit.
        for len in [1, 31, 32, 33, 100, 1408] {
            let x: Vec<f32> = data(len, len as u32).iter().map(|v| v * 37.0).collect();
            quantize(&x, &mut q, &mut d);
            let (mut q2, mut d2) = (vec![0i8; q.len()], vec![0.0f32; d.len()]);
            quantize_body(&x, &mut q2, &mut d2);
            assert_eq!(q, q2, "{len}");
            assert_eq!(
                d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                d2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
        // Halves, NaN, infinities, zeros of both signs, a block with a subnormal maximum.
        let mut special: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.25).collect();
        special.extend([f32::NAN, -0.0, 0.0, 1.5, -1.5, 2.5, -2.5, 127.0].repeat(4));
        special.extend([f32::INFINITY, -3.0, f32::NAN, 5.0].repeat(8));
        special.extend([1e-40f32, -1e-41, 0.0, 3e-45].repeat(8));
        special.extend([f32::NEG_INFINITY, f32::INFINITY, 1.0, -1.0].repeat(8));
        quantize(&special, &mut q, &mut d);
        let (mut q2, mut d2) = (vec![0i8; q.len()], vec![0.0f32; d.len()]);
        quantize_body(&special, &mut q2, &mut d2);
        assert_eq!(q, q2);
        assert_eq!(
            d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            d2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        quantize(&[0.0; 5], &mut q, &mut d);
        assert_eq!(d, vec![0.0]);
        assert!(q.iter().all(|&v| v == 0));
    }

    #[test]
    fn simd_and_scalar_dots_are_bitwise_equal() {
        for (len, seed) in [(32, 1), (64, 2), (1408, 3), (704, 4), (96, 5)] {
            let (mut wq, mut wd, mut xq, mut xd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            quantize(&data(len, seed), &mut wq, &mut wd);
            quantize(&data(len, seed + 100), &mut xq, &mut xd);
            // Extremes: every product at +-127 * 127.
            wq[..QK].fill(127);
            xq[..QK].fill(-127);
            let a = dot(&wq, &wd, &xq, &xd);
            let b = dot_scalar(&wq, &wd, &xq, &xd);
            assert_eq!(a.to_bits(), b.to_bits(), "{len}: {a} vs {b}");
            let exact: f64 = wq
                .chunks(QK)
                .zip(&wd)
                .zip(xq.chunks(QK).zip(&xd))
                .map(|((wb, dw), (xb, dx))| {
                    let s: i32 = wb
                        .iter()
                        .zip(xb)
                        .map(|(a, b)| i32::from(*a) * i32::from(*b))
                        .sum();
                    f64::from(s) * f64::from(*dw) * f64::from(*dx)
                })
                .sum();
            assert!((f64::from(a) - exact).abs() < 1e-4 * exact.abs().max(1.0));
        }
    }

    #[test]
    fn matvec_is_close_to_f32_and_rows_and_matmul_are_bitwise_matvec() {
        for (rows, cols) in [(1, 1), (3, 7), (70, 129), (600, 300), (64, 1408)] {
            let w = data(rows * cols, 7);
            let m = Q8Matrix::from_row_major(&w, rows, cols);
            assert_eq!(m.bytes(), rows * cols.div_ceil(QK) * (QK + 4));
            let x = data(cols, 8);
            let mut y = vec![0.0; rows];
            m.matvec(&x, &mut y);
            for (r, yv) in y.iter().enumerate() {
                let exact: f32 = w[r * cols..(r + 1) * cols]
                    .iter()
                    .zip(&x)
                    .map(|(a, b)| a * b)
                    .sum();
                // Two roundings of at most half a step of 1/127 each, over cols terms.
                let bound = 0.02 * (cols as f32).sqrt() + 1e-3;
                assert!(
                    (yv - exact).abs() < bound,
                    "{rows}x{cols} row {r}: {yv} vs {exact}"
                );
            }
            // Every row equals the portable dot product, bit for bit, whichever kernel ran.
            let (mut xq, mut xd) = (Vec::new(), Vec::new());
            quantize(&x, &mut xq, &mut xd);
            let b = m.blocks;
            for (r, yv) in y.iter().enumerate() {
                let want = dot_scalar(
                    &m.qs[r * b * QK..(r + 1) * b * QK],
                    &m.d[r * b..(r + 1) * b],
                    &xq,
                    &xd,
                );
                assert_eq!(yv.to_bits(), want.to_bits(), "{rows}x{cols} row {r}");
            }
            let mut part = vec![0.0; rows];
            m.matvec_rows(rows / 3, rows, &x, &mut part);
            assert_eq!(&part[..rows - rows / 3], &y[rows / 3..]);
            let n = 5;
            let xs = data(cols * n, 9);
            let mut ys = vec![0.0; rows * n];
            m.matmul(&xs, &mut ys);
            for t in 0..n {
                let mut one = vec![0.0; rows];
                m.matvec(&xs[t * cols..(t + 1) * cols], &mut one);
                assert_eq!(&ys[t * rows..(t + 1) * rows], &one[..]);
            }
            let mut row = vec![0.0; cols];
            m.row_into(rows - 1, &mut row);
            for (a, b) in row.iter().zip(&w[(rows - 1) * cols..]) {
                assert!((a - b).abs() <= 1.0 / 127.0 * 0.5 + 1e-6);
            }
        }
    }

    #[test]
    fn blocks_are_kept_as_pushed_except_those_holding_minus_128() {
        let (rows, cols) = (2, 64);
        let w = data(rows * cols, 11);
        let m = Q8Matrix::from_row_major(&w, rows, cols);
        let (qs, d) = m.blocks();
        let mut b = Q8Builder::new(rows, cols);
        for k in 0..d.len() {
            b.push_block(&qs[k * QK..(k + 1) * QK], d[k]);
        }
        assert_eq!(b.finish().as_ref(), Some(&m));
        // Three blocks of four: not a whole matrix.
        let mut b = Q8Builder::new(rows, cols);
        for k in 0..3 {
            b.push_block(&qs[k * QK..(k + 1) * QK], d[k]);
        }
        assert_eq!(b.finish(), None);

        let mut q = [5i8; QK];
        q[7] = i8::MIN;
        let mut b = Q8Builder::new(1, QK);
        b.push_block(&q, 0.5);
        let got = b.finish().unwrap();
        let (gq, gd) = got.blocks();
        assert!(!gq.contains(&i8::MIN));
        assert_eq!(gq[7], -127);
        assert_eq!(gd[0], 64.0 / 127.0);
        let exact: Vec<f32> = q.iter().map(|&v| f32::from(v) * 0.5).collect();
        assert_eq!(got, Q8Matrix::from_row_major(&exact, 1, QK));
    }
}
