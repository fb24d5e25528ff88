//! A scoped view of [`Weights`], so that loaders read tensors by the names of the model's table
//! instead of formatting full names themselves.
//!
//! `weights.root().pp("backbone").pp("layers").pp(3)` is a [`Vars`]: the weights plus a
//! [`Scope`]. Its reads take a leaf name and fill in the rest, so a loader walks the same path
//! helpers ([`tantra_models::mamba::names`], ...) that the model's parameter list walks, and
//! every tensor name is spelled once, in tantra-models. Errors still carry the full name
//! (`backbone.layers.3.mixer.A_log`), as the reads go through [`Weights`] with it.
//!
//! [`Weights::used_names`] lists what a load read, which the tests compare with the parameter
//! lists so that the two can never drift apart.

use std::collections::BTreeSet;

use tantra_models::names::{Scope, Scoped};

use super::Weights;
use crate::error::Result;
use crate::kernels::Matrix;

/// [`Weights`] seen from a [`Scope`]: reads take the leaf name below it.
#[derive(Clone)]
pub struct Vars<'w> {
    weights: &'w Weights<'w>,
    scope: Scope,
}

impl<'a> Weights<'a> {
    /// The weights seen from the root scope (every name is its own leaf).
    pub fn root(&self) -> Vars<'_> {
        self.at(Scope::root())
    }

    /// The weights seen from `scope`.
    pub fn at(&self, scope: Scope) -> Vars<'_> {
        Vars {
            weights: self,
            scope,
        }
    }

    /// The weights seen from one segment below the root: `weights.pp("backbone")`.
    pub fn pp(&self, segment: impl std::fmt::Display) -> Vars<'_> {
        self.at(Scope::root().pp(segment))
    }

    /// The names of the tensors read (or marked used) so far, sorted.
    pub fn used_names(&self) -> BTreeSet<String> {
        self.used.borrow().clone()
    }
}

impl Scoped for Vars<'_> {
    fn scope(&self) -> &Scope {
        &self.scope
    }

    fn at(&self, scope: Scope) -> Self {
        Vars {
            weights: self.weights,
            scope,
        }
    }
}

impl<'w> Vars<'w> {
    /// The view one segment deeper (the same as [`Scoped::pp`], without importing the trait).
    pub fn pp(&self, segment: impl std::fmt::Display) -> Self {
        Scoped::pp(self, segment)
    }

    /// The full name of tensor `leaf` here.
    pub fn name(&self, leaf: &str) -> String {
        self.scope.name(leaf)
    }

    /// The weights themselves, unscoped.
    pub fn weights(&self) -> &'w Weights<'w> {
        self.weights
    }

    /// True when tensor `leaf` exists here.
    pub fn contains(&self, leaf: &str) -> bool {
        self.weights.contains(&self.scope.name(leaf))
    }

    /// The shape of tensor `leaf` here, if present.
    pub fn shape(&self, leaf: &str) -> Option<&'w [u64]> {
        self.weights.shape(&self.scope.name(leaf))
    }

    /// Tensor `leaf` as f32, checked to have `shape` exactly ([`Weights::get`]).
    ///
    /// # Errors
    /// As [`Weights::get`], naming the full tensor name.
    pub fn get(&self, leaf: &str, shape: &[usize]) -> Result<Vec<f32>> {
        self.weights.get(&self.scope.name(leaf), shape)
    }

    /// Tensor `leaf` in any of `shapes` ([`Weights::get_any`]).
    ///
    /// # Errors
    /// As [`Weights::get_any`], naming the full tensor name.
    pub fn get_any(&self, leaf: &str, shapes: &[&[usize]]) -> Result<Vec<f32>> {
        self.weights.get_any(&self.scope.name(leaf), shapes)
    }

    /// Tensor `leaf` as a `[rows, cols]` matrix at the weights' precision
    /// ([`Weights::get_matrix`]).
    ///
    /// # Errors
    /// As [`Weights::get`], naming the full tensor name.
    pub(crate) fn matrix(&self, leaf: &str, rows: usize, cols: usize) -> Result<Matrix> {
        self.weights.get_matrix(&self.scope.name(leaf), rows, cols)
    }

    /// Marks tensor `leaf` as accounted for without reading it ([`Weights::mark_used`]).
    pub fn mark_used(&self, leaf: &str) {
        self.weights.mark_used(&self.scope.name(leaf))
    }
}
