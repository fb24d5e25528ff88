//! Fuzzes the safe pickle reader, its scanner, and the legacy PyTorch reader built on them.
//!
//! What must hold:
//! - no input panics, hangs or overflows the stack; scanning and parsing never hold more than
//!   32 bytes per input byte plus 128 KiB at once, flattening more than that plus 32 MiB
//!   (counted by the allocator in `common/alloc.rs`);
//! - the scanner and the machine agree: a pickle the machine accepts scans safe (every global
//!   allowlisted, no refused opcode), and one the scanner calls unsafe is refused;
//! - a flattened tree has unique names and only tensors whose views fit their storages;
//! - a legacy file that opens serves every tensor at its declared size, streamed or not.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tantra_formats::pickle::{
    classify_global, scan, Leaf, Limits, ParseOptions, PersistentIds, Pickle, Verdict,
};

mod common;

#[path = "common/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn check_flat(p: &Pickle, p_len: usize) {
    let limits = Limits {
        max_visits: 1 << 16,
        ..Limits::default()
    };
    let Ok(flat) = alloc::within("flatten", p_len, alloc::FLATTEN_FIXED, || {
        p.flatten(&limits)
    }) else {
        return;
    };
    let mut names = std::collections::HashSet::new();
    for (name, leaf) in &flat.entries {
        assert!(names.insert(name.as_str()), "duplicate name {name:?}");
        if let Leaf::Tensor(t) = leaf {
            assert_eq!(t.shape.len(), t.stride.len());
            let bytes = t.storage.byte_len().expect("checked storage size");
            let elements = bytes / t.elem.size();
            let numel = t.numel();
            if numel > 0 {
                let reach: u64 = t
                    .shape
                    .iter()
                    .zip(&t.stride)
                    .map(|(&d, &s)| (d - 1) * s)
                    .sum();
                assert!(t.offset + reach < elements, "view past its storage");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let report = alloc::within_budget("scan", data.len(), || scan(data));
    for opts in [
        PersistentIds::Zip,
        PersistentIds::Legacy,
        PersistentIds::Forbidden,
    ] {
        if let Ok(p) = alloc::within_budget("Pickle::parse", data.len(), || {
            Pickle::parse(data, &ParseOptions::new(opts))
        }) {
            {
                assert_eq!(
                    report.verdict,
                    Verdict::Safe,
                    "accepted but scanned {:?}",
                    report.verdict
                );
                for g in &report.globals {
                    let (m, n) = g.rsplit_once('.').expect("module.name");
                    assert!(
                        classify_global(m, n).is_ok(),
                        "{g} accepted but not allowlisted"
                    );
                }
                check_flat(&p, data.len());
            }
        }
    }
    if let Verdict::Unsafe(_) = report.verdict {
        assert!(Pickle::parse(data, &ParseOptions::new(PersistentIds::Zip)).is_err());
    }
    common::check_pytorch_file(data);
});
