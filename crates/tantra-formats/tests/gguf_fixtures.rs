//! GGUF files written by llama.cpp's own tools (`fixtures/gguf/`): tantra reads them with the
//! right metadata, dequantizes bit-for-bit like the `gguf` Python package, and its quantizers
//! produce the bytes of ggml's reference quantizers. How each file was made:
//! `fixtures/gguf/README.md`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use tantra_formats::gguf::quant::{dequantize, quantize};
use tantra_formats::gguf::{GgmlType, GgufFile, MetaValue};
use tantra_formats::TensorSource;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/gguf")
        .join(name)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn index(f: &GgufFile, name: &str) -> usize {
    f.find(name).unwrap_or_else(|| panic!("no tensor {name}"))
}

#[test]
fn dequantization_matches_gguf_py_bit_for_bit() {
    let f = GgufFile::open(&fixture("quants_gguf_py.gguf")).unwrap();
    let mut checked = 0;
    for ty in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let name = format!("deq.{}", ty.name().to_ascii_lowercase());
        let i = index(&f, &name);
        assert_eq!(f.header().tensors[i].ty, ty);
        let want = f32s(&f.tensor_bytes(index(&f, &format!("{name}.f32"))).unwrap());
        let got = f32s(&f.tensor_bytes(i).unwrap());
        assert_eq!(got.len(), 512);
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "{ty} element {k}: {g} != {w}");
        }
        // The streamed path (pieces of blocks) gives the same bytes.
        let mut streamed = Vec::new();
        f.stream_tensor(i, &mut |c| {
            streamed.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(f32s(&streamed), got);
        checked += 1;
    }
    assert_eq!(checked, 10);
}

#[test]
fn quantizers_match_ggml_reference_bytes() {
    let f = GgufFile::open(&fixture("quants_gguf_py.gguf")).unwrap();
    let x = f32s(&f.tensor_bytes(index(&f, "qin")).unwrap());
    for (ty, name) in [(GgmlType::Q8_0, "qin.q8_0"), (GgmlType::Q4_0, "qin.q4_0")] {
        let want = f.raw_bytes(index(&f, name)).unwrap();
        let mut got = Vec::new();
        assert!(quantize(ty, &x, &mut got));
        assert_eq!(got.len(), want.len(), "{ty}");
        for (b, (g, w)) in got
            .chunks(ty.type_size() as usize)
            .zip(want.chunks(ty.type_size() as usize))
            .enumerate()
        {
            assert_eq!(g, w, "{ty} block {b}");
        }
        let mut back = Vec::new();
        assert!(dequantize(ty, &got, &mut back));
        assert_eq!(back.len(), x.len());
    }
}

#[test]
fn reads_gguf_py_metadata() {
    let f = GgufFile::open(&fixture("quants_gguf_py.gguf")).unwrap();
    let h = f.header();
    assert_eq!(h.version, 3);
    assert_eq!(h.architecture(), Some("tantra-test"));
    assert_eq!(
        h.get("tantra.fixture"),
        Some(&MetaValue::Str("quants".into()))
    );
}
