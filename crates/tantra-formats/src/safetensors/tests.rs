//! Unit tests of the safetensors header rules, reader and writer.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, Write};

use super::header::parse_with_limit;
use super::*;
use crate::dtype::DType;
use crate::error::{ErrorKind, FormatError};
use crate::tensor::MemorySource;
use crate::tensor::{TensorInfo, TensorSource, Value};
use crate::NoProgress;
use crate::{Format, Progress, VALUES_METADATA_KEY};
use std::sync::Mutex;

/// A file with `header` as its JSON (unpadded) and `data` as its data buffer.
fn file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn err(header: &str, data: &[u8]) -> SafetensorsError {
    parse_header(&file(header, data)).unwrap_err()
}

fn ok(header: &str, data: &[u8]) -> Header {
    parse_header(&file(header, data)).unwrap()
}

const F32X2: &str = r#""dtype":"F32","shape":[2]"#;

fn entry(name: &str, begin: u64, end: u64) -> String {
    format!(r#""{name}":{{{F32X2},"data_offsets":[{begin},{end}]}}"#)
}

fn one(e: &str) -> String {
    format!("{{{e}}}")
}

fn tensor(s: &str) -> String {
    s.to_string()
}

// --- accepted files -----------------------------------------------------------------------

#[test]
fn accepts_a_plain_file_and_lists_by_offset() {
    let h = ok(
        &format!(
            r#"{{"__metadata__":{{"format":"pt"}},{},{}}}"#,
            entry("b", 8, 16),
            entry("a", 0, 8)
        ),
        &[0; 16],
    );
    let names: Vec<_> = h.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(h.metadata().get("format").map(String::as_str), Some("pt"));
    assert_eq!(
        h.tensor_range(1),
        Some(h.data_start() + 8..h.data_start() + 16)
    );
    assert!(h.values().is_empty());
}

#[test]
fn accepts_empty_scalar_and_no_tensors() {
    let h = ok(
        r#"{"e":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]},"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}"#,
        &[1; 8],
    );
    assert_eq!(h.tensors()[0].shape, vec![0, 4]);
    assert_eq!(h.tensors()[1].shape, Vec::<u64>::new());
    let h = ok("{}", &[]);
    assert!(h.tensors().is_empty());
    let h = ok(r#"  {"__metadata__":null}   "#, &[]);
    assert!(h.metadata().is_empty());
}

#[test]
fn accepts_sub_byte_dtypes_in_whole_bytes() {
    let h = ok(
        r#"{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"b":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[2,5]}}"#,
        &[0; 5],
    );
    assert_eq!(h.tensors()[1].dtype, DType::F6E2M3);
}

#[test]
fn accepts_unaligned_data_and_unknown_fields() {
    // A 3-byte header puts the data at offset 11; bytes are served as bytes.
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":[{"x":1}]}}"#;
    let bytes = file(header, &1.5f32.to_le_bytes());
    let src = SafetensorsFile::from_bytes(bytes).unwrap();
    assert_eq!(src.header().data_start() % 4, (8 + header.len() as u64) % 4);
    assert_eq!(&*src.tensor_bytes(0).unwrap(), &1.5f32.to_le_bytes());
}

// --- one test per refusal -----------------------------------------------------------------

#[test]
fn refuses_shorter_than_8_bytes() {
    assert_eq!(
        parse_header(b""),
        Err(SafetensorsError::TooShort { len: 0 })
    );
    assert_eq!(
        parse_header(b"1234567"),
        Err(SafetensorsError::TooShort { len: 7 })
    );
}

#[test]
fn refuses_header_past_end() {
    let mut b = 100u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert_eq!(
        parse_header(&b),
        Err(SafetensorsError::HeaderPastEnd {
            header_len: 100,
            file_len: 10
        })
    );
    let b = u64::MAX.to_le_bytes();
    assert!(matches!(
        parse_header(&b),
        Err(SafetensorsError::HeaderTooLarge { .. })
    ));
}

#[test]
fn refuses_absurd_header_length() {
    let mut b = (MAX_HEADER_LEN + 1).to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    assert_eq!(
        parse_header(&b),
        Err(SafetensorsError::HeaderTooLarge {
            header_len: MAX_HEADER_LEN + 1
        })
    );
}

#[test]
fn refuses_non_utf8_header() {
    let mut b = 4u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{\xff}\x20");
    assert_eq!(
        parse_header(&b),
        Err(SafetensorsError::HeaderNotUtf8 { valid_up_to: 1 })
    );
}

#[test]
fn refuses_header_that_is_not_an_object() {
    for h in ["[1,2]", "\"x\"", "", "   ", "null", "7"] {
        assert_eq!(err(h, &[]), SafetensorsError::HeaderNotObject, "{h:?}");
    }
}

#[test]
fn refuses_invalid_json() {
    for h in [r#"{"a":"#, "{} x", r#"{"a" 1}"#, "{\u{0}}"] {
        assert!(
            matches!(err(h, &[]), SafetensorsError::InvalidJson(_)),
            "{h:?}"
        );
    }
}

#[test]
fn refuses_entry_that_is_not_an_object() {
    for v in ["5", "[1]", "\"F32\"", "null", "true", "-1", "1.5"] {
        assert_eq!(
            err(&format!(r#"{{"w":{v}}}"#), &[]),
            SafetensorsError::EntryNotObject {
                tensor: tensor("w")
            },
            "{v}"
        );
    }
}

#[test]
fn refuses_missing_fields() {
    for (body, field) in [
        (r#""shape":[2],"data_offsets":[0,8]"#, "dtype"),
        (r#""dtype":"F32","data_offsets":[0,8]"#, "shape"),
        (r#""dtype":"F32","shape":[2]"#, "data_offsets"),
    ] {
        assert_eq!(
            err(&format!(r#"{{"w":{{{body}}}}}"#), &[0; 8]),
            SafetensorsError::MissingField {
                tensor: tensor("w"),
                field
            }
        );
    }
}

#[test]
fn refuses_duplicate_fields() {
    assert_eq!(
        err(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"dtype":"I32"}}"#,
            &[0; 8]
        ),
        SafetensorsError::DuplicateField {
            tensor: tensor("w"),
            field: "dtype"
        }
    );
}

#[test]
fn refuses_fields_of_the_wrong_kind() {
    for (body, field) in [
        (r#""dtype":32,"shape":[2],"data_offsets":[0,8]"#, "dtype"),
        (r#""dtype":"F32","shape":"2","data_offsets":[0,8]"#, "shape"),
        (
            r#""dtype":"F32","shape":[2.0],"data_offsets":[0,8]"#,
            "shape",
        ),
        (
            r#""dtype":"F32","shape":[[2]],"data_offsets":[0,8]"#,
            "shape",
        ),
        (
            r#""dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]"#,
            "shape",
        ),
        (
            r#""dtype":"F32","shape":[2],"data_offsets":[0]"#,
            "data_offsets",
        ),
        (
            r#""dtype":"F32","shape":[2],"data_offsets":[0,8,8]"#,
            "data_offsets",
        ),
        (
            r#""dtype":"F32","shape":[2],"data_offsets":[-1,8]"#,
            "data_offsets",
        ),
        (
            r#""dtype":"F32","shape":[2],"data_offsets":{"0":8}"#,
            "data_offsets",
        ),
    ] {
        let e = err(&format!(r#"{{"w":{{{body}}}}}"#), &[0; 8]);
        assert!(
            matches!(&e, SafetensorsError::InvalidField { tensor, field: f, .. } if tensor == "w" && *f == field),
            "{body}: {e:?}"
        );
    }
}

#[test]
fn refuses_unknown_dtype() {
    assert_eq!(
        err(
            r#"{"w":{"dtype":"F128","shape":[2],"data_offsets":[0,32]}}"#,
            &[0; 32]
        ),
        SafetensorsError::UnknownDType {
            tensor: tensor("w"),
            dtype: "F128".into()
        }
    );
    // Case matters, as in the reference.
    assert!(matches!(
        err(
            r#"{"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0; 8]
        ),
        SafetensorsError::UnknownDType { .. }
    ));
}

#[test]
fn refuses_negative_dimensions() {
    assert_eq!(
        err(
            r#"{"w":{"dtype":"F32","shape":[-2,-1],"data_offsets":[0,8]}}"#,
            &[0; 8]
        ),
        SafetensorsError::NegativeDimension {
            tensor: tensor("w"),
            dim: -2
        }
    );
}

#[test]
fn refuses_shapes_whose_size_overflows() {
    // The element count overflows.
    assert_eq!(
        err(
            r#"{"w":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#,
            &[]
        ),
        SafetensorsError::ShapeOverflow {
            tensor: tensor("w")
        }
    );
    // The count fits, count * bits does not.
    assert_eq!(
        err(
            r#"{"w":{"dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,0]}}"#,
            &[]
        ),
        SafetensorsError::ShapeOverflow {
            tensor: tensor("w")
        }
    );
    // A zero anywhere makes the product 0, even after huge dims (no false overflow).
    ok(
        r#"{"w":{"dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#,
        &[],
    );
}

#[test]
fn refuses_a_fractional_byte_count() {
    assert_eq!(
        err(
            r#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#,
            &[0; 2]
        ),
        SafetensorsError::PartialByte {
            tensor: tensor("w"),
            dtype: DType::F4,
            numel: 3
        }
    );
    assert!(matches!(
        err(
            r#"{"w":{"dtype":"F6_E3M2","shape":[2],"data_offsets":[0,2]}}"#,
            &[0; 2]
        ),
        SafetensorsError::PartialByte { .. }
    ));
}

#[test]
fn refuses_byte_length_that_disagrees_with_the_shape() {
    assert_eq!(
        err(&one(&entry("w", 0, 4)), &[0; 4]),
        SafetensorsError::ByteLengthMismatch {
            tensor: tensor("w"),
            expected: 8,
            actual: 4
        }
    );
}

#[test]
fn refuses_reversed_offsets() {
    assert_eq!(
        err(&one(&entry("w", 8, 0)), &[0; 8]),
        SafetensorsError::OffsetsReversed {
            tensor: tensor("w"),
            begin: 8,
            end: 0
        }
    );
}

#[test]
fn refuses_a_first_tensor_not_at_zero() {
    assert_eq!(
        err(&one(&entry("w", 8, 16)), &[0; 16]),
        SafetensorsError::FirstOffsetNotZero {
            tensor: tensor("w"),
            begin: 8
        }
    );
}

#[test]
fn refuses_gaps() {
    let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 12, 20));
    assert_eq!(
        err(&h, &[0; 20]),
        SafetensorsError::Gap {
            tensor: tensor("b"),
            begin: 12,
            previous: tensor("a"),
            previous_end: 8
        }
    );
}

#[test]
fn refuses_overlaps() {
    let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 4, 12));
    assert_eq!(
        err(&h, &[0; 12]),
        SafetensorsError::Overlap {
            tensor: tensor("b"),
            begin: 4,
            previous: tensor("a"),
            previous_end: 8
        }
    );
    // Aliasing: two tensors on the same bytes.
    let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 0, 8));
    assert!(matches!(err(&h, &[0; 8]), SafetensorsError::Overlap { .. }));
    // A zero-size tensor inside another one.
    let h = format!(
        r#"{{{},"z":{{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}}}"#,
        entry("a", 0, 8)
    );
    assert!(matches!(err(&h, &[0; 8]), SafetensorsError::Overlap { .. }));
}

#[test]
fn refuses_offsets_past_the_end() {
    let h = format!("{{{},{}}}", entry("a", 0, 8), entry("b", 8, 16));
    assert_eq!(
        err(&h, &[0; 12]),
        SafetensorsError::OffsetsPastEnd {
            tensor: tensor("b"),
            end: 16,
            data_len: 12
        }
    );
}

#[test]
fn refuses_trailing_bytes() {
    assert_eq!(
        err(&one(&entry("a", 0, 8)), &[0; 9]),
        SafetensorsError::TrailingBytes {
            data_end: 8,
            data_len: 9
        }
    );
    // A header with no tensors and a zip appended: the classic polyglot.
    assert_eq!(
        err("{}", b"PK\x03\x04"),
        SafetensorsError::TrailingBytes {
            data_end: 0,
            data_len: 4
        }
    );
}

#[test]
fn refuses_duplicate_tensor_names() {
    // serde_json into a map would keep only the second entry and accept the file.
    let h = format!("{{{},{}}}", entry("a", 0, 8), entry("a", 8, 16));
    assert_eq!(
        err(&h, &[0; 16]),
        SafetensorsError::DuplicateTensor {
            tensor: tensor("a")
        }
    );
    // Also when the duplicates' offsets alias, which would otherwise read as an overlap.
    let h = format!("{{{},{}}}", entry("a", 0, 8), entry("a", 0, 8));
    assert!(matches!(
        err(&h, &[0; 8]),
        SafetensorsError::DuplicateTensor { .. }
    ));
}

#[test]
fn refuses_metadata_twice() {
    assert_eq!(
        err(r#"{"__metadata__":{},"__metadata__":{"a":"b"}}"#, &[]),
        SafetensorsError::DuplicateMetadata
    );
}

#[test]
fn refuses_metadata_that_is_not_an_object() {
    for v in ["[]", "\"pt\"", "1", "true"] {
        assert_eq!(
            err(&format!(r#"{{"__metadata__":{v}}}"#), &[]),
            SafetensorsError::MetadataNotObject,
            "{v}"
        );
    }
}

#[test]
fn refuses_non_string_metadata_values() {
    for v in ["1", "null", "[\"a\"]", "{\"x\":\"y\"}", "false"] {
        assert_eq!(
            err(&format!(r#"{{"__metadata__":{{"ok":"s","k":{v}}}}}"#), &[]),
            SafetensorsError::MetadataValueNotString { key: "k".into() },
            "{v}"
        );
    }
}

#[test]
fn refuses_duplicate_metadata_keys() {
    assert_eq!(
        err(r#"{"__metadata__":{"format":"pt","format":"tf"}}"#, &[]),
        SafetensorsError::DuplicateMetadataKey {
            key: "format".into()
        }
    );
}

#[test]
fn refuses_too_many_tensors() {
    let h = format!(
        "{{{},{},{}}}",
        entry("a", 0, 8),
        entry("b", 8, 16),
        entry("c", 16, 24)
    );
    let b = file(&h, &[0; 24]);
    assert!(parse_with_limit(&b, 3).is_ok());
    assert_eq!(
        parse_with_limit(&b, 2).unwrap_err(),
        SafetensorsError::TooManyTensors { limit: 2 }
    );
}

/// A header of many zero-size tensors costs a sort, not a quadratic scan.
fn zero_size_tensors(n: usize) -> Vec<u8> {
    let mut h = String::with_capacity(n * 60);
    h.push('{');
    for i in 0..n {
        if i > 0 {
            h.push(',');
        }
        h.push_str(&format!(
            r#""t{i}":{{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#
        ));
    }
    h.push('}');
    file(&h, &[])
}

#[test]
fn many_zero_size_tensors_parse_quickly() {
    let b = zero_size_tensors(200_000);
    let h = parse_header(&b).unwrap();
    assert_eq!(h.tensors().len(), 200_000);
}

/// `cargo test -p tantra-formats --release -- --ignored million --nocapture`
#[test]
#[ignore = "a 60 MB header; run by hand to measure"]
fn a_million_zero_size_tensors() {
    let b = zero_size_tensors(1_000_000);
    let t = std::time::Instant::now();
    let h = parse_header(&b).unwrap();
    eprintln!(
        "1M zero-size tensors, {} MB header: parsed in {:?}",
        b.len() >> 20,
        t.elapsed()
    );
    assert_eq!(h.tensors().len(), 1_000_000);
}

#[test]
fn never_panics_on_truncations_and_byte_flips() {
    let mut m = MemorySource::new();
    m.push_f32("a", vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
    m.push(
        TensorInfo::new("b", DType::F4, vec![2, 3]),
        vec![0x12, 0x34, 0x56],
    )
    .unwrap();
    m.metadata_mut().insert("k".into(), "v".into());
    m.values_mut().insert("epoch".into(), Value::Int(3));
    let mut good = Vec::new();
    write_safetensors(&mut good, &m, &NoProgress).unwrap();
    assert!(parse_header(&good).is_ok());
    for len in 0..good.len() {
        assert!(parse_header(&good[..len]).is_err(), "truncated to {len}");
    }
    for i in 0..good.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] ^= x;
            let _ = parse_header(&b);
        }
    }
}

// --- values -------------------------------------------------------------------------------

#[test]
fn values_move_out_of_metadata() {
    let h = ok(
        r#"{"__metadata__":{"format":"pt","tantra.values":"{\"epoch\":3,\"lr\":0.001,\"name\":\"run\",\"nan\":{\"float\":\"nan\"},\"s\":\"nan\"}"}}"#,
        &[],
    );
    assert_eq!(h.metadata().len(), 1);
    assert_eq!(h.values().get("epoch"), Some(&Value::Int(3)));
    assert_eq!(h.values().get("lr"), Some(&Value::Float(0.001)));
    assert_eq!(h.values().get("name"), Some(&Value::Str("run".into())));
    assert!(matches!(h.values().get("nan"), Some(Value::Float(f)) if f.is_nan()));
    assert_eq!(h.values().get("s"), Some(&Value::Str("nan".into())));
}

#[test]
fn values_that_do_not_parse_stay_in_metadata() {
    for v in [r#"not json"#, r#"[1]"#, r#"{\"x\":[1]}"#] {
        let h = ok(
            &format!(r#"{{"__metadata__":{{"tantra.values":"{v}"}}}}"#),
            &[],
        );
        assert!(h.values().is_empty());
        assert!(h.metadata().contains_key(VALUES_METADATA_KEY));
    }
}

// --- the reader as a source ---------------------------------------------------------------

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<SafetensorsFile>();
    check::<Header>();
}

#[test]
fn streams_in_bounded_chunks_from_a_map() {
    let n = STREAM_CHUNK * 2 + 1000;
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let header = format!(r#"{{"big":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    std::fs::write(&path, file(&header, &data)).unwrap();
    let src = SafetensorsFile::open(&path).unwrap();
    let mut got = Vec::new();
    let mut chunks = 0;
    src.stream_tensor(0, &mut |c| {
        assert!(c.len() <= STREAM_CHUNK);
        got.extend_from_slice(c);
        chunks += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(chunks, 3);
    assert!(got == data);
    // The pages released while streaming read back the same.
    assert!(*src.tensor_bytes(0).unwrap() == data[..]);
    assert!(matches!(src.tensor_bytes(0).unwrap(), Cow::Borrowed(_)));
}

#[test]
fn stream_errors_stop_the_stream_and_bad_indices_are_errors() {
    let src = SafetensorsFile::from_bytes(file(&one(&entry("a", 0, 8)), &[7; 8])).unwrap();
    let e = src
        .stream_tensor(0, &mut |_| Err(FormatError::memory("stop")))
        .unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Memory(_)));
    assert!(src.tensor_bytes(1).is_err());
    assert!(src.stream_tensor(1, &mut |_| Ok(())).is_err());
}

#[test]
fn open_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, file("{}", b"tail")).unwrap();
    let e = SafetensorsFile::open(&path).unwrap_err();
    assert_eq!(e.path.as_deref(), Some(path.as_path()));
    assert!(matches!(
        e.kind,
        ErrorKind::Safetensors(SafetensorsError::TrailingBytes { .. })
    ));
    assert!(e.to_string().contains("bad.safetensors"));
    assert!(e.is_refusal());
    let e = SafetensorsFile::open(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)));
}

// --- the writer ---------------------------------------------------------------------------

fn write(src: &dyn TensorSource) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_safetensors(&mut out, src, &NoProgress).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

fn header_text(bytes: &[u8]) -> &str {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    std::str::from_utf8(&bytes[8..8 + n]).unwrap()
}

#[test]
fn writes_the_reference_layout() {
    let mut m = MemorySource::new();
    m.push(TensorInfo::new("z", DType::U8, vec![3]), vec![1, 2, 3])
        .unwrap();
    m.push(TensorInfo::new("b", DType::F64, vec![1]), vec![0; 8])
        .unwrap();
    m.push_f32("a", vec![1], &[1.0]).unwrap();
    m.push(TensorInfo::new("c", DType::I64, vec![1]), vec![0; 8])
        .unwrap();
    let out = write(&m);
    let text = header_text(&out);
    assert_eq!(text.len() % 8, 0);
    assert_eq!(
        text.trim_end(),
        r#"{"__metadata__":{"format":"pt"},"c":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"F64","shape":[1],"data_offsets":[8,16]},"a":{"dtype":"F32","shape":[1],"data_offsets":[16,20]},"z":{"dtype":"U8","shape":[3],"data_offsets":[20,23]}}"#
    );
    let back = SafetensorsFile::from_bytes(out).unwrap();
    assert_eq!(back.tensors().len(), 4);
}

#[test]
fn writes_the_same_bytes_whatever_the_source_order() {
    let mut a = MemorySource::new();
    a.push_f32("x", vec![1], &[1.0]).unwrap();
    a.push_f32("y", vec![1], &[2.0]).unwrap();
    let mut b = MemorySource::new();
    b.push_f32("y", vec![1], &[2.0]).unwrap();
    b.push_f32("x", vec![1], &[1.0]).unwrap();
    assert_eq!(write(&a), write(&b));
}

#[test]
fn keeps_a_given_format_and_adds_pt_otherwise() {
    let mut m = MemorySource::new();
    m.metadata_mut().insert("format".into(), "mlx".into());
    m.metadata_mut().insert("a".into(), "\"quoted\"\n".into());
    let back = SafetensorsFile::from_bytes(write(&m)).unwrap();
    assert_eq!(back.metadata(), m.metadata());
}

#[test]
fn round_trips_every_dtype_values_and_metadata() {
    let mut m = MemorySource::new();
    for (i, d) in crate::dtype::ALL_DTYPES.iter().enumerate() {
        let shape = vec![2, 4];
        let len = TensorInfo::new("", *d, shape.clone()).byte_len().unwrap() as usize;
        let data = (0..len).map(|j| (i * 31 + j) as u8).collect();
        m.push(
            TensorInfo::new(format!("t.{}", d.as_str()), *d, shape),
            data,
        )
        .unwrap();
    }
    m.metadata_mut().insert("source".into(), "test".into());
    let values = m.values_mut();
    values.insert("epoch".into(), Value::Int(7));
    values.insert("loss".into(), Value::Float(0.123_456_789_012_345_67));
    values.insert("tiny".into(), Value::Float(-1.819_967_304_027_17e-179));
    values.insert("inf".into(), Value::Float(f64::INFINITY));
    values.insert(
        "big".into(),
        Value::BigInt("123456789012345678901234567890".into()),
    );
    values.insert("raw".into(), Value::Bytes(vec![0, 1, 255]));
    values.insert("none".into(), Value::None);
    values.insert("flag".into(), Value::Bool(true));
    values.insert("optimizer.param_groups.0.lr".into(), Value::Float(3e-4));
    let out = write(&m);
    let back = SafetensorsFile::from_bytes(out.clone()).unwrap();
    assert_eq!(back.values(), m.values());
    let mut want_meta = m.metadata().clone();
    want_meta.insert("format".into(), "pt".into());
    assert_eq!(back.metadata(), &want_meta);
    for (i, t) in m.tensors().iter().enumerate() {
        let j = back.find(&t.name).unwrap();
        assert_eq!(&back.tensors()[j], t);
        assert_eq!(back.tensor_bytes(j).unwrap(), m.tensor_bytes(i).unwrap());
    }
    // Every tensor of a whole-byte dtype is aligned to its element size.
    for (j, t) in back.tensors().iter().enumerate() {
        let start = back.header().tensor_range(j).unwrap().start;
        assert_eq!(start % t.dtype.alignment(), 0, "{}", t.name);
    }
    // Read back and written again: the same bytes.
    assert_eq!(write(&back), out);
}

/// A source that lies about its tensors, for the writer's own checks.
struct Lying {
    infos: Vec<TensorInfo>,
    data: Vec<Vec<u8>>,
    meta: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
}

impl Lying {
    fn new(infos: Vec<TensorInfo>, data: Vec<Vec<u8>>) -> Self {
        Lying {
            infos,
            data,
            meta: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }
}

impl TensorSource for Lying {
    fn format(&self) -> Format {
        Format::Memory
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        Ok(Cow::Borrowed(&self.data[index]))
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.meta
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
}

fn write_err(src: &dyn TensorSource) -> SafetensorsError {
    let mut out = Vec::new();
    match write_safetensors(&mut out, src, &NoProgress)
        .unwrap_err()
        .kind
    {
        ErrorKind::Safetensors(e) => e,
        other => panic!("{other:?}"),
    }
}

#[test]
fn writer_refuses_duplicate_names() {
    let t = TensorInfo::new("a", DType::U8, vec![1]);
    let src = Lying::new(vec![t.clone(), t], vec![vec![1], vec![2]]);
    assert_eq!(
        write_err(&src),
        SafetensorsError::DuplicateTensor {
            tensor: tensor("a")
        }
    );
}

#[test]
fn writer_refuses_the_metadata_name() {
    let t = TensorInfo::new(METADATA_KEY, DType::U8, vec![1]);
    let src = Lying::new(vec![t], vec![vec![1]]);
    assert_eq!(write_err(&src), SafetensorsError::ReservedName);
}

#[test]
fn writer_refuses_sizes_it_cannot_write() {
    let src = Lying::new(
        vec![TensorInfo::new("h", DType::F4, vec![3])],
        vec![vec![0; 2]],
    );
    assert!(matches!(
        write_err(&src),
        SafetensorsError::PartialByte { .. }
    ));
    let src = Lying::new(
        vec![TensorInfo::new("o", DType::F64, vec![u64::MAX / 4])],
        vec![vec![]],
    );
    assert!(matches!(
        write_err(&src),
        SafetensorsError::ShapeOverflow { .. }
    ));
}

#[test]
fn writer_refuses_a_source_that_streams_the_wrong_length() {
    let t = TensorInfo::new("a", DType::F32, vec![2]);
    let src = Lying::new(vec![t.clone()], vec![vec![0; 4]]);
    assert_eq!(
        write_err(&src),
        SafetensorsError::StreamedLength {
            tensor: tensor("a"),
            declared: 8,
            streamed: 4
        }
    );
    let src = Lying::new(vec![t], vec![vec![0; 12]]);
    let mut out = Vec::new();
    assert!(write_safetensors(&mut out, &src, &NoProgress).is_err());
    // Nothing past the header was written: the extra bytes were refused up front.
    let header_end = 8 + u64::from_le_bytes(out[..8].try_into().unwrap()) as usize;
    assert_eq!(out.len(), header_end);
}

#[test]
fn writer_reports_progress() {
    /// Calls to `begin`, units advanced, calls to `end`.
    type Calls = (Vec<(String, u64)>, u64, u32);
    #[derive(Default)]
    struct Rec(Mutex<Calls>);
    impl Progress for Rec {
        fn begin(&self, label: &str, total: u64) {
            self.0.lock().unwrap().0.push((label.into(), total));
        }
        fn advance(&self, n: u64) {
            self.0.lock().unwrap().1 += n;
        }
        fn end(&self) {
            self.0.lock().unwrap().2 += 1;
        }
    }
    let mut m = MemorySource::new();
    m.push_f32("a", vec![3], &[1.0, 2.0, 3.0]).unwrap();
    let rec = Rec::default();
    let mut out = Vec::new();
    let n = write_safetensors(&mut out, &m, &rec).unwrap();
    let (begins, advanced, ends) = rec.0.into_inner().unwrap();
    assert_eq!(begins, vec![("writing safetensors".to_string(), n)]);
    assert_eq!(advanced, n);
    assert_eq!(ends, 1);
}

#[test]
fn writer_passes_on_io_errors() {
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let m = MemorySource::new();
    let e = write_safetensors(&mut Full, &m, &NoProgress).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Io(_)));
}
