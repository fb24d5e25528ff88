//! The model commands (`create-sample-weights`, `export-hf`, `import-hf`) driven as a user
//! drives them, in temporary roots.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{create_samples, fixtures, ok, ok_json, registry, stderr, tantra};
use serde_json::Value as J;

/// The content digest the store recorded for (model, version).
fn content(root: &Path, model: &str, version: &str) -> String {
    registry(root)["models"][model]["versions"][version]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn create_sample_weights_prints_the_statistics_table() {
    let root = tempfile::tempdir().unwrap();
    let out = create_samples(root.path(), "ocr_native,mamba", "safetensors,pt");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("model"), "{out}");
    assert!(lines[0].contains("parameters") && lines[0].contains("safetensors"));
    assert!(!lines[0].contains("bin"), "{out}");
    assert!(
        lines[1].starts_with("ocr_native") && lines[1].contains("703,080"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("mamba") && lines[2].contains("686,584"),
        "{out}"
    );
    assert!(root
        .path()
        .join("weights/mamba_sample_small_pt.pt")
        .is_file());
    assert!(root
        .path()
        .join("configs/ocr_native/sample_small.json")
        .is_file());

    // Again: nothing changes, and the same seed keeps the same content.
    let before = content(root.path(), "mamba", "sample_small");
    ok(&tantra(
        root.path(),
        &["create-sample-weights", "--models", "mamba"],
    ));
    assert_eq!(content(root.path(), "mamba", "sample_small"), before);

    // Another seed is other weights: refused without --force.
    let out = tantra(
        root.path(),
        &["create-sample-weights", "--models", "mamba", "--seed", "7"],
    );
    assert!(!out.status.success());

    let bad = tantra(root.path(), &["create-sample-weights", "--models", "llama"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("unknown model"));
}

#[test]
fn export_then_import_round_trips() {
    let root = tempfile::tempdir().unwrap();
    create_samples(root.path(), "mamba", "safetensors");
    let out_dir = tempfile::tempdir().unwrap();
    let hf = out_dir.path().join("hf");
    let hf_s = hf.to_str().unwrap();
    let out = ok(&tantra(
        root.path(),
        &["export-hf", "mamba:sample_small", hf_s],
    ));
    assert!(out.contains("exported mamba:sample_small"), "{out}");
    assert!(hf.join("config.json").is_file() && hf.join("model.safetensors").is_file());

    let sharded = out_dir.path().join("sharded");
    let sharded_s = sharded.to_str().unwrap();
    ok(&tantra(
        root.path(),
        &["export-hf", "mamba", sharded_s, "--shard-size", "1MB"],
    ));
    assert!(sharded.join("model.safetensors.index.json").is_file());
    // Existing files are not overwritten without --force.
    assert!(!tantra(
        root.path(),
        &["export-hf", "mamba", sharded_s, "--shard-size", "1MB"]
    )
    .status
    .success());

    ok(&tantra(
        root.path(),
        &["import-hf", hf_s, "--model", "mamba", "--version", "back"],
    ));
    ok(&tantra(
        root.path(),
        &[
            "import-hf",
            sharded_s,
            "--model",
            "mamba",
            "--version",
            "back_sharded",
            "--formats",
            "safetensors,bin",
        ],
    ));
    let original = content(root.path(), "mamba", "sample_small");
    assert_eq!(content(root.path(), "mamba", "back"), original);
    assert_eq!(content(root.path(), "mamba", "back_sharded"), original);
    assert!(root.path().join("configs/mamba/back.json").is_file());

    let other = tantra(root.path(), &["export-hf", "ocr_native", hf_s]);
    assert!(!other.status.success());
}

#[test]
fn fixture_safetensors_and_pytorch_import_to_the_same_weights() {
    let root = tempfile::tempdir().unwrap();
    let st = fixtures().join("hf_mamba_tiny/safetensors");
    let pt = fixtures().join("hf_mamba_tiny/pytorch");
    let rep = ok_json(&tantra(
        root.path(),
        &[
            "import-hf",
            st.to_str().unwrap(),
            "--model",
            "mamba",
            "--version",
            "tiny_st",
            "--json",
        ],
    ));
    assert_eq!(rep["model"], "mamba");
    assert_eq!(rep["version"], "tiny_st");
    assert_eq!(rep["from"], st.to_str().unwrap());
    assert_eq!(rep["files"][0]["format"], "safetensors");
    assert_eq!(rep["files"][0]["action"], "added");
    assert_eq!(rep["dropped_tied_head"], false);
    // Recorded as imported from the directory, not as generated.
    let source = &registry(root.path())["models"]["mamba"]["versions"]["tiny_st"]["formats"]
        ["safetensors"]["source"];
    assert_eq!(
        *source,
        serde_json::json!({"kind": "imported", "from": st.to_str().unwrap()})
    );
    ok(&tantra(
        root.path(),
        &[
            "import-hf",
            pt.to_str().unwrap(),
            "--model",
            "mamba",
            "--version",
            "tiny_pt",
        ],
    ));
    assert_eq!(
        content(root.path(), "mamba", "tiny_st"),
        content(root.path(), "mamba", "tiny_pt")
    );
    // The imported config keeps transformers' extra fields.
    let cfg: J = serde_json::from_str(
        &std::fs::read_to_string(root.path().join("configs/mamba/tiny_pt.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["transformers_version"], "5.24.0");
    assert_eq!(cfg["time_step_rank"], 2);
}
