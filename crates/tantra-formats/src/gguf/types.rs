//! ggml's tensor types: id, name, block size and bytes per block.
//!
//! The table follows `ggml.h` and the `static_assert`s of `ggml-common.h` (Aug 2026). A type id
//! is looked up, never indexed: an id that ggml removed, one past the table, or one whose block
//! layout tantra does not know is an error that names it, so that a file is never laid out by
//! a guessed size.

use std::fmt;

use crate::dtype::DType;

/// Elements per k-quant super-block.
pub const QK_K: u64 = 256;

/// A ggml tensor type whose block layout tantra knows.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
}

/// What an id read from a file stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeId {
    Known(GgmlType),
    /// An id ggml used once and removed (4, 5, 31-33, 36-38).
    Removed,
    /// An id ggml defines whose block layout tantra does not know (40-42 in Aug 2026).
    LayoutUnknown,
    /// Past every id ggml defines.
    Unknown,
}

/// `(type, id, name, elements per block, bytes per block)`.
const TABLE: [(GgmlType, u32, &str, u64, u64); 32] = [
    (GgmlType::F32, 0, "F32", 1, 4),
    (GgmlType::F16, 1, "F16", 1, 2),
    (GgmlType::Q4_0, 2, "Q4_0", 32, 18),
    (GgmlType::Q4_1, 3, "Q4_1", 32, 20),
    (GgmlType::Q5_0, 6, "Q5_0", 32, 22),
    (GgmlType::Q5_1, 7, "Q5_1", 32, 24),
    (GgmlType::Q8_0, 8, "Q8_0", 32, 34),
    (GgmlType::Q8_1, 9, "Q8_1", 32, 36),
    (GgmlType::Q2_K, 10, "Q2_K", QK_K, 84),
    (GgmlType::Q3_K, 11, "Q3_K", QK_K, 110),
    (GgmlType::Q4_K, 12, "Q4_K", QK_K, 144),
    (GgmlType::Q5_K, 13, "Q5_K", QK_K, 176),
    (GgmlType::Q6_K, 14, "Q6_K", QK_K, 210),
    (GgmlType::Q8_K, 15, "Q8_K", QK_K, 292),
    (GgmlType::IQ2_XXS, 16, "IQ2_XXS", QK_K, 66),
    (GgmlType::IQ2_XS, 17, "IQ2_XS", QK_K, 74),
    (GgmlType::IQ3_XXS, 18, "IQ3_XXS", QK_K, 98),
    (GgmlType::IQ1_S, 19, "IQ1_S", QK_K, 50),
    (GgmlType::IQ4_NL, 20, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, 21, "IQ3_S", QK_K, 110),
    (GgmlType::IQ2_S, 22, "IQ2_S", QK_K, 82),
    (GgmlType::IQ4_XS, 23, "IQ4_XS", QK_K, 136),
    (GgmlType::I8, 24, "I8", 1, 1),
    (GgmlType::I16, 25, "I16", 1, 2),
    (GgmlType::I32, 26, "I32", 1, 4),
    (GgmlType::I64, 27, "I64", 1, 8),
    (GgmlType::F64, 28, "F64", 1, 8),
    (GgmlType::IQ1_M, 29, "IQ1_M", QK_K, 56),
    (GgmlType::BF16, 30, "BF16", 1, 2),
    (GgmlType::TQ1_0, 34, "TQ1_0", QK_K, 54),
    (GgmlType::TQ2_0, 35, "TQ2_0", QK_K, 66),
    (GgmlType::MXFP4, 39, "MXFP4", 32, 17),
];

/// `GGML_TYPE_COUNT` of the ggml this table follows.
pub const GGML_TYPE_COUNT: u32 = 43;

impl GgmlType {
    fn row(self) -> (GgmlType, u32, &'static str, u64, u64) {
        // Every variant has a row; the fallback is F32's row and is never taken.
        TABLE
            .iter()
            .copied()
            .find(|r| r.0 == self)
            .unwrap_or(TABLE[0])
    }

    /// The id written in a file.
    pub fn id(self) -> u32 {
        self.row().1
    }

