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

fn safetensors_fixture() -> tantra_formats::safetensors::SafetensorsFile {
    tantra_formats::safetensors::SafetensorsFile::open(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/hf_mamba_tiny/safetensors/model.safetensors"),
    )
    .unwrap()
}

/// `convert_hf_to_gguf.py --outtype f32` of `fixtures/hf_mamba_tiny`: llama.cpp's Mamba keys and
/// names, the weights unchanged (but `A = -exp(A_log)`).
#[test]
fn reads_llama_cpp_mamba_conversion() {
    let f = GgufFile::open(&fixture("mamba_tiny_f32.gguf")).unwrap();
    let h = f.header();
    assert_eq!(h.version, 3);
    assert_eq!(h.architecture(), Some("mamba"));
    let u = |k: &str| h.get(k).and_then(MetaValue::as_u64);
    assert_eq!(u("mamba.block_count"), Some(2));
    assert_eq!(u("mamba.embedding_length"), Some(32));
    assert_eq!(u("mamba.ssm.inner_size"), Some(64));
    assert_eq!(u("mamba.ssm.state_size"), Some(8));
    assert_eq!(u("mamba.ssm.conv_kernel"), Some(4));
    assert_eq!(u("mamba.ssm.time_step_rank"), Some(2));
    assert_eq!(u("mamba.context_length"), Some(1 << 20));
    assert_eq!(u("general.file_type"), Some(0));
    assert_eq!(
        h.get("mamba.attention.layer_norm_rms_epsilon"),
        Some(&MetaValue::F32(1e-5))
    );
    assert_eq!(
        h.get("tokenizer.ggml.model").and_then(MetaValue::as_str),
        Some("gpt2")
    );
    match h.get("tokenizer.ggml.tokens") {
        Some(MetaValue::Array(a)) => assert_eq!(a.len(), 64),
        other => panic!("tokens: {other:?}"),
    }
    assert_eq!(f.tensors().len(), 22);
    assert!(h.tensors.iter().all(|t| t.ty == GgmlType::F32));

    let st = safetensors_fixture();
    let same = |gguf: &str, hf: &str| {
        let a = f.tensor_bytes(index(&f, gguf)).unwrap();
        let b = st.tensor_bytes(st.find(hf).unwrap()).unwrap();
        assert_eq!(a, b, "{gguf} vs {hf}");
    };
    same("token_embd.weight", "backbone.embeddings.weight");
    same(
        "blk.1.ssm_in.weight",
        "backbone.layers.1.mixer.in_proj.weight",
    );
    same(
        "blk.0.ssm_conv1d.weight",
        "backbone.layers.0.mixer.conv1d.weight",
    );
    same("output_norm.weight", "backbone.norm_f.weight");
    let e = index(&f, "token_embd.weight");
    assert_eq!(h.tensors[e].ne, vec![32, 64]);
    assert_eq!(f.tensors()[e].shape, vec![64, 32]);
    let conv = index(&f, "blk.0.ssm_conv1d.weight");
    assert_eq!(f.tensors()[conv].shape, vec![64, 4]);
    let a = f32s(&f.tensor_bytes(index(&f, "blk.0.ssm_a")).unwrap());
    let a_log = f32s(
        &st.tensor_bytes(st.find("backbone.layers.0.mixer.A_log").unwrap())
            .unwrap(),
    );
    for (x, l) in a.iter().zip(&a_log) {
        assert!((x + l.exp()).abs() <= 1e-6 * l.exp(), "{x} vs -exp({l})");
    }
}

/// The values of tensor `i` as f32 (F16 widened), as gguf-py's `dequantize` gives them.
fn values(f: &GgufFile, i: usize) -> Vec<f32> {
    let b = f.tensor_bytes(i).unwrap();
    match f.tensors()[i].dtype {
        tantra_formats::DType::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => f32s(&b),
    }
}

