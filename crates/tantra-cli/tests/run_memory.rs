//! Peak memory of `tantra run` at bf16 and q8 (issue 14: "peak memory no more than the weights
//! at that precision plus 20%"), measured by the kernel for the child process (`wait4`'s
//! `ru_maxrss`) on a Mamba of wide matrices written here from f32 weights.
//!
//! What is held to the budget is the growth over a run of the same command on a model too small
//! to matter (one layer, width 64): the binary's code, its threads' stacks and the allocator's
//! fixed costs are in both runs and cancel. The growth must stay within 1.2x the weights at the
//! precision (measured 1.08x at bf16 and 1.14x at q8). Loading used to hold an f32 copy of the
//! largest matrix (9.4 MB for a 3072 x 768 one, beside 13.4 MB of q8 weights here) and 8 MiB of
//! the mapped file at a time, which alone is more than the fifth allowed. Its own test binary (and
//! the GGUF case another, `run_memory_gguf.rs`), so that nothing else raises this process's
//! resident set, which the measured children's peaks start from.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod common;

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;

    use tantra_runtime::{MambaRuntime, Precision};

    use crate::common::rss::{own_rss, peak_rss, write_mamba as write_model};

    /// Peak resident set over the weights at their precision the issue allows.
    const BUDGET: f64 = 1.2;

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
        let tmp = tempfile::tempdir().unwrap();
        let (tiny, wide) = (tmp.path().join("tiny"), tmp.path().join("wide"));
        write_model(&tiny, 64, 1);
        write_model(&wide, 768, 3);
        // Every run before anything is loaded here, so that this process stays small (the
        // children's peaks start from its resident set).
        let runs: Vec<(Precision, u64, u64)> = [Precision::Bf16, Precision::Q8]
            .into_iter()
            .map(|p| (p, run(&tiny, p.name()), run(&wide, p.name())))
            .collect();
        let own = own_rss();
        let mut report = Vec::new();
        for (precision, base, peak) in runs {
            assert!(
                own < base,
                "this test process holds {own} B, more than the small run's {base} B: the \
                 measurement would be its own"
            );
            let bytes = MambaRuntime::from_path_as(&wide, precision)
                .unwrap()
                .model()
                .bytes_per_token() as u64;
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
}
