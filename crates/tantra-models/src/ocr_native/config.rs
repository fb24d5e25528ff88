//! The configuration of `ocr_native` and the parameters it implies.
//!
//! # The computation
//! 1. **Input.** A grayscale text line, resized (aspect kept) to `image_height` rows; pixel
//!    value `v` (0..=255) becomes `(v / 255 - pixel_mean) / pixel_std`. The width `W` is padded
//!    on the right with white (`v = 255`) to a multiple of `patch_width`.
//! 2. **Column patches.** Frame `t` is the `image_height x patch_width` block of columns
//!    `t * patch_width ..`, flattened row by row (index `y * patch_width + x`); there are
//!    `T = W / patch_width` frames.
//! 3. **Projection.** `h_t = patch_embedding.weight @ patch_t + patch_embedding.bias`, width
//!    `d = mamba.hidden_size`.
//! 4. **Mamba layers** over `t = 0 .. T-1` exactly as in the language model
//!    ([`crate::mamba::block`]), then `backbone.norm_f` (RMSNorm).
//! 5. **Head.** `logits_t = ctc_head.weight @ n_t + ctc_head.bias` over `charset.len() + 1`
//!    classes: class 0 is the CTC blank, class `i + 1` is the `i`-th character of `charset`.
//! 6. **Decoding.** Greedy CTC ([`super::ctc`]): argmax per frame, merge repeats, drop blanks.
//!
//! # Parameters
//! `H` = `image_height`, `w` = `patch_width`, `d` = `mamba.hidden_size`,
//! `C` = number of classes (`charset` characters + 1).
//!
//! | name | shape | init |
//! | --- | --- | --- |
//! | `patch_embedding.weight` | `[d, H*w]` | `N(0, mamba.initializer_range)` |
//! | `patch_embedding.bias` | `[d]` | zeros |
//! | `backbone.layers.{i}.*` | see [`crate::mamba::block`] | |
//! | `backbone.norm_f.weight` | `[d]` | ones |
//! | `ctc_head.weight` | `[C, d]` | `N(0, mamba.initializer_range)` |
//! | `ctc_head.bias` | `[C]` | zeros |

use serde::{Deserialize, Serialize};

use crate::error::{check_model_type, check_positive, check_range, parse_config, ConfigError};
use crate::mamba::block::{mul, sum, MambaBlockConfig, MAX_WIDTH};
use crate::mamba::names as mamba_names;
use crate::mamba::TimeStepRank;
use crate::names::Scope;
use crate::params::{shape, Init, ParamSpec};

use super::names;

/// The `model_type` of this family.
pub const MODEL_TYPE: &str = "ocr_native";

/// The 95 printable ASCII characters, space to `~`: the default charset.
pub const PRINTABLE_ASCII: &str =
    " !\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~";

/// The class id of the CTC blank.
pub const BLANK: u32 = 0;

fn d_model_type() -> String {
    MODEL_TYPE.into()
}
fn d_half() -> f64 {
    0.5
}
fn d_charset() -> String {
    PRINTABLE_ASCII.into()
}

/// The `ocr_native` config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrNativeConfig {
    /// Always `"ocr_native"`.
    #[serde(default = "d_model_type")]
    pub model_type: String,
    /// H: the height every line image is resized to.
    pub image_height: usize,
    /// w: columns per frame.
    pub patch_width: usize,
    #[serde(default = "d_half")]
    pub pixel_mean: f64,
    #[serde(default = "d_half")]
    pub pixel_std: f64,
    /// The characters the head scores, in class order from class 1 (class 0 is the blank).
    #[serde(default = "d_charset")]
    pub charset: String,
    /// The Mamba stack.
    pub mamba: MambaBlockConfig,
}

impl OcrNativeConfig {
    fn build(image_height: usize, patch_width: usize, hidden: usize, layers: usize) -> Self {
        let mut mamba = MambaBlockConfig::new(hidden, layers);
        mamba.time_step_rank = TimeStepRank::Fixed(mamba.dt_rank());
        OcrNativeConfig {
            model_type: d_model_type(),
            image_height,
            patch_width,
            pixel_mean: d_half(),
            pixel_std: d_half(),
            charset: d_charset(),
            mamba,
        }
    }

    /// `sample_small`: 32-pixel lines in 8-column frames, d 136 x 5 layers, printable ASCII:
    /// 703,080 parameters.
    pub fn sample_small() -> Self {
        Self::build(32, 8, 136, 5)
    }

    /// `full`: 64-pixel lines in 8-column frames, d 704 x 28 layers, printable ASCII:
    /// 89,350,368 parameters.
    pub fn full() -> Self {
        Self::build(64, 8, 704, 28)
    }

    /// The characters of the charset, in class order from class 1.
    pub fn chars(&self) -> Vec<char> {
        self.charset.chars().collect()
    }

    /// C: the number of classes (characters + blank).
    pub fn num_classes(&self) -> usize {
        self.charset.chars().count().saturating_add(1)
    }

    /// `H * w`: values per frame.
    pub fn patch_dim(&self) -> usize {
        self.image_height.saturating_mul(self.patch_width)
    }

