//! The pickle (protocol 2) inside the `.pt` files tantra writes, emitted the way Python's
//! `pickle.Pickler` emits it for `torch.save`: the same opcodes, memo numbering and batching, so
//! that `torch.load(weights_only=True)` reads it and byte-level tools see torch's own output.
//! It also says how torch stores each dtype (storage class, shape).

use std::collections::HashMap;

use super::op::OpCode;
use crate::dtype::DType;
use crate::error::FormatError;
use crate::pytorch::write_error::WriteError;
use crate::structure::{Key, Node};
use crate::tensor::{TensorInfo, TensorSource, Value};

/// Items per `SETITEMS` batch, as Python's pickler batches them.
pub(crate) const BATCH_SIZE: usize = 1000;

/// What torch calls a storage class, for one dtype.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TorchStorage {
    /// A legacy typed storage (`torch.FloatStorage`), rebuilt by `_rebuild_tensor_v2`; the
    /// persistent id counts elements.
    Typed(&'static str),
    /// `torch.storage.UntypedStorage` plus a dtype global (`torch.float8_e4m3fn`), rebuilt by
    /// `_rebuild_tensor_v3`; the persistent id counts bytes. torch 2.x uses this for every dtype
    /// without a legacy storage class.
    Untyped(&'static str),
}

/// How torch stores `dtype`, or `None` where torch has no type with the same elements and shape.
fn torch_storage(dtype: DType) -> Option<TorchStorage> {
    use TorchStorage::{Typed, Untyped};
    Some(match dtype {
        DType::F64 => Typed("DoubleStorage"),
        DType::F32 => Typed("FloatStorage"),
        DType::F16 => Typed("HalfStorage"),
        DType::BF16 => Typed("BFloat16Storage"),
        DType::I64 => Typed("LongStorage"),
        DType::I32 => Typed("IntStorage"),
        DType::I16 => Typed("ShortStorage"),
        DType::I8 => Typed("CharStorage"),
        DType::U8 => Typed("ByteStorage"),
        DType::Bool => Typed("BoolStorage"),
        DType::C64 => Typed("ComplexFloatStorage"),
        DType::F8E4M3 => Untyped("float8_e4m3fn"),
        DType::F8E5M2 => Untyped("float8_e5m2"),
        DType::F8E4M3Fnuz => Untyped("float8_e4m3fnuz"),
        DType::F8E5M2Fnuz => Untyped("float8_e5m2fnuz"),
        // torch >= 2.7; what safetensors maps F8_E8M0 to.
        DType::F8E8M0 => Untyped("float8_e8m0fnu"),
        DType::U16 => Untyped("uint16"),
        DType::U32 => Untyped("uint32"),
        DType::U64 => Untyped("uint64"),
        // torch's `float4_e2m1fn_x2` counts a byte (two values) as one element: its last
        // dimension is half of safetensors' (see `torch_shape`). torch has no 6-bit floats.
        DType::F4 => Untyped("float4_e2m1fn_x2"),
        DType::F6E2M3 | DType::F6E3M2 => return None,
    })
}

/// The shape torch gives a tensor: the safetensors shape, except for `F4`, which torch holds
/// as `float4_e2m1fn_x2` (two values per element), so the last dimension is halved, as
/// `safetensors.torch` does the other way.
fn torch_shape(info: &TensorInfo) -> Result<Vec<u64>, FormatError> {
    if info.dtype != DType::F4 {
        return Ok(info.shape.clone());
    }
    let mut shape = info.shape.clone();
    match shape.last_mut() {
        Some(d) if *d % 2 == 0 => {
            *d /= 2;
            Ok(shape)
        }
        _ => Err(WriteError::OddF4Shape {
            name: info.name.clone(),
            shape: info.shape.clone(),
        }
        .into()),
    }
}

/// An object Python's pickler would see as the same object every time, so that only its first
/// appearance is written out and later ones are memo references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shared {
    Global(&'static str, &'static str),
    /// A string literal of torch's or pickle's own code (`'storage'`, `'cpu'`, `'latin1'`).
    Str(&'static str),
}

#[derive(Default)]
pub(crate) struct Pickler {
    pub(crate) buf: Vec<u8>,
    /// Entries in the memo so far; the next memoized object gets this index.
    memo_len: u32,
    shared: HashMap<Shared, u32>,
}

impl Pickler {
    pub(crate) fn op(&mut self, op: OpCode) {
        self.buf.push(op as u8);
    }

    pub(crate) fn proto(&mut self) {
        self.buf.extend_from_slice(&[OpCode::Proto as u8, 2]);
    }

    /// Puts the object on top of the stack into the memo (`OpCode::Binput`/`OpCode::LongBinput`).
    pub(crate) fn memoize(&mut self) -> Result<u32, FormatError> {
        let index = self.memo_len;
        match u8::try_from(index) {
            Ok(i) => self.buf.extend_from_slice(&[OpCode::Binput as u8, i]),
            Err(_) => {
                self.op(OpCode::LongBinput);
                self.buf.extend_from_slice(&index.to_le_bytes());
            }
        }
        self.memo_len = index.checked_add(1).ok_or(WriteError::TooManyObjects)?;
        Ok(index)
    }

    fn get(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.buf.extend_from_slice(&[OpCode::Binget as u8, i]),
            Err(_) => {
                self.op(OpCode::LongBinget);
                self.buf.extend_from_slice(&index.to_le_bytes());
            }
        }
    }

    /// Emits `obj` for the first time, or a reference to its memo entry.
    fn shared(
        &mut self,
        obj: Shared,
        first: impl FnOnce(&mut Self) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        if let Some(&index) = self.shared.get(&obj) {
            self.get(index);
            return Ok(());
        }
        first(self)?;
        let index = self.memoize()?;
        self.shared.insert(obj, index);
        Ok(())
    }

    pub(crate) fn global(
        &mut self,
        module: &'static str,
        name: &'static str,
    ) -> Result<(), FormatError> {
        self.shared(Shared::Global(module, name), |p| {
            p.op(OpCode::Global);
            p.buf.extend_from_slice(module.as_bytes());
            p.buf.push(b'\n');
            p.buf.extend_from_slice(name.as_bytes());
            p.buf.push(b'\n');
            Ok(())
        })
    }

    fn raw_str(&mut self, s: &str) -> Result<(), FormatError> {
        let len = u32::try_from(s.len()).map_err(|_| WriteError::StringTooLong(s.len()))?;
        self.op(OpCode::Binunicode);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(s.as_bytes());
        Ok(())
    }

    /// A fresh string object, memoized as Python memoizes every string it pickles.
    pub(crate) fn str(&mut self, s: &str) -> Result<(), FormatError> {
        self.raw_str(s)?;
        self.memoize().map(|_| ())
    }

    fn shared_str(&mut self, s: &'static str) -> Result<(), FormatError> {
        self.shared(Shared::Str(s), |p| p.raw_str(s))
    }

    /// An integer as `save_long` writes it: the shortest of `OpCode::Binint1`, `OpCode::Binint2`, `OpCode::Binint`,
    /// else `OpCode::Long1`.
    fn int(&mut self, v: i128) {
        if let Ok(b) = u8::try_from(v) {
            self.buf.extend_from_slice(&[OpCode::Binint1 as u8, b]);
        } else if let Ok(w) = u16::try_from(v) {
            self.op(OpCode::Binint2);
            self.buf.extend_from_slice(&w.to_le_bytes());
        } else if let Ok(d) = i32::try_from(v) {
            self.op(OpCode::Binint);
            self.buf.extend_from_slice(&d.to_le_bytes());
        } else {
            let magnitude = v.unsigned_abs().to_le_bytes();
            // An i128 needs at most 17 bytes: always within OpCode::Long1's one-byte length.
            let bytes = encode_long(v < 0, &magnitude);
            self.buf
                .extend_from_slice(&[OpCode::Long1 as u8, bytes.len() as u8]);
            self.buf.extend_from_slice(&bytes);
        }
    }

    /// A tuple of integers as `save_tuple` writes it, memoized unless empty.
    fn int_tuple(&mut self, items: &[u64]) -> Result<(), FormatError> {
        if items.is_empty() {
            self.op(OpCode::EmptyTuple);
            return Ok(());
        }
        if items.len() > 3 {
            self.op(OpCode::Mark);
        }
        for &i in items {
            self.int(i128::from(i));
        }
        self.op(match items.len() {
            1 => OpCode::Tuple1,
            2 => OpCode::Tuple2,
            3 => OpCode::Tuple3,
            _ => OpCode::Tuple,
        });
        self.memoize().map(|_| ())
    }

    /// A tensor as `torch.Tensor.__reduce_ex__` hands it to the pickler: a rebuild function
    /// applied to (storage via persistent id, offset 0, size, row-major stride, False,
    /// `OrderedDict()`[, dtype]).
    fn tensor(
        &mut self,
        key: &str,
        name: &str,
        storage: TorchStorage,
        shape: &[u64],
        byte_len: u64,
    ) -> Result<(), FormatError> {
        let stride = contiguous_stride(shape).ok_or_else(|| WriteError::BeyondI64 {
            name: name.to_string(),
            shape: shape.to_vec(),
        })?;
        let (rebuild, numel) = match storage {
            TorchStorage::Typed(_) => {
                let numel = shape.iter().product::<u64>(); // byte_len exists, so no overflow
                ("_rebuild_tensor_v2", numel)
            }
            TorchStorage::Untyped(_) => ("_rebuild_tensor_v3", byte_len),
        };
        self.global("torch._utils", rebuild)?;
        self.op(OpCode::Mark);
        // The persistent id ('storage', storage class, key, location, numel).
        self.op(OpCode::Mark);
        self.shared_str("storage")?;
        match storage {
            TorchStorage::Typed(class) => self.global("torch", class)?,
            TorchStorage::Untyped(_) => self.global("torch.storage", "UntypedStorage")?,
        }
        self.str(key)?;
        self.shared_str("cpu")?;
        self.int(i128::from(numel));
        self.op(OpCode::Tuple);
        self.memoize()?;
        self.op(OpCode::Binpersid);
        self.int(0); // storage offset
        self.int_tuple(shape)?;
        self.int_tuple(&stride)?;
        self.op(OpCode::Newfalse); // requires_grad
        self.global("collections", "OrderedDict")?; // backward hooks: OrderedDict()
        self.op(OpCode::EmptyTuple);
        self.op(OpCode::Reduce);
        self.memoize()?;
        if let TorchStorage::Untyped(dtype_name) = storage {
            self.global("torch", dtype_name)?;
        }
        self.op(OpCode::Tuple);
        self.memoize()?;
        self.op(OpCode::Reduce);
        self.memoize().map(|_| ())
    }

    /// Tensor `key` of the source (its storage key is its index), checked for torch.
    /// Returns its byte length.
    pub(crate) fn source_tensor(
        &mut self,
        key: usize,
        info: &TensorInfo,
    ) -> Result<u64, FormatError> {
        let storage = torch_storage(info.dtype).ok_or_else(|| WriteError::NoTorchDType {
            name: info.name.clone(),
            dtype: info.dtype,
        })?;
        let byte_len = info.byte_len().ok_or_else(|| WriteError::TensorTooLarge {
            name: info.name.clone(),
            shape: info.shape.clone(),
            dtype: info.dtype,
        })?;
        let shape = torch_shape(info)?;
        self.tensor(&key.to_string(), &info.name, storage, &shape, byte_len)?;
        Ok(byte_len)
    }

    /// One node of a [`Structure`] as Python's pickler writes the same object: `OpCode::EmptyDict`
    /// or `OrderedDict()` then `OpCode::Setitems` batches, `OpCode::EmptyList` then `OpCode::Appends` batches, tuples
    /// by `OpCode::Tuple1..3` or `OpCode::Mark ... OpCode::Tuple`. Recursion is bounded by the structure's depth cap.
    pub(crate) fn node(
        &mut self,
        node: &Node,
        src: &dyn TensorSource,
        by_name: &HashMap<&str, usize>,
        byte_lens: &mut [u64],
    ) -> Result<(), FormatError> {
        match node {
            Node::Leaf(name) => {
                if let Some((i, info)) = by_name
                    .get(name.as_str())
                    .and_then(|&i| Some((i, src.tensors().get(i)?)))
                {
                    let len = self.source_tensor(i, info)?;
                    if let Some(slot) = byte_lens.get_mut(i) {
                        *slot = len;
                    }
                } else if let Some(v) = src.values().get(name) {
                    self.value(name, v)?;
                } else {
                    return Err(WriteError::NotInSource(name.clone()).into());
                }
            }
            Node::Dict(items) | Node::OrderedDict(items) => {
                if matches!(node, Node::Dict(_)) {
                    self.op(OpCode::EmptyDict);
                } else {
                    self.global("collections", "OrderedDict")?;
                    self.op(OpCode::EmptyTuple);
                    self.op(OpCode::Reduce);
                }
                self.memoize()?;
                for batch in items.chunks(BATCH_SIZE) {
                    if batch.len() > 1 {
                        self.op(OpCode::Mark);
                    }
                    for (key, child) in batch {
                        match key {
                            Key::Str(s) => self.str(s)?,
                            Key::Int(i) => self.int(i128::from(*i)),
                            Key::Bool(b) => self.op(if *b {
                                OpCode::Newtrue
                            } else {
                                OpCode::Newfalse
                            }),
                        }
                        self.node(child, src, by_name, byte_lens)?;
                    }
                    self.op(if batch.len() > 1 {
                        OpCode::Setitems
                    } else {
                        OpCode::Setitem
                    });
                }
            }
            Node::List(items) => {
                self.op(OpCode::EmptyList);
                self.memoize()?;
                for batch in items.chunks(BATCH_SIZE) {
                    if batch.len() > 1 {
                        self.op(OpCode::Mark);
                    }
                    for child in batch {
                        self.node(child, src, by_name, byte_lens)?;
                    }
                    self.op(if batch.len() > 1 {
                        OpCode::Appends
                    } else {
                        OpCode::Append
                    });
                }
            }
            Node::Tuple(items) => {
                if items.is_empty() {
                    self.op(OpCode::EmptyTuple);
                    return Ok(());
                }
                if items.len() > 3 {
                    self.op(OpCode::Mark);
                }
                for child in items {
                    self.node(child, src, by_name, byte_lens)?;
                }
                self.op(match items.len() {
                    1 => OpCode::Tuple1,
                    2 => OpCode::Tuple2,
                    3 => OpCode::Tuple3,
                    _ => OpCode::Tuple,
                });
                self.memoize()?;
            }
        }
        Ok(())
    }

    /// A non-tensor value called `name`.
    pub(crate) fn value(&mut self, name: &str, value: &Value) -> Result<(), FormatError> {
        match value {
            Value::None => self.op(OpCode::None),
            Value::Bool(true) => self.op(OpCode::Newtrue),
            Value::Bool(false) => self.op(OpCode::Newfalse),
            Value::Int(i) => self.int(i128::from(*i)),
            Value::BigInt(decimal) => {
                let (negative, magnitude) =
                    parse_decimal(decimal).ok_or_else(|| WriteError::NotDecimal {
                        name: name.to_string(),
                        decimal: decimal.clone(),
                    })?;
                match to_i128(negative, &magnitude) {
                    Some(v) => self.int(v),
                    None => {
                        let bytes = encode_long(negative, &magnitude);
                        // LONG4 would carry more, but torch's weights-only loader refuses it.
                        let len =
                            u8::try_from(bytes.len()).map_err(|_| WriteError::IntegerTooLarge {
                                name: name.to_string(),
                                bytes: bytes.len(),
                            })?;
                        self.buf.extend_from_slice(&[OpCode::Long1 as u8, len]);
                        self.buf.extend_from_slice(&bytes);
                    }
                }
            }
            Value::Float(f) => {
                self.op(OpCode::Binfloat);
                self.buf.extend_from_slice(&f.to_be_bytes());
            }
            Value::Str(s) => self.str(s)?,
            Value::Bytes(b) => self.bytes(b)?,
        }
        Ok(())
    }

    /// Bytes as protocol 2 writes them: `_codecs.encode(<latin-1 text>, 'latin1')`. (Python
    /// writes empty bytes as `__builtin__.bytes()`, which torch's weights-only loader refuses;
    /// `_codecs.encode('', 'latin1')` gives the same `b''` and is allowed.)
    fn bytes(&mut self, b: &[u8]) -> Result<(), FormatError> {
        self.global("_codecs", "encode")?;
        let text: String = b.iter().map(|&c| char::from(c)).collect();
        self.str(&text)?;
        self.shared_str("latin1")?;
        self.op(OpCode::Tuple2);
        self.memoize()?;
        self.op(OpCode::Reduce);
        self.memoize().map(|_| ())
    }
}

