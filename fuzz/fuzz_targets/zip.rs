//! Fuzzes the zip container reader and the PyTorch archive reader built on it.
//!
//! What must hold:
//! - no input panics or hangs, and reading it never holds more than 32 bytes per input byte
//!   plus 128 KiB at once (counted by the allocator in `common/alloc.rs`);
//! - an accepted archive's entries lie inside the file, do not overlap, live
//!   under one prefix with clean relative names, and are found again by name;
//! - an archive that opens as a PyTorch file serves every tensor at its declared size, and
//!   streaming gives the same bytes as `tensor_bytes`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tantra_formats::zip::ZipArchive;

mod common;

#[path = "common/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fuzz_target!(|data: &[u8]| {
    if let Ok(zip) =
        alloc::within_budget("ZipArchive::parse", data.len(), || ZipArchive::parse(data))
    {
        let prefix = format!("{}/", zip.prefix());
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for e in zip.entries() {
            assert!(e.name.starts_with(&prefix), "{}", e.name);
            let rel = zip.relative_name(e);
            assert!(!rel.is_empty());
            assert!(rel
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."));
            assert!(!e.name.contains('\\') && !e.name.contains('\0'));
            assert_eq!(zip.get(rel), Some(e));
            let bytes = zip.data(data, e).expect("entry data inside the file");
            assert_eq!(bytes.len() as u64, e.size);
            ranges.push((e.header_offset, e.data_offset + e.size));
        }
        ranges.sort();
        for w in ranges.windows(2) {
            assert!(w[0].1 <= w[1].0, "entries overlap");
        }
    }
    common::check_pytorch_file(data);
});
