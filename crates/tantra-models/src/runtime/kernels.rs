//! The arithmetic every runtime needs, in plain f32 Rust: dot products, matrix-vector and
//! matrix-matrix products against `[out, in]` weights, RMSNorm and the activations.
//!
//! Why not a tensor library: decoding at batch 1 is a chain of matrix-vector products, which
//! is memory-bound; what matters is streaming each weight once with wide loads on all cores.
//! Weights are stored packed ([`PackedMatrix`]: four rows interleaved in 16-column chunks, so
//! that each group of rows is one sequential stream for the prefetcher), read by a loop over
//! four rows at a time with 16 accumulator lanes each, compiled twice (baseline SSE2, and
//! AVX2+FMA picked at run time) and split over output rows with rayon. `docs/runtime.md` has
//! the measurement against candle that this choice rests on.
//!
//! Determinism is a design rule here: a product's value for one row and one input vector is
//! the same whatever the batch size, the number of threads or the tiling. That is what lets a
//! prefill of a whole prompt leave bit-for-bit the states that feeding it token by token leaves.

use rayon::prelude::*;

/// Accumulator lanes: 16 f32 (two AVX2 registers) per row. The row kernel runs four rows at
/// once, so eight independent chains hide the latency of the multiply-adds and each load of
/// `x` serves four rows.
const LANES: usize = 16;

/// Below this many multiply-adds a product runs on the calling thread: handing work to the
/// pool costs a few microseconds.
const PARALLEL_MIN_WORK: usize = 1 << 15;

/// One multiply-add into a lane: fused on the FMA path, separate on the portable one.
#[inline(always)]
fn madd<const FMA: bool>(w: f32, x: f32, acc: f32) -> f32 {
    if FMA {
        w.mul_add(x, acc)
    } else {
        acc + w * x
    }
}

/// The tail (fewer than [`LANES`] elements) into the first lanes, then a pairwise reduction
/// 16 -> 8 -> 4 -> 2 -> 1. Every dot product in this module ends here, which is what makes a
/// row's value independent of how rows are grouped.
#[inline(always)]
fn finish<const FMA: bool>(mut acc: [f32; LANES], w_tail: &[f32], x_tail: &[f32]) -> f32 {
    for (i, (w, x)) in w_tail.iter().zip(x_tail).enumerate() {
        acc[i] = madd::<FMA>(*w, *x, acc[i]);
    }
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            acc[i] += acc[i + width];
        }
        width /= 2;
    }
    acc[0]
}

#[inline(always)]
fn dot_body<const FMA: bool>(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let full = n / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    for (wc, xc) in a[..full]
        .chunks_exact(LANES)
        .zip(b[..full].chunks_exact(LANES))
    {
        for i in 0..LANES {
            acc[i] = madd::<FMA>(wc[i], xc[i], acc[i]);
        }
    }
    finish::<FMA>(acc, &a[full..], &b[full..])
}

/// `out[r] = dot(W[r], x)` for the rows of a block of a [`PackedMatrix`] that starts at a
/// group boundary: groups of four rows interleaved chunk by chunk, then row-major remainder
/// rows. Each group is one sequential stream of memory, which is what lets the hardware
/// prefetcher run ahead (four separate row streams restart every row and measured 20-30%
/// slower on this machine).
#[inline(always)]
fn rows_body<const FMA: bool>(w: &[f32], cols: usize, x: &[f32], out: &mut [f32]) {
    if cols == 0 {
        out.fill(0.0);
        return;
    }
    let x = &x[..cols];
    let full = cols / LANES * LANES;
    let tail = cols - full;
    let (x_body, x_tail) = x.split_at(full);
    let mut out4 = out.chunks_exact_mut(4);
    let mut w4 = w.chunks_exact(4 * cols);
    for (o, group) in (&mut out4).zip(&mut w4) {
        let (body, tails) = group.split_at(4 * full);
        let mut a0 = [0.0f32; LANES];
        let mut a1 = [0.0f32; LANES];
        let mut a2 = [0.0f32; LANES];
        let mut a3 = [0.0f32; LANES];
        for (blk, xv) in body.chunks_exact(4 * LANES).zip(x_body.chunks_exact(LANES)) {
            let (w0, rest) = blk.split_at(LANES);
            let (w1, rest) = rest.split_at(LANES);
            let (w2, w3) = rest.split_at(LANES);
            for i in 0..LANES {
                a0[i] = madd::<FMA>(w0[i], xv[i], a0[i]);
                a1[i] = madd::<FMA>(w1[i], xv[i], a1[i]);
                a2[i] = madd::<FMA>(w2[i], xv[i], a2[i]);
                a3[i] = madd::<FMA>(w3[i], xv[i], a3[i]);
            }
        }
        o[0] = finish::<FMA>(a0, &tails[..tail], x_tail);
        o[1] = finish::<FMA>(a1, &tails[tail..2 * tail], x_tail);
        o[2] = finish::<FMA>(a2, &tails[2 * tail..3 * tail], x_tail);
        o[3] = finish::<FMA>(a3, &tails[3 * tail..], x_tail);
    }
    for (o, row) in out4
        .into_remainder()
        .iter_mut()
        .zip(w4.remainder().chunks_exact(cols))
    {
        *o = dot_body::<FMA>(row, x);
    }
}

