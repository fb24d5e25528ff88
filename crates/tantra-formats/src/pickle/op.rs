//! The pickle opcodes: one [`OpCode`] enum that the reader, the scanner, opcode names and the
//! writer all use, so that no byte value of an opcode is spelled anywhere else, and the decoding
//! of each opcode's argument (shared by the machine and the scanner, so both read the same
//! argument from the same bytes).

use super::PickleError;

/// A pickle opcode (protocols 0 to 5), with its byte as the discriminant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    Mark = b'(',
    Stop = b'.',
    Pop = b'0',
    PopMark = b'1',
    Dup = b'2',
    Float = b'F',
    Int = b'I',
    Binint = b'J',
    Binint1 = b'K',
    Long = b'L',
    Binint2 = b'M',
    None = b'N',
    Persid = b'P',
    Binpersid = b'Q',
    Reduce = b'R',
    String = b'S',
    Binstring = b'T',
    ShortBinstring = b'U',
    Unicode = b'V',
    Binunicode = b'X',
    Append = b'a',
    Build = b'b',
    Global = b'c',
    Dict = b'd',
    EmptyDict = b'}',
    Appends = b'e',
    Get = b'g',
    Binget = b'h',
    Inst = b'i',
    LongBinget = b'j',
    List = b'l',
    EmptyList = b']',
    Obj = b'o',
    Put = b'p',
    Binput = b'q',
    LongBinput = b'r',
    Setitem = b's',
    Tuple = b't',
    EmptyTuple = b')',
    Setitems = b'u',
    Binfloat = b'G',
    Proto = 0x80,
    Newobj = 0x81,
    Ext1 = 0x82,
    Ext2 = 0x83,
    Ext4 = 0x84,
    Tuple1 = 0x85,
    Tuple2 = 0x86,
    Tuple3 = 0x87,
    Newtrue = 0x88,
    Newfalse = 0x89,
    Long1 = 0x8a,
    Long4 = 0x8b,
    Binbytes = b'B',
    ShortBinbytes = b'C',
    ShortBinunicode = 0x8c,
    Binunicode8 = 0x8d,
    Binbytes8 = 0x8e,
    EmptySet = 0x8f,
    Additems = 0x90,
    Frozenset = 0x91,
    NewobjEx = 0x92,
    StackGlobal = 0x93,
    Memoize = 0x94,
    Frame = 0x95,
    Bytearray8 = 0x96,
    NextBuffer = 0x97,
    ReadonlyBuffer = 0x98,
}

impl TryFrom<u8> for OpCode {
    type Error = u8;

    /// The opcode of a byte; the byte back when it is no opcode.
    fn try_from(b: u8) -> Result<Self, u8> {
        Ok(match b {
            b'(' => OpCode::Mark,
            b'.' => OpCode::Stop,
            b'0' => OpCode::Pop,
            b'1' => OpCode::PopMark,
            b'2' => OpCode::Dup,
            b'F' => OpCode::Float,
            b'I' => OpCode::Int,
            b'J' => OpCode::Binint,
            b'K' => OpCode::Binint1,
            b'L' => OpCode::Long,
            b'M' => OpCode::Binint2,
            b'N' => OpCode::None,
            b'P' => OpCode::Persid,
            b'Q' => OpCode::Binpersid,
            b'R' => OpCode::Reduce,
            b'S' => OpCode::String,
            b'T' => OpCode::Binstring,
            b'U' => OpCode::ShortBinstring,
            b'V' => OpCode::Unicode,
            b'X' => OpCode::Binunicode,
            b'a' => OpCode::Append,
            b'b' => OpCode::Build,
            b'c' => OpCode::Global,
            b'd' => OpCode::Dict,
            b'}' => OpCode::EmptyDict,
            b'e' => OpCode::Appends,
            b'g' => OpCode::Get,
            b'h' => OpCode::Binget,
            b'i' => OpCode::Inst,
            b'j' => OpCode::LongBinget,
            b'l' => OpCode::List,
            b']' => OpCode::EmptyList,
            b'o' => OpCode::Obj,
            b'p' => OpCode::Put,
            b'q' => OpCode::Binput,
            b'r' => OpCode::LongBinput,
            b's' => OpCode::Setitem,
            b't' => OpCode::Tuple,
            b')' => OpCode::EmptyTuple,
            b'u' => OpCode::Setitems,
            b'G' => OpCode::Binfloat,
            0x80 => OpCode::Proto,
            0x81 => OpCode::Newobj,
            0x82 => OpCode::Ext1,
            0x83 => OpCode::Ext2,
            0x84 => OpCode::Ext4,
            0x85 => OpCode::Tuple1,
            0x86 => OpCode::Tuple2,
            0x87 => OpCode::Tuple3,
            0x88 => OpCode::Newtrue,
            0x89 => OpCode::Newfalse,
            0x8a => OpCode::Long1,
            0x8b => OpCode::Long4,
            b'B' => OpCode::Binbytes,
            b'C' => OpCode::ShortBinbytes,
            0x8c => OpCode::ShortBinunicode,
            0x8d => OpCode::Binunicode8,
            0x8e => OpCode::Binbytes8,
            0x8f => OpCode::EmptySet,
            0x90 => OpCode::Additems,
            0x91 => OpCode::Frozenset,
            0x92 => OpCode::NewobjEx,
            0x93 => OpCode::StackGlobal,
            0x94 => OpCode::Memoize,
            0x95 => OpCode::Frame,
            0x96 => OpCode::Bytearray8,
            0x97 => OpCode::NextBuffer,
            0x98 => OpCode::ReadonlyBuffer,
            other => return Err(other),
        })
    }
}

