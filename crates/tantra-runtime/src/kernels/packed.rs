//! Weight matrices stored at f32 or bf16, packed for the row kernel (see [`Packed`]), and the
//! f32 dot product.
//!
//! Decoding at batch 1 is a chain of matrix-vector products, which is memory-bound; what
//! matters is streaming each weight once with wide loads on all cores. Weights are stored
//! packed (four rows interleaved in 16-column chunks, so that each group of rows is one
//! sequential stream for the prefetcher), read by a loop over four rows at a time with 16
//! accumulator lanes each, compiled twice (baseline SSE2, and AVX2+FMA picked at run time) and
//! split over output rows with rayon. A bf16 weight is widened to f32 in the register (a shift
//! of its bits), so bf16 reads half the bytes and computes exactly as f32 on the widened
//! values. `docs/runtime.md` has the measurement against candle that this choice rests on.
//!
//! Determinism is a design rule here: a product's value for one row and one input vector is
//! the same whatever the batch size, the number of threads or the tiling. That is what lets a
//! prefill of a whole prompt leave bit-for-bit the states that feeding it token by token leaves.

use rayon::prelude::*;

use super::{has_fma, PARALLEL_MIN_WORK};

/// Accumulator lanes: 16 f32 (two AVX2 registers) per row. The row kernel runs four rows at
/// once, so eight independent chains hide the latency of the multiply-adds and each load of
/// `x` serves four rows.
pub(super) const LANES: usize = 16;

/// An element type of stored weights: read as f32 in the kernels.
pub(crate) trait Elem: Copy + Send + Sync + std::fmt::Debug + PartialEq + 'static {
    const ZERO: Self;
    /// True for [`Bf16`] (two bytes, the high half of an f32), false for f32.
    const BF16: bool;
    fn f(self) -> f32;
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const BF16: bool = false;
    #[inline(always)]
    fn f(self) -> f32 {
        self
    }
}

/// A bfloat16 as its bits: the high half of an f32, so widening is a shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(transparent)]
pub(crate) struct Bf16(pub(crate) u16);

impl Bf16 {
    /// Rounds to nearest even, as torch's `.to(torch.bfloat16)`.
    pub(crate) fn from_f32(v: f32) -> Self {
        Bf16(half::bf16::from_f32(v).to_bits())
    }
}

impl Elem for Bf16 {
    const ZERO: Self = Bf16(0);
    const BF16: bool = true;
    #[inline(always)]
    fn f(self) -> f32 {
        f32::from_bits(u32::from(self.0) << 16)
    }
}

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
pub(super) fn finish<W: Elem, const FMA: bool>(
    mut acc: [f32; LANES],
    w_tail: &[W],
    x_tail: &[f32],
) -> f32 {
    for (i, (w, x)) in w_tail.iter().zip(x_tail).enumerate() {
        acc[i] = madd::<FMA>(w.f(), *x, acc[i]);
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
fn dot_body<W: Elem, const FMA: bool>(a: &[W], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let full = n / LANES * LANES;
    let mut acc = [0.0f32; LANES];
    for (wc, xc) in a[..full]
        .chunks_exact(LANES)
        .zip(b[..full].chunks_exact(LANES))
    {
        for i in 0..LANES {
            acc[i] = madd::<FMA>(wc[i].f(), xc[i], acc[i]);
        }
    }
    finish::<W, FMA>(acc, &a[full..], &b[full..])
}

/// `out[r] = dot(W[r], x)` for the rows of a block of a [`PackedMatrix`] that starts at a
/// group boundary: groups of four rows interleaved chunk by chunk, then row-major remainder
/// rows. Each group is one sequential stream of memory, which is what lets the hardware
/// prefetcher run ahead (four separate row streams restart every row and measured 20-30%
/// slower on this machine).
#[inline(always)]
fn rows_body<W: Elem, const FMA: bool>(w: &[W], cols: usize, x: &[f32], out: &mut [f32]) {
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
                a0[i] = madd::<FMA>(w0[i].f(), xv[i], a0[i]);
                a1[i] = madd::<FMA>(w1[i].f(), xv[i], a1[i]);
                a2[i] = madd::<FMA>(w2[i].f(), xv[i], a2[i]);
                a3[i] = madd::<FMA>(w3[i].f(), xv[i], a3[i]);
            }
        }
        o[0] = finish::<W, FMA>(a0, &tails[..tail], x_tail);
        o[1] = finish::<W, FMA>(a1, &tails[tail..2 * tail], x_tail);
        o[2] = finish::<W, FMA>(a2, &tails[2 * tail..3 * tail], x_tail);
        o[3] = finish::<W, FMA>(a3, &tails[3 * tail..], x_tail);
    }
    for (o, row) in out4
        .into_remainder()
        .iter_mut()
        .zip(w4.remainder().chunks_exact(cols))
    {
        *o = dot_body::<W, FMA>(row, x);
    }
}

