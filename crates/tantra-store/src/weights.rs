//! [`WeightManager`]: register, load, list, version, remove.
//!
//! Registration does all slow work first, without the root's lock: the file is copied into a
//! locked temporary file in `weights/` (hashed while it is written), re-opened and every tensor
//! read and digested (that is the validation), and the other formats asked for are written from
//! it and digested too, each must hold the same tensors. Only then is the lock taken, the
//! registry re-read, the version's immutability checked against what is there *now*, the files
//! renamed into place, and the registry rewritten. The order inside the lock keeps the promise
//! that the registry only names complete files with the recorded hash: a record whose file is
//! about to be replaced is dropped from the registry (and the old file backed up) before the
//! rename, and the new record is written after it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tantra_formats::convert::archive_name;
use tantra_formats::{open, write_to, DynSource, Format, OutputFormat, Progress, TensorSource};

use crate::backup::{BackupKind, BackupSpec};
use crate::content::TensorTable;
use crate::error::{IoResultExt, Result, StoreError};
use crate::fsx::{self, FileHash};
use crate::lock::{lock_timeout_from_env, RootLock};
use crate::names::{validate_name, weight_file_name};
use crate::registry::{FormatRecord, ModelRecord, Registry, Source, VersionRecord};
use crate::time::now_rfc3339;

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
}

/// What happened to one file of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileAction {
    /// A new file was placed.
    Added,
    /// A registered file was replaced (the old one was backed up).
    Replaced,
    /// The registered file already held these bytes (or the same weights, without --force).
    Unchanged,
}

impl FileAction {
    /// The name `--json` output uses (`added`, `replaced`, `unchanged`).
    pub fn name(self) -> &'static str {
        match self {
            FileAction::Added => "added",
            FileAction::Replaced => "replaced",
            FileAction::Unchanged => "unchanged",
        }
    }
}

/// One file of a registration.
#[derive(Debug, Clone, Serialize)]
pub struct PlacedFile {
    pub format: String,
    /// Relative to the root.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub action: FileAction,
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
    pub bytes: u64,
    pub backups: Vec<String>,
    /// True when the version is gone (its last format was removed).
    pub version_removed: bool,
}

