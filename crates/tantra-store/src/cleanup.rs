//! Cleanup: retention for versions and backups, and the sweep of what crashes leave behind.
//!
//! The rule is that **only files the store recorded as its own are deleted**: temporary files
//! whose writer is gone, backups the user asked to expire, versions retention drops (backed up
//! first unless `--no-backup`), digests of content nothing refers to. Everything else that no
//! metadata accounts for (a file in `weights/` the registry does not name, a checkpoint file
//! without a record, a file in `backups/` the manifest does not list) is moved to
//! `quarantine/`, never deleted; and when the metadata itself is missing or damaged nothing is
//! moved at all: the item is reported as kept, with the reason and what to run (`tantra
//! repair`). Version retention never touches a model's default version or a tagged one, and goes
//! through the same plan-and-publish path as `remove`. `dry_run` returns the plan without the
//! lock, so it works on a read-only root.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::error::{Result, StoreError};
use crate::fsx;
use crate::names::validate_name;
use crate::plan::{plan_remove, Removal};
use crate::time::parse_rfc3339;
use crate::WeightManager;

/// What a cleanup item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanupKind {
    /// A registered file of a version that retention drops.
    Version,
    /// A backup older than the limit.
    Backup,
    /// A file in `weights/` that the registry does not name.
    Orphan,
    /// A temporary file whose writer is gone.
    Temp,
    /// A checkpoint file without a complete record, or a record without its file.
    IncompleteCheckpoint,
    /// A file in `backups/` that the manifest does not list.
    UnlistedBackup,
    /// Per-tensor digests of a version that is no longer registered.
    StaleDigests,
    /// A checkpoint that a prune rule does not keep.
    Checkpoint,
    /// A checkpoint whose record is damaged: kept for `tantra repair`.
    DamagedCheckpoint,
    /// Something that is not a regular file (a symlink, a folder) where the store keeps files.
    NotRegular,
}

impl CleanupKind {
    pub fn name(self) -> &'static str {
        match self {
            CleanupKind::Version => "version",
            CleanupKind::Backup => "backup",
            CleanupKind::Orphan => "orphan",
            CleanupKind::Temp => "temp",
            CleanupKind::IncompleteCheckpoint => "incomplete-checkpoint",
            CleanupKind::UnlistedBackup => "unlisted-backup",
            CleanupKind::StaleDigests => "stale-digests",
            CleanupKind::Checkpoint => "checkpoint",
            CleanupKind::DamagedCheckpoint => "damaged-checkpoint",
            CleanupKind::NotRegular => "not-regular",
        }
    }
}

/// What cleanup does with an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CleanupAction {
    /// Deleted (or backed up, then deleted).
    Delete,
    /// Moved to `quarantine/`: the store cannot account for it, so it is kept.
    Quarantine,
    /// Left where it is: the metadata that would decide is missing or damaged.
    Keep,
}

impl CleanupAction {
    pub fn name(self) -> &'static str {
        match self {
            CleanupAction::Delete => "delete",
            CleanupAction::Quarantine => "quarantine",
            CleanupAction::Keep => "keep",
        }
    }
}

/// One thing cleanup removes, moves aside or keeps (or would).
#[derive(Debug, Clone, Serialize)]
pub struct CleanupItem {
    pub kind: CleanupKind,
    pub action: CleanupAction,
    /// Relative to the root.
    pub path: String,
    pub bytes: u64,
    pub model: Option<String>,
    pub version: Option<String>,
    pub format: Option<String>,
    pub step: Option<u64>,
    pub reason: String,
    /// The id of the backup taken before removal, if one was.
    pub backup: Option<String>,
}

/// What to clean.
#[derive(Debug, Clone, Default)]
pub struct CleanupOptions {
    /// Keep the newest N versions of each model (plus the default and tagged ones).
    pub keep_versions: Option<usize>,
    /// Limit version retention to one model.
    pub model: Option<String>,
    /// Remove backups older than this.
    pub backups_older_than: Option<Duration>,
    /// Sweep orphans, stale temporary files, incomplete checkpoints.
    pub orphans: bool,
    /// Only report.
    pub dry_run: bool,
    /// Delete removed versions and orphans without backing them up first.
    pub no_backup: bool,
}

/// The outcome of a cleanup.
#[derive(Debug, Clone, Serialize)]
pub struct CleanupReport {
    pub dry_run: bool,
    /// Bytes of all items together.
    pub bytes: u64,
    pub items: Vec<CleanupItem>,
}

