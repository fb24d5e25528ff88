//! The GGUF writer: plain round trips, type conversion, quantization choices, refusals, and
//! `convert_to_gguf` with verification.

#![allow(clippy::unwrap_used)]

use tantra_formats::gguf::quant::quantize;
use tantra_formats::gguf::write::{metadata_for, plan, write_gguf};
use tantra_formats::gguf::{
    convert_to_gguf, parse_header, GgmlType, GgufError, GgufFile, GgufOptions, MetaArray,
    MetaValue, TargetType,
};
use tantra_formats::{DType, ErrorKind, MemorySource, NoProgress, TensorInfo, TensorSource, Value};

fn write(src: &dyn TensorSource, target: TargetType) -> Vec<u8> {
    let planned = plan(src, target).unwrap();
    let kv = metadata_for(src, None, target, &planned);
    let mut out = Vec::new();
    let w = write_gguf(&mut out, src, kv, planned, &NoProgress).unwrap();
    assert_eq!(w.bytes, out.len() as u64);
    out
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn sample() -> MemorySource {
    let mut m = MemorySource::new();
    let w: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.037).collect();
    m.push_f32("w", vec![2, 32], &w).unwrap();
    m.push_f32("bias", vec![3], &[0.5, -1.25, 3.0]).unwrap();
    m.push(
        TensorInfo::new("h", DType::F16, vec![2]),
        vec![0x00, 0x3C, 0x00, 0xC0],
    )
    .unwrap();
    m.push(
        TensorInfo::new("ids", DType::I32, vec![2, 1]),
        [7i32, -9].iter().flat_map(|v| v.to_le_bytes()).collect(),
    )
    .unwrap();
    m.push(
        TensorInfo::new("d", DType::F64, vec![]),
        2.5f64.to_le_bytes().to_vec(),
    )
    .unwrap();
    m.metadata_mut().insert("note".into(), "hello".into());
    m.values_mut().insert("epoch".into(), Value::Int(3));
    m
}

#[test]
fn plain_tensors_metadata_and_values_round_trip() {
    let m = sample();
    let bytes = write(&m, TargetType::Keep);
    let f = GgufFile::from_bytes(bytes.clone()).unwrap();
    assert_eq!(f.tensors(), m.tensors());
    for i in 0..m.tensors().len() {
        assert_eq!(f.tensor_bytes(i).unwrap(), m.tensor_bytes(i).unwrap());
    }
    assert_eq!(f.header().tensors[0].ne, vec![32, 2]);
    assert_eq!(
        f.header().get("note"),
        Some(&MetaValue::Str("hello".into()))
    );
    assert_eq!(f.values().get("epoch"), Some(&Value::Int(3)));
    assert!(!f.metadata().contains_key("tantra.values"));
    assert_eq!(write(&f, TargetType::Keep), bytes, "deterministic");
}

#[test]
fn f16_and_bf16_round_to_nearest_even() {
    let mut m = MemorySource::new();
    // 1 + 2^-11 is halfway between two halves: ties to even gives 1.0.
    m.push_f32("x", vec![2], &[1.0 + f32::powi(2.0, -11), 3.0])
        .unwrap();
    let f = GgufFile::from_bytes(write(&m, TargetType::F16)).unwrap();
    assert_eq!(f.header().tensors[0].ty, GgmlType::F16);
    assert_eq!(&*f.tensor_bytes(0).unwrap(), &[0x00, 0x3C, 0x00, 0x42]);
    let f = GgufFile::from_bytes(write(&m, TargetType::BF16)).unwrap();
    assert_eq!(f.header().tensors[0].ty, GgmlType::BF16);
    assert_eq!(&*f.tensor_bytes(0).unwrap(), &[0x80, 0x3F, 0x40, 0x40]);
}

#[test]
fn quantizes_whole_rows_of_matrices_only() {
    let m = sample();
    for (target, ty) in [
        (TargetType::Q8_0, GgmlType::Q8_0),
        (TargetType::Q4_0, GgmlType::Q4_0),
    ] {
        let f = GgufFile::from_bytes(write(&m, target)).unwrap();
        let types: Vec<GgmlType> = f.header().tensors.iter().map(|t| t.ty).collect();
        // w quantized; 1-D bias and the F16 vector stored F32; ints as they are; f64 scalar F32.
        assert_eq!(
            types,
            vec![
                ty,
                GgmlType::F32,
                GgmlType::F32,
                GgmlType::I32,
                GgmlType::F32
            ]
        );
        let x = f32s(&m.tensor_bytes(0).unwrap());
        let mut q = Vec::new();
        assert!(quantize(ty, &x, &mut q));
        assert_eq!(f.raw_bytes(0).unwrap(), &q[..]);
        assert_eq!(
            f.header().get("general.quantization_version"),
            Some(&MetaValue::U32(2))
        );
        assert_eq!(f32s(&f.tensor_bytes(2).unwrap()), vec![1.0, -2.0]);
    }
    // A row of 30 is not whole blocks: F32.
    let mut m = MemorySource::new();
    m.push_f32("odd", vec![1, 30], &[0.5; 30]).unwrap();
    let f = GgufFile::from_bytes(write(&m, TargetType::Q8_0)).unwrap();
    assert_eq!(f.header().tensors[0].ty, GgmlType::F32);
}

