//! GGUF metadata values: the thirteen value types of `gguf.h`, arrays of them, and the short
//! text form `inspect` and `diff` show (long arrays, such as a tokenizer's 50 000 tokens,
//! summarized by type, length and first elements).

use std::fmt::{self, Write as _};

/// The value type ids of `gguf.h`.
pub mod type_id {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(MetaArray),
}

/// An array value: elements of one (non-array) type.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

/// Arrays up to this many elements are shown whole; longer ones by their first few.
pub const SHOWN_ELEMENTS: usize = 8;

impl MetaValue {
    /// The value type id written before the value.
    pub fn type_id(&self) -> u32 {
        use type_id as t;
        match self {
            MetaValue::U8(_) => t::U8,
            MetaValue::I8(_) => t::I8,
            MetaValue::U16(_) => t::U16,
            MetaValue::I16(_) => t::I16,
            MetaValue::U32(_) => t::U32,
            MetaValue::I32(_) => t::I32,
            MetaValue::F32(_) => t::F32,
            MetaValue::Bool(_) => t::BOOL,
            MetaValue::Str(_) => t::STRING,
            MetaValue::U64(_) => t::U64,
            MetaValue::I64(_) => t::I64,
            MetaValue::F64(_) => t::F64,
            MetaValue::Array(_) => t::ARRAY,
        }
    }

    /// The name of the value's type (`u32`, `string`, `array of f32`).
    pub fn type_name(&self) -> String {
        match self {
            MetaValue::Array(a) => format!("array of {}", a.element_type_name()),
            v => type_name(v.type_id()).to_string(),
        }
    }

    /// The value as an unsigned integer, for keys that hold counts of any integer type.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, for keys such as `*.layer_norm_rms_epsilon`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as text without loss: scalars as [`fmt::Display`] shows them, arrays as a
    /// whole JSON array (non-finite floats become `null`). This is what
    /// [`crate::TensorSource::metadata`] holds for a GGUF file, so that a conversion to
    /// safetensors and `diff` see every element.
    pub fn full_text(&self) -> String {
        match self {
            MetaValue::Array(a) => a.to_json().to_string(),
            v => v.to_string(),
        }
    }

    /// The string, when the value is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// `u8`, `string`, ... for a value type id.
pub fn type_name(id: u32) -> &'static str {
    use type_id as t;
    match id {
        t::U8 => "u8",
        t::I8 => "i8",
        t::U16 => "u16",
        t::I16 => "i16",
        t::U32 => "u32",
        t::I32 => "i32",
        t::F32 => "f32",
        t::BOOL => "bool",
        t::STRING => "string",
        t::ARRAY => "array",
        t::U64 => "u64",
        t::I64 => "i64",
        t::F64 => "f64",
        _ => "unknown",
    }
}

impl MetaArray {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            MetaArray::U8(v) => v.len(),
            MetaArray::I8(v) => v.len(),
            MetaArray::U16(v) => v.len(),
            MetaArray::I16(v) => v.len(),
            MetaArray::U32(v) => v.len(),
            MetaArray::I32(v) => v.len(),
            MetaArray::F32(v) => v.len(),
            MetaArray::Bool(v) => v.len(),
            MetaArray::Str(v) => v.len(),
            MetaArray::U64(v) => v.len(),
            MetaArray::I64(v) => v.len(),
            MetaArray::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type id.
    pub fn element_type(&self) -> u32 {
        use type_id as t;
        match self {
            MetaArray::U8(_) => t::U8,
            MetaArray::I8(_) => t::I8,
            MetaArray::U16(_) => t::U16,
            MetaArray::I16(_) => t::I16,
            MetaArray::U32(_) => t::U32,
            MetaArray::I32(_) => t::I32,
            MetaArray::F32(_) => t::F32,
            MetaArray::Bool(_) => t::BOOL,
            MetaArray::Str(_) => t::STRING,
            MetaArray::U64(_) => t::U64,
            MetaArray::I64(_) => t::I64,
            MetaArray::F64(_) => t::F64,
        }
    }

