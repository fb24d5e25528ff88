//! The tensor names of `mamba_multimodal`, spelled once: the vision path and the projector
//! here, the language model's names from [`crate::mamba::names`] (at the top level, so that the
//! text half of a checkpoint is an ordinary `MambaForCausalLM`).
//!
//! ```text
//! backbone.*, lm_head.weight                 the language model (crate::mamba::names)
//! vision.patch_embedding.{weight,bias}
//! vision.position_embedding.weight
//! projector.linear_1.{weight,bias}
//! projector.linear_2.{weight,bias}
//! ```
//!
//! The parameter list ([`super::MambaMultimodalConfig::parameters`]) and the runtime both walk
//! these helpers (see [`crate::names`]).

use crate::names::Scoped;

/// The vision path lives under this segment.
pub const VISION: &str = "vision";
/// Vision: the linear patch embedding (a `Conv2d` with stride = kernel, flattened).
pub const PATCH_EMBEDDING: &str = "patch_embedding";
/// Vision: the learned position embedding, one row per patch.
pub const POSITION_EMBEDDING: &str = "position_embedding";
/// The projector into the text width lives under this segment.
pub const PROJECTOR: &str = "projector";
/// Projector: the first linear layer (before GELU).
pub const LINEAR_1: &str = "linear_1";
/// Projector: the second linear layer (after GELU).
pub const LINEAR_2: &str = "linear_2";

/// The language model's root: the model's own root (its names are not nested).
pub fn language<S: Scoped>(root: &S) -> S {
    root.at(root.scope().clone())
}

/// `{root}.vision.patch_embedding`.
pub fn patch_embedding<S: Scoped>(root: &S) -> S {
    root.pp(VISION).pp(PATCH_EMBEDDING)
}

/// `{root}.vision.position_embedding`.
pub fn position_embedding<S: Scoped>(root: &S) -> S {
    root.pp(VISION).pp(POSITION_EMBEDDING)
}

/// `{root}.projector.linear_1`.
pub fn linear_1<S: Scoped>(root: &S) -> S {
    root.pp(PROJECTOR).pp(LINEAR_1)
}

/// `{root}.projector.linear_2`.
pub fn linear_2<S: Scoped>(root: &S) -> S {
    root.pp(PROJECTOR).pp(LINEAR_2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Scope;

    #[test]
    fn names() {
        let root = Scope::root();
        assert_eq!(language(&root), root);
        assert_eq!(patch_embedding(&root).bias(), "vision.patch_embedding.bias");
        assert_eq!(
            position_embedding(&root).weight(),
            "vision.position_embedding.weight"
        );
        assert_eq!(linear_1(&root).weight(), "projector.linear_1.weight");
        assert_eq!(linear_2(&root).bias(), "projector.linear_2.bias");
    }
}
