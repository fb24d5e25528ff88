//! The configuration of `mamba_multimodal` and the parameters it implies.
//!
//! # The computation
//! 1. **Image to input.** The image is converted to RGB and resized to
//!    `image_size x image_size`; channel `c` of pixel value `v` (0..=255) becomes
//!    `(v / 255 - image_mean[c]) / image_std[c]`.
//! 2. **Patches.** The input is cut into `G x G` non-overlapping `patch_size x patch_size`
//!    patches, `G = image_size / patch_size`, `P = G * G`, numbered row by row (patch
//!    `py * G + px`). Each patch is flattened channel-major, then row, then column
//!    (index `c * p * p + y * p + x`), a vector of `C * p * p` values — the layout of a
//!    `Conv2d(C, dv, kernel = p, stride = p)` weight, which this linear embedding equals.
//! 3. **Patch embedding.** `e_i = patch_embedding.weight @ patch_i + patch_embedding.bias +
//!    position_embedding.weight[i]`, width `dv = vision_config.hidden_size`.
//! 4. **Projector.** `t_i = linear_2(gelu(linear_1(e_i)))`, width `d` (the text model's
//!    `hidden_size`). GELU is the exact one, `x * Phi(x)` (torch's `nn.GELU()` default).
//! 5. **Language model.** The input embeddings are `[t_0 .. t_{P-1}, emb(x_1) .. emb(x_L)]`:
//!    image tokens before the text tokens. They run through the Mamba layers, `norm_f` and the
//!    head exactly as in [`crate::mamba`]; logits at image positions are not used.
//!
//! # Parameters
//! `dv` = `vision_config.hidden_size`, `dh` = `projector_hidden_size`, `C` = `num_channels`,
//! `p` = `patch_size`, `d` = `text_config.hidden_size`.
//!
//! | name | shape | init |
//! | --- | --- | --- |
//! | everything of [`MambaConfig::parameters`] (`backbone.*`, `lm_head.weight` if untied) | | |
//! | `vision.patch_embedding.weight` | `[dv, C*p*p]` | `N(0, vision_config.initializer_range)` |
//! | `vision.patch_embedding.bias` | `[dv]` | zeros |
//! | `vision.position_embedding.weight` | `[P, dv]` | `N(0, vision_config.initializer_range)` |
//! | `projector.linear_1.weight` | `[dh, dv]` | `N(0, vision_config.initializer_range)` |
//! | `projector.linear_1.bias` | `[dh]` | zeros |
//! | `projector.linear_2.weight` | `[d, dh]` | `N(0, vision_config.initializer_range)` |
//! | `projector.linear_2.bias` | `[d]` | zeros |

use serde::{Deserialize, Serialize};

use crate::error::{check_model_type, check_positive, check_range, parse_config, ConfigError};
use crate::mamba::block::{mul, sum, MambaBlockConfig, MAX_WIDTH};
use crate::mamba::MambaConfig;
use crate::names::Scope;
use crate::params::{shape, Init, ParamSpec};

use super::names;

/// The `model_type` of this family.
pub const MODEL_TYPE: &str = "mamba_multimodal";

/// The vision path: image size, patching and the patch-embedding width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Side of the square RGB input, in pixels.
    pub image_size: usize,
    /// Side of a square patch; must divide `image_size`.
    pub patch_size: usize,
    /// Input channels: 3 (RGB).
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// dv: width of the patch embeddings.
    pub hidden_size: usize,
    /// Standard deviation of the normal initialization of the vision path and projector.
    #[serde(default = "d_vision_init")]
    pub initializer_range: f64,
    /// Per-channel mean subtracted from `pixel / 255`.
    #[serde(default = "d_half3")]
    pub image_mean: Vec<f64>,
    /// Per-channel divisor applied after the mean.
    #[serde(default = "d_half3")]
    pub image_std: Vec<f64>,
}

fn d_channels() -> usize {
    3
}
fn d_vision_init() -> f64 {
    0.02
}
fn d_half3() -> Vec<f64> {
    vec![0.5, 0.5, 0.5]
}
fn d_model_type() -> String {
    MODEL_TYPE.into()
}
fn d_gelu() -> String {
    "gelu".into()
}

impl VisionConfig {
    /// G: patches per side.
    pub fn grid(&self) -> usize {
        self.image_size.checked_div(self.patch_size).unwrap_or(0)
    }

    /// P: image tokens per image.
    pub fn num_patches(&self) -> usize {
        self.grid().saturating_mul(self.grid())
    }

