//! [`WeightManager`]: the handle on a weights root, and its jobs, one file each: `register`
//! (validate, stage, plan, commit), `load` (resolve a request, check the hash, open), `query`
//! (listings), `edit` (default, tags, removal), `show` (one version's report).
//!
//! Every change of the registry goes through a [`crate::plan`] (decided in memory) carried out
//! by [`crate::txn`] (files placed, registry published with one rename), so a failure at any
//! step leaves each version exactly as it was or exactly as requested. Reading needs no lock:
//! the registry is replaced by rename, so a reader sees one generation or the next, and a reader
//! that finds a file missing looks again at a fresh registry before saying so.

mod cache;
mod edit;
mod load;
mod query;
mod register;
pub use register::WrittenFile;
mod show;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tantra_formats::{DynSource, Format, OutputFormat};

use crate::error::{IoResultExt, Result, StoreError};
use crate::fsx;
use crate::lock::{lock_timeout_from_env, RootLock};
use crate::names::{validate_name, weight_file_name};
use crate::plan::PlacedFile;
use crate::registry::{FormatRecord, ModelRecord, Registry, VersionRecord};

pub use edit::RemoveOptions;
pub(crate) use load::check_sha256;
pub use show::{PromotedFrom, ShowConfig, ShowFormat, ShowReport};

/// The registry's file name under the root.
pub const REGISTRY_FILE: &str = "weight_config.json";
/// The lock file's name under the root.
pub const LOCK_FILE: &str = ".lock";

/// The weights root: registry, weight files, backups, checkpoints.
///
/// ```no_run
/// use tantra_store::WeightManager;
/// let wm = WeightManager::open("Model")?;
/// let w = wm.load_model_weights("mamba", None, None)?; // default version, best format
/// println!("{} tensors from {}", w.source.tensors().len(), w.path.display());
/// # Ok::<(), tantra_store::StoreError>(())
/// ```
#[derive(Debug, Clone)]
pub struct WeightManager {
    pub(crate) root: PathBuf,
    pub(crate) lock_timeout: Duration,
    pub(crate) jobs: usize,
    /// What the history records as the command of each change.
    pub(crate) command: String,
    /// The last registry read or published (shared by clones of the handle).
    pub(crate) cache: std::sync::Arc<cache::RegistryCache>,
}

/// How to register.
#[derive(Debug, Clone, Default)]
pub struct RegisterOptions {
    /// Formats to produce besides the ones given (`--formats`).
    pub formats: Vec<OutputFormat>,
    /// Make this the model's default version (the first version of a model always is).
    pub make_default: bool,
    /// Replace a version that holds different weights (its files are backed up first), or a
    /// registered file of the same weights whose bytes differ.
    pub force: bool,
    /// Tags to add.
    pub tags: Vec<String>,
    /// A free-form note (replaces the old one when given).
    pub note: Option<String>,
    /// The config (`configs/<model>/<config>.json`) these weights belong to; it must exist.
    pub config: Option<String>,
    /// Why replaced files are backed up (default: "replaced by register --force").
    pub reason: Option<String>,
}

/// The result of a registration.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterReport {
    pub model: String,
    pub version: String,
    pub content: String,
    pub parameters: u64,
    pub tensors: u64,
    pub dtypes: Vec<String>,
    pub files: Vec<PlacedFile>,
    /// Ids of the backups taken of replaced files.
    pub backups: Vec<String>,
    /// Whether the version is the model's default afterwards.
    pub default: bool,
    /// Other versions that hold the same weights (`model:version`): the files are stored
    /// once, but the user may not have meant a second name.
    pub duplicates: Vec<String>,
}

/// Options for loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Re-hash the file and compare with the registry before use (default true). The size is
    /// always checked.
    pub verify_hash: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { verify_hash: true }
    }
}

/// Which registered file a (model, version, format) request means.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub model: String,
    pub version: String,
    pub format: OutputFormat,
    pub path: PathBuf,
    pub record: FormatRecord,
    pub version_record: VersionRecord,
}