/// Row-major strides in elements, as torch computes them (a zero-length dimension counts as 1),
/// or `None` if a size or stride exceeds `i64::MAX`.
fn contiguous_stride(shape: &[u64]) -> Option<Vec<u64>> {
    let limit = i64::MAX as u64;
    let mut stride = vec![0u64; shape.len()];
    let mut acc = 1u64;
    for (s, &d) in stride.iter_mut().zip(shape).rev() {
        if d > limit || acc > limit {
            return None;
        }
        *s = acc;
        acc = acc.checked_mul(d.max(1))?;
    }
    Some(stride)
}

/// Python's `pickle.encode_long`: the shortest little-endian two's complement of the integer
/// whose magnitude is `magnitude` (little-endian), empty for zero.
fn encode_long(negative: bool, magnitude: &[u8]) -> Vec<u8> {
    let mut mag: Vec<u8> = magnitude.to_vec();
    while mag.last() == Some(&0) {
        mag.pop();
    }
    if mag.is_empty() {
        return Vec::new();
    }
    // nbytes = bit_length / 8 + 1, as Python computes it from the magnitude.
    let top = mag.last().copied().unwrap_or(0);
    let nbytes = if top & 0x80 != 0 {
        mag.len() + 1
    } else {
        mag.len()
    };
    let mut out = mag;
    out.resize(nbytes, 0);
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in out.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
        let n = out.len();
        if n > 1 && out[n - 1] == 0xff && out[n - 2] & 0x80 != 0 {
            out.pop();
        }
    }
    out
}