impl OpCode {
    /// Items `TUPLE1`, `TUPLE2` and `TUPLE3` take from the stack; 0 for other opcodes.
    pub fn tuple_len(self) -> usize {
        match self {
            OpCode::Tuple1 => 1,
            OpCode::Tuple2 => 2,
            OpCode::Tuple3 => 3,
            _ => 0,
        }
    }

    /// The name Python's `pickletools` gives it.
    pub fn name(self) -> &'static str {
        match self {
            OpCode::Mark => "MARK",
            OpCode::Stop => "STOP",
            OpCode::Pop => "POP",
            OpCode::PopMark => "POP_MARK",
            OpCode::Dup => "DUP",
            OpCode::Float => "FLOAT",
            OpCode::Int => "INT",
            OpCode::Binint => "BININT",
            OpCode::Binint1 => "BININT1",
            OpCode::Long => "LONG",
            OpCode::Binint2 => "BININT2",
            OpCode::None => "NONE",
            OpCode::Persid => "PERSID",
            OpCode::Binpersid => "BINPERSID",
            OpCode::Reduce => "REDUCE",
            OpCode::String => "STRING",
            OpCode::Binstring => "BINSTRING",
            OpCode::ShortBinstring => "SHORT_BINSTRING",
            OpCode::Unicode => "UNICODE",
            OpCode::Binunicode => "BINUNICODE",
            OpCode::Append => "APPEND",
            OpCode::Build => "BUILD",
            OpCode::Global => "GLOBAL",
            OpCode::Dict => "DICT",
            OpCode::EmptyDict => "EMPTY_DICT",
            OpCode::Appends => "APPENDS",
            OpCode::Get => "GET",
            OpCode::Binget => "BINGET",
            OpCode::Inst => "INST",
            OpCode::LongBinget => "LONG_BINGET",
            OpCode::List => "LIST",
            OpCode::EmptyList => "EMPTY_LIST",
            OpCode::Obj => "OBJ",
            OpCode::Put => "PUT",
            OpCode::Binput => "BINPUT",
            OpCode::LongBinput => "LONG_BINPUT",
            OpCode::Setitem => "SETITEM",
            OpCode::Tuple => "TUPLE",
            OpCode::EmptyTuple => "EMPTY_TUPLE",
            OpCode::Setitems => "SETITEMS",
            OpCode::Binfloat => "BINFLOAT",
            OpCode::Proto => "PROTO",
            OpCode::Newobj => "NEWOBJ",
            OpCode::Ext1 => "EXT1",
            OpCode::Ext2 => "EXT2",
            OpCode::Ext4 => "EXT4",
            OpCode::Tuple1 => "TUPLE1",
            OpCode::Tuple2 => "TUPLE2",
            OpCode::Tuple3 => "TUPLE3",
            OpCode::Newtrue => "NEWTRUE",
            OpCode::Newfalse => "NEWFALSE",
            OpCode::Long1 => "LONG1",
            OpCode::Long4 => "LONG4",
            OpCode::Binbytes => "BINBYTES",
            OpCode::ShortBinbytes => "SHORT_BINBYTES",
            OpCode::ShortBinunicode => "SHORT_BINUNICODE",
            OpCode::Binunicode8 => "BINUNICODE8",
            OpCode::Binbytes8 => "BINBYTES8",
            OpCode::EmptySet => "EMPTY_SET",
            OpCode::Additems => "ADDITEMS",
            OpCode::Frozenset => "FROZENSET",
            OpCode::NewobjEx => "NEWOBJ_EX",
            OpCode::StackGlobal => "STACK_GLOBAL",
            OpCode::Memoize => "MEMOIZE",
            OpCode::Frame => "FRAME",
            OpCode::Bytearray8 => "BYTEARRAY8",
            OpCode::NextBuffer => "NEXT_BUFFER",
            OpCode::ReadonlyBuffer => "READONLY_BUFFER",
        }
    }
}

