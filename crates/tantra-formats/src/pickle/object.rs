//! The inert object model the pickle machine builds: nodes in an arena ([`Pickle`]) that refer
//! to each other by [`NodeId`], tensors and storages as plain descriptions, and numbers that
//! Python would hold (big ints included). Nothing here can run code.

use crate::dtype::DType;
use crate::tensor::Value;

use super::allowlist::Global;

/// An element type as torch names it: a safetensors dtype, or `complex128`, which safetensors
/// lacks (refused when a tensor needs it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElementType {
    DType(DType),
    Complex128,
}

impl ElementType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            ElementType::DType(d) => d.size().unwrap_or(1),
            ElementType::Complex128 => 16,
        }
    }
}

/// A storage's element type: typed storages count elements, `UntypedStorage` counts bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StorageKind {
    Typed(ElementType),
    Untyped,
}

impl StorageKind {
    /// Bytes per counted unit.
    pub fn unit_size(self) -> u64 {
        match self {
            StorageKind::Typed(e) => e.size(),
            StorageKind::Untyped => 1,
        }
    }
}

/// A storage named by a persistent id: the record `data/<key>` of a zip archive or the storage
/// `key` of a legacy file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StorageRef {
    pub key: String,
    pub kind: StorageKind,
    /// Device the storage was saved from (`cpu`, `cuda:0`); informational.
    pub location: String,
    /// Count of units: elements for typed storages, bytes for untyped ones.
    pub numel: u64,
}

impl StorageRef {
    /// Byte length of the storage, `None` on overflow.
    pub fn byte_len(&self) -> Option<u64> {
        self.numel.checked_mul(self.kind.unit_size())
    }
}

/// A tensor: a strided view of a storage. The view was checked against the storage's declared
/// size when the tensor was rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: StorageRef,
    pub elem: ElementType,
    /// Offset of the first element, in elements.
    pub offset: u64,
    pub shape: Vec<u64>,
    /// Strides in elements.
    pub stride: Vec<u64>,
    pub requires_grad: bool,
    /// Offset of the opcode that rebuilt it.
    pub opcode_offset: usize,
}

impl TensorRef {
    /// Number of elements of the view (checked when the tensor was rebuilt).
    pub fn numel(&self) -> u64 {
        self.shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .unwrap_or(u64::MAX)
    }
}

/// An integer that does not fit `i64`, as two's-complement little-endian bytes (as `LONG1`
/// stores it).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BigInt(pub(super) Vec<u8>);

impl BigInt {
    /// The two's-complement little-endian bytes.
    pub fn le_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decimal digits, with a `-` for negative numbers.
    pub fn to_decimal(&self) -> String {
        let negative = self.0.last().is_some_and(|b| b & 0x80 != 0);
        let mut mag: Vec<u8> = self.0.clone();
        if negative {
            // Two's complement negation: invert, add one.
            let mut carry = true;
            for b in &mut mag {
                *b = !*b;
                if carry {
                    let (v, c) = b.overflowing_add(1);
                    *b = v;
                    carry = c;
                }
            }
        }
        // Big-endian base-2^32 limbs, divided by 10^9 repeatedly.
        let mut limbs: Vec<u32> = mag
            .chunks(4)
            .rev()
            .map(|c| {
                let mut a = [0u8; 4];
                a[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(a)
            })
            .collect();
        let mut parts: Vec<u32> = Vec::new();
        while limbs.iter().any(|&l| l != 0) {
            let mut rem: u64 = 0;
            for l in &mut limbs {
                let cur = (rem << 32) | u64::from(*l);
                *l = (cur / 1_000_000_000) as u32;
                rem = cur % 1_000_000_000;
            }
            parts.push(rem as u32);
        }
        let mut s = String::new();
        if negative {
            s.push('-');
        }
        match parts.split_last() {
            None => s.push('0'),
            Some((first, rest)) => {
                s.push_str(&first.to_string());
                for p in rest.iter().rev() {
                    s.push_str(&format!("{p:09}"));
                }
            }
        }
        s
    }
}

/// Decodes a `LONG1`/`LONG4` body: an `i64` when it fits, else a [`BigInt`].
pub(super) fn decode_long(bytes: &[u8]) -> Object {
    if bytes.is_empty() {
        return Object::Int(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xFF } else { 0x00 };
    // Strip redundant sign-extension bytes.
    let mut n = bytes.len();
    while n > 1 && bytes[n - 1] == fill && (bytes[n - 2] & 0x80 != 0) == negative {
        n -= 1;
    }
    let b = &bytes[..n];
    if b.len() <= 8 {
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        Object::Int(i64::from_le_bytes(a))
    } else {
        Object::BigInt(BigInt(b.to_vec()))
    }
}

/// A numpy dtype (`numpy.dtype('f8', False, True)` plus its BUILD state).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumpyDtype {
    /// The type string: kind letter and item size (`f8`, `i4`, `b1`, `U5`).
    pub descr: String,
    /// `<`, `>`, `|` or `=`.
    pub byteorder: char,
}

impl NumpyDtype {
    pub(super) fn kind_size(&self) -> Option<(char, u64)> {
        let d = self.descr.trim_start_matches(['<', '>', '|', '=']);
        let mut chars = d.chars();
        let kind = chars.next()?;
        let size: u64 = chars.as_str().parse().ok()?;
        Some((kind, size))
    }

    /// Bytes per item, when the type string says.
    pub fn itemsize(&self) -> Option<u64> {
        self.kind_size().map(|(_, s)| s)
    }