    /// The elements as a JSON array.
    pub fn to_json(&self) -> serde_json::Value {
        fn all<T: Into<serde_json::Value> + Copy>(v: &[T]) -> serde_json::Value {
            serde_json::Value::Array(v.iter().map(|&x| x.into()).collect())
        }
        match self {
            MetaArray::U8(v) => all(v),
            MetaArray::I8(v) => all(v),
            MetaArray::U16(v) => all(v),
            MetaArray::I16(v) => all(v),
            MetaArray::U32(v) => all(v),
            MetaArray::I32(v) => all(v),
            MetaArray::F32(v) => all(v),
            MetaArray::Bool(v) => all(v),
            MetaArray::Str(v) => serde_json::Value::Array(
                v.iter()
                    .map(|s| serde_json::Value::String(s.clone()))
                    .collect(),
            ),
            MetaArray::U64(v) => all(v),
            MetaArray::I64(v) => all(v),
            MetaArray::F64(v) => all(v),
        }
    }

    pub fn element_type_name(&self) -> &'static str {
        type_name(self.element_type())
    }

    /// The first `n` elements in text form (strings quoted).
    fn shown(&self, n: usize) -> Vec<String> {
        fn take<T: fmt::Debug>(v: &[T], n: usize) -> Vec<String> {
            v.iter().take(n).map(|x| format!("{x:?}")).collect()
        }
        match self {
            MetaArray::U8(v) => take(v, n),
            MetaArray::I8(v) => take(v, n),
            MetaArray::U16(v) => take(v, n),
            MetaArray::I16(v) => take(v, n),
            MetaArray::U32(v) => take(v, n),
            MetaArray::I32(v) => take(v, n),
            MetaArray::F32(v) => take(v, n),
            MetaArray::Bool(v) => take(v, n),
            MetaArray::Str(v) => take(v, n),
            MetaArray::U64(v) => take(v, n),
            MetaArray::I64(v) => take(v, n),
            MetaArray::F64(v) => take(v, n),
        }
    }
}

impl fmt::Display for MetaValue {
    /// Scalars as they are (strings unquoted); an array as `[a, b, c]` when it has at most
    /// [`SHOWN_ELEMENTS`] elements, else `[50280 x string: "a", "b", ... ]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaValue::U8(v) => write!(f, "{v}"),
            MetaValue::I8(v) => write!(f, "{v}"),
            MetaValue::U16(v) => write!(f, "{v}"),
            MetaValue::I16(v) => write!(f, "{v}"),
            MetaValue::U32(v) => write!(f, "{v}"),
            MetaValue::I32(v) => write!(f, "{v}"),
            MetaValue::F32(v) => write!(f, "{v:?}"),
            MetaValue::Bool(v) => write!(f, "{v}"),
            MetaValue::Str(v) => f.write_str(v),
            MetaValue::U64(v) => write!(f, "{v}"),
            MetaValue::I64(v) => write!(f, "{v}"),
            MetaValue::F64(v) => write!(f, "{v:?}"),
            MetaValue::Array(a) => {
                let mut s = String::from("[");
                if a.len() > SHOWN_ELEMENTS {
                    let _ = write!(s, "{} x {}: ", a.len(), a.element_type_name());
                }
                s.push_str(&a.shown(SHOWN_ELEMENTS).join(", "));
                if a.len() > SHOWN_ELEMENTS {
                    s.push_str(", ...");
                }
                s.push(']');
                f.write_str(&s)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_arrays_are_summarized() {
        let short = MetaValue::Array(MetaArray::I32(vec![1, 2]));
        assert_eq!(short.to_string(), "[1, 2]");
        let tokens: Vec<String> = (0..1000).map(|i| format!("t{i}")).collect();
        let long = MetaValue::Array(MetaArray::Str(tokens));
        let s = long.to_string();
        assert!(s.starts_with("[1000 x string: \"t0\", \"t1\""), "{s}");
        assert!(s.ends_with(", ...]"), "{s}");
        assert_eq!(long.type_name(), "array of string");
        assert!(long.full_text().ends_with("\"t998\",\"t999\"]"));
        let f = MetaValue::Array(MetaArray::F32(vec![0.5, f32::NAN]));
        assert_eq!(f.full_text(), "[0.5,null]");
    }
}