/// Row `r` of packed `data` (`rows x cols`) dotted with `x`, with exactly the arithmetic
/// [`rows_body`] uses for that row, so a row's value does not depend on which routine or
/// which thread computed it.
#[inline(always)]
fn row_dot_body<W: Elem, const FMA: bool>(
    data: &[W],
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
                acc[i] = madd::<FMA>(w[i].f(), xv[i], acc[i]);
            }
        }
        let t0 = 4 * full + k * tail;
        finish::<W, FMA>(acc, &group[t0..t0 + tail], &x[full..cols])
    } else {
        dot_body::<W, FMA>(&data[r * cols..(r + 1) * cols], &x[..cols])
    }
}

/// Computes `out[t*out_stride + row0 + r]` for a block of rows and several input vectors, with
/// the block of weights kept hot in cache while every input passes over it.
#[inline(always)]
fn tile_body<W: Elem, const FMA: bool>(
    w: &[W],
    cols: usize,
    xs: &[f32],
    out_stride: usize,
    out: &mut [f32],
    row0: usize,
) {
    let rows = w.len() / cols.max(1);
    for (t, x) in xs.chunks_exact(cols.max(1)).enumerate() {
        let dst = &mut out[t * out_stride + row0..t * out_stride + row0 + rows];
        rows_body::<W, FMA>(w, cols, x, dst);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Elem;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot<W: Elem>(a: &[W], b: &[f32]) -> f32 {
        super::dot_body::<W, true>(a, b)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows<W: Elem>(w: &[W], cols: usize, x: &[f32], out: &mut [f32]) {
        super::rows_body::<W, true>(w, cols, x, out)
    }

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_dot<W: Elem>(
        data: &[W],
        rows: usize,
        cols: usize,
        r: usize,
        x: &[f32],
    ) -> f32 {
        super::row_dot_body::<W, true>(data, rows, cols, r, x)
    }
}

/// Dot product over the common length of `a` and `b`.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::dot(a, b) };
    }
    dot_body::<f32, false>(a, b)
}

pub(super) fn rows<W: Elem>(w: &[W], cols: usize, x: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::rows(w, cols, x, out) };
    }
    rows_body::<W, false>(w, cols, x, out)
}

fn row_dot<W: Elem>(data: &[W], rows: usize, cols: usize, r: usize, x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { x86::row_dot(data, rows, cols, r, x) };
    }
    row_dot_body::<W, false>(data, rows, cols, r, x)
}

fn tile<W: Elem>(
    w: &[W],
    cols: usize,
    xs: &[f32],
    out_stride: usize,
    out: &mut [f32],
    row0: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { super::gemm::tile(w, cols, xs, out_stride, out, row0) };
    }
    tile_body::<W, false>(w, cols, xs, out_stride, out, row0)
}

/// Rows per parallel task so that each task does at least [`PARALLEL_MIN_WORK`] multiply-adds
/// and every thread gets a few tasks to balance load.
pub(super) fn rows_per_task(rows: usize, cols: usize, vectors: usize) -> usize {
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
/// [`Packed::row`] reads a row back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Packed<W: Elem> {
    data: Vec<W>,
    rows: usize,
    cols: usize,
}

/// Appends four row-major rows (`group.len() == 4 * cols`) in the packed order.
fn pack_group<W: Elem>(group: &[W], cols: usize, data: &mut Vec<W>) {
    let full = cols / LANES * LANES;
    for j in (0..full).step_by(LANES) {
        for row in group.chunks_exact(cols) {
            data.extend_from_slice(&row[j..j + LANES]);
        }
    }
    for row in group.chunks_exact(cols) {
        data.extend_from_slice(&row[full..]);
    }
}

