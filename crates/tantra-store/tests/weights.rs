//! WeightManager: register, load, versions, backups, restore, verify, cleanup, locking.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tantra_formats::{NoProgress, OutputFormat, TensorSource};
use tantra_store::*;

fn all() -> RegisterOptions {
    RegisterOptions {
        formats: OutputFormat::ALL.to_vec(),
        ..Default::default()
    }
}

fn setup() -> (tempfile::TempDir, tempfile::TempDir, WeightManager) {
    let root = tempfile::tempdir().unwrap();
    let inputs = tempfile::tempdir().unwrap();
    let wm = WeightManager::open(root.path().join("Model")).unwrap();
    (root, inputs, wm)
}

/// Registers `file` as `model:version` in all three formats.
fn register_all(wm: &WeightManager, file: &std::path::Path, model: &str, version: &str) {
    wm.register(file, model, version, &all(), &NoProgress)
        .unwrap();
}

/// The steps of model `m`'s checkpoints that list.
fn checkpoint_steps(wm: &WeightManager) -> Vec<u64> {
    wm.checkpoints("m")
        .unwrap()
        .iter()
        .map(|c| c.step)
        .collect()
}

/// The steps `rule` would prune from model `m` (a dry run).
fn pruned_steps(wm: &WeightManager, rule: &PruneRule) -> Vec<u64> {
    let plan = wm.prune_checkpoints("m", rule, true, true).unwrap();
    plan.iter().map(|i| i.step.unwrap()).collect()
}

/// Makes a file look an hour old (temporary files younger than a minute are never stale).
fn age(path: &std::path::Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Verifies the whole root.
fn verify_all(wm: &WeightManager) -> VerifyReport {
    wm.verify(&VerifyScope::default(), &NoProgress).unwrap()
}

/// The whole root verifies without a problem.
fn assert_verifies(wm: &WeightManager) {
    let report = verify_all(wm);
    assert!(report.ok(), "{:?}", report.problems);
}

#[test]
fn register_places_canonical_files_and_records_them() {
    let (_r, inp, wm) = setup();
    let file = safetensors_file(inp.path(), 1);
    let opts = RegisterOptions {
        tags: vec!["baseline".into()],
        note: Some("first try".into()),
        ..all()
    };
    let rep = wm
        .register(&file, "mamba", "sample_small", &opts, &NoProgress)
        .unwrap();
    assert!(rep.default, "the first version becomes the default");
    assert_eq!(rep.tensors, 2);
    assert_eq!(rep.parameters, 9);
    assert_eq!(rep.dtypes, vec!["F32".to_string()]);
    let mut names: Vec<String> = std::fs::read_dir(wm.weights_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "mamba_sample_small_bin.bin",
            "mamba_sample_small_pt.pt",
            "mamba_sample_small_safetensors.safetensors"
        ]
    );
    let reg = wm.registry().unwrap();
    let v = reg.version("mamba", "sample_small").unwrap();
    assert_eq!(v.tags, vec!["baseline".to_string()]);
    assert_eq!(v.note.as_deref(), Some("first try"));
    for (f, rec) in &v.formats {
        let p = wm.abs(&rec.path);
        assert_eq!(rec.sha256, sha256_of(&p), "{f}");
        assert_eq!(rec.bytes, std::fs::metadata(&p).unwrap().len());
        match f.as_str() {
            "safetensors" => assert!(matches!(rec.source, Source::Imported { .. })),
            _ => assert_eq!(
                rec.source,
                Source::Converted {
                    from: "safetensors".into()
                }
            ),
        }
    }
    // The per-tensor digests are those of the input, whatever the format.
    let t = wm.tensor_digests("mamba", "sample_small").unwrap();
    assert_eq!(t.content, v.content);
    let direct = TensorTable::of(&tensors(1), 1, &NoProgress).unwrap();
    assert_eq!(t, direct);
    // The registry is compact JSON with a schema number.
    let text = std::fs::read_to_string(wm.registry_path()).unwrap();
    assert!(text.starts_with("{\"schema\":1,"));
    // Listing.
    let rows = wm.list(&ListFilter::default()).unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.default && r.parameters == 9));
    let rows = wm
        .list(&ListFilter {
            format: Some(OutputFormat::Pt),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].path, "weights/mamba_sample_small_pt.pt");
}

#[test]
fn load_uses_default_version_and_prefers_safetensors() {
    let (_r, inp, wm) = setup();
    let pt = pt_file(inp.path(), 1);
    wm.register(&pt, "m", "v1", &RegisterOptions::default(), &NoProgress)
        .unwrap();
    let st = safetensors_file(inp.path(), 2);
    let opts = RegisterOptions {
        formats: vec![OutputFormat::Bin],
        make_default: true,
        ..Default::default()
    };
    wm.register(&st, "m", "v2", &opts, &NoProgress).unwrap();

    let w = wm.load_model_weights("m", None, None).unwrap();
    assert_eq!(
        (w.version.as_str(), w.format),
        ("v2", OutputFormat::Safetensors)
    );
    assert_eq!(w.source.tensors().len(), 2);
    let w = wm.load_model_weights("m", Some("v1"), None).unwrap();
    assert_eq!(w.format, OutputFormat::Pt);
    let w = wm
        .load_model_weights("m", Some("v2"), Some(OutputFormat::Bin))
        .unwrap();
    assert_eq!(w.format, OutputFormat::Bin);
    let bytes = w
        .source
        .tensor_bytes(w.source.find("layer.bias").unwrap())
        .unwrap()
        .into_owned();
    let want = tensors(2).tensor_bytes(1).unwrap().into_owned();
    assert_eq!(bytes, want);

    assert!(matches!(
        wm.load_model_weights("m", Some("v1"), Some(OutputFormat::Bin)),
        Err(StoreError::FormatMissing { .. })
    ));
    assert!(matches!(
        wm.load_model_weights("m", Some("v9"), None),
        Err(StoreError::UnknownVersion { .. })
    ));
    assert!(matches!(
        wm.load_model_weights("nope", None, None),
        Err(StoreError::UnknownModel { .. })
    ));
    wm.set_default("m", "v1").unwrap();
    assert_eq!(
        wm.load_model_weights("m", None, None).unwrap().version,
        "v1"
    );
    let rows = wm.versions("m").unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].default && rows[0].version == "v1");
    assert_eq!(rows[1].formats, vec!["safetensors", "bin"]);
}