/// Row `r` of packed `data` (`rows x cols`) dotted with `x`, with exactly the arithmetic
/// [`rows_body`] uses for that row, so a row's value does not depend on which routine or
/// which thread computed it.
#[inline(always)]
fn row_dot_body<const FMA: bool>(
    data: &[f32],
    rows: usize,
    cols: usize,
    r: usize,
    x: &[f32],
) -> f32 {
    let full = cols / LANES * LANES;
    let tail = cols - full;
    if r < rows / 4 * 4 {
        let (g, k) = (r / 4, r % 4);
        let group = &data[g * 4 * cols..(g + 1) * 4 * cols];
        let mut acc = [0.0f32; LANES];
        for (j, xv) in x[..full].chunks_exact(LANES).enumerate() {
            let w = &group[j * 4 * LANES + k * LANES..j * 4 * LANES + (k + 1) * LANES];
            for i in 0..LANES {
                acc[i] = madd::<FMA>(w[i], xv[i], acc[i]);
            }
        }
        let t0 = 4 * full + k * tail;
        finish::<FMA>(acc, &group[t0..t0 + tail], &x[full..cols])
    } else {
        dot_body::<FMA>(&data[r * cols..(r + 1) * cols], &x[..cols])
    }
}

/// Computes `out[t*out_stride + row0 + r]` for a block of rows and several input vectors, with
/// the block of weights kept hot in cache while every input passes over it.
#[inline(always)]
fn tile_body<const FMA: bool>(
    w: &[f32],
    cols: usize,
    xs: &[f32],
    out_stride: usize,
    out: &mut [f32],
    row0: usize,
) {
    let rows = w.len() / cols.max(1);
    for (t, x) in xs.chunks_exact(cols.max(1)).enumerate() {
        let dst = &mut out[t * out_stride + row0..t * out_stride + row0 + rows];
        rows_body::<FMA>(w, cols, x, dst);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        super::dot_body::<true>(a, b)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows(w: &[f32], cols: usize, x: &[f32], out: &mut [f32]) {
        super::rows_body::<true>(w, cols, x, out)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_dot(
        data: &[f32],
        rows: usize,
        cols: usize,
        r: usize,
        x: &[f32],
    ) -> f32 {
        super::row_dot_body::<true>(data, rows, cols, r, x)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tile(
        w: &[f32],
        cols: usize,
        xs: &[f32],
        out_stride: usize,
        out: &mut [f32],
        row0: usize,
    ) {
        super::tile_body::<true>(w, cols, xs, out_stride, out, row0)
    }
}

/// True when the AVX2+FMA kernels can run (detected once, then cached by std).
#[inline]
fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The instruction set the kernels use on this machine, for reports.
pub fn kernel_name() -> &'static str {
    if has_fma() {
        "avx2+fma"
    } else {
        "portable"
    }
}

/// Dot product over the common length of `a` and `b`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::dot(a, b) };
    }
    dot_body::<false>(a, b)
}

fn rows(w: &[f32], cols: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::rows(w, cols, x, out) };
    }
    rows_body::<false>(w, cols, x, out)
}

fn row_dot(data: &[f32], rows: usize, cols: usize, r: usize, x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::row_dot(data, rows, cols, r, x) };
    }
    row_dot_body::<false>(data, rows, cols, r, x)
}

fn tile(w: &[f32], cols: usize, xs: &[f32], out_stride: usize, out: &mut [f32], row0: usize) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::tile(w, cols, xs, out_stride, out, row0) };
    }
    tile_body::<false>(w, cols, xs, out_stride, out, row0)
}

/// Rows per parallel task so that each task does at least [`PARALLEL_MIN_WORK`] multiply-adds
/// and every thread gets a few tasks to balance load.
fn rows_per_task(rows: usize, cols: usize, vectors: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_balance = rows.div_ceil(threads * 4);
    let by_work = PARALLEL_MIN_WORK.div_ceil((cols * vectors).max(1));
    // Whole groups of four rows, the unit of the row kernel.
    by_balance.max(by_work).max(1).next_multiple_of(4)
}