/// Builds a [`Packed`] matrix row by row, holding at most four rows besides the result: how
/// the loader packs a tensor while it streams from the file, without a row-major copy of it.
#[derive(Debug)]
pub(crate) struct PackedBuilder<W: Elem> {
    data: Vec<W>,
    /// Rows of the group being filled, row-major.
    pending: Vec<W>,
    rows: usize,
    cols: usize,
    pushed: usize,
}

impl<W: Elem> PackedBuilder<W> {
    pub(crate) fn new(rows: usize, cols: usize) -> Self {
        PackedBuilder {
            data: Vec::with_capacity(rows * cols),
            pending: Vec::with_capacity(4 * cols),
            rows,
            cols,
            pushed: 0,
        }
    }

    /// Appends the next row (`row.len() == cols`); rows past `rows` are ignored.
    pub(crate) fn push_row(&mut self, row: &[W]) {
        if self.pushed == self.rows || row.len() != self.cols {
            return;
        }
        self.pushed += 1;
        self.pending.extend_from_slice(row);
        // Rows past the last whole group stay row-major, as `from_row_major` leaves them.
        if self.pending.len() == 4 * self.cols {
            pack_group(&self.pending, self.cols, &mut self.data);
            self.pending.clear();
        }
    }

    /// The matrix, bit-identical to [`Packed::from_row_major`] of the rows pushed; `None`
    /// unless exactly `rows` rows were pushed.
    pub(crate) fn finish(mut self) -> Option<Packed<W>> {
        if self.pushed != self.rows {
            return None;
        }
        self.data.extend_from_slice(&self.pending);
        Some(Packed {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
        })
    }
}

impl<W: Elem> Packed<W> {
    /// Packs a row-major matrix. `w.len()` must be `rows * cols` (the callers read it with
    /// that shape); a shorter `w` is padded with zeros rather than read out of bounds.
    pub(crate) fn from_row_major(w: &[W], rows: usize, cols: usize) -> Self {
        let n = rows * cols;
        let padded;
        let w = if w.len() >= n {
            &w[..n]
        } else {
            padded = [w, &vec![W::ZERO; n - w.len()]].concat();
            &padded[..]
        };
        let groups = rows / 4;
        let mut data = Vec::with_capacity(n);
        for group in w[..groups * 4 * cols].chunks_exact(4 * cols) {
            pack_group(group, cols, &mut data);
        }
        data.extend_from_slice(&w[groups * 4 * cols..]);
        Packed { data, rows, cols }
    }

