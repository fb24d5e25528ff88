#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The format commands (`inspect`, `convert`, `diff`, `scan`) driven as a user drives them,
//! against files written by real PyTorch, safetensors and transformers.

use std::path::{Path, PathBuf};

use serde_json::Value as J;

mod common;

use common::{fixtures, ok, ok_json as stdout_json, tantra_bare as tantra};

fn inspect_hash(path: &Path) -> J {
    stdout_json(&tantra(&[
        "inspect",
        "--json",
        "--hash",
        path.to_str().unwrap(),
    ]))
}

/// `(name, dtype, shape, sha256)` sorted by name.
fn tensor_table(j: &J) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = j["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["dtype"].as_str().unwrap().to_string(),
                t["shape"].to_string(),
                t["sha256"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn expected() -> Vec<J> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str::<J>(&text)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn fixture_path(file: &str) -> PathBuf {
    for dir in ["torch", "malicious"] {
        let p = fixtures().join(dir).join(file);
        if p.exists() {
            return p;
        }
    }
    panic!("fixture {file} not found");
}

#[test]
fn every_expected_fixture_inspects_to_its_digests_or_is_refused() {
    for e in expected() {
        let file = e["file"].as_str().unwrap();
        let path = fixture_path(file);
        if e["refuse"].as_bool() == Some(true) {
            let out = tantra(&["inspect", "--json", "--hash", path.to_str().unwrap()]);
            assert_eq!(out.status.code(), Some(2), "{file} must be refused");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains(file),
                "{file}: error must name the file: {err}"
            );
            assert!(
                out.stdout.is_empty(),
                "{file}: nothing on stdout when refused"
            );
            continue;
        }
        let got = inspect_hash(&path);
        let want: Vec<_> = {
            let mut v: Vec<_> = e["tensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap().to_string(),
                        t["dtype"].as_str().unwrap().to_string(),
                        t["shape"].to_string(),
                        t["sha256"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(tensor_table(&got), want, "{file}");
        if let Some(scalars) = e["scalars"].as_object() {
            for (k, v) in scalars {
                assert_eq!(&got["values"][k], v, "{file}: value {k}");
            }
        }
        if let Some(meta) = e["metadata"].as_object() {
            for (k, v) in meta {
                assert_eq!(&got["metadata"][k], v, "{file}: metadata {k}");
            }
        }
        let params: u64 = want
            .iter()
            .map(|(_, _, s, _)| {
                serde_json::from_str::<Vec<u64>>(s)
                    .unwrap()
                    .iter()
                    .product::<u64>()
            })
            .sum();
        assert_eq!(got["parameters"].as_u64(), Some(params), "{file}");
        assert_eq!(
            got["bytes"].as_u64(),
            Some(std::fs::metadata(&path).unwrap().len())
        );
    }
}

#[test]
fn formats_are_named_as_the_contract_says() {
    let cases = [
        ("torch/all_dtypes.safetensors", "safetensors"),
        ("torch/all_dtypes.pt", "pytorch-zip"),
        ("torch/all_dtypes_legacy.pt", "pytorch-legacy"),
        ("torch/plain_dict.bin", "pytorch-zip"),
    ];
    for (file, format) in cases {
        let j = inspect_hash(&fixtures().join(file));
        assert_eq!(j["format"], format, "{file}");
    }
}

#[test]
fn hf_mamba_tiny_reads_in_both_forms_with_the_same_tensors() {
    let st = inspect_hash(&fixtures().join("hf_mamba_tiny/safetensors/model.safetensors"));
    let pt = inspect_hash(&fixtures().join("hf_mamba_tiny/pytorch/pytorch_model.bin"));
    let st_t = tensor_table(&st);
    let pt_t = tensor_table(&pt);
    // The .bin carries the tied lm_head.weight; safetensors omits it.
    let pt_without_head: Vec<_> = pt_t
        .iter()
        .filter(|t| t.0 != "lm_head.weight")
        .cloned()
        .collect();
    assert_eq!(st_t, pt_without_head);
    let head = pt_t.iter().find(|t| t.0 == "lm_head.weight").unwrap();
    let emb = pt_t
        .iter()
        .find(|t| t.0 == "backbone.embeddings.weight")
        .unwrap();
    assert_eq!(head.3, emb.3, "tied head has the embeddings' digest");
}

#[test]
fn round_trip_safetensors_pt_bin_safetensors_keeps_every_digest() {
    let dir = tempfile::tempdir().unwrap();
    for src in [
        "torch/all_dtypes.safetensors",
        "torch/views.pt",
        "torch/checkpoint.pt",
        "hf_mamba_tiny/pytorch/pytorch_model.bin",
    ] {
        let input = fixtures().join(src);
        let original = inspect_hash(&input);
        let a = dir.path().join("a.safetensors");
        let b = dir.path().join("b.pt");
        let c = dir.path().join("c.bin");
        let d = dir.path().join("d.safetensors");
        let mut prev = input.clone();
        for next in [&a, &b, &c, &d] {
            let _ = std::fs::remove_file(next);
            let out = tantra(&["convert", prev.to_str().unwrap(), next.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{src} -> {}: {}",
                next.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let j = inspect_hash(next);
            assert_eq!(
                tensor_table(&j),
                tensor_table(&original),
                "{src} -> {}",
                next.display()
            );
            assert_eq!(
                j["values"],
                original["values"],
                "{src} -> {}",
                next.display()
            );
            prev = next.to_path_buf();
        }
        // Deterministic: converting the same input again gives the same bytes.
        let again = dir.path().join("again.safetensors");
        let out = tantra(&["convert", c.to_str().unwrap(), again.to_str().unwrap()]);
        assert!(out.status.success());
        assert_eq!(
            std::fs::read(&again).unwrap(),
            std::fs::read(&d).unwrap(),
            "{src}"
        );
        std::fs::remove_file(&again).unwrap();
    }
}

#[test]
fn convert_refuses_to_overwrite_and_leaves_no_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("torch/plain_dict.bin");
    let out_path = dir.path().join("out.safetensors");
    std::fs::write(&out_path, b"precious").unwrap();
    let out = tantra(&[
        "convert",
        input.to_str().unwrap(),
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out_path).unwrap(), b"precious");

    let out = tantra(&[
        "convert",
        "--force",
        input.to_str().unwrap(),
        out_path.to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(inspect_hash(&out_path)["format"], "safetensors");

    // A refused input leaves nothing behind, not even a temporary file.
    let bad = fixtures().join("malicious/zip_os_system.pt");
    let target = dir.path().join("bad.safetensors");
    let out = tantra(&["convert", bad.to_str().unwrap(), target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!target.exists());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only out.safetensors remains");
}

#[test]
fn convert_to_an_explicit_format_and_unknown_extension() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("torch/plain_dict.bin");
    let odd = dir.path().join("weights.data");
    let out = tantra(&["convert", input.to_str().unwrap(), odd.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--to"));
    let out = tantra(&[
        "convert",
        "--to",
        "pt",
        input.to_str().unwrap(),
        odd.to_str().unwrap(),
    ]);
    ok(&out);
    assert_eq!(inspect_hash(&odd)["format"], "pytorch-zip");
}

#[test]
fn diff_reports_identical_and_different_files() {
    let st = fixtures().join("hf_mamba_tiny/safetensors/model.safetensors");
    let pt = fixtures().join("hf_mamba_tiny/pytorch/pytorch_model.bin");
    let out = tantra(&["diff", "--json", st.to_str().unwrap(), pt.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let j: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["only_in_b"], serde_json::json!(["lm_head.weight"]));
    assert_eq!(j["values_differ"], serde_json::json!([]));

    let out = tantra(&["diff", st.to_str().unwrap(), st.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));

    let a = fixtures().join("torch/all_dtypes.pt");
    let b = fixtures().join("torch/all_dtypes_legacy.pt");
    let out = tantra(&["diff", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let j: J = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!j["values_differ"].as_array().unwrap().is_empty());
}

#[test]
fn not_weights_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let lfs = dir.path().join("model.safetensors");
    std::fs::write(
        &lfs,
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n",
    )
    .unwrap();
    let out = tantra(&["inspect", lfs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("git-lfs pointer"), "{err}");
    assert!(err.contains("model.safetensors"), "{err}");

    let missing = dir.path().join("nope.pt");
    let out = tantra(&["inspect", missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.pt"));
}

#[test]
fn scan_verdicts_and_exit_codes() {
    let safe = fixtures().join("torch/checkpoint.pt");
    let out = tantra(&["scan", "--json", safe.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j[0]["verdict"], "safe");

    for bad in ["os_system.pkl", "builtins_eval.pkl", "zip_os_system.pt"] {
        let p = fixtures().join("malicious").join(bad);
        let out = tantra(&[
            "scan",
            "--json",
            safe.to_str().unwrap(),
            p.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let j: J = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(j[0]["verdict"], "safe");
        assert_eq!(j[1]["verdict"], "unsafe", "{bad}");
    }
    let out = tantra(&[
        "scan",
        fixtures().join("malicious/os_system.pkl").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("system"));
}

#[test]
fn convert_select_and_strip_keep_the_model_of_a_checkpoint() {
    // torch.load of the output: {'weight': ckpt['model']['weight'], 'bias': ...} (checked
    // with torch 2.15).
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("torch/checkpoint.pt");
    let whole = inspect_hash(&input);
    for ext in ["pt", "safetensors"] {
        let out = dir.path().join(format!("infer.{ext}"));
        ok(&tantra(&[
            "convert",
            "--select",
            "model",
            "--strip",
            "model",
            input.to_str().unwrap(),
            out.to_str().unwrap(),
        ]));
        let j = inspect_hash(&out);
        let got = tensor_table(&j);
        let names: Vec<&str> = got.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(names, ["bias", "weight"]);
        for (name, dtype, shape, digest) in got {
            let orig = tensor_table(&whole)
                .into_iter()
                .find(|t| t.0 == format!("model.{name}"))
                .unwrap();
            assert_eq!((dtype, shape, digest), (orig.1, orig.2, orig.3));
        }
        assert_eq!(j["values"], serde_json::json!({}));
    }
    let out = tantra(&[
        "convert",
        "--select",
        "ema",
        input.to_str().unwrap(),
        dir.path().join("x.pt").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tensor is named \"ema\""));
}