/// Loaded weights: the open file and what it is.
pub struct LoadedWeights {
    pub model: String,
    pub version: String,
    pub format: OutputFormat,
    pub path: PathBuf,
    pub record: FormatRecord,
    pub version_record: VersionRecord,
    /// The tensors.
    pub source: DynSource,
}

/// Which rows [`WeightManager::list`] returns.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub model: Option<String>,
    pub format: Option<OutputFormat>,
}

/// One registered file, as `list-weights --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct WeightRow {
    pub model: String,
    pub version: String,
    pub format: String,
    /// Relative to the root.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub parameters: u64,
    pub default: bool,
    pub created: String,
}

/// [`WeightRow`], borrowed from the registry (see [`WeightManager::with_rows`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WeightRowRef<'a> {
    pub model: &'a str,
    pub version: &'a str,
    pub format: &'a str,
    pub path: &'a str,
    pub bytes: u64,
    pub sha256: &'a str,
    pub parameters: u64,
    pub default: bool,
    pub created: &'a str,
}

impl WeightRowRef<'_> {
    pub fn to_owned(&self) -> WeightRow {
        WeightRow {
            model: self.model.into(),
            version: self.version.into(),
            format: self.format.into(),
            path: self.path.into(),
            bytes: self.bytes,
            sha256: self.sha256.into(),
            parameters: self.parameters,
            default: self.default,
            created: self.created.into(),
        }
    }
}

/// One version, as `versions --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    pub version: String,
    pub default: bool,
    pub created: String,
    pub parameters: u64,
    pub tensors: u64,
    pub dtypes: Vec<String>,
    pub formats: Vec<String>,
    pub bytes: u64,
    pub tags: Vec<String>,
    pub note: Option<String>,
    pub config: Option<String>,
    pub content: String,
}

/// What [`WeightManager::remove`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveReport {
    pub model: String,
    pub version: String,
    /// `(format, path)` of each removed file.
    pub removed: Vec<(String, String)>,
    /// Bytes of the removed files.
    pub bytes: u64,
    /// Bytes freed on disk now (files whose last name went: removed with `--no-backup` and not
    /// shared with another version).
    pub freed: u64,
    /// Bytes that stay on disk in `backups/` (free them with `tantra backups rm` or `cleanup
    /// --backups-older-than`).
    pub kept_in_backups: u64,
    pub backups: Vec<String>,
    /// True when the version is gone (its last format was removed).
    pub version_removed: bool,
    /// Nothing was changed: this is what would happen.
    pub dry_run: bool,
}

