//! The tensor names of `ocr_native`, spelled once: the column projection and the CTC head
//! here, the blocks and the final norm from [`crate::mamba::names`] (the same `backbone.*`
//! names the language model uses, without embeddings or `lm_head`).
//!
//! ```text
//! patch_embedding.{weight,bias}
//! backbone.layers.{i}.*, backbone.norm_f.weight   (crate::mamba::names)
//! ctc_head.{weight,bias}
//! ```
//!
//! The parameter list ([`super::OcrNativeConfig::parameters`]) and the runtime both walk these
//! helpers (see [`crate::names`]).

use crate::names::Scoped;

/// The linear projection of a column frame to the Mamba width.
pub const PATCH_EMBEDDING: &str = "patch_embedding";
/// The per-frame classifier over the charset and the blank.
pub const CTC_HEAD: &str = "ctc_head";

/// `{root}.patch_embedding`.
pub fn patch_embedding<S: Scoped>(root: &S) -> S {
    root.pp(PATCH_EMBEDDING)
}

/// `{root}.ctc_head`.
pub fn ctc_head<S: Scoped>(root: &S) -> S {
    root.pp(CTC_HEAD)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Scope;

    #[test]
    fn names() {
        let root = Scope::root();
        assert_eq!(patch_embedding(&root).weight(), "patch_embedding.weight");
        assert_eq!(ctc_head(&root).bias(), "ctc_head.bias");
    }
}
