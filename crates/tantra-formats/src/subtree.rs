//! A subtree of a checkpoint: `convert --select PREFIX` and `--strip PREFIX`.
//!
//! A training checkpoint holds the model under one key (`state_dict`, `model`) beside the
//! optimizer, the epoch and the rest; inference needs only the model's tensors, under their
//! own names. [`Subtree`] is a [`TensorSource`] over another one that keeps the tensors and
//! values whose dotted name is `PREFIX` or lies under `PREFIX.` (`--select`), and drops a
//! leading `PREFIX.` from names (`--strip`; names without it are kept as they are, which is
//! what removing DDP's `module.` needs). Nothing is copied: tensors are handed out by the
//! source they come from.
//!
//! The nesting of a checkpoint ([`Structure`]) is kept for what remains: after `--select
//! state_dict` a `.pt` written from it still loads as `{"state_dict": {...}}`, and with
//! `--strip state_dict` as the inner dict itself, with its own kinds of containers and keys.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;

use crate::error::FormatError;
use crate::structure::{Key, Node, Structure};
use crate::tensor::{TensorInfo, TensorSource, Value};
use crate::{DynSource, Format};

/// A selection that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error(
        "no tensor is named {prefix:?} or lies under {prefix:?} (names look like {example:?})"
    )]
    NothingSelected { prefix: String, example: String },
    #[error("stripping {prefix:?} gives two entries the name {name:?}")]
    NameClash { prefix: String, name: String },
    #[error("stripping {prefix:?} from {name:?} leaves an empty name")]
    EmptyName { prefix: String, name: String },
}

/// What to keep and how to rename it. Prefixes are dotted names, with or without a final dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Keep only names equal to this or under it.
    pub select: Option<String>,
    /// Remove this leading part (and its dot) from names that have it.
    pub strip: Option<String>,
}

impl Selection {
    /// True when it keeps everything under its own name.
    pub fn is_everything(&self) -> bool {
        self.select.is_none() && self.strip.is_none()
    }
}

fn trimmed(p: &str) -> &str {
    p.strip_suffix('.').unwrap_or(p)
}

fn under(name: &str, prefix: &str) -> bool {
    name == prefix
        || name
            .strip_prefix(prefix)
            .is_some_and(|r| r.starts_with('.'))
}

/// Tensors and values of another source, selected and renamed.
pub struct Subtree {
    inner: DynSource,
    /// Index in `inner` of each tensor kept.
    index: Vec<usize>,
    /// Index here of each tensor of `inner` kept.
    back: HashMap<usize, usize>,
    infos: Vec<TensorInfo>,
    values: BTreeMap<String, Value>,
    /// The part of the source's nesting that was kept, renamed; `None` when the source is flat
    /// or what was kept cannot be nested the way it was (see [`kept_structure`]).
    structure: Option<Structure>,
}

/// The dotted-name part of a dict key, as readers name leaves.
fn key_part(k: &Key) -> String {
    match k {
        Key::Str(s) => s.clone(),
        Key::Int(i) => i.to_string(),
        Key::Bool(b) => if *b { "True" } else { "False" }.to_string(),
    }
}

fn join(path: &str, part: &str) -> String {
    if path.is_empty() {
        part.to_string()
    } else {
        format!("{path}.{part}")
    }
}

/// `node` (at `path`) with only the leaves `keep` accepts, renamed by `rename`; containers
/// outside the selection that keep nothing are dropped, those inside it stay (even empty).
fn prune(
    node: &Node,
    path: &str,
    keep: &dyn Fn(&str) -> bool,
    inside: &dyn Fn(&str) -> bool,
    rename: &dyn Fn(&str) -> String,
) -> Option<Node> {
    let pruned = match node {
        Node::Leaf(name) => return keep(name).then(|| Node::Leaf(rename(name))),
        Node::Dict(items) | Node::OrderedDict(items) => {
            let kept: Vec<(Key, Node)> = items
                .iter()
                .filter_map(|(k, c)| {
                    let c = prune(c, &join(path, &key_part(k)), keep, inside, rename)?;
                    Some((k.clone(), c))
                })
                .collect();
            if kept.is_empty() && !inside(path) {
                return None;
            }
            if matches!(node, Node::Dict(_)) {
                Node::Dict(kept)
            } else {
                Node::OrderedDict(kept)
            }
        }
        Node::List(items) | Node::Tuple(items) => {
            // A sequence that lost items renumbers the rest: `fits` then refuses the result.
            let kept: Vec<Node> = items
                .iter()
                .enumerate()
                .filter_map(|(i, c)| prune(c, &join(path, &i.to_string()), keep, inside, rename))
                .collect();
            if kept.is_empty() && !inside(path) {
                return None;
            }
            if matches!(node, Node::List(_)) {
                Node::List(kept)
            } else {
                Node::Tuple(kept)
            }
        }
    };
    Some(pruned)
}

