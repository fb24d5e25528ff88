//! The random numbers behind initialization, specified here so that a seed means the same
//! weights forever and on every machine.
//!
//! Why not the `rand` crate: its generators and distributions may change their streams between
//! versions, and its float sampling goes through platform `libm` functions (`ln`, `cos`) whose
//! last bit differs between C libraries. A weight file committed to the repository must be
//! reproducible byte for byte, so every step is written down and uses only operations that IEEE
//! 754 defines exactly (`+ - * /`, `sqrt`, rounding to `f32`) in a fixed order:
//!
//! - **Seeding.** A tensor's stream is keyed by `(seed, tensor name)`:
//!   `key = splitmix64(seed XOR fnv1a64(name))`; the four words of a xoshiro256** state are the
//!   next four outputs of SplitMix64 started at `key`. Every tensor can therefore be
//!   regenerated alone, in any order, which is what lets full-size generation stream.
//! - **Uniform** `[0, 1)`: `(next_u64 >> 11) * 2^-53` (exact in `f64`).
//! - **Normal**: Marsaglia's polar method, both values of a pair used, with [`ln`] below.
//! - **`ln`, `exp`, `expm1`**: written here with range reduction and series in plain `f64`
//!   arithmetic (no FMA, no `libm`), accurate to a few ulps of `f64` — far below the `f32`
//!   rounding that follows — and, above all, identical everywhere.
//!
//! Values are computed in `f64` and rounded once to `f32` (`as f32`, round-to-nearest-even).

/// FNV-1a, 64-bit: hashes a tensor name into the seed.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// One SplitMix64 step: advances `state` and returns the mixed output.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The key of one tensor's stream: `splitmix64(seed ^ fnv1a64(name))`.
pub fn tensor_key(seed: u64, name: &str) -> u64 {
    let mut s = seed ^ fnv1a64(name.as_bytes());
    splitmix64(&mut s)
}

/// xoshiro256** (Blackman and Vigna), seeded from SplitMix64, with the samplers tantra needs.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
    /// The second value of the last polar-method pair, not yet handed out.
    spare_normal: Option<f64>,
}

impl Rng {
    /// A generator whose four state words are the next four SplitMix64 outputs from `key`.
    pub fn from_key(key: u64) -> Self {
        let mut sm = key;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng {
            s,
            spare_normal: None,
        }
    }

    /// The generator of tensor `name` under `seed` (see the module docs).
    pub fn for_tensor(seed: u64, name: &str) -> Self {
        Self::from_key(tensor_key(seed, name))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal, by Marsaglia's polar method (both values of each pair are used).
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare_normal.take() {
            return v;
        }
        loop {
            let u = 2.0 * self.uniform() - 1.0;
            let v = 2.0 * self.uniform() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let f = (-2.0 * ln(s) / s).sqrt();
                self.spare_normal = Some(v * f);
                return u * f;
            }
        }
    }
}

/// `ln 2` split into a head with zeros in its low bits (so `k * LN2_HI` is exact for the `k`
/// that occur) and the rest.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-01
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10

/// Natural logarithm in plain `f64` arithmetic, for `x > 0` finite (returns NaN otherwise).
///
/// `x = m * 2^e` with `m` in `[sqrt(1/2), sqrt(2))`, `ln m = 2 atanh(s)`, `s = (m-1)/(m+1)`,
/// `|s| <= 0.172`, summed to `s^41` (the next term is below `1e-33`).
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 || x.is_infinite() {
        return f64::NAN;
    }
    let (mut m, mut e) = frexp(x);
    if m < std::f64::consts::FRAC_1_SQRT_2 {
        m *= 2.0;
        e -= 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    // Horner over 1 + s2/3 + s2^2/5 + ... + s2^20/41.
    let mut acc = 0.0;
    let mut k = 41.0;
    while k >= 1.0 {
        acc = acc * s2 + 1.0 / k;
        k -= 2.0;
    }
    let ln_m = 2.0 * s * acc;
    let e = f64::from(e);
    e * LN2_HI + (e * LN2_LO + ln_m)
}

