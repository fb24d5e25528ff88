//! A pickle reader that executes nothing.
//!
//! A `.pt` file is a Python pickle, and unpickling with Python runs whatever callables the file
//! names. Blocklists (picklescan, fickling, modelscan) have been bypassed again and again, and
//! so has torch's own `weights_only` loader; so this module does not resolve anything at all.
//! It runs the pickle machine over an inert object model: a global is a token from a short
//! ALLOWLIST (`collections.OrderedDict`, torch's tensor rebuild functions, storage classes,
//! dtypes, a few data-only builtins and numpy reconstructors), and a call (`REDUCE`) is
//! interpreted only for those tokens, by code in this file. Every other global is refused at
//! the opcode that names it, before anything else happens.
//!
//! Nodes live in an arena ([`Pickle`]) and refer to each other by index: a memo `GET` shares a
//! node instead of copying it (no "billion laughs"), dropping the tree is flat (no recursive
//! `Drop` on deep nesting), and cycles are caught when the tree is walked. Every length field
//! is checked against the bytes that remain, and the node count, stack, marks, walk depth and
//! walk size are capped by [`Limits`].
//!
//! [`scan`] walks the opcodes of a pickle without building anything and reports its globals
//! and opcodes, for `tantra scan`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::rc::Rc;

use crate::dtype::DType;
use crate::tensor::Value;

mod memo;
mod pyeq;

use memo::Memo;

