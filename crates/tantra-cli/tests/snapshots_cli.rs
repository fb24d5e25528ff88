//! Snapshot tests (insta) of what people and programs read: the human and JSON output of the
//! naming commands, listings and reports, and the errors of the mistakes tantra refuses.
//! Temporary paths, times, ages, backup ids and speeds are filtered out; everything else
//! (sizes, digests, counts, wording) is compared as is. `cargo insta review` updates them.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::Path;

use common::{bin, fixtures, s, write_weights};
use tantra_formats::{MemorySource, OutputFormat};

/// `tantra --root ROOT ARGS` as a user named `tester` runs it: exit code, stdout and stderr
/// in one text.
fn run(root: &Path, args: &[&str]) -> String {
    let out = bin()
        .env("USER", "tester")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    format!(
        "$ tantra {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Filters that make the output independent of where and when the test runs.
fn filters(dir: &Path) -> Vec<(String, String)> {
    let tmp = regex_escape(&dir.to_string_lossy());
    vec![
        (tmp, "[TMP]".into()),
        (
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z".into(),
            "[TIME]".into(),
        ),
        (
            r"\d{4}-\d{2}-\d{2} \d{2}:\d{2} \((just now|\d+ \w+ ago)\)".into(),
            "[WHEN]".into(),
        ),
        (r"\d{8}-\d{6}-[0-9a-f]{6}".into(), "[BACKUP]".into()),
        (r"in \d+\.\d+s \([^)]*/s\)".into(), "in [SECONDS]".into()),
        // Column widths follow the filtered cells: compare words, not padding (indentation
        // at the start of a line is kept).
        (r"(\S)  +".into(), "$1  ".into()),
    ]
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if "\\.+*?()|[]{}^$#&-~".contains(c) {
                format!("\\{c}")
            } else {
                c.to_string()
            }
        })
        .collect()
}

macro_rules! snap {
    ($dir:expr, $name:expr, $text:expr) => {{
        let f = filters($dir);
        let f: Vec<(&str, &str)> = f.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        insta::with_settings!({filters => f, prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!($name, $text);
        });
    }};
}

fn weights(dir: &Path, seed: u32) -> std::path::PathBuf {
    let mut m = MemorySource::new();
    let a: Vec<f32> = (0..12).map(|i| i as f32 + seed as f32).collect();
    m.push_f32("w", vec![3, 4], &a).unwrap();
    m.push_f32("b", vec![4], &a[..4]).unwrap();
    write_weights(&m, dir.join(format!("in{seed}.pt")), OutputFormat::Pt)
}

#[test]
fn naming_and_listing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("Model");
    let f1 = weights(d, 1);
    let f2 = weights(d, 2);
    snap!(
        d,
        "register",
        run(
            &root,
            &["register", s(&f1), "tiny:v1", "--formats", "safetensors"]
        )
    );
    snap!(
        d,
        "register_json",
        run(&root, &["register", s(&f2), "tiny:v2", "--json"])
    );
    snap!(
        d,
        "register_duplicate",
        run(&root, &["register", s(&f1), "tiny:v9"])
    );
    snap!(d, "tag", run(&root, &["tag", "tiny:v1", "golden"]));
    snap!(d, "ls", run(&root, &["ls"]));
    snap!(d, "ls_json", run(&root, &["ls", "--json"]));
    snap!(d, "ls_all_formats", run(&root, &["ls", "--all-formats"]));
    snap!(d, "versions", run(&root, &["versions", "tiny"]));
    snap!(
        d,
        "show",
        run(&root, &["show", "tiny:golden", "--history", "1"])
    );
    snap!(
        d,
        "show_json",
        run(&root, &["show", "tiny:golden", "--history", "0", "--json"])
    );
    snap!(d, "set_default", run(&root, &["set-default", "tiny:v2"]));
    snap!(
        d,
        "set_default_quiet",
        run(&root, &["-q", "set-default", "tiny:golden"])
    );
    snap!(d, "rm_dry_run", run(&root, &["rm", "tiny:v9", "--dry-run"]));
    snap!(
        d,
        "cp_json",
        run(&root, &["cp", "tiny:v2", "tiny:v3", "--json"])
    );
    snap!(d, "verify", run(&root, &["verify", "tiny:golden"]));
    snap!(d, "inspect_ref", run(&root, &["inspect", "tiny:golden"]));
    snap!(
        d,
        "diff_versions",
        run(&root, &["diff", "tiny:v1", "tiny:v2"])
    );
    snap!(
        d,
        "diff_versions_json",
        run(&root, &["diff", "tiny:golden", "tiny:v2", "--json"])
    );
    snap!(
        d,
        "diff_identical",
        run(&root, &["diff", "tiny:v1", "tiny:v9"])
    );
    let removed = run(&root, &["rm", "tiny:v9", "--json"]);
    let id = removed
        .split('"')
        .find(|w| w.len() == 22 && w.chars().nth(8) == Some('-'))
        .unwrap()
        .to_string();
    snap!(
        d,
        "backups_rm",
        run(&root, &["backups", "rm", &id, "--dry-run"]) + &run(&root, &["backups", "rm", &id])
    );
}