/// An input file of a registration, staged in `weights/` or already in place.
struct Prepared {
    format: OutputFormat,
    /// `None` when the file already sits at its canonical path.
    staged: Option<tempfile::NamedTempFile>,
    hash: FileHash,
    source: Source,
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
            lock_timeout: lock_timeout_from_env(),
            jobs: fsx::default_jobs(),
        })
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

    /// Creates the root's folders.
    pub fn ensure_layout(&self) -> Result<()> {
        for d in [
            self.root.clone(),
            self.weights_dir(),
            self.backups_dir(),
            self.checkpoints_dir(),
            self.configs_dir(),
        ] {
            std::fs::create_dir_all(&d).at(&d)?;
        }
        Ok(())
    }

    /// Takes the root's lock (creating the root if needed).
    pub fn lock(&self) -> Result<RootLock> {
        self.ensure_layout()?;
        RootLock::acquire(&self.lock_path(), self.lock_timeout)
    }

    /// The registry as it is on disk now.
    pub fn registry(&self) -> Result<Registry> {
        Registry::load(&self.registry_path())
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

    /// `weights/<file>` for a canonical file.
    pub(crate) fn canonical_rel(model: &str, version: &str, format: OutputFormat) -> String {
        format!("weights/{}", weight_file_name(model, version, format))
    }

    /// The absolute path of a root-relative path.
    pub fn abs(&self, rel: &str) -> PathBuf {
        let mut p = self.root.clone();
        for part in rel.split('/') {
            p.push(part);
        }
        p
    }

    pub(crate) fn digests_path(&self, model: &str, version: &str) -> PathBuf {
        self.digests_dir()
            .join(model)
            .join(format!("{version}.json"))
    }

    /// The per-tensor digests of a registered version.
    ///
    /// # Errors
    /// An unknown version; a digest file that is missing or damaged.
    pub fn tensor_digests(&self, model: &str, version: &str) -> Result<TensorTable> {
        let reg = self.registry()?;
        let rec = find_version(&reg, model, version)?;
        let path = self.digests_path(model, version);
        match TensorTable::load(&path)? {
            Some(t) if t.content == rec.content => Ok(t),
            Some(_) => Err(StoreError::corrupt(
                &path,
                format!("the digests do not belong to {model}:{version} as registered"),
            )),
            None => Err(StoreError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "digest file missing"),
            )),
        }
    }

    // ----- registration -----

    /// Registers one weight file as (model, version): validates it (every tensor is read),
    /// hashes it, copies it to its canonical name, writes the other formats asked for, and
    /// records everything. The file's format comes from its content (`.bin` extension makes a
    /// PyTorch file `bin`, otherwise `pt`).
    ///
    /// # Errors
    /// An invalid name; a file that is not readable weights; a version that already holds
    /// other weights (without `force`); a conversion that does not reproduce the tensors; a
    /// name collision; the lock not coming in time. Nothing is recorded on error, and nothing
    /// is left under a final name.
    pub fn register(
        &self,
        file: &Path,
        model: &str,
        version: &str,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        let format = output_format_of(file)?;
        self.register_files(
            &[(format, file.to_path_buf())],
            model,
            version,
            None,
            opts,
            progress,
        )
    }

    /// Registers a set of files of one version, one per format, without converting them (each
    /// is validated and must hold the same tensors). Files already at their canonical path
    /// ([`WeightManager::canonical_path`]) are recorded in place, others are copied.
    /// `source` overrides where the files are said to come from (default: imported from their
    /// path, or generated for files already in place).
    ///
    /// # Errors
    /// As [`WeightManager::register`]; also a file whose content is not the format it is
    /// given as.
    pub fn register_files(
        &self,
        files: &[(OutputFormat, PathBuf)],
        model: &str,
        version: &str,
        source: Option<Source>,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        self.check_request(model, version, opts)?;
        if files.is_empty() {
            return Err(StoreError::NothingToDo("no files to register".into()));
        }
        self.ensure_layout()?;
        let wdir = self.weights_dir();
        let mut prepared = Vec::new();
        let mut first: Option<(DynSource, TensorTable, PathBuf)> = None;
        for (format, path) in files {
            if prepared.iter().any(|p: &Prepared| p.format == *format) {
                return Err(StoreError::InvalidArgument {
                    what: "file list",
                    value: format.name().into(),
                    detail: "two files for one format".into(),
                });
            }
            let target = self.canonical_path(model, version, *format)?;
            let in_place = same_file(path, &target);
            let (staged, hash) = if in_place {
                let h = fsx::hash_file_with(path, "hashing", file_len(path)?, progress)?;
                (None, h)
            } else {
                let s = fsx::copy_to_temp(path, &wdir, &target, progress)?;
                let hash = s.hash.clone();
                (Some(s.tmp), hash)
            };
            let readable: PathBuf = match &staged {
                Some(t) => t.path().to_path_buf(),
                None => path.clone(),
            };
            let src = open(&readable).map_err(|e| relabel(e, &readable, path))?;
            check_format(path, *format, src.format())?;
            let table = TensorTable::of(src.as_ref(), self.jobs, progress)
                .map_err(|e| relabel(e, &readable, path))?;
            let src_desc = match &source {
                Some(s) => s.clone(),
                None if in_place => Source::Generated { by: None },
                None => Source::Imported {
                    from: absolute(path).display().to_string(),
                },
            };
            match &first {
                None => first = Some((src, table, path.clone())),
                Some((_, t0, p0)) => {
                    if let Some(d) = t0.difference(&table) {
                        return Err(StoreError::ContentMismatch {
                            path: path.clone(),
                            other: p0.display().to_string(),
                            detail: d,
                        });
                    }
                }
            }
            prepared.push(Prepared {
                format: *format,
                staged,
                hash,
                source: src_desc,
            });
        }
        let (Some((src0, table, _)), Some(from_format)) =
            (first, prepared.first().map(|p| p.format))
        else {
            return Err(StoreError::NothingToDo("no files to register".into()));
        };
        self.precheck(model, version, &table, opts)?;
        let skip = self.formats_already_registered(model, version, &table, opts)?;
        for f in &opts.formats {
            if prepared.iter().any(|p| p.format == *f) || skip.contains(f) {
                continue;
            }
            prepared.push(self.convert_into_temp(
                src0.as_ref(),
                &table,
                model,
                version,
                *f,
                from_format,
                progress,
            )?);
        }
        drop(src0);
        self.commit(model, version, &table, prepared, opts)
    }

    /// Registers tensors that are not a file of the root's formats as (model, version),
    /// writing `opts.formats` (safetensors when empty) from `src` one tensor at a time.
    /// `source` is recorded as where every written file comes from: [`Source::Generated`] for
    /// model initialization, [`Source::Imported`] for a checkpoint read from elsewhere (a
    /// Hugging Face directory, say).
    ///
    /// # Errors
    /// As [`WeightManager::register`].
    pub fn register_source(
        &self,
        src: &(dyn TensorSource + Sync),
        model: &str,
        version: &str,
        source: Source,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        self.check_request(model, version, opts)?;
        self.ensure_layout()?;
        let table = TensorTable::of(src, self.jobs, progress)?;
        self.precheck(model, version, &table, opts)?;
        let skip = self.formats_already_registered(model, version, &table, opts)?;
        let mut formats = opts.formats.clone();
        if formats.is_empty() {
            formats.push(OutputFormat::Safetensors);
        }
        formats.sort();
        formats.dedup();
        let mut prepared = Vec::new();
        for f in formats {
            if skip.contains(&f) {
                continue;
            }
            let mut p = self.convert_into_temp(src, &table, model, version, f, f, progress)?;
            p.source = source.clone();
            prepared.push(p);
        }
        self.commit(model, version, &table, prepared, opts)
    }

    fn check_request(&self, model: &str, version: &str, opts: &RegisterOptions) -> Result<()> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        for t in &opts.tags {
            validate_name("tag", t)?;
        }
        if let Some(c) = &opts.config {
            validate_name("config", c)?;
            let path = self.configs_dir().join(model).join(format!("{c}.json"));
            if !path.is_file() {
                return Err(StoreError::UnknownConfig {
                    path,
                    model: model.into(),
                    name: c.clone(),
                });
            }
        }
        Ok(())
    }

    /// Fails early (before converting) when the version holds other weights and `force` is
    /// off. The decisive check is repeated under the lock.
    fn precheck(
        &self,
        model: &str,
        version: &str,
        table: &TensorTable,
        opts: &RegisterOptions,
    ) -> Result<()> {
        let reg = self.registry()?;
        if let Some(v) = reg.version(model, version) {
            if v.content != table.content && !opts.force {
                return Err(version_exists(model, version, &v.content, &table.content));
            }
        }
        Ok(())
    }

    /// Formats of this version already registered with the same weights: no need to convert.
    fn formats_already_registered(
        &self,
        model: &str,
        version: &str,
        table: &TensorTable,
        opts: &RegisterOptions,
    ) -> Result<Vec<OutputFormat>> {
        if opts.force {
            return Ok(Vec::new());
        }
        let reg = self.registry()?;
        Ok(match reg.version(model, version) {
            Some(v) if v.content == table.content => v.available_formats(),
            _ => Vec::new(),
        })
    }

    /// Writes `src` in `format` to a temporary file in `weights/` and checks that it re-reads
    /// to the same tensors.
    #[allow(clippy::too_many_arguments)]
    fn convert_into_temp(
        &self,
        src: &(dyn TensorSource + Sync),
        table: &TensorTable,
        model: &str,
        version: &str,
        format: OutputFormat,
        from: OutputFormat,
        progress: &dyn Progress,
    ) -> Result<Prepared> {
        let target = self.canonical_path(model, version, format)?;
        let archive = archive_name(&target);
        let staged = fsx::write_temp(&self.weights_dir(), &target, |w| {
            write_to(w, format, src, &archive, progress)
                .map_err(|e| StoreError::from(e.with_path(&target)))
        })?;
        let out = open(staged.path()).map_err(|e| relabel(e, staged.path(), &target))?;
        let t = TensorTable::of(out.as_ref(), self.jobs, progress)
            .map_err(|e| relabel(e, staged.path(), &target))?;
        if let Some(d) = table.difference(&t) {
            return Err(StoreError::ContentMismatch {
                path: target,
                other: format!("the {from} file"),
                detail: d,
            });
        }
        Ok(Prepared {
            format,
            hash: staged.hash.clone(),
            staged: Some(staged.tmp),
            source: Source::Converted {
                from: from.name().to_string(),
            },
        })
    }

    /// The critical section: under the lock, re-read the registry, decide, back up, rename
    /// into place, record.
    fn commit(
        &self,
        model: &str,
        version: &str,
        table: &TensorTable,
        prepared: Vec<Prepared>,
        opts: &RegisterOptions,
    ) -> Result<RegisterReport> {
        let lock = self.lock()?;
        let mut reg = self.registry()?;
        // Another (model, version) whose canonical names coincide with ours.
        for p in &prepared {
            let rel = Self::canonical_rel(model, version, p.format);
            if let Some((m, v, f)) = reg.owner_of(&rel) {
                if (m, v, f) != (model, version, p.format.name()) {
                    return Err(StoreError::NameCollision {
                        path: self.abs(&rel),
                        owner: format!("{m}:{v} ({f})"),
                    });
                }
            }
        }
        let existing = reg.version(model, version).cloned();
        let replacing_content = match &existing {
            Some(v) if v.content != table.content => {
                if !opts.force {
                    return Err(version_exists(model, version, &v.content, &table.content));
                }
                true
            }
            _ => false,
        };
        let now = now_rfc3339();
        let mut specs = Vec::new();
        // Registry records to drop before any rename (their files are about to change).
        let mut displaced: Vec<String> = Vec::new();
        // Old files to delete after the renames (formats the new content does not have).
        let mut stale_files: Vec<String> = Vec::new();
        let mut files = Vec::new();
        let mut to_place: Vec<(tempfile::NamedTempFile, PathBuf)> = Vec::new();
        let mut new_records: BTreeMap<String, FormatRecord> = BTreeMap::new();
        if let (true, Some(ex)) = (replacing_content, &existing) {
            for (f, rec) in &ex.formats {
                displaced.push(f.clone());
                if !prepared.iter().any(|p| p.format.name() == f) {
                    stale_files.push(rec.path.clone());
                }
                if prepared
                    .iter()
                    .any(|p| p.staged.is_none() && p.format.name() == f)
                {
                    continue; // rewritten in place by its generator: the old bytes are gone
                }
                specs.push(self.weights_backup_spec(
                    model,
                    version,
                    f,
                    ex,
                    rec,
                    "replaced by register --force (different weights)",
                ));
            }
        }
        for p in prepared {
            let fname = p.format.name().to_string();
            let rel = Self::canonical_rel(model, version, p.format);
            let target = self.abs(&rel);
            let old = existing
                .as_ref()
                .filter(|_| !replacing_content)
                .and_then(|v| v.formats.get(&fname).map(|o| (v, o)));
            let mut action = if replacing_content && existing_has(&existing, &fname) {
                FileAction::Replaced
            } else {
                FileAction::Added
            };
            if let Some((ex, old)) = old {
                if old.sha256 == p.hash.sha256 && p.staged.is_some() && !opts.force {
                    files.push(placed(&fname, old, FileAction::Unchanged));
                    continue; // the temporary file is dropped (deleted)
                }
                match (&p.staged, opts.force) {
                    (Some(_), false) => {
                        // Same weights, other bytes: keep what is registered.
                        files.push(placed(&fname, old, FileAction::Unchanged));
                        continue;
                    }
                    (Some(_), true) => {
                        specs.push(self.weights_backup_spec(
                            model,
                            version,
                            &fname,
                            ex,
                            old,
                            "replaced by register --force (same weights, other bytes)",
                        ));
                        displaced.push(fname.clone());
                        action = FileAction::Replaced;
                    }
                    (None, _) => {
                        // Rewritten in place by its generator: the old bytes are gone already.
                        if old.sha256 == p.hash.sha256 {
                            files.push(placed(&fname, old, FileAction::Unchanged));
                            continue;
                        }
                        displaced.push(fname.clone());
                        action = FileAction::Replaced;
                    }
                }
            } else if p.staged.is_some() && target.exists() && !displaced.contains(&fname) {
                // A file the registry does not name (left by a crash): keep a copy of it.
                specs.push(BackupSpec::in_the_way(
                    BackupKind::Orphan,
                    &rel,
                    &target,
                    (model, version, fname.as_str()),
                    "unregistered file overwritten by register".into(),
                ));
            }
            let rec = FormatRecord {
                path: rel.clone(),
                bytes: p.hash.bytes,
                sha256: p.hash.sha256.clone(),
                created: now.clone(),
                source: p.source.clone(),
            };
            files.push(placed(&fname, &rec, action));
            new_records.insert(fname, rec);
            if let Some(tmp) = p.staged {
                to_place.push((tmp, target));
            }
        }
        let backups = self.backup_locked(&lock, specs)?;
        let backup_ids: Vec<String> = backups.iter().map(|b| b.id.clone()).collect();
        // 1. Forget records whose files are about to change.
        if !displaced.is_empty() {
            if let Some(m) = reg.models.get_mut(model) {
                if replacing_content {
                    m.versions.remove(version);
                } else if let Some(v) = m.versions.get_mut(version) {
                    for f in &displaced {
                        v.formats.remove(f);
                    }
                    if v.formats.is_empty() {
                        // A version without files must not be listed, even for an instant.
                        m.versions.remove(version);
                    }
                }
            }
            reg.save(&self.registry_path())?;
        }
        // 2. Put the new files in place.
        for (tmp, target) in to_place {
            fsx::persist(tmp, &target, true)?;
        }
        table.save(&self.digests_path(model, version))?;
        // 3. Record them.
        let entry = reg.models.entry(model.to_string()).or_default();
        let rec = entry
            .versions
            .entry(version.to_string())
            .or_insert_with(|| VersionRecord {
                created: existing
                    .as_ref()
                    .filter(|_| !replacing_content)
                    .map(|e| e.created.clone())
                    .unwrap_or_else(|| now.clone()),
                parameters: table.parameters,
                tensors: table.tensors.len() as u64,
                dtypes: table.dtypes(),
                content: table.content.clone(),
                tags: existing
                    .as_ref()
                    .map(|e| e.tags.clone())
                    .unwrap_or_default(),
                note: existing.as_ref().and_then(|e| e.note.clone()),
                config: existing.as_ref().and_then(|e| e.config.clone()),
                formats: BTreeMap::new(),
            });
        if replacing_content {
            rec.created = now.clone();
        }
        for t in &opts.tags {
            if !rec.tags.contains(t) {
                rec.tags.push(t.clone());
            }
        }
        rec.tags.sort();
        if opts.note.is_some() {
            rec.note = opts.note.clone();
        }
        if opts.config.is_some() {
            rec.config = opts.config.clone();
        }
        rec.formats.extend(new_records);
        let default_missing = match &entry.default {
            Some(d) => !entry.versions.contains_key(d),
            None => true,
        };
        if opts.make_default || default_missing {
            entry.default = Some(version.to_string());
        }
        let is_default = entry.default.as_deref() == Some(version);
        reg.save(&self.registry_path())?;
        // 4. Old files of formats the new weights do not have.
        for rel in stale_files {
            fsx::remove_synced(&self.abs(&rel))?;
        }
        drop(lock);
        files.sort_by(|a, b| a.format.cmp(&b.format));
        Ok(RegisterReport {
            model: model.into(),
            version: version.into(),
            content: table.content.clone(),
            parameters: table.parameters,
            tensors: table.tensors.len() as u64,
            dtypes: table.dtypes(),
            files,
            backups: backup_ids,
            default: is_default,
        })
    }

    pub(crate) fn weights_backup_spec(
        &self,
        model: &str,
        version: &str,
        format: &str,
        ver: &VersionRecord,
        rec: &FormatRecord,
        reason: &str,
    ) -> BackupSpec {
        let mut snapshot = ver.clone();
        snapshot.formats = BTreeMap::from([(format.to_string(), rec.clone())]);
        BackupSpec {
            kind: BackupKind::Weights,
            src_rel: rec.path.clone(),
            model: Some(model.into()),
            version: Some(version.into()),
            format: Some(format.into()),
            step: None,
            sha256: Some(rec.sha256.clone()),
            bytes: rec.bytes,
            reason: reason.into(),
            record: serde_json::to_value(&snapshot).ok(),
        }
    }

    // ----- loading -----

    /// Finds the file for (model, version, format): no version means the model's default, no
    /// format means safetensors, else pt, else bin.
    ///
    /// # Errors
    /// Unknown model or version, no default version, or the format asked for is missing.
    pub fn resolve(
        &self,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
    ) -> Result<Resolved> {
        validate_name("model", model)?;
        let reg = self.registry()?;
        resolve_in(self, &reg, model, version, format)
    }

    /// Loads the weights of (model, version, format) (see [`WeightManager::resolve`]), after
    /// checking the file's size and sha256 against the registry.
    ///
    /// # Errors
    /// As [`WeightManager::resolve`]; [`StoreError::Missing`] or [`StoreError::Changed`] (the
    /// file is never used then); a file that does not read as weights.
    pub fn load_model_weights(
        &self,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
    ) -> Result<LoadedWeights> {
        self.load_with(
            model,
            version,
            format,
            &LoadOptions::default(),
            &tantra_formats::NoProgress,
        )
    }

    /// [`WeightManager::load_model_weights`] with options and progress for the hashing.
    ///
    /// # Errors
    /// As [`WeightManager::load_model_weights`].
    pub fn load_with(
        &self,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
        opts: &LoadOptions,
        progress: &dyn Progress,
    ) -> Result<LoadedWeights> {
        let r = self.resolve(model, version, format)?;
        let len = match std::fs::metadata(&r.path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    path: r.path,
                    model: r.model,
                    version: r.version,
                })
            }
            Err(e) => return Err(StoreError::io(&r.path, e)),
        };
        if len != r.record.bytes {
            return Err(StoreError::Changed {
                path: r.path,
                what: format!("{len} bytes, registered {}", r.record.bytes),
            });
        }
        if opts.verify_hash {
            check_sha256(&r.path, len, &r.record.sha256, "registered", progress)?;
        }
        let source = open(&r.path)?;
        Ok(LoadedWeights {
            model: r.model,
            version: r.version,
            format: r.format,
            path: r.path,
            record: r.record,
            version_record: r.version_record,
            source,
        })
    }

    // ----- listing -----

    /// Every registered file, by model, version and format (safetensors, pt, bin).
    ///
    /// # Errors
    /// A registry that does not parse.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<WeightRow>> {
        self.with_rows(filter, |rows| {
            rows.iter().map(WeightRowRef::to_owned).collect()
        })
    }

    /// Hands `f` every registered file, borrowed from the registry's bytes: the cheapest way
    /// to list a large registry (one parse, no copies of the strings).
    ///
    /// # Errors
    /// A registry that does not parse.
    pub fn with_rows<R>(
        &self,
        filter: &ListFilter,
        f: impl FnOnce(&[WeightRowRef<'_>]) -> R,
    ) -> Result<R> {
        let path = self.registry_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(f(&[])),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let reg = crate::registry::RegistryView::parse(&bytes, &path)?;
        let mut rows = Vec::new();
        for (m, model) in &reg.models {
            if filter.model.as_deref().is_some_and(|f| f != m) {
                continue;
            }
            for (v, ver) in &model.versions {
                let is_default = model.default.as_deref() == Some(v.as_ref());
                for fmt in OutputFormat::ALL {
                    if filter.format.is_some_and(|ff| ff != fmt) {
                        continue;
                    }
                    let Some(rec) = ver.formats.get(fmt.name()) else {
                        continue;
                    };
                    rows.push(WeightRowRef {
                        model: m,
                        version: v,
                        format: fmt.name(),
                        path: &rec.path,
                        bytes: rec.bytes,
                        sha256: &rec.sha256,
                        parameters: ver.parameters,
                        default: is_default,
                        created: &rec.created,
                    });
                }
            }
        }
        Ok(f(&rows))
    }

    /// The versions of `model`, oldest first.
    ///
    /// # Errors
    /// An unknown model.
    pub fn versions(&self, model: &str) -> Result<Vec<VersionRow>> {
        validate_name("model", model)?;
        let reg = self.registry()?;
        let m = find_model(&reg, model)?;
        let mut rows: Vec<VersionRow> = m
            .versions
            .iter()
            .map(|(v, rec)| VersionRow {
                version: v.clone(),
                default: m.default.as_deref() == Some(v.as_str()),
                created: rec.created.clone(),
                parameters: rec.parameters,
                tensors: rec.tensors,
                dtypes: rec.dtypes.clone(),
                formats: rec
                    .available_formats()
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect(),
                bytes: rec.total_bytes(),
                tags: rec.tags.clone(),
                note: rec.note.clone(),
                config: rec.config.clone(),
                content: rec.content.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.created.cmp(&b.created).then(a.version.cmp(&b.version)));
        Ok(rows)
    }

    /// Makes `version` the default of `model`.
    ///
    /// # Errors
    /// An unknown model or version; the lock.
    pub fn set_default(&self, model: &str, version: &str) -> Result<()> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        let _lock = self.lock()?;
        let mut reg = self.registry()?;
        find_version(&reg, model, version)?;
        if let Some(m) = reg.models.get_mut(model) {
            m.default = Some(version.into());
        }
        reg.save(&self.registry_path())
    }

    /// Adds (or with `remove`, removes) a tag of a version. Tagged versions survive retention.
    ///
    /// # Errors
    /// An invalid tag; an unknown model or version; the lock.
    pub fn tag(&self, model: &str, version: &str, tag: &str, remove: bool) -> Result<()> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        validate_name("tag", tag)?;
        let _lock = self.lock()?;
        let mut reg = self.registry()?;
        find_version(&reg, model, version)?;
        if let Some(v) = reg.version_mut(model, version) {
            v.tags.retain(|t| t != tag);
            if !remove {
                v.tags.push(tag.into());
                v.tags.sort();
            }
        }
        reg.save(&self.registry_path())
    }

    /// Removes one format of a version, or the whole version; every file is backed up first.
    ///
    /// # Errors
    /// An unknown model, version or format; the default version without `force` (removing it
    /// leaves the model without a default).
    pub fn remove(
        &self,
        model: &str,
        version: &str,
        format: Option<OutputFormat>,
        force: bool,
    ) -> Result<RemoveReport> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        let lock = self.lock()?;
        let mut reg = self.registry()?;
        let ver = find_version(&reg, model, version)?.clone();
        let formats: Vec<String> = match format {
            Some(f) => {
                if !ver.formats.contains_key(f.name()) {
                    return Err(format_missing(model, version, f, &ver));
                }
                vec![f.name().to_string()]
            }
            None => ver.formats.keys().cloned().collect(),
        };
        let version_removed = formats.len() == ver.formats.len();
        let is_default = reg
            .models
            .get(model)
            .is_some_and(|m| m.default.as_deref() == Some(version));
        if version_removed && is_default && !force {
            return Err(StoreError::IsDefault {
                model: model.into(),
                version: version.into(),
            });
        }
        let specs = formats
            .iter()
            .filter_map(|f| ver.formats.get(f).map(|rec| (f, rec)))
            .map(|(f, rec)| {
                self.weights_backup_spec(model, version, f, &ver, rec, "removed by `tantra remove`")
            })
            .collect();
        let backups = self.backup_locked(&lock, specs)?;
        let mut removed = Vec::new();
        let mut bytes = 0;
        for f in &formats {
            if let Some(rec) = ver.formats.get(f) {
                removed.push((f.clone(), rec.path.clone()));
                bytes += rec.bytes;
            }
        }
        self.drop_records(&mut reg, model, version, &formats);
        reg.save(&self.registry_path())?;
        for (_, rel) in &removed {
            fsx::remove_synced(&self.abs(rel))?;
        }
        if version_removed {
            fsx::remove_synced(&self.digests_path(model, version))?;
        }
        Ok(RemoveReport {
            model: model.into(),
            version: version.into(),
            removed,
            bytes,
            backups: backups.into_iter().map(|b| b.id).collect(),
            version_removed,
        })
    }

    /// Drops format records (and the version, and the model, when they become empty).
    pub(crate) fn drop_records(
        &self,
        reg: &mut Registry,
        model: &str,
        version: &str,
        formats: &[String],
    ) {
        let mut model_empty = false;
        if let Some(m) = reg.models.get_mut(model) {
            let mut version_empty = false;
            if let Some(v) = m.versions.get_mut(version) {
                for f in formats {
                    v.formats.remove(f);
                }
                version_empty = v.formats.is_empty();
            }
            if version_empty {
                m.versions.remove(version);
                if m.default.as_deref() == Some(version) {
                    m.default = None;
                }
            }
            model_empty = m.versions.is_empty();
        }
        if model_empty {
            reg.models.remove(model);
        }
    }
}

