//! The command language: `MODEL[:VERSION]` with tags as aliases in every command, the file
//! commands taking a registered version, unknown models refused everywhere (exit 2, the
//! known ones listed), `show`, and `run` reading its prompt from stdin.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{
    assert_exit, bin, create_samples, fails_with, ok, ok_json, s, stderr, tantra, write_weights,
};
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

/// A root with mamba:v1 (pt + safetensors, tagged golden, default) and mamba:v2 (pt).
fn two_versions(dir: &Path) -> PathBuf {
    let root = dir.join("Model");
    let f1 = weights(dir, 1, OutputFormat::Pt);
    let f2 = weights(dir, 2, OutputFormat::Pt);
    // The new spelling and the old one.
    ok(&tantra(
        &root,
        &["register", s(&f1), "mamba:v1", "--formats", "safetensors"],
    ));
    ok(&tantra(
        &root,
        &["register", s(&f2), "--model", "mamba", "--version", "v2"],
    ));
    ok(&tantra(&root, &["tag", "mamba:v1", "golden"]));
    root
}

#[test]
fn tags_are_aliases_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = two_versions(dir.path());

    let show = ok_json(&tantra(&root, &["show", "mamba:golden", "--json"]));
    assert_eq!(show["version"], "v1");
    assert_eq!(show["tags"], serde_json::json!(["golden"]));
    assert_eq!(show["default"], true);
    assert_eq!(show["parameters"], 16);
    assert_eq!(show["tensors"], 2);
    let formats = show["formats"].as_array().unwrap();
    let names: Vec<&str> = formats
        .iter()
        .map(|f| f["format"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["safetensors", "pt"]);
    for f in formats {
        let path = root.join(f["path"].as_str().unwrap());
        let h = tantra_store::hash_file(&path, &tantra_formats::NoProgress).unwrap();
        assert_eq!(f["sha256"], h.sha256.as_str());
        assert_eq!(f["bytes"], h.bytes);
    }
    assert_eq!(formats[1]["source"]["kind"], "imported");
    assert_eq!(formats[0]["source"]["kind"], "converted");
    assert!(!show["history"].as_array().unwrap().is_empty());

    // The human form names the version, its files and its tag.
    let human = ok(&tantra(&root, &["show", "mamba:golden"]));
    assert!(human.starts_with("mamba:v1 (default)\n"), "{human}");
    assert!(
        human.contains("weights/mamba_v1_pt.pt") && human.contains("golden"),
        "{human}"
    );

    // set-default through the tag, then the old two-positional spelling.
    ok(&tantra(&root, &["set-default", "mamba:v2"]));
    ok(&tantra(&root, &["set-default", "mamba", "golden"]));
    let v = ok_json(&tantra(&root, &["versions", "mamba", "--json"]));
    assert_eq!(v[0]["version"], "v1");
    assert_eq!(v[0]["default"], true);

    // verify and remove through the tag; the report names the version.
    ok(&tantra(&root, &["verify", "mamba:golden"]));
    let r = ok_json(&tantra(
        &root,
        &["rm", "mamba:golden", "--dry-run", "--force", "--json"],
    ));
    assert_eq!(r["version"], "v1");
    assert_eq!(r["dry_run"], true);
    // A version must be named to remove.
    fails_with(&tantra(&root, &["remove", "mamba"]), "mamba:VERSION");
    // Both spellings at once is a mistake.
    fails_with(
        &tantra(&root, &["set-default", "mamba:v1", "v2"]),
        "not both",
    );
}

#[test]
fn file_commands_take_a_registered_version() {
    let dir = tempfile::tempdir().unwrap();
    let root = two_versions(dir.path());

    // inspect the best format of the tagged version.
    let j = ok_json(&tantra(&root, &["inspect", "mamba:golden", "--json"]));
    assert_eq!(j["format"], "safetensors");
    assert!(j["path"]
        .as_str()
        .unwrap()
        .ends_with("mamba_v1_safetensors.safetensors"));
    // diff two registered versions: they differ (exit 1), a version against itself does not.
    let d = tantra(&root, &["diff", "mamba:v1", "mamba:v2", "--json"]);
    assert_exit(&d, 1, "diff v1 v2");
    let same = tantra(&root, &["diff", "mamba:golden", "mamba:v1"]);
    assert_exit(&same, 0, "diff golden v1");
    // convert reads a registered version.
    let out = dir.path().join("out.safetensors");
    ok(&tantra(&root, &["convert", "mamba:v2", s(&out)]));
    let a = tantra_store::hash_file(&out, &tantra_formats::NoProgress).unwrap();
    assert!(a.bytes > 0);
    // scan a registered pt.
    let j = ok_json(&tantra(&root, &["scan", "mamba:v2", "--json"]));
    assert_eq!(j[0]["verdict"], "safe");

    // A bare word that is a file here and a registered model is ambiguous.
    std::fs::write(dir.path().join("mamba"), b"x").unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["--root", s(&root), "inspect", "mamba"])
        .output()
        .unwrap();
    fails_with(&out, "ambiguous");
    // ./mamba is the file.
    let out = bin()
        .current_dir(dir.path())
        .args(["--root", s(&root), "inspect", "./mamba"])
        .output()
        .unwrap();
    assert_exit(&out, 2, "inspect ./mamba");
    assert!(!stderr(&out).contains("ambiguous"), "{}", stderr(&out));
    // Neither a file nor a model.
    fails_with(
        &tantra(&root, &["inspect", "mambo:v1"]),
        "known models: mamba",
    );
}

#[test]
fn unknown_models_are_errors_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let root = two_versions(dir.path());
    for args in [
        vec!["list-weights", "--model", "nosuch"],
        vec!["ls", "--model", "nosuch"],
        vec!["versions", "nosuch"],
        vec!["show", "nosuch"],
        vec!["set-default", "nosuch:v1"],
        vec!["tag", "nosuch:v1", "t"],
        vec!["remove", "nosuch:v1"],
        vec!["verify", "nosuch"],
        vec!["run", "nosuch:v1", "hi"],
    ] {
        let out = tantra(&root, &args);
        assert_exit(&out, 2, &args.join(" "));
        let err = stderr(&out);
        assert!(err.contains("\"nosuch\""), "{args:?}: {err}");
        assert!(err.contains("known models: mamba"), "{args:?}: {err}");
    }
    // An unknown version or tag names the model.
    fails_with(
        &tantra(&root, &["show", "mamba:nope"]),
        "version \"nope\" of model \"mamba\"",
    );
}

#[test]
fn run_reads_the_prompt_from_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    create_samples(&root, "mamba", "safetensors");
    let mut child = bin()
        .args(["--root", s(&root), "run", "mamba:sample_small", "--json"])
        .args(["--max-new-tokens", "3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let piped = child.wait_with_output().unwrap();
    let piped: serde_json::Value = serde_json::from_str(&ok(&piped)).unwrap();
    // <bos>, 'h', 'i': the trailing newline is not part of the prompt.
    assert_eq!(piped["input_ids"], serde_json::json!([257, 104, 105]));
    let given = ok_json(&tantra(
        &root,
        &["run", "mamba", "hi", "--json", "--max-new-tokens", "3"],
    ));
    assert_eq!(piped["output_ids"], given["output_ids"]);
    // Nothing on stdin and no prompt.
    fails_with(&tantra(&root, &["run", "mamba"]), "no prompt");
}
