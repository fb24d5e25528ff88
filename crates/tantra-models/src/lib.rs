//! tantra-models: the Tantra model families (Mamba, Mamba multimodal, OCR native): configs,
//! presets, parameter lists, initialization, and opening checkpoints. Models never see file
//! formats: they are handed tensors by name. The runtimes that run them are `tantra-runtime`.
//!
//! | architecture | config | parameters |
//! | --- | --- | --- |
//! | `mamba` | [`MambaConfig`] (transformers' `MambaConfig`) | [`mamba`], [`mamba::block`] |
//! | `mamba_multimodal` | [`MambaMultimodalConfig`] | [`mamba_multimodal::config`] |
//! | `ocr_native` | [`OcrNativeConfig`] | [`ocr_native::config`] |
//!
//! ```
//! use tantra_models::{init_weights, Architecture, Preset};
//! use tantra_formats::TensorSource;
//! let config = Architecture::Mamba.preset(Preset::SampleSmall);
//! let weights = init_weights(&config, 0)?; // generated lazily, one tensor at a time
//! assert_eq!(weights.parameter_count(), config.parameter_count());
//! # Ok::<(), tantra_models::ConfigError>(())
//! ```

pub mod arch;
pub mod create;
pub mod error;
pub mod gguf;
pub mod gguf_source;
pub mod hf;
pub mod init;
pub mod mamba;
pub mod mamba_multimodal;
pub mod names;
pub mod ocr_native;
pub mod open;
pub mod params;
pub mod rng;
pub mod schema;
pub mod tokenizer;

pub use arch::{
    check_against, init_weights, Architecture, ModelConfig, Preset, TensorMismatch,
    UnknownArchitecture, UnknownPreset,
};
pub use error::ConfigError;
pub use init::InitSource;
pub use mamba::{MambaBlockConfig, MambaConfig};
pub use mamba_multimodal::{MambaMultimodalConfig, VisionConfig};
pub use ocr_native::OcrNativeConfig;
pub use open::{OpenError, OpenWeights};
pub use params::{Init, ParamSpec};
pub use tokenizer::ByteTokenizer;
