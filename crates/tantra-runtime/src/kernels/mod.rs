//! The arithmetic every runtime needs, in plain Rust: matrix-vector and matrix-matrix
//! products against `[out, in]` weights stored at f32, bf16 or 8 bits ([`Matrix`]), RMSNorm
//! and the activations.
//!
//! Why not a tensor library: decoding at batch 1 is a chain of matrix-vector products, which
//! is memory-bound; what matters is streaming each weight once with wide loads on all cores,
//! and reading fewer bytes (bf16, 8-bit). The SIMD paths (AVX2, FMA) are picked at run time
//! with `is_x86_feature_detected!`; every one has a portable twin that the tests hold it to.
//!
//! Everything here is private to the crate: the kernels have preconditions (lengths, packed
//! layouts) that only the layers built on them ([`crate::Linear`], the models) keep. The one
//! public item is [`kernel_name`].

mod matrix;
mod packed;
mod q8;

pub(crate) use matrix::{Matrix, MatrixBuilder};
pub(crate) use packed::dot;
pub(crate) use q8::{Q8Builder, QK as Q8_BLOCK};

/// Below this many multiply-adds a product runs on the calling thread: handing work to the
/// pool costs a few microseconds.
const PARALLEL_MIN_WORK: usize = 1 << 15;

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

/// RMSNorm of one vector, as transformers computes it in f32:
/// `x * rsqrt(mean(x^2) + eps) * weight`.
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
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
pub(crate) fn exp_fast(x: f32) -> f32 {
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
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// `ln(1 + e^x)`, and `x` itself above 20 (torch's threshold).
#[inline]
pub(crate) fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        x.exp().ln_1p()
    }
}

/// GELU, exact (erf) form, as torch's `nn.GELU()` default.
#[inline]
pub(crate) fn gelu(x: f32) -> f32 {
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
pub(crate) fn add_bias(ys: &mut [f32], bias: &[f32]) {
    if bias.is_empty() {
        return;
    }
    for row in ys.chunks_exact_mut(bias.len()) {
        for (y, b) in row.iter_mut().zip(bias) {
            *y += b;
        }
    }
}

/// Copies a matrix-matrix product computed in row bands into `ys` (`[n][rows_n]`). The
/// scratch holds the bands one after another, each laid out `[t][row in band]` (that is what
/// lets parallel tasks write disjoint slices); band `b` covers rows `b * per ..`.
fn scatter_bands(scratch: &[f32], per: usize, n: usize, rows_n: usize, ys: &mut [f32]) {
    for (b, band) in scratch.chunks(per * n).enumerate() {
        let r0 = b * per;
        let band_rows = band.len() / n;
        for t in 0..n {
            ys[t * rows_n + r0..t * rows_n + r0 + band_rows]
                .copy_from_slice(&band[t * band_rows..(t + 1) * band_rows]);
        }
    }
}

/// Deterministic values in [-1, 1) for the kernels' tests (xorshift).
#[cfg(test)]
fn test_data(n: usize, seed: u32) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