/// The node at dotted `target` in `node` (at `path`).
fn find<'n>(node: &'n Node, path: &str, target: &str) -> Option<&'n Node> {
    if path == target {
        return Some(node);
    }
    if !path.is_empty() && !target.starts_with(&format!("{path}.")) {
        return None;
    }
    match node {
        Node::Leaf(_) => None,
        Node::Dict(items) | Node::OrderedDict(items) => items
            .iter()
            .find_map(|(k, c)| find(c, &join(path, &key_part(k)), target)),
        Node::List(items) | Node::Tuple(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, c)| find(c, &join(path, &i.to_string()), target)),
    }
}

fn leaf_count(node: &Node) -> usize {
    match node {
        Node::Leaf(_) => 1,
        Node::Dict(items) | Node::OrderedDict(items) => {
            items.iter().map(|(_, c)| leaf_count(c)).sum()
        }
        Node::List(items) | Node::Tuple(items) => items.iter().map(leaf_count).sum(),
    }
}

/// The nesting of what a selection keeps: `--select P` keeps the path from the root to `P` and
/// everything under `P` (so `torch.load(out)["P"]` is the subtree); `--strip P` then makes the
/// node at `P` the root when everything kept lies under it. `None` when the source has no
/// nesting, or when the kept names cannot sit where their names say (a strip that leaves some
/// names under `P` and others outside it, a list with a hole): such output is written flat.
fn kept_structure(
    structure: &Structure,
    select: Option<&str>,
    strip: Option<&str>,
    kept: usize,
) -> Option<Structure> {
    let keep = |name: &str| select.is_none_or(|p| under(name, p));
    let inside = |path: &str| select.is_none_or(|p| under(path, p));
    let pruned = prune(&structure.root, "", &keep, &inside, &|n: &str| {
        n.to_string()
    })?;
    let root = match strip {
        None => pruned,
        Some(p) => match find(&pruned, "", p) {
            Some(node) if leaf_count(node) == kept && !matches!(node, Node::Leaf(_)) => {
                let rename = |n: &str| {
                    n.strip_prefix(p)
                        .and_then(|r| r.strip_prefix('.'))
                        .unwrap_or(n)
                        .to_string()
                };
                prune(node, "", &|_| true, &|_| true, &rename)?
            }
            Some(_) => return None,
            // No name has the prefix: nothing is renamed.
            None if leaf_count(&pruned) == kept => pruned,
            None => return None,
        },
    };
    let s = Structure { root };
    (!s.is_flat()).then_some(s)
}

impl Subtree {
    /// Selects from `inner`.
    ///
    /// # Errors
    /// [`SelectError`]: nothing under `select`, or two names equal after `strip`.
    pub fn new(inner: DynSource, sel: &Selection) -> Result<Subtree, SelectError> {
        let select = sel.select.as_deref().map(trimmed);
        let strip = sel.strip.as_deref().map(trimmed);
        let keep = |name: &str| select.is_none_or(|p| under(name, p));
        let rename = |name: &str| -> Result<String, SelectError> {
            match strip {
                Some(p) if name == p => Err(SelectError::EmptyName {
                    prefix: p.to_string(),
                    name: name.to_string(),
                }),
                Some(p) => Ok(name
                    .strip_prefix(p)
                    .and_then(|r| r.strip_prefix('.'))
                    .unwrap_or(name)
                    .to_string()),
                None => Ok(name.to_string()),
            }
        };
        let mut seen = HashSet::new();
        let mut clash = |n: &str| -> Result<(), SelectError> {
            if seen.insert(n.to_string()) {
                Ok(())
            } else {
                Err(SelectError::NameClash {
                    prefix: strip.unwrap_or_default().to_string(),
                    name: n.to_string(),
                })
            }
        };
        let mut index = Vec::new();
        let mut back = HashMap::new();
        let mut infos = Vec::new();
        for (i, t) in inner.tensors().iter().enumerate() {
            if keep(&t.name) {
                let name = rename(&t.name)?;
                clash(&name)?;
                back.insert(i, index.len());
                index.push(i);
                infos.push(TensorInfo::new(name, t.dtype, t.shape.clone()));
            }
        }
        let mut values = BTreeMap::new();
        for (k, v) in inner.values() {
            if keep(k) {
                let name = rename(k)?;
                clash(&name)?;
                values.insert(name, v.clone());
            }
        }
        if let Some(p) = select.filter(|_| infos.is_empty()) {
            let example = inner
                .tensors()
                .first()
                .map(|t| t.name.clone())
                .unwrap_or_default();
            return Err(SelectError::NothingSelected {
                prefix: p.to_string(),
                example,
            });
        }
        let kept = infos.len() + values.len();
        let mut subtree = Subtree {
            structure: None,
            inner,
            index,
            back,
            infos,
            values,
        };
        subtree.structure = subtree
            .inner
            .structure()
            .and_then(|s| kept_structure(s, select, strip, kept))
            .filter(|s| s.fits(&subtree));
        Ok(subtree)
    }

