//! Block-quantized ggml types: dequantization to f32 and the reference quantizers.
//!
//! One file per family: `legacy.rs` for the 32-element types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0),
//! `kquants.rs` for the 256-element k-quants (Q2_K..Q6_K). The results are bit-exact with ggml's
//! own functions (see each file), which the tests check against values computed by the `gguf`
//! Python package (`fixtures/gguf/`). The IQ, TQ and MXFP4 families are laid out (a file that
//! holds them opens and lists) but not decoded: asking for their values is a
//! [`super::GgufError::CannotDecode`] error.

pub(crate) mod kquants;
pub(crate) mod legacy;

use super::types::GgmlType;

/// An IEEE half (little-endian bytes `lo`, `hi`) as f32, exactly (ggml's `GGML_FP16_TO_FP32`).
pub(crate) fn f16_of(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).to_f32()
}

/// f32 to the nearest half, ties to even (ggml's `GGML_FP32_TO_FP16`), as bits.
pub(crate) fn f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

/// Appends the f32 values of `blocks` (whole blocks of `ty`) to `out`. Returns false, and
/// appends nothing, for a type tantra does not decode or a length that is not whole blocks.
pub fn dequantize(ty: GgmlType, blocks: &[u8], out: &mut Vec<f32>) -> bool {
    let size = ty.type_size() as usize;
    if !ty.can_dequantize() || !blocks.len().is_multiple_of(size) {
        return false;
    }
    out.reserve(blocks.len() / size * ty.block_size() as usize);
    match ty {
        GgmlType::Q4_0 => legacy::dequantize_q4_0(blocks, out),
        GgmlType::Q4_1 => legacy::dequantize_q4_1(blocks, out),
        GgmlType::Q5_0 => legacy::dequantize_q5_0(blocks, out),
        GgmlType::Q5_1 => legacy::dequantize_q5_1(blocks, out),
        GgmlType::Q8_0 => legacy::dequantize_q8_0(blocks, out),
        GgmlType::Q2_K => kquants::dequantize_q2_k(blocks, out),
        GgmlType::Q3_K => kquants::dequantize_q3_k(blocks, out),
        GgmlType::Q4_K => kquants::dequantize_q4_k(blocks, out),
        GgmlType::Q5_K => kquants::dequantize_q5_k(blocks, out),
        GgmlType::Q6_K => kquants::dequantize_q6_k(blocks, out),
        _ => return false,
    }
    true
}

/// The types tantra quantizes to, byte-identical with llama.cpp's reference quantizers.
pub const QUANTIZERS: [GgmlType; 2] = [GgmlType::Q8_0, GgmlType::Q4_0];

/// Appends the blocks of `x` quantized to `ty` (Q8_0 or Q4_0) to `out`. Returns false, and
/// appends nothing, for another type or a length that is not a multiple of 32.
pub fn quantize(ty: GgmlType, x: &[f32], out: &mut Vec<u8>) -> bool {
    if !x.len().is_multiple_of(legacy::QK) {
        return false;
    }
    match ty {
        GgmlType::Q8_0 => legacy::quantize_q8_0(x, out),
        GgmlType::Q4_0 => legacy::quantize_q4_0(x, out),
        _ => return false,
    }
    true
}
