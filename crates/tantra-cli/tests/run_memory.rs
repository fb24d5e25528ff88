//! Peak memory of `tantra run` at bf16 and q8 (issue 14: "peak memory no more than the weights
//! at that precision plus 20%"), measured by the kernel for the child process (`wait4`'s
//! `ru_maxrss`) on a Mamba of wide matrices written here from f32 weights.
//!
//! What is held to the budget is the growth over a run of the same command on a model too small
//! to matter (one layer, width 64): the binary's code, its threads' stacks and the allocator's
//! fixed costs are in both runs and cancel. The growth must stay within 1.2x the weights at the
//! precision (measured 1.02x at bf16 and 1.04x at q8). Loading used to hold an f32 copy of the
//! largest matrix (9.4 MB for a 3072 x 768 one, beside 13.4 MB of q8 weights here) and 8 MiB of
//! the mapped file at a time, which alone is more than the fifth allowed. Its own test binary, so
//! that nothing else runs in the measured children.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;
    use std::process::Command;

    use tantra_models::hf::export_seeded;
    use tantra_models::mamba::TimeStepRank;
    use tantra_models::{Architecture, ModelConfig, Preset};
    use tantra_runtime::{MambaRuntime, Precision};

    use crate::common::rss::{own_rss, peak_rss};

    /// Peak resident set over the weights at their precision the issue allows.
    const BUDGET: f64 = 1.2;

    /// One measurement at a time: each reads this process's resident set, which another
    /// test's loading would raise.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Writes a seeded Mamba of the given shape (f32 safetensors and its `config.json`).
    fn write_model(dir: &Path, hidden: usize, layers: usize) {
        let ModelConfig::Mamba(mut config) = Architecture::Mamba.preset(Preset::SampleSmall) else {
            unreachable!("the mamba preset is a mamba config")
        };
        config.hidden_size = hidden;
        config.intermediate_size = Some(2 * hidden);
        config.num_hidden_layers = layers;
        config.time_step_rank = TimeStepRank::Fixed(hidden.div_ceil(16));
        export_seeded(&config, 0, dir).unwrap();
    }

    fn run(dir: &Path, dtype: &str) -> u64 {
        let dir = dir.to_str().unwrap();
        peak_rss(&[
            "run",
            "mamba",
            "--weights",
            dir,
            "--prompt",
            "hello",
            "--max-new-tokens",
            "2",
            "--dtype",
            dtype,
        ])
    }

    #[test]
    fn peak_memory_stays_within_the_weights_plus_a_fifth() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = tempfile::tempdir().unwrap();
        let (tiny, wide) = (tmp.path().join("tiny"), tmp.path().join("wide"));
        write_model(&tiny, 64, 1);
        write_model(&wide, 768, 3);
        let mut report = Vec::new();
        for precision in [Precision::Bf16, Precision::Q8] {
            let bytes = MambaRuntime::from_path_as(&wide, precision)
                .unwrap()
                .model()
                .bytes_per_token() as u64;
            let base = run(&tiny, precision.name());
            let peak = run(&wide, precision.name());
            let own = own_rss();
            assert!(
                own < base,
                "this test process holds {own} B, more than the small run's {base} B: the \
                 measurement would be its own"
            );
            let growth = peak.saturating_sub(base);
            let ratio = growth as f64 / bytes as f64;
            report.push(format!(
                "{precision}: weights {bytes} B, run peak {peak} B, small-model run {base} B, \
                 growth {ratio:.3}x the weights"
            ));
            assert!(
                ratio <= BUDGET,
                "{precision}: peak RSS grew by {growth} B for {bytes} B of weights \
                 ({ratio:.2}x > {BUDGET}x)\n{}",
                report.join("\n")
            );
        }
        eprintln!("{}", report.join("\n"));
    }

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
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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
