//! The safetensors reader and writer against files written by the reference tools
//! (`safetensors.torch.save_file`, `transformers`), kept in `fixtures/`.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use tantra_formats::safetensors::{parse_header, write_safetensors, SafetensorsFile};
use tantra_formats::{tensor_digest, NoProgress, TensorSource};

const ALL_DTYPES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/torch/all_dtypes.safetensors"
);
const MAMBA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/hf_mamba_tiny/safetensors/model.safetensors"
);
const EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/expected.json");

fn write(src: &dyn TensorSource) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_safetensors(&mut out, src, &NoProgress).unwrap();
    assert_eq!(n, out.len() as u64);
    out
}

fn header_len(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn all_dtypes_matches_expected_json() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(EXPECTED).unwrap()).unwrap();
    let entry = expected
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["file"] == "all_dtypes.safetensors")
        .unwrap();
    let src = SafetensorsFile::open(Path::new(ALL_DTYPES)).unwrap();

    let want = entry["tensors"].as_array().unwrap();
    assert_eq!(src.tensors().len(), want.len());
    for w in want {
        let name = w["name"].as_str().unwrap();
        let i = src.find(name).unwrap_or_else(|| panic!("missing {name}"));
        let t = &src.tensors()[i];
        assert_eq!(t.dtype.as_str(), w["dtype"].as_str().unwrap(), "{name}");
        let shape: Vec<u64> = w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        assert_eq!(t.shape, shape, "{name}");
        assert_eq!(
            tensor_digest(&src, i).unwrap(),
            w["sha256"].as_str().unwrap(),
            "{name}"
        );
        // The borrowed bytes and the streamed bytes agree.
        let mut streamed = Vec::new();
        src.stream_tensor(i, &mut |c| {
            streamed.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
        assert_eq!(*src.tensor_bytes(i).unwrap(), streamed[..], "{name}");
    }
    let meta: BTreeMap<String, String> = serde_json::from_value(entry["metadata"].clone()).unwrap();
    assert_eq!(src.metadata(), &meta);
    assert!(src.values().is_empty());
}

#[test]
fn mamba_fixture_reads() {
    let src = SafetensorsFile::open(Path::new(MAMBA)).unwrap();
    assert_eq!(src.tensors().len(), 22);
    assert_eq!(src.metadata().get("format").map(String::as_str), Some("pt"));
    let i = src.find("backbone.embeddings.weight").unwrap();
    assert_eq!(src.tensors()[i].shape, vec![64, 32]);
    assert_eq!(src.parameter_count(), 75648 / 4);
}

/// read -> write -> read gives the same tensors, and writing twice gives the same bytes.
#[test]
fn round_trips_are_exact_and_deterministic() {
    for path in [ALL_DTYPES, MAMBA] {
        let src = SafetensorsFile::open(Path::new(path)).unwrap();
        let out = write(&src);
        let back = SafetensorsFile::from_bytes(out.clone()).unwrap();
        assert_eq!(back.tensors().len(), src.tensors().len());
        for (i, t) in src.tensors().iter().enumerate() {
            let j = back.find(&t.name).unwrap();
            assert_eq!(&back.tensors()[j], t);
            assert_eq!(
                tensor_digest(&back, j).unwrap(),
                tensor_digest(&src, i).unwrap()
            );
        }
        assert_eq!(back.metadata(), src.metadata());
        assert_eq!(write(&src), out, "{path}: a second write differs");
        assert_eq!(
            write(&back),
            out,
            "{path}: writing the re-read file differs"
        );
    }
}

/// The mamba file was written by transformers through the reference writer with metadata
/// `{"format":"pt"}` only: tantra reproduces it byte for byte.
#[test]
fn reproduces_the_reference_writer_byte_for_byte() {
    let original = std::fs::read(MAMBA).unwrap();
    let src = SafetensorsFile::open(Path::new(MAMBA)).unwrap();
    assert!(write(&src) == original);
}

/// all_dtypes.safetensors differs from our output only in the order of its `__metadata__` keys:
/// the reference keeps metadata in a hash map and wrote `source` before `format`; tantra writes
/// keys sorted. Tensor order (the reference's dtype order, then name), offsets, header padding
/// and the data are identical.
#[test]
fn matches_the_reference_layout_up_to_metadata_key_order() {
    let original = std::fs::read(ALL_DTYPES).unwrap();
    let src = SafetensorsFile::open(Path::new(ALL_DTYPES)).unwrap();
    let ours = write(&src);
    assert_eq!(ours.len(), original.len());
    assert_eq!(header_len(&ours), header_len(&original));
    let n = 8 + header_len(&original);
    assert!(ours[n..] == original[n..], "data buffers differ");
    let theirs = std::str::from_utf8(&original[8..n]).unwrap();
    let mine = std::str::from_utf8(&ours[8..n]).unwrap();
    let reordered = theirs.replacen(
        r#"{"__metadata__":{"source":"fixture","format":"pt"}"#,
        r#"{"__metadata__":{"format":"pt","source":"fixture"}"#,
        1,
    );
    assert_ne!(reordered, theirs, "the fixture's metadata order changed");
    assert_eq!(mine, reordered);
}

/// Every prefix of a real file is refused, and `parse_header` agrees with `open`.
#[test]
fn truncated_real_files_are_refused() {
    let original = std::fs::read(ALL_DTYPES).unwrap();
    let header = parse_header(&original).unwrap();
    let src = SafetensorsFile::open(Path::new(ALL_DTYPES)).unwrap();
    assert_eq!(header.tensors(), src.tensors());
    for len in (0..original.len()).step_by(7) {
        assert!(parse_header(&original[..len]).is_err(), "{len}");
    }
}

#[test]
fn bool_bytes_other_than_0_and_1_read_as_true_and_are_written_as_1() {
    // Bool is one byte, 0 or 1 (DESIGN.md): torch reads any non-zero byte as True.
    let header = br#"{"b":{"dtype":"BOOL","shape":[5],"data_offsets":[0,5]}}   "#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0, 1, 2, 0x80, 0xff]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let f = SafetensorsFile::open(&path).unwrap();
    let want = [0u8, 1, 1, 1, 1];
    assert_eq!(f.tensor_bytes(0).unwrap().as_ref(), &want);
    let mut streamed = Vec::new();
    f.stream_tensor(0, &mut |c| {
        streamed.extend_from_slice(c);
        Ok(())
    })
    .unwrap();
    assert_eq!(streamed, want);
    assert_eq!(f.file_range(0), None);
    assert_eq!(
        tensor_digest(&f, 0).unwrap(),
        tantra_formats::digest::sha256_hex(&want)
    );
    let out = write(&f);
    let back = SafetensorsFile::from_bytes(out).unwrap();
    assert_eq!(back.tensor_bytes(0).unwrap().as_ref(), &want);
    assert!(back.file_range(0).is_none() || back.tensor_bytes(0).unwrap().as_ref() == want);
}
