//! Dequantization of the k-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (256-element super-blocks).
//!
//! Each function is ggml's `dequantize_row_q*_K` (`ggml-quants.c`) operation for operation: the
//! scale products are formed first (`dl = d * sc`), then `dl * q - ml`, all in f32 and without
//! fused multiply-adds, which is what makes the output bit-identical to llama.cpp's on x86-64
//! and to the `gguf` Python package's numpy version. Every function takes whole blocks.

use super::f16_of;

/// Q2_K: scales[16], qs[64], d, dmin.
pub(crate) fn dequantize_q2_k(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(84) {
        let scales = &b[0..16];
        let qs = &b[16..80];
        let d = f16_of(b[80], b[81]);
        let min = f16_of(b[82], b[83]);
        let mut is = 0;
        for n in 0..2 {
            let q = &qs[32 * n..32 * n + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let sc = scales[is];
                    is += 1;
                    let dl = d * f32::from(sc & 0x0F);
                    let ml = min * f32::from(sc >> 4);
                    for &qv in &q[16 * half..16 * half + 16] {
                        out.push(dl * f32::from(((qv >> shift) & 3) as i8) - ml);
                    }
                }
            }
        }
    }
}

/// The sixteen 6-bit scales of a Q3_K block, unpacked as ggml does with `kmask1`/`kmask2`.
fn q3_k_scales(packed: &[u8]) -> [i8; 16] {
    let word = |i: usize| {
        u32::from_le_bytes([
            packed[4 * i],
            packed[4 * i + 1],
            packed[4 * i + 2],
            packed[4 * i + 3],
        ])
    };
    const KMASK1: u32 = 0x0303_0303;
    const KMASK2: u32 = 0x0f0f_0f0f;
    let (a0, a1, tmp) = (word(0), word(1), word(2));
    let aux = [
        (a0 & KMASK2) | ((tmp & KMASK1) << 4),
        (a1 & KMASK2) | (((tmp >> 2) & KMASK1) << 4),
        ((a0 >> 4) & KMASK2) | (((tmp >> 4) & KMASK1) << 4),
        ((a1 >> 4) & KMASK2) | (((tmp >> 6) & KMASK1) << 4),
    ];
    let mut s = [0i8; 16];
    for (i, w) in aux.iter().enumerate() {
        for (k, byte) in w.to_le_bytes().iter().enumerate() {
            s[4 * i + k] = *byte as i8;
        }
    }
    s
}

/// Q3_K: hmask[32], qs[64], scales[12], d.
pub(crate) fn dequantize_q3_k(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(110) {
        let hm = &b[0..32];
        let qs = &b[32..96];
        let scales = q3_k_scales(&b[96..108]);
        let d_all = f16_of(b[108], b[109]);
        let mut is = 0;
        let mut m: u8 = 1;
        for n in 0..2 {
            let q = &qs[32 * n..32 * n + 32];
            for shift in [0u32, 2, 4, 6] {
                for half in 0..2 {
                    let dl = d_all * f32::from(i16::from(scales[is]) - 32);
                    is += 1;
                    for l in 16 * half..16 * half + 16 {
                        let low = i32::from(((q[l] >> shift) & 3) as i8);
                        let high = if hm[l] & m != 0 { 0 } else { 4 };
                        out.push(dl * (low - high) as f32);
                    }
                }
                m = m.wrapping_shl(1);
            }
        }
    }
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of Q4_K and Q5_K.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K: d, dmin, scales[12], qs[128].
pub(crate) fn dequantize_q4_k(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(144) {
        let d = f16_of(b[0], b[1]);
        let min = f16_of(b[2], b[3]);
        let scales = &b[4..16];
        let qs = &b[16..144];
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            let q = &qs[32 * c..32 * c + 32];
            out.extend(q.iter().map(|&v| d1 * f32::from(v & 0x0F) - m1));
            out.extend(q.iter().map(|&v| d2 * f32::from(v >> 4) - m2));
        }
    }
}

/// Q5_K: d, dmin, scales[12], qh[32], qs[128].
pub(crate) fn dequantize_q5_k(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(176) {
        let d = f16_of(b[0], b[1]);
        let min = f16_of(b[2], b[3]);
        let scales = &b[4..16];
        let qh = &b[16..48];
        let qs = &b[48..176];
        let (mut u1, mut u2) = (1u8, 2u8);
        for c in 0..4 {
            let (sc1, m1) = scale_min_k4(2 * c, scales);
            let (sc2, m2) = scale_min_k4(2 * c + 1, scales);
            let (d1, m1) = (d * f32::from(sc1), min * f32::from(m1));
            let (d2, m2) = (d * f32::from(sc2), min * f32::from(m2));
            let ql = &qs[32 * c..32 * c + 32];
            out.extend(ql.iter().zip(qh).map(|(&v, &h)| {
                let q = (v & 0x0F) + if h & u1 != 0 { 16 } else { 0 };
                d1 * f32::from(q) - m1
            }));
            out.extend(ql.iter().zip(qh).map(|(&v, &h)| {
                let q = (v >> 4) + if h & u2 != 0 { 16 } else { 0 };
                d2 * f32::from(q) - m2
            }));
            u1 = u1.wrapping_shl(2);
            u2 = u2.wrapping_shl(2);
        }
    }
}

/// Q6_K: ql[128], qh[64], scales[16] (i8), d.
pub(crate) fn dequantize_q6_k(blocks: &[u8], out: &mut Vec<f32>) {
    for b in blocks.chunks_exact(210) {
        let d = f16_of(b[208], b[209]);
        for n in 0..2 {
            let ql = &b[64 * n..64 * n + 64];
            let qh = &b[128 + 32 * n..128 + 32 * n + 32];
            let sc = &b[192 + 8 * n..192 + 8 * n + 8];
            let mut y = [0f32; 128];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                let s = |k: usize| f32::from(sc[is + k] as i8);
                y[l] = d * s(0) * f32::from(q1);
                y[l + 32] = d * s(2) * f32::from(q2);
                y[l + 64] = d * s(4) * f32::from(q3);
                y[l + 96] = d * s(6) * f32::from(q4);
            }
            out.extend_from_slice(&y);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths() {
        for (f, size) in [
            (dequantize_q2_k as fn(&[u8], &mut Vec<f32>), 84),
            (dequantize_q3_k, 110),
            (dequantize_q4_k, 144),
            (dequantize_q5_k, 176),
            (dequantize_q6_k, 210),
        ] {
            let mut out = Vec::new();
            f(&vec![0u8; 2 * size], &mut out);
            assert_eq!(out.len(), 512);
            assert!(out.iter().all(|&v| v == 0.0));
        }
    }
}
