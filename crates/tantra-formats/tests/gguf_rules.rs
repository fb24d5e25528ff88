//! Every rule of the GGUF reader, one test each: a file built byte by byte that breaks exactly
//! that rule is refused with that rule's error, and a well-formed file reads back.

#![allow(clippy::unwrap_used)]

use tantra_formats::gguf::{parse_header, GgmlType, GgufError, GgufFile, MetaArray, MetaValue};
use tantra_formats::{DType, TensorSource};

fn s(buf: &mut Vec<u8>, text: &[u8]) {
    buf.extend_from_slice(&(text.len() as u64).to_le_bytes());
    buf.extend_from_slice(text);
}

/// A key/value: key, type id, raw value bytes.
fn kv(key: &str, ty: u32, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    s(&mut b, key.as_bytes());
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(value);
    b
}

fn kv_u32(key: &str, v: u32) -> Vec<u8> {
    kv(key, 4, &v.to_le_bytes())
}

fn kv_str(key: &str, v: &str) -> Vec<u8> {
    let mut val = Vec::new();
    s(&mut val, v.as_bytes());
    kv(key, 8, &val)
}

fn info(name: &str, ne: &[u64], ty: u32, offset: u64) -> Vec<u8> {
    let mut b = Vec::new();
    s(&mut b, name.as_bytes());
    b.extend_from_slice(&(ne.len() as u32).to_le_bytes());
    for d in ne {
        b.extend_from_slice(&d.to_le_bytes());
    }
    b.extend_from_slice(&ty.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b
}

/// A whole file: header, key/values, infos, padding to `align`, then `data`.
fn file_v(version: u32, kvs: &[Vec<u8>], infos: &[Vec<u8>], align: usize, data: &[u8]) -> Vec<u8> {
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&(infos.len() as u64).to_le_bytes());
    b.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
    for k in kvs {
        b.extend_from_slice(k);
    }
    for i in infos {
        b.extend_from_slice(i);
    }
    b.resize(b.len().next_multiple_of(align), 0);
    b.extend_from_slice(data);
    b
}

fn file(kvs: &[Vec<u8>], infos: &[Vec<u8>], data: &[u8]) -> Vec<u8> {
    file_v(3, kvs, infos, 32, data)
}