fn item(kind: CleanupKind, path: String, bytes: u64, reason: &str) -> CleanupItem {
    let action = match kind {
        CleanupKind::Version
        | CleanupKind::Backup
        | CleanupKind::Temp
        | CleanupKind::StaleDigests
        | CleanupKind::Checkpoint => CleanupAction::Delete,
        CleanupKind::Orphan | CleanupKind::IncompleteCheckpoint | CleanupKind::UnlistedBackup => {
            CleanupAction::Quarantine
        }
        CleanupKind::DamagedCheckpoint | CleanupKind::NotRegular => CleanupAction::Keep,
    };
    CleanupItem {
        kind,
        action,
        path,
        bytes,
        model: None,
        version: None,
        format: None,
        step: None,
        reason: reason.into(),
        backup: None,
    }
}

impl WeightManager {
    /// Plans and (unless `dry_run`) carries out a cleanup.
    ///
    /// # Errors
    /// An invalid model name; a registry or manifest that does not parse; the lock; a file
    /// that cannot be removed.
    pub fn cleanup(&self, opts: &CleanupOptions) -> Result<CleanupReport> {
        if let Some(m) = &opts.model {
            validate_name("model", m)?;
        }
        if !self.root.is_dir() {
            return Ok(CleanupReport {
                dry_run: opts.dry_run,
                bytes: 0,
                items: Vec::new(),
            });
        }
        // Readers and dry runs take no lock; a real cleanup plans under it.
        let lock = if opts.dry_run {
            None
        } else {
            Some(self.lock()?)
        };
        // A registry that is missing or damaged stops everything: nothing is decided on it.
        let reg = self.registry()?;
        let manifest = self.load_manifest();
        let mut items = Vec::new();

        let mut removals = Vec::new();
        if let Some(keep) = opts.keep_versions {
            for (m, model) in &reg.models {
                if opts.model.as_deref().is_some_and(|f| f != m) {
                    continue;
                }
                let mut versions: Vec<(&String, &crate::registry::VersionRecord)> =
                    model.versions.iter().map(|(v, r)| (v, &**r)).collect();
                versions.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(b.0.cmp(a.0)));
                for (v, rec) in versions.into_iter().skip(keep) {
                    if model.default.as_deref() == Some(v.as_str()) || !rec.tags.is_empty() {
                        continue;
                    }
                    removals.push(Removal {
                        model: m.clone(),
                        version: v.clone(),
                        formats: None,
                    });
                    for (f, frec) in &rec.formats {
                        items.push(CleanupItem {
                            model: Some(m.clone()),
                            version: Some(v.clone()),
                            format: Some(f.clone()),
                            ..item(
                                CleanupKind::Version,
                                frec.path.clone(),
                                frec.bytes,
                                &format!("not among the {keep} newest versions of {m}"),
                            )
                        });
                    }
                }
            }
        }

        if let Some(age) = opts.backups_older_than {
            let manifest = match &manifest {
                Ok(m) => m,
                Err(e) => {
                    return Err(StoreError::corrupt(
                        self.manifest_path(),
                        format!(
                            "cannot expire backups without a readable manifest ({})",
                            tantra_formats::chain(e)
                        ),
                    ))
                }
            };
            let cutoff = SystemTime::now()
                .checked_sub(age)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            for b in &manifest.backups {
                let old = parse_rfc3339(&b.created).is_some_and(|t| t < cutoff);
                if old {
                    items.push(CleanupItem {
                        model: b.model.clone(),
                        version: b.version.clone(),
                        format: b.format.clone(),
                        step: b.step,
                        ..item(
                            CleanupKind::Backup,
                            b.file.clone(),
                            b.bytes,
                            &format!("backup {} taken {}", b.id, b.created),
                        )
                    });
                }
            }
        }

        if opts.orphans {
            self.plan_orphans(&reg, manifest.as_ref().ok(), &mut items)?;
        }

        let bytes = items
            .iter()
            .filter(|i| i.action == CleanupAction::Delete)
            .map(|i| i.bytes)
            .sum();
        let Some(lock) = lock else {
            return Ok(CleanupReport {
                dry_run: true,
                bytes,
                items,
            });
        };