#[test]
fn a_version_name_is_immutable_unless_forced_and_force_backs_up() {
    let (_r, inp, wm) = setup();
    let a = safetensors_file(inp.path(), 1);
    let b = safetensors_file(inp.path(), 2);
    wm.register(&a, "m", "v", &all(), &NoProgress).unwrap();
    let old_sha = wm.registry().unwrap().version("m", "v").unwrap().formats["pt"]
        .sha256
        .clone();

    let err = wm.register(&b, "m", "v", &all(), &NoProgress).unwrap_err();
    assert!(matches!(err, StoreError::VersionExists { .. }), "{err}");
    assert!(err.to_string().contains("--force"));

    // Same weights again: nothing changes, no backup.
    let rep = wm.register(&a, "m", "v", &all(), &NoProgress).unwrap();
    assert!(rep.files.iter().all(|f| f.action == FileAction::Unchanged));
    assert!(wm.backups().unwrap().is_empty());
    // The same weights in another container are the same version.
    let pt = pt_file(inp.path(), 1);
    let rep = wm
        .register(&pt, "m", "v", &RegisterOptions::default(), &NoProgress)
        .unwrap();
    assert_eq!(rep.files.len(), 1);
    assert_eq!(rep.files[0].action, FileAction::Unchanged);

    // Forced: the old files are backed up first, then replaced.
    let forced = RegisterOptions {
        force: true,
        ..all()
    };
    let rep = wm.register(&b, "m", "v", &forced, &NoProgress).unwrap();
    assert_eq!(rep.backups.len(), 3);
    assert!(rep.files.iter().all(|f| f.action == FileAction::Replaced));
    let backups = wm.backups().unwrap();
    assert_eq!(backups.len(), 3);
    assert!(backups.iter().all(|b| b.reason.contains("--force")));
    let w = wm.load_model_weights("m", Some("v"), None).unwrap();
    assert_eq!(
        w.version_record.content,
        TensorTable::of(&tensors(2), 1, &NoProgress)
            .unwrap()
            .content
    );

    // Restoring the old pt brings the old weights back as the version (replacing the new).
    let pt_backup = backups
        .iter()
        .find(|b| b.format.as_deref() == Some("pt"))
        .unwrap();
    assert_eq!(pt_backup.sha256.as_deref(), Some(old_sha.as_str()));
    let rep = wm.restore(&pt_backup.id[..pt_backup.id.len() - 1], &NoProgress);
    // A prefix works when unique; ids of one call may share a prefix, so fall back to the id.
    let rep = match rep {
        Ok(r) => r,
        Err(StoreError::AmbiguousBackup { .. }) => wm.restore(&pt_backup.id, &NoProgress).unwrap(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(rep.path, "weights/m_v_pt.pt");
    let reg = wm.registry().unwrap();
    let v = reg.version("m", "v").unwrap();
    assert_eq!(v.formats.keys().collect::<Vec<_>>(), vec!["pt"]);
    assert_eq!(v.formats["pt"].sha256, old_sha);
    assert_eq!(sha256_of(&wm.abs("weights/m_v_pt.pt")), old_sha);
    assert!(!wm.abs("weights/m_v_safetensors.safetensors").exists());
    assert_verifies(&wm);
}

#[test]
fn a_changed_byte_is_caught_by_load_and_verify() {
    let (_r, inp, wm) = setup();
    register_all(&wm, &safetensors_file(inp.path(), 1), "m", "v");
    let report = verify_all(&wm);
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.files, 3);

    let st = wm
        .canonical_path("m", "v", OutputFormat::Safetensors)
        .unwrap();
    corrupt_one_byte(&st);
    let err = match wm.load_model_weights("m", Some("v"), None) {
        Err(e) => e,
        Ok(_) => panic!("a changed file was loaded"),
    };
    assert!(matches!(err, StoreError::Changed { .. }));
    assert!(
        err.to_string().contains("m_v_safetensors.safetensors"),
        "{err}"
    );
    // Other formats still load.
    wm.load_model_weights("m", Some("v"), Some(OutputFormat::Pt))
        .unwrap();

    let bin = wm.canonical_path("m", "v", OutputFormat::Bin).unwrap();
    std::fs::remove_file(&bin).unwrap();
    std::fs::write(wm.weights_dir().join("stray.bin"), b"x").unwrap();
    let report = verify_all(&wm);
    let kinds: Vec<(ProblemKind, String)> = report
        .problems
        .iter()
        .map(|p| (p.kind, p.path.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (ProblemKind::Missing, "weights/m_v_bin.bin".to_string()),
            (
                ProblemKind::Changed,
                "weights/m_v_safetensors.safetensors".to_string()
            ),
            (ProblemKind::Unregistered, "weights/stray.bin".to_string()),
        ]
    );
    // One version only: no unregistered files are reported.
    let scoped = wm
        .verify(&VerifyScope::parse("m:v").unwrap(), &NoProgress)
        .unwrap();
    assert_eq!(scoped.problems.len(), 2);
    assert!(matches!(
        wm.load_model_weights("m", Some("v"), Some(OutputFormat::Bin)),
        Err(StoreError::Missing { .. })
    ));
    // Truncation is caught by the size alone.
    let pt = wm.canonical_path("m", "v", OutputFormat::Pt).unwrap();
    truncate(&pt, |len| len - 1);
    let opts = LoadOptions { verify_hash: false };
    let err = wm
        .load_with("m", Some("v"), Some(OutputFormat::Pt), &opts, &NoProgress)
        .err()
        .unwrap();
    assert!(err.to_string().contains("bytes, registered"), "{err}");
}

#[test]
fn remove_backs_up_and_restore_brings_it_back() {
    let (_r, inp, wm) = setup();
    register_all(&wm, &safetensors_file(inp.path(), 1), "m", "a");
    register_all(&wm, &safetensors_file(inp.path(), 2), "m", "b");
    // The default cannot go without --force.
    assert!(matches!(
        wm.remove("m", "a", None, false),
        Err(StoreError::IsDefault { .. })
    ));
    let rep = wm.remove("m", "b", Some(OutputFormat::Bin), false).unwrap();
    assert!(!rep.version_removed);
    assert_eq!(rep.backups.len(), 1);
    assert!(!wm
        .canonical_path("m", "b", OutputFormat::Bin)
        .unwrap()
        .exists());
    let rep = wm.remove("m", "b", None, false).unwrap();
    assert!(rep.version_removed);
    assert_eq!(rep.removed.len(), 2);
    assert!(wm.versions("m").unwrap().iter().all(|v| v.version == "a"));
    let backups = wm.backups().unwrap();
    assert_eq!(backups.len(), 3);
    assert!(backups
        .iter()
        .all(|b| b.kind == BackupKind::Weights && b.reason.contains("remove")));
    // Backups are hard links or copies: the bytes are intact.
    for b in &backups {
        assert_eq!(Some(sha256_of(&wm.abs(&b.file))), b.sha256);
    }
    let st = backups
        .iter()
        .find(|b| b.format.as_deref() == Some("safetensors"))
        .unwrap();
    wm.restore(&st.id, &NoProgress).unwrap();
    let w = wm.load_model_weights("m", Some("b"), None).unwrap();
    assert_eq!(w.format, OutputFormat::Safetensors);
    assert!(!w.version_record.formats.contains_key("pt"));
    assert_eq!(
        wm.tensor_digests("m", "b").unwrap().content,
        w.version_record.content
    );
    // Restoring again is harmless.
    wm.restore(&st.id, &NoProgress).unwrap();
    assert_verifies(&wm);
    assert!(matches!(
        wm.restore("nope", &NoProgress),
        Err(StoreError::UnknownBackup { .. })
    ));
    // A damaged backup is refused.
    let pt = backups
        .iter()
        .find(|b| b.format.as_deref() == Some("pt"))
        .unwrap();
    std::fs::write(wm.abs(&pt.file), b"garbage").unwrap();
    assert!(matches!(
        wm.restore(&pt.id, &NoProgress),
        Err(StoreError::BackupDamaged { .. })
    ));
}

#[test]
fn tags_and_defaults_guard_retention() {
    let (_r, inp, wm) = setup();
    for (i, v) in ["v1", "v2", "v3", "v4", "v5"].iter().enumerate() {
        let f = safetensors_file(inp.path(), i as u32 + 1);
        wm.register(&f, "m", v, &RegisterOptions::default(), &NoProgress)
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    wm.tag("m", "v2", "golden", false).unwrap();
    assert!(matches!(
        wm.tag("m", "v2", "../x", false),
        Err(StoreError::InvalidName { .. })
    ));
    // v1 is the default (first registered), v2 tagged; keep the 2 newest (v4, v5).
    let opts = CleanupOptions {
        keep_versions: Some(2),
        dry_run: true,
        ..Default::default()
    };
    let plan = wm.cleanup(&opts).unwrap();
    let gone: Vec<&str> = plan
        .items
        .iter()
        .filter_map(|i| i.version.as_deref())
        .collect();
    assert_eq!(gone, vec!["v3"]);
    assert_eq!(plan.bytes, plan.items[0].bytes);
    assert!(wm
        .canonical_path("m", "v3", OutputFormat::Safetensors)
        .unwrap()
        .exists());
    let done = wm
        .cleanup(&CleanupOptions {
            dry_run: false,
            ..opts
        })
        .unwrap();
    assert_eq!(done.items.len(), 1);
    assert!(done.items[0].backup.is_some());
    let left: Vec<String> = wm
        .versions("m")
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(left, vec!["v1", "v2", "v4", "v5"]);
    wm.tag("m", "v2", "golden", true).unwrap();
    assert!(wm.versions("m").unwrap()[1].tags.is_empty());
    assert!(!wm.digests_dir().join("m").join("v3.json").exists());
}

#[test]
fn cleanup_sweeps_orphans_temps_and_old_backups() {
    let (_r, inp, wm) = setup();
    register_all(&wm, &safetensors_file(inp.path(), 1), "m", "v");
    wm.remove("m", "v", Some(OutputFormat::Bin), false).unwrap();
    let w = wm.weights_dir();
    std::fs::write(w.join("m_old_pt.pt"), vec![0u8; 100]).unwrap();
    std::fs::write(w.join(".tantra-tmp-dead.tmp"), vec![0u8; 10]).unwrap();
    age(&w.join(".tantra-tmp-dead.tmp"));
    // A temporary file whose writer is alive (holds its lock) is left alone.
    let live = tantra_formats::temp::create_in(&w).unwrap();
    age(live.path());
    std::fs::write(
        wm.backups_dir().join("20000101-000000-abcdef_unlisted.pt"),
        b"x",
    )
    .unwrap();
    std::fs::create_dir_all(wm.digests_dir().join("m")).unwrap();
    std::fs::write(wm.digests_dir().join("m").join("gone.json"), b"{}").unwrap();

    let opts = CleanupOptions {
        orphans: true,
        dry_run: true,
        ..Default::default()
    };
    let plan = wm.cleanup(&opts).unwrap();
    let mut kinds: Vec<(CleanupKind, &str)> = plan
        .items
        .iter()
        .map(|i| (i.kind, i.path.as_str()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            (CleanupKind::Orphan, "weights/m_old_pt.pt"),
            (CleanupKind::Temp, "weights/.tantra-tmp-dead.tmp"),
            (
                CleanupKind::UnlistedBackup,
                "backups/20000101-000000-abcdef_unlisted.pt"
            ),
            (CleanupKind::StaleDigests, "digests/m/gone.json"),
        ]
    );
    // Only the store's own files are deleted; the others are moved to quarantine.
    assert_eq!(plan.bytes, 10 + 2);
    let actions: Vec<(CleanupKind, CleanupAction)> =
        plan.items.iter().map(|i| (i.kind, i.action)).collect();
    assert!(actions.contains(&(CleanupKind::Orphan, CleanupAction::Quarantine)));
    assert!(actions.contains(&(CleanupKind::UnlistedBackup, CleanupAction::Quarantine)));
    assert!(actions.contains(&(CleanupKind::Temp, CleanupAction::Delete)));
    let v = verify_all(&wm);
    assert_eq!(v.problems.len(), 2, "{:?}", v.problems);

    wm.cleanup(&CleanupOptions {
        dry_run: false,
        ..opts.clone()
    })
    .unwrap();
    assert!(live.path().exists());
    assert!(!w.join("m_old_pt.pt").exists());
    assert!(!w.join(".tantra-tmp-dead.tmp").exists());
    // The orphan and the unlisted backup are kept in quarantine, with their bytes.
    let v = verify_all(&wm);
    let mut q: Vec<(ProblemKind, u64)> = v
        .problems
        .iter()
        .map(|p| {
            (
                p.kind,
                std::fs::metadata(wm.root().join(&p.path)).unwrap().len(),
            )
        })
        .collect();
    q.sort_by_key(|x| x.1);
    assert_eq!(
        q,
        vec![
            (ProblemKind::Quarantined, 1),
            (ProblemKind::Quarantined, 100)
        ]
    );
    for p in &v.problems {
        std::fs::remove_file(wm.root().join(&p.path)).unwrap();
    }
    assert_verifies(&wm);
    // The bin removed earlier was backed up; one more for the new bin. Both expire with age.
    register_all(&wm, &safetensors_file(inp.path(), 1), "m", "v");
    wm.remove("m", "v", Some(OutputFormat::Bin), false).unwrap();
    assert_eq!(wm.backups().unwrap().len(), 2);
    let none = wm
        .cleanup(&CleanupOptions {
            backups_older_than: Some(Duration::from_secs(3600)),
            ..Default::default()
        })
        .unwrap();
    assert!(none.items.is_empty());
    std::thread::sleep(Duration::from_millis(20));
    let expired = wm
        .cleanup(&CleanupOptions {
            backups_older_than: Some(Duration::from_millis(1)),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(expired.items.len(), 2);
    assert!(wm.backups().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(wm.backups_dir()).unwrap().count(),
        1,
        "only the manifest"
    );
    drop(live);
}

#[test]
fn names_never_escape_the_root() {
    let (r, inp, wm) = setup();
    let f = safetensors_file(inp.path(), 1);
    for (m, v) in [
        ("../x", "v"),
        ("m", "../../etc"),
        ("m/x", "v"),
        ("m", ".."),
        (".m", "v"),
        ("m", ""),
    ] {
        let e = wm
            .register(&f, m, v, &RegisterOptions::default(), &NoProgress)
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidName { .. }), "{m} {v}: {e}");
    }
    assert!(wm.canonical_path("a", "b/c", OutputFormat::Pt).is_err());
    // Nothing was written anywhere.
    assert_eq!(std::fs::read_dir(r.path()).unwrap().count(), 0);
}

#[test]
fn colliding_file_names_are_refused() {
    let (_r, inp, wm) = setup();
    let f = safetensors_file(inp.path(), 1);
    wm.register(&f, "a_b", "c", &RegisterOptions::default(), &NoProgress)
        .unwrap();
    let e = wm
        .register(&f, "a", "b_c", &RegisterOptions::default(), &NoProgress)
        .unwrap_err();
    assert!(matches!(e, StoreError::NameCollision { .. }), "{e}");
    assert!(e.to_string().contains("a_b:c"));
}

#[test]
fn generators_register_files_in_place_and_from_memory() {
    let (_r, _inp, wm) = setup();
    wm.ensure_layout().unwrap();
    let src = tensors(3);
    // Write straight into the canonical place, then register without copying.
    let mut files = Vec::new();
    for f in [OutputFormat::Safetensors, OutputFormat::Pt] {
        let p = wm.canonical_path("mamba", "init", f).unwrap();
        tantra_formats::fsutil::atomic_write(&p, false, |w| {
            tantra_formats::write_to(w, f, &src, "x", &NoProgress)
        })
        .unwrap();
        files.push((f, p));
    }
    let src_desc = Source::Generated {
        by: Some("tantra-models".into()),
    };
    let rep = wm
        .register_files(
            &files,
            "mamba",
            "init",
            Some(src_desc.clone()),
            &RegisterOptions::default(),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(rep.files.len(), 2);
    let reg = wm.registry().unwrap();
    assert!(reg
        .version("mamba", "init")
        .unwrap()
        .formats
        .values()
        .all(|f| f.source == src_desc));
    // Files of one version must agree.
    let other = wm
        .canonical_path("mamba", "bad", OutputFormat::Safetensors)
        .unwrap();
    let t = tempfile::tempdir().unwrap();
    let pt = pt_file(t.path(), 9);
    common::write_file(&tensors(3), &other, OutputFormat::Safetensors);
    let e = wm
        .register_files(
            &[
                (OutputFormat::Safetensors, other),
                (OutputFormat::Pt, pt.clone()),
            ],
            "mamba",
            "bad",
            None,
            &RegisterOptions::default(),
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::ContentMismatch { .. }), "{e}");
    // A file given as the wrong format.
    let e = wm
        .register_files(
            &[(OutputFormat::Safetensors, pt)],
            "mamba",
            "x",
            None,
            &RegisterOptions::default(),
            &NoProgress,
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::WrongFormat { .. }), "{e}");
    // From memory.
    let opts = RegisterOptions {
        formats: vec![OutputFormat::Safetensors, OutputFormat::Bin],
        ..Default::default()
    };
    let rep = wm
        .register_source(
            &tensors(4),
            "mamba",
            "mem",
            Source::Generated { by: None },
            &opts,
            &NoProgress,
        )
        .unwrap();
    assert_eq!(rep.files.len(), 2);
    let w = wm
        .load_model_weights("mamba", Some("mem"), Some(OutputFormat::Bin))
        .unwrap();
    assert_eq!(w.record.source, Source::Generated { by: None });
    // The caller says where the tensors come from; every written format records it.
    let from_hf = Source::Imported {
        from: "/models/hf_dir".into(),
    };
    let rep = wm
        .register_source(
            &tensors(5),
            "mamba",
            "hf",
            from_hf.clone(),
            &all(),
            &NoProgress,
        )
        .unwrap();
    assert_eq!(rep.files.len(), 3);
    let reg = wm.registry().unwrap();
    let formats = &reg.version("mamba", "hf").unwrap().formats;
    assert_eq!(formats.len(), 3);
    assert!(formats.values().all(|f| f.source == from_hf), "{formats:?}");
}

#[test]
fn the_lock_times_out_naming_the_lock_file() {
    let (_r, inp, wm) = setup();
    let f = safetensors_file(inp.path(), 1);
    let held = wm.lock().unwrap();
    let quick = wm.clone().with_lock_timeout(Duration::from_millis(100));
    let e = quick
        .register(&f, "m", "v", &RegisterOptions::default(), &NoProgress)
        .unwrap_err();
    assert!(matches!(e, StoreError::LockTimeout { .. }));
    assert!(e.to_string().contains(".lock"), "{e}");
    drop(held);
    // Nothing is left behind by the failed attempt.
    assert_verifies(&wm);
    quick
        .register(&f, "m", "v", &RegisterOptions::default(), &NoProgress)
        .unwrap();
}

#[test]
fn threads_registering_at_once_lose_nothing() {
    let (_r, inp, wm) = setup();
    let files: Vec<_> = (0..8).map(|i| safetensors_file(inp.path(), i)).collect();
    std::thread::scope(|s| {
        for (i, f) in files.iter().enumerate() {
            let wm = wm.clone();
            s.spawn(move || {
                let model = if i % 2 == 0 { "even" } else { "odd" };
                wm.register(f, model, &format!("v{i}"), &all(), &NoProgress)
                    .unwrap();
                wm.tag(model, &format!("v{i}"), &format!("t{i}"), false)
                    .unwrap();
            });
        }
    });
    let rows = wm.list(&ListFilter::default()).unwrap();
    assert_eq!(rows.len(), 8 * 3);
    let reg = wm.registry().unwrap();
    for m in reg.models.values() {
        for (v, rec) in &m.versions {
            assert_eq!(rec.tags, [v.replace('v', "t")]);
        }
    }
    // Every change is one generation, and the history has one line for each.
    assert_eq!(reg.generation, 16);
    assert_eq!(wm.log(None, None).unwrap().len(), 16);
    assert_verifies(&wm);
}

#[test]
fn checkpoints_save_list_prune_promote() {
    let (_r, inp, wm) = setup();
    let losses = [0.9, 0.5, 0.7, 0.4, 0.8, 0.6];
    for (i, loss) in losses.iter().enumerate() {
        let metrics = BTreeMap::from([("loss".to_string(), *loss)]);
        let step = (i as u64 + 1) * 100;
        if i % 2 == 0 {
            wm.save_checkpoint(
                "m",
                step,
                &metrics,
                &tensors(i as u32),
                OutputFormat::Safetensors,
                false,
                &NoProgress,
            )
            .unwrap();
        } else {
            let f = pt_file(inp.path(), i as u32);
            wm.save_checkpoint_file("m", step, &metrics, &f, false, &NoProgress)
                .unwrap();
        }
    }
    assert_eq!(checkpoint_steps(&wm), vec![100, 200, 300, 400, 500, 600]);
    let list = wm.checkpoints("m").unwrap();
    assert_eq!(list[1].format, "pt");
    assert_eq!(list[0].file, "checkpoints/m/step_0000000100.safetensors");
    // The same step again needs --force.
    let f = pt_file(inp.path(), 7);
    let e = wm
        .save_checkpoint_file("m", 200, &BTreeMap::new(), &f, false, &NoProgress)
        .unwrap_err();
    assert!(matches!(e, StoreError::CheckpointExists { .. }));

    // Keep the last 1 (600) and the best 2 by loss (400: 0.4, 200: 0.5).
    let rule = PruneRule {
        keep_last: 1,
        keep_best: 2,
        metric: Some("loss".into()),
        mode: MetricMode::Min,
    };
    assert_eq!(pruned_steps(&wm, &rule), vec![100, 300, 500]);
    assert_eq!(wm.checkpoints("m").unwrap().len(), 6);
    let done = wm.prune_checkpoints("m", &rule, false, true).unwrap();
    assert!(done.iter().all(|i| i.backup.is_some()));
    assert_eq!(checkpoint_steps(&wm), vec![200, 400, 600]);
    // max mode keeps the highest.
    let rule = PruneRule {
        keep_last: 0,
        keep_best: 1,
        metric: Some("loss".into()),
        mode: MetricMode::Max,
    };
    assert_eq!(pruned_steps(&wm, &rule), vec![200, 400]);
    assert!(wm
        .prune_checkpoints("m", &PruneRule::default(), true, true)
        .is_err());

    // Promote.
    let rep = wm
        .promote_checkpoint("m", 400, "best", &all(), &NoProgress)
        .unwrap();
    assert_eq!(rep.files.len(), 3);
    // Step 400 was saved from a .pt file.
    let st = wm
        .load_model_weights("m", Some("best"), Some(OutputFormat::Safetensors))
        .unwrap();
    assert_eq!(st.record.source, Source::Converted { from: "pt".into() });
    let w = wm
        .load_model_weights("m", Some("best"), Some(OutputFormat::Pt))
        .unwrap();
    assert_eq!(
        w.record.source,
        Source::Checkpoint {
            step: 400,
            from: "checkpoints/m/step_0000000400.pt".into()
        }
    );
    assert!(matches!(
        wm.promote_checkpoint("m", 100, "x", &all(), &NoProgress),
        Err(StoreError::UnknownCheckpoint { .. })
    ));
    // Restore a pruned checkpoint from its backup.
    let b = wm
        .backups()
        .unwrap()
        .into_iter()
        .find(|b| b.step == Some(300))
        .unwrap();
    wm.restore(&b.id, &NoProgress).unwrap();
    assert!(wm.checkpoints("m").unwrap().iter().any(|c| c.step == 300));
    assert_verifies(&wm);
}

#[test]
fn an_interrupted_checkpoint_save_never_lists() {
    let (_r, _inp, wm) = setup();
    let metrics = BTreeMap::from([("loss".to_string(), 1.0)]);
    wm.save_checkpoint(
        "m",
        1,
        &metrics,
        &tensors(1),
        OutputFormat::Safetensors,
        false,
        &NoProgress,
    )
    .unwrap();
    let dir = wm.checkpoints_dir().join("m");
    // A crash after the file was renamed but before its record: the file has no record.
    std::fs::copy(
        dir.join("step_0000000001.safetensors"),
        dir.join("step_0000000002.safetensors"),
    )
    .unwrap();
    // A record whose file is short.
    wm.save_checkpoint(
        "m",
        3,
        &metrics,
        &tensors(3),
        OutputFormat::Safetensors,
        false,
        &NoProgress,
    )
    .unwrap();
    let f3 = dir.join("step_0000000003.safetensors");
    truncate(&f3, |len| len / 2);
    assert_eq!(checkpoint_steps(&wm), vec![1]);
    let v = verify_all(&wm);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    let done = wm
        .cleanup(&CleanupOptions {
            orphans: true,
            ..Default::default()
        })
        .unwrap();
    // Nothing is deleted: the file without a record goes to quarantine, the checkpoint whose
    // file is damaged stays for `repair` or a restore.
    let mut got: Vec<(CleanupKind, CleanupAction)> =
        done.items.iter().map(|i| (i.kind, i.action)).collect();
    got.sort_by_key(|x| x.0);
    assert_eq!(
        got,
        vec![
            (CleanupKind::IncompleteCheckpoint, CleanupAction::Quarantine),
            (CleanupKind::DamagedCheckpoint, CleanupAction::Keep),
        ],
        "{:?}",
        done.items
    );
    assert!(f3.exists());
    let kinds: Vec<ProblemKind> = verify_all(&wm).problems.iter().map(|p| p.kind).collect();
    assert_eq!(
        kinds,
        vec![ProblemKind::IncompleteCheckpoint, ProblemKind::Quarantined]
    );
}

struct Toy;
impl ConfigSchema for Toy {
    fn model_type(&self) -> &str {
        "toy"
    }
    fn validate(&self, c: &serde_json::Value) -> Vec<ConfigProblem> {
        FieldSchema::new(
            "toy",
            vec![
                FieldSpec::integer("dim").range(1.0, 1024.0),
                FieldSpec::integer("out").min(1.0),
            ],
            |_| Ok(Vec::new()),
        )
        .validate(c)
    }
    fn expected_tensors(&self, c: &serde_json::Value) -> Result<Vec<ExpectedTensor>, String> {
        let dim = c["dim"].as_u64().ok_or("dim")?;
        let out = c["out"].as_u64().ok_or("out")?;
        Ok(vec![
            ExpectedTensor::new("layer.weight", vec![dim, out]),
            ExpectedTensor::new("layer.bias", vec![out]),
        ])
    }
}

#[test]
fn configs_are_validated_and_weights_checked_against_them() {
    let (_r, inp, wm) = setup();
    let cm = ConfigManager::new(wm.clone(), Schemas::new().with(Arc::new(Toy)));
    let good = serde_json::json!({"model_type": "toy", "dim": 2, "out": 3});
    cm.import("m", "small", &good, false).unwrap();
    assert!(matches!(
        cm.import("m", "small", &good, false),
        Err(StoreError::ConfigExists { .. })
    ));
    let bad = serde_json::json!({"model_type": "toy", "dim": 0});
    let e = cm.import("m", "broken", &bad, false).unwrap_err();
    assert!(
        e.to_string().contains("dim") && e.to_string().contains("out: is required"),
        "{e}"
    );
    assert!(!cm.path("m", "broken").unwrap().exists());

    let f = safetensors_file(inp.path(), 1);
    let opts = RegisterOptions {
        config: Some("small".into()),
        ..Default::default()
    };
    wm.register(&f, "m", "v1", &opts, &NoProgress).unwrap();
    let missing = RegisterOptions {
        config: Some("nope".into()),
        ..Default::default()
    };
    assert!(matches!(
        wm.register(&f, "m", "v2", &missing, &NoProgress),
        Err(StoreError::UnknownConfig { .. })
    ));
    let list = cm.list(None).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].versions, vec!["v1"]);
    assert_eq!(list[0].model_type.as_deref(), Some("toy"));
    assert_eq!(cm.config_for_version("m", "v1").unwrap(), "small");

    let w = wm.load_model_weights("m", Some("v1"), None).unwrap();
    assert!(cm
        .check_weights("m", "small", w.source.as_ref())
        .unwrap()
        .is_empty());
    // Change a field: the weights no longer fit.
    let newc = cm.set("m", "small", "out", serde_json::json!(4)).unwrap();
    assert_eq!(newc["out"], 4);
    let problems = cm.check_weights("m", "small", w.source.as_ref()).unwrap();
    let whats: Vec<&str> = problems.iter().map(|p| p.what.as_str()).collect();
    assert_eq!(whats, vec!["layer.weight", "layer.bias"]);
    // Extra and missing tensors.
    let mut extra = tensors(1);
    extra.push_f32("stray", vec![1], &[0.0]).unwrap();
    cm.set("m", "small", "out", serde_json::json!(3)).unwrap();
    let p = cm.check_weights("m", "small", &extra).unwrap();
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("unexpected"));
    // An invalid change is refused and nothing is written.
    assert!(matches!(
        cm.set("m", "small", "dim", serde_json::json!(-1)),
        Err(StoreError::ConfigInvalid { .. })
    ));
    assert_eq!(cm.show("m", "small").unwrap()["dim"], 2);
    // Each change was backed up.
    assert_eq!(
        wm.backups()
            .unwrap()
            .iter()
            .filter(|b| b.kind == BackupKind::Config)
            .count(),
        2
    );
    // Hand-edited into an invalid state: validate reports it.
    std::fs::write(
        cm.path("m", "small").unwrap(),
        r#"{"model_type":"toy","dim":"big","out":3}"#,
    )
    .unwrap();
    let p = cm.validate("m", "small").unwrap();
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("integer"));
    // Unknown model type.
    std::fs::write(cm.path("m", "small").unwrap(), r#"{"model_type":"llama"}"#).unwrap();
    assert!(cm.validate("m", "small").unwrap()[0]
        .message
        .contains("unknown model type"));
    assert!(matches!(
        cm.expected_tensors("m", "small"),
        Err(StoreError::ConfigInvalid { .. })
    ));
    assert!(matches!(
        cm.show("m", "../x"),
        Err(StoreError::InvalidName { .. })
    ));
}