    /// `C * p * p`: values per flattened patch.
    pub fn patch_dim(&self) -> usize {
        self.num_channels
            .saturating_mul(self.patch_size)
            .saturating_mul(self.patch_size)
    }

    /// Checks sizes (patch divides image, 3 channels), normalization constants (one per
    /// channel, std > 0) and the init range.
    ///
    /// # Errors
    /// The first broken rule, with the field under `vision_config.`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let f = |n: &str| format!("vision_config.{n}");
        check_range(&f("image_size"), self.image_size, 1, 1 << 16)?;
        check_range(&f("patch_size"), self.patch_size, 1, self.image_size as u64)?;
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(ConfigError::NotMultiple {
                field: f("image_size"),
                value: self.image_size as u64,
                divisor_field: "vision_config.patch_size",
                divisor: self.patch_size as u64,
            });
        }
        check_range(&f("num_channels"), self.num_channels, 3, 3)?;
        check_range(&f("hidden_size"), self.hidden_size, 1, MAX_WIDTH)?;
        check_range(&f("num_patches"), self.num_patches(), 1, 1 << 20)?;
        check_positive(&f("initializer_range"), self.initializer_range, false)?;
        for (name, list, strict) in [
            ("image_mean", &self.image_mean, false),
            ("image_std", &self.image_std, true),
        ] {
            if list.len() != self.num_channels {
                return Err(ConfigError::Length {
                    field: f(name),
                    found: list.len(),
                    expected: self.num_channels,
                });
            }
            for &v in list {
                if strict {
                    check_positive(&f(name), v, true)?;
                } else if !v.is_finite() {
                    return Err(ConfigError::BadNumber {
                        field: f(name),
                        value: v,
                        rule: "(not NaN or infinite)",
                    });
                }
            }
        }
        Ok(())
    }
}

/// The `mamba_multimodal` config: a transformers-style nested config with the language model
/// under `text_config` (a complete [`MambaConfig`]), the vision path under `vision_config`,
/// and the projector's hidden width.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MambaMultimodalConfig {
    /// Always `"mamba_multimodal"`.
    #[serde(default = "d_model_type")]
    pub model_type: String,
    pub text_config: MambaConfig,
    pub vision_config: VisionConfig,
    /// dh: width of the projector's hidden layer.
    pub projector_hidden_size: usize,
    /// The projector's activation: `"gelu"` (exact, erf-based).
    #[serde(default = "d_gelu")]
    pub projector_hidden_act: String,
}

impl MambaMultimodalConfig {
    fn build(
        text_blocks: MambaBlockConfig,
        image_size: usize,
        patch_size: usize,
        vision_hidden: usize,
        projector_hidden: usize,
    ) -> Self {
        MambaMultimodalConfig {
            model_type: d_model_type(),
            text_config: MambaConfig::byte_level(&text_blocks),
            vision_config: VisionConfig {
                image_size,
                patch_size,
                num_channels: 3,
                hidden_size: vision_hidden,
                initializer_range: d_vision_init(),
                image_mean: d_half3(),
                image_std: d_half3(),
            },
            projector_hidden_size: projector_hidden,
            projector_hidden_act: d_gelu(),
        }
    }

    /// `sample_small`: text d 128 x 5 layers; 64 x 64 images in 16 x 16 patches (16 image
    /// tokens), dv 64, projector 64 -> 96 -> 128: 685,856 parameters.
    pub fn sample_small() -> Self {
        Self::build(MambaBlockConfig::new(128, 5), 64, 16, 64, 96)
    }

    /// `full`: text d 1024 x 35 layers; 224 x 224 images in 16 x 16 patches (196 image
    /// tokens), dv 768, projector 768 -> 4096 -> 1024: 241,711,872 parameters.
    pub fn full() -> Self {
        Self::build(MambaBlockConfig::new(1024, 35), 224, 16, 768, 4096)
    }