impl WeightManager {
    /// Opens the root at `root`. Nothing is created until something is written.
    ///
    /// # Errors
    /// `root` exists and is not a directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<WeightManager> {
        let root = root.into();
        if root.exists() && !root.is_dir() {
            return Err(StoreError::io(
                &root,
                std::io::Error::other("the weights root is not a directory"),
            ));
        }
        Ok(WeightManager {
            root,
            lock_timeout: lock_timeout_from_env()?,
            jobs: fsx::default_jobs()?,
            command: command_line(),
            cache: Default::default(),
        })
    }

    /// Names the command that the history records for this handle's changes (the CLI passes
    /// its command line).
    pub fn with_command(mut self, command: impl Into<String>) -> Self {
        self.command = command.into();
        self
    }

    /// Waits at most `timeout` for the root's lock (default 60 s or `TANTRA_LOCK_TIMEOUT`).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Hashes on `jobs` threads (default 2 or `TANTRA_JOBS`).
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn weights_dir(&self) -> PathBuf {
        self.root.join("weights")
    }
    pub fn backups_dir(&self) -> PathBuf {
        self.root.join("backups")
    }
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn configs_dir(&self) -> PathBuf {
        self.root.join("configs")
    }
    /// Per-tensor digests of each version: `digests/<model>/<version>.json`.
    pub fn digests_dir(&self) -> PathBuf {
        self.root.join("digests")
    }
    pub fn registry_path(&self) -> PathBuf {
        self.root.join(REGISTRY_FILE)
    }
    pub fn lock_path(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// Creates the root's folders (each new folder is synced in its parent).
    pub fn ensure_layout(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.weights_dir(),
            self.backups_dir(),
            self.checkpoints_dir(),
            self.configs_dir(),
        ] {
            fsx::create_dirs(&d)?;
        }
        Ok(())
    }

    /// Takes the root's lock (creating the root if needed). Only writers take it.
    pub fn lock(&self) -> Result<RootLock> {
        self.ensure_layout()?;
        RootLock::acquire(&self.lock_path(), self.lock_timeout)
    }

    /// The registry as it is on disk now.
    ///
    /// # Errors
    /// A registry that does not parse ([`StoreError::Corrupt`]); a missing registry in a root
    /// that holds weights, history or kept generations ([`StoreError::RegistryMissing`]): such
    /// a root is never taken for an empty one. `tantra repair` fixes both.
    pub fn registry(&self) -> Result<Registry> {
        self.registry_shared().map(Arc::unwrap_or_clone)
    }

    /// [`WeightManager::registry`], shared with the handle's cache (no copy).
    pub(crate) fn registry_shared(&self) -> Result<Arc<Registry>> {
        let path = self.registry_path();
        match std::fs::File::open(&path) {
            Ok(f) => {
                // The identity and the bytes come from one open file, so a registry replaced
                // in between is never remembered under the wrong identity.
                let meta = f.metadata().map_err(|e| StoreError::io(&path, e))?;
                let id = cache::FileId::of(&meta);
                if let Some(reg) = self.cache.get(id) {
                    return Ok(reg);
                }
                let mut b = Vec::with_capacity(meta.len() as usize);
                std::io::Read::read_to_end(&mut &f, &mut b)
                    .map_err(|e| StoreError::io(&path, e))?;
                let reg = Arc::new(Registry::parse(&b, &path)?);
                self.cache.put(id, Arc::clone(&reg));
                Ok(reg)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match self.stored_evidence() {
                Some(what) => {
                    // A root's first registration writes its history before the registry:
                    // while a writer holds the lock, wait for it and look again.
                    if crate::lock::wait_for_writer(&self.lock_path(), self.lock_timeout) {
                        if let Ok(b) = std::fs::read(&path) {
                            return Registry::parse(&b, &path).map(Arc::new);
                        }
                    }
                    Err(StoreError::RegistryMissing { path, found: what })
                }
                None => Ok(Arc::new(Registry::default())),
            },
            Err(e) => Err(StoreError::io(&path, e)),
        }
    }

    /// Notes that the registry at `path` was just published (the caller holds the lock, so
    /// the file there is the one it renamed into place).
    pub(crate) fn note_published(&self, path: &Path) {
        match std::fs::metadata(path) {
            Ok(m) => self.cache.published(cache::FileId::of(&m)),
            Err(_) => self.cache.clear(),
        }
    }

    /// What shows that this root has held registered weights (for a missing registry), if
    /// anything: the history, kept generations, or per-tensor digests (written with every
    /// registration, by older tantras too). Files in `weights/` alone are not evidence: a
    /// generator writes them there before their first registration.
    pub(crate) fn stored_evidence(&self) -> Option<String> {
        if self.root.join(crate::history::HISTORY_FILE).is_file() {
            return Some(format!("{} exists", crate::history::HISTORY_FILE));
        }
        let gens = crate::cleanup::list_files(&self.root.join(crate::txn::GENERATIONS_DIR))
            .unwrap_or_default();
        if !gens.is_empty() {
            return Some(format!("{} kept registry generation(s)", gens.len()));
        }
        let digests = std::fs::read_dir(self.digests_dir())
            .map(|d| d.count())
            .unwrap_or(0);
        if digests > 0 {
            return Some("per-tensor digests of registered versions exist".into());
        }
        None
    }

    /// Where the file of (model, version, format) lives, whether or not it is registered.
    /// Programs that generate weights write there (through
    /// [`tantra_formats::fsutil::atomic_write`] with `overwrite` false), then call
    /// [`WeightManager::register_files`].
    ///
    /// # Errors
    /// An invalid model or version name.
    pub fn canonical_path(
        &self,
        model: &str,
        version: &str,
        format: OutputFormat,
    ) -> Result<PathBuf> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        Ok(self
            .weights_dir()
            .join(weight_file_name(model, version, format)))
    }

    /// The absolute path of a root-relative path.
    pub fn abs(&self, rel: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in rel.split('/') {
            p.push(part);
        }
        p
    }

    /// Where an older tantra kept a version's digests (`digests/<model>/<version>.json`); still
    /// read when `digests/<content>.json` is missing.
    pub(crate) fn legacy_digests_path(&self, model: &str, version: &str) -> PathBuf {
        self.digests_dir()
            .join(model)
            .join(format!("{version}.json"))
    }
}