        // Versions: one plan, one published generation, backed up unless --no-backup.
        if !removals.is_empty() {
            let plan = plan_remove(
                &reg,
                &removals,
                false,
                opts.no_backup,
                "removed by cleanup (version retention)",
            )?;
            let applied = self.apply(&lock, &reg, plan, Vec::new(), &[])?;
            for it in &mut items {
                if it.kind == CleanupKind::Version {
                    it.backup = applied
                        .backups
                        .iter()
                        .find(|b| b.original == it.path)
                        .map(|b| b.id.clone());
                }
            }
        }
        // Backups leave the manifest before their files go.
        let expired: HashSet<&str> = items
            .iter()
            .filter(|i| i.kind == CleanupKind::Backup)
            .map(|i| i.path.as_str())
            .collect();
        if !expired.is_empty() {
            let mut m = self.load_manifest()?;
            m.backups.retain(|b| !expired.contains(b.file.as_str()));
            self.save_manifest(&lock, &m)?;
        }
        for it in &mut items {
            let p = self.abs(&it.path);
            match (it.kind, it.action) {
                (CleanupKind::Version, _) | (_, CleanupAction::Keep) => {}
                (CleanupKind::Temp, _) => {
                    if fsx::is_stale_temp(&p) {
                        fsx::remove_synced(&p)?;
                    }
                }
                (_, CleanupAction::Delete) => fsx::remove_synced(&p)?,
                (_, CleanupAction::Quarantine) => {
                    let to = self.quarantine(&it.path, &it.reason)?;
                    it.reason = format!("{}; moved to {to}", it.reason);
                }
            }
        }
        drop(lock);
        Ok(CleanupReport {
            dry_run: false,
            bytes,
            items,
        })
    }

    fn plan_orphans(
        &self,
        reg: &crate::registry::Registry,
        manifest: Option<&crate::backup::Manifest>,
        items: &mut Vec<CleanupItem>,
    ) -> Result<()> {
        let registered = reg.all_paths();
        for f in self.sweep("weights", items)? {
            if !registered.contains(f.rel.as_str()) {
                items.push(item(
                    CleanupKind::Orphan,
                    f.rel,
                    f.bytes,
                    "not named by the registry",
                ));
            }
        }
        // The root itself and the generations: only temporary files are swept.
        self.sweep("", items)?;
        self.sweep(crate::txn::GENERATIONS_DIR, items)?;
        let backups = self.sweep("backups", items)?;
        match manifest {
            Some(manifest) => {
                let listed: HashSet<&str> =
                    manifest.backups.iter().map(|b| b.file.as_str()).collect();
                for f in backups {
                    if f.name != crate::backup::MANIFEST_FILE && !listed.contains(f.rel.as_str()) {
                        items.push(item(
                            CleanupKind::UnlistedBackup,
                            f.rel,
                            f.bytes,
                            "not listed in backups/manifest.json (a backup interrupted by a crash)",
                        ));
                    }
                }
            }
            None => {
                if !backups.is_empty() {
                    items.push(item(
                        CleanupKind::UnlistedBackup,
                        "backups".into(),
                        backups.iter().map(|f| f.bytes).sum(),
                        "backups/manifest.json is missing or damaged: every backup is kept; run `tantra repair`",
                    ));
                    if let Some(last) = items.last_mut() {
                        last.action = CleanupAction::Keep;
                    }
                }
            }
        }
        for model in self.checkpoint_models()? {
            let scan = self.checkpoint_scan(&model)?;
            let mut accounted = HashSet::new();
            for (path, status) in &scan {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match status {
                    Ok(r) => {
                        accounted.insert(r.file.clone());
                    }
                    Err(why) => {
                        // The record cannot be trusted, so neither it nor any file of its step
                        // is touched: `tantra repair` rebuilds it.
                        let step_prefix = name.trim_end_matches(".json").to_string();
                        for (f, _) in list_files(&self.checkpoint_dir(&model))? {
                            if f.starts_with(&step_prefix) {
                                accounted.insert(format!("checkpoints/{model}/{f}"));
                            }
                        }
                        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                        items.push(CleanupItem {
                            model: Some(model.clone()),
                            ..item(
                                CleanupKind::DamagedCheckpoint,
                                format!("checkpoints/{model}/{name}"),
                                bytes,
                                &format!("{why}; kept with its weights, run `tantra repair`"),
                            )
                        });
                    }
                }
            }
            for f in self.sweep(&format!("checkpoints/{model}"), items)? {
                if !f.name.ends_with(".json") && !accounted.contains(&f.rel) {
                    items.push(CleanupItem {
                        model: Some(model.clone()),
                        ..item(
                            CleanupKind::IncompleteCheckpoint,
                            f.rel,
                            f.bytes,
                            "checkpoint file without a record (a save interrupted by a crash)",
                        )
                    });
                }
            }
        }
        for model in list_dirs(&self.configs_dir())? {
            self.sweep(&format!("configs/{model}"), items)?;
        }
        // Digests: content-addressed files nothing refers to any more are derivable and the
        // store's own; those of backed-up or checkpointed content stay.
        let mut wanted: HashSet<String> = HashSet::new();
        for m in reg.models.values() {
            for v in m.versions.values() {
                wanted.insert(v.content.clone());
            }
        }
        if let Some(manifest) = manifest {
            for b in &manifest.backups {
                if let Some(c) = b
                    .record
                    .as_ref()
                    .and_then(|r| r.get("content"))
                    .and_then(|c| c.as_str())
                {
                    wanted.insert(c.to_string());
                }
            }
        }
        for m in self.checkpoint_models()? {
            for c in self.checkpoints(&m)? {
                wanted.insert(c.content.clone());
            }
        }
        for f in self.sweep("digests", items)? {
            let content = f.name.strip_suffix(".json").unwrap_or(&f.name);
            if manifest.is_some() && !wanted.contains(content) {
                items.push(item(
                    CleanupKind::StaleDigests,
                    f.rel,
                    f.bytes,
                    "digests of content no version, backup or checkpoint holds",
                ));
            }
        }
        for model in list_dirs(&self.digests_dir())? {
            for f in self.sweep(&format!("digests/{model}"), items)? {
                let version = f.name.strip_suffix(".json").unwrap_or(&f.name);
                if reg.version(&model, version).is_none() {
                    items.push(item(
                        CleanupKind::StaleDigests,
                        f.rel,
                        f.bytes,
                        "digests of a version that is not registered",
                    ));
                }
            }
        }
        for sub in ["weights", "backups"] {
            for (name, what) in list_other(&self.abs(sub))? {
                items.push(item(
                    CleanupKind::NotRegular,
                    format!("{sub}/{name}"),
                    0,
                    &format!("{what}, not a regular file: kept; replace it with the file itself"),
                ));
            }
        }
        Ok(())
    }

    /// Plans the removal of the temporary files in `sub` whose writer is gone and returns the
    /// folder's other files (see [`WeightManager::scan_folder`]).
    fn sweep(&self, sub: &str, items: &mut Vec<CleanupItem>) -> Result<Vec<RootFile>> {
        let (stale, files) = self.scan_folder(sub)?;
        items.extend(stale.into_iter().map(|f| {
            item(
                CleanupKind::Temp,
                f.rel,
                f.bytes,
                "left by an interrupted write",
            )
        }));
        Ok(files)
    }

    /// The files directly in the root-relative folder `sub` (`""`: the root itself), split
    /// into temporary files whose writer is gone and every other file. A temporary file whose
    /// writer still holds it is in neither list: work in progress is never touched.
    ///
    /// # Errors
    /// A folder that exists but cannot be read.
    pub(crate) fn scan_folder(&self, sub: &str) -> Result<(Vec<RootFile>, Vec<RootFile>)> {
        let dir = if sub.is_empty() {
            self.root.clone()
        } else {
            self.abs(sub)
        };
        let mut stale = Vec::new();
        let mut files = Vec::new();
        for (name, bytes) in list_files(&dir)? {
            let rel = if sub.is_empty() {
                name.clone()
            } else {
                format!("{sub}/{name}")
            };
            if !fsx::is_temp_name(&name) {
                files.push(RootFile { name, rel, bytes });
            } else if fsx::is_stale_temp(&dir.join(&name)) {
                stale.push(RootFile { name, rel, bytes });
            }
        }
        Ok((stale, files))
    }
}

/// A file directly in a folder of the root.
pub(crate) struct RootFile {
    pub name: String,
    /// Relative to the root.
    pub rel: String,
    pub bytes: u64,
}

/// Regular files directly in `dir` (name, size), sorted; a missing folder is empty.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<(String, u64)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let Ok(ft) = entry.file_type() else { continue };
        if !ft.is_file() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        out.push((name, bytes));
    }
    out.sort();
    Ok(out)
}

/// Sub-folders of `dir` with valid names, sorted.
pub(crate) fn list_dirs(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(n) = entry.file_name().to_str() {
                if crate::names::is_valid_name(n) {
                    out.push(n.to_string());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Entries directly in `dir` that are neither regular files nor folders, nor tantra's
/// temporary files: `(name, "a symlink" | "a device or socket")`.
pub(crate) fn list_other(dir: &Path) -> Result<Vec<(String, &'static str)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_file() || ft.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((
            name,
            if ft.is_symlink() {
                "a symlink"
            } else {
                "a device, pipe or socket"
            },
        ));
    }
    out.sort();
    Ok(out)
}
