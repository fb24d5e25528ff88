//! The nesting of a checkpoint, kept beside its flat names so that writers can rebuild it.
//!
//! Readers hand tensors and values out under dotted names (`optimizer.param_groups.0.lr`):
//! that is what hashing, diffing and safetensors need. A training checkpoint, though, is a tree
//! (`{"model": {...}, "optimizer": {"state": {0: {...}}, "param_groups": [{...}]}}`) and
//! `torch.load` users index it as one: written back flat, `ckpt["optimizer"]` is a `KeyError` and
//! training cannot resume. The dotted names cannot be turned back into the tree (is `0` an int
//! key, a list index or a tuple index? is `a.b` one key or two?), so the reader records the tree
//! itself: a [`Structure`] whose containers say what they were (dict, `OrderedDict`, list,
//! tuple, with str, int and bool keys) and whose leaves name the tensor or value, by the dotted
//! name the source lists it under, that sits there.
//!
//! A writer uses a structure only when its leaves are exactly the source's tensor and value
//! names, each once and each at the place its name says ([`Structure::fits`]); anything else (a
//! source built in memory, a renaming that moves names off their places) is written flat as
//! before. A `--select`ed subtree keeps the part of the tree it selects
//! ([`crate::subtree::Subtree`]). Sources that are a plain state dict (one dict of
//! str keys to leaves) have no structure, so their output is what it always was.
//!
//! Through safetensors the structure travels as JSON in `__metadata__` under
//! [`crate::STRUCTURE_METADATA_KEY`] ([`Structure::to_json`]): a leaf is the JSON string of its
//! name; a container is an object with one member, `"dict"`, `"ordered_dict"`, `"list"` or
//! `"tuple"`; a dict's items are `[key, node]` pairs whose key is a JSON string, integer or
//! boolean. Nesting is capped at [`MAX_DEPTH`] levels (deeper trees are written flat), which
//! keeps the JSON within what JSON parsers nest and the writers' recursion shallow.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value as J;

use crate::tensor::TensorSource;

/// The deepest nesting a structure records; deeper checkpoints are written flat.
pub const MAX_DEPTH: usize = 32;

/// A dict key as Python held it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One node of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A tensor or value, by the dotted name the source lists it under.
    Leaf(String),
    Dict(Vec<(Key, Node)>),
    OrderedDict(Vec<(Key, Node)>),
    List(Vec<Node>),
    Tuple(Vec<Node>),
}

/// The tree of a nested checkpoint, from its root object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure {
    pub root: Node,
}

/// Why JSON under [`crate::STRUCTURE_METADATA_KEY`] is not a structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{0} is not a structure node")]
    BadNode(String),
    #[error("{0} is not a dict key (a string, an integer or a boolean)")]
    BadKey(String),
}

impl Structure {
    /// The leaf names, in tree order.
    pub fn leaves(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut stack = vec![&self.root];
        while let Some(n) = stack.pop() {
            match n {
                Node::Leaf(name) => out.push(name.as_str()),
                Node::Dict(items) | Node::OrderedDict(items) => {
                    stack.extend(items.iter().rev().map(|(_, c)| c))
                }
                Node::List(items) | Node::Tuple(items) => stack.extend(items.iter().rev()),
            }
        }
        out
    }

