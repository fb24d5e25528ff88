//! Disk space: what a root's bytes are spent on (`tantra du`) and freeing backups by id
//! (`tantra backups rm`).
//!
//! The store links instead of copying wherever it can (a version registered twice, `cp`,
//! backups of files that another version still names), so the bytes of paths overstate the
//! bytes on disk. Usage counts each path in its category and each inode once in the total;
//! the difference is what is shared.

use std::collections::HashSet;
use std::path::Path;

use serde::Serialize;

use crate::backup::BackupEntry;
use crate::error::{IoResultExt, Result};
use crate::fsx;
use crate::WeightManager;

/// Bytes used by a root, by what they hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskUsage {
    /// Files under `weights/` (registered versions).
    pub weights: u64,
    /// Files under `backups/`.
    pub backups: u64,
    /// Files under `checkpoints/`.
    pub checkpoints: u64,
    /// Everything else: registry, digests, configs, history, kept generations, quarantine.
    pub other: u64,
    /// Bytes on disk: each file counted once however many names it has.
    pub total: u64,
    /// Bytes reached through more than one name (counted in two categories, or twice in
    /// one): `weights + backups + checkpoints + other - total`.
    pub shared: u64,
    /// Number of paths counted.
    pub files: u64,
}

/// What [`WeightManager::remove_backups`] did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct BackupRemoval {
    pub removed: Vec<BackupEntry>,
    /// Bytes of the removed backup files.
    pub bytes: u64,
    /// Bytes freed on disk (files whose last name was the backup).
    pub freed: u64,
    pub dry_run: bool,
}

impl WeightManager {
    /// The bytes of the root by category, with what is shared through hard links.
    ///
    /// # Errors
    /// A folder or file of the root that cannot be read.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let mut u = DiskUsage::default();
        let mut seen = HashSet::new();
        if self.root.is_dir() {
            walk(&self.root, &mut |path, rel_top, meta| {
                let n = meta.len();
                u.files += 1;
                match rel_top {
                    "weights" => u.weights += n,
                    "backups" => u.backups += n,
                    "checkpoints" => u.checkpoints += n,
                    _ => u.other += n,
                }
                if seen.insert(inode(path, meta)) {
                    u.total += n;
                }
            })?;
        }
        u.shared = (u.weights + u.backups + u.checkpoints + u.other).saturating_sub(u.total);
        Ok(u)
    }

    /// Removes the backups with these ids (or unique prefixes): they leave the manifest first,
    /// then their files go. Nothing is removed unless every id names one backup.
    ///
    /// # Errors
    /// An id that names no backup or several; the lock; a manifest that cannot be read.
    pub fn remove_backups(&self, ids: &[String], dry_run: bool) -> Result<BackupRemoval> {
        let lock = if dry_run { None } else { Some(self.lock()?) };
        let mut chosen: Vec<BackupEntry> = Vec::new();
        for id in ids {
            let e = self.find_backup(id)?;
            if !chosen.iter().any(|c| c.id == e.id) {
                chosen.push(e);
            }
        }
        let mut bytes = 0;
        let mut freed = 0;
        for e in &chosen {
            let p = self.abs(&e.file);
            if let Ok(meta) = std::fs::symlink_metadata(&p) {
                bytes += meta.len();
                if links(&meta) <= 1 {
                    freed += meta.len();
                }
            }
        }
        if let Some(lock) = &lock {
            let gone: HashSet<&str> = chosen.iter().map(|e| e.id.as_str()).collect();
            let mut m = self.load_manifest()?;
            m.backups.retain(|b| !gone.contains(b.id.as_str()));
            self.save_manifest(lock, &m)?;
            for e in &chosen {
                fsx::remove_synced(&self.abs(&e.file))?;
            }
        }
        Ok(BackupRemoval {
            removed: chosen,
            bytes,
            freed,
            dry_run,
        })
    }
}

/// Calls `f(path, top-level folder name, metadata)` for every regular file under `root`.
fn walk(root: &Path, f: &mut dyn FnMut(&Path, &str, &std::fs::Metadata)) -> Result<()> {
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, top)) = stack.pop() {
        for entry in std::fs::read_dir(&dir).at(&dir)? {
            let entry = entry.at(&dir)?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).at(&path)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let top = if top.is_empty() { name } else { top.clone() };
            if meta.is_dir() {
                stack.push((path, top));
            } else if meta.is_file() {
                f(&path, &top, &meta);
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
fn inode(_path: &Path, meta: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn inode(path: &Path, _meta: &std::fs::Metadata) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.hash(&mut h);
    (0, h.finish())
}

#[cfg(unix)]
fn links(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.nlink()
}

#[cfg(not(unix))]
fn links(_meta: &std::fs::Metadata) -> u64 {
    1
}