/// `x = m * 2^e` with `m` in `[0.5, 1)`, for finite positive `x` (subnormals normalized).
fn frexp(x: f64) -> (f64, i32) {
    let mut bits = x.to_bits();
    let mut adjust = 0;
    if (bits >> 52) & 0x7ff == 0 {
        // Subnormal: scale up by 2^54 exactly.
        bits = (x * f64::from_bits(0x4350_0000_0000_0000)).to_bits();
        adjust = -54;
    }
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let m = f64::from_bits((bits & !(0x7ff << 52)) | (1022 << 52));
    (m, exp - 1022 + adjust)
}

/// `e^x` in plain `f64` arithmetic. Saturates to `0` / infinity outside about `[-708, 709]`.
///
/// `x = k ln2 + r`, `|r| <= ln2 / 2`, Taylor series of `e^r` to `r^20`, scaled by `2^k`.
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x > 709.0 {
        return f64::INFINITY;
    }
    if x < -708.0 {
        return 0.0;
    }
    let k = (x / std::f64::consts::LN_2).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut term = 1.0;
    let mut sum = 1.0;
    for i in 1..=20 {
        term = term * r / f64::from(i);
        sum += term;
    }
    // k is in [-1022, 1023] here: 2^k is a normal number.
    let scale = f64::from_bits(((k as i64 + 1023) as u64) << 52);
    sum * scale
}

/// `e^x - 1`, accurate for small `|x|` (Taylor series for `|x| < 0.5`, [`exp`] otherwise).
pub fn expm1(x: f64) -> f64 {
    if x.abs() < 0.5 {
        let mut term = x;
        let mut sum = x;
        for i in 2..=25 {
            term = term * x / f64::from(i);
            sum += term;
        }
        sum
    } else {
        exp(x) - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_known_stream() {
        // SplitMix64 from 0 gives the published first output 0xe220a8397b1dcdaf.
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xe220_a839_7b1d_cdaf);
        // Stability: these values are part of the weight files' definition; never change them.
        let mut r = Rng::from_key(0);
        let first: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            first,
            vec![
                0x99ec_5f36_cb75_f2b4,
                0xbf6e_1f78_4956_452a,
                0x1a5f_849d_4933_e6e0
            ]
        );
    }

    #[test]
    fn ln_exp_agree_with_std_closely() {
        for &x in &[
            1e-300, 1e-10, 0.001, 0.1, 0.5, 0.999, 1.0, 1.5, 2.0, 10.0, 1e10, 5e-324,
        ] {
            let a = ln(x);
            let b = x.ln();
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0),
                "ln {x}: {a} {b}"
            );
        }
        for &x in &[
            -700.0, -20.0, -1.0, -1e-5, 0.0, 1e-5, 0.3, 1.0, 5.0, 100.0, 700.0,
        ] {
            let a = exp(x);
            let b = x.exp();
            assert!((a - b).abs() <= 8.0 * f64::EPSILON * b, "exp {x}: {a} {b}");
        }
        for &x in &[-0.1, -0.001, -1e-4, 1e-8, 0.4, -2.0] {
            let a = expm1(x);
            let b = x.exp_m1();
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs(),
                "expm1 {x}: {a} {b}"
            );
        }
        assert!(ln(0.0).is_nan() && ln(-1.0).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::for_tensor(7, "x");
        let n = 200_000;
        let (mut s1, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let v = r.normal();
            s1 += v;
            s2 += v * v;
        }
        let mean = s1 / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn streams_depend_on_seed_and_name() {
        let a = Rng::for_tensor(1, "a").next_u64();
        assert_eq!(a, Rng::for_tensor(1, "a").next_u64());
        assert_ne!(a, Rng::for_tensor(2, "a").next_u64());
        assert_ne!(a, Rng::for_tensor(1, "b").next_u64());
    }
}
