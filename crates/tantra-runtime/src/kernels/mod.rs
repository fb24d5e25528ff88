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

#[cfg(target_arch = "x86_64")]
mod gemm;
mod matrix;
mod packed;
mod q8;
#[cfg(target_arch = "x86_64")]
mod q8gemm;

pub(crate) use matrix::{Matrix, MatrixBuilder, Prepared};
pub(crate) use packed::dot;
pub(crate) use q8::{Q8Builder, QK as Q8_BLOCK};

/// Below this many multiply-adds a product runs on the calling thread: handing work to the
/// pool costs a few microseconds.
const PARALLEL_MIN_WORK: usize = 1 << 15;

/// True when the AVX2+FMA kernels can run (detected once, then cached by std).
#[inline]
pub(crate) fn has_fma() -> bool {
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

/// `a * b + c`: one fused multiply-add when `FMA` (the AVX2 builds of the scan, where it is
/// one instruction), a multiply and an add otherwise (the portable build, where `mul_add`
/// would be a libm call). The two differ in the last bit at times; each is deterministic, and
/// prefill and decoding on one machine take the same build.
#[inline(always)]
pub(crate) fn fma_or<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `e^x` in plain f32 arithmetic that the compiler can vectorize (no libm call, no branch):
/// Cephes' `expf`, `x = n ln2 + r` with `|r| <= ln2 / 2`, a degree-6 polynomial for `e^r`,
/// and `2^n` put together from bits. Within 2 ulp of the exact value; inputs are clamped to
/// `[-87.3, 88.7]`, so it returns about 1e-38 where `e^x` would be subnormal or zero, and
/// never infinity. The scan calls it `E * N` times per token per layer, where its chain of
/// dependent operations is what the scan waits on: with fused multiply-adds (`FMA`) the chain
/// is half as long and the scan 1.5 times as fast.
#[inline(always)]
pub(crate) fn exp_fast<const FMA: bool>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer (to nearest even) in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let f = fma_or::<FMA>;
    let x = x.clamp(-87.336_54, 88.722_83);
    let t = f(x, LOG2E, ROUND);
    let n = t - ROUND;
    let r = f(-n, C2, f(-n, C1, x));
    let p = f(1.987_569_2e-4, r, 1.398_199_9e-3);
    let p = f(p, r, 8.333_452e-3);
    let p = f(p, r, 4.166_579_6e-2);
    let p = f(p, r, 1.666_666_5e-1);
    let p = f(p, r, 0.5);
    let e_r = f(p, r * r, r + 1.0);
    // n is in [-126, 128]; the low bits of t hold n + 0x40_0000.
    let n_i = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    // 2^n as two factors, so that n = 128 (e^88.7 rounds to n = 128) does not overflow the
    // exponent field.
    let half = n_i >> 1;
    let s1 = f32::from_bits(((half + 127) as u32) << 23);
    let s2 = f32::from_bits(((n_i - half + 127) as u32) << 23);
    e_r * s1 * s2
}

/// `x * sigmoid(x)`, as `x / (1 + e^-x)`. Branch-free (built on [`exp_fast`]) so that the
/// scan computes it eight channels at a time; within a few ulp of the libm form.
#[inline(always)]
pub(crate) fn silu<const FMA: bool>(x: f32) -> f32 {
    x / (1.0 + exp_fast::<FMA>(-x))
}

/// `ln(x)` for finite `x > 0` (what [`softplus`] needs: `x >= 1`), branch-free: `x = m 2^e`
/// with `m` in `[sqrt(1/2), sqrt(2))`, then the Cephes polynomial for `ln(m)`. Within 2 ulp.
#[inline(always)]
fn ln_fast<const FMA: bool>(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let fm = fma_or::<FMA>;
    let bits = x.to_bits();
    // m in [0.5, 1), x = m 2^e.
    let e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    let small = m < SQRT_HALF;
    let e = (e - i32::from(small)) as f32;
    let f = if small { m + m - 1.0 } else { m - 1.0 };
    let z = f * f;
    let mut p = 7.037_683_6e-2;
    for c in [
        -1.151_461e-1,
        1.167_699_9e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_5e-1,
        -2.499_999_4e-1,
        3.333_333e-1,
    ] {
        p = fm(p, f, c);
    }
    let p = p * f * z;
    let y = fm(-2.121_944_4e-4, e, p) - 0.5 * z;
    fm(0.693_359_4, e, f + y)
}