    /// Parses and validates a config.
    ///
    /// # Errors
    /// [`ConfigError::Json`] for JSON of another shape, else what [`Self::validate`] finds.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ConfigError> {
        let c: Self = parse_config(MODEL_TYPE, value)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks `model_type`, the text model (fields under `text_config.`), the vision path and
    /// the projector.
    ///
    /// # Errors
    /// The first broken rule, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_model_type(&self.model_type, MODEL_TYPE)?;
        self.text_config.validate("text_config.")?;
        self.vision_config.validate()?;
        check_range(
            "projector_hidden_size",
            self.projector_hidden_size,
            1,
            MAX_WIDTH,
        )?;
        if self.projector_hidden_act != "gelu" {
            return Err(ConfigError::Unsupported {
                field: "projector_hidden_act".into(),
                value: self.projector_hidden_act.clone(),
                expected: "\"gelu\"",
            });
        }
        Ok(())
    }

    /// The parameters (see the module docs), text model first. Call on a validated config.
    pub fn parameters(&self) -> Vec<ParamSpec> {
        let v = &self.vision_config;
        let std = v.initializer_range;
        let d = self.text_config.hidden_size;
        let dh = self.projector_hidden_size;
        let root = Scope::root();
        let mut out = self.text_config.parameters_at(&names::language(&root));
        let patch = names::patch_embedding(&root);
        let (l1, l2) = (names::linear_1(&root), names::linear_2(&root));
        out.extend([
            ParamSpec::new(
                patch.weight(),
                shape(&[v.hidden_size, v.patch_dim()]),
                Init::Normal { std },
            ),
            ParamSpec::new(patch.bias(), shape(&[v.hidden_size]), Init::Zeros),
            ParamSpec::new(
                names::position_embedding(&root).weight(),
                shape(&[v.num_patches(), v.hidden_size]),
                Init::Normal { std },
            ),
            ParamSpec::new(
                l1.weight(),
                shape(&[dh, v.hidden_size]),
                Init::Normal { std },
            ),
            ParamSpec::new(l1.bias(), shape(&[dh]), Init::Zeros),
            ParamSpec::new(l2.weight(), shape(&[d, dh]), Init::Normal { std }),
            ParamSpec::new(l2.bias(), shape(&[d]), Init::Zeros),
        ]);
        out
    }

    /// The parameter count, by formula.
    pub fn parameter_count(&self) -> u64 {
        let v = &self.vision_config;
        let dv = v.hidden_size as u64;
        let dh = self.projector_hidden_size as u64;
        let d = self.text_config.hidden_size as u64;
        sum(&[
            self.text_config.parameter_count(),
            mul(&[dv, v.patch_dim() as u64]),
            dv,
            mul(&[v.num_patches() as u64, dv]),
            mul(&[dh, dv]),
            dh,
            mul(&[d, dh]),
            d,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::count;

    #[test]
    fn presets_count_by_formula_and_list() {
        for c in [
            MambaMultimodalConfig::sample_small(),
            MambaMultimodalConfig::full(),
        ] {
            c.validate().unwrap();
            assert_eq!(count(&c.parameters()).unwrap(), c.parameter_count());
        }
        assert_eq!(
            MambaMultimodalConfig::sample_small().parameter_count(),
            685_856
        );
        assert_eq!(MambaMultimodalConfig::full().parameter_count(), 241_711_872);
    }

    #[test]
    fn json_round_trip_and_errors() {
        let c = MambaMultimodalConfig::sample_small();
        let j = serde_json::to_value(&c).unwrap();
        assert_eq!(j["text_config"]["model_type"], "mamba");
        assert_eq!(MambaMultimodalConfig::from_json(&j).unwrap(), c);

        let mut bad = j.clone();
        bad["vision_config"]["patch_size"] = 15.into();
        let e = MambaMultimodalConfig::from_json(&bad).unwrap_err();
        assert!(matches!(e, ConfigError::NotMultiple { .. }), "{e}");
        assert!(e.to_string().contains("vision_config.image_size"));

        let mut bad = j.clone();
        bad["text_config"]["hidden_size"] = 0.into();
        let e = MambaMultimodalConfig::from_json(&bad).unwrap_err();
        assert!(e.to_string().contains("text_config.hidden_size"), "{e}");

        let mut bad = j.clone();
        bad["vision_config"]["image_std"] = serde_json::json!([0.5, 0.0, 0.5]);
        assert!(matches!(
            MambaMultimodalConfig::from_json(&bad),
            Err(ConfigError::BadNumber { .. })
        ));

        let mut bad = j;
        bad["vision_config"]["image_mean"] = serde_json::json!([0.5]);
        assert!(matches!(
            MambaMultimodalConfig::from_json(&bad),
            Err(ConfigError::Length { .. })
        ));
        assert!(matches!(
            MambaMultimodalConfig::from_json(&serde_json::json!({"text_config": 1})),
            Err(ConfigError::Json { .. })
        ));
    }
}
