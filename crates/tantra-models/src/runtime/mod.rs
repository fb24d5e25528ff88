//! Runtimes: the code that runs loaded weights.
//!
//! A runtime is built from weights handed out by name ([`Weights`]), never from a file format:
//! the weights root (`tantra_store`), a Hugging Face directory ([`OpenWeights::directory`])
//! or a single file all end up as tensor sources, and the model's `load(weights, config)`
//! checks every name and shape against its config before anything runs. Everything computes
//! in f32 on the CPU; f16/bf16 weights are widened on load.
//!
//! - [`MambaModel`]: the language model, with prefill and incremental decoding over
//!   per-layer convolution and SSM states ([`MambaState`]).
//! - [`MambaRuntime`]: a Mamba model plus its origin, ready to [`generate`](MambaRuntime::generate).
//! - [`MultimodalModel`]: image plus prompt to text (image tokens prefilled before the text).
//! - [`OcrModel`]: a text-line image to text (greedy CTC).
//! - [`Sampler`]: greedy, temperature, top-k, top-p, seeded.
//!
//! ```no_run
//! use tantra_models::runtime::{GenerateOptions, MambaRuntime};
//! let rt = MambaRuntime::from_path(std::path::Path::new("fixtures/hf_mamba_tiny/safetensors"))?;
//! let out = rt.generate(&[1, 5, 9], &GenerateOptions::default(), &mut |_| {})?;
//! println!("{:?}", out.output_ids());
//! # Ok::<(), tantra_models::runtime::RuntimeError>(())
//! ```

mod decode;
mod error;
mod generate;
mod gguf;
#[cfg(test)]
pub(crate) use gguf::tantra_name as tantra_name_of_gguf;
mod hf;
pub mod image;
pub mod kernels;
mod layers;
mod load;
mod mamba;
mod multimodal;
mod ocr;
mod sampling;
mod text;
mod weights;

pub use error::{Result, RuntimeError};
pub use generate::{generate, GenerateOptions, Generation, StopReason};
pub use hf::OpenWeights;
pub use layers::Linear;
pub use load::LoadedModel;
pub use mamba::{BlockDims, Logits, MambaBlocks, MambaModel, MambaState, RmsNorm};
pub use multimodal::MultimodalModel;
pub use ocr::{OcrModel, OcrOutput};
pub use sampling::{argmax, Sampler, SamplingConfig};
pub use text::{infer_mamba_config, MambaRuntime};
pub use weights::Weights;
