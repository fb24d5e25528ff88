//! From the object tree to what a weight file holds: dotted names for tensors and values
//! ([`Pickle::flatten`], within the walk's budgets, refusing cycles and duplicates) and the
//! nesting itself ([`Pickle::structure`]) so that a writer can rebuild it.

use std::collections::HashSet;

use super::limits::{per_input, NAME_BYTES_PER_BYTE, VALUE_BYTES_PER_BYTE, VISITS_PER_BYTE};
use super::{ElementType, Flat, Global, Leaf, Limits, NdData, NodeId, Object, Pickle, PickleError};
use crate::tensor::Value;

impl Pickle {
    /// The scalar value of a leaf node, if it is one.
    fn leaf_value(&self, id: NodeId) -> Option<Value> {
        Some(match self.get(id) {
            Object::None => Value::None,
            Object::Bool(b) => Value::Bool(*b),
            Object::Int(i) => Value::Int(*i),
            Object::BigInt(b) => Value::BigInt(b.to_decimal()),
            Object::Float(f) => Value::Float(*f),
            Object::Str(s) => Value::Str(s.clone()),
            Object::Bytes(b) => Value::Bytes(b.clone()),
            Object::Device(d) => Value::Str(d.clone()),
            Object::Global(Global::DType(_), name) => Value::Str(name.to_string()),
            Object::NumpyDtype(d) => Value::Str(d.descr.clone()),
            _ => return None,
        })
    }

    fn key_part(&self, key: NodeId, path: &str) -> Result<String, PickleError> {
        match self.get(key) {
            Object::Str(s) => Ok(s.clone()),
            Object::Int(i) => Ok(i.to_string()),
            Object::BigInt(b) => Ok(b.to_decimal()),
            Object::Bool(b) => Ok(if *b { "True" } else { "False" }.to_string()),
            other => Err(PickleError::BadKey {
                path: path.to_string(),
                kind: other.kind(),
            }),
        }
    }