/// A rule of the safe pickle reader that the input breaks. `offset` is the byte offset of the
/// opcode in the pickle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("opcode {opcode} at offset {offset}: argument cut short by the end of the input")]
    Truncated { offset: usize, opcode: &'static str },
    #[error("opcode {opcode} at offset {offset}: length {len} is beyond the {remaining} bytes that remain")]
    LengthBeyondEnd {
        offset: usize,
        opcode: &'static str,
        len: u64,
        remaining: u64,
    },
    #[error("opcode {opcode} at offset {offset}: negative length")]
    NegativeLength { offset: usize, opcode: &'static str },
    #[error("the input ends at offset {offset} without a STOP opcode")]
    MissingStop { offset: usize },
    #[error("{count} bytes after the STOP opcode at offset {offset}")]
    TrailingBytes { offset: usize, count: usize },
    #[error("unknown opcode 0x{byte:02x} at offset {offset}")]
    UnknownOpcode { offset: usize, byte: u8 },
    #[error("PROTO at offset {offset}: protocol {version} is not supported (0 to 5 are)")]
    UnsupportedProtocol { offset: usize, version: u64 },
    #[error("global `{global}` at offset {offset} is not on the allowlist of inert globals; refusing to load it")]
    ForbiddenGlobal { offset: usize, global: String },
    #[error("this is a whole pickled module (class {class}, at offset {offset}), not a state dict; save model.state_dict() instead")]
    WholeModule { offset: usize, class: String },
    #[error("unsupported tensor kind ({kind}): global `{global}` at offset {offset}; torch loads it safely, but tantra reads only dense tensors")]
    UnsupportedTensorKind {
        offset: usize,
        global: String,
        kind: &'static str,
    },
    #[error("global `{global}` at offset {offset}: dotted attribute paths are refused")]
    DottedName { offset: usize, global: String },
    #[error("STACK_GLOBAL at offset {offset}: its operands are not literal strings")]
    NonLiteralStackGlobal { offset: usize },
    #[error("{opcode} at offset {offset}: the extension registry is refused")]
    ExtensionRegistry { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: instantiating classes by name is refused")]
    InstObj { offset: usize, opcode: &'static str },
    #[error("PERSID at offset {offset}: text persistent ids are refused (torch uses BINPERSID)")]
    TextPersistentId { offset: usize },
    #[error("{opcode} at offset {offset}: out-of-band buffers are refused")]
    OutOfBandBuffer { offset: usize, opcode: &'static str },
    #[error("BUILD at offset {offset} on {target}: BUILD is allowed only on an OrderedDict, a tensor or numpy data")]
    BuildTarget { offset: usize, target: String },
    #[error("tensor state at offset {offset}: {why}; torch and tantra would read different data, so the file is ambiguous")]
    AmbiguousTensorState { offset: usize, why: String },
    #[error("{opcode} at offset {offset}: {text:?} is not a plain decimal integer (Python's and C's unpicklers read it differently)")]
    AmbiguousInteger {
        offset: usize,
        opcode: &'static str,
        text: String,
    },
    #[error("{opcode} at offset {offset} on {target}: items can be set only on a dict")]
    SetItemTarget {
        offset: usize,
        opcode: &'static str,
        target: &'static str,
    },
    #[error("{opcode} at offset {offset} on {target}: items can be appended only to a list")]
    AppendTarget {
        offset: usize,
        opcode: &'static str,
        target: &'static str,
    },
    #[error("ADDITEMS at offset {offset} on {target}: items can be added only to a set")]
    AddItemsTarget { offset: usize, target: &'static str },
    #[error(
        "{opcode} at offset {offset}: an odd number of stack items cannot form key/value pairs"
    )]
    OddItems { offset: usize, opcode: &'static str },
    #[error("BINPERSID at offset {offset}: {why}")]
    PersistentId { offset: usize, why: String },
    #[error("BINPERSID at offset {offset}: this pickle may not refer to storages")]
    NoPersistentIds { offset: usize },
    #[error("BINPERSID at offset {offset}: storage key {key:?} is not a plain name ([A-Za-z0-9_], at most 64 characters)")]
    StorageKey { offset: usize, key: String },
    #[error("{opcode} at offset {offset}: memo index {index} was never stored")]
    MemoMissing {
        offset: usize,
        opcode: &'static str,
        index: u64,
    },
    #[error("opcode at offset {offset}: more than {limit} objects (the budget is one object per 2 bytes of pickle, and at most 16 million)")]
    NodeBudget { offset: usize, limit: usize },
    #[error("opcode at offset {offset}: the stack grows past {limit} items")]
    StackOverflow { offset: usize, limit: usize },
    #[error("MARK at offset {offset}: more than {limit} nested marks")]
    TooManyMarks { offset: usize, limit: usize },
    #[error("{opcode} at offset {offset}: stack underflow")]
    StackUnderflow { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: no MARK to pop to")]
    NoMark { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: {what} is not an allowlisted callable")]
    NotCallable {
        offset: usize,
        opcode: &'static str,
        what: String,
    },
    #[error("call of {callable} at offset {offset}: {why}")]
    BadArguments {
        offset: usize,
        callable: String,
        why: String,
    },
    #[error("tensor rebuilt at offset {offset}: {why}")]
    BadTensorView { offset: usize, why: String },
    #[error("tensor rebuilt at offset {offset}: its view reaches element {max_index} of a storage of {elements} elements")]
    ViewOutOfBounds {
        offset: usize,
        max_index: u64,
        elements: u64,
    },
    #[error("{opcode} at offset {offset}: a {bytes}-byte integer is longer than the {limit} bytes allowed")]
    IntegerTooLong {
        offset: usize,
        opcode: &'static str,
        bytes: u64,
        limit: usize,
    },
    #[error("{opcode} at offset {offset}: string is not valid UTF-8")]
    InvalidUtf8 { offset: usize, opcode: &'static str },
    #[error("{opcode} at offset {offset}: malformed text argument")]
    BadText { offset: usize, opcode: &'static str },
    #[error("at {path:?}: nesting deeper than {limit} levels")]
    TooDeep { path: String, limit: usize },
    #[error("at {path:?}: the object contains itself (a cycle through the memo)")]
    Cycle { path: String },
    #[error("the object tree expands to more than {limit} entries (shared nodes repeated)")]
    ExpansionBudget { limit: usize },
    #[error("the dotted names of the object tree exceed {limit} bytes in total (a long key reached through shared nodes?)")]
    NameBudget { limit: usize },
    #[error("the str and bytes values of the object tree exceed {limit} bytes in total (a long string reached through many names?)")]
    ValueBudget { limit: usize },
    #[error("two entries flatten to the name {name:?}")]
    DuplicateName { name: String },
    #[error("at {path:?}: a dict key of type {kind} cannot be part of a name")]
    BadKey { path: String, kind: &'static str },
    #[error("tensor {name:?}: dtype {dtype} has no safetensors equivalent")]
    UnsupportedDType { name: String, dtype: &'static str },
    #[error("at {name:?}: {what} is not data")]
    NotData { name: String, what: String },
}

/// Budgets that grow with the input, as (per input byte as a fraction `num / den`, plus a
/// fixed allowance). A node costs 32 bytes; pickles that torch writes spend at least two bytes
/// per node (an int is `K` and a byte, a container is memoized), so one node per two bytes
/// keeps the arena under 16 bytes per input byte while no real file comes near it.
const NODES_PER_BYTE: (usize, usize, usize) = (1, 2, 4096);
/// Flattening visits each node once, plus shared nodes again: one visit per two bytes (each
/// visit may make a name), plus room for tied tensors.
const VISITS_PER_BYTE: (usize, usize, usize) = (1, 2, 1 << 16);
/// Name bytes: dotted names repeat their prefixes, so they outgrow the input (a list of ints
/// in a nested optimizer state makes ~35 name bytes per 2 input bytes).
const NAME_BYTES_PER_BYTE: (usize, usize, usize) = (16, 1, 16 << 20);
/// Bytes of str/bytes values: each value is copied out once per name it is reached by.
const VALUE_BYTES_PER_BYTE: (usize, usize, usize) = (2, 1, 1 << 20);

/// `len * num / den + extra`, saturating.
fn per_input(len: usize, (num, den, extra): (usize, usize, usize)) -> usize {
    (len / den).saturating_mul(num).saturating_add(extra)
}

/// Caps on the resources a pickle may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Objects in the arena (at most `u32::MAX`).
    pub max_nodes: usize,
    /// Items on the stack.
    pub max_stack: usize,
    /// Nested MARKs.
    pub max_marks: usize,
    /// Nesting depth when the tree is walked ([`Pickle::flatten`]).
    pub max_depth: usize,
    /// Nodes visited when the tree is walked (a shared node counts each time it is reached).
    pub max_visits: usize,
    /// Bytes of a `LONG1`/`LONG4` integer.
    pub max_int_bytes: usize,
    /// Total bytes of the dotted names the walk builds (a long key shared at every level of a
    /// deep tree would otherwise multiply).
    pub max_name_bytes: usize,
    /// Total bytes of the str and bytes values the walk copies out (a long string reached by
    /// many names is copied for each).
    pub max_value_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nodes: 1 << 24,
            max_stack: 1 << 20,
            max_marks: 1 << 16,
            max_depth: 1000,
            max_visits: 1 << 24,
            max_int_bytes: 256,
            max_name_bytes: 1 << 28,
            max_value_bytes: 1 << 28,
        }
    }
}

/// Which persistent ids (`BINPERSID`) a pickle may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PersistentIds {
    /// None at all (the header pickles of legacy files, bare pickles).
    Forbidden,
    /// `('storage', cls, key, location, numel)`: zip archives.
    Zip,
    /// `('storage', cls, key, location, numel, view_metadata)`: legacy files.
    Legacy,
}

/// How to parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    pub persistent_ids: PersistentIds,
    pub limits: Limits,
}

impl ParseOptions {
    pub fn new(persistent_ids: PersistentIds) -> Self {
        ParseOptions {
            persistent_ids,
            limits: Limits::default(),
        }
    }
}

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
pub struct BigInt(Vec<u8>);

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
fn decode_long(bytes: &[u8]) -> Object {
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
    fn kind_size(&self) -> Option<(char, u64)> {
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

/// An allowlisted global: a token, never a resolved Python object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    /// `torch._utils._rebuild_tensor` (1), `_v2` (2), `_v3` (3).
    RebuildTensor(u8),
    /// `torch._utils._rebuild_parameter` (`with_state`: `_rebuild_parameter_with_state`).
    RebuildParameter {
        with_state: bool,
    },
    /// `torch._tensor._rebuild_from_type_v2`.
    RebuildFromTypeV2,
    /// A storage class, usable only inside a persistent id.
    Storage(StorageKind),
    /// A dtype (`torch.float8_e4m3fn`).
    DType(ElementType),
    /// `torch.Tensor` or `torch.nn.parameter.Parameter`, usable only as the type argument of
    /// `_rebuild_from_type_v2`.
    TensorType,
    Size,
    Device,
    CodecsEncode,
    Set,
    FrozenSet,
    NumpyReconstruct,
    NumpyNdarray,
    NumpyDtype,
    NumpyScalar,
}

impl Global {
    fn is_class(self) -> bool {
        matches!(
            self,
            Global::OrderedDict | Global::Size | Global::Device | Global::Set | Global::FrozenSet
        )
    }
}

const TORCH_DTYPES: &[(&str, ElementType)] = &[
    ("float64", ElementType::DType(DType::F64)),
    ("float32", ElementType::DType(DType::F32)),
    ("float16", ElementType::DType(DType::F16)),
    ("bfloat16", ElementType::DType(DType::BF16)),
    ("int64", ElementType::DType(DType::I64)),
    ("int32", ElementType::DType(DType::I32)),
    ("int16", ElementType::DType(DType::I16)),
    ("int8", ElementType::DType(DType::I8)),
    ("uint8", ElementType::DType(DType::U8)),
    ("uint16", ElementType::DType(DType::U16)),
    ("uint32", ElementType::DType(DType::U32)),
    ("uint64", ElementType::DType(DType::U64)),
    ("bool", ElementType::DType(DType::Bool)),
    ("complex64", ElementType::DType(DType::C64)),
    ("complex128", ElementType::Complex128),
    ("float8_e4m3fn", ElementType::DType(DType::F8E4M3)),
    ("float8_e5m2", ElementType::DType(DType::F8E5M2)),
    ("float8_e4m3fnuz", ElementType::DType(DType::F8E4M3Fnuz)),
    ("float8_e5m2fnuz", ElementType::DType(DType::F8E5M2Fnuz)),
    ("float8_e8m0fnu", ElementType::DType(DType::F8E8M0)),
    // One element is one byte holding two 4-bit values: the view arithmetic counts bytes, and
    // the tensor's last dimension doubles when it becomes safetensors `F4`.
    ("float4_e2m1fn_x2", ElementType::DType(DType::F4)),
];

const STORAGE_CLASSES: &[(&str, ElementType)] = &[
    ("DoubleStorage", ElementType::DType(DType::F64)),
    ("FloatStorage", ElementType::DType(DType::F32)),
    ("HalfStorage", ElementType::DType(DType::F16)),
    ("BFloat16Storage", ElementType::DType(DType::BF16)),
    ("LongStorage", ElementType::DType(DType::I64)),
    ("IntStorage", ElementType::DType(DType::I32)),
    ("ShortStorage", ElementType::DType(DType::I16)),
    ("CharStorage", ElementType::DType(DType::I8)),
    ("ByteStorage", ElementType::DType(DType::U8)),
    ("BoolStorage", ElementType::DType(DType::Bool)),
    ("ComplexFloatStorage", ElementType::DType(DType::C64)),
    ("ComplexDoubleStorage", ElementType::Complex128),
];

/// The torch name of an element type (`float32`, `complex128`).
pub fn torch_dtype_name(e: ElementType) -> &'static str {
    TORCH_DTYPES
        .iter()
        .find(|(_, t)| *t == e)
        .map(|(n, _)| *n)
        .unwrap_or("unknown")
}

/// Why a global is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobalRefusal {
    /// Not on the allowlist.
    Forbidden,
    /// The name part has dots (an attribute path).
    Dotted,
    /// A model class: the file is a whole pickled module.
    WholeModule,
    /// A legal tensor kind that tantra does not read (`quantized`, `sparse`, `meta`,
    /// `nested`): torch loads it safely; it is not an attack.
    UnsupportedKind(&'static str),
}

/// torch's globals for tensor kinds other than dense strided tensors, with the kind they
/// belong to. They are on torch's own weights_only allowlist: safe, but not read here.
const UNSUPPORTED_KINDS: &[(&str, &str, &str)] = &[
    ("torch._utils", "_rebuild_qtensor", "quantized"),
    ("torch", "QUInt8Storage", "quantized"),
    ("torch", "QInt8Storage", "quantized"),
    ("torch", "QInt32Storage", "quantized"),
    ("torch", "QUInt4x2Storage", "quantized"),
    ("torch", "QUInt2x4Storage", "quantized"),
    ("torch", "quint8", "quantized"),
    ("torch", "qint8", "quantized"),
    ("torch", "qint32", "quantized"),
    ("torch", "quint4x2", "quantized"),
    ("torch", "quint2x4", "quantized"),
    ("torch", "per_tensor_affine", "quantized"),
    ("torch", "per_channel_affine", "quantized"),
    ("torch", "per_channel_affine_float_qparams", "quantized"),
    ("torch._utils", "_rebuild_sparse_tensor", "sparse"),
    ("torch._utils", "_rebuild_sparse_csr_tensor", "sparse"),
    ("torch.serialization", "_get_layout", "sparse"),
    ("torch", "sparse_coo", "sparse"),
    ("torch", "sparse_csr", "sparse"),
    ("torch", "sparse_csc", "sparse"),
    ("torch", "sparse_bsr", "sparse"),
    ("torch", "sparse_bsc", "sparse"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage", "meta"),
    ("torch._utils", "_rebuild_nested_tensor", "nested"),
];

/// Looks `module.name` up in the allowlist.
///
/// # Errors
/// Why the global is refused.
pub fn classify_global(module: &str, name: &str) -> Result<Global, GlobalRefusal> {
    if name.contains('.') {
        return Err(GlobalRefusal::Dotted);
    }
    let g = match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor(1),
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensor(2),
        ("torch._utils", "_rebuild_tensor_v3") => Global::RebuildTensor(3),
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter { with_state: false },
        ("torch._utils", "_rebuild_parameter_with_state") => {
            Global::RebuildParameter { with_state: true }
        }
        ("torch._tensor", "_rebuild_from_type_v2") => Global::RebuildFromTypeV2,
        ("torch", "Tensor") | ("torch._tensor", "Tensor") => Global::TensorType,
        ("torch.nn.parameter", "Parameter") => Global::TensorType,
        ("torch", "Size") => Global::Size,
        ("torch", "device") => Global::Device,
        ("_codecs", "encode") => Global::CodecsEncode,
        ("builtins" | "__builtin__", "set") => Global::Set,
        ("builtins" | "__builtin__", "frozenset") => Global::FrozenSet,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct") => {
            Global::NumpyReconstruct
        }
        ("numpy.core.multiarray" | "numpy._core.multiarray", "scalar") => Global::NumpyScalar,
        ("numpy", "ndarray") => Global::NumpyNdarray,
        ("numpy", "dtype") => Global::NumpyDtype,
        ("torch" | "torch.storage", "UntypedStorage") => Global::Storage(StorageKind::Untyped),
        ("torch" | "torch.cuda", n) if STORAGE_CLASSES.iter().any(|(c, _)| *c == n) => {
            let e = STORAGE_CLASSES
                .iter()
                .find(|(c, _)| *c == n)
                .map(|(_, e)| *e)
                .ok_or(GlobalRefusal::Forbidden)?;
            Global::Storage(StorageKind::Typed(e))
        }
        ("torch", n) if TORCH_DTYPES.iter().any(|(d, _)| *d == n) => {
            let e = TORCH_DTYPES
                .iter()
                .find(|(d, _)| *d == n)
                .map(|(_, e)| *e)
                .ok_or(GlobalRefusal::Forbidden)?;
            Global::DType(e)
        }
        _ if UNSUPPORTED_KINDS
            .iter()
            .any(|(m, n, _)| *m == module && *n == name) =>
        {
            let kind = UNSUPPORTED_KINDS
                .iter()
                .find(|(m, n, _)| *m == module && *n == name)
                .map_or("unknown", |(_, _, k)| *k);
            return Err(GlobalRefusal::UnsupportedKind(kind));
        }
        _ => {
            let model_class = module == "__main__"
                || module.starts_with("torch.nn.modules")
                || module.starts_with("torch.nn.parallel")
                || module.starts_with("torch.jit");
            return Err(if model_class {
                GlobalRefusal::WholeModule
            } else {
                GlobalRefusal::Forbidden
            });
        }
    };
    Ok(g)
}

fn refusal_error(offset: usize, module: &str, name: &str, r: GlobalRefusal) -> PickleError {
    let global = format!("{module}.{name}");
    match r {
        GlobalRefusal::Forbidden => PickleError::ForbiddenGlobal { offset, global },
        GlobalRefusal::Dotted => PickleError::DottedName { offset, global },
        GlobalRefusal::WholeModule => PickleError::WholeModule {
            offset,
            class: global,
        },
        GlobalRefusal::UnsupportedKind(kind) => PickleError::UnsupportedTensorKind {
            offset,
            global,
            kind,
        },
    }
}

/// Index of a node in a [`Pickle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(u32);

impl NodeId {
    fn ix(self) -> usize {
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
    nodes: Vec<Object>,
    root: NodeId,
    protocol: u8,
    /// Bytes of the pickle (to its STOP): what the walk's budgets grow with.
    len: usize,
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

const NONE: NodeId = NodeId(0);
const FALSE: NodeId = NodeId(1);
const TRUE: NodeId = NodeId(2);

impl Pickle {
    /// Parses one pickle that fills `bytes` exactly.
    ///
    /// # Errors
    /// The first rule the pickle breaks, naming the opcode offset; bytes after STOP too.
    pub fn parse(bytes: &[u8], opts: &ParseOptions) -> Result<Pickle, PickleError> {
        let (p, end) = Pickle::parse_prefix(bytes, opts)?;
        if end != bytes.len() {
            return Err(PickleError::TrailingBytes {
                offset: end,
                count: bytes.len() - end,
            });
        }
        Ok(p)
    }

    /// Parses the pickle at the start of `bytes`; returns it and the offset after its STOP.
    ///
    /// # Errors
    /// The first rule the pickle breaks, naming the opcode offset.
    pub fn parse_prefix(bytes: &[u8], opts: &ParseOptions) -> Result<(Pickle, usize), PickleError> {
        let mut vm = Vm {
            data: bytes,
            opts,
            nodes: vec![Object::None, Object::Bool(false), Object::Bool(true)],
            stack: Vec::new(),
            marks: Vec::new(),
            memo: Memo::new(bytes.len()),
            off: 0,
            protocol: 0,
        };
        let (root, end) = vm.run()?;
        pyeq::fold_equal_keys(&mut vm.nodes);
        Ok((
            Pickle {
                nodes: vm.nodes,
                root,
                protocol: vm.protocol,
                len: end,
            },
            end,
        ))
    }

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

// ---------------------------------------------------------------------------------------------
// Opcodes

/// The argument of an opcode.
#[derive(Debug, Clone, Copy)]
enum Arg<'a> {
    None,
    U(u64),
    I(i64),
    F(f64),
    Bytes(&'a [u8]),
    Line(&'a [u8]),
    Lines(&'a [u8], &'a [u8]),
}

/// The name of opcode `code`, `None` for bytes that are no opcode.
pub fn opcode_name(code: u8) -> Option<&'static str> {
    Some(match code {
        b'(' => "MARK",
        b'.' => "STOP",
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'J' => "BININT",
        b'K' => "BININT1",
        b'L' => "LONG",
        b'M' => "BININT2",
        b'N' => "NONE",
        b'P' => "PERSID",
        b'Q' => "BINPERSID",
        b'R' => "REDUCE",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'U' => "SHORT_BINSTRING",
        b'V' => "UNICODE",
        b'X' => "BINUNICODE",
        b'a' => "APPEND",
        b'b' => "BUILD",
        b'c' => "GLOBAL",
        b'd' => "DICT",
        b'}' => "EMPTY_DICT",
        b'e' => "APPENDS",
        b'g' => "GET",
        b'h' => "BINGET",
        b'i' => "INST",
        b'j' => "LONG_BINGET",
        b'l' => "LIST",
        b']' => "EMPTY_LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'q' => "BINPUT",
        b'r' => "LONG_BINPUT",
        b's' => "SETITEM",
        b't' => "TUPLE",
        b')' => "EMPTY_TUPLE",
        b'u' => "SETITEMS",
        b'G' => "BINFLOAT",
        0x80 => "PROTO",
        0x81 => "NEWOBJ",
        0x82 => "EXT1",
        0x83 => "EXT2",
        0x84 => "EXT4",
        0x85 => "TUPLE1",
        0x86 => "TUPLE2",
        0x87 => "TUPLE3",
        0x88 => "NEWTRUE",
        0x89 => "NEWFALSE",
        0x8a => "LONG1",
        0x8b => "LONG4",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x8f => "EMPTY_SET",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => return None,
    })
}

/// Decodes the opcode at `off`: its code, name, argument and the offset of the next opcode.
fn read_op(data: &[u8], off: usize) -> Result<(u8, &'static str, Arg<'_>, usize), PickleError> {
    let Some(&code) = data.get(off) else {
        return Err(PickleError::MissingStop { offset: off });
    };
    let Some(name) = opcode_name(code) else {
        return Err(PickleError::UnknownOpcode {
            offset: off,
            byte: code,
        });
    };
    let rest = &data[off + 1..];
    let truncated = PickleError::Truncated {
        offset: off,
        opcode: name,
    };
    let fixed = |n: usize| rest.get(..n).ok_or_else(|| truncated.clone());
    // A body of `len` bytes after a `hdr`-byte length field.
    let counted = |hdr: usize, len: u64| -> Result<&[u8], PickleError> {
        let remaining = rest.len().saturating_sub(hdr) as u64;
        if len > remaining {
            return Err(PickleError::LengthBeyondEnd {
                offset: off,
                opcode: name,
                len,
                remaining,
            });
        }
        Ok(&rest[hdr..hdr + len as usize])
    };
    let line = |from: usize| -> Result<&[u8], PickleError> {
        let r = rest.get(from..).ok_or_else(|| truncated.clone())?;
        let n = r
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| truncated.clone())?;
        Ok(&r[..n])
    };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x));
    let (arg, len) = match code {
        b'K' | b'h' | b'q' | 0x80 | 0x82 => (Arg::U(u64::from(fixed(1)?[0])), 1),
        b'M' | 0x83 => (Arg::U(le(fixed(2)?)), 2),
        b'J' => {
            let b = fixed(4)?;
            (
                Arg::I(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                4,
            )
        }
        b'j' | b'r' | 0x84 => (Arg::U(le(fixed(4)?)), 4),
        0x95 => (Arg::U(le(fixed(8)?)), 8),
        b'G' => {
            let b = fixed(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (Arg::F(f64::from_be_bytes(a)), 8)
        }
        b'U' | b'C' | 0x8c | 0x8a => {
            let n = u64::from(fixed(1)?[0]);
            let body = counted(1, n)?;
            (Arg::Bytes(body), 1 + body.len())
        }
        b'T' | 0x8b | b'X' | b'B' => {
            let b = fixed(4)?;
            let raw = [b[0], b[1], b[2], b[3]];
            let n = if matches!(code, b'T' | 0x8b) {
                let v = i32::from_le_bytes(raw);
                u64::try_from(v).map_err(|_| PickleError::NegativeLength {
                    offset: off,
                    opcode: name,
                })?
            } else {
                u64::from(u32::from_le_bytes(raw))
            };
            let body = counted(4, n)?;
            (Arg::Bytes(body), 4 + body.len())
        }
        0x8d | 0x8e | 0x96 => {
            let n = le(fixed(8)?);
            let body = counted(8, n)?;
            (Arg::Bytes(body), 8 + body.len())
        }
        b'F' | b'I' | b'L' | b'P' | b'S' | b'V' | b'g' | b'p' => {
            let l = line(0)?;
            (Arg::Line(l), l.len() + 1)
        }
        b'c' | b'i' => {
            let a = line(0)?;
            let b = line(a.len() + 1)?;
            (Arg::Lines(a, b), a.len() + b.len() + 2)
        }
        _ => (Arg::None, 0),
    };
    Ok((code, name, arg, off + 1 + len))
}

fn parse_decimal(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

/// The memo index a memo opcode names: its argument (binary or decimal text), or for MEMOIZE
/// the memo's current size. Shared by the reader and the scanner so that both read the same
/// index from the same bytes.
fn memo_index(arg: Arg<'_>, memoize_len: usize, code: u8) -> Option<u64> {
    match (code, arg) {
        (0x94, _) => Some(memoize_len as u64),
        (_, Arg::U(u)) => Some(u),
        (_, Arg::Line(l)) => parse_decimal(l).and_then(|i| u64::try_from(i).ok()),
        _ => None,
    }
}

/// Decodes a protocol-0 `STRING` argument: a quoted Python 2 string literal.
fn decode_string_literal(line: &[u8]) -> Option<Vec<u8>> {
    let q = *line.first()?;
    if !(q == b'\'' || q == b'"') || line.len() < 2 || *line.last()? != q {
        return None;
    }
    let body = &line[1..line.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *body.get(i + 1)?;
        i += 2;
        match e {
            b'\\' | b'\'' | b'"' => out.push(e),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\n' => {}
            b'x' => {
                let h = body.get(i..i + 2)?;
                out.push(u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 && body.get(i).is_some_and(|d| (b'0'..=b'7').contains(d)) {
                    v = v * 8 + u32::from(body[i] - b'0');
                    i += 1;
                    n += 1;
                }
                out.push((v & 0xFF) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Some(out)
}

/// Decodes a protocol-0 `UNICODE` argument (`raw-unicode-escape`).
fn decode_raw_unicode_escape(line: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'\\' && matches!(line.get(i + 1), Some(b'u') | Some(b'U')) {
            let n = if line[i + 1] == b'u' { 4 } else { 8 };
            let hex = line.get(i + 2..i + 2 + n)?;
            let v = u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
            out.push(char::from_u32(v)?);
            i += 2 + n;
        } else {
            out.push(char::from(c));
            i += 1;
        }
    }
    Some(out)
}

/// True for a storage key that is a plain name.
fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

// ---------------------------------------------------------------------------------------------
// The machine

struct Vm<'a> {
    data: &'a [u8],
    opts: &'a ParseOptions,
    nodes: Vec<Object>,
    stack: Vec<NodeId>,
    marks: Vec<usize>,
    memo: Memo<NodeId>,
    /// Offset of the opcode being run.
    off: usize,
    protocol: u8,
}

impl Vm<'_> {
    fn node(&self, id: NodeId) -> &Object {
        self.nodes.get(id.ix()).unwrap_or(&Object::None)
    }

    fn alloc(&mut self, obj: Object) -> Result<NodeId, PickleError> {
        let limit = self
            .opts
            .limits
            .max_nodes
            .min(u32::MAX as usize)
            .min(per_input(self.data.len(), NODES_PER_BYTE));
        if self.nodes.len() >= limit {
            return Err(PickleError::NodeBudget {
                offset: self.off,
                limit,
            });
        }
        let id = NodeId(self.nodes.len() as u32);
        self.nodes.push(obj);
        Ok(id)
    }

    fn push(&mut self, id: NodeId) -> Result<(), PickleError> {
        if self.stack.len() >= self.opts.limits.max_stack {
            return Err(PickleError::StackOverflow {
                offset: self.off,
                limit: self.opts.limits.max_stack,
            });
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, obj: Object) -> Result<(), PickleError> {
        let id = self.alloc(obj)?;
        self.push(id)
    }

    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, opcode: &'static str) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow {
                offset: self.off,
                opcode,
            });
        }
        self.stack.pop().ok_or(PickleError::StackUnderflow {
            offset: self.off,
            opcode,
        })
    }

    fn top(&self, opcode: &'static str) -> Result<NodeId, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(PickleError::StackUnderflow {
                offset: self.off,
                opcode,
            });
        }
        self.stack
            .last()
            .copied()
            .ok_or(PickleError::StackUnderflow {
                offset: self.off,
                opcode,
            })
    }

    fn pop_mark(&mut self, opcode: &'static str) -> Result<Vec<NodeId>, PickleError> {
        let m = self.marks.pop().ok_or(PickleError::NoMark {
            offset: self.off,
            opcode,
        })?;
        Ok(self.stack.split_off(m.min(self.stack.len())))
    }

    fn memo_put(&mut self, index: u64, opcode: &'static str) -> Result<(), PickleError> {
        let top = self.top(opcode)?;
        // The memo grows by at most one entry per opcode, so its size is bounded by the input.
        self.memo.insert(index, top);
        Ok(())
    }

    fn memo_get(&mut self, index: u64, opcode: &'static str) -> Result<(), PickleError> {
        let id = *self.memo.get(index).ok_or(PickleError::MemoMissing {
            offset: self.off,
            opcode,
            index,
        })?;
        self.push(id)
    }

    /// The text of `INT` or `LONG`, accepted only as Python writes it: an optional `-`, then
    /// `0` or digits without a leading zero. Python's `pickle.py` reads these with
    /// `int(text, 0)` (so `010` is an error and `0x10` is 16) and the C unpickler INT with
    /// `strtol(text, 0)` (`010` is 8): any other spelling means different numbers, or an
    /// error, to different loaders. (torch's own weights_only loader has neither opcode.)
    fn plain_integer(&self, text: &[u8], opcode: &'static str) -> Result<i64, PickleError> {
        let digits = text.strip_prefix(b"-").unwrap_or(text);
        let plain = !digits.is_empty()
            && digits.iter().all(u8::is_ascii_digit)
            && (digits[0] != b'0' || digits.len() == 1);
        if !plain {
            return Err(PickleError::AmbiguousInteger {
                offset: self.off,
                opcode,
                text: String::from_utf8_lossy(text).into_owned(),
            });
        }
        parse_decimal(text).ok_or_else(|| self.bad_text(opcode))
    }

    /// A text argument (protocol 0) that does not parse.
    fn bad_text(&self, opcode: &'static str) -> PickleError {
        PickleError::BadText {
            offset: self.off,
            opcode,
        }
    }

    fn string(&self, bytes: &[u8], opcode: &'static str) -> Result<String, PickleError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| PickleError::InvalidUtf8 {
            offset: self.off,
            opcode,
        })
    }

    fn pairs(
        &self,
        items: Vec<NodeId>,
        opcode: &'static str,
    ) -> Result<Vec<(NodeId, NodeId)>, PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(PickleError::OddItems {
                offset: self.off,
                opcode,
            });
        }
        Ok(items.chunks(2).map(|c| (c[0], c[1])).collect())
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        let g =
            classify_global(module, name).map_err(|r| refusal_error(self.off, module, name, r))?;
        self.push_new(Object::Global(
            g,
            format!("{module}.{name}").into_boxed_str(),
        ))
    }

    fn run(&mut self) -> Result<(NodeId, usize), PickleError> {
        let mut pos = 0usize;
        loop {
            let (code, name, arg, next) = read_op(self.data, pos)?;
            self.off = pos;
            pos = next;
            let bytes = match arg {
                Arg::Bytes(b) | Arg::Line(b) => b,
                _ => &[],
            };
            let uarg = match arg {
                Arg::U(u) => u,
                _ => 0,
            };
            match code {
                b'.' => {
                    let root = self.pop(name)?;
                    return Ok((root, pos));
                }
                0x80 => {
                    if uarg > 5 {
                        return Err(PickleError::UnsupportedProtocol {
                            offset: self.off,
                            version: uarg,
                        });
                    }
                    self.protocol = uarg as u8;
                }
                0x95 => {
                    // FRAME: a hint for buffered readers; only its length is checked.
                    let remaining = (self.data.len() - pos) as u64;
                    if uarg > remaining {
                        return Err(PickleError::LengthBeyondEnd {
                            offset: self.off,
                            opcode: name,
                            len: uarg,
                            remaining,
                        });
                    }
                }
                b'(' => {
                    if self.marks.len() >= self.opts.limits.max_marks {
                        return Err(PickleError::TooManyMarks {
                            offset: self.off,
                            limit: self.opts.limits.max_marks,
                        });
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark(name)?;
                    }
                }
                b'1' => {
                    self.pop_mark(name)?;
                }
                b'2' => {
                    let t = self.top(name)?;
                    self.push(t)?;
                }
                b'N' => self.push(NONE)?,
                0x88 => self.push(TRUE)?,
                0x89 => self.push(FALSE)?,
                b'K' | b'M' => self.push_new(Object::Int(uarg as i64))?,
                b'J' => {
                    if let Arg::I(i) = arg {
                        self.push_new(Object::Int(i))?;
                    }
                }
                b'G' => {
                    if let Arg::F(f) = arg {
                        self.push_new(Object::Float(f))?;
                    }
                }
                0x8a | 0x8b => {
                    if bytes.len() > self.opts.limits.max_int_bytes {
                        return Err(PickleError::IntegerTooLong {
                            offset: self.off,
                            opcode: name,
                            bytes: bytes.len() as u64,
                            limit: self.opts.limits.max_int_bytes,
                        });
                    }
                    self.push_new(decode_long(bytes))?;
                }
                b'I' => match bytes {
                    b"00" => self.push(FALSE)?,
                    b"01" => self.push(TRUE)?,
                    _ => {
                        let v = self.plain_integer(bytes, name)?;
                        self.push_new(Object::Int(v))?;
                    }
                },
                b'L' => {
                    let digits = bytes.strip_suffix(b"L").unwrap_or(bytes);
                    let v = self.plain_integer(digits, name)?;
                    self.push_new(Object::Int(v))?;
                }
                b'F' => {
                    let v: f64 = std::str::from_utf8(bytes)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .ok_or_else(|| self.bad_text(name))?;
                    self.push_new(Object::Float(v))?;
                }
                b'X' | 0x8c | 0x8d => {
                    let s = self.string(bytes, name)?;
                    self.push_new(Object::Str(s))?;
                }
                b'V' => {
                    let s = decode_raw_unicode_escape(bytes).ok_or_else(|| self.bad_text(name))?;
                    self.push_new(Object::Str(s))?;
                }
                b'T' | b'U' | b'S' => {
                    let raw = if code == b'S' {
                        decode_string_literal(bytes).ok_or_else(|| self.bad_text(name))?
                    } else {
                        bytes.to_vec()
                    };
                    // Python 2 `str`: text when it is UTF-8 (as torch loads it), else bytes.
                    let obj = match String::from_utf8(raw) {
                        Ok(s) => Object::Str(s),
                        Err(e) => Object::Bytes(e.into_bytes()),
                    };
                    self.push_new(obj)?;
                }
                b'B' | b'C' | 0x8e | 0x96 => self.push_new(Object::Bytes(bytes.to_vec()))?,
                b')' => self.push_new(Object::Tuple(Vec::new()))?,
                b']' => self.push_new(Object::List(Vec::new()))?,
                b'}' => self.push_new(Object::Dict(Vec::new()))?,
                0x8f => self.push_new(Object::Set(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark(name)?;
                    self.push_new(Object::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = usize::from(code - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(name)?);
                    }
                    items.reverse();
                    self.push_new(Object::Tuple(items))?;
                }
                b'l' => {
                    let items = self.pop_mark(name)?;
                    self.push_new(Object::List(items))?;
                }
                b'd' => {
                    let items = self.pop_mark(name)?;
                    let pairs = self.pairs(items, name)?;
                    self.push_new(Object::Dict(pairs))?;
                }
                0x91 => {
                    let items = self.pop_mark(name)?;
                    self.push_new(Object::FrozenSet(items))?;
                }
                b'a' => {
                    let v = self.pop(name)?;
                    let target = self.top(name)?;
                    self.append(target, vec![v], name)?;
                }
                b'e' => {
                    let items = self.pop_mark(name)?;
                    let target = self.top(name)?;
                    self.append(target, items, name)?;
                }
                b's' => {
                    let v = self.pop(name)?;
                    let k = self.pop(name)?;
                    let target = self.top(name)?;
                    self.set_items(target, vec![(k, v)], name)?;
                }
                b'u' => {
                    let items = self.pop_mark(name)?;
                    let pairs = self.pairs(items, name)?;
                    let target = self.top(name)?;
                    self.set_items(target, pairs, name)?;
                }
                0x90 => {
                    let items = self.pop_mark(name)?;
                    let target = self.top(name)?;
                    let kind = self.node(target).kind();
                    match self.nodes.get_mut(target.ix()) {
                        Some(Object::Set(v)) => v.extend(items),
                        _ => {
                            return Err(PickleError::AddItemsTarget {
                                offset: self.off,
                                target: kind,
                            })
                        }
                    }
                }
                b'g' | b'h' | b'j' => {
                    let i = memo_index(arg, 0, code).ok_or_else(|| self.bad_text(name))?;
                    self.memo_get(i, name)?;
                }
                b'p' | b'q' | b'r' | 0x94 => {
                    let i = memo_index(arg, self.memo.len(), code)
                        .ok_or_else(|| self.bad_text(name))?;
                    self.memo_put(i, name)?;
                }
                b'c' => {
                    if let Arg::Lines(m, n) = arg {
                        let module = self.string(m, name)?;
                        let gname = self.string(n, name)?;
                        self.global(&module, &gname)?;
                    }
                }
                0x93 => {
                    let n = self.pop(name)?;
                    let m = self.pop(name)?;
                    let (Object::Str(module), Object::Str(gname)) = (self.node(m), self.node(n))
                    else {
                        return Err(PickleError::NonLiteralStackGlobal { offset: self.off });
                    };
                    let (module, gname) = (module.clone(), gname.clone());
                    self.global(&module, &gname)?;
                }
                b'R' => {
                    let args = self.pop(name)?;
                    let callable = self.pop(name)?;
                    let r = self.call(callable, args, false, name)?;
                    self.push(r)?;
                }
                0x81 => {
                    let args = self.pop(name)?;
                    let cls = self.pop(name)?;
                    let r = self.call(cls, args, true, name)?;
                    self.push(r)?;
                }
                0x92 => {
                    let kwargs = self.pop(name)?;
                    let args = self.pop(name)?;
                    let cls = self.pop(name)?;
                    let empty = matches!(self.node(kwargs), Object::Dict(d) if d.is_empty());
                    if !empty {
                        return Err(PickleError::BadArguments {
                            offset: self.off,
                            callable: "NEWOBJ_EX".into(),
                            why: "keyword arguments are not supported".into(),
                        });
                    }
                    let r = self.call(cls, args, true, name)?;
                    self.push(r)?;
                }
                b'b' => self.build()?,
                b'Q' => {
                    let pid = self.pop(name)?;
                    let s = self.persistent_load(pid)?;
                    self.push(s)?;
                }
                b'P' => return Err(PickleError::TextPersistentId { offset: self.off }),
                0x82..=0x84 => {
                    return Err(PickleError::ExtensionRegistry {
                        offset: self.off,
                        opcode: name,
                    })
                }
                b'i' | b'o' => {
                    return Err(PickleError::InstObj {
                        offset: self.off,
                        opcode: name,
                    })
                }
                0x97 | 0x98 => {
                    return Err(PickleError::OutOfBandBuffer {
                        offset: self.off,
                        opcode: name,
                    })
                }
                _ => {
                    return Err(PickleError::UnknownOpcode {
                        offset: self.off,
                        byte: code,
                    })
                }
            }
        }
    }

    fn append(
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

    fn set_items(
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

    fn build(&mut self) -> Result<(), PickleError> {
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
    fn ndarray_state(&self, state: NodeId) -> Result<NdArray, PickleError> {
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
    fn seq_of<T>(&self, id: NodeId, item: impl Fn(&Object) -> Option<T>) -> Option<Vec<T>> {
        let (Object::Tuple(items) | Object::List(items)) = self.node(id) else {
            return None;
        };
        items.iter().map(|&i| item(self.node(i))).collect()
    }

    /// Ints of a tuple or list, all non-negative.
    fn uint_seq(&self, id: NodeId) -> Option<Vec<u64>> {
        self.seq_of(id, |o| match o {
            Object::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        })
    }

    /// Ints (or bools, as Python counts them) of a tuple or list.
    fn int_seq(&self, id: NodeId) -> Option<Vec<i64>> {
        self.seq_of(id, |o| match o {
            Object::Int(v) => Some(*v),
            Object::Bool(b) => Some(i64::from(*b)),
            _ => None,
        })
    }

    fn persistent_load(&mut self, pid: NodeId) -> Result<NodeId, PickleError> {
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

    fn call(
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

    fn apply(
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
    fn check_obj_state(&self, state: NodeId) -> Result<(), PickleError> {
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

    fn rebuild_tensor(
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
fn numpy_scalar(d: &NumpyDtype, mut raw: Vec<u8>) -> Object {
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

// ---------------------------------------------------------------------------------------------
// Scanning

/// What a scan concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every global is on the allowlist and no refused opcode occurs.
    Safe,
    /// Reasons the file would run code or is refused on safety grounds.
    Unsafe(Vec<String>),
    /// The file is malformed (truncated, unknown opcode, ...); it holds no refused global as
    /// far as it could be read.
    Invalid(String),
    /// The file holds a legal kind of tensor that tantra does not read (quantized, sparse,
    /// meta, nested): not malicious, but not loadable here.
    Unsupported(Vec<String>),
}

impl Verdict {
    /// `safe`, `unsafe` or `invalid`.
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Safe => "safe",
            Verdict::Unsafe(_) => "unsafe",
            Verdict::Invalid(_) => "invalid",
            Verdict::Unsupported(_) => "unsupported",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Safe => f.write_str("safe"),
            Verdict::Unsafe(r) => write!(f, "unsafe: {}", r.join("; ")),
            Verdict::Invalid(r) => write!(f, "invalid: {r}"),
            Verdict::Unsupported(r) => write!(f, "unsupported: {}", r.join("; ")),
        }
    }
}

/// What [`scan`] found in a pickle (or, merged, in every pickle of a file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Every global named (`module.name`), deduplicated, in first-seen order.
    pub globals: Vec<String>,
    /// How often each opcode occurs, by name.
    pub opcodes: BTreeMap<String, u64>,
    /// The highest protocol a PROTO opcode declared.
    pub protocol: Option<u8>,
    pub verdict: Verdict,
}

impl ScanReport {
    /// A report with nothing scanned and the given verdict.
    pub fn with_verdict(verdict: Verdict) -> Self {
        ScanReport {
            globals: Vec::new(),
            opcodes: BTreeMap::new(),
            protocol: None,
            verdict,
        }
    }

    /// True when the verdict is [`Verdict::Safe`].
    pub fn is_safe(&self) -> bool {
        self.verdict == Verdict::Safe
    }

    /// Adds an unsafe reason (making the verdict unsafe).
    pub fn add_unsafe(&mut self, reason: String) {
        match &mut self.verdict {
            Verdict::Unsafe(r) => r.push(reason),
            Verdict::Invalid(inv) => {
                let inv = std::mem::take(inv);
                self.verdict = Verdict::Unsafe(vec![reason, format!("also invalid: {inv}")]);
            }
            Verdict::Safe | Verdict::Unsupported(_) => self.verdict = Verdict::Unsafe(vec![reason]),
        }
    }

    /// Adds a reason the file is not loadable that is no danger (making a safe verdict
    /// unsupported; unsafe and invalid verdicts stay).
    pub fn add_unsupported(&mut self, reason: String) {
        match &mut self.verdict {
            Verdict::Unsupported(r) => {
                if !r.contains(&reason) {
                    r.push(reason)
                }
            }
            Verdict::Safe => self.verdict = Verdict::Unsupported(vec![reason]),
            Verdict::Unsafe(_) | Verdict::Invalid(_) => {}
        }
    }

    /// Folds another report (another pickle of the same file) into this one. Unsafe beats
    /// invalid beats safe.
    pub fn merge(&mut self, other: ScanReport) {
        for g in other.globals {
            if !self.globals.contains(&g) {
                self.globals.push(g);
            }
        }
        for (k, v) in other.opcodes {
            *self.opcodes.entry(k).or_insert(0) += v;
        }
        self.protocol = self.protocol.max(other.protocol);
        match other.verdict {
            Verdict::Safe => {}
            Verdict::Unsafe(rs) => {
                for r in rs {
                    self.add_unsafe(r);
                }
            }
            Verdict::Invalid(r) => match &mut self.verdict {
                Verdict::Safe | Verdict::Unsupported(_) => self.verdict = Verdict::Invalid(r),
                Verdict::Unsafe(rs) => rs.push(format!("also invalid: {r}")),
                Verdict::Invalid(_) => {}
            },
            Verdict::Unsupported(rs) => {
                for r in rs {
                    self.add_unsupported(r);
                }
            }
        }
    }
}

/// Scans one pickle that fills `bytes`: lists its globals and opcodes and says whether loading
/// it would be refused on safety grounds, without building any object. `STACK_GLOBAL` operands
/// are tracked on a shadow stack so that only literal strings count as names.
pub fn scan(bytes: &[u8]) -> ScanReport {
    let (mut r, end) = scan_prefix(bytes);
    if let Some(end) = end {
        if end != bytes.len() {
            r.merge(ScanReport::with_verdict(Verdict::Invalid(
                PickleError::TrailingBytes {
                    offset: end,
                    count: bytes.len() - end,
                }
                .to_string(),
            )));
        }
    }
    r
}

/// Unsafe reasons kept per scan; the rest are counted.
const MAX_REASONS: usize = 50;

/// The shadow machine of [`scan_prefix`]: `Some(text)` for literal strings, `None` for
/// anything else.
struct Scanner {
    limits: Limits,
    stack: Vec<Option<Rc<str>>>,
    marks: Vec<usize>,
    memo: Memo<Option<Rc<str>>>,
    seen: HashSet<String>,
    reasons: Vec<String>,
    more_reasons: usize,
    /// Legal tensor kinds that tantra does not read.
    unsupported: Vec<String>,
    counts: [u64; 256],
    report: ScanReport,
}

impl Scanner {
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop_n(
        &mut self,
        n: usize,
        offset: usize,
        opcode: &'static str,
    ) -> Result<Vec<Option<Rc<str>>>, PickleError> {
        if self.stack.len() < self.floor() + n {
            return Err(PickleError::StackUnderflow { offset, opcode });
        }
        let at = self.stack.len() - n;
        Ok(self.stack.split_off(at))
    }

    fn pop_mark(&mut self, offset: usize, opcode: &'static str) -> Result<(), PickleError> {
        let m = self
            .marks
            .pop()
            .ok_or(PickleError::NoMark { offset, opcode })?;
        self.stack.truncate(m);
        Ok(())
    }

    fn unsafe_reason(&mut self, e: PickleError) {
        if self.reasons.len() < MAX_REASONS {
            self.reasons.push(e.to_string());
        } else {
            self.more_reasons += 1;
        }
    }

    fn global(&mut self, module: &str, name: &str, offset: usize) {
        let q = format!("{module}.{name}");
        if self.seen.insert(q.clone()) {
            self.report.globals.push(q);
        }
        match classify_global(module, name) {
            Ok(_) => {}
            Err(GlobalRefusal::UnsupportedKind(kind)) => {
                self.unsupported
                    .push(format!("unsupported tensor kind ({kind})"));
            }
            Err(r) => self.unsafe_reason(refusal_error(offset, module, name, r)),
        }
    }

    /// Runs one opcode; `Ok(true)` at STOP.
    fn step(
        &mut self,
        code: u8,
        name: &'static str,
        arg: Arg<'_>,
        off: usize,
        remaining: usize,
    ) -> Result<bool, PickleError> {
        match code {
            b'.' => {
                self.pop_n(1, off, name)?;
                return Ok(true);
            }
            0x80 => {
                if let Arg::U(v) = arg {
                    if v > 5 {
                        return Err(PickleError::UnsupportedProtocol {
                            offset: off,
                            version: v,
                        });
                    }
                    self.report.protocol = self.report.protocol.max(Some(v as u8));
                }
            }
            0x95 => {
                if let Arg::U(v) = arg {
                    if v > remaining as u64 {
                        return Err(PickleError::LengthBeyondEnd {
                            offset: off,
                            opcode: name,
                            len: v,
                            remaining: remaining as u64,
                        });
                    }
                }
            }
            b'p' | b'q' | b'r' | 0x94 => {
                let i = memo_index(arg, self.memo.len(), code).ok_or(PickleError::BadText {
                    offset: off,
                    opcode: name,
                })?;
                let top = self.pop_n(1, off, name)?.pop().flatten();
                self.stack.push(top.clone());
                self.memo.insert(i, top);
            }
            b'g' | b'h' | b'j' => {
                let i = memo_index(arg, 0, code).ok_or(PickleError::BadText {
                    offset: off,
                    opcode: name,
                })?;
                let v = self.memo.get(i).ok_or(PickleError::MemoMissing {
                    offset: off,
                    opcode: name,
                    index: i,
                })?;
                self.stack.push(v.clone());
            }
            b'(' => {
                if self.marks.len() >= self.limits.max_marks {
                    return Err(PickleError::TooManyMarks {
                        offset: off,
                        limit: self.limits.max_marks,
                    });
                }
                self.marks.push(self.stack.len());
            }
            b'0' => {
                if self.stack.len() > self.floor() {
                    self.stack.pop();
                } else {
                    self.pop_mark(off, name)?;
                }
            }
            b'1' => self.pop_mark(off, name)?,
            b'2' => {
                let t = self.pop_n(1, off, name)?.pop().flatten();
                self.stack.extend([t.clone(), t]);
            }
            b'c' | b'i' => {
                if let Arg::Lines(m, n) = arg {
                    let m = String::from_utf8_lossy(m);
                    let n = String::from_utf8_lossy(n);
                    self.global(&m, &n, off);
                }
                if code == b'i' {
                    self.unsafe_reason(PickleError::InstObj {
                        offset: off,
                        opcode: name,
                    });
                    self.pop_mark(off, name)?;
                }
                self.stack.push(None);
            }
            0x93 => {
                let mut ops = self.pop_n(2, off, name)?;
                let (n, m) = (ops.pop().flatten(), ops.pop().flatten());
                match (m, n) {
                    (Some(m), Some(n)) => self.global(&m, &n, off),
                    _ => self.unsafe_reason(PickleError::NonLiteralStackGlobal { offset: off }),
                }
                self.stack.push(None);
            }
            b'o' => {
                self.unsafe_reason(PickleError::InstObj {
                    offset: off,
                    opcode: name,
                });
                self.pop_mark(off, name)?;
                self.stack.push(None);
            }
            0x82..=0x84 => {
                self.unsafe_reason(PickleError::ExtensionRegistry {
                    offset: off,
                    opcode: name,
                });
                self.stack.push(None);
            }
            b'P' => {
                self.unsafe_reason(PickleError::TextPersistentId { offset: off });
                self.stack.push(None);
            }
            0x97 | 0x98 => {
                self.unsafe_reason(PickleError::OutOfBandBuffer {
                    offset: off,
                    opcode: name,
                });
                if code == 0x97 {
                    self.stack.push(None);
                }
            }
            // A container from the items above the mark.
            b't' | b'l' | b'd' | 0x91 => {
                self.pop_mark(off, name)?;
                self.stack.push(None);
            }
            // The items above the mark go into the container below it.
            b'e' | b'u' | 0x90 => {
                self.pop_mark(off, name)?;
                self.pop_n(1, off, name)?;
                self.stack.push(None);
            }
            0x85..=0x87 => {
                self.pop_n(usize::from(code - 0x84), off, name)?;
                self.stack.push(None);
            }
            b'a' | b'b' | b'R' | 0x81 => {
                self.pop_n(2, off, name)?;
                self.stack.push(None);
            }
            b's' | 0x92 => {
                self.pop_n(3, off, name)?;
                self.stack.push(None);
            }
            b'Q' => {
                self.pop_n(1, off, name)?;
                self.stack.push(None);
            }
            0x8a | 0x8b => {
                if let Arg::Bytes(b) = arg {
                    if b.len() > self.limits.max_int_bytes {
                        return Err(PickleError::IntegerTooLong {
                            offset: off,
                            opcode: name,
                            bytes: b.len() as u64,
                            limit: self.limits.max_int_bytes,
                        });
                    }
                }
                self.stack.push(None);
            }
            // Everything else pushes one object: a literal string, or something else.
            _ => {
                // The strings the machine turns into `str` (see `Vm::run`).
                let text = match (code, arg) {
                    (b'X' | 0x8c | 0x8d | b'U' | b'T', Arg::Bytes(b)) => {
                        std::str::from_utf8(b).ok().map(Rc::from)
                    }
                    (b'S', Arg::Line(l)) => decode_string_literal(l)
                        .and_then(|b| String::from_utf8(b).ok())
                        .map(Rc::from),
                    (b'V', Arg::Line(l)) => decode_raw_unicode_escape(l).map(Rc::from),
                    _ => None,
                };
                self.stack.push(text);
            }
        }
        if self.stack.len() > self.limits.max_stack {
            return Err(PickleError::StackOverflow {
                offset: off,
                limit: self.limits.max_stack,
            });
        }
        Ok(false)
    }
}

/// Scans the pickle at the start of `bytes`; also returns the offset after its STOP, `None`
/// when the walk could not reach one.
pub fn scan_prefix(bytes: &[u8]) -> (ScanReport, Option<usize>) {
    let mut s = Scanner {
        limits: Limits::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::new(bytes.len()),
        seen: HashSet::new(),
        reasons: Vec::new(),
        more_reasons: 0,
        unsupported: Vec::new(),
        counts: [0; 256],
        report: ScanReport::with_verdict(Verdict::Safe),
    };
    let mut pos = 0usize;
    let end = loop {
        let step = read_op(bytes, pos).and_then(|(code, name, arg, next)| {
            s.counts[usize::from(code)] += 1;
            let off = pos;
            pos = next;
            s.step(code, name, arg, off, bytes.len() - next)
        });
        match step {
            Ok(true) => break Some(pos),
            Ok(false) => {}
            Err(e) => {
                s.report.verdict = Verdict::Invalid(e.to_string());
                break None;
            }
        }
    };
    let mut report = s.report;
    for (code, &n) in s.counts.iter().enumerate() {
        if let Some(name) = opcode_name(code as u8).filter(|_| n > 0) {
            report.opcodes.insert(name.to_string(), n);
        }
    }
    for r in s.unsupported {
        report.add_unsupported(r);
    }
    for r in s.reasons {
        report.add_unsafe(r);
    }
    if s.more_reasons > 0 {
        report.add_unsafe(format!("... and {} more", s.more_reasons));
    }
    (report, end)
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

    #[test]
    fn text_literals() {
        assert_eq!(
            decode_string_literal(b"'a\\x41\\n\\\\'").unwrap(),
            b"aA\n\\".to_vec()
        );
        assert!(decode_string_literal(b"'abc").is_none());
        assert_eq!(decode_raw_unicode_escape(b"a\\u00e9").unwrap(), "a\u{e9}");
    }

    #[test]
    fn allowlist() {
        assert_eq!(
            classify_global("collections", "OrderedDict"),
            Ok(Global::OrderedDict)
        );
        assert_eq!(
            classify_global("torch", "float8_e4m3fn"),
            Ok(Global::DType(ElementType::DType(DType::F8E4M3)))
        );
        assert_eq!(
            classify_global("posix", "system"),
            Err(GlobalRefusal::Forbidden)
        );
        assert_eq!(
            classify_global("torch._utils", "_rebuild_tensor_v2.__globals__"),
            Err(GlobalRefusal::Dotted)
        );
        assert_eq!(
            classify_global("torch.nn.modules.linear", "Linear"),
            Err(GlobalRefusal::WholeModule)
        );
        assert_eq!(
            classify_global("torch.storage", "_load_from_bytes"),
            Err(GlobalRefusal::Forbidden)
        );
    }
}
