//! Peak resident memory of a `tantra` child process, as the kernel measured it (`wait4`'s
//! `ru_maxrss`), for the tests that hold the binary to a memory budget (`many_tensors.rs`,
//! `run_memory.rs`). Linux only.

use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

/// This process's resident set in bytes now (`VmRSS`).
pub fn own_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line in /proc/self/status");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

/// Runs `tantra args` (stdout discarded), asserts it succeeded, and returns its peak resident
/// set in bytes.
///
/// A child's `ru_maxrss` starts from the high-water mark of the address space it was spawned
/// from (the kernel carries it over at `exec`, and std spawns with `vfork`): this process's,
/// which writing test files raised. So the mark is first reset to the current resident set
/// (`/proc/self/clear_refs`, "5"); a caller whose own resident set ([`own_rss`]) may come near
/// what it measures checks that it stays below.
#[allow(clippy::zombie_processes)] // reaped by `wait4`, which std cannot do with rusage
pub fn peak_rss<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> u64 {
    // Freed heap that the allocator still holds counts in the resident set (writing a test
    // model leaves megabytes of it); hand it back before the mark is reset.
    // SAFETY: malloc_trim only releases free memory of glibc's heap.
    unsafe { libc::malloc_trim(0) };
    std::fs::write("/proc/self/clear_refs", "5").expect("reset the peak RSS mark");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tantra"))
        .env_remove("TANTRA_ROOT")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tantra");
    let pid = child.id() as libc::pid_t;
    let stderr = child.stderr.take().expect("a piped stderr");
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped (std never waited on it).
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4 on tantra {args:?}");
    let err = reader.join().unwrap_or_default();
    let status = std::process::ExitStatus::from_raw(status);
    assert!(status.success(), "tantra {args:?}: {status}: {err}");
    u64::try_from(usage.ru_maxrss).expect("a non-negative ru_maxrss") * 1024
}

/// Writes a seeded Mamba of the given width and depth (f32 safetensors and its `config.json`)
/// into `dir`, for the memory tests.
pub fn write_mamba(dir: &std::path::Path, hidden: usize, layers: usize) {
    use tantra_models::mamba::TimeStepRank;
    use tantra_models::{Architecture, ModelConfig, Preset};
    let ModelConfig::Mamba(mut config) = Architecture::Mamba.preset(Preset::SampleSmall) else {
        unreachable!("the mamba preset is a mamba config")
    };
    config.hidden_size = hidden;
    config.intermediate_size = Some(2 * hidden);
    config.num_hidden_layers = layers;
    config.time_step_rank = TimeStepRank::Fixed(hidden.div_ceil(16));
    tantra_models::hf::export_seeded(&config, 0, dir).expect("write a seeded Mamba");
}