#[test]
fn refuses_what_gguf_cannot_hold() {
    let mut m = MemorySource::new();
    m.push(TensorInfo::new("b", DType::Bool, vec![1]), vec![1])
        .unwrap();
    assert!(matches!(
        plan(&m, TargetType::Keep),
        Err(GgufError::UnsupportedDType { .. })
    ));
    let mut m = MemorySource::new();
    m.push_f32("r5", vec![1, 1, 1, 1, 1], &[1.0]).unwrap();
    assert!(matches!(
        plan(&m, TargetType::Keep),
        Err(GgufError::RankTooHigh { rank: 5, .. })
    ));
    let mut m = MemorySource::new();
    m.push_f32("n".repeat(64), vec![1], &[1.0]).unwrap();
    assert!(matches!(
        plan(&m, TargetType::Keep),
        Err(GgufError::NameTooLong { len: 64, .. })
    ));
}

#[test]
fn convert_writes_verifies_and_reports_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let mut m = MemorySource::new();
    let x: Vec<f32> = (0..256)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 64.0)
        .collect();
    m.push_f32("w", vec![4, 64], &x).unwrap();
    let mut st = Vec::new();
    tantra_formats::safetensors::write_safetensors(&mut st, &m, &NoProgress).unwrap();
    std::fs::write(&input, st).unwrap();

    let out = dir.path().join("out.gguf");
    let opts = GgufOptions {
        target: TargetType::Q4_0,
        force: false,
        verify: true,
        ..Default::default()
    };
    let r = convert_to_gguf(&input, &out, &opts, &NoProgress).unwrap();
    assert!(r.verified);
    assert_eq!(r.types.get("Q4_0"), Some(&1));
    assert_eq!(r.error.tensors, 1);
    assert!(
        r.error.max_abs > 0.0 && r.error.max_abs < 0.2,
        "{:?}",
        r.error
    );
    assert!(
        r.error.relative > 0.0 && r.error.relative < 0.2,
        "{:?}",
        r.error
    );
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(f.header().tensors[0].ty, GgmlType::Q4_0);

    // An existing output is kept without force.
    let e = convert_to_gguf(&input, &out, &opts, &NoProgress).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::Exists));

    // And back: GGUF in, GGUF out keeps the typed metadata.
    let again = dir.path().join("again.gguf");
    let opts = GgufOptions {
        target: TargetType::Keep,
        force: false,
        verify: true,
        ..Default::default()
    };
    convert_to_gguf(&out, &again, &opts, &NoProgress).unwrap();
    let g = GgufFile::open(&again).unwrap();
    assert_eq!(g.header().tensors[0].ty, GgmlType::F32);
    assert_eq!(g.tensor_bytes(0).unwrap(), f.tensor_bytes(0).unwrap());
}

/// The input a 10-minute fuzz run of `fuzz/fuzz_targets/gguf.rs` stopped on (the harness
/// compared two reads with `==`, which a NaN never passes): a file with no tensors whose
/// metadata holds an F32 array of three NaNs with a payload (`0xffffffff`). It reads the same
/// twice and writes, as the fuzz target goes on to check, with the NaNs' bits kept.
#[test]
fn nan_metadata_reads_and_writes_with_its_bits() {
    #[rustfmt::skip]
    const FOUND: [u8; 156] = [
    0x47, 0x47, 0x55, 0x46, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x67, 0x65, 0x6e, 0x65, 0x72, 0x61, 0x6c, 0x2e, 0x61, 0x72, 0x63, 0x68, 0x69, 0x74, 0x65, 0x63,
    0x74, 0x75, 0x72, 0x65, 0x08, 0x00, 0x00, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x74, 0x72, 0x74, 0x61, 0x65, 0x2c, 0x61, 0x74, 0x6e, 0x73, 0x74, 0x0e, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x74, 0x61, 0x6e, 0x74, 0x72, 0x61, 0x2e, 0x66, 0x69, 0x78, 0x74, 0x01, 0x00,
    0x00, 0x09, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x64, 0x65, 0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x2e, 0x71, 0x32, 0x3d, 0x64, 0x65, 0x71,
    0x2e, 0x71, 0x33, 0x5f, 0x30, 0x65, 0x63, 0x65, 0xe7, 0xe7, 0xee, 0xe7,
    ];
    let a = parse_header(&FOUND).unwrap();
    let b = GgufFile::from_bytes(FOUND.to_vec()).unwrap();
    assert_ne!(&a, b.header(), "NaN != NaN");
    assert_eq!(format!("{a:?}"), format!("{:?}", b.header()));
    let key = "tantra.fixt\u{1}\0\0";
    let bits =
        |h: &tantra_formats::gguf::Header| match &h.kv.iter().find(|(k, _)| k == key).unwrap().1 {
            MetaValue::Array(MetaArray::F32(v)) => {
                v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
    assert_eq!(
        bits(&a),
        [0xff3f_6564, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff]
    );
    let planned = plan(&b, TargetType::Keep).unwrap();
    let kv = metadata_for(&b, Some(&b.header().kv), TargetType::Keep, &planned);
    let mut out = Vec::new();
    write_gguf(&mut out, &b, kv, planned, &NoProgress).unwrap();
    let back = GgufFile::from_bytes(out).unwrap();
    assert_eq!(bits(back.header()), bits(&a));
    assert!(back.tensors().is_empty());
}