pub(crate) fn resolve_in(
    wm: &WeightManager,
    reg: &Registry,
    model: &str,
    version: Option<&str>,
    format: Option<OutputFormat>,
) -> Result<Resolved> {
    let m = find_model(reg, model)?;
    let version = match version {
        Some(v) => {
            validate_name("version", v)?;
            v.to_string()
        }
        None => m.default.clone().ok_or_else(|| StoreError::NoDefault {
            model: model.into(),
        })?,
    };
    let ver = model_version(m, model, &version)?;
    let format = match format {
        Some(f) => {
            if !ver.formats.contains_key(f.name()) {
                return Err(format_missing(model, &version, f, ver));
            }
            f
        }
        None => *ver
            .available_formats()
            .first()
            .ok_or_else(|| StoreError::UnknownVersion {
                model: model.into(),
                version: version.clone(),
            })?,
    };
    let record = ver
        .formats
        .get(format.name())
        .cloned()
        .ok_or_else(|| format_missing(model, &version, format, ver))?;
    Ok(Resolved {
        model: model.into(),
        path: wm.abs(&record.path),
        version,
        format,
        record,
        version_record: ver.clone(),
    })
}

fn find_model<'a>(reg: &'a Registry, model: &str) -> Result<&'a ModelRecord> {
    reg.models
        .get(model)
        .ok_or_else(|| StoreError::UnknownModel {
            model: model.into(),
        })
}

