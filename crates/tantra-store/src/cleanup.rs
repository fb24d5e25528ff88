//! Cleanup: retention for versions and backups, and the sweep of what crashes leave behind.
//!
//! Garbage collection here is "mark what the registry, the backup manifest and the checkpoint
//! records name, sweep the rest": files in `weights/` that the registry does not name,
//! temporary files whose writer is gone (their lock can be taken), checkpoint files without a
//! complete record, backup copies the manifest does not list, digest files of versions that
//! no longer exist. Version retention never touches a model's default version or a tagged
//! one. Everything is planned first under the root's lock; `dry_run` returns the plan.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::backup::{BackupKind, BackupSpec};
use crate::error::{Result, StoreError};
use crate::fsx;
use crate::names::validate_name;
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
        }
    }
}

/// One thing cleanup removes (or would remove).
#[derive(Debug, Clone, Serialize)]
pub struct CleanupItem {
    pub kind: CleanupKind,
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
    CleanupItem {
        kind,
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
        let lock = self.lock()?;
        let mut reg = self.registry()?;
        let manifest = self.load_manifest()?;
        let mut items = Vec::new();

        if let Some(keep) = opts.keep_versions {
            for (m, model) in &reg.models {
                if opts.model.as_deref().is_some_and(|f| f != m) {
                    continue;
                }
                let mut versions: Vec<(&String, &crate::registry::VersionRecord)> =
                    model.versions.iter().collect();
                versions.sort_by(|a, b| b.1.created.cmp(&a.1.created).then(b.0.cmp(a.0)));
                for (v, rec) in versions.into_iter().skip(keep) {
                    if model.default.as_deref() == Some(v.as_str()) || !rec.tags.is_empty() {
                        continue;
                    }
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
            self.plan_orphans(&reg, &manifest, &mut items)?;
        }

        let bytes = items.iter().map(|i| i.bytes).sum();
        if opts.dry_run {
            return Ok(CleanupReport {
                dry_run: true,
                bytes,
                items,
            });
        }

        // Back up what deserves it, before anything goes.
        let mut specs = Vec::new();
        if !opts.no_backup {
            for it in &items {
                match it.kind {
                    CleanupKind::Version => {
                        let (Some(m), Some(v), Some(f)) = (&it.model, &it.version, &it.format)
                        else {
                            continue;
                        };
                        if let Some(ver) = reg.version(m, v) {
                            if let Some(frec) = ver.formats.get(f) {
                                specs.push(self.weights_backup_spec(
                                    m,
                                    v,
                                    f,
                                    ver,
                                    frec,
                                    "removed by cleanup (version retention)",
                                ));
                            }
                        }
                    }
                    CleanupKind::Orphan => specs.push(BackupSpec::file(
                        BackupKind::Orphan,
                        &it.path,
                        it.bytes,
                        "removed by cleanup (not in the registry)".into(),
                    )),
                    _ => {}
                }
            }
        }
        let taken = self.backup_locked(&lock, specs)?;
        for it in &mut items {
            it.backup = taken
                .iter()
                .find(|b| b.original == it.path)
                .map(|b| b.id.clone());
        }

        // Registry first: nothing it names is removed before it stops naming it.
        let mut dropped_versions = Vec::new();
        let version_items: Vec<&CleanupItem> = items
            .iter()
            .filter(|i| i.kind == CleanupKind::Version)
            .collect();
        if !version_items.is_empty() {
            for it in &version_items {
                if let (Some(m), Some(v), Some(f)) = (&it.model, &it.version, &it.format) {
                    self.drop_records(&mut reg, m, v, std::slice::from_ref(f));
                    if reg.version(m, v).is_none() {
                        dropped_versions.push((m.clone(), v.clone()));
                    }
                }
            }
            reg.save(&self.registry_path())?;
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
        for it in &items {
            let p = self.abs(&it.path);
            if it.kind == CleanupKind::Temp && !fsx::is_stale_temp(&p) {
                continue; // its writer came back to life? never remove a live one
            }
            fsx::remove_synced(&p)?;
        }
        dropped_versions.dedup();
        for (m, v) in dropped_versions {
            fsx::remove_synced(&self.digests_path(&m, &v))?;
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
        manifest: &crate::backup::Manifest,
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
        // The root itself: only its temporary files (of the registry) are swept.
        self.sweep("", items)?;
        let listed: HashSet<&str> = manifest.backups.iter().map(|b| b.file.as_str()).collect();
        for f in self.sweep("backups", items)? {
            if f.name != crate::backup::MANIFEST_FILE && !listed.contains(f.rel.as_str()) {
                items.push(item(
                    CleanupKind::UnlistedBackup,
                    f.rel,
                    f.bytes,
                    "not listed in backups/manifest.json (a backup interrupted by a crash)",
                ));
            }
        }
        for model in self.checkpoint_models()? {
            let scan = self.checkpoint_scan(&model)?;
            let mut complete_files = HashSet::new();
            for (path, status) in &scan {
                match status {
                    Ok(r) => {
                        complete_files.insert(r.file.clone());
                    }
                    Err(why) => {
                        let name = path
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                        items.push(CleanupItem {
                            model: Some(model.clone()),
                            ..item(
                                CleanupKind::IncompleteCheckpoint,
                                format!("checkpoints/{model}/{name}"),
                                bytes,
                                &format!("checkpoint record without a complete file: {why}"),
                            )
                        });
                    }
                }
            }
            for f in self.sweep(&format!("checkpoints/{model}"), items)? {
                if !f.name.ends_with(".json") && !complete_files.contains(&f.rel) {
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