fn err(bytes: &[u8]) -> GgufError {
    parse_header(bytes).expect_err("the file must be refused")
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn reads_every_value_type_and_plain_tensors() {
    let mut arr = 5u32.to_le_bytes().to_vec(); // array of i32
    arr.extend_from_slice(&3u64.to_le_bytes());
    for v in [-1i32, 0, 7] {
        arr.extend_from_slice(&v.to_le_bytes());
    }
    let mut sarr = 8u32.to_le_bytes().to_vec(); // array of string
    sarr.extend_from_slice(&2u64.to_le_bytes());
    s(&mut sarr, b"a");
    s(&mut sarr, "\u{e9}".as_bytes());
    let kvs = vec![
        kv_str("general.architecture", "mamba"),
        kv("u8", 0, &[200]),
        kv("i8", 1, &[0xFF]),
        kv("u16", 2, &700u16.to_le_bytes()),
        kv("i16", 3, &(-700i16).to_le_bytes()),
        kv_u32("u32", 70_000),
        kv("i32", 5, &(-70_000i32).to_le_bytes()),
        kv("f32", 6, &1.5f32.to_le_bytes()),
        kv("bool", 7, &[1]),
        kv("u64", 10, &(1u64 << 40).to_le_bytes()),
        kv("i64", 11, &(-(1i64 << 40)).to_le_bytes()),
        kv("f64", 12, &0.25f64.to_le_bytes()),
        kv("arr", 9, &arr),
        kv("sarr", 9, &sarr),
    ];
    // a: F32 [2, 3] (ne = [3, 2]) at 0; b: F16 [4] at 32.
    let mut data = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    data.resize(32, 0);
    for h in [0x3C00u16, 0x4000, 0xC000, 0x0000] {
        data.extend_from_slice(&h.to_le_bytes());
    }
    let bytes = file(
        &kvs,
        &[info("a", &[3, 2], 0, 0), info("b", &[4], 1, 32)],
        &data,
    );
    let h = parse_header(&bytes).unwrap();
    assert_eq!(h.version, 3);
    assert_eq!(h.alignment, 32);
    assert_eq!(h.architecture(), Some("mamba"));
    assert_eq!(h.get("u8"), Some(&MetaValue::U8(200)));
    assert_eq!(h.get("i8"), Some(&MetaValue::I8(-1)));
    assert_eq!(h.get("u16"), Some(&MetaValue::U16(700)));
    assert_eq!(h.get("i16"), Some(&MetaValue::I16(-700)));
    assert_eq!(h.get("u32"), Some(&MetaValue::U32(70_000)));
    assert_eq!(h.get("i32"), Some(&MetaValue::I32(-70_000)));
    assert_eq!(h.get("f32"), Some(&MetaValue::F32(1.5)));
    assert_eq!(h.get("bool"), Some(&MetaValue::Bool(true)));
    assert_eq!(h.get("u64"), Some(&MetaValue::U64(1 << 40)));
    assert_eq!(h.get("i64"), Some(&MetaValue::I64(-(1 << 40))));
    assert_eq!(h.get("f64"), Some(&MetaValue::F64(0.25)));
    assert_eq!(
        h.get("arr"),
        Some(&MetaValue::Array(MetaArray::I32(vec![-1, 0, 7])))
    );
    assert_eq!(
        h.get("sarr"),
        Some(&MetaValue::Array(MetaArray::Str(vec![
            "a".into(),
            "\u{e9}".into()
        ])))
    );

    let f = GgufFile::from_bytes(bytes).unwrap();
    let t = f.tensors();
    assert_eq!(t[0].name, "a");
    assert_eq!(t[0].dtype, DType::F32);
    assert_eq!(t[0].shape, vec![2, 3]);
    assert_eq!(&*f.tensor_bytes(0).unwrap(), &data[..24]);
    assert_eq!(t[1].dtype, DType::F16);
    assert_eq!(t[1].shape, vec![4]);
    assert_eq!(f.metadata()["arr"], "[-1,0,7]");
    assert_eq!(f.header().metadata_text()["arr"], "[-1, 0, 7]");
    assert_eq!(f.metadata()["general.architecture"], "mamba");
}

#[test]
fn reads_version_2_and_no_tensors() {
    let bytes = file_v(2, &[kv_u32("x", 1)], &[], 32, &[]);
    let h = parse_header(&bytes).unwrap();
    assert_eq!(h.version, 2);
    assert!(h.tensors.is_empty());
}

#[test]
fn dequantizes_q8_0_on_request() {
    // One Q8_0 block: d = 0.5, q = 0..32 -> values 0, 0.5, ..., 15.5.
    let mut data = 0x3800u16.to_le_bytes().to_vec();
    data.extend(0..32u8);
    data.resize(64, 0);
    let bytes = file(&[], &[info("q", &[32], 8, 0)], &data);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.tensors()[0].dtype, DType::F32);
    assert_eq!(f.header().tensors[0].ty, GgmlType::Q8_0);
    let want: Vec<f32> = (0..32).map(|q| q as f32 * 0.5).collect();
    assert_eq!(&*f.tensor_bytes(0).unwrap(), &f32s(&want)[..]);
    let mut part = Vec::new();
    f.stream_tensor_range(0, 8..16, &mut |c| {
        part.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(part, f32s(&want[2..4]));
}

#[test]
fn refuses_short_files_and_bad_magic() {
    assert_eq!(err(b"GGUF\x03\0"), GgufError::TooShort { len: 6 });
    let mut b = file(&[], &[], &[]);
    b[0] = b'X';
    assert_eq!(err(&b), GgufError::BadMagic);
}

#[test]
fn refuses_big_endian_files() {
    let mut b = file(&[], &[], &[]);
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(
        err(&b),
        GgufError::BigEndian {
            version: 0x0300_0000
        }
    );
}

#[test]
fn refuses_version_1_0_and_4() {
    assert_eq!(err(&file_v(1, &[], &[], 32, &[])), GgufError::VersionOne);
    for v in [0, 4] {
        assert_eq!(
            err(&file_v(v, &[], &[], 32, &[])),
            GgufError::UnsupportedVersion { version: v }
        );
    }
}

#[test]
fn refuses_counts_the_file_cannot_hold() {
    let mut b = file(&[], &[], &[]);
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(
        err(&b),
        GgufError::CountTooLarge {
            what: "tensors",
            count: u64::MAX,
            ..
        }
    ));
    let mut b = file(&[], &[], &[]);
    b[16..24].copy_from_slice(&(1u64 << 61).to_le_bytes());
    assert!(matches!(
        err(&b),
        GgufError::CountTooLarge {
            what: "metadata entries",
            ..
        }
    ));
}

#[test]
fn refuses_string_lengths_past_the_file_or_the_limit() {
    let mut k = Vec::new();
    k.extend_from_slice(&(u64::MAX - 3).to_le_bytes()); // key length that would wrap
    k.extend_from_slice(b"abcdefghijklmnop");
    assert!(matches!(
        err(&file(&[k], &[], &[])),
        GgufError::StringTooLong { .. }
    ));
    let mut k = Vec::new();
    k.extend_from_slice(&1000u64.to_le_bytes());
    k.extend_from_slice(b"abcdefghijklmnop");
    assert!(matches!(
        err(&file(&[k], &[], &[])),
        GgufError::Truncated { .. }
    ));
    let mut big = Vec::new();
    big.extend_from_slice(&((1u64 << 30) + 1).to_le_bytes());
    big.extend_from_slice(&[0; 16]);
    assert!(matches!(
        err(&file(&[kv("k", 8, &big)], &[], &[])),
        GgufError::StringTooLong { len, .. } if len == (1 << 30) + 1
    ));
}

#[test]
fn refuses_non_utf8_keys() {
    let mut k = Vec::new();
    s(&mut k, b"\xFF\xFE");
    k.extend_from_slice(&4u32.to_le_bytes());
    k.extend_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        err(&file(&[k], &[], &[])),
        GgufError::NotUtf8 { .. }
    ));
}

