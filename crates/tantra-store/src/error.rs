//! The store's one error type.
//!
//! Every variant names the file or the registry entry it is about, says what is wrong and, where
//! there is something to do, what to do. Errors from reading and writing weight files keep their
//! [`FormatError`] (which names the file and the rule broken).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tantra_formats::FormatError;

/// An error from the weights root.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{}: I/O error", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A weight file could not be read, written or converted.
    #[error(transparent)]
    Format(#[from] FormatError),

    /// A model, version, tag, config or metric name that could escape the root or that `ls`
    /// would show badly.
    #[error("invalid {what} name {name:?}: use 1 to 128 of A-Z a-z 0-9 . _ -, starting with a letter, digit or '_', and no '..'")]
    InvalidName { what: &'static str, name: String },

    /// An argument that is not a name (a metric, a duration, a field path).
    #[error("invalid {what} {value:?}: {detail}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        detail: String,
    },

    /// A JSON file of the root (registry, backup manifest, checkpoint record, config) that does
    /// not parse or breaks its schema.
    #[error("{}: {detail}; run `tantra verify` to see the damage and `tantra repair` to fix it", path.display())]
    Corrupt { path: PathBuf, detail: String },

    /// The registry is gone from a root that holds weights: never taken for an empty store.
    #[error("{}: the registry is missing but this root holds weights ({found}); run `tantra repair` to restore it from a kept generation and the history", path.display())]
    RegistryMissing { path: PathBuf, found: String },

    /// A symlink, folder or device where the store keeps only regular files.
    #[error("{}: {what}; the store keeps only regular files: replace it with the file itself", path.display())]
    NotRegular { path: PathBuf, what: String },

    /// A JSON file written by a newer tantra.
    #[error("{}: schema {found} is newer than this tantra understands (up to {supported}); upgrade tantra", path.display())]
    SchemaTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },

    /// Another process held the root's lock for longer than the timeout.
    #[error("timed out after {:.1}s waiting for the lock {}: another tantra process is updating this root; wait for it, or raise TANTRA_LOCK_TIMEOUT (the lock is released when its holder exits, so a crashed process never leaves it held)", waited.as_secs_f64(), path.display())]
    LockTimeout { path: PathBuf, waited: Duration },

    /// A model the registry does not hold; `known` lists the ones it does.
    #[error("model {model:?} is not registered (known models: {known})")]
    UnknownModel { model: String, known: String },

    #[error(
        "version {version:?} of model {model:?} is not registered (see `tantra versions {model}`)"
    )]
    UnknownVersion { model: String, version: String },

    #[error("model {model:?} has no default version; name a version or run `tantra set-default {model}:VERSION`")]
    NoDefault { model: String },

    #[error("{model}:{version} has no {format} file (it has: {available})")]
    FormatMissing {
        model: String,
        version: String,
        format: String,
        available: String,
    },

    /// A version name is immutable.
    #[error("{model}:{version} is already registered with different weights (content {existing:.12} vs {new:.12}); a version name is immutable: register under a new version, or pass --force to replace it (the old files are backed up first)")]
    VersionExists {
        model: String,
        version: String,
        existing: String,
        new: String,
    },

    /// A registered file is not what the registry recorded.
    #[error("{}: the file changed since it was registered ({what}); it was not used. Run `tantra verify`, then restore it from a backup (`tantra backups`) or register it again with --force", path.display())]
    Changed { path: PathBuf, what: String },

    /// A registered file is gone.
    #[error("{}: registered file is missing; restore it from a backup (`tantra backups`) or remove the entry with `tantra remove {model}:{version}`", path.display())]
    Missing {
        path: PathBuf,
        model: String,
        version: String,
    },

    /// Two (model, version) pairs would share a file name.
    #[error("{}: this file name already belongs to {owner}; choose another model or version name", path.display())]
    NameCollision { path: PathBuf, owner: String },

    /// A restore would replace a file that the registry names now.
    #[error("{}: cannot restore over this file: it is registered to {owner}; remove it first with `tantra remove {model}:{version} --format {format}`", path.display())]
    RestoreBlocked {
        path: PathBuf,
        owner: String,
        model: String,
        version: String,
        format: String,
    },

    /// Files given as one version hold different tensors.
    #[error("{}: does not hold the same tensors as {other}: {detail}", path.display())]
    ContentMismatch {
        path: PathBuf,
        other: String,
        detail: String,
    },

    /// The content of a file disagrees with the format it was given as.
    #[error("{}: the content is {actual}, not {expected}", path.display())]
    WrongFormat {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    #[error("{model}:{version} is the default version of {model}; run `tantra set-default {model}:OTHER` first, or pass --force")]
    IsDefault { model: String, version: String },

    #[error("no backup with id {id:?} (see `tantra backups`)")]
    UnknownBackup { id: String },

    #[error("backup id {id:?} is ambiguous: it starts {count} backup ids; give more of it")]
    AmbiguousBackup { id: String, count: usize },

    #[error("{}: backup {id} is damaged ({detail}); it cannot be restored", path.display())]
    BackupDamaged {
        id: String,
        path: PathBuf,
        detail: String,
    },

    #[error(
        "model {model:?} has no checkpoint at step {step} (see `tantra checkpoint list {model}`)"
    )]
    UnknownCheckpoint { model: String, step: u64 },

    #[error("{}: a checkpoint of {model} at step {step} already exists; pass --force to replace it (the old one is backed up)", path.display())]
    CheckpointExists {
        path: PathBuf,
        model: String,
        step: u64,
    },

    #[error("{}: no such config; create it with `tantra config import {model} {name} FILE`", path.display())]
    UnknownConfig {
        path: PathBuf,
        model: String,
        name: String,
    },

    #[error("{}: the config already exists; pass --force to replace it (the old one is backed up)", path.display())]
    ConfigExists { path: PathBuf },

    #[error("{}: the config is invalid: {}", path.display(), problems.join("; "))]
    ConfigInvalid {
        path: PathBuf,
        problems: Vec<String>,
    },

    #[error("no config schema for model type {model_type:?} (known: {known}); set \"model_type\" in the config to one of them")]
    NoSchema { model_type: String, known: String },

    /// `config set`/`unset` of a field the architecture does not have.
    #[error("{}: {field:?} is not a field of {model_type} configs{suggestion}", path.display())]
    UnknownField {
        path: PathBuf,
        field: String,
        model_type: String,
        /// ` (did you mean "hidden_size"?)`, or empty.
        suggestion: String,
    },

    /// A config change that registered weights would no longer fit.
    #[error("{}: after this change the weights of {versions} no longer fit the config ({detail}); nothing was written. Pass --force to change it anyway (they will fail to load), or register a new config", path.display())]
    ConfigBreaksWeights {
        path: PathBuf,
        versions: String,
        detail: String,
    },

    #[error("{model}:{version} names no config; register it with --config NAME or create configs/{model}/{version}.json")]
    NoConfig { model: String, version: String },

    /// A request that asks for nothing (a prune rule without a rule, say).
    #[error("{0}")]
    NothingToDo(String),
}

impl StoreError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    /// [`StoreError::UnknownModel`] listing `known` (or saying there are none).
    pub fn unknown_model<'a>(model: &str, known: impl IntoIterator<Item = &'a String>) -> Self {
        let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
        StoreError::UnknownModel {
            model: model.into(),
            known: if known.is_empty() {
                "none; register weights with `tantra register`".into()
            } else {
                known.join(", ")
            },
        }
    }

    /// A JSON file that does not parse or breaks its schema.
    pub fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        StoreError::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// True when the error says that stored data is damaged or changed (as opposed to a bad
    /// request or an I/O failure): the CLI's `verify`-like commands exit 1 on these.
    pub fn is_integrity(&self) -> bool {
        matches!(
            self,
            StoreError::Changed { .. }
                | StoreError::Missing { .. }
                | StoreError::BackupDamaged { .. }
                | StoreError::NotRegular { .. }
                | StoreError::RegistryMissing { .. }
        )
    }
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches a path to `io::Result`s.
pub(crate) trait IoResultExt<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> IoResultExt<T> for io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| StoreError::io(path, e))
    }
}
