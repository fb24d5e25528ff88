//! Format detection by content.
//!
//! The extension of a weight file is a hint at best (`pytorch_model.bin` is a zip archive or a
//! legacy pickle, never "binary"): the first bytes decide. Files that are not weights but are
//! often mistaken for them (git-lfs pointers checked out without `git lfs pull`, NumPy)
//! get an error that says what they are.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::FormatError;
use crate::Format;

/// How many leading bytes [`detect_bytes`] needs at most.
pub const DETECT_PREFIX: usize = 64;

const LEGACY_MAGIC: [u8; 14] = [
    0x80, 0x02, 0x8A, 0x0A, 0x6C, 0xFC, 0x9C, 0x46, 0xF9, 0x20, 0x6A, 0xA8, 0x50, 0x19,
];

/// A file that is not a weight file tantra reads, and what it is instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotWeights {
    #[error("this is a git-lfs pointer, not weights (run `git lfs pull` to fetch the real file)")]
    GitLfsPointer,
    #[error("this is a NumPy .npy array, not a weight file")]
    Npy,
    #[error("the file is empty")]
    Empty,
    #[error("a bare pickle, not a PyTorch archive (no zip container and no legacy magic number)")]
    BarePickle,
    #[error("not a weight file: the first bytes ({0}) match no known format (safetensors, PyTorch zip, PyTorch legacy, GGUF)")]
    Unknown(String),
}

/// What the first bytes of a file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    Weights(Format),
    NotWeights(NotWeights),
}

/// Names the format of `prefix`, the first bytes of a file ([`DETECT_PREFIX`] are enough;
/// fewer is fine for short files).
pub fn detect_bytes(prefix: &[u8]) -> Detected {
    use Detected::*;
    if prefix.is_empty() {
        return NotWeights(self::NotWeights::Empty);
    }
    if prefix.starts_with(b"PK\x03\x04") {
        return Weights(Format::PytorchZip);
    }
    if prefix.starts_with(&LEGACY_MAGIC) {
        return Weights(Format::PytorchLegacy);
    }
    if prefix.starts_with(b"GGUF") {
        return Weights(Format::Gguf);
    }
    if prefix.starts_with(b"\x93NUMPY") {
        return NotWeights(self::NotWeights::Npy);
    }
    if prefix.starts_with(b"version https://git-lfs") {
        return NotWeights(self::NotWeights::GitLfsPointer);
    }
    if prefix.len() >= 9 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&prefix[..8]);
        let header_len = u64::from_le_bytes(n);
        let rest = &prefix[8..];
        let first = rest.iter().find(|b| !b.is_ascii_whitespace());
        if header_len >= 2 && first == Some(&b'{') {
            return Weights(Format::Safetensors);
        }
    }
    if prefix[0] == 0x80 && prefix.len() >= 2 && (2..=5).contains(&prefix[1]) {
        return NotWeights(self::NotWeights::BarePickle);
    }
    let shown: Vec<String> = prefix.iter().take(8).map(|b| format!("{b:02x}")).collect();
    NotWeights(self::NotWeights::Unknown(shown.join(" ")))
}

/// Reads the first bytes of `path` and names its format; a file that is not weights is an
/// error saying what it is.
pub fn detect(path: &Path) -> Result<Format, FormatError> {
    let mut f = File::open(path).map_err(|e| FormatError::new(path, e))?;
    let mut buf = [0u8; DETECT_PREFIX];
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FormatError::new(path, e)),
        }
    }
    match detect_bytes(&buf[..filled]) {
        Detected::Weights(f) => Ok(f),
        Detected::NotWeights(n) => Err(FormatError::new(path, n)),
    }
}

/// The format an extension suggests, for the "extension disagrees with content" warning.
pub fn format_hint_from_extension(path: &Path) -> Option<&'static [Format]> {
    const ST: &[Format] = &[Format::Safetensors];
    const PT: &[Format] = &[Format::PytorchZip, Format::PytorchLegacy];
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "safetensors" => Some(ST),
        "pt" | "pth" | "bin" | "ckpt" => Some(PT),
        "gguf" => Some(&[Format::Gguf]),
        _ => None,
    }
}

/// A warning when `path`'s extension suggests another format than `actual`.
pub fn extension_mismatch(path: &Path, actual: Format) -> Option<String> {
    let hint = format_hint_from_extension(path)?;
    if hint.contains(&actual) {
        return None;
    }
    Some(format!(
        "{}: the extension suggests {} but the content is {}; reading it as {}",
        path.display(),
        hint[0].name(),
        actual.name(),
        actual.name()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_format() {
        assert_eq!(
            detect_bytes(b"PK\x03\x04rest"),
            Detected::Weights(Format::PytorchZip)
        );
        let mut legacy = LEGACY_MAGIC.to_vec();
        legacy.extend_from_slice(b".\x80\x02");
        assert_eq!(
            detect_bytes(&legacy),
            Detected::Weights(Format::PytorchLegacy)
        );
        let mut st = 20u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"  {\"a\":1}");
        assert_eq!(detect_bytes(&st), Detected::Weights(Format::Safetensors));
        assert_eq!(
            detect_bytes(b"GGUF\x03\0\0\0"),
            Detected::Weights(Format::Gguf)
        );
    }

    #[test]
    fn names_what_is_not_weights() {
        assert_eq!(
            detect_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab"),
            Detected::NotWeights(NotWeights::GitLfsPointer)
        );
        assert_eq!(
            detect_bytes(b"\x93NUMPY\x01\0"),
            Detected::NotWeights(NotWeights::Npy)
        );
        assert_eq!(detect_bytes(b""), Detected::NotWeights(NotWeights::Empty));
        assert_eq!(
            detect_bytes(b"\x80\x02}q\0."),
            Detected::NotWeights(NotWeights::BarePickle)
        );
        assert!(matches!(
            detect_bytes(b"hello world, not weights"),
            Detected::NotWeights(NotWeights::Unknown(_))
        ));
    }

    #[test]
    fn extension_is_only_a_hint() {
        assert!(extension_mismatch(Path::new("a.bin"), Format::PytorchZip).is_none());
        let w = extension_mismatch(Path::new("a.safetensors"), Format::PytorchZip);
        assert!(w.is_some_and(|w| w.contains("a.safetensors")));
    }
}
