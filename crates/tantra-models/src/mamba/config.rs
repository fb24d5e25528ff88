//! The Mamba configuration, field for field as transformers' `MambaConfig` spells it, so that a
//! directory with our `config.json` loads in transformers unchanged and a transformers
//! `config.json` loads here.

use serde::{Deserialize, Serialize};

use super::block::{mul, sum, MambaBlockConfig};
use super::names;
use crate::error::{check_model_type, check_range, parse_config, ConfigError};
use crate::names::Scope;
use crate::params::{shape, Init, ParamSpec};
use crate::tokenizer::ByteTokenizer;

/// `time_step_rank`: a number, or `"auto"` (= ceil(hidden_size / 16)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TimeStepRank {
    Fixed(usize),
    Auto(AutoTag),
}

/// The literal string `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AutoTag {
    #[serde(rename = "auto")]
    Auto,
}

/// transformers' `MambaConfig`. Fields transformers adds that tantra does not use are kept in
/// `extra` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MambaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    #[serde(default = "d_state_size")]
    pub state_size: usize,
    pub num_hidden_layers: usize,
    #[serde(default = "d_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "d_expand")]
    pub expand: usize,
    /// transformers writes `expand * hidden_size` here; read it when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_size: Option<usize>,
    #[serde(default = "d_conv_kernel")]
    pub conv_kernel: usize,
    #[serde(default)]
    pub use_bias: bool,
    #[serde(default = "d_true")]
    pub use_conv_bias: bool,
    #[serde(default = "d_act")]
    pub hidden_act: String,
    #[serde(default = "d_init_range")]
    pub initializer_range: f64,
    #[serde(default = "d_true")]
    pub residual_in_fp32: bool,
    #[serde(default = "d_rank")]
    pub time_step_rank: TimeStepRank,
    #[serde(default = "d_one")]
    pub time_step_scale: f64,
    #[serde(default = "d_dt_min")]
    pub time_step_min: f64,
    #[serde(default = "d_dt_max")]
    pub time_step_max: f64,
    #[serde(default = "d_init_scheme")]
    pub time_step_init_scheme: String,
    #[serde(default = "d_dt_floor")]
    pub time_step_floor: f64,
    #[serde(default = "d_true")]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    #[serde(default = "d_model_type")]
    pub model_type: String,
    #[serde(default = "d_architectures")]
    pub architectures: Vec<String>,
    /// Everything else in the file, preserved.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

use super::block::{
    d_act, d_conv_kernel, d_dt_floor, d_dt_max, d_dt_min, d_eps, d_expand, d_init_range,
    d_init_scheme, d_one, d_rank, d_state_size, d_true,
};

/// The `model_type` of this family.
pub const MODEL_TYPE: &str = "mamba";

fn d_model_type() -> String {
    MODEL_TYPE.into()
}
fn d_architectures() -> Vec<String> {
    vec!["MambaForCausalLM".into()]
}

impl MambaConfig {
    /// A config with transformers' defaults for everything but the sizes.
    pub fn new(vocab_size: usize, hidden_size: usize, num_hidden_layers: usize) -> Self {
        MambaConfig {
            vocab_size,
            hidden_size,
            state_size: d_state_size(),
            num_hidden_layers,
            layer_norm_epsilon: d_eps(),
            expand: d_expand(),
            intermediate_size: Some(d_expand() * hidden_size),
            conv_kernel: d_conv_kernel(),
            use_bias: false,
            use_conv_bias: true,
            hidden_act: d_act(),
            initializer_range: d_init_range(),
            residual_in_fp32: true,
            time_step_rank: d_rank(),
            time_step_scale: d_one(),
            time_step_min: d_dt_min(),
            time_step_max: d_dt_max(),
            time_step_init_scheme: d_init_scheme(),
            time_step_floor: d_dt_floor(),
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
            model_type: d_model_type(),
            architectures: d_architectures(),
            extra: serde_json::Map::new(),
        }
    }

    /// E: the inner (expanded) width.
    pub fn intermediate(&self) -> usize {
        self.intermediate_size
            .unwrap_or(self.expand.saturating_mul(self.hidden_size))
    }

    /// R: the rank of the time-step projection.
    pub fn dt_rank(&self) -> usize {
        match self.time_step_rank {
            TimeStepRank::Fixed(r) => r,
            TimeStepRank::Auto(_) => self.hidden_size.div_ceil(16),
        }
    }

