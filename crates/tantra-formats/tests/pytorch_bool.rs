//! A `BoolStorage` byte other than 0 or 1 reads as true, as torch reads it: tantra serves,
//! streams, hashes and rewrites it as 1 (as it does for a safetensors `BOOL`), so a file whose
//! bools were stored as `2` has the same digest as the same file stored as `1`.
//!
//! What torch does with the same bytes (torch 2.x, `torch.load(weights_only=True)`, checked by
//! patching a saved `[False, True, True, False]` to `[0, 2, 255, 0]`): the tensor prints and
//! compares as `[False, True, True, False]` and `t.to(torch.uint8)` is `[0, 1, 1, 0]`; only its
//! untyped storage still holds the raw bytes. tantra's rule (DESIGN.md, "Names") is that a bool
//! is 0 or 1, so the value torch computes with is what it serves and writes.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::borrow::Cow;

use tantra_formats::pytorch::{write_pytorch, PytorchFile};
use tantra_formats::zip::ZipArchive;
use tantra_formats::{
    tensor_digest, DType, MemorySource, NoProgress, OutputFormat, TensorInfo, TensorSource,
};

/// A `.pt` with one bool tensor `m` of `[0, 1, 1, 0]`, and the same archive with its storage
/// bytes set to `stored`.
fn archives(stored: [u8; 4]) -> (Vec<u8>, Vec<u8>) {
    let mut src = MemorySource::new();
    src.push(TensorInfo::new("m", DType::Bool, vec![4]), vec![0, 1, 1, 0])
        .unwrap();
    let mut plain = Vec::new();
    write_pytorch(&mut plain, &src, "a", &NoProgress).unwrap();
    let zip = ZipArchive::parse(&plain).unwrap();
    let entry = zip.get("data/0").expect("storage record");
    let r = entry.range();
    assert_eq!(&plain[r.start as usize..r.end as usize], &[0, 1, 1, 0]);
    let mut odd = plain.clone();
    odd[r.start as usize..r.end as usize].copy_from_slice(&stored);
    (plain, odd)
}

#[test]
fn non_zero_bool_bytes_read_as_one() {
    let (plain, odd) = archives([0, 2, 0xff, 0]);
    let plain = PytorchFile::from_bytes(plain).unwrap();
    let odd = PytorchFile::from_bytes(odd).unwrap();
    assert_eq!(odd.tensors()[0].dtype, DType::Bool);
    let bytes = odd.tensor_bytes(0).unwrap();
    assert!(
        matches!(bytes, Cow::Owned(_)),
        "normalized, not the stored bytes"
    );
    assert_eq!(bytes.as_ref(), &[0, 1, 1, 0]);
    let mut streamed = Vec::new();
    odd.stream_tensor(0, &mut |c| {
        streamed.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(streamed, [0, 1, 1, 0]);
    let mut part = Vec::new();
    odd.stream_tensor_range(0, 1..3, &mut |c| {
        part.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(part, [1, 1]);
    // Not handed out as a raw file range for copying.
    assert_eq!(odd.file_range(0), None);
    assert_eq!(
        tensor_digest(&odd, 0).unwrap(),
        tensor_digest(&plain, 0).unwrap()
    );
}

#[test]
fn non_zero_bool_bytes_are_written_as_one() {
    let (_, odd) = archives([7, 0, 0, 1]);
    let odd = PytorchFile::from_bytes(odd).unwrap();
    for format in [OutputFormat::Safetensors, OutputFormat::Pt] {
        let mut out = Vec::new();
        tantra_formats::write_to(&mut out, format, &odd, "b", &NoProgress).unwrap();
        let back: Box<dyn TensorSource> = match format {
            OutputFormat::Safetensors => Box::new(
                tantra_formats::safetensors::SafetensorsFile::from_bytes(out.clone()).unwrap(),
            ),
            _ => Box::new(PytorchFile::from_bytes(out.clone()).unwrap()),
        };
        assert_eq!(back.tensor_bytes(0).unwrap().as_ref(), &[1, 0, 0, 1]);
        // The written bytes themselves are 0/1, not only what a reader makes of them.
        let needle = [1u8, 0, 0, 1];
        assert!(out.windows(4).any(|w| w == needle), "{format}");
        assert!(!out.windows(4).any(|w| w == [7, 0, 0, 1]), "{format}");
    }
}