#[test]
fn a_file_in_the_way_is_moved_to_quarantine_never_overwritten() {
    let (_r, inp, wm) = setup();
    wm.ensure_layout().unwrap();
    let target = wm.canonical_path("m", "x", OutputFormat::Pt).unwrap();
    std::fs::write(&target, b"left by a crash").unwrap();
    wm.register(
        &pt_file(inp.path(), 1),
        "m",
        "x",
        &RegisterOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(wm.backups().unwrap().is_empty());
    let v = verify_all(&wm);
    assert_eq!(v.problems.len(), 1, "{:?}", v.problems);
    assert_eq!(v.problems[0].kind, ProblemKind::Quarantined);
    assert_eq!(
        std::fs::read(wm.root().join(&v.problems[0].path)).unwrap(),
        b"left by a crash"
    );
    std::fs::remove_file(wm.root().join(&v.problems[0].path)).unwrap();
    assert_verifies(&wm);
}

#[test]
fn a_handle_remembers_the_registry_but_sees_every_change() {
    let (_r, inp, a) = setup();
    // Two handles (two processes, say) on one root; `a` parses once and then remembers.
    let b = WeightManager::open(a.root()).unwrap();
    let (f0, f1, f2) = (
        safetensors_file(inp.path(), 0),
        safetensors_file(inp.path(), 1),
        safetensors_file(inp.path(), 2),
    );
    a.register(&f0, "m", "v0", &all(), &NoProgress).unwrap();
    assert!(a.registry().unwrap().version("m", "v0").is_some());
    b.register(&f1, "m", "v1", &all(), &NoProgress).unwrap();
    // `a` published generation 1 and remembered it; `b` replaced the file since.
    let seen = a.registry().unwrap();
    assert_eq!(seen.generation, 2);
    assert!(seen.version("m", "v1").is_some());
    // A plan made by `a` on what it remembers keeps `b`'s version.
    a.register(&f2, "m", "v2", &all(), &NoProgress).unwrap();
    let names: Vec<String> = b.registry().unwrap().models["m"]
        .versions
        .keys()
        .cloned()
        .collect();
    assert_eq!(names, ["v0", "v1", "v2"]);
    // A hand edit in place (same file, new bytes) is seen too.
    let path = a.registry_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let edited = text.replacen("\"models\":{", "\"hand\":\"edit\",\"models\":{", 1);
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, edited.as_bytes()))
        .unwrap();
    assert_eq!(a.registry().unwrap().extra["hand"], "edit");
    // The written registry is exactly what a plain serialization gives.
    a.set_default("m", "v1").unwrap();
    let on_disk = std::fs::read(&path).unwrap();
    let reg = a.registry().unwrap();
    assert_eq!(on_disk, reg.to_bytes());
    assert_eq!(reg.extra["hand"], "edit");
}

