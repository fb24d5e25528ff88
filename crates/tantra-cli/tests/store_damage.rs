//! Damaged metadata, symlinks, read-only roots, the umask, interrupts, the history: the
//! weights root never deletes or overwrites bytes on the strength of metadata it cannot read,
//! and says what is wrong and what to do.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{assert_exit, bin, fails_with, ok, ok_json, s, stderr, tantra, write_weights};
use serde_json::Value as J;
use tantra_formats::{MemorySource, OutputFormat};

fn weights(dir: &Path, seed: u32, format: OutputFormat) -> PathBuf {
    let mut m = MemorySource::new();
    let v: Vec<f32> = (0..512u32).map(|i| (i ^ seed) as f32 * 0.5).collect();
    m.push_f32("w", vec![512], &v).unwrap();
    m.push_f32("b", vec![4], &[seed as f32; 4]).unwrap();
    write_weights(
        &m,
        dir.join(format!("w{seed}.{}", format.extension())),
        format,
    )
}

/// A root with m:a (all formats, default) and m:b (safetensors), one checkpoint, one backup.
fn root_with_versions(dir: &Path) -> PathBuf {
    let root = dir.join("Model");
    let w1 = weights(dir, 1, OutputFormat::Safetensors);
    let w2 = weights(dir, 2, OutputFormat::Pt);
    ok(&tantra(
        &root,
        &[
            "register",
            s(&w1),
            "--model",
            "m",
            "--version",
            "a",
            "--formats",
            "all",
        ],
    ));
    ok(&tantra(
        &root,
        &[
            "register",
            s(&w2),
            "--model",
            "m",
            "--version",
            "b",
            "--formats",
            "safetensors,pt",
        ],
    ));
    ok(&tantra(
        &root,
        &[
            "checkpoint",
            "save",
            "m",
            s(&w1),
            "--step",
            "7",
            "--metric",
            "loss=0.25",
        ],
    ));
    ok(&tantra(&root, &["remove", "m", "b", "--format", "pt"]));
    root
}

fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else if e.file_type().unwrap().is_file() {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Every weight byte under `root` (weights, backups, checkpoints, quarantine), as a multiset
/// of contents: what must survive.
fn weight_bytes(root: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = files_under(root)
        .into_iter()
        .filter(|(p, _)| p.ends_with(".pt") || p.ends_with(".bin") || p.ends_with(".safetensors"))
        .map(|(_, b)| b)
        .collect();
    v.sort();
    v.dedup();
    v
}

fn verify_json(root: &Path) -> (i32, J) {
    let out = tantra(root, &["verify", "--json"]);
    let code = out.status.code().unwrap();
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

fn kinds(report: &J) -> Vec<String> {
    let mut k: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn a_missing_registry_is_an_error_everywhere_and_repair_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_versions(dir.path());
    let before = weight_bytes(&root);
    let registry = std::fs::read(root.join("weight_config.json")).unwrap();
    std::fs::remove_file(root.join("weight_config.json")).unwrap();
    // Never an empty store.
    fails_with(&tantra(&root, &["list-weights"]), "registry is missing");
    fails_with(&tantra(&root, &["cleanup"]), "registry is missing");
    fails_with(
        &tantra(&root, &["cleanup", "--keep", "1"]),
        "registry is missing",
    );
    let (code, rep) = verify_json(&root);
    assert_eq!(code, 1);
    assert!(kinds(&rep).contains(&"registry".to_string()), "{rep}");
    assert_eq!(weight_bytes(&root), before, "nothing was deleted");
    // Repair: the newest kept generation plus the history after it.
    let rep = ok_json(&tantra(&root, &["repair", "--json"]));
    assert_eq!(rep["actions"][0]["what"], "registry", "{rep}");
    assert_eq!(rep["actions"][0]["fixed"], true);
    let old: J = serde_json::from_slice(&registry).unwrap();
    let new: J =
        serde_json::from_str(&std::fs::read_to_string(root.join("weight_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        old["models"], new["models"],
        "the same versions, files, tags and defaults"
    );
    assert!(new["generation"].as_u64().unwrap() > old["generation"].as_u64().unwrap());
    assert_exit(&tantra(&root, &["verify"]), 0, "verify after repair");
}

#[test]
fn a_truncated_registry_is_restored_from_generations_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_versions(dir.path());
    ok(&tantra(&root, &["tag", "m", "b", "golden"]));
    let want: J =
        serde_json::from_str(&std::fs::read_to_string(root.join("weight_config.json")).unwrap())
            .unwrap();
    let text = std::fs::read(root.join("weight_config.json")).unwrap();
    std::fs::write(root.join("weight_config.json"), &text[..text.len() / 2]).unwrap();
    fails_with(&tantra(&root, &["versions", "m"]), "tantra repair");
    fails_with(&tantra(&root, &["remove", "m", "b"]), "tantra repair");
    // The kept generations hold the state before the last change; the history replays it.
    let out = ok(&tantra(&root, &["repair"]));
    assert!(out.contains("kept generation"), "{out}");
    let new: J =
        serde_json::from_str(&std::fs::read_to_string(root.join("weight_config.json")).unwrap())
            .unwrap();
    assert_eq!(want["models"], new["models"]);
    // The damaged registry is kept in quarantine, not deleted.
    let (_, rep) = verify_json(&root);
    assert_eq!(kinds(&rep), vec!["quarantined"]);
}

#[test]
fn a_missing_manifest_keeps_every_backup() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_versions(dir.path());
    let before = weight_bytes(&root);
    std::fs::remove_file(root.join("backups/manifest.json")).unwrap();
    let out = ok_json(&tantra(&root, &["cleanup", "--dry-run", "--json"]));
    let items = out["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i["action"] != "delete"), "{out}");
    assert!(
        items
            .iter()
            .any(|i| i["action"] == "keep" && i["path"] == "backups"),
        "{out}"
    );
    ok(&tantra(&root, &["cleanup"]));
    assert_eq!(weight_bytes(&root), before);
    assert!(root.join("backups").read_dir().unwrap().count() >= 1);
    let (code, rep) = verify_json(&root);
    assert_eq!(code, 1);
    assert_eq!(kinds(&rep), vec!["manifest"]);
    // Removing now would need a backup that cannot be listed: refused, nothing lost.
    fails_with(&tantra(&root, &["remove", "m", "b"]), "manifest is missing");
    assert_eq!(weight_bytes(&root), before);
}

#[test]
fn a_damaged_checkpoint_record_keeps_its_weights_and_repair_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_versions(dir.path());
    let record = root.join("checkpoints/m/step_0000000007.json");
    let file = root.join("checkpoints/m/step_0000000007.safetensors");
    let weights_before = std::fs::read(&file).unwrap();
    let text = std::fs::read(&record).unwrap();
    std::fs::write(&record, &text[..text.len() / 3]).unwrap();
    ok(&tantra(&root, &["cleanup"]));
    assert_eq!(
        std::fs::read(&file).unwrap(),
        weights_before,
        "cleanup kept the weights"
    );
    let (_, rep) = verify_json(&root);
    assert_eq!(kinds(&rep), vec!["damaged-checkpoint"]);
    // save --force over it backs up the old weights first.
    let w3 = weights(dir.path(), 3, OutputFormat::Safetensors);
    ok(&tantra(
        &root,
        &["checkpoint", "save", "m", s(&w3), "--step", "7", "--force"],
    ));
    let backups = ok_json(&tantra(&root, &["backups", "--json"]));
    assert!(
        backups.as_array().unwrap().iter().any(|b| {
            std::fs::read(root.join(b["file"].as_str().unwrap())).is_ok_and(|x| x == weights_before)
        }),
        "the old checkpoint weights are in a backup: {backups}"
    );
    // Damage the new record and repair it: rebuilt from its file.
    let text = std::fs::read(&record).unwrap();
    std::fs::write(&record, &text[..10]).unwrap();
    let rep = ok_json(&tantra(&root, &["repair", "--json"]));
    let a = rep["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["what"] == "checkpoint-record")
        .unwrap();
    assert_eq!(a["fixed"], true, "{rep}");
    let list = ok_json(&tantra(&root, &["checkpoint", "list", "m", "--json"]));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["step"], 7);
}

#[test]
fn damaged_digests_and_a_dangling_default_are_reported_and_digests_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_versions(dir.path());
    let reg: J =
        serde_json::from_str(&std::fs::read_to_string(root.join("weight_config.json")).unwrap())
            .unwrap();
    let content = reg["models"]["m"]["versions"]["a"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let digests = root.join(format!("digests/{content}.json"));
    let mut d: J = serde_json::from_str(&std::fs::read_to_string(&digests).unwrap()).unwrap();
    d["tensors"][0]["sha256"] = J::from("0".repeat(64));
    std::fs::write(&digests, d.to_string()).unwrap();
    let (code, rep) = verify_json(&root);
    assert_eq!(code, 1);
    assert_eq!(kinds(&rep), vec!["digests"]);
    let rep = ok_json(&tantra(&root, &["repair", "--json"]));
    assert_eq!(rep["actions"][0]["what"], "digests");
    assert_exit(&tantra(&root, &["verify"]), 0, "after repair");
    // A changed byte inside a tensor: verify names the tensor.
    let f = root.join("weights/m_a_safetensors.safetensors");
    let mut b = std::fs::read(&f).unwrap();
    let n = b.len();
    b[n - 8] ^= 0x40;
    std::fs::write(&f, b).unwrap();
    let (_, rep) = verify_json(&root);
    let detail = rep["problems"][0]["detail"].as_str().unwrap();
    assert!(
        detail.contains("tensor \"w\": the values differ"),
        "{detail}"
    );
    // A default naming a missing version (a hand edit).
    let mut reg: J =
        serde_json::from_str(&std::fs::read_to_string(root.join("weight_config.json")).unwrap())
            .unwrap();
    reg["models"]["m"]["default"] = J::from("gone");
    std::fs::write(root.join("weight_config.json"), reg.to_string()).unwrap();
    let (_, rep) = verify_json(&root);
    assert!(
        kinds(&rep).contains(&"default-missing".to_string()),
        "{rep}"
    );
}

#[cfg(unix)]
#[test]
fn symlinks_are_reported_never_trusted_and_backups_hold_real_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_versions(dir.path());
    // A registered file replaced by a symlink to identical bytes elsewhere.
    let f = root.join("weights/m_b_safetensors.safetensors");
    let outside = dir.path().join("outside.safetensors");
    std::fs::copy(&f, &outside).unwrap();
    std::fs::remove_file(&f).unwrap();
    std::os::unix::fs::symlink(&outside, &f).unwrap();
    let (code, rep) = verify_json(&root);
    assert_eq!(code, 1);
    assert_eq!(kinds(&rep), vec!["not-regular"]);
    // Loading refuses it.
    let e = tantra(
        &root,
        &["export-hf", "m:b", dir.path().join("hf").to_str().unwrap()],
    );
    assert_ne!(e.status.code(), Some(0));
    // Removing backs up real bytes: the backup survives the link's target.
    ok(&tantra(&root, &["remove", "m", "b"]));
    std::fs::remove_file(&outside).unwrap();
    let backups = ok_json(&tantra(&root, &["backups", "--json"]));
    let last = backups.as_array().unwrap().last().unwrap();
    let kept = root.join(last["file"].as_str().unwrap());
    assert!(std::fs::symlink_metadata(&kept)
        .unwrap()
        .file_type()
        .is_file());
    assert!(std::fs::metadata(&kept).unwrap().len() > 0);
    // A symlink dropped into weights/ is reported, and cleanup leaves it alone.
    std::os::unix::fs::symlink("/etc/hostname", root.join("weights/link.pt")).unwrap();
    let (_, rep) = verify_json(&root);
    assert!(kinds(&rep).contains(&"not-regular".to_string()));
    ok(&tantra(&root, &["cleanup"]));
    assert!(std::fs::symlink_metadata(root.join("weights/link.pt")).is_ok());
}

/// Runs `tantra` as another user (nobody) when this process is root and `setpriv` exists.
fn as_nobody(root: &Path, args: &[&str]) -> Option<std::process::Output> {
    // SAFETY: geteuid has no preconditions.
    #[cfg(unix)]
    if unsafe { libc_geteuid() } != 0 {
        return None;
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    // The binary must be reachable for that user (a checkout under /root is not).
    let probe = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_tantra"))
        .arg("--version")
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!(
            "nobody cannot run {}: reading as root",
            env!("CARGO_BIN_EXE_tantra")
        );
        return None;
    }
    let out = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_tantra"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("TANTRA_ROOT")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    Some(out)
}

#[cfg(unix)]
unsafe fn libc_geteuid() -> u32 {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions.
    unsafe { geteuid() }
}

#[cfg(unix)]
#[test]
fn a_read_only_root_is_listed_verified_and_loaded_by_a_user_who_can_only_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = root_with_versions(dir.path());
    // Everything readable by others, nothing writable: as a shared, read-only root is.
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let mode = if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
                0o555
            } else {
                0o444
            };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o555)).unwrap();
    let reads: [&[&str]; 6] = [
        &["list-weights", "--all-formats", "--json"],
        &["versions", "m"],
        &["verify"],
        &["cleanup", "--dry-run"],
        &["log"],
        &["backups"],
    ];
    match as_nobody(&root, &["list-weights"]) {
        Some(_) => {
            for args in reads {
                let out = as_nobody(&root, args).unwrap();
                assert_exit(&out, 0, &format!("{args:?} as a user who can only read"));
            }
            let out = as_nobody(&root, &["tag", "m", "a", "x"]).unwrap();
            assert_eq!(
                out.status.code(),
                Some(2),
                "a write is refused: {}",
                stderr(&out)
            );
        }
        None => {
            // Not root: this user reads a root it cannot write.
            for args in reads {
                assert_exit(
                    &tantra(&root, args),
                    0,
                    &format!("{args:?} on a read-only root"),
                );
            }
        }
    }
    let mut stack = vec![root.clone()];
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                std::fs::set_permissions(e.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
                stack.push(e.path());
            }
        }
    }
}

