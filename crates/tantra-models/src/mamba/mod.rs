//! Mamba: the language model shared by all three families.
//!
//! [`MambaConfig`] is transformers' `MambaConfig`; [`MambaBlockConfig`] is the stack of blocks
//! without a vocabulary, which the OCR model reuses. Parameter names and shapes are those of
//! transformers' `MambaForCausalLM` (see [`block`] for a layer and
//! [`MambaConfig::parameters`] for the whole model), so a directory holding our `config.json`
//! and weights loads in transformers unchanged. Both lists, the runtimes and the GGUF name map
//! build every name from the one table in [`names`].

pub mod block;
pub mod config;
pub mod names;

pub use block::MambaBlockConfig;
pub use config::{MambaConfig, TimeStepRank};