fn model_version<'a>(m: &'a ModelRecord, model: &str, version: &str) -> Result<&'a VersionRecord> {
    m.versions
        .get(version)
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
        _ if OutputFormat::from_path(file) == Some(OutputFormat::Bin) => OutputFormat::Bin,
        _ => OutputFormat::Pt,
    })
}

/// Re-hashes the `len` bytes of `path` (with a progress bar) and fails with
/// [`StoreError::Changed`] unless they hash to `sha256`, the hash the `noun` ("registered",
/// "recorded") file had.
pub(crate) fn check_sha256(
    path: &Path,
    len: u64,
    sha256: &str,
    noun: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let h = fsx::hash_file_with(path, "checking sha256", len, progress)?;
    if h.sha256 == sha256 {
        return Ok(());
    }
    Err(StoreError::Changed {
        path: path.to_path_buf(),
        what: format!("sha256 {:.16}..., {noun} {:.16}...", h.sha256, sha256),
    })
}

fn format_missing(model: &str, version: &str, f: OutputFormat, ver: &VersionRecord) -> StoreError {
    StoreError::FormatMissing {
        model: model.into(),
        version: version.into(),
        format: f.name().into(),
        available: ver.formats.keys().cloned().collect::<Vec<_>>().join(", "),
    }
}

fn version_exists(model: &str, version: &str, existing: &str, new: &str) -> StoreError {
    StoreError::VersionExists {
        model: model.into(),
        version: version.into(),
        existing: existing.into(),
        new: new.into(),
    }
}

fn existing_has(existing: &Option<VersionRecord>, format: &str) -> bool {
    existing
        .as_ref()
        .is_some_and(|v| v.formats.contains_key(format))
}

fn placed(format: &str, rec: &FormatRecord, action: FileAction) -> PlacedFile {
    PlacedFile {
        format: format.into(),
        path: rec.path.clone(),
        bytes: rec.bytes,
        sha256: rec.sha256.clone(),
        action,
    }
}

/// Checks that the detected container fits the format a file is given as.
fn check_format(path: &Path, given: OutputFormat, actual: Format) -> Result<()> {
    let ok = match given {
        OutputFormat::Safetensors => actual == Format::Safetensors,
        OutputFormat::Pt | OutputFormat::Bin => {
            matches!(actual, Format::PytorchZip | Format::PytorchLegacy)
        }
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

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
