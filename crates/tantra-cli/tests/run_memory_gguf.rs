//! Peak memory of `tantra run FILE.gguf --dtype q8` on a Q8_0 GGUF (issue 14: a file already at
//! the precision is used as it is, within the weights plus 20%), measured as `run_memory.rs`
//! measures a safetensors model: the growth of the child's `ru_maxrss` over the same run on a
//! model too small to matter. Its own test binary, so that no other test's loading raises this
//! process's resident set, which the measured children's peaks start from.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;
    use std::process::Command;

    use tantra_runtime::{MambaRuntime, Precision};

    use crate::common::rss::{own_rss, peak_rss, write_mamba as write_model};

    /// Peak resident set over the weights at their precision the issue allows.
    const BUDGET: f64 = 1.2;

    /// `import-hf` of the model in `dir` (as [`write_model`] wrote it) into the weights root
    /// `root` as `mamba:version`, then `export-gguf --type q8_0` of it at `out`: what
    /// llama.cpp's tools would run. Both in child processes, so that this process's resident
    /// set, which the measured children's peaks start from, stays small.
    fn write_q8_0_gguf(root: &Path, dir: &Path, version: &str, out: &Path) {
        let tantra = |args: &[&str]| {
            let o = Command::new(env!("CARGO_BIN_EXE_tantra"))
                .env("TANTRA_ROOT", root)
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "tantra {args:?}: {o:?}");
        };
        let dir = dir.to_str().unwrap();
        tantra(&["import-hf", dir, "--model", "mamba", "--version", version]);
        let model = format!("mamba:{version}");
        tantra(&[
            "export-gguf",
            "--type",
            "q8_0",
            &model,
            out.to_str().unwrap(),
        ]);
    }

    /// A Q8_0 GGUF run at q8 is loaded from its blocks: no f32 copy of the model, no second
    /// copy of a matrix, the file's pages released range by range. Reading a GGUF used to copy
    /// every tensor into memory as f32 first (3.6x the q8 weights on its own).
    #[test]
    fn a_q8_0_gguf_at_q8_stays_within_the_weights_plus_a_fifth() {
        let tmp = tempfile::tempdir().unwrap();
        let (tiny, wide) = (tmp.path().join("tiny"), tmp.path().join("wide"));
        write_model(&tiny, 64, 1);
        write_model(&wide, 768, 3);
        let root = tmp.path().join("root");
        let (tiny_gguf, wide_gguf) = (tmp.path().join("tiny.gguf"), tmp.path().join("wide.gguf"));
        write_q8_0_gguf(&root, &tiny, "tiny", &tiny_gguf);
        write_q8_0_gguf(&root, &wide, "wide", &wide_gguf);
        let run = |file: &Path| {
            peak_rss(&[
                "run",
                file.to_str().unwrap(),
                "--prompt",
                "hello",
                "--max-new-tokens",
                "2",
                "--dtype",
                "q8",
            ])
        };
        let base = run(&tiny_gguf);
        let peak = run(&wide_gguf);
        let own = own_rss();
        assert!(
            own < base,
            "this process holds {own} B, more than the small run's {base} B"
        );
        let bytes = MambaRuntime::from_path_as(&wide_gguf, Precision::Q8)
            .unwrap()
            .model()
            .bytes_per_token() as u64;
        let growth = peak.saturating_sub(base);
        let ratio = growth as f64 / bytes as f64;
        let report = format!(
            "Q8_0 GGUF at q8: weights {bytes} B, run peak {peak} B, small-model run {base} B, \
             growth {ratio:.3}x the weights"
        );
        eprintln!("{report}");
        assert!(ratio <= BUDGET, "{report} (> {BUDGET}x)");
    }
}
