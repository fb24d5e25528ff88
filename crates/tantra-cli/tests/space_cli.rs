//! Space: `cp` names weights twice without copying them, `du` counts what is shared once,
//! `backups rm` frees backups by id.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::Path;

use common::{fails_with, ok, ok_json, s, tantra, write_weights};
use tantra_formats::{MemorySource, OutputFormat};

fn register(root: &Path, dir: &Path, seed: u32, target: &str) {
    let mut m = MemorySource::new();
    let a: Vec<f32> = (0..1000).map(|i| i as f32 + seed as f32).collect();
    m.push_f32("w", vec![10, 100], &a).unwrap();
    let f = write_weights(&m, dir.join(format!("in{seed}.pt")), OutputFormat::Pt);
    ok(&tantra(
        root,
        &["register", s(&f), target, "--formats", "safetensors"],
    ));
}

#[cfg(unix)]
fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn cp_links_du_counts_backups_rm_frees() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    register(&root, dir.path(), 1, "mamba:v1");
    ok(&tantra(&root, &["tag", "mamba:v1", "golden"]));

    let before = ok_json(&tantra(&root, &["du", "--json"]));
    let weights = before["weights"].as_u64().unwrap();
    assert_eq!(before["shared"], 0);

    // cp through the tag, to another model too.
    let r = ok_json(&tantra(
        &root,
        &["cp", "mamba:golden", "mamba:v2", "--json"],
    ));
    assert_eq!(r["version"], "v2");
    assert_eq!(r["files"].as_array().unwrap().len(), 2);
    ok(&tantra(&root, &["cp", "mamba:v1", "other:copy"]));
    #[cfg(unix)]
    for f in ["pt.pt", "safetensors.safetensors"] {
        let a = root.join(format!("weights/mamba_v1_{f}"));
        let b = root.join(format!("weights/mamba_v2_{f}"));
        let c = root.join(format!("weights/other_copy_{f}"));
        assert_eq!(inode(&a), inode(&b), "{f}");
        assert_eq!(inode(&a), inode(&c), "{f}");
    }
    let after = ok_json(&tantra(&root, &["du", "--json"]));
    assert_eq!(after["weights"].as_u64().unwrap(), 3 * weights);
    // Each weight file is on disk once: the two copies are shared.
    assert!(after["shared"].as_u64().unwrap() >= 2 * weights, "{after}");
    let show = ok_json(&tantra(&root, &["show", "mamba:v2", "--json"]));
    assert_eq!(show["tags"], serde_json::json!([]));
    let same: Vec<&str> = show["same_content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(same, vec!["mamba:v1", "other:copy"]);
    ok(&tantra(&root, &["verify"]));
    // A target that holds other weights is refused.
    register(&root, dir.path(), 2, "mamba:v3");
    fails_with(
        &tantra(&root, &["cp", "mamba:v1", "mamba:v3"]),
        "already registered with different weights",
    );
    fails_with(
        &tantra(&root, &["cp", "mamba:v1", "mamba"]),
        "cp needs a version",
    );

    // Remove v3 (backed up), then free its backups by id.
    let rm = ok_json(&tantra(&root, &["rm", "mamba:v3", "--json"]));
    let ids: Vec<String> = rm["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2);
    let kept = ok_json(&tantra(&root, &["du", "--json"]))["backups"]
        .as_u64()
        .unwrap();
    assert!(kept > 0);
    let mut args = vec!["backups", "rm", "--dry-run", "--json"];
    args.extend(ids.iter().map(String::as_str));
    let dry = ok_json(&tantra(&root, &args));
    assert_eq!(dry["removed"].as_array().unwrap().len(), 2);
    assert_eq!(
        dry["freed"].as_u64().unwrap(),
        dry["bytes"].as_u64().unwrap()
    );
    let listed = ok_json(&tantra(&root, &["backups", "--json"]));
    let listed: u64 = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bytes"].as_u64().unwrap())
        .sum();
    assert!(
        listed > 0 && listed < kept,
        "the manifest is in backups/ too"
    );
    let mut args = vec!["backups", "rm", "--json"];
    args.extend(ids.iter().map(String::as_str));
    let done = ok_json(&tantra(&root, &args));
    assert_eq!(done["bytes"].as_u64().unwrap(), listed);
    assert_eq!(
        ok_json(&tantra(&root, &["backups", "--json"])),
        serde_json::json!([])
    );
    // Only the (now empty) manifest is left.
    let left = ok_json(&tantra(&root, &["du", "--json"]))["backups"]
        .as_u64()
        .unwrap();
    assert!(left < 200, "{left}");
    fails_with(
        &tantra(&root, &["backups", "rm", "nosuch"]),
        "no backup with id",
    );
    ok(&tantra(&root, &["verify"]));
}
