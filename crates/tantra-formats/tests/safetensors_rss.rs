//! Streaming a memory-mapped safetensors file keeps the resident set small.
//!
//! Its own test binary (so its own process): the resident set it measures is not shared with
//! other tests running in parallel threads.

// Test helpers may unwrap: a failure is a test failure.
#![allow(clippy::unwrap_used)]

#[cfg(target_os = "linux")]
#[test]
fn streaming_releases_mapped_pages() {
    use std::io::Write;
    use std::path::Path;

    use tantra_formats::safetensors::{SafetensorsFile, STREAM_CHUNK};
    use tantra_formats::TensorSource;

    /// File-backed resident memory of this process, in bytes.
    fn rss_file() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("RssFile:")).unwrap();
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    const LEN: usize = 96 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.safetensors");
    {
        let header =
            format!(r#"{{"big":{{"dtype":"U8","shape":[{LEN}],"data_offsets":[0,{LEN}]}}}}"#);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header.as_bytes()).unwrap();
        let block: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
        for _ in 0..LEN >> 20 {
            f.write_all(&block).unwrap();
        }
        f.flush().unwrap();
    }

    let src = SafetensorsFile::open(Path::new(&path)).unwrap();
    let before = rss_file();
    let mut peak = before;
    let mut total = 0usize;
    let mut sum = 0u64;
    src.stream_tensor(0, &mut |chunk| {
        assert!(chunk.len() <= STREAM_CHUNK);
        // Touch every page of the chunk.
        sum += chunk.iter().step_by(4096).map(|&b| b as u64).sum::<u64>();
        total += chunk.len();
        peak = peak.max(rss_file());
        Ok(())
    })
    .unwrap();
    assert_eq!(total, LEN);
    assert!(sum > 0);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "streamed {} MiB: file-backed RSS grew by at most {} MiB",
        LEN >> 20,
        growth >> 20
    );
    assert!(
        growth < 3 * STREAM_CHUNK as u64,
        "RSS grew by {growth} bytes while streaming"
    );

    // The control: touching the whole map through `tensor_bytes` (which releases nothing) does
    // grow the resident set by about the file, so the measurement above means something.
    let before = rss_file();
    let bytes = src.tensor_bytes(0).unwrap();
    let touched: u64 = bytes.iter().step_by(4096).map(|&b| b as u64).sum();
    assert!(touched > 0);
    let control = rss_file().saturating_sub(before);
    eprintln!("control without release: grew by {} MiB", control >> 20);
    assert!(
        control > (LEN as u64) / 2,
        "control grew by only {control} bytes"
    );
}
