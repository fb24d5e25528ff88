//! Backups: every file the store is about to overwrite or remove is first linked (or, where
//! hard links are impossible, copied) into `backups/` and listed in `backups/manifest.json`
//! with what it was, when and why. `restore` brings one back atomically and puts its registry
//! entry (or checkpoint record) back.
//!
//! A hard link costs nothing and keeps the old bytes alive because the store never writes into
//! a file in place: it renames a new file over the old name, or unlinks it. The link is made
//! and the manifest written before the original goes, and both happen under the root's lock.
//! A crash between the link and the manifest leaves an unlisted file in `backups/`, which
//! `cleanup --orphans` removes.
//!
//! Limit: a file modified in place by something else (a disk error, an editor) changes its
//! backup links too; the manifest's sha256 lets `restore` notice that.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tantra_formats::{open, OutputFormat, Progress};

use crate::checkpoint::CheckpointRecord;
use crate::content::TensorTable;
use crate::error::{Result, StoreError};
use crate::fsx::{self, FileHash};
use crate::lock::RootLock;
use crate::plan::{NewFile, RegisterRequest};
use crate::registry::{is_safe_relative, VersionRecord};
use crate::time::now_rfc3339;
use crate::WeightManager;

/// The manifest's file name in `backups/`.
pub const MANIFEST_FILE: &str = "manifest.json";
const SCHEMA: u64 = 1;

/// What a backed-up file was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// A registered weight file.
    Weights,
    /// A training checkpoint.
    Checkpoint,
    /// A model configuration.
    Config,
    /// A file in `weights/` that the registry did not name.
    Orphan,
}

impl BackupKind {
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Weights => "weights",
            BackupKind::Checkpoint => "checkpoint",
            BackupKind::Config => "config",
            BackupKind::Orphan => "orphan",
        }
    }
}

/// One backup, as `backups --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupEntry {
    /// `YYYYMMDD-HHMMSS-xxxxxx`; `restore` accepts any unique prefix.
    pub id: String,
    pub kind: BackupKind,
    /// The backup copy, relative to the root.
    pub file: String,
    /// Where the file was, relative to the root.
    pub original: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the backup was taken.
    pub created: String,
    /// Why (`removed by tantra remove`, `replaced by register --force`, ...).
    pub reason: String,
    /// The registry entry or checkpoint record, to put back on restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub schema: u64,
    #[serde(default)]
    pub backups: Vec<BackupEntry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            schema: SCHEMA,
            backups: Vec::new(),
        }
    }
}

/// A file to back up.
#[derive(Debug, Clone)]
pub(crate) struct BackupSpec {
    pub kind: BackupKind,
    pub src_rel: String,
    pub model: Option<String>,
    pub version: Option<String>,
    pub format: Option<String>,
    pub step: Option<u64>,
    pub sha256: Option<String>,
    pub bytes: u64,
    pub reason: String,
    pub record: Option<serde_json::Value>,
}

impl BackupSpec {
    /// A file at `src_rel` that belongs to no registry entry or record (yet): the other
    /// fields, where known, are set with struct update syntax.
    pub(crate) fn file(kind: BackupKind, src_rel: &str, bytes: u64, reason: String) -> Self {
        BackupSpec {
            kind,
            src_rel: src_rel.into(),
            model: None,
            version: None,
            format: None,
            step: None,
            sha256: None,
            bytes,
            reason,
            record: None,
        }
    }
}

/// What [`WeightManager::restore`] did.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub id: String,
    pub kind: BackupKind,
    /// Where the file is now, relative to the root.
    pub path: String,
    pub model: Option<String>,
    pub version: Option<String>,
    pub format: Option<String>,
    pub step: Option<u64>,
    /// Backups taken of what the restore displaced.
    pub backups: Vec<String>,
}

impl WeightManager {
    pub(crate) fn manifest_path(&self) -> PathBuf {
        self.backups_dir().join(MANIFEST_FILE)
    }

    /// The backup manifest.
    ///
    /// # Errors
    /// A manifest that does not parse, or one that is missing while `backups/` holds files: the
    /// store never decides anything about backups it cannot account for (`tantra repair`
    /// rebuilds the manifest).
    pub(crate) fn load_manifest(&self) -> Result<Manifest> {
        let path = self.manifest_path();
        let m: Manifest = match fsx::read_json(&path)? {
            Some(m) => m,
            None => {
                let n = crate::cleanup::list_files(&self.backups_dir())?
                    .iter()
                    .filter(|(n, _)| !fsx::is_temp_name(n))
                    .count();
                if n > 0 {
                    return Err(StoreError::corrupt(
                        &path,
                        format!("the backup manifest is missing while backups/ holds {n} file(s)"),
                    ));
                }
                Manifest::default()
            }
        };
        if m.schema > SCHEMA {
            return Err(StoreError::SchemaTooNew {
                path,
                found: m.schema,
                supported: SCHEMA,
            });
        }
        Ok(m)
    }