#[test]
fn mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("Model");
    let f1 = weights(d, 1);
    run(&root, &["register", s(&f1), "tiny:v1"]);
    snap!(
        d,
        "err_unknown_model_ls",
        run(&root, &["ls", "--model", "nosuch"])
    );
    snap!(
        d,
        "err_unknown_model_show",
        run(&root, &["show", "nosuch:v1"])
    );
    snap!(d, "err_unknown_version", run(&root, &["show", "tiny:nope"]));
    snap!(
        d,
        "err_remove_needs_version",
        run(&root, &["remove", "tiny"])
    );
    snap!(
        d,
        "err_both_spellings",
        run(&root, &["set-default", "tiny:v1", "v1"])
    );
    snap!(
        d,
        "err_not_a_file_or_model",
        run(&root, &["inspect", "mambo:v1"])
    );
    snap!(
        d,
        "err_register_no_version",
        run(&root, &["register", s(&f1), "tiny"])
    );
    snap!(
        d,
        "err_prune_unknown_metric",
        run(
            &root,
            &[
                "checkpoint",
                "save",
                "tiny",
                s(&f1),
                "--step",
                "1",
                "--metric",
                "loss=1"
            ],
        ) + &run(
            &root,
            &[
                "checkpoint",
                "prune",
                "tiny",
                "--keep-best",
                "1",
                "--metric",
                "los"
            ],
        )
    );
    snap!(
        d,
        "err_bare_duration",
        run(&root, &["cleanup", "--backups-older-than", "3"])
    );
}

#[test]
fn config_mistakes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("Model");
    run(
        &root,
        &[
            "create-sample-weights",
            "--models",
            "mamba",
            "--formats",
            "safetensors",
        ],
    );
    let set = |args: &[&str]| {
        let mut a = vec!["config", "set", "mamba", "sample_small"];
        a.extend_from_slice(args);
        run(&root, &a)
    };
    snap!(d, "err_config_typo", set(&["hidden_sise", "10"]));
    snap!(d, "err_config_type", set(&["hidden_size", "abc"]));
    snap!(
        d,
        "err_config_breaks_weights",
        set(&["num_hidden_layers", "3"])
    );
    snap!(d, "config_set", set(&["layer_norm_epsilon", "0.0001"]));
}

