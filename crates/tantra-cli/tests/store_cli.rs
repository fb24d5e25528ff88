//! The weights-root commands (`register`, `list-weights`, `versions`, `set-default`, `tag`,
//! `remove`, `backups`, `restore`, `checkpoint`, `cleanup`, `verify`, `config`) driven as a
//! user drives them: the contract of their JSON output and exit codes.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::{Path, PathBuf};

use common::{assert_exit, bin, ok, ok_json, s, stderr, tantra, write_weights};
use serde_json::Value as J;
use tantra_formats::{MemorySource, OutputFormat};

fn weights(dir: &Path, seed: u32, format: OutputFormat) -> PathBuf {
    let mut m = MemorySource::new();
    let a: Vec<f32> = (0..12).map(|i| i as f32 + seed as f32).collect();
    m.push_f32("w", vec![3, 4], &a).unwrap();
    m.push_f32("b", vec![4], &a[..4]).unwrap();
    write_weights(
        &m,
        dir.join(format!("in{seed}.{}", format.extension())),
        format,
    )
}

#[test]
fn register_list_versions_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let f1 = weights(dir.path(), 1, OutputFormat::Pt);
    let out = tantra(
        &root,
        &[
            "register",
            s(&f1),
            "--model",
            "mamba",
            "--version",
            "sample_small",
            "--formats",
            "all",
            "--tag",
            "base",
            "--note",
            "n",
            "--json",
        ],
    );
    let rep = ok_json(&out);
    assert_eq!(rep["files"].as_array().unwrap().len(), 3);
    let rows = ok_json(&tantra(&root, &["list-weights", "--all-formats", "--json"]));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                "bytes",
                "created",
                "default",
                "format",
                "model",
                "parameters",
                "path",
                "sha256",
                "version"
            ]
        );
        let path = r["path"].as_str().unwrap();
        assert!(path.starts_with("weights/mamba_sample_small_"), "{path}");
        assert!(root.join(path).is_file());
        assert_eq!(r["default"], true);
        assert_eq!(r["parameters"], 16);
    }
    let formats: Vec<&str> = rows.iter().map(|r| r["format"].as_str().unwrap()).collect();
    assert_eq!(formats, vec!["safetensors", "pt", "bin"]);
    assert!(root.join("weights/mamba_sample_small_pt.pt").is_file());
    assert!(root.join("weights/mamba_sample_small_bin.bin").is_file());
    assert!(root
        .join("weights/mamba_sample_small_safetensors.safetensors")
        .is_file());

    // TANTRA_ROOT moves the root too.
    let via_env = bin()
        .args(["list-weights", "--all-formats", "--json", "--format", "pt"])
        .env("TANTRA_ROOT", &root)
        .output()
        .unwrap();
    assert_eq!(ok_json(&via_env).as_array().unwrap().len(), 1);

    let f2 = weights(dir.path(), 2, OutputFormat::Safetensors);
    let out = tantra(
        &root,
        &["register", s(&f2), "--model", "mamba", "--version", "full"],
    );
    ok(&out);
    let human = tantra(
        &root,
        &["list-weights", "--all-formats", "--model", "mamba"],
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.starts_with("model"), "{text}");
    assert!(text.contains("weights/mamba_full_safetensors.safetensors"));
    // By default one row per version, its formats in one column.
    let text = ok(&tantra(&root, &["ls", "--model", "mamba"]));
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains("safetensors,pt,bin"), "{text}");
    let v = ok_json(&tantra(&root, &["list", "--json"]));
    assert_eq!(v[1]["version"], "sample_small");
    assert_eq!(
        v[1]["formats"],
        serde_json::json!(["safetensors", "pt", "bin"])
    );

    assert!(tantra(&root, &["set-default", "mamba", "full"])
        .status
        .success());
    let v = ok_json(&tantra(&root, &["versions", "mamba", "--json"]));
    let v = v.as_array().unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["version"], "sample_small");
    assert_eq!(v[0]["default"], false);
    assert_eq!(v[0]["tags"], serde_json::json!(["base"]));
    assert_eq!(v[1]["default"], true);
    assert!(tantra(&root, &["tag", "mamba", "full", "prod"])
        .status
        .success());

    // Immutable versions: exit 2 with a message that says what to do.
    let out = tantra(
        &root,
        &["register", s(&f1), "--model", "mamba", "--version", "full"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    // Bad names never reach the file system.
    let out = tantra(
        &root,
        &["register", s(&f1), "--model", "../x", "--version", "v"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid model name"),
        "{}",
        stderr(&out)
    );
    let out = tantra(
        &root,
        &[
            "register",
            s(&f1),
            "--model",
            "m",
            "--version",
            "v",
            "--formats",
            "onnx",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn verify_remove_backups_restore_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let f1 = weights(dir.path(), 1, OutputFormat::Safetensors);
    let f2 = weights(dir.path(), 2, OutputFormat::Safetensors);
    for (f, v) in [(&f1, "a"), (&f2, "b")] {
        let out = tantra(
            &root,
            &[
                "register",
                s(f),
                "--model",
                "m",
                "--version",
                v,
                "--formats",
                "safetensors,pt",
            ],
        );
        ok(&out);
    }
    let out = tantra(&root, &["verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("all good"));

    // One changed byte: verify exits 1 and names the file; load-based commands refuse it.
    let target = root.join("weights/m_b_safetensors.safetensors");
    let mut bytes = std::fs::read(&target).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 1;
    std::fs::write(&target, &bytes).unwrap();
    let out = tantra(&root, &["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rep: J = serde_json::from_slice(&out.stdout).unwrap();
    let problems = rep["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["kind"], "changed");
    assert_eq!(problems[0]["path"], "weights/m_b_safetensors.safetensors");
    assert_eq!(tantra(&root, &["verify", "m:a"]).status.code(), Some(0));
    assert_eq!(tantra(&root, &["verify", "m:b"]).status.code(), Some(1));

    // Registering the pristine file again with --force repairs it (the changed file is
    // backed up first).
    let out = tantra(
        &root,
        &[
            "register",
            s(&f2),
            "--model",
            "m",
            "--version",
            "b",
            "--force",
            "--json",
        ],
    );
    let rep = ok_json(&out);
    assert_eq!(rep["files"][0]["format"], "safetensors");
    assert_eq!(rep["files"][0]["action"], "replaced");
    assert_eq!(rep["backups"].as_array().unwrap().len(), 1);
    assert_eq!(tantra(&root, &["verify"]).status.code(), Some(0));
    // Remove backs up; restore brings it back.
    let out = tantra(&root, &["remove", "m", "b", "--format", "pt", "--json"]);
    let rep = ok_json(&out);
    assert_eq!(rep["backups"].as_array().unwrap().len(), 1);
    assert!(!root.join("weights/m_b_pt.pt").exists());
    let backups = ok_json(&tantra(&root, &["backups", "--json"]));
    let b = backups.as_array().unwrap().last().unwrap().clone();
    assert_eq!(b["kind"], "weights");
    assert_eq!(b["original"], "weights/m_b_pt.pt");
    assert!(b["reason"].as_str().unwrap().contains("remove"));
    let id = b["id"].as_str().unwrap();
    let out = tantra(&root, &["restore", id]);
    ok(&out);
    assert!(root.join("weights/m_b_pt.pt").exists());
    let out = tantra(&root, &["remove", "m", "a"]);
    assert_eq!(out.status.code(), Some(2), "the default needs --force");
    assert!(tantra(&root, &["remove", "m", "a", "--force"])
        .status
        .success());

    // Cleanup: an orphan and a stale temp file; dry run first. The temp file is deleted (the
    // store's own, its writer gone); the orphan is not the store's, so it is moved to
    // quarantine/, never deleted.
    std::fs::write(root.join("weights/stray.pt"), vec![1u8; 1000]).unwrap();
    std::fs::write(root.join("weights/.tantra-tmp-x.tmp"), vec![1u8; 24]).unwrap();
    let no_grace = |args: &[&str]| {
        bin()
            .env("TANTRA_TEMP_GRACE", "0")
            .arg("--root")
            .arg(&root)
            .args(args)
            .output()
            .unwrap()
    };
    let out = no_grace(&["cleanup", "--orphans", "--dry-run", "--json"]);
    let plan = ok_json(&out);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["bytes"], 24);
    let items = plan["items"].as_array().unwrap();
    let mut actions: Vec<(String, String)> = items
        .iter()
        .map(|i| {
            (
                i["action"].as_str().unwrap().into(),
                i["path"].as_str().unwrap().into(),
            )
        })
        .collect();
    actions.sort();
    assert_eq!(
        actions,
        vec![
            ("delete".into(), "weights/.tantra-tmp-x.tmp".into()),
            ("quarantine".into(), "weights/stray.pt".into())
        ]
    );
    assert!(root.join("weights/stray.pt").exists());
    assert_eq!(tantra(&root, &["verify"]).status.code(), Some(1));
    let out = no_grace(&["cleanup"]);
    ok(&out);
    assert!(!root.join("weights/stray.pt").exists());
    assert!(!root.join("weights/.tantra-tmp-x.tmp").exists());
    let out = tantra(&root, &["verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let rep: J = serde_json::from_slice(&out.stdout).unwrap();
    let problems = rep["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0]["kind"], "quarantined");
    let kept = root.join(problems[0]["path"].as_str().unwrap());
    assert_eq!(std::fs::read(&kept).unwrap(), vec![1u8; 1000]);
    std::fs::remove_file(&kept).unwrap();
    assert_exit(&tantra(&root, &["verify"]), 0, "verify after cleanup");
    let out = tantra(&root, &["cleanup", "--backups-older-than", "0s", "--json"]);
    let rep = ok_json(&out);
    assert!(rep["items"].as_array().unwrap().len() >= 3);
    assert!(ok_json(&tantra(&root, &["backups", "--json"]))
        .as_array()
        .unwrap()
        .is_empty());
    let out = tantra(&root, &["cleanup", "--backups-older-than", "7x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn checkpoints_and_configs() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    for (i, loss) in ["0.9", "0.3", "0.5", "0.7"].iter().enumerate() {
        let f = weights(dir.path(), i as u32, OutputFormat::Safetensors);
        let step = ((i + 1) * 10).to_string();
        let metric = format!("loss={loss}");
        let out = tantra(
            &root,
            &[
                "checkpoint",
                "save",
                "m",
                s(&f),
                "--step",
                &step,
                "--metric",
                &metric,
            ],
        );
        ok(&out);
    }
    let list = ok_json(&tantra(&root, &["checkpoint", "list", "m", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert_eq!(list[1]["metrics"]["loss"], 0.3);
    let out = tantra(
        &root,
        &[
            "checkpoint",
            "prune",
            "m",
            "--keep-last",
            "1",
            "--keep-best",
            "1",
            "--metric",
            "loss",
            "--json",
        ],
    );
    let gone: Vec<u64> = ok_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["step"].as_u64().unwrap())
        .collect();
    assert_eq!(gone, vec![10, 30]);
    let out = tantra(
        &root,
        &[
            "checkpoint",
            "promote",
            "m",
            "20",
            "--version",
            "best",
            "--formats",
            "pt",
            "--json",
        ],
    );
    let rep = ok_json(&out);
    assert_eq!(rep["version"], "best");
    let rows = ok_json(&tantra(&root, &["list-weights", "--all-formats", "--json"]));
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let out = tantra(
        &root,
        &["checkpoint", "save", "m", "/nonexistent.pt", "--step", "1"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent.pt"));

    // Configs: import, show, set, validate (no schema for this type: JSON object suffices).
    let cfg = dir.path().join("c.json");
    std::fs::write(&cfg, r#"{"hidden_size": 4, "num_layers": 2}"#).unwrap();
    assert!(tantra(&root, &["config", "import", "m", "best", s(&cfg)])
        .status
        .success());
    assert!(
        tantra(&root, &["config", "set", "m", "best", "num_layers", "3"])
            .status
            .success()
    );
    let shown = ok_json(&tantra(&root, &["config", "show", "m", "best"]));
    assert_eq!(shown["num_layers"], 3);
    let list = ok_json(&tantra(&root, &["config", "list", "--json"]));
    assert_eq!(list[0]["versions"], serde_json::json!(["best"]));
    assert_eq!(
        tantra(&root, &["config", "validate", "m"]).status.code(),
        Some(0)
    );
    std::fs::write(
        root.join("configs/m/best.json"),
        r#"{"model_type": "nothing-known"}"#,
    )
    .unwrap();
    let out = tantra(&root, &["config", "validate", "m", "best", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let out = tantra(&root, &["config", "show", "m", "missing"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config import"), "{}", stderr(&out));
}

#[test]
fn gguf_is_a_fourth_format_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let f = weights(dir.path(), 7, OutputFormat::Safetensors);
    let rep = ok_json(&tantra(
        &root,
        &[
            "register",
            s(&f),
            "--model",
            "m",
            "--version",
            "v",
            "--formats",
            "safetensors,pt,bin,gguf",
            "--json",
        ],
    ));
    let formats: Vec<&str> = rep["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["bin", "gguf", "pt", "safetensors"]);
    assert!(root.join("weights/m_v_gguf.gguf").is_file());
    let rows = ok_json(&tantra(
        &root,
        &[
            "list-weights",
            "--all-formats",
            "--format",
            "gguf",
            "--json",
        ],
    ));
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_exit(&tantra(&root, &["verify"]), 0, "verify with a gguf file");
    // The GGUF file holds the same tensors (the store checked the per-tensor digests when it
    // registered it); a llama.cpp GGUF registers as its own version.
    let llama = common::fixtures().join("gguf/mamba_tiny_f32.gguf");
    if llama.exists() {
        let rep = ok_json(&tantra(
            &root,
            &[
                "register",
                s(&llama),
                "--model",
                "mamba",
                "--version",
                "llama",
                "--json",
            ],
        ));
        assert_eq!(rep["files"][0]["format"], "gguf");
        assert_eq!(rep["files"][0]["path"], "weights/mamba_llama_gguf.gguf");
    }
    let rep = ok_json(&tantra(
        &root,
        &["remove", "m", "v", "--format", "gguf", "--json"],
    ));
    assert_eq!(rep["removed"][0][0], "gguf");
    assert_exit(
        &tantra(&root, &["verify"]),
        0,
        "verify after removing the gguf file",
    );
}

#[test]
fn bad_environment_values_and_bare_durations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let out = bin()
        .env("TANTRA_LOCK_TIMEOUT", "abc")
        .arg("--root")
        .arg(&root)
        .arg("list-weights")
        .output()
        .unwrap();
    common::fails_with(&out, "TANTRA_LOCK_TIMEOUT");
    let out = bin()
        .env("TANTRA_JOBS", "0")
        .arg("--root")
        .arg(&root)
        .arg("verify")
        .output()
        .unwrap();
    common::fails_with(&out, "TANTRA_JOBS");
    let out = tantra(&root, &["cleanup", "--backups-older-than", "3"]);
    common::fails_with(&out, "no unit: write 3s");
}
