//! The three architectures behind one enum, so that commands and the store can handle "a model"
//! without matching on families everywhere: parse a name, pick a preset, read a config, list
//! its parameters, initialize it.

use std::fmt;
use std::str::FromStr;

use tantra_formats::TensorSource;

use crate::error::ConfigError;
use crate::init::InitSource;
use crate::mamba::MambaConfig;
use crate::mamba_multimodal::MambaMultimodalConfig;
use crate::ocr_native::OcrNativeConfig;
use crate::params::{count, ParamSpec};

/// A model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Architecture {
    Mamba,
    MambaMultimodal,
    OcrNative,
}

/// A name that is not an architecture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model {0:?} (expected mamba, mamba_multimodal or ocr_native)")]
pub struct UnknownArchitecture(pub String);

impl Architecture {
    pub const ALL: [Architecture; 3] = [
        Architecture::Mamba,
        Architecture::MambaMultimodal,
        Architecture::OcrNative,
    ];

    /// `mamba`, `mamba_multimodal` or `ocr_native`: the model name in the store and the
    /// `model_type` of its config.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Mamba => "mamba",
            Architecture::MambaMultimodal => "mamba_multimodal",
            Architecture::OcrNative => "ocr_native",
        }
    }

    /// The architecture called `name`.
    ///
    /// # Errors
    /// [`UnknownArchitecture`] for any other name.
    pub fn parse(name: &str) -> Result<Self, UnknownArchitecture> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| UnknownArchitecture(name.to_string()))
    }

    /// The config of a preset.
    pub fn preset(self, preset: Preset) -> ModelConfig {
        match (self, preset) {
            (Architecture::Mamba, Preset::SampleSmall) => {
                ModelConfig::Mamba(MambaConfig::sample_small())
            }
            (Architecture::Mamba, Preset::Full) => ModelConfig::Mamba(MambaConfig::full()),
            (Architecture::MambaMultimodal, Preset::SampleSmall) => {
                ModelConfig::MambaMultimodal(MambaMultimodalConfig::sample_small())
            }
            (Architecture::MambaMultimodal, Preset::Full) => {
                ModelConfig::MambaMultimodal(MambaMultimodalConfig::full())
            }
            (Architecture::OcrNative, Preset::SampleSmall) => {
                ModelConfig::OcrNative(OcrNativeConfig::sample_small())
            }
            (Architecture::OcrNative, Preset::Full) => {
                ModelConfig::OcrNative(OcrNativeConfig::full())
            }
        }
    }

    /// Reads a config of this architecture from JSON and validates it.
    ///
    /// # Errors
    /// [`ConfigError::Json`] for JSON of another shape, [`ConfigError::ModelType`] for a config
    /// of another family, else the first broken rule.
    pub fn config_from_json(self, value: &serde_json::Value) -> Result<ModelConfig, ConfigError> {
        Ok(match self {
            Architecture::Mamba => ModelConfig::Mamba(MambaConfig::from_json(value)?),
            Architecture::MambaMultimodal => {
                ModelConfig::MambaMultimodal(MambaMultimodalConfig::from_json(value)?)
            }
            Architecture::OcrNative => ModelConfig::OcrNative(OcrNativeConfig::from_json(value)?),
        })
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Architecture {
    type Err = UnknownArchitecture;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A named size of every architecture; its name is the version the weights are registered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Preset {
    /// Under a million parameters: committed to the repository, used by tests.
    SampleSmall,
    /// The real size (57M to 241M parameters).
    Full,
}

/// A name that is not a preset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset {0:?} (expected sample_small or full)")]
pub struct UnknownPreset(pub String);

impl Preset {
    pub const ALL: [Preset; 2] = [Preset::SampleSmall, Preset::Full];

    /// `sample_small` or `full`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::SampleSmall => "sample_small",
            Preset::Full => "full",
        }
    }

    /// The preset called `name`.
    ///
    /// # Errors
    /// [`UnknownPreset`] for any other name.
    pub fn parse(name: &str) -> Result<Self, UnknownPreset> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownPreset(name.to_string()))
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Preset {
    type Err = UnknownPreset;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The config of any architecture.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Mamba(MambaConfig),
    MambaMultimodal(MambaMultimodalConfig),
    OcrNative(OcrNativeConfig),
}