    /// The nesting of the tree, with leaves named as [`Pickle::flatten`] names them (call it
    /// after `flatten` succeeded: the walk is then within the same budgets). `None` for a plain
    /// state dict (nothing to rebuild) and for trees a structure does not describe: sets,
    /// numpy arrays, keys other than str, i64 and bool, and nesting past
    /// [`crate::structure::MAX_DEPTH`].
    pub fn structure(&self) -> Option<crate::structure::Structure> {
        use crate::structure::{Key, Node, Structure, MAX_DEPTH};
        fn walk(p: &Pickle, id: NodeId, name: &str, depth: usize) -> Option<Node> {
            if depth > MAX_DEPTH {
                return None;
            }
            let child = |part: &str| {
                if name.is_empty() {
                    part.to_string()
                } else {
                    format!("{name}.{part}")
                }
            };
            let seq = |items: &[NodeId]| -> Option<Vec<Node>> {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, c)| walk(p, *c, &child(&i.to_string()), depth + 1))
                    .collect()
            };
            let map = |items: &[(NodeId, NodeId)]| -> Option<Vec<(Key, Node)>> {
                items
                    .iter()
                    .map(|(k, c)| {
                        let key = match p.get(*k) {
                            Object::Str(s) => Key::Str(s.clone()),
                            Object::Int(i) => Key::Int(*i),
                            Object::Bool(b) => Key::Bool(*b),
                            _ => return None,
                        };
                        let part = p.key_part(*k, name).ok()?;
                        Some((key, walk(p, *c, &child(&part), depth + 1)?))
                    })
                    .collect()
            };
            Some(match p.get(id) {
                Object::Tuple(items) => Node::Tuple(seq(items)?),
                Object::List(items) => Node::List(seq(items)?),
                Object::Dict(items) => Node::Dict(map(items)?),
                Object::OrderedDict(items) => Node::OrderedDict(map(items)?),
                Object::Tensor(_) => Node::Leaf(if name.is_empty() {
                    "tensor".into()
                } else {
                    name.to_string()
                }),
                Object::Set(_) | Object::FrozenSet(_) | Object::NdArray(_) => return None,
                _ => {
                    p.leaf_value(id)?;
                    Node::Leaf(if name.is_empty() {
                        "value".into()
                    } else {
                        name.to_string()
                    })
                }
            })
        }
        let s = Structure {
            root: walk(self, self.root, "", 0)?,
        };
        (!s.is_flat()).then_some(s)
    }

    /// Flattens the tree to dotted names: dict keys (ints in decimal), list, tuple and set
    /// items by index. A tensor or value at the root is called `tensor` or `value`. The walk is
    /// iterative, capped in depth and in total visits, and refuses cycles.
    ///
    /// # Errors
    /// Cycles, nesting past `limits.max_depth`, more than `limits.max_visits` visits, keys that
    /// cannot be names, two entries with one name, dtypes without a safetensors equivalent, and
    /// nodes that are not data (storages, callables).
    pub fn flatten(&self, limits: &Limits) -> Result<Flat<'_>, PickleError> {
        enum Task {
            Enter(NodeId, String, usize),
            Exit(NodeId),
        }
        let max_visits = limits.max_visits.min(per_input(self.len, VISITS_PER_BYTE));
        let max_name_bytes = limits
            .max_name_bytes
            .min(per_input(self.len, NAME_BYTES_PER_BYTE));
        let max_value_bytes = limits
            .max_value_bytes
            .min(per_input(self.len, VALUE_BYTES_PER_BYTE));
        let mut on_path = vec![false; self.nodes.len()];
        let mut tasks = vec![Task::Enter(self.root, String::new(), 0)];
        let mut visits = 0usize;
        let mut name_bytes = 0usize;
        let mut value_bytes = 0usize;
        let mut out = Flat::default();
        // Each child's name is counted against the budget as it is made, so a container
        // reached through many names stops at the budget, not after allocating every name.
        let mut child = |prefix: &str, part: &str| -> Result<String, PickleError> {
            let n = if prefix.is_empty() {
                part.to_string()
            } else {
                format!("{prefix}.{part}")
            };
            name_bytes = name_bytes.saturating_add(n.len());
            if name_bytes > max_name_bytes {
                return Err(PickleError::NameBudget {
                    limit: max_name_bytes,
                });
            }
            Ok(n)
        };
        while let Some(task) = tasks.pop() {
            let (id, name, depth) = match task {
                Task::Exit(id) => {
                    on_path[id.ix()] = false;
                    continue;
                }
                Task::Enter(id, name, depth) => (id, name, depth),
            };
            visits += 1;
            if visits > max_visits {
                return Err(PickleError::ExpansionBudget { limit: max_visits });
            }
            let obj = self.get(id);
            let container = matches!(
                obj,
                Object::Tuple(_)
                    | Object::List(_)
                    | Object::Set(_)
                    | Object::FrozenSet(_)
                    | Object::Dict(_)
                    | Object::OrderedDict(_)
            ) || matches!(obj, Object::NdArray(a) if matches!(a.data, NdData::Objects(_)));
            if container {
                if on_path[id.ix()] {
                    return Err(PickleError::Cycle { path: name });
                }
                if depth >= limits.max_depth {
                    return Err(PickleError::TooDeep {
                        path: name,
                        limit: limits.max_depth,
                    });
                }
            }
            let children: Vec<(String, NodeId)> = match obj {
                Object::Tuple(items)
                | Object::List(items)
                | Object::Set(items)
                | Object::FrozenSet(items) => {
                    let mut v = Vec::with_capacity(items.len());
                    for (i, c) in items.iter().enumerate() {
                        v.push((child(&name, &i.to_string())?, *c));
                    }
                    v
                }
                Object::Dict(items) | Object::OrderedDict(items) => {
                    let mut v = Vec::with_capacity(items.len());
                    for (k, c) in items {
                        v.push((child(&name, &self.key_part(*k, &name)?)?, *c));
                    }
                    v
                }
                Object::NdArray(a) => {
                    if let NdData::Objects(list) = a.data {
                        vec![(name.clone(), list)]
                    } else {
                        let n = if name.is_empty() {
                            "tensor".into()
                        } else {
                            name
                        };
                        out.entries.push((n, Leaf::Array(a)));
                        continue;
                    }
                }
                Object::Tensor(t) => {
                    let n = if name.is_empty() {
                        "tensor".into()
                    } else {
                        name
                    };
                    if t.elem == ElementType::Complex128 {
                        return Err(PickleError::UnsupportedDType {
                            name: n,
                            dtype: "complex128",
                        });
                    }
                    out.entries.push((n, Leaf::Tensor(t)));
                    continue;
                }
                other => {
                    let n = if name.is_empty() {
                        "value".into()
                    } else {
                        name
                    };
                    let size = match other {
                        Object::Str(s) => s.len(),
                        Object::Bytes(b) => b.len(),
                        Object::BigInt(b) => b.le_bytes().len().saturating_mul(3),
                        _ => 0,
                    };
                    value_bytes = value_bytes.saturating_add(size);
                    if value_bytes > max_value_bytes {
                        return Err(PickleError::ValueBudget {
                            limit: max_value_bytes,
                        });
                    }
                    match self.leaf_value(id) {
                        Some(v) => out.entries.push((n, Leaf::Value(v))),
                        None => {
                            let what = match other {
                                Object::Storage(_) => "a bare storage (not inside a tensor)".into(),
                                Object::Global(_, g) => format!("the global {g}"),
                                Object::NdArrayPending => "a numpy array without its data".into(),
                                o => format!("a {}", o.kind()),
                            };
                            return Err(PickleError::NotData { name: n, what });
                        }
                    }
                    continue;
                }
            };
            on_path[id.ix()] = true;
            tasks.push(Task::Exit(id));
            for (child_name, child) in children.into_iter().rev() {
                tasks.push(Task::Enter(child, child_name, depth + 1));
            }
        }
        let mut seen = HashSet::with_capacity(out.entries.len());
        for (name, _) in &out.entries {
            if !seen.insert(name.as_str()) {
                return Err(PickleError::DuplicateName { name: name.clone() });
            }
        }
        Ok(out)
    }
}
