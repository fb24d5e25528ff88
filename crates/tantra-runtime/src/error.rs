//! The one error type of the runtimes. Each variant is one broken rule and carries what a user
//! needs to fix it: the tensor, the file, the expected and the found value.

use std::path::PathBuf;

use tantra_formats::{DType, FormatError};

/// An error from loading weights into a runtime or running it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A weight file could not be read.
    #[error(transparent)]
    Format(#[from] FormatError),

    /// A file around the weights (config, index) could not be read.
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// A JSON file (config.json, an index) is not what it should be.
    #[error("{path}: not valid JSON")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    /// The config describes no model tantra builds (a zero size, an unknown activation).
    #[error("the config is invalid")]
    Config(#[from] tantra_models::ConfigError),

    /// A config size the runtime refuses to allocate for.
    #[error("config: {field} = {value} is larger than the runtime accepts ({max})")]
    TooLarge {
        field: &'static str,
        value: usize,
        max: usize,
    },

    /// A tensor the config needs is not in the weights.
    #[error("tensor {name:?} is missing from the weights (the config needs it)")]
    MissingTensor { name: String },

    /// A tensor has a shape other than the config implies.
    #[error("tensor {name:?} has shape {found:?}, the config implies {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<u64>,
    },

    /// A tensor has an element type the runtime does not compute with.
    #[error("tensor {name:?} has dtype {dtype}; the runtime reads F32, F16, BF16 and F64")]
    DType { name: String, dtype: DType },

    /// The weights hold tensors the config does not account for (a different model or size).
    #[error("the weights hold {count} tensor(s) the config does not use, e.g. {examples:?}; is the config for these weights?")]
    UnexpectedTensors { count: usize, examples: Vec<String> },

    /// Two weight files of one model both hold a tensor.
    #[error("tensor {name:?} appears in more than one weight file")]
    DuplicateTensor { name: String },

    /// A weight value is NaN or infinite.
    #[error("tensor {name:?} holds a non-finite value at element {index}")]
    NonFinite { name: String, index: usize },

    /// A checkpoint's files could not be found or named (no weights in a directory, a shard
    /// index naming a file outside it): [`tantra_models::OpenError`] as it is.
    #[error(transparent)]
    Open(tantra_models::OpenError),

    /// A directory has no `config.json`.
    #[error("{dir}: no config.json (a Hugging Face model directory needs one)")]
    NoConfig { dir: PathBuf },

    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { id: u32, vocab_size: usize },

    /// Generation needs at least one input token or image.
    #[error("the prompt is empty: give a prompt, input ids or an image")]
    EmptyPrompt,

    /// A sampling setting out of range.
    #[error("{setting} = {value} is out of range: {rule}")]
    Sampling {
        setting: &'static str,
        value: String,
        rule: &'static str,
    },

    /// An input vector of the wrong length was handed to a model.
    #[error("{what}: expected {expected} values, got {found}")]
    InputShape {
        what: &'static str,
        expected: usize,
        found: usize,
    },

    /// An image could not be decoded.
    #[error("{path}: cannot decode the image: {reason}")]
    Image { path: PathBuf, reason: String },

    /// The weights root could not provide the model's weights or config.
    #[error(transparent)]
    Store(#[from] tantra_store::StoreError),

    /// A model name that is no architecture tantra runs.
    #[error(transparent)]
    UnknownArchitecture(#[from] tantra_models::arch::UnknownArchitecture),

    /// Weights or a config of another architecture than the one asked for.
    #[error("{what} is a {found} model, not {expected}")]
    WrongArchitecture {
        what: String,
        expected: &'static str,
        found: &'static str,
    },

    /// A thread count of zero.
    #[error("the thread count must be at least 1")]
    ZeroThreads,

    /// The thread pool could not be set up with that many threads.
    #[error("cannot run on {threads} thread(s)")]
    Threads {
        threads: usize,
        source: rayon::ThreadPoolBuildError,
    },

    /// A registered version has no config and none can be derived.
    #[error("no config for {model} {version}: register the weights with --config NAME, or import configs/{model}/{version}.json")]
    NoConfigFor { model: String, version: String },
}

impl From<tantra_models::OpenError> for RuntimeError {
    fn from(e: tantra_models::OpenError) -> Self {
        use tantra_models::OpenError as O;
        match e {
            O::Format(e) => RuntimeError::Format(e),
            O::Io { path, source } => RuntimeError::Io { path, source },
            O::Json { path, source } => RuntimeError::Json { path, source },
            O::MissingTensor { name } => RuntimeError::MissingTensor { name },
            other @ (O::NoWeights { .. } | O::BadShardName { .. }) => RuntimeError::Open(other),
        }
    }
}

/// Results of the runtimes.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;
