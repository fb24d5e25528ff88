//! Carrying out a [`Plan`]: the one way the registry changes.
//!
//! Under the root's lock, in this order:
//! 1. back up the files the plan will retire (hard links, listed in `backups/manifest.json`);
//! 2. write the per-tensor digests the new registry needs (content-addressed, never overwritten);
//! 3. place the new files under names the current registry does not use; anything already at
//!    such a name is not the store's (no registry names it) and is moved to `quarantine/`, or
//!    dropped when it holds exactly the bytes being placed;
//! 4. publish: append the history line, keep the current registry as a generation, rename the
//!    new registry into place. This rename is the commit;
//! 5. unlink the retired files (backed up in step 1), and move files placed under alternate
//!    names to their canonical names, each move its own small commit.
//!
//! A failure in steps 1-4 removes the files placed in step 3 and returns the error: the registry
//! and every file it names are as before. A crash there leaves at most unnamed files, which the
//! next run moves aside. A failure in step 5 leaves the new registry published and valid, with a
//! file left over (reported by `verify`, kept by `cleanup`).

use std::path::Path;

use tempfile::NamedTempFile;

use crate::backup::BackupEntry;
use crate::content::TensorTable;
use crate::error::{Result, StoreError};
use crate::fsx;
use crate::history::{self, HistoryEntry};
use crate::lock::RootLock;
use crate::plan::{Place, PlaceFrom, Plan};
use crate::registry::Registry;
use crate::time::now_rfc3339;
use crate::WeightManager;

/// Folder of the kept registry generations.
pub const GENERATIONS_DIR: &str = "generations";
/// How many past registry generations are kept.
pub const KEEP_GENERATIONS: usize = 10;
/// Folder of files the store moved aside because it could not account for them.
pub const QUARANTINE_DIR: &str = "quarantine";

/// What carrying out a plan did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Applied {
    /// The registry as published at the end.
    pub registry: std::sync::Arc<Registry>,
    pub backups: Vec<BackupEntry>,
    pub generation: u64,
    /// Bytes whose last name was unlinked (really freed now).
    pub freed: u64,
    /// Files moved to `quarantine/` on the way.
    pub quarantined: Vec<String>,
}

impl WeightManager {
    /// Carries out `plan` against `current` (the registry read under `lock`). `staged[i]` is the
    /// temporary file of [`PlaceFrom::Staged`]`(i)`.
    pub(crate) fn apply(
        &self,
        lock: &RootLock,
        current: &Registry,
        mut plan: Plan,
        mut staged: Vec<Option<NamedTempFile>>,
        tables: &[&TensorTable],
    ) -> Result<Applied> {
        current.check_writable(&self.registry_path())?;
        if plan.is_noop(current) {
            return Ok(Applied {
                generation: current.generation,
                registry: std::sync::Arc::new(current.clone()),
                ..Applied::default()
            });
        }
        let mut applied = Applied {
            backups: self.backup_locked(lock, std::mem::take(&mut plan.backups))?,
            ..Applied::default()
        };
        for t in tables {
            self.save_digests(t)?;
        }
        let mut placed: Vec<std::path::PathBuf> = Vec::new();
        let result = self.place_all(&plan.place, &mut staged, &mut placed, &mut applied);
        let result = result.and_then(|()| self.publish(current, &mut plan.registry));
        if let Err(e) = result {
            // A failure after the rename (syncing the folder) means the new registry is
            // published: the change happened and its files must stay, so the command carries
            // on as done (the next folder sync makes the entry durable). Only an unpublished
            // plan is rolled back and reported.
            if !self.is_published(&plan.registry) {
                for p in placed {
                    let _ = std::fs::remove_file(p);
                }
                return Err(e);
            }
        }
        applied.generation = plan.registry.generation;
        for rel in &plan.retire {
            if plan.registry.owner_of(rel).is_some() {
                continue;
            }
            let path = self.abs(rel);
            let last_name = nlink(&path) == Some(1);
            let bytes = std::fs::symlink_metadata(&path)
                .map(|m| m.len())
                .unwrap_or(0);
            if fsx::remove_synced(&path).is_ok() && last_name {
                applied.freed += bytes;
            }
        }
        for rel in &plan.quarantine {
            if plan.registry.owner_of(rel).is_none()
                && std::fs::symlink_metadata(self.abs(rel)).is_ok()
            {
                if let Ok(q) = self.quarantine(rel, "damaged file replaced by repair") {
                    applied.quarantined.push(q);
                }
            }
        }
        let mut reg = plan.registry;
        for r in &plan.renames {
            // Best effort: the version is complete under its alternate name already.
            if self.rename_registered(&mut reg, r).is_err() {
                break;
            }
        }
        applied.generation = reg.generation;
        applied.registry = std::sync::Arc::new(reg);
        self.cache.adopt(&applied.registry);
        Ok(applied)
    }

