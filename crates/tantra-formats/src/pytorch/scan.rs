//! `tantra scan` of a PyTorch file: the pickles of a zip archive or legacy file, or a bare
//! pickle, walked without loading tensors, after the same container parse that `inspect` uses so
//! that a file `inspect` refuses is never called safe.

use std::path::Path;

use crate::detect::{detect_bytes, Detected, NotWeights, DETECT_PREFIX};
use crate::error::FormatError;
use crate::pickle::{self, ScanReport, Verdict};
use crate::zip::ZipArchive;
use crate::Format;

use super::legacy::parse_legacy;
use super::read::{classify_archive, lay_out, map_file, parse_zip, Layout};
use super::PytorchError;

/// Scans a file for `tantra scan`: the pickle(s) of a zip archive or legacy file, or a bare
/// pickle (`.pkl`), without loading tensors. A safe verdict also means the pickle passed the
/// full reader (it would load).
///
/// # Errors
/// I/O errors, and files that are neither pickles nor PyTorch files (safetensors files are
/// reported safe: they hold no pickle).
pub fn scan_file(path: &Path) -> Result<ScanReport, FormatError> {
    let map = map_file(path)?;
    scan_bytes(map.bytes()).map_err(|e| FormatError::new(path, e))
}

/// [`scan_file`] over bytes in memory.
///
/// # Errors
/// Bytes that are neither a pickle nor a PyTorch file, and what they are instead.
pub fn scan_bytes(data: &[u8]) -> Result<ScanReport, NotWeights> {
    let head = &data[..data.len().min(DETECT_PREFIX)];
    match detect_bytes(head) {
        Detected::Weights(Format::PytorchZip) => Ok(container_check(scan_zip(data), || {
            parse_zip(None, data).and_then(|p| lay_out(None, &p))
        })),
        Detected::Weights(Format::PytorchLegacy) => Ok(container_check(scan_legacy(data), || {
            parse_legacy(None, data).and_then(|p| lay_out(None, &p))
        })),
        Detected::Weights(Format::Safetensors) => {
            Ok(match crate::safetensors::parse_header(data) {
                Ok(_) => ScanReport::with_verdict(Verdict::Safe),
                Err(e) => ScanReport::with_verdict(Verdict::Invalid(e.to_string())),
            })
        }
        Detected::Weights(_) => Ok(ScanReport::with_verdict(Verdict::Safe)),
        Detected::NotWeights(NotWeights::BarePickle) => Ok(pickle::scan(data)),
        Detected::NotWeights(NotWeights::Unknown(u)) => {
            // Protocol 0/1 pickles have no PROTO opcode; report them when they name globals.
            let r = pickle::scan(data);
            if matches!(r.verdict, Verdict::Invalid(_)) && r.globals.is_empty() {
                Err(NotWeights::Unknown(u))
            } else {
                Ok(r)
            }
        }
        Detected::NotWeights(n) => Err(n),
    }
}

/// A report that the pickle scan found safe is safe only if the file also opens: the same
/// container parse and layout as [`PytorchFile::open`] decide, so `scan` never calls safe what
/// `inspect` refuses.
fn container_check(
    mut report: ScanReport,
    open: impl FnOnce() -> Result<Layout, FormatError>,
) -> ScanReport {
    if report.is_safe() {
        if let Err(e) = open() {
            report.verdict = Verdict::Invalid(format!(
                "the file would be refused on load: {}",
                crate::error::chain(&e)
            ));
        }
    }
    report
}

fn scan_zip(data: &[u8]) -> ScanReport {
    let zip = match ZipArchive::parse(data) {
        Ok(z) => z,
        Err(e) => return ScanReport::with_verdict(Verdict::Invalid(format!("zip: {e}"))),
    };
    let mut report = ScanReport::with_verdict(Verdict::Safe);
    let class = classify_archive(&zip);
    if let Err(PytorchError::TorchScript | PytorchError::TorchPackage) = &class {
        // Scan every pickle it holds, then say what it is: code, not weights.
        for e in zip.entries() {
            if zip.relative_name(e).ends_with(".pkl") {
                if let Ok(bytes) = zip.data(data, e) {
                    report.merge(pickle::scan(bytes));
                }
            }
        }
        if let Err(e) = class {
            report.add_unsafe(e.to_string());
        }
        return report;
    }
    if let Err(e) = class {
        return ScanReport::with_verdict(Verdict::Invalid(e.to_string()));
    }
    let Some(pkl) = zip.get("data.pkl") else {
        return ScanReport::with_verdict(Verdict::Invalid(
            PytorchError::MissingRecord { name: "data.pkl" }.to_string(),
        ));
    };
    let Ok(bytes) = zip.data(data, pkl) else {
        return ScanReport::with_verdict(Verdict::Invalid("data.pkl lies outside the file".into()));
    };
    report.merge(pickle::scan(bytes));
    report
}

fn scan_legacy(data: &[u8]) -> ScanReport {
    let mut report = ScanReport::with_verdict(Verdict::Safe);
    let mut pos = 0usize;
    for _ in 0..5 {
        let rest = data.get(pos..).unwrap_or(&[]);
        let (r, end) = pickle::scan_prefix(rest);
        report.merge(r);
        match end {
            Some(e) => pos += e,
            None => return report,
        }
    }
    report
}