#[test]
fn refuses_empty_and_duplicate_keys() {
    assert_eq!(
        err(&file(&[kv_u32("", 1)], &[], &[])),
        GgufError::EmptyKey { index: 0 }
    );
    assert_eq!(
        err(&file(&[kv_u32("a", 1), kv_u32("a", 2)], &[], &[])),
        GgufError::DuplicateKey { key: "a".into() }
    );
}

#[test]
fn refuses_unknown_value_types() {
    assert_eq!(
        err(&file(&[kv("k", 13, &[0; 8])], &[], &[])),
        GgufError::UnknownValueType {
            key: "k".into(),
            value_type: 13
        }
    );
    let mut arr = 99u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(
        err(&file(&[kv("k", 9, &arr)], &[], &[])),
        GgufError::UnknownValueType {
            key: "k".into(),
            value_type: 99
        }
    );
}

#[test]
fn refuses_nested_arrays() {
    let mut arr = 9u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&1u64.to_le_bytes());
    assert_eq!(
        err(&file(&[kv("k", 9, &arr)], &[], &[])),
        GgufError::NestedArray { key: "k".into() }
    );
}

#[test]
fn refuses_arrays_longer_than_the_limit_or_the_file() {
    let mut arr = 0u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&((1u64 << 30) + 1).to_le_bytes());
    assert!(matches!(
        err(&file(&[kv("k", 9, &arr)], &[], &[])),
        GgufError::ArrayTooLong { .. }
    ));
    // 2^29 u64 elements = 4 GiB, in a file of a few bytes: refused before allocating.
    let mut arr = 10u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&(1u64 << 29).to_le_bytes());
    assert!(matches!(
        err(&file(&[kv("k", 9, &arr)], &[], &[])),
        GgufError::Truncated { .. }
    ));
    // 2^30 strings: each needs 8 bytes, so the count alone is refused.
    let mut arr = 8u32.to_le_bytes().to_vec();
    arr.extend_from_slice(&(1u64 << 30).to_le_bytes());
    assert!(matches!(
        err(&file(&[kv("k", 9, &arr)], &[], &[])),
        GgufError::Truncated { .. }
    ));
}

#[test]
fn refuses_bools_other_than_0_and_1() {
    assert_eq!(
        err(&file(&[kv("b", 7, &[2])], &[], &[])),
        GgufError::BadBool {
            key: "b".into(),
            byte: 2
        }
    );
}

#[test]
fn refuses_alignment_of_the_wrong_type_or_value() {
    assert_eq!(
        err(&file(
            &[kv("general.alignment", 10, &32u64.to_le_bytes())],
            &[],
            &[]
        )),
        GgufError::AlignmentType {
            found: "u64".into()
        }
    );
    for a in [0u32, 48, 1 << 31] {
        assert!(matches!(
            err(&file(&[kv_u32("general.alignment", a)], &[], &[])),
            GgufError::BadAlignment { alignment, .. } if alignment == u64::from(a)
        ));
    }
}