pub(crate) fn find_model<'a>(reg: &'a Registry, model: &str) -> Result<&'a ModelRecord> {
    reg.models
        .get(model)
        .ok_or_else(|| StoreError::unknown_model(model, reg.models.keys()))
}

pub(crate) fn model_version<'a>(
    m: &'a ModelRecord,
    model: &str,
    version: &str,
) -> Result<&'a VersionRecord> {
    m.versions
        .get(version)
        .map(|v| &**v)
        .ok_or_else(|| StoreError::UnknownVersion {
            model: model.into(),
            version: version.into(),
        })
}

pub(crate) fn find_version<'a>(
    reg: &'a Registry,
    model: &str,
    version: &str,
) -> Result<&'a VersionRecord> {
    model_version(find_model(reg, model)?, model, version)
}

/// The format a weight file is registered (or checkpointed) as: by its content, with a
/// PyTorch file named `.bin` counted as `bin`, any other as `pt`.
pub(crate) fn output_format_of(file: &Path) -> Result<OutputFormat> {
    Ok(match tantra_formats::detect(file)? {
        Format::Safetensors => OutputFormat::Safetensors,
        Format::Gguf => OutputFormat::Gguf,
        _ if OutputFormat::from_path(file) == Some(OutputFormat::Bin) => OutputFormat::Bin,
        _ => OutputFormat::Pt,
    })
}

pub(crate) fn format_missing(
    model: &str,
    version: &str,
    f: OutputFormat,
    ver: &VersionRecord,
) -> StoreError {
    StoreError::FormatMissing {
        model: model.into(),
        version: version.into(),
        format: f.name().into(),
        available: ver.formats.keys().cloned().collect::<Vec<_>>().join(", "),
    }
}

/// Checks that the detected container fits the format a file is given as.
pub(crate) fn check_format(path: &Path, given: OutputFormat, actual: Format) -> Result<()> {
    let ok = match given {
        OutputFormat::Safetensors => actual == Format::Safetensors,
        OutputFormat::Pt | OutputFormat::Bin => {
            matches!(actual, Format::PytorchZip | Format::PytorchLegacy)
        }
        OutputFormat::Gguf => actual == Format::Gguf,
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::WrongFormat {
            path: path.to_path_buf(),
            expected: given.name().into(),
            actual: actual.name().into(),
        })
    }
}

/// Errors about the staged copy should name the file the user gave.
pub(crate) fn relabel(
    mut e: tantra_formats::FormatError,
    staged: &Path,
    user: &Path,
) -> StoreError {
    if e.path.as_deref() == Some(staged) || e.path.is_none() {
        e.path = Some(user.to_path_buf());
    }
    StoreError::Format(e)
}

pub(crate) fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).at(path)?.len())
}

pub(crate) fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub(crate) fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The command line of this process, as the history records it (`tantra register x.pt ...`).
fn command_line() -> String {
    let mut args = std::env::args();
    let prog = args
        .next()
        .map(|p| {
            Path::new(&p)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or(p)
        })
        .unwrap_or_else(|| "tantra-store".into());
    std::iter::once(prog)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}