/// `tantra ARGS` without `--root`, `TANTRA_ROOT` set to `env_root` when given, on a terminal
/// 100 columns wide: exit code, stdout and stderr.
fn run_bare(env_root: Option<&str>, args: &[&str]) -> String {
    let mut c = bin();
    c.env("COLUMNS", "100");
    if let Some(r) = env_root {
        c.env("TANTRA_ROOT", r);
    }
    let out = c.args(args).output().unwrap();
    format!(
        "$ tantra {}\nexit: {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `--root` is one global option: in the top-level help, on the commands that read the root
/// (before or after the command), never on those that do not, and never in a usage line
/// because `TANTRA_ROOT` is set.
#[test]
fn root_is_one_global_option() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let top = run_bare(None, &["--help"]);
    assert_eq!(top.matches("--root <DIR>").count(), 1, "{top}");
    snap!(d, "help_top", top);
    let ls = run_bare(None, &["ls", "--help"]);
    assert_eq!(ls.matches("--root <DIR>").count(), 1, "{ls}");
    snap!(d, "help_ls", ls);
    for args in [
        &["completions", "--help"][..],
        &["man", "--help"],
        &["help", "completions"],
    ] {
        let out = run_bare(None, args);
        assert!(!out.contains("--root"), "{out}");
        if args[0] == "completions" {
            snap!(d, "help_completions", out);
        }
    }
    // A global option: still accepted (and ignored) after `completions`, only not offered.
    let out = run_bare(None, &["completions", "bash", "--root", "x"]);
    assert!(
        out.contains("exit: 0") && out.contains("_tantra()"),
        "{out}"
    );
    // A usage error with TANTRA_ROOT set: the usage line does not make --root look required.
    let out = run_bare(Some("/nonexistent/Model"), &["register"]);
    assert!(out.contains("exit: 2") && out.contains("Usage:"), "{out}");
    assert!(!out.contains("--root"), "{out}");
    snap!(d, "err_usage_with_env_root", out);
    // --root works before and after the command, and wins over TANTRA_ROOT.
    let root = d.join("Model");
    run(
        &root,
        &[
            "create-sample-weights",
            "--models",
            "mamba",
            "--formats",
            "safetensors",
        ],
    );
    for args in [
        vec!["--root", s(&root), "versions", "mamba"],
        vec!["versions", "mamba", "--root", s(&root)],
    ] {
        let out = run_bare(Some("/nonexistent/Model"), &args);
        assert!(
            out.contains("exit: 0") && out.contains("sample_small"),
            "{out}"
        );
    }
    let out = run_bare(Some(s(&root)), &["versions", "mamba"]);
    assert!(
        out.contains("exit: 0") && out.contains("sample_small"),
        "{out}"
    );
    // An empty TANTRA_ROOT is a mistake, not ./Model.
    let out = run_bare(Some(""), &["versions", "mamba"]);
    assert!(
        out.contains("exit: 2") && out.contains("TANTRA_ROOT is set but empty"),
        "{out}"
    );
}

/// Copies the `hf_mamba_tiny` safetensors checkpoint to `dir/name` with `config.json`
/// replaced by `config`.
fn broken_checkpoint(dir: &Path, name: &str, config: &str) -> std::path::PathBuf {
    let src = fixtures().join("hf_mamba_tiny/safetensors");
    let out = dir.join(name);
    std::fs::create_dir(&out).unwrap();
    std::fs::copy(src.join("model.safetensors"), out.join("model.safetensors")).unwrap();
    std::fs::write(out.join("config.json"), config).unwrap();
    out
}

/// The last line of a [`run`]'s text (its error line), before the snapshot filters.
fn error_line(run_text: &str) -> &str {
    run_text.trim_end().lines().last().unwrap_or_default()
}

/// Errors with causes print each level once, outermost first, on one line: the command's
/// context, the library error naming the file, then its cause (issue 11).
#[test]
fn causes_print_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("Model");

    // Two levels: the file, and the operating system's reason.
    let folder = d.join("not_a_file");
    std::fs::create_dir(&folder).unwrap();
    let out = run(&root, &["inspect", s(&folder)]);
    assert_eq!(
        error_line(&out),
        format!(
            "error: {}: I/O error: Is a directory (os error 21)",
            folder.display()
        )
    );
    snap!(d, "err_cause_io", out);

    // Three levels: what the command was doing, the config file, the broken rule.
    let relu = r#"{"model_type": "mamba", "vocab_size": 1024, "hidden_size": 64, "state_size": 16, "num_hidden_layers": 2, "hidden_act": "relu"}"#;
    let m = broken_checkpoint(d, "relu", relu);
    let out = run(&root, &["run", s(&m), "hi", "--max-new-tokens", "1"]);
    assert_eq!(
        error_line(&out),
        format!(
            "error: cannot load weights from {}: the config is invalid: hidden_act = \"relu\" is not supported (expected \"silu\")",
            m.display()
        )
    );
    snap!(d, "err_cause_config_rule", out);

    // Three levels ending in serde's reason: config.json is cut short.
    let m = broken_checkpoint(d, "truncated_config", "{\"vocab_size\": 8");
    let out = run(&root, &["run", s(&m), "hi", "--max-new-tokens", "1"]);
    assert_eq!(
        error_line(&out),
        format!(
            "error: cannot load weights from {}: {}: not valid JSON: EOF while parsing an object at line 1 column 16",
            m.display(),
            m.join("config.json").display()
        )
    );
    snap!(d, "err_cause_config_json", out);

    // Two levels: import-hf names the file, serde says why.
    let m = broken_checkpoint(d, "import_truncated", "{\"vocab_size\": 8");
    let out = run(
        &root,
        &["import-hf", s(&m), "--model", "mamba", "--version", "x"],
    );
    assert_eq!(
        error_line(&out),
        format!(
            "error: {}: not valid JSON: EOF while parsing an object at line 1 column 16",
            m.join("config.json").display()
        )
    );
    snap!(d, "err_cause_json", out);
}