    /// The text of a sequence of class ids (blank and unknown ids skipped).
    pub fn classes_to_text(&self, classes: &[u32]) -> String {
        let chars = self.chars();
        classes
            .iter()
            .filter(|&&c| c != BLANK)
            .filter_map(|&c| chars.get(c as usize - 1))
            .collect()
    }

    /// The class of a character, `None` if the charset lacks it.
    pub fn class_of(&self, ch: char) -> Option<u32> {
        self.charset
            .chars()
            .position(|c| c == ch)
            .and_then(|i| u32::try_from(i + 1).ok())
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

    /// Checks `model_type`, the image geometry, normalization, the charset (not empty, no
    /// character twice) and the Mamba stack (fields under `mamba.`).
    ///
    /// # Errors
    /// The first broken rule, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_model_type(&self.model_type, MODEL_TYPE)?;
        check_range("image_height", self.image_height, 1, 1 << 12)?;
        check_range("patch_width", self.patch_width, 1, 1 << 12)?;
        if !self.pixel_mean.is_finite() {
            return Err(ConfigError::BadNumber {
                field: "pixel_mean".into(),
                value: self.pixel_mean,
                rule: "(not NaN or infinite)",
            });
        }
        check_positive("pixel_std", self.pixel_std, true)?;
        if self.charset.is_empty() {
            return Err(ConfigError::Empty {
                field: "charset".into(),
            });
        }
        let chars = self.chars();
        check_range("charset", chars.len(), 1, MAX_WIDTH)?;
        for (i, c) in chars.iter().enumerate() {
            if let Some(j) = chars[..i].iter().position(|x| x == c) {
                return Err(ConfigError::DuplicateChar {
                    field: "charset".into(),
                    ch: *c,
                    first: j,
                    second: i,
                });
            }
        }
        self.mamba.validate("mamba.")
    }

    /// The parameters (see the module docs). Call on a validated config.
    pub fn parameters(&self) -> Vec<ParamSpec> {
        let d = self.mamba.hidden_size;
        let c = self.num_classes();
        let std = self.mamba.initializer_range;
        let root = Scope::root();
        let patch = names::patch_embedding(&root);
        let head = names::ctc_head(&root);
        let mut out = vec![
            ParamSpec::new(
                patch.weight(),
                shape(&[d, self.patch_dim()]),
                Init::Normal { std },
            ),
            ParamSpec::new(patch.bias(), shape(&[d]), Init::Zeros),
        ];
        out.extend(self.mamba.all_layer_params(&mamba_names::layers(&root)));
        out.push(ParamSpec::new(
            mamba_names::norm_f(&root).weight(),
            shape(&[d]),
            Init::Ones,
        ));
        out.push(ParamSpec::new(
            head.weight(),
            shape(&[c, d]),
            Init::Normal { std },
        ));
        out.push(ParamSpec::new(head.bias(), shape(&[c]), Init::Zeros));
        out
    }

    /// The parameter count, by formula.
    pub fn parameter_count(&self) -> u64 {
        let d = self.mamba.hidden_size as u64;
        let c = self.num_classes() as u64;
        sum(&[
            mul(&[d, self.patch_dim() as u64]),
            d,
            mul(&[
                self.mamba.num_hidden_layers as u64,
                self.mamba.params_per_layer(),
            ]),
            d,
            mul(&[c, d]),
            c,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::count;

    #[test]
    fn presets() {
        for c in [OcrNativeConfig::sample_small(), OcrNativeConfig::full()] {
            c.validate().unwrap();
            assert_eq!(count(&c.parameters()).unwrap(), c.parameter_count());
            assert_eq!(c.num_classes(), 96);
        }
        assert_eq!(OcrNativeConfig::sample_small().parameter_count(), 703_080);
        assert_eq!(OcrNativeConfig::full().parameter_count(), 89_350_368);
    }

    #[test]
    fn charset_classes() {
        let c = OcrNativeConfig::sample_small();
        assert_eq!(PRINTABLE_ASCII.len(), 95);
        assert_eq!(c.class_of(' '), Some(1));
        assert_eq!(c.class_of('~'), Some(95));
        assert_eq!(c.class_of('é'), None);
        assert_eq!(c.classes_to_text(&[34, 0, 70, 200]), "Ae");
    }

    #[test]
    fn validation() {
        let mut c = OcrNativeConfig::sample_small();
        c.charset = "abca".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DuplicateChar {
                ch: 'a',
                first: 0,
                second: 3,
                ..
            })
        ));
        c.charset = String::new();
        assert!(matches!(c.validate(), Err(ConfigError::Empty { .. })));
        c.charset = "ab".into();
        c.mamba.conv_kernel = 0;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("mamba.conv_kernel"), "{e}");
        let mut j = serde_json::to_value(OcrNativeConfig::sample_small()).unwrap();
        j["model_type"] = "mamba".into();
        assert!(matches!(
            OcrNativeConfig::from_json(&j),
            Err(ConfigError::ModelType { .. })
        ));
    }
}
