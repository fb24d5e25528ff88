//! Python's equality of dict keys and set items, so that a dict reads as Python builds it.
//!
//! `{1: a, True: b, 1.0: c}` is one entry in Python: `1 == True == 1.0` and they hash alike,
//! so each later `SETITEM` replaces the value under the FIRST key. A reader that keeps three
//! entries returns tensors torch never sees (`x.1` and `x.True`). After the machine has run,
//! every dict is folded the way Python's would be (first key kept, in its place; last value
//! kept) and every set keeps the first of equal items.
//!
//! Keys are compared by value for the types Python compares by value and that can become
//! names (ints, bools, floats, str, bytes, None); any other key (a tuple, a tensor) is
//! compared by identity, which is what Python does for tensors, and such keys are refused
//! later when the tree is flattened to names anyway.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use super::{NodeId, Object};

/// A key as Python compares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PyKey<'a> {
    /// An int, a bool, or an integral float, with its exact value.
    Int(i128),
    /// An int past `i128`, in decimal.
    Big(String),
    /// A float that is not integral (bits of the value; `-0.0` is integral).
    Float(u64),
    Str(&'a str),
    Bytes(&'a [u8]),
    None,
    /// Compared by identity: the node.
    Id(u32),
}

fn py_key(nodes: &[Object], id: NodeId) -> PyKey<'_> {
    match nodes.get(id.ix()) {
        Some(Object::None) => PyKey::None,
        Some(Object::Bool(b)) => PyKey::Int(i128::from(*b)),
        Some(Object::Int(i)) => PyKey::Int(i128::from(*i)),
        Some(Object::BigInt(b)) => {
            let bytes = b.le_bytes();
            if bytes.len() <= 16 {
                let negative = bytes.last().is_some_and(|x| x & 0x80 != 0);
                let mut a = [if negative { 0xFF } else { 0 }; 16];
                a[..bytes.len()].copy_from_slice(bytes);
                PyKey::Int(i128::from_le_bytes(a))
            } else {
                PyKey::Big(b.to_decimal())
            }
        }
        Some(Object::Float(f)) => {
            // NaN is unequal to itself: only the same object finds it again.
            if f.is_nan() {
                PyKey::Id(id.0)
            } else if f.fract() == 0.0 && f.abs() < 2f64.powi(126) {
                // Integral and within range: exactly representable as i128.
                PyKey::Int(*f as i128)
            } else {
                PyKey::Float(f.to_bits())
            }
        }
        Some(Object::Str(s)) => PyKey::Str(s),
        Some(Object::Bytes(b)) => PyKey::Bytes(b),
        _ => PyKey::Id(id.0),
    }
}

/// Folds `pairs` as Python's dict would: the first of equal keys stays in its place and takes
/// the last value. Returns `None` when no two keys are equal (nothing to change).
fn fold_pairs(nodes: &[Object], pairs: &[(NodeId, NodeId)]) -> Option<Vec<(NodeId, NodeId)>> {
    if pairs.len() < 2 {
        return None;
    }
    let mut seen: HashMap<PyKey<'_>, usize> = HashMap::with_capacity(pairs.len());
    let mut out: Vec<(NodeId, NodeId)> = Vec::new();
    for (i, &(k, v)) in pairs.iter().enumerate() {
        match seen.entry(py_key(nodes, k)) {
            Entry::Occupied(e) => {
                if out.is_empty() {
                    out.extend_from_slice(&pairs[..i]);
                }
                out[*e.get()].1 = v;
            }
            Entry::Vacant(e) => {
                e.insert(if out.is_empty() { i } else { out.len() });
                if !out.is_empty() {
                    out.push((k, v));
                }
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Keeps the first of equal set items. `None` when all differ.
fn fold_items(nodes: &[Object], items: &[NodeId]) -> Option<Vec<NodeId>> {
    if items.len() < 2 {
        return None;
    }
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut out: Vec<NodeId> = Vec::new();
    let mut dropped = false;
    for (i, &it) in items.iter().enumerate() {
        if seen.insert(py_key(nodes, it)) {
            if dropped {
                out.push(it);
            }
        } else if !dropped {
            dropped = true;
            out.extend_from_slice(&items[..i]);
        }
    }
    dropped.then_some(out)
}

/// Folds every dict and set of the arena as Python would have built it.
pub(super) fn fold_equal_keys(nodes: &mut [Object]) {
    for i in 0..nodes.len() {
        let folded = match &nodes[i] {
            Object::Dict(p) | Object::OrderedDict(p) => fold_pairs(nodes, p).map(Folded::Pairs),
            Object::Set(v) | Object::FrozenSet(v) => fold_items(nodes, v).map(Folded::Items),
            _ => None,
        };
        match (folded, &mut nodes[i]) {
            (Some(Folded::Pairs(new)), Object::Dict(p) | Object::OrderedDict(p)) => *p = new,
            (Some(Folded::Items(new)), Object::Set(v) | Object::FrozenSet(v)) => *v = new,
            _ => {}
        }
    }
}

enum Folded {
    Pairs(Vec<(NodeId, NodeId)>),
    Items(Vec<NodeId>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_numbers_fold_into_the_first_key() {
        let mut nodes = vec![
            Object::Int(1),
            Object::Bool(true),
            Object::Float(1.0),
            Object::Str("a".into()),
            Object::Str("b".into()),
            Object::Str("c".into()),
            Object::Dict(vec![
                (NodeId(0), NodeId(3)),
                (NodeId(1), NodeId(4)),
                (NodeId(2), NodeId(5)),
            ]),
            Object::Set(vec![NodeId(1), NodeId(0), NodeId(3)]),
        ];
        fold_equal_keys(&mut nodes);
        assert_eq!(nodes[6], Object::Dict(vec![(NodeId(0), NodeId(5))]));
        assert_eq!(nodes[7], Object::Set(vec![NodeId(1), NodeId(3)]));
    }

    #[test]
    fn different_keys_stay() {
        let mut nodes = vec![
            Object::Int(1),
            Object::Str("1".into()),
            Object::Bytes(b"1".to_vec()),
            Object::Float(1.5),
            Object::Float(f64::NAN),
            Object::Float(f64::NAN),
            Object::Dict(vec![
                (NodeId(0), NodeId(0)),
                (NodeId(1), NodeId(0)),
                (NodeId(2), NodeId(0)),
                (NodeId(3), NodeId(0)),
                (NodeId(4), NodeId(0)),
                (NodeId(5), NodeId(0)),
            ]),
        ];
        let before = nodes[6].clone();
        fold_equal_keys(&mut nodes);
        assert_eq!(nodes[6], before);
    }

    #[test]
    fn zero_and_negative_zero_are_one_key() {
        let mut nodes = vec![
            Object::Float(-0.0),
            Object::Int(0),
            Object::Bool(false),
            Object::Dict(vec![
                (NodeId(0), NodeId(0)),
                (NodeId(1), NodeId(1)),
                (NodeId(2), NodeId(2)),
            ]),
        ];
        fold_equal_keys(&mut nodes);
        assert_eq!(nodes[3], Object::Dict(vec![(NodeId(0), NodeId(2))]));
    }
}