/// A weight matrix `[rows, cols]` laid out for the row kernel: rows in groups of four, each
/// group stored chunk by chunk (16 columns of row 0, of row 1, of row 2, of row 3, the next 16
/// columns, ...) with the columns past the last whole chunk after them (row 0's, then row 1's,
/// ...), and the last `rows % 4` rows row-major at the end. Same size as the row-major matrix;
/// [`PackedMatrix::row`] reads a row back.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedMatrix {
    data: Vec<f32>,
    rows: usize,
    cols: usize,
}

impl PackedMatrix {
    /// Packs a row-major matrix. `w.len()` must be `rows * cols` (the callers read it with
    /// that shape); a shorter `w` is padded with zeros rather than read out of bounds.
    pub fn from_row_major(w: &[f32], rows: usize, cols: usize) -> Self {
        let n = rows * cols;
        let padded;
        let w = if w.len() >= n {
            &w[..n]
        } else {
            padded = [w, &vec![0.0; n - w.len()]].concat();
            &padded[..]
        };
        let full = cols / LANES * LANES;
        let groups = rows / 4;
        let mut data = Vec::with_capacity(n);
        for group in w[..groups * 4 * cols].chunks_exact(4 * cols) {
            for j in (0..full).step_by(LANES) {
                for row in group.chunks_exact(cols) {
                    data.extend_from_slice(&row[j..j + LANES]);
                }
            }
            for row in group.chunks_exact(cols) {
                data.extend_from_slice(&row[full..]);
            }
        }
        data.extend_from_slice(&w[groups * 4 * cols..]);
        PackedMatrix { data, rows, cols }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes of the weights.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }

    /// Row `r`, written to `out` (`cols` values); nothing for a row past the end.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        let cols = self.cols;
        if r >= self.rows || out.len() < cols {
            return;
        }
        let full = cols / LANES * LANES;
        let tail = cols - full;
        if r < self.rows / 4 * 4 {
            let (g, k) = (r / 4, r % 4);
            let group = &self.data[g * 4 * cols..(g + 1) * 4 * cols];
            for (j, dst) in out[..full].chunks_exact_mut(LANES).enumerate() {
                let src = j * 4 * LANES + k * LANES;
                dst.copy_from_slice(&group[src..src + LANES]);
            }
            let t0 = 4 * full + k * tail;
            out[full..cols].copy_from_slice(&group[t0..t0 + tail]);
        } else {
            out[..cols].copy_from_slice(&self.data[r * cols..(r + 1) * cols]);
        }
    }

    /// Row `r` as a new vector (empty past the end).
    pub fn row(&self, r: usize) -> Vec<f32> {
        if r >= self.rows {
            return Vec::new();
        }
        let mut v = vec![0.0; self.cols];
        self.row_into(r, &mut v);
        v
    }

    /// `y = W x`: `y[r] = dot(W[r], x)`. `x.len()` must be `cols` and `y.len()` `rows`
    /// (checked by the callers, which own the shapes).
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        let (rows_n, cols) = (self.rows.min(y.len()), self.cols);
        let y = &mut y[..rows_n];
        if rows_n * cols < PARALLEL_MIN_WORK || rayon::current_num_threads() < 2 {
            rows(&self.data, cols, x, y);
            return;
        }
        let per = rows_per_task(rows_n, cols, 1);
        y.par_chunks_mut(per)
            .zip(self.data.par_chunks(per * cols))
            .for_each(|(out, wb)| rows(wb, cols, x, out));
    }

    /// Rows `r0..r1` of `W x`, on the calling thread, into `out[..r1 - r0]`; bit-identical
    /// to those rows of [`PackedMatrix::matvec`]. Ranges past the end are cut to it.
    pub fn matvec_rows(&self, r0: usize, r1: usize, x: &[f32], out: &mut [f32]) {
        let cols = self.cols;
        let r1 = r1.min(self.rows).min(r0.saturating_add(out.len()));
        if r0 >= r1 || x.len() < cols {
            return;
        }
        if cols == 0 {
            out[..r1 - r0].fill(0.0);
            return;
        }
        // Whole groups go through the row kernel; rows of a group cut by the range one by one.
        let a0 = r0.next_multiple_of(4).min(r1);
        let a1 = if r1 == self.rows {
            r1
        } else {
            (r1 / 4 * 4).max(a0)
        };
        for r in r0..a0 {
            out[r - r0] = row_dot(&self.data, self.rows, cols, r, x);
        }
        rows(
            &self.data[a0 * cols..a1 * cols],
            cols,
            x,
            &mut out[a0 - r0..a1 - r0],
        );
        for r in a1..r1 {
            out[r - r0] = row_dot(&self.data, self.rows, cols, r, x);
        }
    }

    /// `Y = X W^T` for `n` input vectors `X` (`[n, cols]`, row-major):
    /// `Y[t, r] = dot(W[r], X[t])`, each element bit-identical to what
    /// [`PackedMatrix::matvec`] gives for that vector.
    pub fn matmul(&self, xs: &[f32], ys: &mut [f32]) {
        let (rows_n, cols) = (self.rows, self.cols);
        let n = xs.len() / cols.max(1);
        if n <= 1 || cols == 0 {
            self.matvec(xs, ys);
            return;
        }
        let w = &self.data[..];
        // Blocks of weight rows (whole groups of four) small enough to stay in L2 while all
        // inputs pass over them.
        const BLOCK_BYTES: usize = 256 * 1024;
        let block_rows = (BLOCK_BYTES / (cols * 4) / 4 * 4).clamp(4, rows_n.max(4));
        let work = rows_n * cols * n;
        if work < PARALLEL_MIN_WORK * 2 || rayon::current_num_threads() < 2 {
            for (b, wb) in w.chunks(block_rows * cols).enumerate() {
                tile(wb, cols, xs, rows_n, ys, b * block_rows);
            }
            return;
        }
        // Each task owns a band of rows; it writes `Y[t, r]` for its rows only, which is a
        // strided column band of `ys`, so tasks write a scratch laid out
        // [band][t][row in band] (disjoint slices) that is copied over afterwards.
        let per = rows_per_task(rows_n, cols, n).min(block_rows);
        let bands = rows_n.div_ceil(per);
        let mut scratch = vec![0.0f32; rows_n * n];
        scratch
            .par_chunks_mut(per * n)
            .zip(w.par_chunks(per * cols))
            .for_each(|(out, wb)| {
                let band_rows = wb.len() / cols;
                tile(wb, cols, xs, band_rows, out, 0);
            });
        for b in 0..bands {
            let r0 = b * per;
            let band_rows = per.min(rows_n - r0);
            let band = &scratch[r0 * n..r0 * n + band_rows * n];
            for t in 0..n {
                ys[t * rows_n + r0..t * rows_n + r0 + band_rows]
                    .copy_from_slice(&band[t * band_rows..(t + 1) * band_rows]);
            }
        }
    }
}