#[cfg(unix)]
#[test]
fn files_follow_the_umask_so_a_group_can_share_a_root() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let w = weights(dir.path(), 5, OutputFormat::Safetensors);
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 002 && exec \"{}\" --root \"{}\" register \"{}\" --model m --version a --formats all",
            env!("CARGO_BIN_EXE_tantra"),
            root.display(),
            w.display()
        ))
        .env_remove("TANTRA_ROOT")
        .output()
        .unwrap();
    assert_exit(&out, 0, "register under umask 002");
    for (p, _) in files_under(&root) {
        if p.ends_with(".lock") {
            continue;
        }
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o664, "{p}: {mode:o}");
    }
    let mode = std::fs::metadata(root.join("weights"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o775);
}

#[cfg(unix)]
#[test]
fn an_interrupted_command_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    // A file big enough that the copy is still running when the signal comes.
    let mut m = MemorySource::new();
    let v: Vec<f32> = (0..(48 << 20) / 4).map(|i| i as f32).collect();
    m.push_f32("big", vec![v.len() as u64], &v).unwrap();
    let big = write_weights(
        &m,
        dir.path().join("big.safetensors"),
        OutputFormat::Safetensors,
    );
    let mut interrupted = 0;
    for (signal, delay_ms) in [(2, 30u64), (15, 60), (2, 120), (15, 200)] {
        let mut child = bin()
            .arg("--root")
            .arg(&root)
            .args([
                "register",
                s(&big),
                "--model",
                "m",
                "--version",
                "v",
                "--formats",
                "all",
                "--force",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let pid = child.id().to_string();
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .unwrap();
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        }
        let temps: Vec<String> = files_under(dir.path())
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| p.contains(".tantra-tmp-"))
            .collect();
        assert!(temps.is_empty(), "signal {signal}: left {temps:?}");
    }
    assert!(interrupted > 0, "no run was interrupted mid-way");
}

