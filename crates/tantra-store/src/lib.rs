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
//! Guarantees (`docs/store.md` states them exactly): every change of a version is planned in
//! memory ([`plan`](crate::plan)) and published as one registry generation with one rename
//! ([`txn`](crate::txn)), so a failure or crash at any step leaves each version exactly as it was
//! or exactly as requested; a file the registry names is never changed or removed while it
//! names it; nothing is deleted on the strength of missing or damaged metadata (what the store
//! cannot account for is moved to `quarantine/`); every change is in the [`history`]; concurrent
//! writers serialize on an advisory lock on `<root>/.lock`, readers take no lock; names are held
//! to `[A-Za-z0-9._-]`.
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
mod config_edit;
pub mod content;
pub mod error;
mod fsx;
pub mod history;
mod lock;
pub mod modelref;
mod names;
mod plan;
pub mod registry;
pub mod repair;
pub mod space;
mod time;
mod txn;
pub mod verify;
pub mod weights;

pub use backup::{BackupEntry, BackupKind, RestoreReport};
pub use checkpoint::{parse_metric, CheckpointRecord, MetricMode, PruneRule};
pub use cleanup::{CleanupAction, CleanupItem, CleanupKind, CleanupOptions, CleanupReport};
pub use config::{
    ConfigInfo, ConfigManager, ConfigProblem, ConfigSchema, ExpectedTensor, FieldSchema, FieldSpec,
    Schemas,
};
pub use content::{TensorDigest, TensorTable};
pub use error::{Result, StoreError};
pub use history::{Change, ChangeKind, HistoryEntry};
pub use modelref::ModelRef;
pub use names::{is_valid_name, validate_name, weight_file_name, MAX_NAME_LEN};
pub use plan::{FileAction, PlacedFile};
pub use registry::{FormatRecord, ModelRecord, Registry, Source, VersionRecord};
pub use repair::{RepairAction, RepairReport};
pub use space::{BackupRemoval, DiskUsage};
pub use time::{format_rfc3339, now_rfc3339, parse_duration, parse_rfc3339};
pub use txn::{GENERATIONS_DIR, QUARANTINE_DIR};
pub use verify::{ProblemKind, VerifyProblem, VerifyReport, VerifyScope};
pub use weights::{
    ListFilter, LoadOptions, LoadedWeights, RegisterOptions, RegisterReport, RemoveOptions,
    RemoveReport, Resolved, ShowReport, VersionRow, WeightManager, WeightRow, WeightRowRef,
    WrittenFile,
};

/// Hashing a file: `sha256` of its bytes, read in large chunks.
pub use fsx::{hash_file, FileHash};
