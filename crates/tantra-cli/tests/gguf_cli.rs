#![allow(clippy::unwrap_used, clippy::expect_used)]
//! GGUF through the commands a user runs: `inspect` shows ggml types and summarized metadata,
//! `convert` writes GGUF (plain and quantized) and reads it back, `diff` compares across
//! formats, `export-gguf` writes a registered Mamba, and `run` runs a llama.cpp Mamba GGUF.

use serde_json::Value as J;

mod common;

use common::{create_samples, fails_with, fixtures, ok, ok_json, s, tantra, tantra_bare};

#[test]
fn inspect_shows_ggml_types_and_summarizes_long_arrays() {
    let q8 = fixtures().join("gguf/mamba_tiny_q8_0.gguf");
    let j = ok_json(&tantra_bare(&["inspect", "--json", "--hash", s(&q8)]));
    assert_eq!(j["format"], "gguf");
    let emb = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "token_embd.weight")
        .unwrap();
    assert_eq!(emb["gguf_type"], "Q8_0");
    assert_eq!(emb["dtype"], "F32");
    assert_eq!(emb["shape"], serde_json::json!([64, 32]));
    let merges = j["metadata"]["tokenizer.ggml.merges"].as_str().unwrap();
    assert!(merges.starts_with("[50009 x string: "), "{merges}");
    let table = ok(&tantra_bare(&["inspect", s(&q8)]));
    assert!(table.contains("gguf type"), "{table}");
    assert!(table.contains("general.architecture = mamba"), "{table}");
}

#[test]
fn convert_to_gguf_and_back_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let st = fixtures().join("hf_mamba_tiny/safetensors/model.safetensors");
    let plain = dir.path().join("plain.gguf");
    ok(&tantra_bare(&["convert", s(&st), s(&plain)]));
    // Lossless: diff says identical.
    let out = tantra_bare(&["diff", s(&st), s(&plain)]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let q4 = dir.path().join("q4.gguf");
    let j = ok_json(&tantra_bare(&[
        "convert",
        "--type",
        "q4_0",
        "--json",
        s(&st),
        s(&q4),
    ]));
    assert_eq!(j["output_format"], "gguf");
    assert_eq!(j["verified"], true);
    assert_eq!(j["tensor_types"]["Q4_0"], 7);
    let err = j["max_abs_error"].as_f64().unwrap();
    assert!(err > 0.0 && err < 0.1, "{err}");
    let back = dir.path().join("back.safetensors");
    ok(&tantra_bare(&["convert", s(&q4), s(&back)]));
    let out = tantra_bare(&["diff", "--json", s(&st), s(&back)]);
    assert_eq!(out.status.code(), Some(1));
    let d: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["values_differ"].as_array().unwrap().len(), 7);

    // --type belongs to GGUF output.
    fails_with(
        &tantra_bare(&[
            "convert",
            "--type",
            "q8_0",
            s(&st),
            s(&dir.path().join("x.pt")),
        ]),
        "GGUF output only",
    );
}

#[test]
fn hostile_gguf_is_refused_with_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.gguf");
    let mut b = b"GGUF".to_vec();
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    std::fs::write(&bad, b).unwrap();
    fails_with(&tantra_bare(&["inspect", s(&bad)]), "more than the");
}

#[test]
fn export_gguf_writes_a_mamba_that_runs() {
    let root = tempfile::tempdir().unwrap();
    create_samples(root.path(), "mamba", "safetensors");
    let out = root.path().join("m.gguf");
    ok(&tantra(root.path(), &["export-gguf", "mamba", s(&out)]));
    let j = ok_json(&tantra_bare(&["inspect", "--json", s(&out)]));
    assert_eq!(j["metadata"]["general.architecture"], "mamba");
    assert_eq!(j["metadata"]["mamba.vocab_size"], "264");
    let a = ok_json(&tantra(
        root.path(),
        &[
            "run",
            "mamba",
            "--input-ids",
            "72,101,108",
            "--max-new-tokens",
            "8",
            "--json",
        ],
    ));
    let b = ok_json(&tantra_bare(&[
        "run",
        s(&out),
        "--input-ids",
        "72,101,108",
        "--max-new-tokens",
        "8",
        "--json",
    ]));
    assert_eq!(a["output_ids"], b["output_ids"]);
}
