//! The 32-element block types Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0: dequantization, and the
//! reference quantizers of Q8_0 and Q4_0.
//!
//! Each function follows ggml's `ggml-quants.c` (`dequantize_row_*`, `quantize_row_*_ref`)
//! operation for operation, in f32 and without fused multiply-adds (Rust never contracts
//! `a * b + c`), so that the results are bit-for-bit what llama.cpp computes on x86-64. Every
//! function takes whole blocks; the caller has checked the lengths.

use super::{f16_bits, f16_of};

pub(crate) const QK: usize = 32;

/// Q4_0: `d`, then 16 bytes of nibbles; element e is `(nibble - 8) * d`.
pub(crate) fn dequantize_q4_0(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(18) {
        let d = f16_of(b[0], b[1]);
        let qs = &b[2..18];
        let mut y = [0f32; QK];
        for j in 0..QK / 2 {
            let x0 = i32::from(qs[j] & 0x0F) - 8;
            let x1 = i32::from(qs[j] >> 4) - 8;
            y[j] = x0 as f32 * d;
            y[j + QK / 2] = x1 as f32 * d;
        }
        out.extend_from_slice(&y);
    }
}

/// Q4_1: `d`, `m`, 16 bytes of nibbles; element e is `nibble * d + m`.
pub(crate) fn dequantize_q4_1(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(20) {
        let d = f16_of(b[0], b[1]);
        let m = f16_of(b[2], b[3]);
        let qs = &b[4..20];
        let mut y = [0f32; QK];
        for j in 0..QK / 2 {
            let x0 = i32::from(qs[j] & 0x0F);
            let x1 = i32::from(qs[j] >> 4);
            y[j] = x0 as f32 * d + m;
            y[j + QK / 2] = x1 as f32 * d + m;
        }
        out.extend_from_slice(&y);
    }
}

/// The 5-bit values of a Q5 block: low nibbles from `qs`, the fifth bit from `qh`.
fn q5_values(qh: u32, qs: &[u8]) -> [i32; QK] {
    let mut q = [0i32; QK];
    for j in 0..QK / 2 {
        let xh0 = ((qh >> j) << 4) & 0x10;
        let xh1 = (qh >> (j + 12)) & 0x10;
        q[j] = (u32::from(qs[j] & 0x0F) | xh0) as i32;
        q[j + QK / 2] = (u32::from(qs[j] >> 4) | xh1) as i32;
    }
    q
}

/// Q5_0: `d`, `qh` (u32), 16 bytes of nibbles; element e is `(q - 16) * d`.
pub(crate) fn dequantize_q5_0(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(22) {
        let d = f16_of(b[0], b[1]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let q = q5_values(qh, &b[6..22]);
        out.extend(q.iter().map(|&q| (q - 16) as f32 * d));
    }
}

/// Q5_1: `d`, `m`, `qh` (u32), 16 bytes of nibbles; element e is `q * d + m`.
pub(crate) fn dequantize_q5_1(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(24) {
        let d = f16_of(b[0], b[1]);
        let m = f16_of(b[2], b[3]);
        let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let q = q5_values(qh, &b[8..24]);
        out.extend(q.iter().map(|&q| q as f32 * d + m));
    }
}

/// Q8_0: `d`, then 32 signed bytes; element e is `q * d`.
pub(crate) fn dequantize_q8_0(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(34) {
        let d = f16_of(b[0], b[1]);
        out.extend(b[2..34].iter().map(|&q| f32::from(q as i8) * d));
    }
}

/// ggml's `MAX(a, b)`: `a > b ? a : b` (which differs from `f32::max` on NaN).
fn c_max(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// `quantize_row_q8_0_ref`: `d = max|x| / 127`, `q = round(x / d)` (half away from zero), `d`
/// stored as f16 while the quants use the f32 `d`. `x.len()` is a multiple of 32.
pub(crate) fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(QK) {
        let amax = block.iter().fold(0f32, |m, &v| c_max(m, v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bits(d).to_le_bytes());
        // `as i8` saturates where C's conversion is undefined (NaN, out of range): the values
        // that reach it from finite input lie in [-127, 127].
        out.extend(block.iter().map(|&v| (v * id).round() as i8 as u8));
    }
}

/// `quantize_row_q4_0_ref`: the element of largest magnitude (the first on ties) with its sign
/// gives `d = max / -8`; `q = min(15, trunc(x / d + 8.5))`. `x.len()` is a multiple of 32.
pub(crate) fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    for block in x.chunks_exact(QK) {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in block {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16_bits(d).to_le_bytes());
        // C: `MIN(15, (int8_t)(x*id + 8.5f))`, then stored as a nibble.
        let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
        for j in 0..QK / 2 {
            out.push((q(block[j]) & 0x0F) | (q(block[j + QK / 2]) << 4));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trips_its_own_grid() {
        // Values on the grid d * q come back exactly when d is an f16.
        let x: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        let mut q = Vec::new();
        quantize_q8_0(&x, &mut q);
        assert_eq!(q.len(), 34);
        let mut y = Vec::new();
        dequantize_q8_0(&q, &mut y);
        let amax = 8.0f32;
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= amax / 127.0, "{a} {b}");
        }
    }

    #[test]
    fn q4_0_puts_the_extreme_on_zero() {
        let mut x = vec![0.25f32; 32];
        x[3] = -2.0;
        let mut q = Vec::new();
        quantize_q4_0(&x, &mut q);
        // d = -2 / -8 = 0.25; x[3] -> trunc(-8 + 8.5) = 0; 0.25 -> trunc(1 + 8.5) = 9.
        assert_eq!(f16_of(q[0], q[1]), 0.25);
        assert_eq!(q[2 + 3] & 0x0F, 0);
        assert_eq!(q[2] & 0x0F, 9);
        let mut y = Vec::new();
        dequantize_q4_0(&q, &mut y);
        assert_eq!(y[3], -2.0);
        assert_eq!(y[0], 0.25);
    }

    #[test]
    fn zero_blocks_quantize_to_zero() {
        let mut q = Vec::new();
        quantize_q4_0(&[0.0; 32], &mut q);
        quantize_q8_0(&[0.0; 32], &mut q);
        let mut y = Vec::new();
        dequantize_q4_0(&q[..18], &mut y);
        dequantize_q8_0(&q[18..], &mut y);
        assert!(y.iter().all(|&v| v == 0.0));
    }
}