    fn place_all(
        &self,
        places: &[Place],
        staged: &mut [Option<NamedTempFile>],
        placed: &mut Vec<std::path::PathBuf>,
        applied: &mut Applied,
    ) -> Result<()> {
        for p in places {
            let target = self.abs(&p.rel);
            if p.from == PlaceFrom::InPlace {
                continue;
            }
            self.clear_way(&p.rel, &p.sha256, p.bytes, applied)?;
            match &p.from {
                PlaceFrom::Staged(i) => {
                    let tmp = staged.get_mut(*i).and_then(Option::take).ok_or_else(|| {
                        StoreError::io(
                            &target,
                            std::io::Error::other("internal: staged file missing"),
                        )
                    })?;
                    fsx::persist(tmp, &target, false)?;
                }
                PlaceFrom::Link(src) => {
                    fsx::link_or_copy(&self.abs(src), &target)?;
                }
                PlaceFrom::InPlace => {}
            }
            placed.push(target);
        }
        Ok(())
    }

    /// Makes room at `rel` (which no registry entry names): a file there with exactly these
    /// bytes is dropped, anything else is moved to `quarantine/`.
    fn clear_way(&self, rel: &str, sha256: &str, bytes: u64, applied: &mut Applied) -> Result<()> {
        let path = self.abs(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        if meta.file_type().is_file() && meta.len() == bytes {
            let h = fsx::hash_file(&path, &tantra_formats::NoProgress)?;
            if h.sha256 == sha256 {
                return fsx::remove_synced(&path);
            }
        }
        let q = self.quarantine(rel, "in the way of a file being placed")?;
        applied.quarantined.push(q);
        Ok(())
    }

    /// Moves the file at root-relative `rel` to `quarantine/` (a rename: nothing is copied or
    /// lost) and notes why in `quarantine/index.jsonl`. Returns the new relative path.
    pub(crate) fn quarantine(&self, rel: &str, why: &str) -> Result<String> {
        let dir = self.root.join(QUARANTINE_DIR);
        fsx::create_dirs(&dir)?;
        let base = rel.replace('/', "__");
        let stamp: String = now_rfc3339().chars().filter(char::is_ascii_digit).collect();
        let mut n = 0u32;
        let name = loop {
            let name = if n == 0 {
                format!("{stamp}_{base}")
            } else {
                format!("{stamp}-{n}_{base}")
            };
            if std::fs::symlink_metadata(dir.join(&name)).is_err() {
                break name;
            }
            n += 1;
        };
        let from = self.abs(rel);
        let to = dir.join(&name);
        fsx::rename_fresh(&from, &to)?;
        let line = serde_json::json!({
            "file": format!("{QUARANTINE_DIR}/{name}"),
            "original": rel,
            "reason": why,
            "time": now_rfc3339(),
        });
        let index = dir.join("index.jsonl");
        let mut text = line.to_string();
        text.push('\n');
        fsx::append_synced(&index, text.as_bytes())?;
        Ok(format!("{QUARANTINE_DIR}/{name}"))
    }

    /// Publishes `new` as the next generation after `old`: history line, kept generation,
    /// atomic rename. Sets `new.generation`.
    pub(crate) fn publish(&self, old: &Registry, new: &mut Registry) -> Result<()> {
        let path = self.registry_path();
        new.check_writable(&path)?;
        new.generation = old.generation + 1;
        let (changes, after, defaults) = history::diff(old, new);
        let entry = HistoryEntry {
            generation: new.generation,
            time: now_rfc3339(),
            user: history::current_user(),
            command: self.command.clone(),
            changes,
            after,
            defaults,
        };
        history::append(&self.root.join(history::HISTORY_FILE), &entry)?;
        if path.exists() {
            let gens = self.root.join(GENERATIONS_DIR);
            fsx::create_dirs(&gens)?;
            let keep = gens.join(generation_file(old.generation));
            if std::fs::symlink_metadata(&keep).is_err() {
                fsx::link_or_copy(&path, &keep)?;
            }
        }
        let json = self
            .cache
            .fragments
            .to_json(new)
            .map_err(|e| StoreError::io(&path, e.into()))?;
        if let Err(e) = fsx::write_json_bytes_atomic(&path, &json) {
            self.cache.clear();
            return Err(e);
        }
        self.note_published(&path);
        self.prune_generations();
        Ok(())
    }

    /// Moves a registered file from its alternate name to its canonical one: link, publish,
    /// unlink. Each state in between is a valid registry naming complete files.
    fn rename_registered(&self, reg: &mut Registry, r: &crate::plan::Rename) -> Result<()> {
        let to = self.abs(&r.to);
        if std::fs::symlink_metadata(&to).is_ok() || reg.owner_of(&r.to).is_some() {
            return Ok(()); // something is there: keep the alternate name
        }
        fsx::link_or_copy(&self.abs(&r.from), &to)?;
        let mut next = reg.clone();
        match next
            .version_mut(&r.model, &r.version)
            .and_then(|v| v.formats.get_mut(&r.format))
        {
            Some(rec) if rec.path == r.from => rec.path = r.to.clone(),
            _ => {
                let _ = std::fs::remove_file(&to);
                return Ok(());
            }
        }
        if let Err(e) = self.publish(reg, &mut next) {
            if !self.is_published(&next) {
                let _ = std::fs::remove_file(&to);
            }
            return Err(e);
        }
        *reg = next;
        fsx::remove_synced(&self.abs(&r.from))
    }

    /// True when the registry on disk is `reg` (a publish whose rename happened, whatever
    /// failed after it).
    fn is_published(&self, reg: &Registry) -> bool {
        self.registry_shared()
            .is_ok_and(|r| r.generation == reg.generation && *r == *reg)
    }

    /// Keeps the newest [`KEEP_GENERATIONS`] generation files (best effort).
    fn prune_generations(&self) {
        let dir = self.root.join(GENERATIONS_DIR);
        let Ok(mut names) = crate::cleanup::list_files(&dir) else {
            return;
        };
        names.retain(|(n, _)| parse_generation_file(n).is_some());
        names.sort_by_key(|(n, _)| parse_generation_file(n));
        let excess = names.len().saturating_sub(KEEP_GENERATIONS);
        for (n, _) in names.into_iter().take(excess) {
            let _ = fsx::remove_synced(&dir.join(n));
        }
    }

    /// Writes a version's per-tensor digests, `digests/<content>.json`, unless they are there.
    pub(crate) fn save_digests(&self, table: &TensorTable) -> Result<()> {
        let path = self.content_digests_path(&table.content);
        if let Ok(Some(t)) = TensorTable::load(&path) {
            if t.content == table.content && t.recomputed_content() == t.content {
                return Ok(());
            }
        }
        fsx::create_dirs(&self.digests_dir())?;
        table.save(&path)
    }

    /// `digests/<content>.json`.
    pub(crate) fn content_digests_path(&self, content: &str) -> std::path::PathBuf {
        self.digests_dir().join(format!("{content}.json"))
    }
}

/// `weight_config.<generation>.json`, zero-padded so that names sort by generation.
pub(crate) fn generation_file(generation: u64) -> String {
    format!("weight_config.{generation:010}.json")
}

/// The generation of a kept registry file name.
pub(crate) fn parse_generation_file(name: &str) -> Option<u64> {
    name.strip_prefix("weight_config.")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

#[cfg(unix)]
fn nlink(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.nlink())
}

#[cfg(not(unix))]
fn nlink(_path: &Path) -> Option<u64> {
    None
}
