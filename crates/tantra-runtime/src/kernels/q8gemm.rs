//! The AVX2 matrix-matrix product of a band of 8-bit rows ([`super::q8::Q8Matrix`]) and
//! several quantized input vectors, for prefill.
//!
//! Why: the one-row dot product loads a block of weights and a block of the input for each
//! 32 products and reduces every row on its own. Here four rows meet two inputs: a block of
//! weights (and its absolute value) is loaded once for two inputs and a block of an input once
//! for four rows, eight accumulators stay in registers across the whole row.
//!
//! Per row, input and block the arithmetic is exactly that of `q8::dot` (the same integer
//! lane sums, the same scale `d_w * d_x` rounded to f32, the same fused multiply-add into the
//! same lane, the same pairwise reduction at the end), so every output is bit-identical to the
//! matrix-vector product of that input (tested in `q8.rs`).

use std::arch::x86_64::*;

use super::q8::{reduce8, QK};

/// `out[t * out_stride + r] = dot(W[r], X[t])` for every row `r` of the band (`wq`: `rows *
/// blocks * 32` values, `wd`: `rows * blocks` scales) and every input `t` of `xq`/`xd` (laid
/// out the same way).
///
/// # Safety
/// The CPU must support AVX2 and FMA; `out` holds index `(inputs - 1) * out_stride + rows - 1`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn band(
    wq: &[i8],
    wd: &[f32],
    xq: &[i8],
    xd: &[f32],
    blocks: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    if blocks == 0 {
        return;
    }
    let rows = (wd.len() / blocks).min(wq.len() / (blocks * QK));
    let inputs = (xd.len() / blocks).min(xq.len() / (blocks * QK));
    let mut t = 0;
    while t < inputs {
        let k = (inputs - t).min(2);
        let mut r = 0;
        while r < rows {
            let g = (rows - r).min(4);
            let o = t * out_stride + r;
            let w = (&wq[r * blocks * QK..], &wd[r * blocks..]);
            let x = (&xq[t * blocks * QK..], &xd[t * blocks..]);
            // SAFETY: AVX2 and FMA (this function's contract); the slices start at row `r`
            // and input `t`, and hold the `g` rows and `k` inputs the kernel reads.
            unsafe {
                match (g, k) {
                    (4, 2) => kernel::<4, 2>(w, x, blocks, &mut out[o..], out_stride),
                    (4, _) => kernel::<4, 1>(w, x, blocks, &mut out[o..], out_stride),
                    (_, 2) => kernel::<1, 2>(w, x, blocks, &mut out[o..], out_stride),
                    _ => kernel::<1, 1>(w, x, blocks, &mut out[o..], out_stride),
                }
            }
            r += if g == 4 { 4 } else { 1 };
        }
        t += k;
    }
}

/// `R` rows against `K` inputs over all `blocks`; output `(t, r)` to `out[t * out_stride + r]`.
///
/// # Safety
/// AVX2 and FMA; `w` and `x` hold `R` and `K` rows of `blocks` blocks.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel<const R: usize, const K: usize>(
    (wq, wd): (&[i8], &[f32]),
    (xq, xd): (&[i8], &[f32]),
    blocks: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    let row = blocks * QK;
    let (wp, xp) = (wq.as_ptr(), xq.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_ps(); K]; R];
    for b in 0..blocks {
        let mut xv = [_mm256_setzero_si256(); K];
        let mut xs = [0.0f32; K];
        for (i, (v, s)) in xv.iter_mut().zip(xs.iter_mut()).enumerate() {
            // SAFETY: i * row + b * 32 + 32 <= K * row <= xq.len().
            *v = unsafe { _mm256_loadu_si256(xp.add(i * row + b * QK).cast::<__m256i>()) };
            *s = xd[i * blocks + b];
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // SAFETY: r * row + b * 32 + 32 <= R * row <= wq.len().
            let w = unsafe { _mm256_loadu_si256(wp.add(r * row + b * QK).cast::<__m256i>()) };
            let aw = _mm256_sign_epi8(w, w);
            let ws = wd[r * blocks + b];
            for ((a, x), s) in acc_r.iter_mut().zip(xv).zip(xs) {
                let sx = _mm256_sign_epi8(x, w);
                let quads = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                *a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(quads), _mm256_set1_ps(ws * s), *a);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        for (i, a) in acc_r.iter().enumerate() {
            let mut lanes = [0.0f32; 8];
            // SAFETY: lanes has room for 8 f32.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), *a) };
            out[i * out_stride + r] = reduce8(lanes);
        }
    }
}
