//! tantra-store: the weights root (`Model/` by default).
//!
//! ```text
//! Model/
//!   weights/<model>_<version>_<format>.<ext>   registered weight files, readable names
//!   backups/                                   what was overwritten or removed, + manifest.json
//!   checkpoints/<model>/step_<step>.<ext|json> training checkpoints and their records
//!   configs/<model>/<name>.json                model configurations
//!   digests/<model>/<version>.json             per-tensor digests of each version
//!   weight_config.json                         the registry
//! ```
//!
//! [`WeightManager`] registers, loads, lists, versions, backs up, restores, prunes, cleans and
//! verifies weight files; [`ConfigManager`] keeps model configurations and checks weights
//! against them through pluggable [`config::ConfigSchema`]s. Both are libraries: they never
//! print, report long work through [`tantra_formats::Progress`], and return [`StoreError`]s
//! that name the file and say what to do.
//!
//! Guarantees (see the modules for how): every write goes through a temporary file in the
//! target directory that is synced and renamed, and the directory is synced; the registry is
//! rewritten only after the files it names are in place, so a crash at any instant leaves a
//! registry that parses and names only complete files; concurrent processes serialize their
//! updates through an advisory lock on `<root>/.lock`; names are held to `[A-Za-z0-9._-]`.
//!
//! ```no_run
//! use tantra_store::{RegisterOptions, WeightManager};
//! use tantra_formats::{NoProgress, OutputFormat};
//! let wm = WeightManager::open("Model")?;
//! let opts = RegisterOptions { formats: OutputFormat::ALL.to_vec(), ..Default::default() };
//! wm.register("model.pt".as_ref(), "mamba", "sample_small", &opts, &NoProgress)?;
//! let w = wm.load_model_weights("mamba", Some("sample_small"), None)?; // safetensors first
//! # Ok::<(), tantra_store::StoreError>(())
//! ```

pub mod backup;
pub mod checkpoint;
pub mod cleanup;
pub mod config;
pub mod content;
pub mod error;
pub mod fsx;
pub mod lock;
pub mod names;
pub mod registry;
pub mod time;
pub mod verify;
pub mod weights;

pub use backup::{BackupEntry, BackupKind, RestoreReport};
pub use checkpoint::{parse_metric, CheckpointRecord, MetricMode, PruneRule};
pub use cleanup::{CleanupItem, CleanupKind, CleanupOptions, CleanupReport};
pub use config::{
    ConfigInfo, ConfigManager, ConfigProblem, ConfigSchema, ExpectedTensor, FieldSchema, FieldSpec,
    Schemas,
};
pub use content::{TensorDigest, TensorTable};
pub use error::{Result, StoreError};
pub use registry::{FormatRecord, ModelRecord, Registry, Source, VersionRecord};
pub use verify::{ProblemKind, VerifyProblem, VerifyReport, VerifyScope};
pub use weights::{
    FileAction, ListFilter, LoadOptions, LoadedWeights, PlacedFile, RegisterOptions,
    RegisterReport, RemoveReport, Resolved, VersionRow, WeightManager, WeightRow, WeightRowRef,
};
