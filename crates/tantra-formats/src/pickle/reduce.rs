//! What the machine does with a call: `REDUCE`, `NEWOBJ`, `BUILD` and persistent ids on the
//! allowlisted globals only (tensor rebuilds, storages, containers, numpy arrays), with Python's
//! and torch's semantics or a refusal where a file would mean something else to torch.

use crate::dtype::DType;

use super::vm::{plain_key, Vm};
use super::{
    BigInt, ElementType, Global, NdArray, NdData, NodeId, NumpyDtype, Object, PersistentIds,
    PickleError, StorageKind, StorageRef, TensorRef,
};

impl Vm<'_> {
    pub(super) fn append(
        &mut self,
        target: NodeId,
        items: Vec<NodeId>,
        opcode: &'static str,
    ) -> Result<(), PickleError> {
        let kind = self.node(target).kind();
        match self.nodes.get_mut(target.ix()) {
            Some(Object::List(v)) => {
                v.extend(items);
                Ok(())
            }
            _ => Err(PickleError::AppendTarget {
                offset: self.off,
                opcode,
                target: kind,
            }),
        }
    }

    pub(super) fn set_items(
        &mut self,
        target: NodeId,
        pairs: Vec<(NodeId, NodeId)>,
        opcode: &'static str,
    ) -> Result<(), PickleError> {
        let kind = self.node(target).kind();
        match self.nodes.get_mut(target.ix()) {
            Some(Object::Dict(v)) | Some(Object::OrderedDict(v)) => {
                v.extend(pairs);
                Ok(())
            }
            _ => Err(PickleError::SetItemTarget {
                offset: self.off,
                opcode,
                target: kind,
            }),
        }
    }

    pub(super) fn build(&mut self) -> Result<(), PickleError> {
        let state = self.pop("BUILD")?;
        let target = self.top("BUILD")?;
        let bad = |vm: &Self, what: &str| PickleError::BuildTarget {
            offset: vm.off,
            target: what.to_string(),
        };
        match self.node(target) {
            // torch: `inst.__dict__.update(state)` (the `_metadata` of a state dict). The state
            // is parsed like everything else and then dropped: it is not weights.
            Object::OrderedDict(_) => Ok(()),
            // torch calls `tensor.set_(*state)` (or `Parameter.__setstate__(state)`): the
            // state replaces the data (an empty dict empties the tensor). torch never writes
            // this; the file would read differently here and in torch.
            Object::Tensor(_) => Err(PickleError::AmbiguousTensorState {
                offset: self.off,
                why: format!(
                    "BUILD on a tensor (torch calls set_ with the {} state, replacing its data)",
                    self.node(state).kind()
                ),
            }),
            Object::NumpyDtype(_) => {
                let order = match self.node(state) {
                    Object::Tuple(items) => items.get(1).and_then(|&b| match self.node(b) {
                        Object::Str(s) => s.chars().next(),
                        _ => None,
                    }),
                    _ => None,
                };
                let order = order.ok_or_else(|| bad(self, "a numpy dtype with malformed state"))?;
                if let Some(Object::NumpyDtype(d)) = self.nodes.get_mut(target.ix()) {
                    d.byteorder = order;
                }
                Ok(())
            }
            Object::NdArrayPending => {
                let arr = self.ndarray_state(state)?;
                if let Some(slot) = self.nodes.get_mut(target.ix()) {
                    *slot = Object::NdArray(Box::new(arr));
                }
                Ok(())
            }
            other => Err(bad(self, other.kind())),
        }
    }

    /// numpy's `ndarray.__setstate__((version, shape, dtype, is_fortran, data))`.
    pub(super) fn ndarray_state(&self, state: NodeId) -> Result<NdArray, PickleError> {
        let bad = |why: &str| PickleError::BadArguments {
            offset: self.off,
            callable: "numpy.ndarray.__setstate__".into(),
            why: why.to_string(),
        };
        let Object::Tuple(items) = self.node(state) else {
            return Err(bad("state is not a tuple"));
        };
        let items: &[NodeId] = match items.len() {
            5 => &items[1..],
            4 => &items[..],
            _ => return Err(bad("state does not have 4 or 5 items")),
        };
        let shape = self
            .uint_seq(items[0])
            .ok_or_else(|| bad("shape is not a tuple of non-negative ints"))?;
        let Object::NumpyDtype(dtype) = self.node(items[1]) else {
            return Err(bad("dtype is not a numpy dtype"));
        };
        let fortran_order = match self.node(items[2]) {
            Object::Bool(b) => *b,
            Object::Int(i) => *i != 0,
            _ => return Err(bad("is_fortran is not a bool")),
        };
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad("shape overflows"))?;
        let data = match self.node(items[3]) {
            Object::Bytes(b) => NdData::Raw(b.clone()),
            Object::Str(s) => NdData::Raw(s.as_bytes().to_vec()),
            Object::List(l) => {
                if l.len() as u64 != numel {
                    return Err(bad("object list length differs from the shape"));
                }
                NdData::Objects(items[3])
            }
            _ => return Err(bad("data is not bytes or a list")),
        };
        if let NdData::Raw(raw) = &data {
            let want = dtype
                .itemsize()
                .and_then(|s| s.checked_mul(numel))
                .ok_or_else(|| bad("item size unknown or overflowing"))?;
            if want != raw.len() as u64 {
                return Err(bad("data length differs from shape times item size"));
            }
        }
        Ok(NdArray {
            shape,
            dtype: (**dtype).clone(),
            fortran_order,
            data,
        })
    }

    /// The items of a tuple or list, each converted by `item`; `None` if one does not convert.
    pub(super) fn seq_of<T>(
        &self,
        id: NodeId,
        item: impl Fn(&Object) -> Option<T>,
    ) -> Option<Vec<T>> {
        let (Object::Tuple(items) | Object::List(items)) = self.node(id) else {
            return None;
        };
        items.iter().map(|&i| item(self.node(i))).collect()
    }

    /// Ints of a tuple or list, all non-negative.
    pub(super) fn uint_seq(&self, id: NodeId) -> Option<Vec<u64>> {
        self.seq_of(id, |o| match o {
            Object::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        })
    }

    /// Ints (or bools, as Python counts them) of a tuple or list.
    pub(super) fn int_seq(&self, id: NodeId) -> Option<Vec<i64>> {
        self.seq_of(id, |o| match o {
            Object::Int(v) => Some(*v),
            Object::Bool(b) => Some(i64::from(*b)),
            _ => None,
        })
    }

    pub(super) fn persistent_load(&mut self, pid: NodeId) -> Result<NodeId, PickleError> {
        let arity = match self.opts.persistent_ids {
            PersistentIds::Forbidden => {
                return Err(PickleError::NoPersistentIds { offset: self.off })
            }
            PersistentIds::Zip => 5,
            PersistentIds::Legacy => 6,
        };
        let bad = |why: &str| PickleError::PersistentId {
            offset: self.off,
            why: why.to_string(),
        };
        let Object::Tuple(items) = self.node(pid) else {
            return Err(bad("the persistent id is not a tuple"));
        };
        if items.len() != arity {
            return Err(bad(&format!(
                "the persistent id has {} fields; a storage id has {arity}",
                items.len()
            )));
        }
        if !matches!(self.node(items[0]), Object::Str(s) if s == "storage") {
            return Err(bad("the first field is not 'storage'"));
        }
        let Object::Global(Global::Storage(kind), _) = self.node(items[1]) else {
            return Err(bad("the second field is not a storage class"));
        };
        let kind = *kind;
        let key = match self.node(items[2]) {
            Object::Str(s) => s.clone(),
            _ => return Err(bad("the storage key is not a string")),
        };
        if !plain_key(&key) {
            return Err(PickleError::StorageKey {
                offset: self.off,
                key,
            });
        }
        let location = match self.node(items[3]) {
            Object::Str(s) => s.clone(),
            _ => return Err(bad("the location is not a string")),
        };
        let numel = match self.node(items[4]) {
            Object::Int(i) => u64::try_from(*i).map_err(|_| bad("the storage size is negative"))?,
            _ => return Err(bad("the storage size is not an int")),
        };
        if arity == 6 && !matches!(self.node(items[5]), Object::None) {
            return Err(bad("storage views (view_metadata) are not supported"));
        }
        let s = StorageRef {
            key,
            kind,
            location,
            numel,
        };
        if s.byte_len().is_none() {
            return Err(bad("the storage size overflows"));
        }
        self.alloc(Object::Storage(Box::new(s)))
    }

    pub(super) fn call(
        &mut self,
        callable: NodeId,
        args: NodeId,
        newobj: bool,
        opcode: &'static str,
    ) -> Result<NodeId, PickleError> {
        let (g, gname) = match self.node(callable) {
            Object::Global(g, n) => (*g, n.to_string()),
            other => {
                return Err(PickleError::NotCallable {
                    offset: self.off,
                    opcode,
                    what: format!("a {}", other.kind()),
                })
            }
        };
        if newobj && !g.is_class() {
            return Err(PickleError::NotCallable {
                offset: self.off,
                opcode,
                what: format!("{gname} (not a class)"),
            });
        }
        let Object::Tuple(argv) = self.node(args) else {
            return Err(PickleError::BadArguments {
                offset: self.off,
                callable: gname,
                why: "the arguments are not a tuple".into(),
            });
        };
        let argv = argv.clone();
        // NEWOBJ is `cls.__new__(cls, *args)`: for dict and set types `__new__` ignores its
        // arguments (`__init__`, which NEWOBJ does not call, would fill them), so the result
        // is empty, as in torch.
        if newobj {
            match g {
                Global::OrderedDict => return self.alloc(Object::OrderedDict(Vec::new())),
                Global::Set => return self.alloc(Object::Set(Vec::new())),
                _ => {}
            }
        }
        self.apply(g, &gname, &argv, opcode)
    }

    pub(super) fn apply(
        &mut self,
        g: Global,
        gname: &str,
        argv: &[NodeId],
        opcode: &'static str,
    ) -> Result<NodeId, PickleError> {
        let bad = |vm: &Self, why: &str| PickleError::BadArguments {
            offset: vm.off,
            callable: gname.to_string(),
            why: why.to_string(),
        };
        match g {
            Global::OrderedDict => match argv {
                [] => self.alloc(Object::OrderedDict(Vec::new())),
                [items] => {
                    let seq = match self.node(*items) {
                        Object::List(v) | Object::Tuple(v) => v.clone(),
                        _ => return Err(bad(self, "expected a list of pairs")),
                    };
                    let mut pairs = Vec::with_capacity(seq.len());
                    for p in seq {
                        match self.node(p) {
                            Object::Tuple(kv) | Object::List(kv) if kv.len() == 2 => {
                                pairs.push((kv[0], kv[1]))
                            }
                            _ => return Err(bad(self, "an item is not a (key, value) pair")),
                        }
                    }
                    self.alloc(Object::OrderedDict(pairs))
                }
                _ => Err(bad(self, "expected at most one argument")),
            },
            Global::Set | Global::FrozenSet => {
                let items = match argv {
                    [] => Vec::new(),
                    [it] => match self.node(*it) {
                        Object::List(v)
                        | Object::Tuple(v)
                        | Object::Set(v)
                        | Object::FrozenSet(v) => v.clone(),
                        _ => return Err(bad(self, "expected a list")),
                    },
                    _ => return Err(bad(self, "expected at most one argument")),
                };
                self.alloc(if g == Global::Set {
                    Object::Set(items)
                } else {
                    Object::FrozenSet(items)
                })
            }
            Global::Size => {
                let items = match argv {
                    [] => Vec::new(),
                    [t] => match self.node(*t) {
                        Object::Tuple(v) | Object::List(v) => v.clone(),
                        _ => return Err(bad(self, "expected a tuple of ints")),
                    },
                    _ => return Err(bad(self, "expected one argument")),
                };
                if items
                    .iter()
                    .any(|&i| !matches!(self.node(i), Object::Int(_)))
                {
                    return Err(bad(self, "expected a tuple of ints"));
                }
                self.alloc(Object::Tuple(items))
            }
            Global::Device => {
                let dev = match argv {
                    [t] => match self.node(*t) {
                        Object::Str(s) => s.clone(),
                        _ => return Err(bad(self, "expected a device string")),
                    },
                    [t, i] => match (self.node(*t), self.node(*i)) {
                        (Object::Str(s), Object::Int(i)) => format!("{s}:{i}"),
                        (Object::Str(s), Object::None) => s.clone(),
                        _ => return Err(bad(self, "expected a device type and index")),
                    },
                    _ => return Err(bad(self, "expected one or two arguments")),
                };
                self.alloc(Object::Device(dev))
            }
            Global::CodecsEncode => {
                let (text, enc) = match argv {
                    [t] => (*t, None),
                    [t, e] => (*t, Some(*e)),
                    _ => return Err(bad(self, "expected a string and an encoding")),
                };
                let Object::Str(s) = self.node(text) else {
                    return Err(bad(self, "expected a string"));
                };
                let enc = match enc.map(|e| self.node(e)) {
                    None => "utf-8".to_string(),
                    Some(Object::Str(e)) => e.to_ascii_lowercase().replace('_', "-"),
                    Some(_) => return Err(bad(self, "the encoding is not a string")),
                };
                let out: Vec<u8> = match enc.as_str() {
                    "latin1" | "latin-1" | "iso-8859-1" | "iso8859-1" | "l1" => s
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)))
                        .collect::<Result<_, _>>()
                        .map_err(|_| bad(self, "a character is outside latin-1"))?,
                    "ascii" if s.is_ascii() => s.as_bytes().to_vec(),
                    "utf-8" | "utf8" => s.as_bytes().to_vec(),
                    _ => return Err(bad(self, "unsupported encoding")),
                };
                self.alloc(Object::Bytes(out))
            }
            Global::RebuildTensor(v) => self.rebuild_tensor(v, gname, argv),
            Global::RebuildParameter { with_state } => {
                let n = if with_state { 4 } else { 3 };
                if argv.len() != n {
                    return Err(bad(self, &format!("expected {n} arguments")));
                }
                if !matches!(self.node(argv[0]), Object::Tensor(_)) {
                    return Err(bad(self, "the first argument is not a tensor"));
                }
                if with_state {
                    self.check_obj_state(argv[3])?;
                }
                Ok(argv[0])
            }
            Global::RebuildFromTypeV2 => {
                let [func, new_type, args, state] = argv else {
                    return Err(bad(self, "expected 4 arguments"));
                };
                let inner = match self.node(*func) {
                    Object::Global(
                        g @ (Global::RebuildTensor(_) | Global::RebuildParameter { .. }),
                        n,
                    ) => (*g, n.to_string()),
                    _ => return Err(bad(self, "the function is not a tensor rebuild function")),
                };
                if !matches!(self.node(*new_type), Object::Global(Global::TensorType, _)) {
                    return Err(bad(
                        self,
                        "the type is not torch.Tensor or torch.nn.parameter.Parameter",
                    ));
                }
                let Object::Tuple(inner_args) = self.node(*args) else {
                    return Err(bad(self, "the arguments are not a tuple"));
                };
                let inner_args = inner_args.clone();
                let state = *state;
                // One level only: `inner` is never `_rebuild_from_type_v2` itself.
                let t = self.apply(inner.0, &inner.1, &inner_args, opcode)?;
                self.check_obj_state(state)?;
                Ok(t)
            }
            Global::NumpyReconstruct => {
                let [cls, _shape, _typecode] = argv else {
                    return Err(bad(self, "expected 3 arguments"));
                };
                if !matches!(self.node(*cls), Object::Global(Global::NumpyNdarray, _)) {
                    return Err(bad(self, "the class is not numpy.ndarray"));
                }
                self.alloc(Object::NdArrayPending)
            }
            Global::NumpyDtype => {
                let descr = match argv.first().map(|&a| self.node(a)) {
                    Some(Object::Str(s)) => s.clone(),
                    _ => return Err(bad(self, "expected a type string")),
                };
                if argv.len() > 3 {
                    return Err(bad(self, "expected at most 3 arguments"));
                }
                self.alloc(Object::NumpyDtype(Box::new(NumpyDtype {
                    descr,
                    byteorder: '=',
                })))
            }
            Global::NumpyScalar => {
                let [dtype, data] = argv else {
                    return Err(bad(self, "expected 2 arguments"));
                };
                let Object::NumpyDtype(d) = self.node(*dtype) else {
                    return Err(bad(self, "the first argument is not a numpy dtype"));
                };
                let raw: Vec<u8> = match self.node(*data) {
                    Object::Bytes(b) => b.clone(),
                    Object::Str(s) => s.as_bytes().to_vec(),
                    _ => return Err(bad(self, "the data is not bytes")),
                };
                let obj = numpy_scalar(d, raw);
                self.alloc(obj)
            }
            Global::Storage(_) | Global::DType(_) | Global::TensorType | Global::NumpyNdarray => {
                Err(PickleError::NotCallable {
                    offset: self.off,
                    opcode,
                    what: gname.to_string(),
                })
            }
        }
    }

    /// torch's `_set_obj_state(tensor, state)` (after `_rebuild_parameter_with_state` and
    /// `_rebuild_from_type_v2`): `state` is a dict, or a `(dict, slots)` pair, of attributes
    /// set with `setattr`. Attributes that hold no data (`_is_sharded`, ...) are dropped like
    /// other Python attributes; one whose setter replaces or writes the data (`data`, `real`,
    /// `imag`) or the object (`__class__`, `__dict__`) is refused: torch would return other
    /// values than the storage holds.
    pub(super) fn check_obj_state(&self, state: NodeId) -> Result<(), PickleError> {
        const DATA_SETTERS: [&str; 5] = ["data", "real", "imag", "__class__", "__dict__"];
        let ambiguous = |why: String| PickleError::AmbiguousTensorState {
            offset: self.off,
            why,
        };
        let parts: Vec<NodeId> = match self.node(state) {
            Object::Tuple(items) if items.len() == 2 => items.clone(),
            Object::Tuple(items) => {
                return Err(ambiguous(format!(
                    "a state tuple of {} items (torch raises)",
                    items.len()
                )))
            }
            _ => vec![state],
        };
        for part in parts {
            match self.node(part) {
                Object::None => {}
                Object::Dict(items) | Object::OrderedDict(items) => {
                    for (k, _) in items {
                        match self.node(*k) {
                            Object::Str(name) if DATA_SETTERS.contains(&name.as_str()) => {
                                return Err(ambiguous(format!(
                                    "the state sets the attribute {name:?}, which replaces the tensor's data"
                                )))
                            }
                            Object::Str(_) => {}
                            other => {
                                return Err(ambiguous(format!(
                                    "a state attribute named by a {} (torch raises)",
                                    other.kind()
                                )))
                            }
                        }
                    }
                }
                other => {
                    return Err(ambiguous(format!(
                        "a state of type {} (torch raises or sets unknown attributes)",
                        other.kind()
                    )))
                }
            }
        }
        Ok(())
    }

    pub(super) fn rebuild_tensor(
        &mut self,
        version: u8,
        gname: &str,
        argv: &[NodeId],
    ) -> Result<NodeId, PickleError> {
        let bad = |vm: &Self, why: &str| PickleError::BadArguments {
            offset: vm.off,
            callable: gname.to_string(),
            why: why.to_string(),
        };
        let view = |vm: &Self, why: &str| PickleError::BadTensorView {
            offset: vm.off,
            why: why.to_string(),
        };
        let (min, max) = match version {
            1 => (4, 4),
            2 => (6, 7),
            _ => (7, 8),
        };
        if argv.len() < min || argv.len() > max {
            return Err(bad(
                self,
                &format!("expected {min} to {max} arguments, got {}", argv.len()),
            ));
        }
        let Object::Storage(storage) = self.node(argv[0]) else {
            return Err(bad(self, "the first argument is not a storage"));
        };
        let storage = (**storage).clone();
        let offset = match self.node(argv[1]) {
            Object::Int(i) => {
                u64::try_from(*i).map_err(|_| view(self, "negative storage offset"))?
            }
            _ => return Err(bad(self, "the storage offset is not an int")),
        };
        let size = self
            .int_seq(argv[2])
            .ok_or_else(|| bad(self, "the size is not a tuple of ints"))?;
        let stride = self
            .int_seq(argv[3])
            .ok_or_else(|| bad(self, "the stride is not a tuple of ints"))?;
        let mut requires_grad = false;
        if version >= 2 {
            requires_grad = match self.node(argv[4]) {
                Object::Bool(b) => *b,
                _ => return Err(bad(self, "requires_grad is not a bool")),
            };
            if !matches!(
                self.node(argv[5]),
                Object::OrderedDict(_) | Object::Dict(_) | Object::None
            ) {
                return Err(bad(self, "backward_hooks is not a dict"));
            }
        }
        let elem = if version == 3 {
            match self.node(argv[6]) {
                Object::Global(Global::DType(e), _) => *e,
                _ => return Err(bad(self, "the dtype argument is not a torch dtype")),
            }
        } else {
            match storage.kind {
                StorageKind::Typed(e) => e,
                StorageKind::Untyped => ElementType::DType(DType::U8),
            }
        };
        if size.len() != stride.len() {
            return Err(view(
                self,
                &format!(
                    "size has {} dims but stride has {}",
                    size.len(),
                    stride.len()
                ),
            ));
        }
        let to_u = |v: &[i64], what: &str| -> Result<Vec<u64>, PickleError> {
            v.iter()
                .map(|&x| u64::try_from(x).map_err(|_| view(self, &format!("negative {what} {x}"))))
                .collect()
        };
        let shape = to_u(&size, "size")?;
        let stride = to_u(&stride, "stride")?;
        let overflow = || view(self, "size arithmetic overflows");
        let numel = shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .ok_or_else(overflow)?;
        let bytes = storage.byte_len().ok_or_else(overflow)?;
        let elements = bytes / elem.size();
        if numel > 0 {
            // offset + sum((size_i - 1) * stride_i) < elements, in checked arithmetic.
            let mut max_index = i64::try_from(offset).map_err(|_| overflow())?;
            for (&d, &s) in shape.iter().zip(&stride) {
                let d = i64::try_from(d).map_err(|_| overflow())?;
                let s = i64::try_from(s).map_err(|_| overflow())?;
                let reach = (d - 1).checked_mul(s).ok_or_else(overflow)?;
                max_index = max_index.checked_add(reach).ok_or_else(overflow)?;
            }
            let max_index = max_index as u64;
            if max_index >= elements {
                return Err(PickleError::ViewOutOfBounds {
                    offset: self.off,
                    max_index,
                    elements,
                });
            }
        } else if offset > elements {
            return Err(PickleError::ViewOutOfBounds {
                offset: self.off,
                max_index: offset,
                elements,
            });
        }
        let t = TensorRef {
            storage,
            elem,
            offset,
            shape,
            stride,
            requires_grad,
            opcode_offset: self.off,
        };
        self.alloc(Object::Tensor(Box::new(t)))
    }
}

