//! Fuzzes safetensors validation and, for every input it accepts, the read -> write -> read
//! round trip.
//!
//! `parse_header` is the code `SafetensorsFile::open` runs on a mapped file, so this covers the
//! reader's every rule without touching the file system. What must hold:
//! - no input panics or hangs, and reading or writing it never holds more than 32 bytes per
//!   input byte plus 128 KiB at once (counted by the allocator in `common/alloc.rs`);
//! - an accepted header's ranges tile the data buffer exactly and match dtype and shape;
//! - an accepted file writes, the output reads back with the same tensors, bytes, metadata
//!   (plus `format`) and values, and writing that again gives the same bytes.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tantra_formats::safetensors::{parse_header, write_safetensors, SafetensorsFile};
use tantra_formats::{NoProgress, TensorSource, Value};

#[path = "common/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => {
            x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan())
        }
        _ => a == b,
    }
}

fn same_values(a: &BTreeMap<String, Value>, b: &BTreeMap<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn write(src: &dyn TensorSource) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_safetensors(&mut out, src, &NoProgress).expect("an accepted file writes");
    assert_eq!(n, out.len() as u64);
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(header) = alloc::within_budget("parse_header", data.len(), || parse_header(data)) else {
        return;
    };

    let mut end = header.data_start();
    for (i, t) in header.tensors().iter().enumerate() {
        let r = header.tensor_range(i).expect("a range per tensor");
        assert_eq!(r.start, end, "tensors tile the data buffer");
        assert_eq!(Some(r.end - r.start), t.byte_len(), "{}", t.name);
        assert!(header.tensor_data(data, i).is_some());
        end = r.end;
    }
    assert_eq!(end, data.len() as u64, "nothing after the last tensor");

    let src = alloc::within_budget("SafetensorsFile::from_bytes", data.len(), || {
        SafetensorsFile::from_bytes(data.to_vec())
    })
    .expect("accepted once, accepted again");
    assert_eq!(src.header(), &header);
    let out = alloc::within_budget("write_safetensors", data.len(), || write(&src));
    let back = SafetensorsFile::from_bytes(out.clone()).expect("our output reads back");

    let by_name: BTreeMap<&str, usize> = back
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    assert_eq!(by_name.len(), src.tensors().len());
    for (i, t) in src.tensors().iter().enumerate() {
        let j = by_name[t.name.as_str()];
        assert_eq!(&back.tensors()[j], t);
        assert_eq!(
            back.tensor_bytes(j).expect("bytes"),
            src.tensor_bytes(i).expect("bytes")
        );
    }
    let mut meta = src.metadata().clone();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    assert_eq!(back.metadata(), &meta);
    assert!(same_values(back.values(), src.values()));
    assert!(write(&back) == out, "writing is deterministic");
});