/// `register_written`: files the caller wrote at their canonical names, with the hashes it took
/// while writing; each keeps its own source, a file not marked `tensors_verified` is read and
/// checked, and every broken promise is refused with nothing registered.
#[test]
fn written_files_register_with_their_own_lineage_and_broken_promises_are_refused() {
    let (_r, _inp, wm) = setup();
    wm.ensure_layout().unwrap();
    let src = tensors(3);
    let table = TensorTable::of(&src, 1, &NoProgress).unwrap();
    let write = |version: &str, f: OutputFormat, what: &tantra_formats::MemorySource| {
        let p = wm.canonical_path("mamba", version, f).unwrap();
        write_file(what, &p, f);
        let hash = hash_file(&p, &NoProgress).unwrap();
        (p, hash)
    };
    let written =
        |version: &str, f: OutputFormat, what: &tantra_formats::MemorySource, verified: bool| {
            let (path, hash) = write(version, f, what);
            WrittenFile {
                format: f,
                path,
                hash,
                source: Source::Imported {
                    from: format!("remote r; there: {}", f.name()),
                },
                tensors_verified: verified,
            }
        };
    let opts = RegisterOptions::default();
    let files = [
        written("v", OutputFormat::Safetensors, &src, true),
        written("v", OutputFormat::Pt, &src, false),
    ];
    let rep = wm
        .register_written(&files, &table, "mamba", "v", &opts, &NoProgress)
        .unwrap();
    assert_eq!(rep.files.len(), 2);
    let reg = wm.registry().unwrap();
    let v = reg.version("mamba", "v").unwrap();
    assert_eq!(v.content, table.content);
    for f in &files {
        let rec = &v.formats[f.format.name()];
        assert_eq!(rec.source, f.source);
        assert_eq!(rec.sha256, f.hash.sha256);
    }
    assert_verifies(&wm);

    let refused = |files: &[WrittenFile], table: &TensorTable, version: &str| {
        let e = wm
            .register_written(files, table, "mamba", version, &opts, &NoProgress)
            .unwrap_err();
        assert!(wm.registry().unwrap().version("mamba", version).is_none());
        e
    };
    // A size that is not the file's.
    let mut f = written("size", OutputFormat::Safetensors, &src, true);
    f.hash.bytes += 1;
    let e = refused(&[f], &table, "size");
    assert!(matches!(e, StoreError::Changed { .. }), "{e}");
    // A file somewhere else than its canonical name.
    let mut f = written("place", OutputFormat::Safetensors, &src, true);
    let elsewhere = wm.root().join("elsewhere.safetensors");
    std::fs::copy(&f.path, &elsewhere).unwrap();
    f.path = elsewhere;
    let e = refused(&[f], &table, "place");
    assert!(e.to_string().contains("not at its canonical path"), "{e}");
    // A table that does not add up to its content digest.
    let mut bad = table.clone();
    bad.tensors[0].sha256 = "0".repeat(64);
    let f = written("sum", OutputFormat::Safetensors, &src, true);
    let e = refused(&[f], &bad, "sum");
    assert!(e.to_string().contains("do not add up"), "{e}");
    // A file copied whole that holds other tensors, and one in another format than said.
    let f = written("other", OutputFormat::Pt, &tensors(4), false);
    let e = refused(&[f], &table, "other");
    assert!(matches!(e, StoreError::ContentMismatch { .. }), "{e}");
    let (path, hash) = write("fmt", OutputFormat::Safetensors, &src);
    let to = wm.canonical_path("mamba", "fmt", OutputFormat::Pt).unwrap();
    std::fs::rename(&path, &to).unwrap();
    let f = WrittenFile {
        format: OutputFormat::Pt,
        path: to,
        hash,
        source: Source::Generated { by: None },
        tensors_verified: false,
    };
    let e = refused(&[f], &table, "fmt");
    assert!(matches!(e, StoreError::WrongFormat { .. }), "{e}");
    // Two files for one format.
    let f = written("two", OutputFormat::Safetensors, &src, true);
    let e = refused(&[f.clone(), f], &table, "two");
    assert!(e.to_string().contains("two files for one format"), "{e}");
}
