//! Helpers shared by the CLI's integration tests: running the `tantra` binary as a user does
//! (never with the caller's `TANTRA_ROOT`), reading what it printed, and small weight files.
//!
//! Each test file includes this with `mod common;` and uses what it needs.
#![allow(dead_code)]

#[cfg(target_os = "linux")]
pub mod rss;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as J;
use tantra_formats::{write_to, MemorySource, NoProgress, OutputFormat};

/// The repository's `fixtures/` folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The `tantra` binary, with `TANTRA_ROOT` removed from its environment.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tantra"));
    c.env_remove("TANTRA_ROOT");
    c
}

/// Runs `tantra --root ROOT ARGS...` to completion.
pub fn tantra(root: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run tantra")
}

/// `tantra create-sample-weights --models MODELS --formats FORMATS` into `root`, which must
/// succeed; returns what it printed.
pub fn create_samples(root: &Path, models: &str, formats: &str) -> String {
    ok(&tantra(
        root,
        &[
            "create-sample-weights",
            "--models",
            models,
            "--formats",
            formats,
        ],
    ))
}

/// Runs `tantra ARGS...` (no `--root`) to completion.
pub fn tantra_bare(args: &[&str]) -> Output {
    bin().args(args).output().expect("run tantra")
}

/// Asserts that a run exited with `code`; a failure message starts with `context` and shows
/// both streams.
pub fn assert_exit(out: &Output, code: i32, context: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{context}: tantra exited {:?}, expected {code}: {}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Stdout of a run that must have succeeded (else the test fails showing both streams).
pub fn ok(out: &Output) -> String {
    assert_exit(out, 0, "tantra failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stdout of a run that must have succeeded, parsed as JSON.
pub fn ok_json(out: &Output) -> J {
    serde_json::from_str(&ok(out)).expect("stdout is JSON")
}

/// Stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts that a run failed as an error (exit 2) whose message contains `needle`.
pub fn fails_with(out: &Output, needle: &str) {
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = stderr(out);
    assert!(err.contains(needle), "{err}");
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Writes `m` to `path` in `format` and returns the path.
pub fn write_weights(m: &MemorySource, path: PathBuf, format: OutputFormat) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut f = std::fs::File::create(&path).expect("create a weight file");
    write_to(&mut f, format, m, &stem, &NoProgress).expect("write a weight file");
    path
}

/// The registry of a root, as JSON.
pub fn registry(root: &Path) -> J {
    let text = std::fs::read_to_string(root.join("weight_config.json")).expect("a registry");
    serde_json::from_str(&text).expect("the registry is JSON")
}
