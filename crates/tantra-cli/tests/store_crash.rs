//! Faults and concurrency on one weights root, with real processes.
//!
//! Crash test: `tantra register` (with conversions), `register --force`, `checkpoint save`,
//! `remove` and `restore` are killed with SIGKILL after a random delay, many times over one
//! root; after every kill the invariants are checked: the registry parses, every file it names
//! exists with the recorded size and sha256, every checkpoint that lists is complete, every
//! backup in the manifest exists, and after `cleanup` nothing is left over (verify exits 0).
//! `TANTRA_KILL_TRIALS` raises the trial count, `TANTRA_KILL_SEED` replays a run.
//!
//! Concurrency test: several processes register at once; none of their updates is lost.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_exit, bin, ok, stderr, tantra, write_weights};
use tantra_formats::{MemorySource, NoProgress, OutputFormat};
use tantra_store::{VerifyScope, WeightManager};

/// A weight file of about `kib` KiB whose values depend on `seed`.
fn weights(dir: &Path, seed: u32, kib: usize, format: OutputFormat) -> PathBuf {
    let mut m = MemorySource::new();
    let n = kib * 1024 / 4 / 4;
    for t in 0..4u32 {
        let v: Vec<f32> = (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed.wrapping_mul(7919) ^ t) as f32)
            .collect();
        m.push_f32(format!("layers.{t}.weight"), vec![n as u64], &v)
            .unwrap();
    }
    write_weights(
        &m,
        dir.join(format!("w{seed}.{}", format.extension())),
        format,
    )
}

/// xorshift64*: enough randomness for delays, and replayable from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Everything a crash must never break.
fn check_invariants(root: &Path, context: &str) {
    let wm = WeightManager::open(root).unwrap();
    let reg = wm
        .registry()
        .unwrap_or_else(|e| panic!("{context}: the registry does not parse: {e}"));
    let report = wm.verify(&VerifyScope::default(), &NoProgress).unwrap();
    for p in &report.problems {
        use tantra_store::ProblemKind::*;
        match p.kind {
            // A crash may leave files nobody names yet; cleanup removes (temporary files) or
            // quarantines (the rest) them.
            Unregistered | Temp | IncompleteCheckpoint | Quarantined => {}
            _ => panic!("{context}: {:?} {} ({})", p.kind, p.path, p.detail),
        }
    }
    // Every version in the registry loads (its files are complete and readable).
    for (m, model) in &reg.models {
        for v in model.versions.keys() {
            let w = wm.load_model_weights(m, Some(v), None);
            assert!(
                w.is_ok(),
                "{context}: {m}:{v} does not load: {}",
                w.err().unwrap()
            );
        }
    }
    // Listed checkpoints are complete.
    for m in wm.checkpoint_models().unwrap() {
        for c in wm.checkpoints(&m).unwrap() {
            let sha = tantra_store::hash_file(&wm.abs(&c.file), &NoProgress).unwrap();
            assert_eq!(
                sha.sha256, c.sha256,
                "{context}: checkpoint {} is not complete",
                c.file
            );
        }
    }
    // Listed backups exist.
    for b in wm.backups().unwrap() {
        assert!(
            wm.abs(&b.file).is_file(),
            "{context}: backup {} lost its file",
            b.id
        );
    }
}

/// `cleanup --orphans` with no grace period for temporary files (the killed writers are gone).
fn cleanup(root: &Path) -> Output {
    bin()
        .env("TANTRA_TEMP_GRACE", "0")
        .arg("--root")
        .arg(root)
        .args(["cleanup", "--orphans"])
        .output()
        .unwrap()
}

/// After cleanup, the only problems left are files moved to quarantine (kept, never deleted).
fn only_quarantined(root: &Path, context: &str) {
    let wm = WeightManager::open(root).unwrap();
    let report = wm.verify(&VerifyScope::default(), &NoProgress).unwrap();
    for p in &report.problems {
        assert_eq!(
            p.kind,
            tantra_store::ProblemKind::Quarantined,
            "{context}: {} ({})",
            p.path,
            p.detail
        );
    }
}

