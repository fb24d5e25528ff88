//! Building a runtime from dynamically managed weights: the weights root (through
//! `tantra_store::WeightManager`, which picks the version and the best format and checks the
//! file's hash), a Hugging Face directory, or a single weight file.
//!
//! The config comes from where the weights are: the store's config for the version
//! (`configs/<model>/<name>.json`), a directory's `config.json`, or a `config.json` beside a
//! file. Without one, a version named like a preset (`sample_small`, `full`) takes the preset,
//! and Mamba weights can have their config read off their shapes. Either way every tensor is
//! then checked against the config by the model's `load`.

use std::path::Path;

use tantra_formats::OutputFormat;
use tantra_store::{ConfigManager, Schemas, StoreError, WeightManager};

use tantra_models::arch::{Architecture, ModelConfig, Preset};

use super::error::{Result, RuntimeError};
use super::multimodal::MultimodalModel;
use super::ocr::OcrModel;
use super::precision::Precision;
use super::text::{infer_mamba_config, MambaRuntime};
use super::weights::Weights;
use tantra_models::OpenWeights;

/// Reads and parses a JSON file.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| RuntimeError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// A runtime of any of the three architectures.
#[derive(Debug, Clone)]
pub enum LoadedModel {
    Mamba(MambaRuntime),
    Multimodal(Box<MultimodalModel>),
    Ocr(OcrModel),
}

impl LoadedModel {
    pub fn architecture(&self) -> Architecture {
        match self {
            LoadedModel::Mamba(_) => Architecture::Mamba,
            LoadedModel::Multimodal(_) => Architecture::MambaMultimodal,
            LoadedModel::Ocr(_) => Architecture::OcrNative,
        }
    }

    /// Loads `model` from the weights root `root`: `version` (else the model's default) in
    /// `format` (else safetensors, then pt, then bin), hash-checked by the store.
    ///
    /// # Errors
    /// The store's errors (unknown model or version, missing or changed file), a config that
    /// is missing or of another architecture, or any load error of the model.
    pub fn from_store(
        root: &Path,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
    ) -> Result<Self> {
        Self::from_store_as(root, model, version, format, Precision::F32)
    }

    /// [`LoadedModel::from_store`] with the weight matrices kept at `precision`.
    ///
    /// # Errors
    /// As [`LoadedModel::from_store`].
    pub fn from_store_as(
        root: &Path,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
        precision: Precision,
    ) -> Result<Self> {
        let wm = WeightManager::open(root)?;
        let loaded = wm.load_model_weights(model, version, format)?;
        let cm = ConfigManager::new(wm.clone(), Schemas::new());
        let config = match cm.config_for_version(model, &loaded.version) {
            Ok(name) => Some(ModelConfig::from_json(&cm.show(model, &name)?)?),
            Err(StoreError::NoConfig { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let weights = Weights::new(loaded.source.as_ref())?.with_precision(precision);
        let config = match config {
            Some(c) => c,
            None => {
                let arch = Architecture::parse(model)?;
                match Preset::parse(&loaded.version) {
                    Ok(p) => arch.preset(p),
                    Err(_) if arch == Architecture::Mamba => {
                        ModelConfig::Mamba(infer_mamba_config(&weights)?)
                    }
                    Err(_) => {
                        return Err(RuntimeError::NoConfigFor {
                            model: model.to_string(),
                            version: loaded.version.clone(),
                        })
                    }
                }
            }
        };
        if let Ok(arch) = Architecture::parse(model) {
            if arch != config.architecture() {
                return Err(RuntimeError::WrongArchitecture {
                    what: format!("the config of {model} {}", loaded.version),
                    expected: arch.name(),
                    found: config.architecture().name(),
                });
            }
        }
        let origin = format!(
            "{model} {} ({}, {})",
            loaded.version,
            loaded.format,
            loaded.path.display()
        );
        Self::build(&weights, &config, origin)
    }

    /// Loads a model directory (`config.json` plus single or sharded safetensors or
    /// `pytorch_model*.bin`) or a single weight file (config from a `config.json` beside it,
    /// or, for Mamba, from the tensor shapes). `expected` refuses another architecture.
    ///
    /// # Errors
    /// [`RuntimeError::NoConfig`], no weights ([`tantra_models::OpenError::NoWeights`]), a config of another
    /// architecture, read errors, or any load error of the model.
    pub fn from_path(path: &Path, expected: Option<Architecture>) -> Result<Self> {
        Self::from_path_as(path, expected, Precision::F32)
    }

    /// [`LoadedModel::from_path`] with the weight matrices kept at `precision`.
    ///
    /// # Errors
    /// As [`LoadedModel::from_path`].
    pub fn from_path_as(
        path: &Path,
        expected: Option<Architecture>,
        precision: Precision,
    ) -> Result<Self> {
        let (open, config_path) = if path.is_dir() {
            let c = path.join("config.json");
            if !c.is_file() {
                return Err(RuntimeError::NoConfig {
                    dir: path.to_path_buf(),
                });
            }
            (OpenWeights::directory(path)?, Some(c))
        } else {
            let c = path.parent().map(|p| p.join("config.json"));
            (OpenWeights::file(path)?, c.filter(|c| c.is_file()))
        };
        let weights = Weights::from_sources(open.sources())?.with_precision(precision);
        let config = match config_path {
            Some(c) => {
                let value: serde_json::Value = read_json(&c)?;
                ModelConfig::from_json(&value)?
            }
            None => match expected {
                None | Some(Architecture::Mamba) => {
                    ModelConfig::Mamba(infer_mamba_config(&weights)?)
                }
                Some(_) => {
                    return Err(RuntimeError::NoConfig {
                        dir: path.parent().unwrap_or(path).to_path_buf(),
                    })
                }
            },
        };
        if let Some(arch) = expected {
            if arch != config.architecture() {
                return Err(RuntimeError::WrongArchitecture {
                    what: path.display().to_string(),
                    expected: arch.name(),
                    found: config.architecture().name(),
                });
            }
        }
        Self::build(&weights, &config, path.display().to_string())
    }

    /// Builds the runtime `config` describes from `weights`.
    ///
    /// # Errors
    /// Any load error of the model.
    pub fn build(weights: &Weights<'_>, config: &ModelConfig, origin: String) -> Result<Self> {
        Ok(match config {
            ModelConfig::Mamba(c) => LoadedModel::Mamba(MambaRuntime::load(weights, c, origin)?),
            ModelConfig::MambaMultimodal(c) => {
                LoadedModel::Multimodal(Box::new(MultimodalModel::load(weights, c)?))
            }
            ModelConfig::OcrNative(c) => LoadedModel::Ocr(OcrModel::load(weights, c)?),
        })
    }
}
