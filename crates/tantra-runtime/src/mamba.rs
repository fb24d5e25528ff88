//! The Mamba language model, forward pass in f32: `MambaModel::load(weights, config)`, then
//! `forward` over a prompt (prefill) and one token at a time (decoding) with per-layer
//! convolution and SSM states.
//!
//! The arithmetic follows transformers' slow path (`modeling_mamba.py`), which is what the
//! reference logits come from: RMSNorm in f32, `[x | z] = in_proj(n)`, a causal depthwise
//! convolution, `x_proj` split into `dt_r, B, C`, `delta = softplus(dt_proj(dt_r))`, the scan
//! `s = exp(delta A) s + (delta B) u`, `y = s C + D u`, gated by `silu(z)`, and a residual in
//! f32. Several positions go through `prefill.rs` (matrix-matrix products, the pool's threads
//! taking bands of each layer between barriers), one position through `decode.rs` (the row
//! kernels, on one thread or several as the pacer finds faster); every kernel gives
//! bit-identical results per token whatever the batch, the split or the thread count, so a
//! prefill leaves exactly the states that token-by-token feeding leaves.

use std::time::Instant;

use tantra_models::mamba::names::{self, A_LOG, CONV1D, D, DT_PROJ, IN_PROJ, OUT_PROJ, X_PROJ};
use tantra_models::mamba::{MambaBlockConfig, MambaConfig};
use tantra_models::names::{Scope, BIAS, WEIGHT};

use super::decode;
use super::error::{Result, RuntimeError};
use super::kernels::{rms_norm, Matrix};
use super::layers::Linear;
use super::pacer::Pacer;
use super::prefill;
use super::weights::{Vars, Weights};

/// The sizes of a stack of Mamba blocks, read once from the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDims {
    /// d: hidden size.
    pub hidden: usize,
    /// E: inner width.
    pub inner: usize,
    /// N: state size.
    pub state: usize,
    /// K: convolution kernel.
    pub kernel: usize,
    /// R: time-step rank.
    pub dt_rank: usize,
    pub layers: usize,
}

impl BlockDims {
    fn of(config: &MambaBlockConfig) -> Self {
        BlockDims {
            hidden: config.hidden_size,
            inner: config.intermediate(),
            state: config.state_size,
            kernel: config.conv_kernel,
            dt_rank: config.dt_rank(),
            layers: config.num_hidden_layers,
        }
    }
}

/// `[rows, cols]` row-major to `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for (r, row) in v.chunks_exact(cols.max(1)).take(rows).enumerate() {
        for (c, x) in row.iter().enumerate() {
            t[c * rows + r] = *x;
        }
    }
    t
}

/// One Mamba block: RMSNorm and the selective-scan mixer.
#[derive(Debug, Clone)]
pub(super) struct Layer {
    pub(super) norm: Vec<f32>,
    pub(super) in_proj: Linear,
    /// `[K, E]` (tap-major, see `scan.rs`), the tap of the newest input last.
    pub(super) conv_weight: Vec<f32>,
    /// `[E]`, zeros without `use_conv_bias`.
    pub(super) conv_bias: Vec<f32>,
    pub(super) x_proj: Linear,
    pub(super) dt_proj: Linear,
    /// `A = -exp(A_log)`, `[N, E]` (state-major, see `scan.rs`).
    pub(super) a: Vec<f32>,
    pub(super) d: Vec<f32>,
    pub(super) out_proj: Linear,
}

impl Layer {
    fn bytes(&self) -> usize {
        (self.norm.len()
            + self.conv_weight.len()
            + self.conv_bias.len()
            + self.a.len()
            + self.d.len())
            * 4
            + self.in_proj.bytes()
            + self.x_proj.bytes()
            + self.dt_proj.bytes()
            + self.out_proj.bytes()
    }
}

/// Per-layer recurrent state of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct MambaState {
    /// Per layer `[K, E]`: the last K pre-convolution inputs of each channel, oldest first.
    pub(super) conv: Vec<Vec<f32>>,
    /// Per layer `[N, E]`.
    pub(super) ssm: Vec<Vec<f32>>,
    /// Positions consumed so far.
    pub(super) position: usize,
}

impl MambaState {
    /// The convolution state of `layer`, `[K, E]` row-major (transformers' `conv_states`
    /// is its transpose).
    pub fn conv(&self, layer: usize) -> Option<&[f32]> {
        self.conv.get(layer).map(Vec::as_slice)
    }