/// Parses `[-]digits` into a sign and a little-endian magnitude.
fn parse_decimal(s: &str) -> Option<(bool, Vec<u8>)> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut mag: Vec<u8> = Vec::new();
    for c in digits.bytes() {
        let mut carry = u32::from(c - b'0');
        for b in mag.iter_mut() {
            let v = u32::from(*b) * 10 + carry;
            *b = v as u8;
            carry = v >> 8;
        }
        while carry > 0 {
            mag.push(carry as u8);
            carry >>= 8;
        }
    }
    Some((negative, mag))
}

/// The integer as an `i128`, if it fits.
fn to_i128(negative: bool, magnitude: &[u8]) -> Option<i128> {
    let significant = magnitude.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if significant > 16 {
        return None;
    }
    let mut bytes = [0u8; 16];
    bytes[..significant].copy_from_slice(&magnitude[..significant]);
    let m = u128::from_le_bytes(bytes);
    if negative {
        0i128.checked_sub_unsigned(m)
    } else {
        i128::try_from(m).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn pickled(v: &Value) -> Vec<u8> {
        let mut p = Pickler::default();
        p.proto();
        p.value("v", v).unwrap();
        p.op(OpCode::Stop);
        p.buf
    }

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// Expected bytes from CPython's `pickle.dumps(x, protocol=2)`.
    #[test]
    fn integers_match_python() {
        let cases: &[(i128, &str)] = &[
            (0, "4b00"),
            (255, "4bff"),
            (256, "4d0001"),
            (65535, "4dffff"),
            (65536, "4a00000100"),
            (-1, "4affffffff"),
            (2147483647, "4affffff7f"),
            (2147483648, "8a050000008000"),
            (-2147483648, "4a00000080"),
            (-2147483649, "8a05ffffff7fff"),
            (9223372036854775808, "8a09000000000000008000"),
            (18446744073709551615, "8a09ffffffffffffffff00"),
            (-9223372036854775808, "8a080000000000000080"),
            (-1180591620717411303424, "8a090000000000000000c0"),
        ];
        for &(v, want) in cases {
            let mut p = Pickler::default();
            p.int(v);
            assert_eq!(p.buf, hex(want), "{v}");
        }
    }

    #[test]
    fn big_integers_match_python() {
        let two_200 = "1606938044258990275541962092341162602522202993782792835301376";
        let mut want = hex("80028a1a");
        want.extend(std::iter::repeat_n(0, 25));
        want.extend([1, b'.']);
        assert_eq!(pickled(&Value::BigInt(two_200.into())), want);
        let minus_2_255 =
            "-57896044618658097711785492504343953926634992332820282019728792003956564819968";
        let mut want = hex("80028a20");
        want.extend(std::iter::repeat_n(0, 31));
        want.extend([0x80, b'.']);
        assert_eq!(pickled(&Value::BigInt(minus_2_255.into())), want);
        // A "big" integer that fits i64 is written like any other.
        assert_eq!(
            pickled(&Value::BigInt("-1".into())),
            hex("80024affffffff2e")
        );
        assert!(matches!(
            Pickler::default().value("v", &Value::BigInt("12a".into())),
            Err(FormatError {
                kind: ErrorKind::PytorchWrite(WriteError::NotDecimal { .. }),
                ..
            })
        ));
        let huge = "9".repeat(700);
        assert!(matches!(
            Pickler::default().value("v", &Value::BigInt(huge)),
            Err(FormatError {
                kind: ErrorKind::PytorchWrite(WriteError::IntegerTooLarge { bytes: 291, .. }),
                ..
            })
        ));
    }

    #[test]
    fn other_values_match_python() {
        assert_eq!(pickled(&Value::Float(1.5)), hex("8002473ff80000000000002e"));
        assert_eq!(
            pickled(&Value::Str("h\u{e9}".into())),
            hex("8002580300000068c3a971002e")
        );
        assert_eq!(pickled(&Value::Bool(true)), hex("8002882e"));
        assert_eq!(pickled(&Value::None), hex("80024e2e"));
        assert_eq!(
            pickled(&Value::Bytes(b"ab\xff".to_vec())),
            hex("8002635f636f646563730a656e636f64650a710058040000006162c3bf710158060000006c6174696e3171028671035271042e")
        );
    }

    #[test]
    fn second_bytes_value_reuses_globals_and_literals() {
        // pickle.dumps([b'ab', b'cd'], 2), without the list around them.
        let mut p = Pickler::default();
        p.bytes(b"ab").unwrap();
        p.bytes(b"cd").unwrap();
        assert_eq!(
            p.buf,
            hex("635f636f646563730a656e636f64650a710058020000006162710158060000006c6174696e31710286710352710468005802000000636471056802867106527107")
        );
    }

    #[test]
    fn memo_indices_switch_to_long_form() {
        let mut p = Pickler::default();
        for _ in 0..256 {
            p.memoize().unwrap();
        }
        assert_eq!(&p.buf[p.buf.len() - 2..], &[OpCode::Binput as u8, 255]);
        p.memoize().unwrap();
        assert_eq!(
            &p.buf[p.buf.len() - 5..],
            &[OpCode::LongBinput as u8, 0, 1, 0, 0]
        );
        p.get(256);
        assert_eq!(
            &p.buf[p.buf.len() - 5..],
            &[OpCode::LongBinget as u8, 0, 1, 0, 0]
        );
    }

    #[test]
    fn strides_are_torchs() {
        assert_eq!(contiguous_stride(&[]), Some(vec![]));
        assert_eq!(contiguous_stride(&[4, 3]), Some(vec![3, 1]));
        assert_eq!(contiguous_stride(&[0, 4]), Some(vec![4, 1]));
        assert_eq!(contiguous_stride(&[3, 0, 2]), Some(vec![2, 2, 1]));
        assert_eq!(contiguous_stride(&[u64::MAX]), None);
        assert_eq!(contiguous_stride(&[0, 1 << 40, 1 << 40]), None);
    }

    #[test]
    fn decimal_parsing() {
        assert_eq!(parse_decimal("256"), Some((false, vec![0, 1])));
        assert_eq!(parse_decimal("-0"), Some((true, vec![])));
        assert_eq!(parse_decimal(""), None);
        assert_eq!(parse_decimal("-"), None);
        assert_eq!(to_i128(true, &[0, 1]), Some(-256));
        assert_eq!(encode_long(false, &[]), Vec::<u8>::new());
    }
}
