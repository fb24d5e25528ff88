//! Errors of the configs and of initialization: one variant per broken rule, each naming the
//! field (with its path inside nested configs, `text_config.hidden_size`) and what would be
//! accepted, so that a user can fix a `config.json` from the message alone.

/// A config that cannot describe a model tantra builds.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// An integer field outside the range tantra accepts.
    #[error("{field} = {value} is out of range (expected {min}..={max})")]
    OutOfRange {
        field: String,
        value: u64,
        min: u64,
        max: u64,
    },
    /// A float field that is NaN, infinite or breaks its sign rule.
    #[error("{field} = {value} is not allowed (expected a finite number {rule})")]
    BadNumber {
        field: String,
        value: f64,
        rule: &'static str,
    },
    /// A string field with a value tantra does not implement.
    #[error("{field} = {value:?} is not supported (expected {expected})")]
    Unsupported {
        field: String,
        value: String,
        expected: &'static str,
    },
    /// `intermediate_size` present and not `expand * hidden_size` (transformers recomputes it).
    #[error(
        "{field} = {found} disagrees with expand * hidden_size = {expected}; remove it or fix it"
    )]
    IntermediateSize {
        field: String,
        found: u64,
        expected: u64,
    },
    /// `time_step_min > time_step_max`.
    #[error("{field}: time_step_min ({min}) must not exceed time_step_max ({max})")]
    TimeStepRange { field: String, min: f64, max: f64 },
    /// A size that must divide another.
    #[error("{field} = {value} is not a multiple of {divisor_field} = {divisor}")]
    NotMultiple {
        field: String,
        value: u64,
        divisor_field: &'static str,
        divisor: u64,
    },
    /// A token id outside the vocabulary.
    #[error("{field} = {id} is not a token id (vocab_size is {vocab_size})")]
    TokenId {
        field: String,
        id: u64,
        vocab_size: u64,
    },
    /// A list field that must not be empty (a charset, normalization constants).
    #[error("{field} must not be empty")]
    Empty { field: String },
    /// A list field of the wrong length.
    #[error("{field} has {found} entries, expected {expected}")]
    Length {
        field: String,
        found: usize,
        expected: usize,
    },
    /// The same character twice in an OCR charset.
    #[error("{field}: character {ch:?} appears twice (positions {first} and {second})")]
    DuplicateChar {
        field: String,
        ch: char,
        first: usize,
        second: usize,
    },
    /// A config for another architecture.
    #[error("model_type is {found:?}, expected {expected:?}")]
    ModelType {
        found: String,
        expected: &'static str,
    },
    /// Sizes whose product does not fit 64 bits.
    #[error("{field}: the sizes overflow (a parameter would hold more than 2^64 elements)")]
    Overflow { field: String },
    /// JSON that does not parse into the config type.
    #[error("not a valid {arch} config: {message}")]
    Json { arch: &'static str, message: String },
}

impl ConfigError {
    /// The field the error is about (`text_config.hidden_size`), `None` for whole-config
    /// errors (JSON that does not parse).
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::OutOfRange { field, .. }
            | ConfigError::BadNumber { field, .. }
            | ConfigError::Unsupported { field, .. }
            | ConfigError::IntermediateSize { field, .. }
            | ConfigError::TimeStepRange { field, .. }
            | ConfigError::NotMultiple { field, .. }
            | ConfigError::TokenId { field, .. }
            | ConfigError::Empty { field }
            | ConfigError::Length { field, .. }
            | ConfigError::DuplicateChar { field, .. }
            | ConfigError::Overflow { field } => Some(field),
            ConfigError::ModelType { .. } => Some("model_type"),
            ConfigError::Json { .. } => None,
        }
    }

    pub(crate) fn json(arch: &'static str, e: serde_json::Error) -> Self {
        ConfigError::Json {
            arch,
            message: e.to_string(),
        }
    }
}

/// Reads an `arch` config from JSON; its rules are the caller's to check.
///
/// # Errors
/// [`ConfigError::Json`] for JSON that is not of the config's shape.
pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    arch: &'static str,
    value: &serde_json::Value,
) -> Result<T, ConfigError> {
    T::deserialize(value).map_err(|e| ConfigError::json(arch, e))
}

/// Checks that a config's `model_type` is `expected`.
pub(crate) fn check_model_type(found: &str, expected: &'static str) -> Result<(), ConfigError> {
    if found != expected {
        return Err(ConfigError::ModelType {
            found: found.to_string(),
            expected,
        });
    }
    Ok(())
}

/// Checks `lo <= value <= hi` for an integer field.
pub(crate) fn check_range(field: &str, value: usize, lo: u64, hi: u64) -> Result<(), ConfigError> {
    let v = value as u64;
    if v < lo || v > hi {
        return Err(ConfigError::OutOfRange {
            field: field.to_string(),
            value: v,
            min: lo,
            max: hi,
        });
    }
    Ok(())
}

/// Checks that a float is finite and positive (`strict`) or non-negative.
pub(crate) fn check_positive(field: &str, value: f64, strict: bool) -> Result<(), ConfigError> {
    let ok = value.is_finite() && if strict { value > 0.0 } else { value >= 0.0 };
    if !ok {
        return Err(ConfigError::BadNumber {
            field: field.to_string(),
            value,
            rule: if strict { "> 0" } else { ">= 0" },
        });
    }
    Ok(())
}