#[test]
fn honours_general_alignment() {
    let kvs = [kv_u32("general.alignment", 64)];
    let mut data = f32s(&[1.0]);
    data.resize(64, 0);
    data.extend_from_slice(&f32s(&[2.0]));
    let b = file_v(
        3,
        &kvs,
        &[info("a", &[1], 0, 0), info("b", &[1], 0, 64)],
        64,
        &data,
    );
    let f = GgufFile::from_bytes(b).unwrap();
    assert_eq!(f.header().alignment, 64);
    assert_eq!(&*f.tensor_bytes(1).unwrap(), &f32s(&[2.0])[..]);
    // At 32 the second tensor would be misaligned.
    let b = file_v(
        3,
        &kvs,
        &[info("a", &[1], 0, 0), info("b", &[1], 0, 32)],
        64,
        &data,
    );
    assert!(matches!(
        err(&b),
        GgufError::MisalignedOffset {
            offset: 32,
            alignment: 64,
            ..
        }
    ));
}

#[test]
fn refuses_empty_long_and_duplicate_tensor_names() {
    let d = vec![0u8; 64];
    assert_eq!(
        err(&file(&[], &[info("", &[1], 0, 0)], &d)),
        GgufError::EmptyName { index: 0 }
    );
    let long = "x".repeat(64);
    assert!(matches!(
        err(&file(&[], &[info(&long, &[1], 0, 0)], &d)),
        GgufError::NameTooLong { len: 64, .. }
    ));
    assert!(parse_header(&file(&[], &[info(&"x".repeat(63), &[1], 0, 0)], &d[..32])).is_ok());
    assert_eq!(
        err(&file(
            &[],
            &[info("a", &[1], 0, 0), info("a", &[1], 0, 32)],
            &d
        )),
        GgufError::DuplicateTensor { tensor: "a".into() }
    );
}

#[test]
fn refuses_more_than_four_dimensions() {
    let d = vec![0u8; 32];
    assert!(matches!(
        err(&file(&[], &[info("a", &[1, 1, 1, 1, 1], 0, 0)], &d)),
        GgufError::TooManyDims { n_dims: 5, .. }
    ));
}

#[test]
fn refuses_negative_dimensions() {
    assert!(matches!(
        err(&file(&[], &[info("a", &[1, u64::MAX], 0, 0)], &[0; 32])),
        GgufError::NegativeDimension { dim: 1, .. }
    ));
}

#[test]
fn refuses_shapes_whose_size_overflows() {
    // 2^42 rows of 2^22 f32: the byte count wraps 64 bits (CVE-2026-27940's shape).
    assert!(matches!(
        err(&file(
            &[],
            &[info("a", &[1 << 22, 1 << 42], 0, 0)],
            &[0; 32]
        )),
        GgufError::ShapeOverflow { .. }
    ));
    // Elements fit i64, bytes do not.
    assert!(matches!(
        err(&file(
            &[],
            &[info("a", &[1 << 31, 1 << 31], 0, 0)],
            &[0; 32]
        )),
        GgufError::ShapeOverflow { .. }
    ));
}

#[test]
fn zero_sized_dimensions_are_empty_tensors() {
    let b = file(&[], &[info("a", &[0, 5], 2, 0)], &[]);
    let f = GgufFile::from_bytes(b).unwrap();
    assert_eq!(f.tensors()[0].shape, vec![5, 0]);
    assert!(f.tensor_bytes(0).unwrap().is_empty());
}

#[test]
fn refuses_unknown_removed_and_unlaid_types() {
    let d = vec![0u8; 32];
    assert_eq!(
        err(&file(&[], &[info("a", &[1], 4, 0)], &d)),
        GgufError::RemovedType {
            tensor: "a".into(),
            id: 4
        }
    );
    assert_eq!(
        err(&file(&[], &[info("a", &[1], 41, 0)], &d)),
        GgufError::LayoutUnknown {
            tensor: "a".into(),
            id: 41
        }
    );
    assert_eq!(
        err(&file(&[], &[info("a", &[1], 1000, 0)], &d)),
        GgufError::UnknownType {
            tensor: "a".into(),
            id: 1000
        }
    );
}

#[test]
fn refuses_rows_that_are_not_whole_blocks() {
    assert!(matches!(
        err(&file(&[], &[info("a", &[33, 1], 8, 0)], &[0; 96])),
        GgufError::RowNotBlockMultiple {
            row: 33,
            block: 32,
            ..
        }
    ));
}

#[test]
fn names_types_it_cannot_decode() {
    // IQ4_NL: a known layout (18 bytes per 32), not decoded.
    let f = GgufFile::from_bytes(file(&[], &[info("a", &[32], 20, 0)], &[0; 32])).unwrap();
    let e = f.tensor_bytes(0).unwrap_err().to_string();
    assert!(e.contains("cannot decode ggml type IQ4_NL"), "{e}");
}