    fn inner_index(&self, index: usize) -> Result<usize, FormatError> {
        self.index
            .get(index)
            .copied()
            .ok_or_else(|| FormatError::memory(format!("no tensor at index {index}")))
    }
}

impl TensorSource for Subtree {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        self.inner.tensor_bytes(self.inner_index(index)?)
    }
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        self.inner.stream_tensor(self.inner_index(index)?, sink)
    }
    fn stream_tensor_range(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        self.inner
            .stream_tensor_range(self.inner_index(index)?, range, sink)
    }
    fn file_range(&self, index: usize) -> Option<Range<u64>> {
        self.inner.file_range(*self.index.get(index)?)
    }
    fn same_bytes_as(&self, index: usize) -> Option<usize> {
        let first = self.inner.same_bytes_as(*self.index.get(index)?)?;
        self.back.get(&first).copied()
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        self.inner.metadata()
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
    fn structure(&self) -> Option<&Structure> {
        self.structure.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, MemorySource};

    fn checkpoint() -> DynSource {
        let mut m = MemorySource::new();
        for n in [
            "model.a.weight",
            "model.b",
            "optimizer.state.0.exp_avg",
            "modelx",
        ] {
            m.push(TensorInfo::new(n, DType::U8, vec![1]), vec![1])
                .unwrap();
        }
        m.values_mut().insert("epoch".into(), Value::Int(3));
        m.values_mut()
            .insert("model.scale".into(), Value::Float(0.5));
        Box::new(m)
    }

    fn names(s: &Subtree) -> Vec<&str> {
        s.tensors().iter().map(|t| t.name.as_str()).collect()
    }

    #[test]
    fn select_and_strip_keep_a_subtree_under_its_own_names() {
        let sel = Selection {
            select: Some("model".into()),
            strip: Some("model.".into()),
        };
        let s = Subtree::new(checkpoint(), &sel).unwrap();
        assert_eq!(names(&s), ["a.weight", "b"]);
        assert_eq!(s.values().keys().collect::<Vec<_>>(), ["scale"]);
        assert_eq!(s.tensor_bytes(1).unwrap().as_ref(), &[1]);
        // Select alone keeps the names; strip alone keeps everything.
        let s = Subtree::new(
            checkpoint(),
            &Selection {
                select: Some("model".into()),
                strip: None,
            },
        )
        .unwrap();
        assert_eq!(names(&s), ["model.a.weight", "model.b"]);
        let s = Subtree::new(
            checkpoint(),
            &Selection {
                select: None,
                strip: Some("model".into()),
            },
        )
        .unwrap();
        assert_eq!(
            names(&s),
            ["a.weight", "b", "optimizer.state.0.exp_avg", "modelx"]
        );
    }

    #[test]
    fn bad_selections_are_errors() {
        let sel = Selection {
            select: Some("ema".into()),
            strip: None,
        };
        assert!(matches!(
            Subtree::new(checkpoint(), &sel).err().unwrap(),
            SelectError::NothingSelected { .. }
        ));
        let mut m = MemorySource::new();
        m.push(TensorInfo::new("module.w", DType::U8, vec![1]), vec![1])
            .unwrap();
        m.push(TensorInfo::new("w", DType::U8, vec![1]), vec![1])
            .unwrap();
        let sel = Selection {
            select: None,
            strip: Some("module".into()),
        };
        assert_eq!(
            Subtree::new(Box::new(m), &sel).err().unwrap(),
            SelectError::NameClash {
                prefix: "module".into(),
                name: "w".into()
            }
        );
    }
}