#[test]
fn history_records_every_change_and_unknown_fields_survive() {
    let dir = tempfile::tempdir().unwrap();
    let root = root_with_versions(dir.path());
    ok(&tantra(&root, &["set-default", "m", "b"]));
    ok(&tantra(&root, &["tag", "m", "a", "golden"]));
    ok(&tantra(&root, &["tag", "m", "a", "golden", "--remove"]));
    let log = ok_json(&tantra(&root, &["log", "--json"]));
    let kinds: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|e| {
            e["changes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["kind"].as_str().unwrap().to_string())
        })
        .collect();
    for k in [
        "registered",
        "format-removed",
        "default-moved",
        "tag-added",
        "tag-removed",
    ] {
        assert!(kinds.contains(&k.to_string()), "{k} in {kinds:?}");
    }
    assert!(log[0]["command"]
        .as_str()
        .unwrap()
        .contains("tag m a golden --remove"));
    let only_b = ok_json(&tantra(&root, &["log", "m:b", "--json"]));
    assert!(only_b.as_array().unwrap().iter().all(|e| e["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["version"] == "b")));
    // A field this tantra does not know, at every level, survives a write.
    let path = root.join("weight_config.json");
    let mut reg: J = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    reg["x_top"] = J::from(1);
    reg["models"]["m"]["x_model"] = J::from(2);
    reg["models"]["m"]["versions"]["a"]["x_version"] = J::from(3);
    reg["models"]["m"]["versions"]["a"]["formats"]["pt"]["x_file"] = J::from(4);
    std::fs::write(&path, reg.to_string()).unwrap();
    ok(&tantra(&root, &["tag", "m", "a", "kept"]));
    let reg: J = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(reg["x_top"], 1);
    assert_eq!(reg["models"]["m"]["x_model"], 2);
    assert_eq!(reg["models"]["m"]["versions"]["a"]["x_version"], 3);
    assert_eq!(
        reg["models"]["m"]["versions"]["a"]["formats"]["pt"]["x_file"],
        4
    );
    // A newer registry: listed, never written.
    let mut newer = reg.clone();
    newer["schema"] = J::from(2);
    std::fs::write(&path, newer.to_string()).unwrap();
    ok(&tantra(&root, &["list-weights"]));
    fails_with(
        &tantra(&root, &["tag", "m", "a", "x"]),
        "newer than this tantra",
    );
}

#[test]
fn identical_content_is_stored_once_and_remove_says_what_it_frees() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let w = weights(dir.path(), 9, OutputFormat::Safetensors);
    ok(&tantra(
        &root,
        &["register", s(&w), "--model", "m", "--version", "a"],
    ));
    let out = tantra(
        &root,
        &[
            "register",
            s(&w),
            "--model",
            "m",
            "--version",
            "copy",
            "--json",
        ],
    );
    let rep = ok_json(&out);
    assert_eq!(rep["files"][0]["same_as"], "m:a");
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let a = std::fs::metadata(root.join("weights/m_a_safetensors.safetensors")).unwrap();
        let b = std::fs::metadata(root.join("weights/m_copy_safetensors.safetensors")).unwrap();
        assert_eq!(a.ino(), b.ino(), "one inode, stored once");
    }
    let out = tantra(
        &root,
        &["register", s(&w), "--model", "m", "--version", "third"],
    );
    assert!(stderr(&out).contains("m:a"), "{}", stderr(&out));
    let rep = ok_json(&tantra(
        &root,
        &["remove", "m", "copy", "--no-backup", "--json"],
    ));
    assert_eq!(rep["freed"], 0, "the bytes are still m:a's");
    assert_eq!(rep["kept_in_backups"], 0);
    let rep = ok_json(&tantra(&root, &["remove", "m", "third", "--json"]));
    assert_eq!(rep["freed"], 0);
    assert!(rep["kept_in_backups"].as_u64().unwrap() > 0);
    let rep = ok_json(&tantra(
        &root,
        &[
            "remove",
            "m",
            "a",
            "--force",
            "--no-backup",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(rep["dry_run"], true);
    assert!(root.join("weights/m_a_safetensors.safetensors").exists());
}