#[test]
fn refuses_misaligned_offsets() {
    let d = vec![0u8; 64];
    assert!(matches!(
        err(&file(
            &[],
            &[info("a", &[1], 0, 0), info("b", &[1], 0, 4)],
            &d
        )),
        GgufError::MisalignedOffset {
            offset: 4,
            alignment: 32,
            ..
        }
    ));
}

#[test]
fn refuses_overlapping_tensors() {
    let d = vec![0u8; 128];
    // a is 64 bytes; b claims offset 32, inside a.
    assert_eq!(
        err(&file(
            &[],
            &[info("a", &[16], 0, 0), info("b", &[1], 0, 32)],
            &d
        )),
        GgufError::Overlap {
            tensor: "b".into(),
            offset: 32,
            expected: 64
        }
    );
    // Two tensors at the same offset.
    assert!(matches!(
        err(&file(
            &[],
            &[info("a", &[1], 0, 0), info("b", &[1], 0, 0)],
            &d
        )),
        GgufError::Overlap { .. }
    ));
}

#[test]
fn refuses_gaps_and_out_of_order_data() {
    let d = vec![0u8; 128];
    assert_eq!(
        err(&file(&[], &[info("a", &[1], 0, 64)], &d)),
        GgufError::Gap {
            tensor: "a".into(),
            offset: 64,
            expected: 0
        }
    );
}

#[test]
fn refuses_data_past_the_end() {
    assert!(matches!(
        err(&file(&[], &[info("a", &[16], 0, 0)], &[0; 32])),
        GgufError::DataPastEnd { end, .. } if end > 0
    ));
    // An offset near u64::MAX cannot wrap around to look in bounds.
    let huge = (u64::MAX / 32) * 32;
    assert!(matches!(
        err(&file(&[], &[info("a", &[1], 0, huge)], &[0; 32])),
        GgufError::Gap { .. } | GgufError::DataPastEnd { .. }
    ));
}

#[test]
fn accepts_a_last_tensor_without_padding_and_refuses_trailing_bytes() {
    let b = file(&[], &[info("a", &[1], 0, 0)], &[0; 4]);
    assert!(parse_header(&b).is_ok());
    let b = file(&[], &[info("a", &[1], 0, 0)], &[0; 33]);
    assert_eq!(
        err(&b),
        GgufError::TrailingBytes {
            data_end: b.len() as u64 - 1,
            extra: 1
        }
    );
}

#[test]
fn refuses_truncated_tensor_infos() {
    let mut b = file(&[], &[info("abc", &[4, 4], 0, 0)], &[]);
    b.truncate(24 + 8 + 3 + 4 + 8);
    assert!(matches!(err(&b), GgufError::Truncated { .. }));
}

#[test]
fn open_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, file_v(1, &[], &[], 32, &[])).unwrap();
    let e = tantra_formats::open(&p).err().expect("refused").to_string();
    assert!(e.contains("bad.gguf") && e.contains("version 1"), "{e}");
}

/// A cheap stand-in for the fuzz target in CI: thousands of corruptions of a real file (bytes
/// overwritten, the file cut short) are each refused or served without a panic.
#[test]
fn corrupted_files_never_panic() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf/quants_gguf_py.gguf");
    let good = std::fs::read(path).unwrap();
    let header_len = parse_header(&good).unwrap().data_start as usize;
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..3000 {
        let mut b = good.clone();
        for _ in 0..1 + round % 4 {
            let at = (next() as usize) % header_len;
            b[at] = match next() % 4 {
                0 => 0xFF,
                1 => 0,
                _ => next() as u8,
            };
        }
        if round % 10 == 0 {
            b.truncate((next() as usize) % b.len());
        }
        if let Ok(f) = GgufFile::from_bytes(b) {
            for i in 0..f.tensors().len() {
                if let Ok(t) = f.tensor_bytes(i) {
                    assert_eq!(Some(t.len() as u64), f.tensors()[i].byte_len());
                }
            }
        }
    }
}

#[test]
fn refuses_absurd_dimensions_that_fit_64_bits() {
    // 2^40 rows of one f32: the size fits, the file does not hold it (ollama's "Bleeding
    // Llama": dims larger than the data).
    assert!(matches!(
        err(&file(&[], &[info("a", &[1, 1 << 40], 0, 0)], &[0; 32])),
        GgufError::DataPastEnd { end, .. } if end > 1 << 40
    ));
}
