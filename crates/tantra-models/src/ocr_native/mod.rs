//! OCR native: a CTC text-line recognizer built on the shared Mamba blocks.
//!
//! A grayscale line image of fixed height is read as a sequence of narrow columns; a causal
//! Mamba stack runs over them and a linear head scores each column as one character of the
//! charset or the CTC blank. [`config`] defines the model and its parameters, [`names`] their
//! names, [`ctc`] the
//! greedy decoding; the forward pass is the runtime's.

pub mod config;
pub mod ctc;
pub mod names;

pub use config::{OcrNativeConfig, PRINTABLE_ASCII};
pub use ctc::{greedy_decode, greedy_decode_logits};
