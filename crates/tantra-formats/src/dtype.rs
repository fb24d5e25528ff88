//! Element types, spelled as safetensors spells them.
//!
//! Every format in tantra maps its own type names onto [`DType`], so that a tensor read from a
//! PyTorch archive and one read from a safetensors file can be compared by name alone.

use std::fmt;
use std::str::FromStr;

/// An element type. The string form (`Display`, `FromStr`) is the safetensors spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Bool,
    U8,
    I8,
    F8E5M2,
    F8E4M3,
    F8E8M0,
    F8E4M3Fnuz,
    F8E5M2Fnuz,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
    /// 4-bit float (sub-byte: two elements per byte).
    F4,
    /// 6-bit float, 2 exponent bits, 3 mantissa bits (sub-byte).
    F6E2M3,
    /// 6-bit float, 3 exponent bits, 2 mantissa bits (sub-byte).
    F6E3M2,
}

/// Every dtype, in the order safetensors documents them.
pub const ALL_DTYPES: [DType; 22] = [
    DType::Bool,
    DType::U8,
    DType::I8,
    DType::F8E5M2,
    DType::F8E4M3,
    DType::F8E8M0,
    DType::F8E4M3Fnuz,
    DType::F8E5M2Fnuz,
    DType::I16,
    DType::U16,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::U32,
    DType::F32,
    DType::C64,
    DType::F64,
    DType::I64,
    DType::U64,
    DType::F4,
    DType::F6E2M3,
    DType::F6E3M2,
];

impl DType {
    /// The safetensors spelling (`"F32"`, `"BF16"`, `"F8_E4M3"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::Bool => "BOOL",
            DType::U8 => "U8",
            DType::I8 => "I8",
            DType::F8E5M2 => "F8_E5M2",
            DType::F8E4M3 => "F8_E4M3",
            DType::F8E8M0 => "F8_E8M0",
            DType::F8E4M3Fnuz => "F8_E4M3FNUZ",
            DType::F8E5M2Fnuz => "F8_E5M2FNUZ",
            DType::I16 => "I16",
            DType::U16 => "U16",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I32 => "I32",
            DType::U32 => "U32",
            DType::F32 => "F32",
            DType::C64 => "C64",
            DType::F64 => "F64",
            DType::I64 => "I64",
            DType::U64 => "U64",
            DType::F4 => "F4",
            DType::F6E2M3 => "F6_E2M3",
            DType::F6E3M2 => "F6_E3M2",
        }
    }

    /// Bits per element (4 and 6 for the sub-byte floats).
    pub fn bits(self) -> u64 {
        match self {
            DType::F4 => 4,
            DType::F6E2M3 | DType::F6E3M2 => 6,
            DType::Bool
            | DType::U8
            | DType::I8
            | DType::F8E5M2
            | DType::F8E4M3
            | DType::F8E8M0
            | DType::F8E4M3Fnuz
            | DType::F8E5M2Fnuz => 8,
            DType::I16 | DType::U16 | DType::F16 | DType::BF16 => 16,
            DType::I32 | DType::U32 | DType::F32 => 32,
            DType::C64 | DType::F64 | DType::I64 | DType::U64 => 64,
        }
    }

    /// Whole bytes per element, or `None` for the sub-byte types.
    pub fn size(self) -> Option<u64> {
        let bits = self.bits();
        bits.is_multiple_of(8).then_some(bits / 8)
    }

    /// The alignment the reference writer gives this dtype's data (its element size, 1 for
    /// sub-byte types).
    pub fn alignment(self) -> u64 {
        self.size().unwrap_or(1)
    }

    /// Bytes needed for `numel` elements, or `None` on overflow or when `numel * bits` is not a
    /// whole number of bytes.
    pub fn byte_len(self, numel: u64) -> Option<u64> {
        let bits = numel.checked_mul(self.bits())?;
        bits.is_multiple_of(8).then_some(bits / 8)
    }

    /// True for the floating-point types (including the 8-, 6- and 4-bit ones).
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DType::F8E5M2
                | DType::F8E4M3
                | DType::F8E8M0
                | DType::F8E4M3Fnuz
                | DType::F8E5M2Fnuz
                | DType::F16
                | DType::BF16
                | DType::F32
                | DType::F64
                | DType::F4
                | DType::F6E2M3
                | DType::F6E3M2
        )
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a dtype name that safetensors does not define.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?} (expected one of BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, C64, F8_*, F4, F6_*)")]
pub struct UnknownDType(pub String);

impl FromStr for DType {
    type Err = UnknownDType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_DTYPES
            .iter()
            .copied()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in ALL_DTYPES {
            assert_eq!(d.as_str().parse::<DType>(), Ok(d));
        }
        assert!("F128".parse::<DType>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(DType::F32.size(), Some(4));
        assert_eq!(DType::BF16.byte_len(3), Some(6));
        assert_eq!(DType::F4.byte_len(3), None);
        assert_eq!(DType::F4.byte_len(4), Some(2));
        assert_eq!(DType::F6E2M3.byte_len(4), Some(3));
        assert_eq!(DType::F64.byte_len(u64::MAX), None);
    }
}