    /// ggml's name (`Q4_0`, `Q6_K`, `BF16`).
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// Elements per block (1 for the plain types).
    pub fn block_size(self) -> u64 {
        self.row().3
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.row().4
    }

    /// What `id` stands for.
    pub fn from_id(id: u32) -> TypeId {
        if let Some(r) = TABLE.iter().find(|r| r.1 == id) {
            return TypeId::Known(r.0);
        }
        match id {
            4 | 5 | 31..=33 | 36..=38 => TypeId::Removed,
            40..=42 => TypeId::LayoutUnknown,
            _ => TypeId::Unknown,
        }
    }

    /// The type called `name` (ggml's spelling, any case).
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE
            .iter()
            .find(|r| r.2.eq_ignore_ascii_case(name))
            .map(|r| r.0)
    }

    /// The element type a plain (unquantized) type is read as; `None` for block types.
    pub fn plain_dtype(self) -> Option<DType> {
        Some(match self {
            GgmlType::F32 => DType::F32,
            GgmlType::F16 => DType::F16,
            GgmlType::BF16 => DType::BF16,
            GgmlType::F64 => DType::F64,
            GgmlType::I8 => DType::I8,
            GgmlType::I16 => DType::I16,
            GgmlType::I32 => DType::I32,
            GgmlType::I64 => DType::I64,
            _ => return None,
        })
    }

    /// The plain type that stores `dtype`, if GGUF has one.
    pub fn from_dtype(dtype: DType) -> Option<GgmlType> {
        Some(match dtype {
            DType::F32 => GgmlType::F32,
            DType::F16 => GgmlType::F16,
            DType::BF16 => GgmlType::BF16,
            DType::F64 => GgmlType::F64,
            DType::I8 => GgmlType::I8,
            DType::I16 => GgmlType::I16,
            DType::I32 => GgmlType::I32,
            DType::I64 => GgmlType::I64,
            _ => return None,
        })
    }

    /// True for the block-quantized types.
    pub fn is_quantized(self) -> bool {
        self.plain_dtype().is_none()
    }

    /// True when tantra dequantizes this type to f32 (see [`crate::gguf::quant`]).
    pub fn can_dequantize(self) -> bool {
        matches!(
            self,
            GgmlType::Q4_0
                | GgmlType::Q4_1
                | GgmlType::Q5_0
                | GgmlType::Q5_1
                | GgmlType::Q8_0
                | GgmlType::Q2_K
                | GgmlType::Q3_K
                | GgmlType::Q4_K
                | GgmlType::Q5_K
                | GgmlType::Q6_K
        )
    }

    /// Bytes of a tensor of `ne` (ggml order), `None` on overflow or when `ne[0]` is not a
    /// multiple of the block size.
    pub fn nbytes(self, ne: &[u64]) -> Option<u64> {
        let row = *ne.first().unwrap_or(&1);
        if !row.is_multiple_of(self.block_size()) {
            return None;
        }
        let mut n = (row / self.block_size()).checked_mul(self.type_size())?;
        for &d in ne.iter().skip(1) {
            n = n.checked_mul(d)?;
        }
        Some(n)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_gaps_are_named() {
        for r in TABLE {
            assert_eq!(GgmlType::from_id(r.1), TypeId::Known(r.0));
            assert_eq!(r.0.id(), r.1);
            assert_eq!(GgmlType::from_name(r.2), Some(r.0));
        }
        assert_eq!(GgmlType::from_id(4), TypeId::Removed);
        assert_eq!(GgmlType::from_id(37), TypeId::Removed);
        assert_eq!(GgmlType::from_id(41), TypeId::LayoutUnknown);
        assert_eq!(GgmlType::from_id(GGML_TYPE_COUNT), TypeId::Unknown);
        assert_eq!(GgmlType::from_id(u32::MAX), TypeId::Unknown);
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q4_0.nbytes(&[64, 3]), Some(2 * 18 * 3));
        assert_eq!(GgmlType::Q6_K.nbytes(&[256]), Some(210));
        assert_eq!(GgmlType::Q8_0.nbytes(&[33]), None);
        assert_eq!(GgmlType::F32.nbytes(&[1 << 62, 4]), None);
        assert_eq!(GgmlType::F32.nbytes(&[]), Some(4));
    }
}
