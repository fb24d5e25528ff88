//! Completions and manual pages come from the same clap definitions as the parser: every
//! command appears in them, and the bash script is valid bash.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::{fails_with, ok, s, tantra_bare};

#[test]
fn completions_name_every_command() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let script = ok(&tantra_bare(&["completions", shell]));
        for cmd in [
            "show",
            "cp",
            "du",
            "list-weights",
            "register",
            "completions",
        ] {
            assert!(script.contains(cmd), "{shell}: no {cmd}");
        }
    }
    let script = ok(&tantra_bare(&["completions", "bash"]));
    assert!(script.contains("complete -F _tantra"), "{script}");
    // bash -n parses without running, where bash is installed.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tantra.bash");
    std::fs::write(&file, &script).unwrap();
    if let Ok(out) = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fails_with(&tantra_bare(&["completions", "tcsh"]), "invalid value");
}

#[test]
fn man_pages_for_every_command() {
    let page = ok(&tantra_bare(&["man"]));
    assert!(page.contains(".TH tantra 1"), "{page}");
    assert!(page.contains("show") && page.contains("MODEL"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    ok(&tantra_bare(&["man", "--dir", s(&out)]));
    for name in [
        "tantra.1",
        "tantra-show.1",
        "tantra-cp.1",
        "tantra-backups-rm.1",
    ] {
        let text = std::fs::read_to_string(out.join(name)).unwrap();
        assert!(text.contains(".TH"), "{name}");
    }
    let show = std::fs::read_to_string(out.join("tantra-show.1")).unwrap();
    assert!(show.contains("MODEL[:VERSION]"), "{show}");
}
