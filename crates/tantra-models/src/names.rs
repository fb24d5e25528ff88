//! Tensor names as scoped paths, so that each family spells its names once.
//!
//! A tensor name is a dotted path (`backbone.layers.3.mixer.in_proj.weight`). Rather than
//! formatting such strings wherever a name is needed, code walks a [`Scope`] one segment at a
//! time, as candle's `VarBuilder::pp` does:
//! `root.pp("backbone").pp("layers").pp(3).pp("mixer")`, then asks for the leaf
//! (`.name("A_log")`, or [`Scope::weight`] / [`Scope::bias`] for the tensors of a layer).
//!
//! The segments themselves live in one table per family ([`crate::mamba::names`],
//! [`crate::mamba_multimodal::names`], [`crate::ocr_native::names`]), whose path helpers are
//! generic over [`Scoped`]: the parameter lists in this crate walk them with a plain [`Scope`],
//! and the runtimes walk the same helpers with a view of loaded weights (tantra-runtime's
//! `Vars`). Both sides therefore build every name from the same segments, and a test in
//! tantra-runtime checks that the names a runtime reads are exactly the names a config's
//! parameter list creates.

use std::fmt;

/// The leaf name of a layer's weight (`nn.Linear`, `nn.Conv1d`, `nn.Embedding`, a norm).
pub const WEIGHT: &str = "weight";
/// The leaf name of a layer's bias.
pub const BIAS: &str = "bias";

/// A dotted path below which tensors are named; the root is the empty path.
///
/// ```
/// use tantra_models::names::Scope;
/// let mixer = Scope::root().pp("backbone").pp("layers").pp(3).pp("mixer");
/// assert_eq!(mixer.name("A_log"), "backbone.layers.3.mixer.A_log");
/// assert_eq!(mixer.pp("in_proj").weight(), "backbone.layers.3.mixer.in_proj.weight");
/// assert_eq!(Scope::root().name("lm_head"), "lm_head");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The segments joined by `.`, no leading or trailing dot; empty at the root.
    path: String,
}

impl Scope {
    /// The empty path: names below it are the leaf names themselves.
    pub fn root() -> Self {
        Scope::default()
    }

    /// A scope from a dotted path; leading and trailing dots are dropped, so `"language_model."`
    /// (the prefix spelling) and `"language_model"` are the same scope.
    pub fn new(path: &str) -> Self {
        Scope {
            path: path.trim_matches('.').to_string(),
        }
    }

    /// The scope one segment deeper (`segment` is a name part or a layer index).
    pub fn pp(&self, segment: impl fmt::Display) -> Self {
        let segment = segment.to_string();
        if self.path.is_empty() {
            return Scope { path: segment };
        }
        Scope {
            path: format!("{}.{segment}", self.path),
        }
    }

    /// The path itself, `""` at the root.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The full name of tensor `leaf` in this scope.
    pub fn name(&self, leaf: &str) -> String {
        if self.path.is_empty() {
            leaf.to_string()
        } else {
            format!("{}.{leaf}", self.path)
        }
    }

    /// The full name of this scope's [`WEIGHT`].
    pub fn weight(&self) -> String {
        self.name(WEIGHT)
    }

    /// The full name of this scope's [`BIAS`].
    pub fn bias(&self) -> String {
        self.name(BIAS)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

/// Anything that carries a [`Scope`] and can go one segment deeper: a plain [`Scope`] (to name
/// parameters) or a view of loaded weights (to read them). The families' path helpers are
/// generic over it, so naming and reading walk the same structure.
pub trait Scoped: Sized {
    /// The scope this value stands at.
    fn scope(&self) -> &Scope;

    /// The same value at another scope.
    fn at(&self, scope: Scope) -> Self;

    /// The same value one segment deeper.
    fn pp(&self, segment: impl fmt::Display) -> Self {
        self.at(self.scope().pp(segment))
    }

    /// The full name of tensor `leaf` here.
    fn name(&self, leaf: &str) -> String {
        self.scope().name(leaf)
    }
}

impl Scoped for Scope {
    fn scope(&self) -> &Scope {
        self
    }

    fn at(&self, scope: Scope) -> Self {
        scope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_join_with_dots() {
        let s = Scope::root().pp("a").pp(0).pp("b");
        assert_eq!(s.path(), "a.0.b");
        assert_eq!(s.name("c"), "a.0.b.c");
        assert_eq!(s.weight(), "a.0.b.weight");
        assert_eq!(s.bias(), "a.0.b.bias");
        assert_eq!(s.to_string(), "a.0.b");
        assert_eq!(Scope::root().path(), "");
        assert_eq!(Scope::root().weight(), "weight");
    }

    #[test]
    fn prefixes_with_or_without_dots_are_one_scope() {
        assert_eq!(
            Scope::new("language_model."),
            Scope::root().pp("language_model")
        );
        assert_eq!(Scope::new(""), Scope::root());
        assert_eq!(Scope::new("a.b").name("c"), "a.b.c");
    }

    #[test]
    fn the_trait_walks_a_scope_as_the_inherent_methods_do() {
        fn walk<S: Scoped>(s: &S) -> S {
            s.pp("x").pp(7)
        }
        let s = walk(&Scope::new("root"));
        assert_eq!(Scoped::name(&s, "w"), "root.x.7.w");
    }
}
