//! Mamba multimodal: the Mamba language model with a vision path in front of it, Cobra-style.
//!
//! An image becomes `P` embeddings that are fed to the language model as input embeddings
//! before the text tokens; decoding then continues from the recurrent state. The config and
//! the parameter list are in [`config`], the tensor names in [`names`]; the forward pass is the runtime's.

pub mod config;
pub mod names;

pub use config::{MambaMultimodalConfig, VisionConfig};