    /// Whether the leaves are exactly the tensor and value names of `src`, each once, and each
    /// leaf is named by where it sits (the dotted path of its keys and indices, as the readers
    /// name it; `tensor` or `value` for a leaf at the root): the condition for writing `src`
    /// nested, and what makes the names read back from the output the names written.
    pub fn fits(&self, src: &dyn TensorSource) -> bool {
        let tensors: HashSet<&str> = src.tensors().iter().map(|t| t.name.as_str()).collect();
        let mut count = 0usize;
        let mut seen = HashSet::new();
        let mut stack = vec![(&self.root, String::new())];
        while let Some((n, path)) = stack.pop() {
            let child = |part: String| {
                if path.is_empty() {
                    part
                } else {
                    format!("{path}.{part}")
                }
            };
            match n {
                Node::Leaf(name) => {
                    let tensor = tensors.contains(name.as_str());
                    let placed = if path.is_empty() {
                        name == if tensor { "tensor" } else { "value" }
                    } else {
                        *name == path
                    };
                    if !placed
                        || !(tensor || src.values().contains_key(name))
                        || !seen.insert(name.as_str())
                    {
                        return false;
                    }
                    count += 1;
                }
                Node::Dict(items) | Node::OrderedDict(items) => {
                    for (k, c) in items {
                        let part = match k {
                            Key::Str(s) => s.clone(),
                            Key::Int(i) => i.to_string(),
                            Key::Bool(b) => if *b { "True" } else { "False" }.to_string(),
                        };
                        stack.push((c, child(part)));
                    }
                }
                Node::List(items) | Node::Tuple(items) => {
                    for (i, c) in items.iter().enumerate() {
                        stack.push((c, child(i.to_string())));
                    }
                }
            }
        }
        count == src.tensors().len() + src.values().len()
    }

    /// The JSON form (module docs).
    pub fn to_json(&self) -> J {
        fn node(n: &Node) -> J {
            let items = |items: &[(Key, Node)]| {
                J::Array(
                    items
                        .iter()
                        .map(|(k, c)| {
                            let k = match k {
                                Key::Str(s) => J::String(s.clone()),
                                Key::Int(i) => J::from(*i),
                                Key::Bool(b) => J::Bool(*b),
                            };
                            J::Array(vec![k, node(c)])
                        })
                        .collect(),
                )
            };
            let one = |tag: &str, v: J| J::Object([(tag.to_string(), v)].into_iter().collect());
            match n {
                Node::Leaf(name) => J::String(name.clone()),
                Node::Dict(i) => one("dict", items(i)),
                Node::OrderedDict(i) => one("ordered_dict", items(i)),
                Node::List(i) => one("list", J::Array(i.iter().map(node).collect())),
                Node::Tuple(i) => one("tuple", J::Array(i.iter().map(node).collect())),
            }
        }
        node(&self.root)
    }

    /// Reads the JSON form back.
    ///
    /// # Errors
    /// Text that is not JSON, nodes and keys that no structure writes, nesting past
    /// [`MAX_DEPTH`].
    pub fn from_json_str(text: &str) -> Result<Structure, StructureError> {
        let j: J = serde_json::from_str(text).map_err(|e| StructureError::Json(e.to_string()))?;
        Structure::from_json(&j)
    }

    /// Reads the JSON form back from a parsed value (errors as [`Structure::from_json_str`]).
    pub fn from_json(j: &J) -> Result<Structure, StructureError> {
        fn short(j: &J) -> String {
            let s = j.to_string();
            match s.char_indices().nth(60) {
                Some((i, _)) => format!("{}...", &s[..i]),
                None => s,
            }
        }
        fn node(j: &J, depth: usize) -> Result<Node, StructureError> {
            if depth > MAX_DEPTH {
                return Err(StructureError::TooDeep);
            }
            let bad = || StructureError::BadNode(short(j));
            let obj = match j {
                J::String(s) => return Ok(Node::Leaf(s.clone())),
                J::Object(o) if o.len() == 1 => o,
                _ => return Err(bad()),
            };
            let (tag, body) = obj.iter().next().ok_or_else(bad)?;
            let J::Array(list) = body else {
                return Err(bad());
            };
            let children = || {
                list.iter()
                    .map(|c| node(c, depth + 1))
                    .collect::<Result<Vec<_>, _>>()
            };
            let items = || -> Result<Vec<(Key, Node)>, StructureError> {
                list.iter()
                    .map(|pair| match pair {
                        J::Array(kv) if kv.len() == 2 => {
                            let key = match &kv[0] {
                                J::String(s) => Key::Str(s.clone()),
                                J::Bool(b) => Key::Bool(*b),
                                J::Number(n) => Key::Int(
                                    n.as_i64()
                                        .ok_or_else(|| StructureError::BadKey(n.to_string()))?,
                                ),
                                other => return Err(StructureError::BadKey(short(other))),
                            };
                            Ok((key, node(&kv[1], depth + 1)?))
                        }
                        other => Err(StructureError::BadNode(short(other))),
                    })
                    .collect()
            };
            match tag.as_str() {
                "dict" => Ok(Node::Dict(items()?)),
                "ordered_dict" => Ok(Node::OrderedDict(items()?)),
                "list" => Ok(Node::List(children()?)),
                "tuple" => Ok(Node::Tuple(children()?)),
                _ => Err(bad()),
            }
        }
        Ok(Structure { root: node(j, 0)? })
    }

