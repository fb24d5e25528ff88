//! `tantra scan FILE... [--json]`: what a pickle would do if unpickled, without unpickling it.
//!
//! Lists the globals and opcodes each file's pickles use and gives a verdict: `safe` (only the
//! allowlist, and the safe reader accepts it), `unsafe` (it names something that could run code,
//! or is a TorchScript program / torch.package), `invalid` (malformed, or not a pickle at all),
//! `unsupported` (a legal tensor kind tantra does not read: quantized, sparse, meta, nested).
//! Exit 0 when every file is safe, 1 otherwise, 2 when a file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use tantra_formats::error::ErrorKind;
use tantra_formats::pickle::{ScanReport, Verdict};
use tantra_formats::pytorch::scan_file;

#[derive(clap::Args)]
pub struct Args {
    /// Files to scan (PyTorch archives, legacy files, bare pickles; safetensors hold no
    /// pickle), or registered MODEL[:VERSION]s.
    #[arg(required = true, value_name = "FILE|MODEL[:VERSION]")]
    pub files: Vec<PathBuf>,
    /// Print a JSON array, one object per file.
    #[arg(long)]
    pub json: bool,
}

/// One file of `scan --json`.
#[derive(serde::Serialize)]
struct ScanLine {
    path: String,
    verdict: &'static str,
    reasons: Vec<String>,
    protocol: Option<u8>,
    globals: Vec<String>,
    opcodes: std::collections::BTreeMap<String, u64>,
}

fn reasons(v: &Verdict) -> Vec<String> {
    match v {
        Verdict::Safe => Vec::new(),
        Verdict::Unsafe(r) | Verdict::Unsupported(r) => r.clone(),
        Verdict::Invalid(r) => vec![r.clone()],
    }
}

pub fn run(mut a: Args, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    for f in &mut a.files {
        *f = crate::target::weight_path(f, root)?;
    }
    let mut all_safe = true;
    let mut out = Vec::new();
    for file in &a.files {
        let report = match scan_file(file) {
            Ok(r) => r,
            // Not a pickle at all is a verdict about the file, not a failure of the scan.
            Err(e) if matches!(e.kind, ErrorKind::NotWeights(_)) => {
                ScanReport::with_verdict(Verdict::Invalid(e.kind.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        all_safe &= report.is_safe();
        if a.json {
            out.push(ScanLine {
                path: file.display().to_string(),
                verdict: report.verdict.name(),
                reasons: reasons(&report.verdict),
                protocol: report.protocol,
                globals: report.globals,
                opcodes: report.opcodes,
            });
        } else {
            println!("{}: {}", file.display(), report.verdict.name());
            for r in reasons(&report.verdict) {
                println!("  reason: {r}");
            }
            if !report.globals.is_empty() {
                println!("  globals: {}", report.globals.join(", "));
            }
            if !report.opcodes.is_empty() {
                let ops: Vec<String> = report
                    .opcodes
                    .iter()
                    .map(|(k, v)| format!("{k}x{v}"))
                    .collect();
                println!("  opcodes: {}", ops.join(" "));
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(if all_safe {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