    /// The SSM state of `layer`, `[N, E]` row-major (transformers' `ssm_states` is its
    /// transpose).
    pub fn ssm(&self, layer: usize) -> Option<&[f32]> {
        self.ssm.get(layer).map(Vec::as_slice)
    }

    /// Number of positions fed so far.
    pub fn position(&self) -> usize {
        self.position
    }
}

/// RMSNorm with its weight: `x * rsqrt(mean(x^2) + eps) * weight`, per row.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// Reads `{scope}.weight` (`[d]`), `scope` being the norm's (`names::norm_f(&root)`).
    ///
    /// # Errors
    /// A missing tensor or one of another shape, under its full name.
    pub fn load(vars: &Vars<'_>, d: usize, eps: f64) -> Result<Self> {
        Ok(RmsNorm {
            weight: vars.get(WEIGHT, &[d])?,
            eps: eps as f32,
        })
    }

    /// Normalizes each `d`-row of `xs` into a new vector.
    pub fn apply(&self, xs: &[f32]) -> Vec<f32> {
        let d = self.weight.len().max(1);
        let mut out = vec![0.0; xs.len()];
        for (src, dst) in xs.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
            rms_norm(src, &self.weight, self.eps, dst);
        }
        out
    }

    fn bytes(&self) -> usize {
        self.weight.len() * 4
    }
}

/// A stack of Mamba blocks over a residual stream of width d: what the language model, the
/// multimodal model and the OCR model share.
#[derive(Debug, Clone)]
pub struct MambaBlocks {
    dims: BlockDims,
    eps: f32,
    layers: Vec<Layer>,
    /// Chooses between the threaded and the one-thread decoding step by their times.
    pacer: Pacer,
}

impl MambaBlocks {
    /// Reads blocks `{layers}.{i}` for `i` in `0..num_hidden_layers` (`layers` =
    /// [`names::layers`] of the model's root in every family), each checked against `config`,
    /// by the names of [`tantra_models::mamba::names`]. A convolution stored `[E, K]` (as
    /// others than transformers write it) is read as transformers' `[E, 1, K]`.
    ///
    /// # Errors
    /// An invalid config, a missing tensor or one of another shape or dtype, named in full.
    pub fn load(layers: &Vars<'_>, config: &MambaBlockConfig) -> Result<Self> {
        config.validate("")?;
        let dims = BlockDims::of(config);
        let BlockDims {
            hidden: d,
            inner: e,
            state: n,
            kernel: k,
            dt_rank: r,
            layers: nl,
        } = dims;
        let mut out = Vec::with_capacity(nl);
        for i in 0..nl {
            let layer = layers.pp(i);
            let m = names::mixer(&layer);
            let conv = m.pp(CONV1D);
            let conv_weight = transpose(&conv.get_any(WEIGHT, &[&[e, 1, k], &[e, k]])?, e, k);
            let conv_bias = if config.use_conv_bias {
                conv.get(BIAS, &[e])?
            } else {
                vec![0.0; e]
            };
            let a_log = m.get(A_LOG, &[e, n])?;
            out.push(Layer {
                norm: names::norm(&layer).get(WEIGHT, &[d])?,
                in_proj: Linear::load(&m.pp(IN_PROJ), 2 * e, d, config.use_bias)?,
                conv_weight,
                conv_bias,
                x_proj: Linear::load(&m.pp(X_PROJ), r + 2 * n, e, false)?,
                dt_proj: Linear::load(&m.pp(DT_PROJ), e, r, true)?,
                a: transpose(&a_log, e, n).iter().map(|x| -x.exp()).collect(),
                d: m.get(D, &[e])?,
                out_proj: Linear::load(&m.pp(OUT_PROJ), d, e, config.use_bias)?,
            });
        }
        Ok(MambaBlocks {
            dims,
            eps: config.layer_norm_epsilon as f32,
            layers: out,
            pacer: Pacer::default(),
        })
    }

    pub fn dims(&self) -> BlockDims {
        self.dims
    }

    pub(super) fn layers(&self) -> &[Layer] {
        &self.layers
    }

    pub(super) fn eps(&self) -> f32 {
        self.eps
    }

    /// A fresh (all-zero) state.
    pub fn new_state(&self) -> MambaState {
        let BlockDims {
            inner: e,
            state: n,
            kernel: k,
            layers,
            ..
        } = self.dims;
        MambaState {
            conv: vec![vec![0.0; e * k]; layers],
            ssm: vec![vec![0.0; e * n]; layers],
            position: 0,
        }
    }