    /// Whether this is a plain state dict (one dict of str keys to leaves named by their keys),
    /// which needs no structure to be written as it was.
    pub fn is_flat(&self) -> bool {
        match &self.root {
            Node::Dict(items) | Node::OrderedDict(items) => items
                .iter()
                .all(|(k, c)| matches!((k, c), (Key::Str(k), Node::Leaf(n)) if k == n)),
            _ => false,
        }
    }
}

/// Moves the structure out of `metadata[STRUCTURE_METADATA_KEY]` when it parses; otherwise
/// leaves the metadata as it is (it then travels as plain metadata).
pub(crate) fn take_structure(metadata: &mut BTreeMap<String, String>) -> Option<Structure> {
    let s = Structure::from_json_str(metadata.get(crate::STRUCTURE_METADATA_KEY)?).ok()?;
    metadata.remove(crate::STRUCTURE_METADATA_KEY);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Structure {
        Structure {
            root: Node::Dict(vec![
                (
                    Key::Str("model".into()),
                    Node::OrderedDict(vec![(
                        Key::Str("a.b".into()),
                        Node::Leaf("model.a.b".into()),
                    )]),
                ),
                (
                    Key::Str("optimizer".into()),
                    Node::Dict(vec![
                        (
                            Key::Str("state".into()),
                            Node::Dict(vec![(Key::Int(0), Node::Leaf("optimizer.state.0".into()))]),
                        ),
                        (
                            Key::Str("param_groups".into()),
                            Node::List(vec![Node::Tuple(vec![
                                Node::Leaf("optimizer.param_groups.0.0".into()),
                                Node::Leaf("optimizer.param_groups.0.1".into()),
                            ])]),
                        ),
                    ]),
                ),
                (Key::Bool(true), Node::Leaf("True".into())),
            ]),
        }
    }

    #[test]
    fn json_round_trip_keeps_kinds_and_keys() {
        let s = sample();
        let text = s.to_json().to_string();
        assert!(text.starts_with(r#"{"dict":[["model",{"ordered_dict":[["a.b","model.a.b"]]}]"#));
        assert!(text.contains(r#"[0,"optimizer.state.0"]"#));
        assert!(text.contains(r#"[true,"True"]"#));
        assert_eq!(Structure::from_json_str(&text), Ok(s.clone()));
        assert_eq!(
            s.leaves(),
            [
                "model.a.b",
                "optimizer.state.0",
                "optimizer.param_groups.0.0",
                "optimizer.param_groups.0.1",
                "True"
            ]
        );
        assert!(!s.is_flat());
    }

    #[test]
    fn bad_json_is_refused() {
        assert!(matches!(
            Structure::from_json_str("{"),
            Err(StructureError::Json(_))
        ));
        assert!(matches!(
            Structure::from_json_str(r#"{"set":[]}"#),
            Err(StructureError::BadNode(_))
        ));
        assert!(matches!(
            Structure::from_json_str(r#"{"dict":[[1.5,"x"]]}"#),
            Err(StructureError::BadKey(_))
        ));
        assert!(matches!(
            Structure::from_json_str("3"),
            Err(StructureError::BadNode(_))
        ));
        let mut deep = String::from("\"x\"");
        for _ in 0..=MAX_DEPTH {
            deep = format!(r#"{{"list":[{deep}]}}"#);
        }
        assert_eq!(
            Structure::from_json_str(&deep),
            Err(StructureError::TooDeep)
        );
    }

    #[test]
    fn a_plain_state_dict_is_flat() {
        let s = Structure {
            root: Node::OrderedDict(vec![(Key::Str("w".into()), Node::Leaf("w".into()))]),
        };
        assert!(s.is_flat());
    }
}