    /// Bytes of the weights.
    pub(crate) fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<W>()
    }

    /// Row `r`, written to `out` (`cols` values); nothing for a row past the end.
    pub(crate) fn row_into(&self, r: usize, out: &mut [f32]) {
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
                for (d, w) in dst.iter_mut().zip(&group[src..src + LANES]) {
                    *d = w.f();
                }
            }
            let t0 = 4 * full + k * tail;
            for (d, w) in out[full..cols].iter_mut().zip(&group[t0..t0 + tail]) {
                *d = w.f();
            }
        } else {
            for (d, w) in out[..cols]
                .iter_mut()
                .zip(&self.data[r * cols..(r + 1) * cols])
            {
                *d = w.f();
            }
        }
    }

    /// Row `r` as a new vector (empty past the end).
    #[cfg(test)]
    pub(crate) fn row(&self, r: usize) -> Vec<f32> {
        if r >= self.rows {
            return Vec::new();
        }
        let mut v = vec![0.0; self.cols];
        self.row_into(r, &mut v);
        v
    }

    /// `y = W x`: `y[r] = dot(W[r], x)`. `x.len()` must be `cols` and `y.len()` `rows`
    /// (checked by the callers, which own the shapes).
    pub(crate) fn matvec(&self, x: &[f32], y: &mut [f32]) {
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
    /// to those rows of [`Packed::matvec`]. Ranges past the end are cut to it.
    pub(crate) fn matvec_rows(&self, r0: usize, r1: usize, x: &[f32], out: &mut [f32]) {
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

    /// Rows `r0..r1` of `Y = X W^T` for the `xs.len() / cols` input vectors of `xs`, on the
    /// calling thread, into `out` laid out `[t][r - r0]`; each value bit-identical to
    /// [`Packed::matvec`]'s for that row and vector. The rows of a group cut by the range go
    /// one by one; the others through the matrix-matrix kernel. Ranges past the end are cut
    /// to it, and nothing is written when `out` is too short.
    pub(crate) fn matmul_rows(&self, r0: usize, r1: usize, xs: &[f32], out: &mut [f32]) {
        let cols = self.cols;
        let r1 = r1.min(self.rows);
        if r0 >= r1 {
            return;
        }
        let m = r1 - r0;
        let n = xs.len().checked_div(cols).unwrap_or(0);
        let Some(out) = out.get_mut(..n * m) else {
            return;
        };
        if cols == 0 {
            out.fill(0.0);
            return;
        }
        let a0 = r0.next_multiple_of(4).min(r1);
        let a1 = if r1 == self.rows {
            r1
        } else {
            (r1 / 4 * 4).max(a0)
        };
        for (x, o) in xs.chunks_exact(cols).zip(out.chunks_exact_mut(m)) {
            for r in (r0..a0).chain(a1..r1) {
                o[r - r0] = row_dot(&self.data, self.rows, cols, r, x);
            }
        }
        if a0 < a1 {
            tile(
                &self.data[a0 * cols..a1 * cols],
                cols,
                &xs[..n * cols],
                m,
                out,
                a0 - r0,
            );
        }
    }

    /// `Y = X W^T` for `n` input vectors `X` (`[n, cols]`, row-major):
    /// `Y[t, r] = dot(W[r], X[t])`, each element bit-identical to what
    /// [`Packed::matvec`] gives for that vector.
    pub(crate) fn matmul(&self, xs: &[f32], ys: &mut [f32]) {
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
        let mut scratch = vec![0.0f32; rows_n * n];
        scratch
            .par_chunks_mut(per * n)
            .zip(w.par_chunks(per * cols))
            .for_each(|(out, wb)| {
                let band_rows = wb.len() / cols;
                tile(wb, cols, xs, band_rows, out, 0);
            });
        super::scatter_bands(&scratch, per, n, rows_n, ys);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_data as data;
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
            let p = Packed::<f32>::from_row_major(&w, rows, cols);
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
            Packed::<f32>::from_row_major(&w, rows, cols).matvec(&x, &mut y);
            for (a, b) in y.iter().zip(naive(&w, cols, &x)) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn row_ranges_are_bitwise_the_full_product() {
        for (rows, cols) in SIZES {
            let p = Packed::<f32>::from_row_major(&data(rows * cols, 8), rows, cols);
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

    fn matmul_matches_matvec<W: Elem>(to: impl Fn(f32) -> W) {
        // Tails of every length class, leftover rows, 1-3 inputs per micro-kernel call, and
        // (130 x 257) more inputs than one block of the matrix-matrix kernel holds.
        for (rows, cols, n) in [
            (3, 5, 2),
            (700, 257, 5),
            (64, 64, 9),
            (2051, 40, 3),
            (14, 16, 4),
            (45, 257, 130),
            (8, 1408, 7),
        ] {
            let w: Vec<W> = data(rows * cols, 3).into_iter().map(&to).collect();
            let p = Packed::<W>::from_row_major(&w, rows, cols);
            let xs = data(cols * n, 4);
            let mut ys = vec![0.0; rows * n];
            p.matmul(&xs, &mut ys);
            for t in 0..n {
                let mut y = vec![0.0; rows];
                p.matvec(&xs[t * cols..(t + 1) * cols], &mut y);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&ys[t * rows..(t + 1) * rows]),
                    bits(&y),
                    "{rows}x{cols}, {n} inputs, input {t}"
                );
            }
        }
    }

    #[test]
    fn matmul_is_bitwise_matvec_per_vector() {
        matmul_matches_matvec::<f32>(|v| v);
        matmul_matches_matvec::<Bf16>(Bf16::from_f32);
    }
}