impl ModelConfig {
    pub fn architecture(&self) -> Architecture {
        match self {
            ModelConfig::Mamba(_) => Architecture::Mamba,
            ModelConfig::MambaMultimodal(_) => Architecture::MambaMultimodal,
            ModelConfig::OcrNative(_) => Architecture::OcrNative,
        }
    }

    /// Reads a config of whichever architecture its `model_type` names.
    ///
    /// # Errors
    /// [`ConfigError::ModelType`] when `model_type` is missing or unknown, else as
    /// [`Architecture::config_from_json`].
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ConfigError> {
        let mt = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let arch = Architecture::parse(mt).map_err(|_| ConfigError::ModelType {
            found: mt.to_string(),
            expected: "mamba, mamba_multimodal or ocr_native",
        })?;
        arch.config_from_json(value)
    }

    /// The config as the JSON written to `config.json`.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            ModelConfig::Mamba(c) => serde_json::to_value(c),
            ModelConfig::MambaMultimodal(c) => serde_json::to_value(c),
            ModelConfig::OcrNative(c) => serde_json::to_value(c),
        };
        // Serializing these plain structs cannot fail (string keys, no custom serializers);
        // fall back to null rather than panic.
        v.unwrap_or(serde_json::Value::Null)
    }

    /// Checks every rule of the family's config.
    ///
    /// # Errors
    /// The first broken rule, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            ModelConfig::Mamba(c) => c.validate(""),
            ModelConfig::MambaMultimodal(c) => c.validate(),
            ModelConfig::OcrNative(c) => c.validate(),
        }
    }

    /// The parameters the config implies, in file order (validates first).
    ///
    /// # Errors
    /// As [`Self::validate`].
    pub fn parameters(&self) -> Result<Vec<ParamSpec>, ConfigError> {
        self.validate()?;
        Ok(match self {
            ModelConfig::Mamba(c) => c.parameters(),
            ModelConfig::MambaMultimodal(c) => c.parameters(),
            ModelConfig::OcrNative(c) => c.parameters(),
        })
    }

    /// The parameter count, by formula: nothing is allocated per parameter, so this is cheap
    /// for the full-size presets.
    pub fn parameter_count(&self) -> u64 {
        match self {
            ModelConfig::Mamba(c) => c.parameter_count(),
            ModelConfig::MambaMultimodal(c) => c.parameter_count(),
            ModelConfig::OcrNative(c) => c.parameter_count(),
        }
    }

    /// Checks that `src` holds exactly the parameters this config implies: every name present
    /// with its shape and dtype `F32` (or another float type, when `any_float`), nothing else.
    ///
    /// # Errors
    /// The config's own errors; the mismatches are returned as the `Ok` list (empty = match).
    pub fn check_tensors(
        &self,
        src: &dyn TensorSource,
        any_float: bool,
    ) -> Result<Vec<TensorMismatch>, ConfigError> {
        let expected = self.parameters()?;
        Ok(check_against(&expected, src, any_float))
    }
}

/// One way a set of tensors differs from what a config implies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorMismatch {
    #[error("tensor {0:?} is missing")]
    Missing(String),
    #[error("tensor {0:?} is not a parameter of this config")]
    Unexpected(String),
    #[error("tensor {name:?} has shape {found:?}, the config implies {expected:?}")]
    Shape {
        name: String,
        expected: Vec<u64>,
        found: Vec<u64>,
    },
    #[error("tensor {name:?} has dtype {found}, expected F32")]
    DType { name: String, found: String },
}

/// Compares a source's tensors with a parameter list (see [`ModelConfig::check_tensors`]).
pub fn check_against(
    expected: &[ParamSpec],
    src: &dyn TensorSource,
    any_float: bool,
) -> Vec<TensorMismatch> {
    let mut out = Vec::new();
    let have: std::collections::HashMap<&str, &tantra_formats::TensorInfo> =
        src.tensors().iter().map(|t| (t.name.as_str(), t)).collect();
    for p in expected {
        match have.get(p.name.as_str()) {
            None => out.push(TensorMismatch::Missing(p.name.clone())),
            Some(t) => {
                if t.shape != p.shape {
                    out.push(TensorMismatch::Shape {
                        name: p.name.clone(),
                        expected: p.shape.clone(),
                        found: t.shape.clone(),
                    });
                }
                let ok = t.dtype == tantra_formats::DType::F32 || (any_float && t.dtype.is_float());
                if !ok {
                    out.push(TensorMismatch::DType {
                        name: p.name.clone(),
                        found: t.dtype.to_string(),
                    });
                }
            }
        }
    }
    let names: std::collections::HashSet<&str> = expected.iter().map(|p| p.name.as_str()).collect();
    for t in src.tensors() {
        if !names.contains(t.name.as_str()) {
            out.push(TensorMismatch::Unexpected(t.name.clone()));
        }
    }
    out
}