    /// The block hyper-parameters, as the shared Mamba stack sees them.
    pub fn blocks(&self) -> MambaBlockConfig {
        MambaBlockConfig {
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            state_size: self.state_size,
            expand: self.expand,
            conv_kernel: self.conv_kernel,
            use_bias: self.use_bias,
            use_conv_bias: self.use_conv_bias,
            time_step_rank: self.time_step_rank,
            layer_norm_epsilon: self.layer_norm_epsilon,
            hidden_act: self.hidden_act.clone(),
            residual_in_fp32: self.residual_in_fp32,
            initializer_range: self.initializer_range,
            time_step_scale: self.time_step_scale,
            time_step_min: self.time_step_min,
            time_step_max: self.time_step_max,
            time_step_init_scheme: self.time_step_init_scheme.clone(),
            time_step_floor: self.time_step_floor,
        }
    }

    /// A language model over the byte-level vocabulary ([`crate::tokenizer`]) with the given
    /// block stack and a tied head.
    pub fn byte_level(blocks: &MambaBlockConfig) -> Self {
        let mut c = MambaConfig::new(ByteTokenizer::VOCAB_SIZE, blocks.hidden_size, 0);
        c.set_blocks(blocks);
        // Written as a number: transformers' default for this field has changed over time.
        c.time_step_rank = TimeStepRank::Fixed(blocks.dt_rank());
        c.bos_token_id = Some(ByteTokenizer::BOS);
        c.eos_token_id = Some(ByteTokenizer::EOS);
        c.pad_token_id = Some(ByteTokenizer::PAD);
        c
    }

    /// Replaces the block hyper-parameters (keeps vocabulary, head and token ids).
    pub fn set_blocks(&mut self, b: &MambaBlockConfig) {
        self.hidden_size = b.hidden_size;
        self.num_hidden_layers = b.num_hidden_layers;
        self.state_size = b.state_size;
        self.expand = b.expand;
        self.intermediate_size = Some(b.intermediate());
        self.conv_kernel = b.conv_kernel;
        self.use_bias = b.use_bias;
        self.use_conv_bias = b.use_conv_bias;
        self.time_step_rank = b.time_step_rank;
        self.layer_norm_epsilon = b.layer_norm_epsilon;
        self.hidden_act = b.hidden_act.clone();
        self.residual_in_fp32 = b.residual_in_fp32;
        self.initializer_range = b.initializer_range;
        self.time_step_scale = b.time_step_scale;
        self.time_step_min = b.time_step_min;
        self.time_step_max = b.time_step_max;
        self.time_step_init_scheme = b.time_step_init_scheme.clone();
        self.time_step_floor = b.time_step_floor;
    }

    /// The preset `sample_small`: d 152, 4 layers, byte vocabulary (264), tied head:
    /// 686,584 parameters.
    pub fn sample_small() -> Self {
        Self::byte_level(&MambaBlockConfig::new(152, 4))
    }

    /// The preset `full`: d 704, 18 layers, byte vocabulary (264), tied head:
    /// 57,349,952 parameters.
    pub fn full() -> Self {
        Self::byte_level(&MambaBlockConfig::new(704, 18))
    }

    /// Parses a `config.json` (transformers' or ours) and validates it.
    ///
    /// # Errors
    /// [`ConfigError::Json`] for JSON that is not a Mamba config, else what
    /// [`MambaConfig::validate`] finds.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ConfigError> {
        let c: Self = parse_config(MODEL_TYPE, value)?;
        c.validate("")?;
        Ok(c)
    }

    /// Checks the config: the block rules of [`MambaBlockConfig::validate`], the vocabulary
    /// size, `intermediate_size` (when present) equal to `expand * hidden_size`, token ids
    /// inside the vocabulary and `model_type` `"mamba"`. `prefix` is prepended to field names
    /// in errors.
    ///
    /// # Errors
    /// The first broken rule, naming the field.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        check_model_type(&self.model_type, MODEL_TYPE)?;
        check_range(
            &format!("{prefix}vocab_size"),
            self.vocab_size,
            1,
            MAX_VOCAB,
        )?;
        let b = self.blocks();
        b.validate(prefix)?;
        if let Some(found) = self.intermediate_size {
            if found != b.intermediate() {
                return Err(ConfigError::IntermediateSize {
                    field: format!("{prefix}intermediate_size"),
                    found: found as u64,
                    expected: b.intermediate() as u64,
                });
            }
        }
        for (name, id) in [
            ("bos_token_id", self.bos_token_id),
            ("eos_token_id", self.eos_token_id),
            ("pad_token_id", self.pad_token_id),
        ] {
            if let Some(id) = id {
                if id as u64 >= self.vocab_size as u64 {
                    return Err(ConfigError::TokenId {
                        field: format!("{prefix}{name}"),
                        id: u64::from(id),
                        vocab_size: self.vocab_size as u64,
                    });
                }
            }
        }
        Ok(())
    }

    /// The parameters of `MambaForCausalLM` under this config, in the order tantra writes them:
    /// `backbone.embeddings.weight [V, d]` (init `N(0, initializer_range)`), the layers
    /// (see [`super::block`]), `backbone.norm_f.weight [d]` (ones) and, only when
    /// `tie_word_embeddings` is false, `lm_head.weight [V, d]` (`N(0, initializer_range)`).
    /// A tied head is not a parameter of its own and is not stored, as transformers' own
    /// safetensors files do not store it. Call on a validated config.
    pub fn parameters(&self) -> Vec<ParamSpec> {
        self.parameters_at(&Scope::root())
    }

    /// [`MambaConfig::parameters`] with every name below `root` (a model that nests its
    /// language model; see [`names`]).
    pub fn parameters_at(&self, root: &Scope) -> Vec<ParamSpec> {
        let d = self.hidden_size;
        let v = self.vocab_size;
        let std = self.initializer_range;
        let [embeddings, _] = names::embeddings(root);
        let mut out = vec![ParamSpec::new(
            embeddings.weight(),
            shape(&[v, d]),
            Init::Normal { std },
        )];
        out.extend(self.blocks().all_layer_params(&names::layers(root)));
        out.push(ParamSpec::new(
            names::norm_f(root).weight(),
            shape(&[d]),
            Init::Ones,
        ));
        if !self.tie_word_embeddings {
            out.push(ParamSpec::new(
                names::lm_head(root).weight(),
                shape(&[v, d]),
                Init::Normal { std },
            ));
        }
        out
    }

    /// The parameter count, by formula (nothing allocated per parameter).
    pub fn parameter_count(&self) -> u64 {
        let d = self.hidden_size as u64;
        let v = self.vocab_size as u64;
        let head = if self.tie_word_embeddings {
            0
        } else {
            mul(&[v, d])
        };
        sum(&[
            mul(&[v, d]),
            mul(&[
                self.num_hidden_layers as u64,
                self.blocks().params_per_layer(),
            ]),
            d,
            head,
        ])
    }
}