/// `ln(1 + e^x)`, and `x` itself above 20 (torch's threshold). Branch-free (built on
/// [`exp_fast`] and [`ln_fast`], with `ln(1 + v) = ln(u) v / (u - 1)` for `u = 1 + v`, exact
/// where `u` rounds to 1), so that the scan computes it eight channels at a time; within a few
/// ulp of the libm form, except below -87.3, where `e^x` is subnormal and this returns about
/// 1e-38 (a time step that small changes nothing in the scan).
#[inline(always)]
pub(crate) fn softplus<const FMA: bool>(x: f32) -> f32 {
    let v = exp_fast::<FMA>(x.min(20.0));
    let u = 1.0 + v;
    let d = u - 1.0;
    let l = if d == 0.0 {
        v
    } else {
        ln_fast::<FMA>(u) * (v / d)
    };
    if x > 20.0 {
        x
    } else {
        l
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
pub(crate) fn scatter_bands(scratch: &[f32], per: usize, n: usize, rows_n: usize, ys: &mut [f32]) {
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
pub(crate) fn test_data(n: usize, seed: u32) -> Vec<f32> {
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
        exp_within_two_ulp::<false>();
        exp_within_two_ulp::<true>();
    }

    fn exp_within_two_ulp<const FMA: bool>() {
        let exp_fast = exp_fast::<FMA>;
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

    /// Values from -100 to 100 and a few edges, dense near zero.
    fn sweep() -> Vec<f32> {
        let mut xs: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 0.005).collect();
        xs.extend([
            -100.0, -90.0, -87.0, -30.0, -17.0, 19.999, 20.0, 20.001, 50.0, 88.0, 100.0,
        ]);
        xs.extend([1e-30, -1e-30, 1e-7, -1e-7, 0.0]);
        xs
    }

    fn ulps(a: f32, b: f64) -> f64 {
        let b32 = b as f32;
        if a == b32 {
            return 0.0;
        }
        let ulp = f64::from(f32::from_bits(b32.abs().to_bits() + 1) - b32.abs());
        (f64::from(a) - b).abs() / ulp
    }

    #[test]
    fn silu_and_softplus_are_within_a_few_ulp() {
        silu_softplus_within::<false>();
        silu_softplus_within::<true>();
    }

    fn silu_softplus_within<const FMA: bool>() {
        let (silu, softplus) = (silu::<FMA>, softplus::<FMA>);
        let (mut worst_silu, mut worst_softplus) = (0.0f64, 0.0f64);
        for x in sweep() {
            let xd = f64::from(x);
            let silu_ref = xd / (1.0 + (-xd).exp());
            let sp_ref = if x > 20.0 { xd } else { xd.exp().ln_1p() };
            if silu_ref.abs() > 1e-30 {
                worst_silu = worst_silu.max(ulps(silu(x), silu_ref));
            }
            if sp_ref >= f64::from(f32::MIN_POSITIVE) {
                worst_softplus = worst_softplus.max(ulps(softplus(x), sp_ref));
            } else {
                // Where e^x is subnormal, exp_fast's clamp gives about 1e-38 instead.
                assert!(softplus(x) > 0.0 && softplus(x) < 2e-38, "softplus({x})");
            }
        }
        assert!(worst_silu <= 4.0, "silu off by {worst_silu} ulp");
        assert!(
            worst_softplus <= 4.0,
            "softplus off by {worst_softplus} ulp"
        );
        // Far below zero softplus is e^x itself, and silu a vanishing negative number.
        assert!((softplus(-30.0) / (-30.0f32).exp() - 1.0).abs() < 1e-6);
        assert!(silu(-100.0) <= 0.0 && silu(-100.0) > -1e-30);
    }

    #[test]
    fn activations() {
        assert!((silu::<true>(1.0) - 0.731_058_6).abs() < 1e-6);
        assert_eq!(softplus::<true>(30.0), 30.0);
        assert!((softplus::<false>(0.0) - std::f32::consts::LN_2).abs() < 1e-7);
        assert!((gelu(1.0) - 0.841_344_7).abs() < 1e-6);
        assert!((gelu(-3.0) - -0.004_049_7).abs() < 1e-6);
        assert!((erf(0.5) - 0.520_499_9).abs() < 1e-7);
        assert!((erf(3.0) - 0.999_977_9).abs() < 1e-7);
    }
}
