//! Fuzzes the GGUF reader and, for every file it accepts whose tensors it can decode, the
//! read -> write -> read round trip.
//!
//! What must hold:
//! - no input panics or hangs, and parsing it never holds more than 32 bytes per input byte
//!   plus 128 KiB at once (counted by the allocator in `common/alloc.rs`);
//! - an accepted header's tensors lie inside the file, in info order, each at the running
//!   offset padded to the alignment, with the size their type and `ne` need;
//! - every tensor is served at its declared size (or refused as a type tantra cannot decode),
//!   and streaming gives the same bytes as `tensor_bytes`;
//! - such a file writes, reads back with the same tensors, values and metadata, and writing is
//!   deterministic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tantra_formats::gguf::write::{metadata_for, plan, write_gguf, TargetType};
use tantra_formats::gguf::{parse_header, GgufFile};
use tantra_formats::{NoProgress, TensorSource};

#[path = "common/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn write(src: &GgufFile) -> Vec<u8> {
    let planned = plan(src, TargetType::Keep).expect("an accepted file plans");
    let kv = metadata_for(src, Some(&src.header().kv), TargetType::Keep, &planned);
    let mut out = Vec::new();
    let w = write_gguf(&mut out, src, kv, planned, &NoProgress).expect("an accepted file writes");
    assert_eq!(w.bytes, out.len() as u64);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = alloc::within_budget("parse_header", data.len(), || parse_header(data)) else {
        return;
    };
    let mut expected = 0u64;
    for t in &header.tensors {
        assert_eq!(t.offset, expected, "{}", t.name);
        assert_eq!(t.start, header.data_start + t.offset);
        assert!(t.start + t.nbytes <= data.len() as u64);
        assert_eq!(t.ty.nbytes(&t.ne), Some(t.nbytes));
        expected = (t.offset + t.nbytes).next_multiple_of(header.alignment);
    }

    let src = alloc::within_budget("GgufFile::from_bytes", data.len(), || {
        GgufFile::from_bytes(data.to_vec())
    })
    .expect("accepted once, accepted again");
    // By their debug form: a NaN in the metadata is not equal to itself (a run found one).
    assert_eq!(format!("{:?}", src.header()), format!("{header:?}"));
    let mut decodable = true;
    for (i, t) in src.tensors().iter().enumerate() {
        let Ok(b) = src.tensor_bytes(i) else {
            assert!(!header.tensors[i].ty.can_dequantize());
            decodable = false;
            continue;
        };
        assert_eq!(Some(b.len() as u64), t.byte_len(), "{}", t.name);
        let mut streamed = Vec::new();
        src.stream_tensor(i, &mut |c| {
            streamed.extend_from_slice(c);
            Ok(())
        })
        .expect("streams");
        assert!(streamed == b.as_ref());
    }
    if !decodable || src.tensors().iter().any(|t| t.name.is_empty()) {
        return;
    }
    let out = write(&src);
    let back = GgufFile::from_bytes(out.clone()).expect("our output reads back");
    assert_eq!(back.tensors(), src.tensors());
    for i in 0..src.tensors().len() {
        assert!(back.tensor_bytes(i).expect("bytes") == src.tensor_bytes(i).expect("bytes"));
    }
    assert_eq!(back.values().len(), src.values().len());
    assert!(write(&back) == out, "writing is deterministic");
});