/// RMSNorm of one vector, as transformers computes it in f32:
/// `x * rsqrt(mean(x^2) + eps) * weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len().max(1) as f32;
    let ms = dot(x, x) / n;
    let scale = 1.0 / (ms + eps).sqrt();
    for ((o, v), w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * scale);
    }
}

/// `e^x` in plain f32 arithmetic that the compiler can vectorize (no libm call, no branch):
/// Cephes' `expf`, `x = n ln2 + r` with `|r| <= ln2 / 2`, a degree-6 polynomial for `e^r`,
/// and `2^n` put together from bits. Within 2 ulp of the exact value; inputs are clamped to
/// `[-87.3, 88.7]`, so it returns about 1e-38 where `e^x` would be subnormal or zero, and
/// never infinity. The scan calls it `E * N` times per token per layer.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer (to nearest even) in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.722_83);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * C1 - n * C2;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n is in [-126, 128]; the low bits of t hold n + 0x40_0000.
    let n_i = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    // 2^n as two factors, so that n = 128 (e^88.7 rounds to n = 128) does not overflow the
    // exponent field.
    let half = n_i >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n_i - half + 127) as u32) << 23);
    e_r * s1 * s2
}

/// `x * sigmoid(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)`, and `x` itself above 20 (torch's threshold).
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// GELU, exact (erf) form, as torch's `nn.GELU()` default.
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x / std::f32::consts::SQRT_2))
}