    pub(crate) fn save_manifest(&self, _lock: &RootLock, m: &Manifest) -> Result<()> {
        fsx::write_json_atomic(&self.manifest_path(), m)
    }

    /// Backs up `specs` (the caller holds the lock). A file that no longer exists is skipped:
    /// there is nothing left to keep.
    pub(crate) fn backup_locked(
        &self,
        lock: &RootLock,
        specs: Vec<BackupSpec>,
    ) -> Result<Vec<BackupEntry>> {
        if specs.is_empty() {
            return Ok(Vec::new());
        }
        let mut manifest = self.load_manifest()?;
        let dir = self.backups_dir();
        fsx::create_dirs(&dir)?;
        // The manifest exists before the first backup file does: a crash between the link and
        // the manifest's update then leaves an unlisted backup (a leftover cleanup moves to
        // quarantine), never a "manifest missing" root that refuses to remove anything.
        if std::fs::symlink_metadata(self.manifest_path()).is_err() {
            self.save_manifest(lock, &manifest)?;
        }
        let mut out = Vec::new();
        for spec in specs {
            let src = self.abs(&spec.src_rel);
            // A missing file leaves nothing to keep; a symlink is followed and its bytes copied
            // (never a link to a link).
            if !src.is_file() {
                continue;
            }
            let base = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "file".into());
            let mut attempt = 0;
            let (id, name) = loop {
                let id = new_id();
                let name = format!("{id}_{base}");
                match fsx::link_or_copy(&src, &dir.join(&name)) {
                    Ok(_) => break (id, name),
                    Err(StoreError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 =>
                    {
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            };
            let entry = BackupEntry {
                id,
                kind: spec.kind,
                file: format!("backups/{name}"),
                original: spec.src_rel,
                model: spec.model,
                version: spec.version,
                format: spec.format,
                step: spec.step,
                bytes: spec.bytes,
                sha256: spec.sha256,
                created: now_rfc3339(),
                reason: spec.reason,
                record: spec.record,
            };
            manifest.backups.push(entry.clone());
            out.push(entry);
        }
        self.save_manifest(lock, &manifest)?;
        Ok(out)
    }

    /// Every backup, oldest first.
    pub fn backups(&self) -> Result<Vec<BackupEntry>> {
        let mut b = self.load_manifest()?.backups;
        b.sort_by(|x, y| x.created.cmp(&y.created).then(x.id.cmp(&y.id)));
        Ok(b)
    }

    /// The backup with id `id` or the only one whose id starts with it.
    ///
    /// # Errors
    /// No backup, or several, match.
    pub fn find_backup(&self, id: &str) -> Result<BackupEntry> {
        let all = self.load_manifest()?.backups;
        if let Some(e) = all.iter().find(|e| e.id == id) {
            return Ok(e.clone());
        }
        let matches: Vec<&BackupEntry> = all
            .iter()
            .filter(|e| !id.is_empty() && e.id.starts_with(id))
            .collect();
        match matches.len() {
            0 => Err(StoreError::UnknownBackup { id: id.into() }),
            1 => Ok(matches[0].clone()),
            n => Err(StoreError::AmbiguousBackup {
                id: id.into(),
                count: n,
            }),
        }
    }

    /// Puts a backed-up file back where it was, atomically, and restores its registry entry
    /// (weights) or record (checkpoints). Whatever is at that place now is backed up first.
    /// Restoring weights of a version that now holds other weights replaces that version.
    ///
    /// # Errors
    /// An unknown id; a backup whose file is missing or whose bytes no longer match its
    /// sha256 ([`StoreError::BackupDamaged`]); the lock.
    pub fn restore(&self, id: &str, progress: &dyn Progress) -> Result<RestoreReport> {
        let entry = self.find_backup(id)?;
        let bfile = self.abs(&entry.file);
        let damaged = |detail: String| StoreError::BackupDamaged {
            id: entry.id.clone(),
            path: bfile.clone(),
            detail,
        };
        if !is_safe_relative(&entry.file) || !is_safe_relative(&entry.original) {
            return Err(StoreError::corrupt(
                self.manifest_path(),
                format!("backup {}: a path leaves the root", entry.id),
            ));
        }
        if !bfile.is_file() {
            return Err(damaged("the backup file is missing".into()));
        }
        let target = self.abs(&entry.original);
        let dir = tantra_formats::fsutil::parent_dir(&target);
        fsx::create_dirs(&dir)?;
        // The copy that will be renamed into place; hashed while it is written.
        let staged = fsx::copy_to_temp(&bfile, &dir, &target, progress)?;
        if let Some(sha) = &entry.sha256 {
            if &staged.hash.sha256 != sha {
                return Err(damaged(format!(
                    "sha256 {:.16}..., recorded {:.16}...",
                    staged.hash.sha256, sha
                )));
            }
        }
        let table = match entry.kind {
            BackupKind::Weights | BackupKind::Checkpoint => {
                let src = open(staged.path()).map_err(|e| damaged(e.kind.to_string()))?;
                Some(
                    TensorTable::of(src.as_ref(), self.jobs, progress)
                        .map_err(|e| damaged(e.kind.to_string()))?,
                )
            }
            _ => None,
        };
        let hash = staged.hash.clone();
        let tmp = staged.tmp;
        match (entry.kind, table) {
            (BackupKind::Weights, Some(table)) => self.restore_weights(&entry, tmp, &hash, &table),
            (BackupKind::Checkpoint, Some(_)) => self.restore_checkpoint(&entry, tmp, &target),
            _ => self.restore_plain(&entry, tmp, &target),
        }
    }

    fn restore_weights(
        &self,
        entry: &BackupEntry,
        tmp: tempfile::NamedTempFile,
        hash: &FileHash,
        table: &TensorTable,
    ) -> Result<RestoreReport> {
        let bad = |what: &str| {
            StoreError::corrupt(self.manifest_path(), format!("backup {}: {what}", entry.id))
        };
        let (Some(model), Some(version), Some(format)) =
            (&entry.model, &entry.version, &entry.format)
        else {
            return Err(bad("a weights backup without model, version and format"));
        };
        let snap: VersionRecord = entry
            .record
            .clone()
            .and_then(|r| serde_json::from_value(r).ok())
            .ok_or_else(|| bad("the registry entry is missing or damaged"))?;
        let Some(frec) = snap.formats.get(format).cloned() else {
            return Err(bad("the registry entry does not name the file's format"));
        };
        let fmt: OutputFormat = format
            .parse()
            .map_err(|e: String| bad(&format!("format: {e}")))?;
        if snap.content != table.content {
            return Err(StoreError::BackupDamaged {
                id: entry.id.clone(),
                path: self.abs(&entry.file),
                detail: "its tensors are not those recorded".into(),
            });
        }
        let lock = self.lock()?;
        let current = self.registry()?;
        let canonical = crate::plan::canonical_rel(model, version, fmt);
        if let Some((m, v, f)) = current.owner_of(&canonical) {
            if (m, v, f) != (model.as_str(), version.as_str(), format.as_str()) {
                return Err(blocked(self.abs(&canonical), m, v, f));
            }
        }
        let req = RegisterRequest {
            model: model.clone(),
            version: version.clone(),
            content: snap.content.clone(),
            parameters: snap.parameters,
            tensors: snap.tensors,
            dtypes: snap.dtypes.clone(),
            files: vec![NewFile {
                format: fmt,
                sha256: hash.sha256.clone(),
                bytes: hash.bytes,
                source: frec.source.clone(),
                staged: true,
            }],
            tags: Vec::new(),
            note: None,
            config: None,
            make_default: false,
            force: true,
            now: crate::time::now_rfc3339(),
            reason: format!("replaced by restore {}", entry.id),
        };
        let (mut plan, files) = crate::plan::plan_register(&current, &req)?;
        if current.version(model, version).is_none() {
            // The version comes back as it was: its dates, tags, note and config.
            if let Some(v) = plan.registry.version_mut(model, version) {
                v.created = snap.created.clone();
                v.note = snap.note.clone();
                v.config = snap.config.clone();
                v.extra = snap.extra.clone();
                v.tags = snap.tags.clone();
            }
            for t in &snap.tags {
                if let Some(m) = plan.registry.models.get_mut(model) {
                    let holders: Vec<String> = m
                        .versions
                        .iter()
                        .filter(|(v, rec)| *v != version && rec.tags.contains(t))
                        .map(|(v, _)| v.clone())
                        .collect();
                    for v in holders {
                        if let Some(rec) = m.versions.get_mut(&v) {
                            std::sync::Arc::make_mut(rec).tags.retain(|x| x != t);
                        }
                    }
                }
            }
        }
        let path = files
            .first()
            .map(|f| f.path.clone())
            .unwrap_or_else(|| entry.original.clone());
        let applied = self.apply(&lock, &current, plan, vec![Some(tmp)], &[table])?;
        drop(lock);
        let path = self
            .registry()
            .ok()
            .and_then(|r| {
                r.version(model, version)
                    .and_then(|v| v.formats.get(format))
                    .map(|f| f.path.clone())
            })
            .unwrap_or(path);
        Ok(RestoreReport {
            id: entry.id.clone(),
            kind: entry.kind,
            path,
            model: Some(model.clone()),
            version: Some(version.clone()),
            format: Some(format.clone()),
            step: None,
            backups: applied.backups.into_iter().map(|b| b.id).collect(),
        })
    }

    fn restore_checkpoint(
        &self,
        entry: &BackupEntry,
        tmp: tempfile::NamedTempFile,
        target: &Path,
    ) -> Result<RestoreReport> {
        let rec: CheckpointRecord = entry
            .record
            .clone()
            .and_then(|r| serde_json::from_value(r).ok())
            .ok_or_else(|| {
                StoreError::corrupt(
                    self.manifest_path(),
                    format!(
                        "backup {}: the checkpoint record is missing or damaged",
                        entry.id
                    ),
                )
            })?;
        crate::names::validate_name("model", &rec.model)?;
        let lock = self.lock()?;
        let record_path = self.checkpoint_record_path(&rec.model, rec.step);
        let mut specs = Vec::new();
        if let Some(live) = self.read_checkpoint_record(&record_path)? {
            specs.push(
                self.checkpoint_backup_spec(&live, &format!("replaced by restore {}", entry.id)),
            );
        }
        let taken = self.backup_locked(&lock, specs)?;
        // The record goes first, so that no record ever names a file being replaced.
        fsx::remove_synced(&record_path)?;
        fsx::persist(tmp, target, true)?;
        fsx::write_json_atomic(&record_path, &rec)?;
        Ok(RestoreReport {
            id: entry.id.clone(),
            kind: entry.kind,
            path: entry.original.clone(),
            model: Some(rec.model.clone()),
            version: None,
            format: Some(rec.format.clone()),
            step: Some(rec.step),
            backups: taken.into_iter().map(|b| b.id).collect(),
        })
    }

    fn restore_plain(
        &self,
        entry: &BackupEntry,
        tmp: tempfile::NamedTempFile,
        target: &Path,
    ) -> Result<RestoreReport> {
        let lock = self.lock()?;
        // A file the registry names now is not replaced behind the registry's back.
        if let Some((m, v, f)) = self.registry()?.owner_of(&entry.original) {
            return Err(blocked(target.to_path_buf(), m, v, f));
        }
        let mut specs = Vec::new();
        if target.is_file() {
            specs.push(BackupSpec {
                model: entry.model.clone(),
                version: entry.version.clone(),
                format: entry.format.clone(),
                ..BackupSpec::file(
                    entry.kind,
                    &entry.original,
                    crate::weights::file_len(target).unwrap_or(0),
                    format!("replaced by restore {}", entry.id),
                )
            });
        }
        let taken = self.backup_locked(&lock, specs)?;
        fsx::persist(tmp, target, true)?;
        Ok(RestoreReport {
            id: entry.id.clone(),
            kind: entry.kind,
            path: entry.original.clone(),
            model: entry.model.clone(),
            version: entry.version.clone(),
            format: entry.format.clone(),
            step: entry.step,
            backups: taken.into_iter().map(|b| b.id).collect(),
        })
    }
}

fn blocked(path: PathBuf, m: &str, v: &str, f: &str) -> StoreError {
    StoreError::RestoreBlocked {
        path,
        owner: format!("{m}:{v} ({f})"),
        model: m.into(),
        version: v.into(),
        format: f.into(),
    }
}

/// A new backup id: the time (readable, sortable) and six hex digits that differ between
/// processes and calls.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now();
    let stamp = crate::time::format_rfc3339(now);
    // 2025-01-02T03:04:05.123456Z -> 20250102-030405
    let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
    let date = digits.get(0..8).unwrap_or("00000000");
    let time = digits.get(8..14).unwrap_or("000000");
    let mut h = Sha256::new();
    h.update(format!("{stamp}{}", std::process::id()).as_bytes());
    h.update(COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.update(nanos.to_le_bytes());
    let tail = hex::encode(&h.finalize()[..3]);
    format!("{date}-{time}-{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_readable_and_distinct() {
        let a = new_id();
        let b = new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), "20250102-030405-abcdef".len(), "{a}");
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() || c == '-'));
    }
}
