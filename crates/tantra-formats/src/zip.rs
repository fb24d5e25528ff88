//! The zip container of PyTorch archives. (Being implemented.)

/// A rule of the zip container that the input breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipError {
    #[error("no end of central directory record")]
    NoEndRecord,
}
