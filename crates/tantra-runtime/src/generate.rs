//! The generation loop shared by the text and multimodal runtimes: prefill (optionally an
//! embedded prefix such as image tokens, then the prompt ids), then one step per new token
//! until the end-of-sequence token or the budget, timing both phases.

use std::time::{Duration, Instant};

use super::error::{Result, RuntimeError};
use super::mamba::{Logits, MambaModel, MambaState};
use super::sampling::{Sampler, SamplingConfig};

/// What to generate and when to stop.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    /// At most this many new tokens.
    pub max_new_tokens: usize,
    pub sampling: SamplingConfig,
    /// Stop after emitting this token (it is part of the output, as in transformers).
    pub eos_token_id: Option<u32>,
    /// Keep the logits of every prompt position (`[L][V]`).
    pub prompt_logits: bool,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 32,
            sampling: SamplingConfig::greedy(),
            eos_token_id: None,
            prompt_logits: false,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The end-of-sequence token came.
    Eos,
    /// `max_new_tokens` were generated.
    MaxTokens,
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt ids (without any embedded prefix).
    pub prompt_ids: Vec<u32>,
    /// The new tokens.
    pub generated: Vec<u32>,
    /// With [`GenerateOptions::prompt_logits`]: one row of vocabulary-size logits per prompt
    /// position.
    pub prompt_logits: Option<Vec<Vec<f32>>>,
    /// Positions prefilled (prefix vectors plus prompt ids).
    pub prefill_tokens: usize,
    pub prefill_time: Duration,
    /// Single-token steps run after the prefill.
    pub decode_steps: usize,
    pub decode_time: Duration,
    pub stop: StopReason,
}

impl Generation {
    /// Prompt followed by the generated tokens.
    pub fn output_ids(&self) -> Vec<u32> {
        let mut v = self.prompt_ids.clone();
        v.extend_from_slice(&self.generated);
        v
    }

    /// Prefilled positions per second (0 when nothing was timed).
    pub fn prefill_tokens_per_second(&self) -> f64 {
        rate(self.prefill_tokens, self.prefill_time)
    }

    /// Decoding steps per second (0 when no step ran).
    pub fn decode_tokens_per_second(&self) -> f64 {
        rate(self.decode_steps, self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    let s = t.as_secs_f64();
    if n == 0 || s <= 0.0 {
        0.0
    } else {
        n as f64 / s
    }
}

/// Runs `model` from `state`: prefills `prefix` (`[P, d]` input vectors, may be empty), then
/// `prompt_ids`, then samples and feeds up to `max_new_tokens` tokens. `on_token` sees each
/// new token as soon as it is chosen (for streaming).
///
/// # Errors
/// [`RuntimeError::EmptyPrompt`] when there is neither prefix nor prompt, a token id out of
/// range, or bad sampling settings.
pub fn generate(
    model: &MambaModel,
    state: &mut MambaState,
    prefix: &[f32],
    prompt_ids: &[u32],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(u32),
) -> Result<Generation> {
    let mut sampler = Sampler::new(options.sampling)?;
    let d = model.hidden_size();
    let vocab = model.vocab_size();
    let prefix_len = prefix.len() / d.max(1);
    if prefix_len == 0 && prompt_ids.is_empty() {
        return Err(RuntimeError::EmptyPrompt);
    }

    let start = Instant::now();
    let mut logits = if prompt_ids.is_empty() {
        model.forward_embeddings(prefix.to_vec(), state, Logits::Last)?
    } else {
        if prefix_len > 0 {
            model.forward_embeddings(prefix.to_vec(), state, Logits::None)?;
        }
        let which = if options.prompt_logits {
            Logits::All
        } else {
            Logits::Last
        };
        model.forward(prompt_ids, state, which)?
    };
    let prompt_logits = if options.prompt_logits && !prompt_ids.is_empty() {
        let rows: Vec<Vec<f32>> = logits.chunks_exact(vocab).map(<[f32]>::to_vec).collect();
        logits = rows.last().cloned().unwrap_or_default();
        Some(rows)
    } else {
        None
    };
    let mut generated = Vec::new();
    let mut stop = StopReason::MaxTokens;
    if options.max_new_tokens > 0 {
        let first = sampler.sample(&logits);
        generated.push(first);
        on_token(first);
        if options.eos_token_id == Some(first) {
            stop = StopReason::Eos;
        }
    }
    let prefill_time = start.elapsed();

    let start = Instant::now();
    let mut decode_steps = 0;
    while stop != StopReason::Eos && generated.len() < options.max_new_tokens {
        let Some(&last) = generated.last() else {
            break;
        };
        logits = model.step(last, state)?;
        decode_steps += 1;
        let next = sampler.sample(&logits);
        generated.push(next);
        on_token(next);
        if options.eos_token_id == Some(next) {
            stop = StopReason::Eos;
        }
    }
    let decode_time = start.elapsed();

    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        generated,
        prompt_logits,
        prefill_tokens: prefix_len + prompt_ids.len(),
        prefill_time,
        decode_steps,
        decode_time,
        stop,
    })
}
