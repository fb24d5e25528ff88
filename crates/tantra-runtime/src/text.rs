//! `MambaRuntime`: a Mamba language model together with where its weights came from, built
//! from the weights root, a Hugging Face directory or a single weight file (see `load.rs`).

use std::path::Path;

use tantra_formats::OutputFormat;

use tantra_models::arch::Architecture;
use tantra_models::mamba::config::TimeStepRank;
use tantra_models::mamba::names::{self, A_LOG, CONV1D, DT_PROJ, IN_PROJ};
use tantra_models::mamba::MambaConfig;
use tantra_models::names::{BIAS, WEIGHT};

use super::error::{Result, RuntimeError};
use super::generate::{generate, GenerateOptions, Generation};
use super::load::LoadedModel;
use super::mamba::MambaModel;
use super::precision::Precision;
use super::weights::{Vars, Weights};

/// A Mamba model ready to generate.
#[derive(Debug, Clone)]
pub struct MambaRuntime {
    model: MambaModel,
    origin: String,
}

impl MambaRuntime {
    /// Builds the runtime from named tensors and a config; `origin` says where they came
    /// from, for messages.
    ///
    /// # Errors
    /// See [`MambaModel::load`].
    pub fn load(
        weights: &Weights<'_>,
        config: &MambaConfig,
        origin: impl Into<String>,
    ) -> Result<Self> {
        Ok(MambaRuntime {
            model: MambaModel::load(weights, config)?,
            origin: origin.into(),
        })
    }

    /// The default version of `model` (a Mamba model, usually `"mamba"`) in the weights root
    /// `root`, in the best format available (safetensors, then pt, then bin).
    ///
    /// # Errors
    /// As [`LoadedModel::from_store`], or weights of another architecture.
    pub fn new(root: impl AsRef<Path>, model: &str) -> Result<Self> {
        Self::with_format(root, model, None, None)
    }

    /// Version `version` of `model` in the weights root.
    ///
    /// # Errors
    /// As [`MambaRuntime::new`].
    pub fn with_version(root: impl AsRef<Path>, model: &str, version: &str) -> Result<Self> {
        Self::with_format(root, model, Some(version), None)
    }

    /// `version` (else the default) of `model` in `format` (else the best available).
    ///
    /// # Errors
    /// As [`MambaRuntime::new`].
    pub fn with_format(
        root: impl AsRef<Path>,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
    ) -> Result<Self> {
        Self::with_format_as(root, model, version, format, Precision::F32)
    }

    /// [`MambaRuntime::with_format`] with the weight matrices kept at `precision`.
    ///
    /// # Errors
    /// As [`MambaRuntime::new`].
    pub fn with_format_as(
        root: impl AsRef<Path>,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
        precision: Precision,
    ) -> Result<Self> {
        let loaded = LoadedModel::from_store_as(root.as_ref(), model, version, format, precision)?;
        Self::expect_mamba(loaded, model)
    }

    /// Loads a Hugging Face Mamba directory (`config.json` plus single or sharded safetensors
    /// or `pytorch_model*.bin`), or a single weight file. A single file takes its config from
    /// a `config.json` beside it, or else infers it from the tensor shapes
    /// ([`infer_mamba_config`]).
    ///
    /// # Errors
    /// [`RuntimeError::NoConfig`] for a directory without `config.json`,
    /// no weights ([`tantra_models::OpenError::NoWeights`]), a read error, a config of another architecture, or any
    /// load error of [`MambaModel::load`].
    pub fn from_path(path: &Path) -> Result<Self> {
        Self::from_path_as(path, Precision::F32)
    }

    /// [`MambaRuntime::from_path`] with the weight matrices kept at `precision`.
    ///
    /// # Errors
    /// As [`MambaRuntime::from_path`].
    pub fn from_path_as(path: &Path, precision: Precision) -> Result<Self> {
        let loaded = LoadedModel::from_path_as(path, Some(Architecture::Mamba), precision)?;
        Self::expect_mamba(loaded, &path.display().to_string())
    }

    fn expect_mamba(loaded: LoadedModel, what: &str) -> Result<Self> {
        match loaded {
            LoadedModel::Mamba(rt) => Ok(rt),
            other => Err(RuntimeError::WrongArchitecture {
                what: what.to_string(),
                expected: Architecture::Mamba.name(),
                found: other.architecture().name(),
            }),
        }
    }

    pub fn model(&self) -> &MambaModel {
        &self.model
    }

    pub fn config(&self) -> &MambaConfig {
        self.model.config()
    }

    /// Where the weights came from (a path, or `model version format` from the store).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Generates a continuation of `prompt_ids` from a fresh state.
    ///
    /// # Errors
    /// See [`generate`].
    pub fn generate(
        &self,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Generation> {
        let mut state = self.model.new_state();
        generate(&self.model, &mut state, &[], prompt_ids, options, on_token)
    }
}

/// The config of Mamba weights named as transformers names them, read off the tensor shapes:
/// vocabulary and width from the embeddings, depth from the layer count, inner width, state
/// size, kernel and time-step rank from the first layer, biases and an untied head from which
/// tensors exist. What shapes cannot tell (epsilon, initialization ranges) takes
/// transformers' defaults.
///
/// # Errors
/// [`RuntimeError::MissingTensor`] or [`RuntimeError::Shape`] for weights that are not a
/// Mamba language model.
pub fn infer_mamba_config(weights: &Weights<'_>) -> Result<MambaConfig> {
    let dims = |vars: &Vars<'_>, leaf: &str, rank: &[usize]| -> Result<Vec<usize>> {
        let name = vars.name(leaf);
        let shape = vars
            .shape(leaf)
            .ok_or_else(|| RuntimeError::MissingTensor { name: name.clone() })?;
        if !rank.contains(&shape.len()) || shape.iter().any(|&d| d == 0 || d > u32::MAX as u64) {
            return Err(RuntimeError::Shape {
                name,
                expected: Vec::new(),
                found: shape.to_vec(),
            });
        }
        Ok(shape.iter().map(|&d| d as usize).collect())
    };
    let root = weights.root();
    let [transformers, mamba_ssm] = names::embeddings(&root);
    let emb_vars = if !transformers.contains(WEIGHT) && mamba_ssm.contains(WEIGHT) {
        mamba_ssm
    } else {
        transformers
    };
    let emb = dims(&emb_vars, WEIGHT, &[2])?;
    let layers_vars = names::layers(&root);
    let layers = (0..)
        .take_while(|&i| names::norm(&layers_vars.pp(i)).contains(WEIGHT))
        .count();
    let m = names::mixer(&layers_vars.pp(0));
    let in_proj = dims(&m.pp(IN_PROJ), WEIGHT, &[2])?;
    let a_log = dims(&m, A_LOG, &[2])?;
    let conv = dims(&m.pp(CONV1D), WEIGHT, &[2, 3])?;
    let dt = dims(&m.pp(DT_PROJ), WEIGHT, &[2])?;
    let mut c = MambaConfig::new(emb[0], emb[1], layers);
    c.intermediate_size = Some(in_proj[0] / 2);
    c.expand = (in_proj[0] / 2) / emb[1].max(1);
    c.state_size = a_log[1];
    c.conv_kernel = conv[conv.len() - 1];
    c.time_step_rank = TimeStepRank::Fixed(dt[1]);
    c.use_bias = m.pp(IN_PROJ).contains(BIAS);
    c.use_conv_bias = m.pp(CONV1D).contains(BIAS);
    c.tie_word_embeddings = !names::lm_head(&root).contains(WEIGHT);
    Ok(c)
}