/// The error function, computed in f64 and rounded: its Maclaurin series below 2.5, the
/// continued fraction of erfc above (the short Abramowitz-Stegun formulas are off by up to
/// 1e-5, too coarse next to torch's erf).
fn erf(x: f32) -> f32 {
    let x = x as f64;
    let sign = if x < 0.0 { -1.0 } else { 1.0 };
    let a = x.abs();
    if a < 2.5 {
        // Maclaurin series: erf(a) = 2/sqrt(pi) * sum (-1)^n a^(2n+1) / (n! (2n+1)).
        let mut term = a;
        let mut sum = a;
        let a2 = a * a;
        let mut n = 0.0f64;
        loop {
            n += 1.0;
            term *= -a2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() < 1e-16 * sum.abs() {
                break;
            }
        }
        (sign * sum * std::f64::consts::FRAC_2_SQRT_PI) as f32
    } else {
        // Continued fraction for erfc, converges quickly for a >= 2.5.
        let mut f = 0.0f64;
        for k in (1..60).rev() {
            f = (k as f64 / 2.0) / (a + f);
        }
        let erfc = (-a * a).exp() / ((a + f) * std::f64::consts::PI.sqrt());
        (sign * (1.0 - erfc)) as f32
    }
}

/// `ys[t] += bias` for each row `t` of `ys` (rows of `bias.len()`).
pub fn add_bias(ys: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for row in ys.chunks_exact_mut(bias.len()) {
        for (y, b) in row.iter_mut().zip(bias) {
            *y += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(w: &[f32], cols: usize, x: &[f32]) -> Vec<f32> {
        w.chunks(cols)
            .map(|r| {
                r.iter()
                    .zip(x)
                    .map(|(a, b)| (*a as f64) * (*b as f64))
                    .sum::<f64>() as f32
            })
            .collect()
    }

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    const SIZES: [(usize, usize); 7] = [
        (1, 1),
        (3, 7),
        (5, 33),
        (8, 16),
        (70, 129),
        (600, 300),
        (2051, 40),
    ];

    #[test]
    fn packing_keeps_every_row() {
        for (rows, cols) in SIZES {
            let w = data(rows * cols, 5);
            let p = PackedMatrix::from_row_major(&w, rows, cols);
            assert_eq!(p.bytes(), w.len() * 4);
            for r in 0..rows {
                assert_eq!(
                    p.row(r),
                    &w[r * cols..(r + 1) * cols],
                    "{rows}x{cols} row {r}"
                );
            }
            assert!(p.row(rows).is_empty());
        }
    }

    #[test]
    fn matvec_matches_naive_for_odd_sizes() {
        for (rows, cols) in SIZES {
            let w = data(rows * cols, 1);
            let x = data(cols, 2);
            let mut y = vec![0.0; rows];
            PackedMatrix::from_row_major(&w, rows, cols).matvec(&x, &mut y);
            for (a, b) in y.iter().zip(naive(&w, cols, &x)) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn row_ranges_are_bitwise_the_full_product() {
        for (rows, cols) in SIZES {
            let p = PackedMatrix::from_row_major(&data(rows * cols, 8), rows, cols);
            let x = data(cols, 9);
            let mut full = vec![0.0; rows];
            p.matvec(&x, &mut full);
            for (r0, r1) in [
                (0, rows),
                (1, rows),
                (0, rows / 2),
                (rows / 3, rows - rows / 5),
                (rows, rows),
            ] {
                let mut part = vec![0.0; r1.saturating_sub(r0)];
                p.matvec_rows(r0, r1, &x, &mut part);
                assert_eq!(part, &full[r0..r1.max(r0)], "{rows}x{cols} {r0}..{r1}");
            }
        }
    }

    #[test]
    fn matmul_is_bitwise_matvec_per_vector() {
        for (rows, cols, n) in [(3, 5, 2), (700, 257, 5), (64, 64, 9), (2051, 40, 3)] {
            let p = PackedMatrix::from_row_major(&data(rows * cols, 3), rows, cols);
            let xs = data(cols * n, 4);
            let mut ys = vec![0.0; rows * n];
            p.matmul(&xs, &mut ys);
            for t in 0..n {
                let mut y = vec![0.0; rows];
                p.matvec(&xs[t * cols..(t + 1) * cols], &mut y);
                assert_eq!(&ys[t * rows..(t + 1) * rows], &y[..]);
            }
        }
    }

    #[test]
    fn exp_fast_is_within_two_ulp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let a = f64::from(exp_fast(x));
            let b = f64::from(x).exp();
            worst = worst.max(((a - b) / b).abs());
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "{worst}");
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-1000.0) < 1e-37 && exp_fast(-1000.0) >= 0.0);
        assert!(exp_fast(1000.0).is_finite());
        assert!(exp_fast(f32::NEG_INFINITY) >= 0.0);
    }

    #[test]
    fn activations() {
        assert!((silu(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(softplus(30.0), 30.0);
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-3.0) - -0.004_049_7).abs() < 1e-6);
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-7);
        assert!((erf(3.0) - 0.999_977_9).abs() < 1e-7);
    }
}
