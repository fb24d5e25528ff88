//! Every mutating command, failed and killed at every file-system step.
//!
//! For each command: a root is built once; a reference run on a copy gives the state the
//! command must produce and the number of file-system steps it takes (`TANTRA_FAILPOINT_LOG`).
//! Then, on a fresh copy for each step N, the command runs with `TANTRA_FAILPOINT=N` (that step
//! fails with an I/O error) and again with `TANTRA_FAILPOINT=N:kill` (the process is SIGKILLed
//! just before that step), and after each:
//! - the state (every version's content, formats and their sha256, tags, note, config, the
//!   defaults, the checkpoints with their metrics) is exactly the state before or exactly the
//!   reference state after, never anything else;
//! - `verify` finds no problem that was not there before, except leftovers a crash may leave
//!   (temporary files, unnamed files, files moved to quarantine);
//! - running the same command again succeeds as the reference run did, and gives the
//!   reference state.
//!
//! Then 20 runs per command are killed at random moments and checked the same way.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, write_weights};
use serde_json::{json, Value as J};
use tantra_formats::{MemorySource, NoProgress, OutputFormat};
use tantra_store::{ProblemKind, VerifyScope, WeightManager};

fn weights(dir: &Path, seed: u32, format: OutputFormat) -> PathBuf {
    let mut m = MemorySource::new();
    for t in 0..3u32 {
        let v: Vec<f32> = (0..256u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(7919) ^ t) as f32)
            .collect();
        m.push_f32(format!("layers.{t}.weight"), vec![256], &v)
            .unwrap();
    }
    write_weights(
        &m,
        dir.join(format!("w{seed}.{}", format.extension())),
        format,
    )
}