/// The name of opcode `code`, `None` for bytes that are no opcode.
pub fn opcode_name(code: u8) -> Option<&'static str> {
    OpCode::try_from(code).ok().map(OpCode::name)
}

// Opcodes

/// The argument of an opcode.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    None,
    U(u64),
    I(i64),
    F(f64),
    Bytes(&'a [u8]),
    Line(&'a [u8]),
    Lines(&'a [u8], &'a [u8]),
}

/// Decodes the opcode at `off`: its code, name, argument and the offset of the next opcode.
pub(super) fn read_op(
    data: &[u8],
    off: usize,
) -> Result<(OpCode, &'static str, Arg<'_>, usize), PickleError> {
    let Some(&code) = data.get(off) else {
        return Err(PickleError::MissingStop { offset: off });
    };
    let Ok(code) = OpCode::try_from(code) else {
        return Err(PickleError::UnknownOpcode {
            offset: off,
            byte: code,
        });
    };
    let name = code.name();
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
        OpCode::Binint1 | OpCode::Binget | OpCode::Binput | OpCode::Proto | OpCode::Ext1 => {
            (Arg::U(u64::from(fixed(1)?[0])), 1)
        }
        OpCode::Binint2 | OpCode::Ext2 => (Arg::U(le(fixed(2)?)), 2),
        OpCode::Binint => {
            let b = fixed(4)?;
            (
                Arg::I(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
                4,
            )
        }
        OpCode::LongBinget | OpCode::LongBinput | OpCode::Ext4 => (Arg::U(le(fixed(4)?)), 4),
        OpCode::Frame => (Arg::U(le(fixed(8)?)), 8),
        OpCode::Binfloat => {
            let b = fixed(8)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            (Arg::F(f64::from_be_bytes(a)), 8)
        }
        OpCode::ShortBinstring
        | OpCode::ShortBinbytes
        | OpCode::ShortBinunicode
        | OpCode::Long1 => {
            let n = u64::from(fixed(1)?[0]);
            let body = counted(1, n)?;
            (Arg::Bytes(body), 1 + body.len())
        }
        OpCode::Binstring | OpCode::Long4 | OpCode::Binunicode | OpCode::Binbytes => {
            let b = fixed(4)?;
            let raw = [b[0], b[1], b[2], b[3]];
            let n = if matches!(code, OpCode::Binstring | OpCode::Long4) {
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
        OpCode::Binunicode8 | OpCode::Binbytes8 | OpCode::Bytearray8 => {
            let n = le(fixed(8)?);
            let body = counted(8, n)?;
            (Arg::Bytes(body), 8 + body.len())
        }
        OpCode::Float
        | OpCode::Int
        | OpCode::Long
        | OpCode::Persid
        | OpCode::String
        | OpCode::Unicode
        | OpCode::Get
        | OpCode::Put => {
            let l = line(0)?;
            (Arg::Line(l), l.len() + 1)
        }
        OpCode::Global | OpCode::Inst => {
            let a = line(0)?;
            let b = line(a.len() + 1)?;
            (Arg::Lines(a, b), a.len() + b.len() + 2)
        }
        _ => (Arg::None, 0),
    };
    Ok((code, name, arg, off + 1 + len))
}

pub(super) fn parse_decimal(line: &[u8]) -> Option<i64> {
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

/// The memo index a memo opcode names: its argument (binary or decimal text), or for MEMOIZE
/// the memo's current size. Shared by the reader and the scanner so that both read the same
/// index from the same bytes.
pub(super) fn memo_index(arg: Arg<'_>, memoize_len: usize, code: OpCode) -> Option<u64> {
    match (code, arg) {
        (OpCode::Memoize, _) => Some(memoize_len as u64),
        (_, Arg::U(u)) => Some(u),
        (_, Arg::Line(l)) => parse_decimal(l).and_then(|i| u64::try_from(i).ok()),
        _ => None,
    }
}

/// Decodes a protocol-0 `STRING` argument: a quoted Python 2 string literal.
pub(super) fn decode_string_literal(line: &[u8]) -> Option<Vec<u8>> {
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
pub(super) fn decode_raw_unicode_escape(line: &[u8]) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips() {
        let mut n = 0;
        for b in 0..=255u8 {
            if let Ok(op) = OpCode::try_from(b) {
                assert_eq!(op as u8, b);
                assert_eq!(opcode_name(b), Some(op.name()));
                n += 1;
            }
        }
        assert_eq!(n, 68);
        assert_eq!(OpCode::try_from(0x99), Err(0x99));
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
}
