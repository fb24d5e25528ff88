//! Helpers shared by the store's integration tests: small weight files made in memory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use tantra_formats::{write_to, MemorySource, NoProgress, OutputFormat};

/// A small model whose values depend on `seed`: two tensors, 2x3 and 3.
pub fn tensors(seed: u32) -> MemorySource {
    let mut m = MemorySource::new();
    let a: Vec<f32> = (0..6).map(|i| (i as f32) + seed as f32 * 10.0).collect();
    let b: Vec<f32> = (0..3).map(|i| (i as f32) * 0.5 - seed as f32).collect();
    m.push_f32("layer.weight", vec![2, 3], &a).unwrap();
    m.push_f32("layer.bias", vec![3], &b).unwrap();
    m
}

/// A bigger model (about `mib` MiB) for tests that need work to take time.
pub fn big_tensors(seed: u32, mib: usize) -> MemorySource {
    let mut m = MemorySource::new();
    let per = (mib << 20) / 4 / 4;
    for t in 0..4 {
        let v: Vec<f32> = (0..per)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed ^ t) as f32)
            .collect();
        m.push_f32(format!("block.{t}.weight"), vec![per as u64], &v)
            .unwrap();
    }
    m
}

/// Writes `src` to `path` in `format`.
pub fn write_file(src: &MemorySource, path: &Path, format: OutputFormat) -> PathBuf {
    let mut f = std::fs::File::create(path).unwrap();
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    write_to(&mut f, format, src, &stem, &NoProgress).unwrap();
    path.to_path_buf()
}

/// Writes the seed-`seed` model as safetensors into `dir` and returns the path.
pub fn safetensors_file(dir: &Path, seed: u32) -> PathBuf {
    write_file(
        &tensors(seed),
        &dir.join(format!("in_{seed}.safetensors")),
        OutputFormat::Safetensors,
    )
}

/// Writes the seed-`seed` model as a PyTorch archive into `dir`.
pub fn pt_file(dir: &Path, seed: u32) -> PathBuf {
    write_file(
        &tensors(seed),
        &dir.join(format!("in_{seed}.pt")),
        OutputFormat::Pt,
    )
}

/// sha256 of a file, independently of the store.
pub fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Flips one byte in the middle of a file, keeping its size.
pub fn corrupt_one_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() - 3;
    b[i] ^= 0x55;
    // Write in place (not through a rename): this is what bit rot or an editor does.
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(i as u64)).unwrap();
    f.write_all(&b[i..i + 1]).unwrap();
}

/// Cuts a file in place to `keep(its length)` bytes, as a crash or a full disk would.
pub fn truncate(path: &Path, keep: impl FnOnce(u64) -> u64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(keep(len))
        .unwrap();
}
