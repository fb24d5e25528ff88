//! Names that become file names.
//!
//! Model, version, tag and config names end up in paths under the root
//! (`weights/<model>_<version>_<format>.<ext>`, `configs/<model>/<name>.json`), so they are held
//! to `[A-Za-z0-9._-]+` with no `..`: nothing can escape the root or hide from `ls`. A leading
//! `.` is refused too (hidden files, and the temporary-file prefix starts with one), and so is a
//! leading `-` (it reads as an option on every command line).

use tantra_formats::OutputFormat;

use crate::error::{Result, StoreError};

/// The longest name accepted.
pub const MAX_NAME_LEN: usize = 128;

/// True when `name` is a valid model, version, tag or config name.
pub fn is_valid_name(name: &str) -> bool {
    let Some(first) = name.bytes().next() else {
        return false;
    };
    name.len() <= MAX_NAME_LEN
        && (first.is_ascii_alphanumeric() || first == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && !name.contains("..")
}

/// Checks a name; `what` says which kind of name it is (`model`, `version`, ...).
///
/// # Errors
/// [`StoreError::InvalidName`] for an empty name, a character outside `[A-Za-z0-9._-]`, a
/// `..`, a leading `.` or `-`, or more than [`MAX_NAME_LEN`] bytes.
///
/// ```
/// use tantra_store::validate_name;
/// assert!(validate_name("version", "sample_small").is_ok());
/// assert!(validate_name("version", "../etc").is_err());
/// ```
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(StoreError::InvalidName {
            what,
            name: name.to_string(),
        })
    }
}

/// The canonical file name of a registered weight file:
/// `<model>_<version>_<format>.<ext>` (`mamba_sample_small_pt.pt`).
pub fn weight_file_name(model: &str, version: &str, format: OutputFormat) -> String {
    format!("{model}_{version}_{}.{}", format.name(), format.extension())
}

/// The file name of a checkpoint's weights (`step_0000001000.safetensors`).
pub fn checkpoint_file_name(step: u64, format: OutputFormat) -> String {
    format!("step_{step:010}.{}", format.extension())
}

/// The file name of a checkpoint's record (`step_0000001000.json`).
pub fn checkpoint_record_name(step: u64) -> String {
    format!("step_{step:010}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for n in ["mamba", "sample_small", "v1.2", "full-2024", "_x", "A9"] {
            assert!(is_valid_name(n), "{n}");
        }
    }

    #[test]
    fn refuses_names_that_escape_or_hide() {
        for n in [
            "",
            "..",
            ".",
            "a/b",
            "a\\b",
            "../x",
            "x..y",
            ".hidden",
            "-rf",
            "a b",
            "é",
            "a\0",
            ".tantra-tmp-x",
        ] {
            assert!(!is_valid_name(n), "{n:?}");
        }
        assert!(!is_valid_name(&"a".repeat(MAX_NAME_LEN + 1)));
        let e = validate_name("model", "a/b").unwrap_err().to_string();
        assert!(e.contains("model") && e.contains("a/b"), "{e}");
    }

    #[test]
    fn canonical_names_are_readable() {
        assert_eq!(
            weight_file_name("mamba", "sample_small", OutputFormat::Pt),
            "mamba_sample_small_pt.pt"
        );
        assert_eq!(
            weight_file_name("mamba", "sample_small", OutputFormat::Safetensors),
            "mamba_sample_small_safetensors.safetensors"
        );
        assert_eq!(
            checkpoint_file_name(1000, OutputFormat::Safetensors),
            "step_0000001000.safetensors"
        );
    }
}
