//! Streaming a large tensor out of a memory-mapped archive keeps the resident set small: the
//! reader hands out chunks of at most 8 MiB and releases the pages behind them. In its own test
//! binary so that no other test's allocations disturb the measurement.

#![allow(clippy::unwrap_used)] // tests may unwrap
#![cfg(target_os = "linux")]

mod pytorch_support;

use std::io::{Seek, SeekFrom, Write};

use pytorch_support::P;
use sha2::{Digest, Sha256};
use tantra_formats::pytorch::PytorchFile;
use tantra_formats::zip::records::{
    CentralHeader, EndRecord, LocalHeader, DATA_DESCRIPTOR_FLAG, UTF8_FLAG,
};
use tantra_formats::{tensor_digest, TensorSource};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Writes a torch-like archive whose storage `data/0` is `len` bytes of (sparse) zeros.
fn sparse_archive(path: &std::path::Path, len: u64) {
    let numel = (len / 4) as i64;
    let pkl = P::new(2)
        .empty_dict()
        .str("big")
        .tensor_v2("FloatStorage", "0", numel, 0, &[numel], &[1], false)
        .setitem()
        .done();
    let mut f = std::fs::File::create(path).unwrap();
    let mut cd = Vec::new();
    let mut pos: u64 = 0;
    let flags = UTF8_FLAG | DATA_DESCRIPTOR_FLAG;
    let records: Vec<(&str, Option<&[u8]>, u64)> = vec![
        ("big/data.pkl", Some(&pkl), pkl.len() as u64),
        ("big/data/0", None, len),
        ("big/version", Some(b"3\n"), 2),
    ];
    for (name, data, size) in records {
        let off = pos as u32;
        let mut h = Vec::new();
        LocalHeader {
            flags,
            name: name.as_bytes(),
            ..LocalHeader::default()
        }
        .encode(&mut h);
        f.write_all(&h).unwrap();
        pos += h.len() as u64;
        match data {
            Some(d) => f.write_all(d).unwrap(),
            None => {
                f.seek(SeekFrom::Current(size as i64)).unwrap();
            }
        }
        pos += size;
        CentralHeader {
            flags,
            compressed_size: size as u32,
            size: size as u32,
            local_offset: off,
            name: name.as_bytes(),
            ..CentralHeader::default()
        }
        .encode(&mut cd);
    }
    let mut end = cd.clone();
    EndRecord {
        entries: 3,
        cd_size: cd.len() as u64,
        cd_offset: pos,
        comment: &[],
    }
    .encode(&mut end);
    f.write_all(&end).unwrap();
}

#[test]
fn streaming_a_large_tensor_keeps_rss_low() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pt");
    let len: u64 = 256 << 20;
    sparse_archive(&path, len);
    let file = PytorchFile::open(&path).unwrap();
    assert_eq!(file.tensors()[0].shape, vec![len / 4]);
    let before = rss_kib();
    let mut peak = before;
    let mut chunks = 0usize;
    let mut largest = 0usize;
    let mut total = 0u64;
    let mut h = Sha256::new();
    file.stream_tensor(0, &mut |c| {
        chunks += 1;
        largest = largest.max(c.len());
        total += c.len() as u64;
        h.update(c);
        peak = peak.max(rss_kib());
        Ok(())
    })
    .unwrap();
    assert_eq!(total, len);
    assert!(largest <= 8 << 20, "chunk of {largest} bytes");
    assert!(chunks >= 32);
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB while streaming 256 MiB"
    );
    let zeros = vec![0u8; 1 << 20];
    let mut z = Sha256::new();
    for _ in 0..256 {
        z.update(&zeros);
    }
    assert_eq!(hex::encode(h.finalize()), hex::encode(z.finalize()));
    // The digest helper streams too.
    let before = rss_kib();
    let d = tensor_digest(&file, 0).unwrap();
    assert_eq!(d.len(), 64);
    assert!((rss_kib().saturating_sub(before)) / 1024 < 64);
}

#[test]
fn streaming_part_of_a_large_tensor_keeps_rss_low() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.pt");
    let len: u64 = 256 << 20;
    sparse_archive(&path, len);
    let file = PytorchFile::open(&path).unwrap();
    let before = rss_kib();
    let mut peak = before;
    let mut total = 0u64;
    let mut largest = 0usize;
    let (s, e) = ((100 << 20) + 3, (228 << 20) + 5);
    file.stream_tensor_range(0, s..e, &mut |c| {
        assert!(c.iter().all(|&b| b == 0));
        largest = largest.max(c.len());
        total += c.len() as u64;
        peak = peak.max(rss_kib());
        Ok(())
    })
    .unwrap();
    assert_eq!(total, e - s);
    assert!(largest <= 8 << 20, "chunk of {largest} bytes");
    let growth_mib = (peak.saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 64,
        "RSS grew by {growth_mib} MiB while streaming 128 MiB"
    );
}
