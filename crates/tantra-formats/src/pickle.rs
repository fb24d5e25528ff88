//! A pickle reader that executes nothing. (Being implemented.)

/// A rule of the safe pickle reader that the input breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("truncated at offset {0}")]
    Truncated(usize),
}