/// Decodes `numpy.core.multiarray.scalar(dtype, bytes)` into a plain value where the dtype is
/// a number; other scalars stay bytes.
pub(super) fn numpy_scalar(d: &NumpyDtype, mut raw: Vec<u8>) -> Object {
    let Some((kind, size)) = d.kind_size() else {
        return Object::Bytes(raw);
    };
    if raw.len() as u64 != size {
        return Object::Bytes(raw);
    }
    if d.big_endian() {
        raw.reverse();
    }
    let mut a = [0u8; 8];
    match (kind, size) {
        ('f', 8) => {
            a.copy_from_slice(&raw);
            Object::Float(f64::from_le_bytes(a))
        }
        ('f', 4) => Object::Float(f64::from(f32::from_le_bytes([
            raw[0], raw[1], raw[2], raw[3],
        ]))),
        ('i', 1 | 2 | 4 | 8) => {
            let fill = if raw[raw.len() - 1] & 0x80 != 0 {
                0xFF
            } else {
                0
            };
            let mut a = [fill; 8];
            a[..raw.len()].copy_from_slice(&raw);
            Object::Int(i64::from_le_bytes(a))
        }
        ('u', 1 | 2 | 4 | 8) => {
            a[..raw.len()].copy_from_slice(&raw);
            let v = u64::from_le_bytes(a);
            match i64::try_from(v) {
                Ok(i) => Object::Int(i),
                Err(_) => {
                    let mut b = a.to_vec();
                    b.push(0);
                    Object::BigInt(BigInt(b))
                }
            }
        }
        ('b', 1) => Object::Bool(raw[0] != 0),
        _ => Object::Bytes(raw),
    }
}
