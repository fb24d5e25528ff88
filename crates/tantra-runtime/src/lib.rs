//! tantra-runtime: the code that runs loaded weights of the Tantra models.
//!
//! A runtime is built from weights handed out by name ([`Weights`]), never from a file format:
//! the weights root (`tantra_store`), a Hugging Face directory ([`tantra_models::OpenWeights::directory`])
//! or a single file all end up as tensor sources, and the model's `load(weights, config)`
//! checks every name and shape against its config before anything runs. Everything computes
//! in f32 on the CPU; weight matrices are kept at the [`Precision`] asked for (f32, bf16, or
//! 8-bit blocks), converted on load from whatever the file holds.
//!
//! - [`MambaModel`]: the language model, with prefill and incremental decoding over
//!   per-layer convolution and SSM states ([`MambaState`]).
//! - [`MambaRuntime`]: a Mamba model plus its origin, ready to [`generate`](MambaRuntime::generate).
//! - [`MultimodalModel`]: image plus prompt to text (image tokens prefilled before the text).
//! - [`OcrModel`]: a text-line image to text (greedy CTC).
//! - [`Sampler`]: greedy, temperature, top-k, top-p, seeded.
//!
//! ```no_run
//! use tantra_runtime::{GenerateOptions, MambaRuntime};
//! let rt = MambaRuntime::from_path(std::path::Path::new("fixtures/hf_mamba_tiny/safetensors"))?;
//! let out = rt.generate(&[1, 5, 9], &GenerateOptions::default(), &mut |_| {})?;
//! println!("{:?}", out.output_ids());
//! # Ok::<(), tantra_runtime::RuntimeError>(())
//! ```

mod decode;
mod error;
mod generate;
pub mod image;
mod join;
mod kernels;
mod layers;
mod load;
mod mamba;
mod multimodal;
mod ocr;
mod pacer;
mod precision;
mod prefill;
mod sampling;
mod scan;
mod sync;
mod text;
mod threads;
mod weights;

pub use error::{Result, RuntimeError};
pub use generate::{generate, GenerateOptions, Generation, StopReason};
pub use kernels::kernel_name;
pub use layers::Linear;
pub use load::LoadedModel;
pub use mamba::{BlockDims, Logits, MambaBlocks, MambaModel, MambaState, RmsNorm};
pub use multimodal::MultimodalModel;
pub use ocr::{OcrModel, OcrOutput};
pub use precision::{Precision, UnknownPrecision};
pub use sampling::{argmax, Sampler, SamplingConfig};
pub use tantra_models::OpenWeights;
pub use text::{infer_mamba_config, MambaRuntime};
pub use threads::Threads;
pub use weights::{Vars, Weights};

/// Sets the number of threads the runtimes compute on (rayon's global pool). Call it before
/// the first model runs; later calls fail, as the pool is then fixed.
///
/// # Errors
/// [`RuntimeError::Threads`] when the pool already started or cannot be built.
pub fn set_threads(n: usize) -> Result<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|source| RuntimeError::Threads { threads: n, source })
}
