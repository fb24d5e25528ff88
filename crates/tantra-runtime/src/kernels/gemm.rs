//! The AVX2 matrix-matrix product of a [`super::packed::Packed`] block of weight rows and
//! several input vectors: what a prefill spends most of its time in.
//!
//! Why a second kernel next to the row kernel: the row kernel (four rows, one input, 16 lanes
//! each) loads a weight for every multiply-add, so over many inputs it runs at the speed of
//! the cache that holds the weights, not of the arithmetic. Here a group of four rows meets
//! three inputs at once: each weight register serves three inputs and each input register four
//! rows, twelve accumulators, seven loads per twelve fused multiply-adds. The inputs are taken
//! in blocks that stay in L2 while every group of the band passes over them, and a group (four
//! rows, at most 22 KiB at f32) stays in L1 while the block's inputs pass over it.
//!
//! The lanes are the row kernel's: lane `i` of a row sums the columns `j` with `j % 16 == i`,
//! in order, with a fused multiply-add, and the same [`finish`] adds the tail and reduces. The
//! 16 lanes are computed as two halves of eight (one register each), which changes nothing in
//! any lane's arithmetic, so every output is bit-identical to the row kernel's for that row
//! and input (tested): a prefill still leaves exactly the states of token-by-token decoding.

use std::arch::x86_64::*;

use super::packed::{finish, rows, Elem, LANES};

/// Inputs per call of the micro-kernel.
const T: usize = 3;

/// Bytes of input vectors kept in L2 while a band of weight groups passes over them.
const INPUT_BLOCK_BYTES: usize = 128 * 1024;

/// Eight weights widened to f32: a load, or for bfloat16 a zero-extension and a shift.
///
/// # Safety
/// AVX2; `p` points at eight readable elements.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load8<W: Elem>(p: *const W) -> __m256 {
    // SAFETY: the caller keeps eight elements readable; `W` is f32 or the 2-byte Bf16
    // (`Elem::BF16` says which), so the casts read exactly those bytes.
    unsafe {
        if W::BF16 {
            let h = _mm_loadu_si128(p.cast::<__m128i>());
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        } else {
            _mm256_loadu_ps(p.cast::<f32>())
        }
    }
}

/// `out[t * out_stride + row0 + r] = dot(W[r], X[t])` for the rows of `w` (a block of a
/// packed matrix starting at a group boundary: groups of four, then fewer than four
/// row-major rows) and the `xs.len() / cols` inputs of `xs`; `cols > 0`.
///
/// # Safety
/// The CPU must support AVX2 and FMA. `out` must hold every index written.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile<W: Elem>(
    w: &[W],
    cols: usize,
    xs: &[f32],
    out_stride: usize,
    out: &mut [f32],
    row0: usize,
) {
    let rows_n = w.len() / cols;
    let n = xs.len() / cols;
    let groups = rows_n / 4;
    let full = cols / LANES * LANES;
    let block = (INPUT_BLOCK_BYTES / (cols * 4)).max(T) / T * T;
    // A bfloat16 group is widened to f32 once per block of inputs rather than in every call
    // of the micro-kernel (two more instructions per weight load, which made bf16 slower
    // than f32 here); the widened values are exact, so the products are the same.
    let mut wide = if W::BF16 && n > T {
        vec![0.0f32; 4 * cols]
    } else {
        Vec::new()
    };
    for t0 in (0..n).step_by(block) {
        let t1 = (t0 + block).min(n);
        for g in 0..groups {
            let grp = &w[g * 4 * cols..(g + 1) * 4 * cols];
            if !wide.is_empty() {
                for (d, v) in wide.iter_mut().zip(grp) {
                    *d = v.f();
                }
            }
            let mut t = t0;
            while t < t1 {
                let k = (t1 - t).min(T);
                let x = &xs[t * cols..(t + k) * cols];
                let dst = &mut out[t * out_stride..];
                let col = row0 + 4 * g;
                // SAFETY: AVX2 and FMA (this function's contract); the slices hold the
                // group and `k` inputs, as `group` requires.
                unsafe {
                    if wide.is_empty() {
                        let (body, tails) = grp.split_at(4 * full);
                        match k {
                            3 => group::<W, 3>(body, tails, cols, x, dst, out_stride, col),
                            2 => group::<W, 2>(body, tails, cols, x, dst, out_stride, col),
                            _ => group::<W, 1>(body, tails, cols, x, dst, out_stride, col),
                        }
                    } else {
                        let (body, tails) = wide.split_at(4 * full);
                        match k {
                            3 => group::<f32, 3>(body, tails, cols, x, dst, out_stride, col),
                            2 => group::<f32, 2>(body, tails, cols, x, dst, out_stride, col),
                            _ => group::<f32, 1>(body, tails, cols, x, dst, out_stride, col),
                        }
                    }
                }
                t += k;
            }
        }
        // Rows after the last whole group: the row kernel, one input at a time.
        if groups * 4 < rows_n {
            let rest = &w[groups * 4 * cols..];
            for t in t0..t1 {
                let o = t * out_stride + row0 + groups * 4;
                rows(
                    rest,
                    cols,
                    &xs[t * cols..(t + 1) * cols],
                    &mut out[o..o + rows_n - groups * 4],
                );
            }
        }
    }
}

