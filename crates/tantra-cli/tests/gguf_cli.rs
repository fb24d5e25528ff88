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

/// `export-gguf --type q8_0` of the transformers fixture `hf_mamba_tiny` (width 32: every
/// matrix but `dt_proj` is whole 32-element blocks, so Q8_0; `sample_small`'s width 152 is
/// not), imported into a fresh root; the file's path.
fn q8_0_export(root: &std::path::Path) -> std::path::PathBuf {
    let hf = fixtures().join("hf_mamba_tiny/safetensors");
    ok(&tantra(
        root,
        &["import-hf", s(&hf), "--model", "mamba", "--version", "tiny"],
    ));
    let out = root.join("q8.gguf");
    ok(&tantra(
        root,
        &["export-gguf", "--type", "q8_0", "mamba:tiny", s(&out)],
    ));
    let j = ok_json(&tantra_bare(&["inspect", "--json", s(&out)]));
    let q8 = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["gguf_type"] == "Q8_0")
        .count();
    assert_eq!(
        q8, 7,
        "embeddings, in_proj, x_proj and out_proj of 2 layers"
    );
    out
}

/// The logits of every prompt position of `run FILE --dtype DTYPE`.
fn prompt_logits(file: &std::path::Path, dtype: &str) -> (J, Vec<f32>) {
    let j = ok_json(&tantra_bare(&[
        "run",
        s(file),
        "--dtype",
        dtype,
        "--input-ids",
        "7,11,3,9,1",
        "--max-new-tokens",
        "4",
        "--dump-logits",
        "--json",
    ]));
    let logits = j["prompt_logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    (j, logits)
}

/// `tantra run FILE.gguf --dtype q8` on a Q8_0 export: runs on the file's blocks, with prompt
/// logits finite and close to those of the same file at f32 (its dequantized values).
#[test]
fn a_q8_0_gguf_runs_at_q8() {
    let root = tempfile::tempdir().unwrap();
    let out = q8_0_export(root.path());
    let (q8, lq) = prompt_logits(&out, "q8");
    let (f32j, lf) = prompt_logits(&out, "f32");
    assert_eq!(q8["dtype"], "q8");
    assert_eq!(f32j["dtype"], "f32");
    // The prompt's 5 ids and 4 new ones; 64 logits a position.
    assert_eq!(q8["output_ids"].as_array().unwrap().len(), 9);
    assert_eq!(lq.len(), 5 * 64);
    assert_eq!(lq.len(), lf.len());
    assert!(lq.iter().all(|v| v.is_finite()));
    let max_ref = lf.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let max_abs = lq
        .iter()
        .zip(&lf)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "q8 against f32 on the same Q8_0 file: max abs {max_abs:.3e}, rel {:.3e}",
        max_abs / max_ref
    );
    // Only the activations are quantized on top of the file's weights: measured rel 3.4e-3
    // (max abs 1.1e-2); the bound is about 6x.
    assert!(
        max_abs > 0.0 && max_abs <= 2e-2 * max_ref,
        "{max_abs} of {max_ref}"
    );
}

/// Position of tensor `name`'s `ne` in a GGUF header (after its name and `n_dims`).
fn ne_offset(bytes: &[u8], name: &str) -> usize {
    let at = bytes
        .windows(name.len())
        .position(|w| w == name.as_bytes())
        .unwrap();
    at + name.len() + 4
}

fn put_u64(bytes: &mut [u8], at: usize, v: u64) {
    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A broken Q8_0 file is refused at q8 with an error that names the file and what is wrong:
/// cut short, a Q8_0 row that is not whole blocks, a matrix of the wrong shape.
#[test]
fn a_broken_q8_0_gguf_is_refused_naming_file_and_tensor() {
    let root = tempfile::tempdir().unwrap();
    let out = q8_0_export(root.path());
    let bytes = std::fs::read(&out).unwrap();
    let run = |path: &std::path::Path| {
        tantra_bare(&[
            "run",
            s(path),
            "--dtype",
            "q8",
            "--input-ids",
            "7",
            "--max-new-tokens",
            "1",
        ])
    };

    let cut = root.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let o = run(&cut);
    fails_with(&o, "cut.gguf");
    fails_with(&o, "past the end of the file");

    // blk.0.ssm_in.weight is [128, 32] in torch order: ne = [32, 128]; a row of 48 is not
    // whole 32-element blocks.
    let rows = root.path().join("rows.gguf");
    let mut b = bytes.clone();
    let ne = ne_offset(&b, "blk.0.ssm_in.weight");
    put_u64(&mut b, ne, 48);
    std::fs::write(&rows, &b).unwrap();
    let o = run(&rows);
    fails_with(&o, "rows.gguf");
    fails_with(&o, "blk.0.ssm_in.weight");
    fails_with(&o, "not a multiple of Q8_0's block of 32");

    // blk.0.ssm_out.weight is [32, 64]: ne = [64, 32]; swapped, the bytes still fit but the
    // shape is not the config's.
    let shape = root.path().join("shape.gguf");
    let mut b = bytes.clone();
    let ne = ne_offset(&b, "blk.0.ssm_out.weight");
    put_u64(&mut b, ne, 32);
    put_u64(&mut b, ne + 8, 64);
    std::fs::write(&shape, &b).unwrap();
    let o = run(&shape);
    fails_with(&o, "shape.gguf");
    fails_with(&o, "backbone.layers.0.mixer.out_proj.weight");
}