/// The largest vocabulary tantra accepts (2^24 tokens).
pub const MAX_VOCAB: u64 = 1 << 24;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_transformers_config_and_keeps_unknown_fields() {
        let text = r#"{"vocab_size": 64, "hidden_size": 32, "num_hidden_layers": 2,
            "state_size": 8, "time_step_rank": 2, "intermediate_size": 64,
            "use_mambapy": false, "transformers_version": "5.24.0"}"#;
        let c: MambaConfig = serde_json::from_str(text).unwrap();
        assert_eq!(c.dt_rank(), 2);
        assert_eq!(c.intermediate(), 64);
        assert_eq!(
            c.extra.get("use_mambapy"),
            Some(&serde_json::Value::Bool(false))
        );
        let back = serde_json::to_value(&c).unwrap();
        assert_eq!(back["transformers_version"], "5.24.0");
        assert_eq!(back["time_step_rank"], 2);
    }

    #[test]
    fn presets() {
        for (c, n) in [
            (MambaConfig::sample_small(), 686_584),
            (MambaConfig::full(), 57_349_952),
        ] {
            c.validate("").unwrap();
            assert_eq!(c.parameter_count(), n);
            assert_eq!(crate::params::count(&c.parameters()).unwrap(), n);
            assert_eq!(c.vocab_size % 8, 0);
            // Written as a number, not "auto".
            assert!(serde_json::to_value(&c).unwrap()["time_step_rank"].is_u64());
        }
        let mut c = MambaConfig::sample_small();
        c.tie_word_embeddings = false;
        assert_eq!(c.parameter_count(), 686_584 + 264 * 152);
        assert_eq!(c.parameters().last().unwrap().name, "lm_head.weight");
    }

    #[test]
    fn validation_names_fields() {
        let mut c = MambaConfig::sample_small();
        c.intermediate_size = Some(100);
        assert!(matches!(
            c.validate(""),
            Err(ConfigError::IntermediateSize { .. })
        ));
        let mut c = MambaConfig::sample_small();
        c.eos_token_id = Some(264);
        let e = c.validate("text_config.").unwrap_err();
        assert_eq!(e.field(), Some("text_config.eos_token_id"));
        let mut c = MambaConfig::sample_small();
        c.model_type = "mamba2".into();
        assert!(matches!(c.validate(""), Err(ConfigError::ModelType { .. })));
        let mut c = MambaConfig::sample_small();
        c.vocab_size = 0;
        assert!(matches!(
            c.validate(""),
            Err(ConfigError::OutOfRange { .. })
        ));
    }

    #[test]
    fn auto_rank() {
        let c: MambaConfig = serde_json::from_str(
            r#"{"vocab_size": 264, "hidden_size": 100, "num_hidden_layers": 1, "time_step_rank": "auto"}"#,
        )
        .unwrap();
        assert_eq!(c.dt_rank(), 7);
        assert_eq!(serde_json::to_value(&c).unwrap()["time_step_rank"], "auto");
    }
}