/// Chunks of 16 columns per pass of the micro-kernel: its four weight rows and `T` inputs
/// over 48 chunks take 21 KiB at f32, which stay in L1 between the two halves' passes. Wider
/// rows (1408 columns: `out_proj`, `x_proj`) go through in several passes, the lane sums
/// kept in memory between them; each lane still adds its columns in order, so the bits are
/// those of one pass (and of the row kernel).
const KC: usize = 48;

/// One group of four rows (`body`: its whole 16-column chunks, `tails`: each row's last
/// `cols % 16` columns) against `K` inputs (`xs`, `K * cols` values); output `(t, r)` goes
/// to `out[t * out_stride + col + r]`.
///
/// # Safety
/// AVX2 and FMA; `body.len() == 4 * (cols / 16 * 16)`, `xs.len() >= K * cols`, and `out`
/// holds index `(K - 1) * out_stride + col + 3`.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn group<W: Elem, const K: usize>(
    body: &[W],
    tails: &[W],
    cols: usize,
    xs: &[f32],
    out: &mut [f32],
    out_stride: usize,
    col: usize,
) {
    let full = cols / LANES * LANES;
    let tail = cols - full;
    let chunks = full / LANES;
    let mut lanes = [[[0.0f32; LANES]; K]; 4];
    let (wp, xp) = (body.as_ptr(), xs.as_ptr());
    let mut c0 = 0;
    while c0 < chunks {
        let c1 = (c0 + KC).min(chunks);
        for half in 0..2 {
            let h = half * 8;
            let mut acc = [[_mm256_setzero_ps(); K]; 4];
            for (acc_r, lanes_r) in acc.iter_mut().zip(lanes.iter()) {
                for (a, l) in acc_r.iter_mut().zip(lanes_r.iter()) {
                    // SAFETY: h + 8 <= 16 = l.len().
                    *a = unsafe { _mm256_loadu_ps(l.as_ptr().add(h)) };
                }
            }
            for c in c0..c1 {
                let mut xv = [_mm256_setzero_ps(); K];
                for (i, v) in xv.iter_mut().enumerate() {
                    // SAFETY: i * cols + c * 16 + h + 8 <= K * cols <= xs.len().
                    *v = unsafe { _mm256_loadu_ps(xp.add(i * cols + c * LANES + h)) };
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    // SAFETY: c * 64 + r * 16 + h + 8 <= 4 * full == body.len().
                    let wv = unsafe { load8(wp.add(c * 4 * LANES + r * LANES + h)) };
                    for (a, x) in acc_r.iter_mut().zip(xv) {
                        *a = _mm256_fmadd_ps(wv, x, *a);
                    }
                }
            }
            for (acc_r, lanes_r) in acc.iter().zip(lanes.iter_mut()) {
                for (a, l) in acc_r.iter().zip(lanes_r.iter_mut()) {
                    // SAFETY: h + 8 <= 16 = l.len().
                    unsafe { _mm256_storeu_ps(l.as_mut_ptr().add(h), *a) };
                }
            }
        }
        c0 = c1;
    }
    for (r, lanes_r) in lanes.iter().enumerate() {
        let w_tail = &tails[r * tail..(r + 1) * tail];
        for (i, l) in lanes_r.iter().enumerate() {
            out[i * out_stride + col + r] = if tail == 0 {
                // SAFETY: AVX2 (this function's contract).
                unsafe { reduce16(l) }
            } else {
                finish::<W, true>(*l, w_tail, &xs[i * cols + full..(i + 1) * cols])
            };
        }
    }
}

/// [`finish`] without a tail, in registers: the pairwise reduction 16 -> 8 -> 4 -> 2 -> 1,
/// each step adding the same pairs of lanes (`i` and `i + width`) as `finish` does.
///
/// # Safety
/// AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce16(l: &[f32; LANES]) -> f32 {
    // SAFETY: l holds 16 values.
    let (lo, hi) = unsafe {
        (
            _mm256_loadu_ps(l.as_ptr()),
            _mm256_loadu_ps(l.as_ptr().add(8)),
        )
    };
    let v8 = _mm256_add_ps(lo, hi);
    let v4 = _mm_add_ps(_mm256_castps256_ps128(v8), _mm256_extractf128_ps::<1>(v8));
    let v2 = _mm_add_ps(v4, _mm_movehl_ps(v4, v4));
    let v1 = _mm_add_ss(v2, _mm_shuffle_ps::<1>(v2, v2));
    _mm_cvtss_f32(v1)
}
