//! The precision weights are kept at in memory: the one choice `tantra run --dtype` and the
//! Python runtimes' `dtype=` make. Activations, states and the small vectors (norms, biases,
//! `A`, `D`, convolution taps) stay f32 whatever the choice; only the matrices change.

use std::fmt;
use std::str::FromStr;

/// How the runtime stores weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// 4 bytes per weight, exact.
    #[default]
    F32,
    /// 2 bytes per weight (bfloat16, rounded to nearest even), computed in f32. A bf16 tensor in
    /// the file is kept as it is.
    Bf16,
    /// 1.125 bytes per weight: blocks of 32 int8 values with one f32 scale each (llama.cpp's
    /// Q8_0 layout with an f32 scale); inputs quantized the same way, int8 dot products.
    Q8,
}

impl Precision {
    /// All precisions, in the order `--dtype` lists them.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Q8];

    /// The name `--dtype` takes: `f32`, `bf16`, `q8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Q8 => "q8",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A precision name that is none of `f32`, `bf16`, `q8`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dtype {0:?}: expected f32, bf16 or q8")]
pub struct UnknownPrecision(pub String);

impl FromStr for Precision {
    type Err = UnknownPrecision;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "q8" | "q8_0" | "int8" => Ok(Precision::Q8),
            _ => Err(UnknownPrecision(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>(), Ok(p));
        }
        assert_eq!("BF16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!(
            "f16".parse::<Precision>(),
            Err(UnknownPrecision("f16".into()))
        );
    }
}