/// `llama-quantize --pure` (Q8_0, Q4_0) of the Mamba conversion: every tensor dequantizes to
/// gguf-py's values (SHA-256 of the f32 bytes), and tantra's quantizers, run on the F32
/// conversion, give llama-quantize's bytes.
#[test]
fn reads_llama_quantize_output_and_matches_its_bytes() {
    use sha2::Digest;
    let text = std::fs::read_to_string(fixture("mamba_tiny_expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let f32_file = GgufFile::open(&fixture("mamba_tiny_f32.gguf")).unwrap();
    for (file, ty) in [
        ("mamba_tiny_q8_0.gguf", GgmlType::Q8_0),
        ("mamba_tiny_q4_0.gguf", GgmlType::Q4_0),
    ] {
        let f = GgufFile::open(&fixture(file)).unwrap();
        let h = f.header();
        assert_eq!(h.architecture(), Some("mamba"));
        assert_eq!(
            h.get("general.quantization_version"),
            Some(&MetaValue::U32(2))
        );
        let want = expected[file].as_object().unwrap();
        assert_eq!(want.len(), f.tensors().len());
        let mut quantized = 0;
        for (i, t) in h.tensors.iter().enumerate() {
            let w = &want[&t.name];
            assert_eq!(w["type"], t.ty.name(), "{file} {}", t.name);
            let v = values(&f, i);
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            assert_eq!(
                hex::encode(sha2::Sha256::digest(&bytes)),
                w["sha256"].as_str().unwrap(),
                "{file} {}",
                t.name
            );
            if t.ty == ty {
                quantized += 1;
                let x = f32s(&f32_file.tensor_bytes(index(&f32_file, &t.name)).unwrap());
                let mut q = Vec::new();
                assert!(quantize(ty, &x, &mut q));
                assert!(
                    q == f.raw_bytes(i).unwrap(),
                    "{file} {}: bytes differ",
                    t.name
                );
            }
        }
        assert_eq!(quantized, 7, "{file}");
    }
}

/// `stored_blocks`/`stream_blocks` hand out llama-quantize's Q8_0 blocks exactly as the file
/// holds them, in any ranges, and nothing for other types; a range past the blocks and a plain
/// tensor are refused with errors that name the file and the tensor.
#[test]
fn q8_0_blocks_stream_as_stored() {
    use tantra_formats::{BlockLayout, StoredBlocks};
    let path = fixture("mamba_tiny_q8_0.gguf");
    let f = GgufFile::open(&path).unwrap();
    let mut q8 = 0;
    for (i, t) in f.header().tensors.iter().enumerate() {
        let Some(blocks) = f.stored_blocks(i) else {
            assert_ne!(t.ty, GgmlType::Q8_0, "{}", t.name);
            let err = f.stream_blocks(i, 0..0, &mut |_| Ok(())).unwrap_err();
            let msg = tantra_formats::chain(&err).to_string();
            assert!(msg.contains(&t.name), "{msg}");
            assert!(msg.contains("mamba_tiny_q8_0.gguf"), "{msg}");
            continue;
        };
        q8 += 1;
        assert_eq!(
            blocks,
            StoredBlocks {
                layout: BlockLayout::Q8_0,
                bytes: t.numel() / 32 * 34,
            }
        );
        let raw = f.raw_bytes(i).unwrap();
        // Whole, and in ranges that cut blocks.
        for step in [blocks.bytes, 100, 7] {
            let mut got = Vec::new();
            let mut pos = 0;
            while pos < blocks.bytes {
                let end = (pos + step).min(blocks.bytes);
                f.stream_blocks(i, pos..end, &mut |c| {
                    got.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
                pos = end;
            }
            assert!(got == raw, "{} in steps of {step}", t.name);
        }
        let err = f
            .stream_blocks(i, 0..blocks.bytes + 1, &mut |_| Ok(()))
            .unwrap_err();
        let msg = tantra_formats::chain(&err).to_string();
        assert!(
            msg.contains(&t.name) && msg.contains("mamba_tiny_q8_0.gguf"),
            "{msg}"
        );
    }
    assert_eq!(q8, 7);
}