fn run(root: &Path, args: &[String], env: &[(&str, String)]) -> Output {
    let mut c = bin();
    c.env("TANTRA_TEMP_GRACE", "0")
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn must(root: &Path, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = run(root, &args, &[]);
    assert!(
        out.status.success(),
        "setup {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let ft = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if ft.is_dir() {
            copy_tree(&e.path(), &dst);
        } else if ft.is_file() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// What a command may change, without times and file names, plus the case's extra state.
fn full_state(root: &Path, extra: fn(&Path) -> J) -> J {
    json!({ "store": state(root), "extra": extra(root) })
}

/// What a command may change in the store, without times and file names.
fn state(root: &Path) -> J {
    let wm = WeightManager::open(root).unwrap();
    let reg = match wm.registry() {
        Ok(r) => r,
        Err(e) => return json!({ "registry error": e.to_string() }),
    };
    let mut models = serde_json::Map::new();
    for (m, model) in &reg.models {
        let mut versions = serde_json::Map::new();
        for (v, ver) in &model.versions {
            let formats: serde_json::Map<String, J> = ver
                .formats
                .iter()
                .map(|(f, r)| (f.clone(), json!(r.sha256)))
                .collect();
            versions.insert(
                v.clone(),
                json!({"content": ver.content, "tags": ver.tags, "note": ver.note,
                       "config": ver.config, "formats": formats}),
            );
        }
        models.insert(
            m.clone(),
            json!({"default": model.default, "versions": versions}),
        );
    }
    let mut checkpoints = serde_json::Map::new();
    for m in wm.checkpoint_models().unwrap() {
        for c in wm.checkpoints(&m).unwrap() {
            checkpoints.insert(
                format!("{m}/{}", c.step),
                json!({"sha256": c.sha256, "metrics": c.metrics}),
            );
        }
    }
    json!({ "models": models, "checkpoints": checkpoints })
}

/// The problems `verify` reports, as (kind, path).
fn problems(root: &Path) -> BTreeSet<(String, String)> {
    let wm = WeightManager::open(root).unwrap();
    wm.verify(&VerifyScope::default(), &NoProgress)
        .unwrap()
        .problems
        .into_iter()
        .filter(|p| {
            !matches!(
                p.kind,
                ProblemKind::Unregistered
                    | ProblemKind::Temp
                    | ProblemKind::Quarantined
                    | ProblemKind::IncompleteCheckpoint
            )
        })
        .map(|p| (p.kind.name().to_string(), p.path))
        .collect()
}

/// No registered file, checkpoint or backup is lost: each file the state names verifies.
fn check(
    root: &Path,
    extra: fn(&Path) -> J,
    before: &J,
    after: &J,
    problems_before: &BTreeSet<(String, String)>,
    context: &str,
) {
    let now = full_state(root, extra);
    assert!(
        now == *before || now == *after,
        "{context}: the state is neither as before nor as requested:\nnow    {now}\nbefore {before}\nafter  {after}"
    );
    let p = problems(root);
    let new: Vec<_> = p.difference(problems_before).collect();
    assert!(new.is_empty(), "{context}: new problems {new:?}");
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    /// Prepares the copy of the base root before the command runs.
    prepare: fn(&Path),
    /// More state to compare, for commands whose effect is not on versions.
    extra: fn(&Path) -> J,
}

fn nothing(_: &Path) {}

fn no_extra(_: &Path) -> J {
    J::Null
}

/// The stray files of `strays`: where each one is (its bytes are never lost).
fn stray_places(root: &Path) -> J {
    let in_weights = root.join("weights/stray.pt").exists();
    let quarantined = std::fs::read_dir(root.join("quarantine"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with("stray.pt"))
                .filter(|e| std::fs::read(e.path()).is_ok_and(|b| b == b"not ours"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(
        in_weights as usize + quarantined.min(1),
        1,
        "the stray file is lost or doubled"
    );
    json!({ "stray in weights": in_weights })
}

/// The sha256 of the bytes at m:a's registered pt path (damaged before a repair, the
/// registered bytes after).
fn a_pt_bytes(root: &Path) -> J {
    let wm = WeightManager::open(root).unwrap();
    let reg = wm.registry().unwrap();
    let rel = reg.version("m", "a").unwrap().formats["pt"].path.clone();
    let b = std::fs::read(wm.abs(&rel)).unwrap_or_default();
    json!({ "m:a pt bytes": tantra_formats::digest::sha256_hex(&b) })
}

/// The bytes at the convert target.
fn convert_target(root: &Path) -> J {
    let b = std::fs::read(root.join("weights/stray.safetensors")).unwrap_or_default();
    json!({ "target": tantra_formats::digest::sha256_hex(&b) })
}

fn damage_a_pt(root: &Path) {
    let p = root.join("weights/m_a_pt.pt");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len() - 30;
    b[n] ^= 0x55;
    std::fs::write(&p, b).unwrap();
}

fn strays(root: &Path) {
    std::fs::write(root.join("weights/stray.pt"), b"not ours").unwrap();
    std::fs::write(root.join("weights/.tantra-tmp-dead.tmp"), b"x").unwrap();
}

fn base(dir: &Path) -> (PathBuf, Vec<PathBuf>) {
    let root = dir.join("base");
    let w1 = weights(dir, 1, OutputFormat::Safetensors);
    let w2 = weights(dir, 2, OutputFormat::Pt);
    let w3 = weights(dir, 3, OutputFormat::Safetensors);
    let p = |x: &Path| x.to_str().unwrap().to_string();
    // The oldest version: neither default nor tagged, so `cleanup --keep 1` drops it.
    must(
        &root,
        &[
            "register",
            &p(&w3),
            "--model",
            "m",
            "--version",
            "old",
            "--formats",
            "pt",
        ],
    );
    std::thread::sleep(Duration::from_millis(5));
    must(
        &root,
        &[
            "register",
            &p(&w1),
            "--model",
            "m",
            "--version",
            "a",
            "--formats",
            "all",
            "--note",
            "first",
        ],
    );
    must(
        &root,
        &[
            "register",
            &p(&w2),
            "--model",
            "m",
            "--version",
            "b",
            "--formats",
            "safetensors,pt",
            "--tag",
            "gold",
        ],
    );
    must(
        &root,
        &[
            "checkpoint",
            "save",
            "m",
            &p(&w3),
            "--step",
            "1",
            "--metric",
            "loss=1",
        ],
    );
    must(
        &root,
        &[
            "checkpoint",
            "save",
            "m",
            &p(&w1),
            "--step",
            "2",
            "--metric",
            "loss=0.5",
        ],
    );
    must(&root, &["remove", "m", "b", "--format", "pt"]);
    (root, vec![w1, w2, w3])
}

fn cases(root: &Path, w: &[PathBuf]) -> Vec<Case> {
    let p = |x: &Path| x.to_str().unwrap().to_string();
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let wm = WeightManager::open(root).unwrap();
    let backup = wm.backups().unwrap().last().unwrap().id.clone();
    let stray = root.join("weights/stray.safetensors");
    vec![
        Case {
            name: "register",
            args: a(&[
                "register",
                &p(&w[2]),
                "--model",
                "m",
                "--version",
                "c",
                "--formats",
                "all",
            ]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "register --force",
            args: a(&[
                "register",
                &p(&w[2]),
                "--model",
                "m",
                "--version",
                "a",
                "--formats",
                "all",
                "--force",
            ]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "remove",
            args: a(&["remove", "m", "b"]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "restore",
            args: a(&["restore", &backup]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "set-default",
            args: a(&["set-default", "m", "b"]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "tag",
            args: a(&["tag", "m", "a", "gold"]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "checkpoint save --force",
            args: a(&[
                "checkpoint",
                "save",
                "m",
                &p(&w[1]),
                "--step",
                "2",
                "--metric",
                "loss=0.1",
                "--force",
            ]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "checkpoint prune",
            args: a(&["checkpoint", "prune", "m", "--keep-last", "1"]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "checkpoint promote",
            args: a(&[
                "checkpoint",
                "promote",
                "m",
                "1",
                "--version",
                "p",
                "--formats",
                "all",
            ]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "cleanup",
            args: a(&["cleanup"]),
            prepare: strays,
            extra: stray_places,
        },
        Case {
            name: "cleanup --keep",
            args: a(&["cleanup", "--keep", "1"]),
            prepare: nothing,
            extra: no_extra,
        },
        Case {
            name: "repair",
            args: a(&["repair"]),
            prepare: damage_a_pt,
            extra: a_pt_bytes,
        },
        Case {
            name: "convert --force into the root",
            args: a(&["convert", "--force", &p(&w[1]), &p(&stray)]),
            prepare: |r| {
                std::fs::write(r.join("weights/stray.safetensors"), b"old bytes").unwrap();
            },
            extra: convert_target,
        },
    ]
}

/// Rewrites the paths of `args` that point into `from` to point into `to`.
fn retarget(args: &[String], from: &Path, to: &Path) -> Vec<String> {
    let (f, t) = (from.to_str().unwrap(), to.to_str().unwrap());
    args.iter().map(|s| s.replace(f, t)).collect()
}

fn steps_of(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn every_step_of_every_command_fails_and_crashes_safely() {
    let dir = tempfile::tempdir().unwrap();
    let (root, inputs) = base(dir.path());
    let only = std::env::var("TANTRA_FAULT_CASE").ok();
    let mut total = 0;
    for case in cases(&root, &inputs) {
        if only.as_deref().is_some_and(|o| o != case.name) {
            continue;
        }
        // The reference run.
        let start = dir.path().join("start");
        let _ = std::fs::remove_dir_all(&start);
        copy_tree(&root, &start);
        (case.prepare)(&start);
        let before = full_state(&start, case.extra);
        let problems_before = problems(&start);
        let reference = dir.path().join("reference");
        let _ = std::fs::remove_dir_all(&reference);
        copy_tree(&start, &reference);
        let log = dir.path().join("steps.log");
        let _ = std::fs::remove_file(&log);
        let t0 = Instant::now();
        let out = run(
            &reference,
            &retarget(&case.args, &root, &reference),
            &[("TANTRA_FAILPOINT_LOG", log.display().to_string())],
        );
        let took = t0.elapsed();
        let code = out.status.code();
        assert_eq!(
            code,
            Some(0),
            "{}: reference run: {}",
            case.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let after = full_state(&reference, case.extra);
        assert_ne!(
            before,
            after,
            "{}: the command changes nothing: {}{}",
            case.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let steps = steps_of(&log);
        let step_names: Vec<String> = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        assert!(steps > 0, "{}: no file-system step was seen", case.name);
        eprintln!("{}: {steps} steps", case.name);

        let trial = |how: String, kill_after: Option<Duration>| {
            let work = dir.path().join("work");
            let _ = std::fs::remove_dir_all(&work);
            copy_tree(&start, &work);
            let args = retarget(&case.args, &root, &work);
            let which = how
                .split(':')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| step_names.get(n.wrapping_sub(1)))
                .cloned()
                .unwrap_or_default();
            let context = format!("{} ({how}: {which})", case.name);
            match kill_after {
                None => {
                    let _ = run(&work, &args, &[("TANTRA_FAILPOINT", how.clone())]);
                }
                Some(d) => {
                    let mut c = bin();
                    c.env("TANTRA_TEMP_GRACE", "0")
                        .arg("--root")
                        .arg(&work)
                        .args(&args)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null());
                    let mut child = c.spawn().unwrap();
                    std::thread::sleep(d);
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
            let before_w = retarget_json(&before, &root, &work);
            let after_w = retarget_json(&after, &reference, &work);
            check(
                &work,
                case.extra,
                &before_w,
                &after_w,
                &problems_before,
                &context,
            );
            let done = full_state(&work, case.extra) == after_w;
            let again = run(&work, &args, &[]);
            // Where the change had not happened, the same command must now do it. Where it had
            // (a failure or kill after the commit), running it again may say so (`remove` of a
            // version already gone), but must change nothing.
            if !done {
                assert_eq!(
                    again.status.code(),
                    code,
                    "{context}: the same command again: {}",
                    String::from_utf8_lossy(&again.stderr)
                );
            }
            assert_eq!(
                full_state(&work, case.extra),
                after_w,
                "{context}: the state after running it again"
            );
        };
        for n in 1..=steps {
            trial(n.to_string(), None);
            trial(format!("{n}:kill"), None);
            total += 2;
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ case.name.len() as u64;
        for _ in 0..20 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let micros = seed % (took.as_micros() as u64 * 6 / 5).max(1);
            trial(
                format!("random kill after {micros} us"),
                Some(Duration::from_micros(micros)),
            );
            total += 1;
        }
    }
    eprintln!("{total} failed or killed runs checked");
}

/// The state names no paths, so nothing to rewrite; kept as a function for clarity.
fn retarget_json(j: &J, _from: &Path, _to: &Path) -> J {
    j.clone()
}