    /// The matching dtype, for the numeric kinds.
    pub fn dtype(&self) -> Option<DType> {
        Some(match self.kind_size()? {
            ('f', 2) => DType::F16,
            ('f', 4) => DType::F32,
            ('f', 8) => DType::F64,
            ('i', 1) => DType::I8,
            ('i', 2) => DType::I16,
            ('i', 4) => DType::I32,
            ('i', 8) => DType::I64,
            ('u', 1) => DType::U8,
            ('u', 2) => DType::U16,
            ('u', 4) => DType::U32,
            ('u', 8) => DType::U64,
            ('b', 1) => DType::Bool,
            ('c', 8) => DType::C64,
            _ => return None,
        })
    }

    /// True when the data is big-endian.
    pub fn big_endian(&self) -> bool {
        self.byteorder == '>' || self.descr.starts_with('>')
    }
}

/// The data of a numpy array.
#[derive(Debug, Clone, PartialEq)]
pub enum NdData {
    /// Raw item bytes (`C` or Fortran order as the array says).
    Raw(Vec<u8>),
    /// An object array: the items are pickle objects (a list node).
    Objects(NodeId),
}

/// A numpy array, inert: shape, dtype, order and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct NdArray {
    pub shape: Vec<u64>,
    pub dtype: NumpyDtype,
    pub fortran_order: bool,
    pub data: NdData,
}

/// Index of a node in a [`Pickle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub(super) u32);

impl NodeId {
    pub(super) fn ix(self) -> usize {
        self.0 as usize
    }
}

/// One node of the object tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    None,
    Bool(bool),
    Int(i64),
    BigInt(BigInt),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<NodeId>),
    List(Vec<NodeId>),
    /// A dict, in insertion order. Keys are nodes (str and int in practice).
    Dict(Vec<(NodeId, NodeId)>),
    OrderedDict(Vec<(NodeId, NodeId)>),
    Set(Vec<NodeId>),
    FrozenSet(Vec<NodeId>),
    Tensor(Box<TensorRef>),
    Storage(Box<StorageRef>),
    /// An allowlisted global, with its `module.name`.
    Global(Global, Box<str>),
    /// `torch.device(...)`, as `cuda:0`.
    Device(String),
    NumpyDtype(Box<NumpyDtype>),
    /// `numpy.core.multiarray._reconstruct(...)`: an array whose BUILD has not come yet.
    NdArrayPending,
    NdArray(Box<NdArray>),
}

impl Object {
    /// A short name of the node's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::None => "None",
            Object::Bool(_) => "bool",
            Object::Int(_) | Object::BigInt(_) => "int",
            Object::Float(_) => "float",
            Object::Str(_) => "str",
            Object::Bytes(_) => "bytes",
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::OrderedDict(_) => "OrderedDict",
            Object::Set(_) => "set",
            Object::FrozenSet(_) => "frozenset",
            Object::Tensor(_) => "tensor",
            Object::Storage(_) => "storage",
            Object::Global(..) => "global",
            Object::Device(_) => "device",
            Object::NumpyDtype(_) => "numpy dtype",
            Object::NdArrayPending | Object::NdArray(_) => "numpy array",
        }
    }
}
/// A parsed pickle: an arena of nodes and the root the STOP opcode returned.
#[derive(Debug, Clone)]
pub struct Pickle {
    pub(super) nodes: Vec<Object>,
    pub(super) root: NodeId,
    pub(super) protocol: u8,
    /// Bytes of the pickle (to its STOP): what the walk's budgets grow with.
    pub(super) len: usize,
}

/// A leaf of the flattened tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Leaf<'p> {
    Tensor(&'p TensorRef),
    Array(&'p NdArray),
    Value(Value),
}

/// The tree flattened to dotted names, in tree order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flat<'p> {
    pub entries: Vec<(String, Leaf<'p>)>,
}

pub(super) const NONE: NodeId = NodeId(0);
pub(super) const FALSE: NodeId = NodeId(1);
pub(super) const TRUE: NodeId = NodeId(2);

impl Pickle {
    /// The object STOP returned.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// The protocol its PROTO opcode declared (0 without one).
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The node `id` (ids come from this pickle's nodes).
    pub fn get(&self, id: NodeId) -> &Object {
        self.nodes.get(id.ix()).unwrap_or(&Object::None)
    }

    /// Every storage named by a persistent id, wherever it sits in the tree.
    pub fn storages(&self) -> impl Iterator<Item = &StorageRef> + '_ {
        self.nodes.iter().filter_map(|n| match n {
            Object::Storage(s) => Some(&**s),
            _ => None,
        })
    }

    /// Number of nodes in the arena.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The root as a string, when it is one.
    pub fn root_str(&self) -> Option<&str> {
        match self.get(self.root) {
            Object::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Items of a dict node whose key is the string `key`.
    pub fn dict_get(&self, dict: NodeId, key: &str) -> Option<NodeId> {
        match self.get(dict) {
            Object::Dict(items) | Object::OrderedDict(items) => items
                .iter()
                .find(|(k, _)| matches!(self.get(*k), Object::Str(s) if s == key))
                .map(|(_, v)| *v),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigint_decimal() {
        // The legacy magic number 0x1950a86a20f9469cfc6c.
        let b = BigInt(vec![
            0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19,
        ]);
        assert_eq!(b.to_decimal(), "119547037146038801333356");
        let neg = BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 0xFF]);
        assert_eq!(neg.to_decimal(), "-18446744073709551616");
    }

    #[test]
    fn long_decoding() {
        assert_eq!(decode_long(&[]), Object::Int(0));
        assert_eq!(decode_long(&[0xFF]), Object::Int(-1));
        assert_eq!(decode_long(&[0xFF, 0x00]), Object::Int(255));
        assert_eq!(decode_long(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0]), Object::Int(1));
        assert!(matches!(
            decode_long(&[0, 0, 0, 0, 0, 0, 0, 0, 1]),
            Object::BigInt(_)
        ));
    }
}
