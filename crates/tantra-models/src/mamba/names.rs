//! The tensor names of the Mamba language model and of its blocks, spelled once.
//!
//! These are transformers' `MambaForCausalLM` names. The parameter lists
//! ([`MambaBlockConfig::layer_params`](super::MambaBlockConfig::layer_params),
//! [`MambaConfig::parameters`](super::MambaConfig::parameters)), the runtimes that read the
//! weights, and the GGUF name map ([`crate::gguf`]) all build names from the segments and path
//! helpers here; the helpers are generic over [`Scoped`] so that a plain
//! [`Scope`](crate::names::Scope) and a runtime's view of loaded weights walk the same structure.
//!
//! ```text
//! {root}.backbone.embeddings.weight          (mamba_ssm: backbone.embedding.weight)
//! {root}.backbone.layers.{i}.norm.weight
//! {root}.backbone.layers.{i}.mixer.in_proj.{weight,bias}
//! {root}.backbone.layers.{i}.mixer.conv1d.{weight,bias}
//! {root}.backbone.layers.{i}.mixer.x_proj.weight
//! {root}.backbone.layers.{i}.mixer.dt_proj.{weight,bias}
//! {root}.backbone.layers.{i}.mixer.A_log
//! {root}.backbone.layers.{i}.mixer.D
//! {root}.backbone.layers.{i}.mixer.out_proj.{weight,bias}
//! {root}.backbone.norm_f.weight
//! {root}.lm_head.weight                      (absent or ignored when tied)
//! ```
//!
//! `{root}` is empty for every family today (the multimodal model keeps its language model at
//! the top level); a wrapper that nests the language model passes another root.

use crate::names::Scoped;

/// The stack, the embeddings and the final norm live under this segment.
pub const BACKBONE: &str = "backbone";
/// The token embedding table, as transformers names it.
pub const EMBEDDINGS: &str = "embeddings";
/// The token embedding table, as mamba_ssm names it (read as an alias of [`EMBEDDINGS`]).
pub const EMBEDDING_MAMBA_SSM: &str = "embedding";
/// The blocks, numbered from 0 below this segment.
pub const LAYERS: &str = "layers";
/// A block's RMSNorm.
pub const NORM: &str = "norm";
/// A block's selective-scan mixer.
pub const MIXER: &str = "mixer";
/// Mixer: the input projection to `[x | z]`.
pub const IN_PROJ: &str = "in_proj";
/// Mixer: the causal depthwise convolution (`[E, 1, K]`, or `[E, K]` as others store it).
pub const CONV1D: &str = "conv1d";
/// Mixer: the projection to `dt_r, B, C`.
pub const X_PROJ: &str = "x_proj";
/// Mixer: the time-step projection.
pub const DT_PROJ: &str = "dt_proj";
/// Mixer: `A = -exp(A_log)` (a tensor, not a layer).
pub const A_LOG: &str = "A_log";
/// Mixer: the skip term (a tensor, not a layer).
pub const D: &str = "D";
/// Mixer: the output projection.
pub const OUT_PROJ: &str = "out_proj";
/// The final RMSNorm.
pub const NORM_F: &str = "norm_f";
/// The output head (beside the backbone, not inside it).
pub const LM_HEAD: &str = "lm_head";

/// `{root}.backbone`.
pub fn backbone<S: Scoped>(root: &S) -> S {
    root.pp(BACKBONE)
}

/// The embedding table's scopes, the name transformers writes first: read the first that
/// exists, create the first.
pub fn embeddings<S: Scoped>(root: &S) -> [S; 2] {
    let b = backbone(root);
    [b.pp(EMBEDDINGS), b.pp(EMBEDDING_MAMBA_SSM)]
}

/// `{root}.backbone.layers`: block `i` is `layers.pp(i)`.
pub fn layers<S: Scoped>(root: &S) -> S {
    backbone(root).pp(LAYERS)
}

/// `{root}.backbone.norm_f`.
pub fn norm_f<S: Scoped>(root: &S) -> S {
    backbone(root).pp(NORM_F)
}

/// `{root}.lm_head`.
pub fn lm_head<S: Scoped>(root: &S) -> S {
    root.pp(LM_HEAD)
}

/// A block's norm, `{layer}.norm`.
pub fn norm<S: Scoped>(layer: &S) -> S {
    layer.pp(NORM)
}

/// A block's mixer, `{layer}.mixer`: holds [`IN_PROJ`], [`CONV1D`], [`X_PROJ`], [`DT_PROJ`],
/// [`OUT_PROJ`] (layers with `weight` / `bias`) and the tensors [`A_LOG`] and [`D`].
pub fn mixer<S: Scoped>(layer: &S) -> S {
    layer.pp(MIXER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Scope;

    #[test]
    fn transformers_names() {
        let root = Scope::root();
        let [emb, alias] = embeddings(&root);
        assert_eq!(emb.weight(), "backbone.embeddings.weight");
        assert_eq!(alias.weight(), "backbone.embedding.weight");
        let layer = layers(&root).pp(2);
        assert_eq!(norm(&layer).weight(), "backbone.layers.2.norm.weight");
        let m = mixer(&layer);
        assert_eq!(m.pp(IN_PROJ).bias(), "backbone.layers.2.mixer.in_proj.bias");
        assert_eq!(m.name(A_LOG), "backbone.layers.2.mixer.A_log");
        assert_eq!(norm_f(&root).weight(), "backbone.norm_f.weight");
        assert_eq!(lm_head(&root).weight(), "lm_head.weight");
        assert_eq!(
            lm_head(&Scope::new("language_model.")).weight(),
            "language_model.lm_head.weight"
        );
    }
}