/// The initialized weights of `config` under `seed`, generated lazily (see [`crate::init`]).
///
/// # Errors
/// The config's validation errors.
pub fn init_weights(config: &ModelConfig, seed: u64) -> Result<InitSource, ConfigError> {
    let params = config.parameters()?;
    count(&params)?;
    InitSource::new(params, seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the issue: (architecture, preset, parameters, MiB per format).
    const TABLE: [(Architecture, Preset, f64, f64); 6] = [
        (Architecture::Mamba, Preset::SampleSmall, 690e3, 2.6),
        (Architecture::Mamba, Preset::Full, 57e6, 219.0),
        (
            Architecture::MambaMultimodal,
            Preset::SampleSmall,
            690e3,
            2.6,
        ),
        (Architecture::MambaMultimodal, Preset::Full, 241e6, 922.0),
        (Architecture::OcrNative, Preset::SampleSmall, 698e3, 2.7),
        (Architecture::OcrNative, Preset::Full, 89e6, 341.0),
    ];

    #[test]
    fn preset_parameter_counts_match_the_table() {
        for (arch, preset, params, mib) in TABLE {
            let c = arch.preset(preset);
            c.validate().unwrap();
            let n = c.parameter_count() as f64;
            assert!(
                (n - params).abs() <= 0.02 * params,
                "{arch} {preset}: {n} parameters, table says {params}"
            );
            // f32 data, to the table's precision (file overhead is checked on real files).
            let data_mib = n * 4.0 / (1024.0 * 1024.0);
            assert!(
                (data_mib - mib).abs() <= 0.02 * mib,
                "{arch} {preset}: {data_mib:.2} MiB, table says {mib}"
            );
        }
    }

    #[test]
    fn list_and_formula_agree_for_small_presets() {
        for arch in Architecture::ALL {
            let c = arch.preset(Preset::SampleSmall);
            assert_eq!(
                count(&c.parameters().unwrap()).unwrap(),
                c.parameter_count()
            );
        }
    }

    #[test]
    fn names_parse() {
        for a in Architecture::ALL {
            assert_eq!(Architecture::parse(a.name()), Ok(a));
            assert_eq!(a.name().parse::<Architecture>(), Ok(a));
        }
        assert!(Architecture::parse("llama").is_err());
        assert_eq!(Preset::parse("full"), Ok(Preset::Full));
        assert!(Preset::parse("huge").is_err());
    }

    #[test]
    fn config_json_round_trips_by_model_type() {
        for arch in Architecture::ALL {
            for p in Preset::ALL {
                let c = arch.preset(p);
                let back = ModelConfig::from_json(&c.to_json()).unwrap();
                assert_eq!(back, c);
            }
        }
        assert!(matches!(
            ModelConfig::from_json(&serde_json::json!({"model_type": "gpt2"})),
            Err(ConfigError::ModelType { .. })
        ));
    }

    #[test]
    fn check_tensors_finds_every_kind_of_mismatch() {
        let c = Architecture::Mamba.preset(Preset::SampleSmall);
        let w = init_weights(&c, 0).unwrap();
        assert!(c.check_tensors(&w, false).unwrap().is_empty());
        let mut m = tantra_formats::MemorySource::new();
        m.push_f32("backbone.norm_f.weight", vec![3], &[1.0; 3])
            .unwrap();
        m.push_f32("extra", vec![1], &[1.0]).unwrap();
        let problems = c.check_tensors(&m, false).unwrap();
        assert!(problems.contains(&TensorMismatch::Unexpected("extra".into())));
        assert!(problems.iter().any(
            |p| matches!(p, TensorMismatch::Shape { name, .. } if name == "backbone.norm_f.weight")
        ));
        assert!(problems.contains(&TensorMismatch::Missing(
            "backbone.embeddings.weight".into()
        )));
    }
}