    /// Bytes of weights one position reads.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(Layer::bytes).sum()
    }

    /// Runs the blocks over `h` (`[L, d]` row-major, updated in place) after what `state`
    /// has seen.
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`] when `h` is not a whole number of d-vectors or the state
    /// belongs to another stack.
    pub fn forward(&self, h: &mut [f32], state: &mut MambaState) -> Result<()> {
        let d = self.dims.hidden;
        if !h.len().is_multiple_of(d) {
            return Err(RuntimeError::InputShape {
                what: "input vectors (a multiple of hidden_size)",
                expected: d * (h.len() / d + 1),
                found: h.len(),
            });
        }
        let BlockDims {
            inner: e,
            state: n,
            kernel: k,
            ..
        } = self.dims;
        let fits = |v: &Vec<Vec<f32>>, per: usize| {
            v.len() == self.layers.len() && v.iter().all(|s| s.len() == per)
        };
        if !fits(&state.conv, e * k) || !fits(&state.ssm, e * n) {
            return Err(RuntimeError::InputShape {
                what: "state layers (a state of another model)",
                expected: self.layers.len(),
                found: state.conv.len(),
            });
        }
        // Long inputs go through in chunks (each through all layers before the next), which
        // bounds the scratch memory; results are the same bits as one pass.
        const CHUNK: usize = 256;
        let threads = decode::threads_for(self);
        for part in h.chunks_mut(CHUNK * d) {
            let len = part.len() / d;
            if len == 1 {
                if threads > 1 {
                    let alone = self.pacer.alone();
                    let start = Instant::now();
                    decode::step(self, part, state, if alone { 1 } else { threads });
                    self.pacer.record(alone, start.elapsed());
                } else {
                    decode::step(self, part, state, 1);
                }
                continue;
            }
            prefill::chunk(self, part, len, state, threads);
        }
        Ok(())
    }
}

/// Which logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// None (a prefix whose continuation is fed next).
    None,
    /// The last position's, `[V]`.
    Last,
    /// Every position's, `[L, V]` row-major.
    All,
}

/// A loaded Mamba language model (transformers' `MambaForCausalLM`).
#[derive(Debug, Clone)]
pub struct MambaModel {
    config: MambaConfig,
    vocab: usize,
    /// `[V, d]`, packed: rows are read back for the lookup, and it is the head when tied.
    embeddings: Matrix,
    blocks: MambaBlocks,
    norm_f: RmsNorm,
    /// `None` when tied to the embeddings.
    lm_head: Option<Linear>,
}

impl MambaModel {
    /// Builds the model from tensors named as transformers names them
    /// (`backbone.embeddings.weight`, `backbone.layers.{i}.mixer.in_proj.weight`, ...,
    /// `backbone.norm_f.weight`, `lm_head.weight` unless tied; the table is
    /// [`tantra_models::mamba::names`]), checking every shape against the config and that no
    /// tensor is left over.
    ///
    /// # Errors
    /// A missing tensor, a tensor of another shape or dtype, a leftover tensor, or a config
    /// the runtime cannot build; the error names the tensor or field.
    pub fn load(weights: &Weights<'_>, config: &MambaConfig) -> Result<Self> {
        let model = Self::load_at(&weights.root(), config)?;
        weights.check_all_used()?;
        Ok(model)
    }

    /// [`MambaModel::load`] for tensors under `prefix` (`"language_model."`, say), without the
    /// leftover check, which the caller does once for the whole file.
    ///
    /// # Errors
    /// As [`MambaModel::load`].
    pub fn load_prefixed(
        weights: &Weights<'_>,
        config: &MambaConfig,
        prefix: &str,
    ) -> Result<Self> {
        Self::load_at(&weights.at(Scope::new(prefix)), config)
    }

    /// [`MambaModel::load`] for tensors below `root` (the model's own scope, where
    /// `backbone` and `lm_head` are), without the leftover check, which the caller does once
    /// for the whole file. The embeddings are read under transformers' `embeddings` or, when
    /// only that exists, mamba_ssm's `embedding`; a tied head stored beside the embeddings is
    /// accounted for without being read.
    ///
    /// # Errors
    /// As [`MambaModel::load`].
    pub fn load_at(root: &Vars<'_>, config: &MambaConfig) -> Result<Self> {
        config.validate("")?;
        let blocks_config = config.blocks();
        let d = blocks_config.hidden_size;
        let v = config.vocab_size;
        let [transformers, mamba_ssm] = names::embeddings(root);
        let emb = if !transformers.contains(WEIGHT) && mamba_ssm.contains(WEIGHT) {
            mamba_ssm
        } else {
            transformers
        };
        let embeddings = emb.matrix(WEIGHT, v, d)?;
        let blocks = MambaBlocks::load(&names::layers(root), &blocks_config)?;
        let norm_f = RmsNorm::load(&names::norm_f(root), d, config.layer_norm_epsilon)?;
        let head = names::lm_head(root);
        let lm_head = if config.tie_word_embeddings {
            // transformers ties the head to the embeddings whatever the file says; a .bin
            // often stores the shared tensor under both names.
            head.mark_used(WEIGHT);
            None
        } else {
            Some(Linear::load(&head, v, d, false)?)
        };
        Ok(MambaModel {
            config: config.clone(),
            vocab: v,
            embeddings,
            blocks,
            norm_f,
            lm_head,
        })
    }

    pub fn config(&self) -> &MambaConfig {
        &self.config
    }

    /// The precision the weight matrices are kept at.
    pub fn precision(&self) -> super::precision::Precision {
        self.embeddings.precision()
    }

    /// d: the width of the residual stream (and of input vectors).
    pub fn hidden_size(&self) -> usize {
        self.blocks.dims.hidden
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab
    }

    pub fn blocks(&self) -> &MambaBlocks {
        &self.blocks
    }

    /// A fresh (all-zero) state.
    pub fn new_state(&self) -> MambaState {
        self.blocks.new_state()
    }

    /// Bytes of weights one decoding step reads: every weight once, the embedding table for
    /// one row only, unless it also serves as the head.
    pub fn bytes_per_token(&self) -> usize {
        let d = self.hidden_size();
        let head = match &self.lm_head {
            Some(h) => h.bytes() + d * 4,
            None => self.embeddings.bytes(),
        };
        self.blocks.bytes() + head + self.norm_f.bytes()
    }

    /// The embeddings of `ids`, `[L, d]` row-major.
    ///
    /// # Errors
    /// [`RuntimeError::TokenOutOfRange`].
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.hidden_size();
        let mut h = vec![0.0; ids.len() * d];
        for (&id, row) in ids.iter().zip(h.chunks_exact_mut(d.max(1))) {
            let i = id as usize;
            if i >= self.vocab {
                return Err(RuntimeError::TokenOutOfRange {
                    id,
                    vocab_size: self.vocab,
                });
            }
            self.embeddings.row_into(i, row);
        }
        Ok(h)
    }

    /// Feeds `ids` after what `state` has seen and returns the logits asked for.
    ///
    /// # Errors
    /// [`RuntimeError::TokenOutOfRange`], or a state of another model.
    pub fn forward(&self, ids: &[u32], state: &mut MambaState, logits: Logits) -> Result<Vec<f32>> {
        let h = self.embed(ids)?;
        self.forward_embeddings(h, state, logits)
    }

    /// One decoding step: feeds `id`, returns the next-token logits `[V]`.
    ///
    /// # Errors
    /// As [`MambaModel::forward`].
    pub fn step(&self, id: u32, state: &mut MambaState) -> Result<Vec<f32>> {
        self.forward(&[id], state, Logits::Last)
    }

    /// Feeds input vectors `h` (`[L, d]` row-major: token embeddings, or image tokens a
    /// projector made) after what `state` has seen.
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`] when `h` is not a whole number of d-vectors or the
    /// state belongs to another model.
    pub fn forward_embeddings(
        &self,
        mut h: Vec<f32>,
        state: &mut MambaState,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        self.blocks.forward(&mut h, state)?;
        let d = self.hidden_size();
        let len = h.len() / d;
        let rows = match logits {
            _ if len == 0 => return Ok(Vec::new()),
            Logits::None => return Ok(Vec::new()),
            Logits::Last => &h[(len - 1) * d..],
            Logits::All => &h[..],
        };
        let normed = self.norm_f.apply(rows);
        let n = normed.len() / d;
        let mut out = vec![0.0; n * self.vocab];
        match &self.lm_head {
            Some(head) => head.forward(&normed, &mut out),
            None => self.embeddings.matmul(&normed, &mut out),
        }
        Ok(out)
    }
}