fn leftovers(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().starts_with(".tantra-tmp-") {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn killed_processes_never_break_the_root() {
    let trials: u64 = std::env::var("TANTRA_KILL_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let seed: u64 = std::env::var("TANTRA_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    eprintln!("kill test: {trials} trials, TANTRA_KILL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let inputs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let f = if i % 2 == 0 {
                OutputFormat::Safetensors
            } else {
                OutputFormat::Pt
            };
            weights(dir.path(), i, 512, f)
        })
        .collect();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // A baseline to calibrate the kill delays: how long a full register takes here.
    let t0 = Instant::now();
    let out = tantra(
        &root,
        &[
            "register",
            &s(&inputs[0]),
            "--model",
            "m",
            "--version",
            "base",
            "--formats",
            "all",
        ],
    );
    ok(&out);
    let full = t0.elapsed().max(Duration::from_millis(20));
    let out = tantra(
        &root,
        &[
            "checkpoint",
            "save",
            "m",
            &s(&inputs[1]),
            "--step",
            "1",
            "--metric",
            "loss=1",
        ],
    );
    assert!(out.status.success());

    let mut killed = 0;
    for trial in 0..trials {
        let input = &inputs[rng.below(inputs.len() as u64) as usize];
        let version = format!("v{}", rng.below(3));
        let step = (rng.below(3) + 2).to_string();
        let args: Vec<String> = match rng.below(6) {
            pick @ 0..=2 => {
                let mut a: Vec<String> = vec![
                    "register".into(),
                    s(input),
                    "--model".into(),
                    "m".into(),
                    "--version".into(),
                    version,
                    "--formats".into(),
                    "all".into(),
                ];
                if pick == 2 {
                    a.push("--force".into());
                }
                a
            }
            3 => vec![
                "checkpoint".into(),
                "save".into(),
                "m".into(),
                s(input),
                "--step".into(),
                step,
                "--metric".into(),
                "loss=0.5".into(),
                "--force".into(),
            ],
            4 => vec!["remove".into(), "m".into(), version],
            _ => {
                let wm = WeightManager::open(&root).unwrap();
                match wm.backups().unwrap().last() {
                    Some(b) => vec!["restore".into(), b.id.clone()],
                    None => vec!["verify".into()],
                }
            }
        };
        let delay = Duration::from_micros(rng.below(full.as_micros() as u64 * 5 / 4));
        let mut child = bin()
            .arg("--root")
            .arg(&root)
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let context = format!("trial {trial} (seed {seed}): {args:?} killed after {delay:?}");
        check_invariants(&root, &context);
        if rng.below(4) == 0 {
            let out = cleanup(&root);
            assert_exit(&out, 0, &format!("{context}: cleanup"));
            only_quarantined(&root, &format!("{context}: after cleanup"));
            assert!(
                leftovers(&root).is_empty(),
                "{context}: {:?}",
                leftovers(&root)
            );
        }
    }
    eprintln!("{killed} of {trials} processes were killed while running");
    ok(&cleanup(&root));
    only_quarantined(&root, "verify at the end");
    assert!(leftovers(&root).is_empty(), "{:?}", leftovers(&root));
    assert!(
        killed > 0,
        "no process was killed mid-run; the delays are too long"
    );
}

#[test]
fn concurrent_processes_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let n = 6u32;
    let inputs: Vec<PathBuf> = (0..n)
        .map(|i| weights(dir.path(), 100 + i, 64, OutputFormat::Safetensors))
        .collect();
    let mut children = Vec::new();
    for (i, f) in inputs.iter().enumerate() {
        let model = if i % 2 == 0 { "a" } else { "b" };
        let child = bin()
            .arg("--root")
            .arg(&root)
            .args([
                "register",
                f.to_str().unwrap(),
                "--model",
                model,
                "--version",
            ])
            .arg(format!("v{i}"))
            .args(["--formats", "all", "--tag"])
            .arg(format!("t{i}"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    // Two processes racing for one version name with different weights: exactly one wins.
    let race: Vec<_> = [0usize, 1]
        .iter()
        .map(|&i| {
            bin()
                .arg("--root")
                .arg(&root)
                .args([
                    "register",
                    inputs[i].to_str().unwrap(),
                    "--model",
                    "c",
                    "--version",
                    "same",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        ok(&c.wait_with_output().unwrap());
    }
    let results: Vec<Output> = race
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let wins = results.iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "exactly one of two registrations of one name wins");
    let loser = results.iter().find(|o| !o.status.success()).unwrap();
    assert!(stderr(loser).contains("already registered"));

    let wm = WeightManager::open(&root).unwrap();
    let reg = wm.registry().unwrap();
    assert_eq!(reg.models["a"].versions.len(), 3);
    assert_eq!(reg.models["b"].versions.len(), 3);
    assert_eq!(reg.models["c"].versions.len(), 1);
    assert_eq!(
        wm.list(&Default::default()).unwrap().len(),
        (n as usize) * 3 + 1
    );
    assert!(wm
        .verify(&VerifyScope::default(), &NoProgress)
        .unwrap()
        .ok());
}

/// Eight processes at once for a minute (`TANTRA_SOAK_SECS`): four write (register, tag,
/// set-default, remove their own versions), four read (`verify`, `list-weights`, `versions`).
/// No update is lost (the registry ends with exactly what the writers kept) and no reader ever
/// sees a registered file missing or changed.
#[test]
fn eight_processes_mixing_writes_and_reads_lose_nothing() {
    let secs: u64 = std::env::var("TANTRA_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let inputs: Vec<PathBuf> = (0..8)
        .map(|i| weights(dir.path(), 500 + i, 16, OutputFormat::Safetensors))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let run = |args: &[String]| {
        bin()
            .arg("--root")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let (kept, reads) = std::thread::scope(|s| {
        let writers: Vec<_> = (0..4usize)
            .map(|w| {
                let inputs = &inputs;
                s.spawn(move || {
                    let model = format!("w{w}");
                    let mut mine: Vec<(String, String)> = Vec::new(); // (version, tag)
                    let mut k = 0;
                    while Instant::now() < deadline {
                        let v = format!("v{k}");
                        let tag = format!("t{k}");
                        let input = &inputs[(w + k) % inputs.len()];
                        let out = run(&a(&[
                            "register",
                            input.to_str().unwrap(),
                            "--model",
                            &model,
                            "--version",
                            &v,
                            "--formats",
                            "safetensors,pt",
                            "--tag",
                            &tag,
                        ]));
                        assert!(out.status.success(), "{}", stderr(&out));
                        mine.push((v.clone(), tag));
                        let out = run(&a(&["set-default", &model, &v]));
                        assert!(out.status.success(), "{}", stderr(&out));
                        if k % 3 == 2 {
                            // Remove an older one of my versions (never the default).
                            let (old, _) = mine.remove(0);
                            let out = run(&a(&["remove", &model, &old]));
                            assert!(out.status.success(), "{}", stderr(&out));
                        }
                        k += 1;
                    }
                    (model, mine)
                })
            })
            .collect();
        let readers: Vec<_> = (0..4usize)
            .map(|r| {
                s.spawn(move || {
                    let mut n = 0;
                    while Instant::now() < deadline {
                        let out = match r % 2 {
                            0 => run(&a(&["verify", "--json"])),
                            _ => run(&a(&["list-weights", "--all-formats", "--json"])),
                        };
                        if r % 2 == 0 && out.status.code() != Some(0) && !out.stdout.is_empty() {
                            let rep: serde_json::Value =
                                serde_json::from_slice(&out.stdout).unwrap();
                            for p in rep["problems"].as_array().unwrap() {
                                let kind = p["kind"].as_str().unwrap();
                                assert!(
                                    !matches!(kind, "missing" | "changed" | "registry" | "digests"),
                                    "a reader saw {p}"
                                );
                            }
                        } else {
                            assert!(out.status.success() || r % 2 == 0, "{}", stderr(&out));
                        }
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let kept: Vec<(String, Vec<(String, String)>)> =
            writers.into_iter().map(|h| h.join().unwrap()).collect();
        let reads: usize = readers.into_iter().map(|h| h.join().unwrap()).sum();
        (kept, reads)
    });
    let wm = WeightManager::open(&root).unwrap();
    let reg = wm.registry().unwrap();
    let mut writes = 0;
    for (model, mine) in &kept {
        let m = &reg.models[model];
        let have: Vec<(&String, &Vec<String>)> =
            m.versions.iter().map(|(v, r)| (v, &r.tags)).collect();
        let mut want: Vec<(String, Vec<String>)> = mine
            .iter()
            .map(|(v, t)| (v.clone(), vec![t.clone()]))
            .collect();
        want.sort();
        let mut have: Vec<(String, Vec<String>)> = have
            .into_iter()
            .map(|(v, t)| (v.clone(), t.clone()))
            .collect();
        have.sort();
        assert_eq!(have, want, "{model}: no update lost");
        assert_eq!(m.default.as_deref(), mine.last().map(|x| x.0.as_str()));
        writes += mine.len();
    }
    eprintln!(
        "{writes} versions kept, {} generations, {reads} reads in {secs}s",
        reg.generation
    );
    assert!(wm
        .verify(&VerifyScope::default(), &NoProgress)
        .unwrap()
        .ok());
}
