//! Repair: fix what `verify` finds, proving every result before it replaces anything.
//!
//! - **A missing or damaged registry** is rebuilt from the newest kept generation that parses
//!   (`generations/`) plus the committed history lines after it, or from the history alone
//!   when it starts at generation 1. The rebuilt registry is checked against the files: every
//!   file it names must be there with its recorded size and sha256, or the version is left out
//!   and named. The damaged registry is moved to `quarantine/`, never deleted.
//! - **A damaged or missing registered file** comes back from a backup holding exactly the
//!   registered bytes (sha256), else it is rebuilt from another registered format of the same
//!   version whose bytes are intact, and accepted only when its per-tensor digests equal the
//!   version's. The damaged file goes to `quarantine/`.
//! - **Missing or damaged per-tensor digests** are recomputed from an intact registered file.
//! - **A damaged checkpoint record** is rebuilt from its weight file (metrics come back from a
//!   backup of the record when one holds those bytes; otherwise they are lost, and said so).
//!
//! What cannot be fixed is named, with the file and what to do.

use std::collections::BTreeMap;

use serde::Serialize;
use tantra_formats::convert::archive_name;
use tantra_formats::{open, write_to, OutputFormat, Progress};

use crate::checkpoint::CheckpointRecord;
use crate::content::TensorTable;
use crate::error::{Result, StoreError};
use crate::fsx;
use crate::history;
use crate::plan::{Place, PlaceFrom, Plan, Rename};
use crate::registry::{Registry, Source};
use crate::txn::{parse_generation_file, GENERATIONS_DIR};
use crate::verify::{ProblemKind, VerifyScope};
use crate::WeightManager;

/// One thing repair did, would do, or could not do.
#[derive(Debug, Clone, Serialize)]
pub struct RepairAction {
    /// `registry`, `file`, `digests`, `checkpoint-record`, `manifest`.
    pub what: String,
    /// Relative to the root.
    pub path: String,
    /// True when fixed (or, in a dry run, fixable).
    pub fixed: bool,
    /// How, or why not and what to do.
    pub detail: String,
}

/// The outcome of a repair.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub dry_run: bool,
    pub actions: Vec<RepairAction>,
}

impl RepairReport {
    /// True when everything found was fixed.
    pub fn ok(&self) -> bool {
        self.actions.iter().all(|a| a.fixed)
    }
}

fn action(
    what: &str,
    path: impl Into<String>,
    fixed: bool,
    detail: impl Into<String>,
) -> RepairAction {
    RepairAction {
        what: what.into(),
        path: path.into(),
        fixed,
        detail: detail.into(),
    }
}

impl WeightManager {
    /// Finds and fixes what can be fixed (see the module docs); with `dry_run`, only says.
    ///
    /// # Errors
    /// The lock; an I/O error while fixing. Damage that cannot be fixed is not an error: it is
    /// in the report, with `fixed: false`.
    pub fn repair(&self, dry_run: bool, progress: &dyn Progress) -> Result<RepairReport> {
        let mut actions = Vec::new();
        if !self.root.is_dir() {
            return Ok(RepairReport { dry_run, actions });
        }
        let lock = if dry_run { None } else { Some(self.lock()?) };
        // 1. The registry.
        let current = match self.registry() {
            Ok(r) => r,
            Err(
                e @ (StoreError::Corrupt { .. }
                | StoreError::RegistryMissing { .. }
                | StoreError::SchemaTooNew { .. }),
            ) => {
                if matches!(e, StoreError::SchemaTooNew { .. }) {
                    return Err(e);
                }
                match self.rebuild_registry()? {
                    Ok((reg, how, left_out)) => {
                        for l in &left_out {
                            actions.push(action(
                                "registry",
                                crate::weights::REGISTRY_FILE,
                                false,
                                l.clone(),
                            ));
                        }
                        actions.push(action(
                            "registry",
                            crate::weights::REGISTRY_FILE,
                            true,
                            format!("{}; rebuilt {how}", tantra_formats::chain(&e)),
                        ));
                        if let Some(lock) = &lock {
                            let _ = lock;
                            let path = self.registry_path();
                            if std::fs::symlink_metadata(&path).is_ok() {
                                self.quarantine(
                                    crate::weights::REGISTRY_FILE,
                                    "damaged registry replaced by repair",
                                )?;
                            }
                            let mut next = reg.clone();
                            let base = Registry {
                                generation: reg.generation,
                                ..Registry::default()
                            };
                            // Publish as the generation after the newest one seen, so that the
                            // history stays in order.
                            self.publish(&base, &mut next)?;
                            next
                        } else {
                            reg
                        }
                    }
                    Err(why) => {
                        actions.push(action(
                            "registry",
                            crate::weights::REGISTRY_FILE,
                            false,
                            format!("{}; {why}", tantra_formats::chain(&e)),
                        ));
                        return Ok(RepairReport { dry_run, actions });
                    }
                }
            }
            Err(e) => return Err(e),
        };
        // 2. Registered files and digests.
        let report = self.verify(&VerifyScope::default(), progress)?;
        let mut reg = current;
        for p in &report.problems {
            match p.kind {
                ProblemKind::Missing | ProblemKind::Changed | ProblemKind::NotRegular
                    if p.version.is_some() =>
                {
                    let (Some(m), Some(v), Some(f)) = (&p.model, &p.version, &p.format) else {
                        continue;
                    };
                    let a = self.repair_file(&lock, &mut reg, m, v, f, dry_run, progress)?;
                    actions.push(a);
                }
                ProblemKind::Digests => {
                    let (Some(m), Some(v)) = (&p.model, &p.version) else {
                        continue;
                    };
                    actions.push(self.repair_digests(&reg, m, v, dry_run, progress)?);
                }
                ProblemKind::DamagedCheckpoint => {
                    if let Some(m) = &p.model {
                        actions.push(self.repair_checkpoint_record(m, &p.path, dry_run, progress)?);
                    }
                }
                _ => {}
            }
        }
        drop(lock);
        Ok(RepairReport { dry_run, actions })
    }

    /// The newest kept generation that parses, plus the committed history after it; or the
    /// history alone. `Ok(Err(why))` when neither is possible.
    #[allow(clippy::type_complexity)]
    fn rebuild_registry(
        &self,
    ) -> Result<std::result::Result<(Registry, String, Vec<String>), String>> {
        let (entries, bad) = history::read_raw(&self.root.join(history::HISTORY_FILE))?;
        let top = entries.iter().map(|e| e.generation).max().unwrap_or(0);
        let committed = history::committed(entries, u64::MAX);
        let dir = self.root.join(GENERATIONS_DIR);
        let mut gens: Vec<(u64, String)> = crate::cleanup::list_files(&dir)?
            .into_iter()
            .filter_map(|(n, _)| parse_generation_file(&n).map(|g| (g, n)))
            .collect();
        gens.sort();
        let mut base: Option<(Registry, String)> = None;
        for (g, name) in gens.iter().rev() {
            let path = dir.join(name);
            if let Ok(bytes) = std::fs::read(&path) {
                if let Ok(r) = Registry::parse(&bytes, &path) {
                    base = Some((r, format!("from kept generation {g}")));
                    break;
                }
            }
        }
        let (mut reg, mut how) = match base {
            Some(b) => b,
            None if committed.first().is_some_and(|e| e.generation == 1) => {
                (Registry::default(), "from the history alone".to_string())
            }
            None => {
                return Ok(Err("no kept generation parses and the history does not start at generation 1: rebuild by registering the files in weights/ again (`tantra register FILE --model M --version V`)".into()))
            }
        };
        let start = reg.generation;
        let mut replayed = 0;
        for e in committed.iter().filter(|e| e.generation > start) {
            history::replay(&mut reg, e);
            replayed += 1;
        }
        if replayed > 0 {
            how.push_str(&format!(" and {replayed} history line(s) after it"));
        }
        if bad > 0 {
            how.push_str(&format!(" ({bad} damaged history line(s) skipped)"));
        }
        reg.generation = reg.generation.max(top);
        // Only what the files prove stays in.
        let mut left_out = Vec::new();
        let mut drop_versions = Vec::new();
        for (m, model) in &reg.models {
            for (v, ver) in &model.versions {
                for (f, rec) in &ver.formats {
                    let path = self.abs(&rec.path);
                    let ok = std::fs::symlink_metadata(&path)
                        .is_ok_and(|md| md.file_type().is_file() && md.len() == rec.bytes)
                        && fsx::hash_file(&path, &tantra_formats::NoProgress)
                            .is_ok_and(|h| h.sha256 == rec.sha256);
                    if !ok {
                        left_out.push(format!(
                            "{m}:{v} ({f}): {} is missing or changed; left out of the rebuilt registry (restore it from `tantra backups`, then register it again)",
                            rec.path
                        ));
                        drop_versions.push((m.clone(), v.clone(), f.clone()));
                    }
                }
            }
        }
        for (m, v, f) in drop_versions {
            if let Some(ver) = reg.version_mut(&m, &v) {
                ver.formats.remove(&f);
            }
        }
        for model in reg.models.values_mut() {
            let empty: Vec<String> = model
                .versions
                .iter()
                .filter(|(_, v)| v.formats.is_empty())
                .map(|(k, _)| k.clone())
                .collect();
            for k in empty {
                model.versions.remove(&k);
            }
            if model
                .default
                .as_ref()
                .is_some_and(|d| !model.versions.contains_key(d))
            {
                model.default = None;
            }
        }
        reg.models.retain(|_, m| !m.versions.is_empty());
        Ok(Ok((reg, how, left_out)))
    }

    /// Brings back one registered file: from a backup of exactly its bytes, else converted from
    /// another intact format of the version and proven by the per-tensor digests.
    #[allow(clippy::too_many_arguments)]
    fn repair_file(
        &self,
        lock: &Option<crate::lock::RootLock>,
        reg: &mut Registry,
        model: &str,
        version: &str,
        format: &str,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<RepairAction> {
        let Some(ver) = reg.version(model, version).cloned() else {
            return Ok(action(
                "file",
                "",
                false,
                format!("{model}:{version} is no longer registered"),
            ));
        };
        let Some(rec) = ver.formats.get(format).cloned() else {
            return Ok(action(
                "file",
                "",
                false,
                format!("{model}:{version} has no {format}"),
            ));
        };
        let fmt: OutputFormat = match format.parse() {
            Ok(f) => f,
            Err(e) => return Ok(action("file", rec.path, false, e)),
        };
        // A backup holding exactly the registered bytes.
        let manifest = self.load_manifest().ok();
        let backup = manifest.as_ref().and_then(|m| {
            m.backups.iter().rev().find(|b| {
                b.sha256.as_deref() == Some(rec.sha256.as_str())
                    && std::fs::symlink_metadata(self.abs(&b.file))
                        .is_ok_and(|md| md.len() == rec.bytes)
            })
        });
        let table = self.digests_of(model, version, &ver.content).ok();
        let donor = ver.formats.iter().find(|(f, r)| {
            f.as_str() != format
                && fsx::hash_file(&self.abs(&r.path), &tantra_formats::NoProgress)
                    .is_ok_and(|h| h.sha256 == r.sha256)
        });
        let how = match (&backup, &donor) {
            (Some(b), _) => format!("copied back from backup {} (the registered bytes)", b.id),
            (None, Some((f, _))) => format!("rebuilt from the {f} file and checked tensor by tensor"),
            (None, None) => {
                return Ok(action(
                    "file",
                    rec.path,
                    false,
                    "no backup holds these bytes and no other format of the version is intact: restore it from a copy of your own, or remove the version",
                ))
            }
        };
        if dry_run || lock.is_none() {
            return Ok(action("file", rec.path, true, how));
        }
        let Some(lock) = lock else {
            return Ok(action("file", rec.path, true, how));
        };
        let target = self.abs(&rec.path);
        let wdir = self.weights_dir();
        fsx::create_dirs(&wdir)?;
        let (staged, hash, source) = if let Some(b) = backup {
            let s = fsx::copy_to_temp(&self.abs(&b.file), &wdir, &target, progress)?;
            if s.hash.sha256 != rec.sha256 {
                return Ok(action(
                    "file",
                    rec.path,
                    false,
                    format!("backup {} no longer holds the registered bytes", b.id),
                ));
            }
            let h = s.hash.clone();
            (s.tmp, h, rec.source.clone())
        } else if let Some((f, drec)) = donor {
            let src = open(&self.abs(&drec.path))?;
            let archive = archive_name(&target);
            let s = fsx::write_temp(&wdir, &target, |w| {
                write_to(w, fmt, src.as_ref(), &archive, progress)
                    .map(|_| ())
                    .map_err(|e| StoreError::from(e.with_path(&target)))
            })?;
            let back = open(s.path())?;
            let t = TensorTable::of(back.as_ref(), self.jobs, progress)?;
            let want = match &table {
                Some(t) => t.clone(),
                None => TensorTable::of(src.as_ref(), self.jobs, progress)?,
            };
            if t.content != ver.content || want.difference(&t).is_some() {
                return Ok(action(
                    "file",
                    rec.path,
                    false,
                    "the rebuilt file does not hold the version's tensors",
                ));
            }
            let h = s.hash.clone();
            (s.tmp, h, Source::Converted { from: f.clone() })
        } else {
            return Ok(action("file", rec.path, false, "nothing to rebuild from"));
        };
        // Place the proven file under a free name, publish, then move the damaged one aside.
        let current = self.registry()?;
        let mut next = current.clone();
        // Never the canonical name: the damaged file is still there until the proven one is
        // published.
        let alt = crate::plan::free_name(model, version, fmt, |r| {
            r == rec.path
                || current.owner_of(r).is_some()
                || std::fs::symlink_metadata(self.abs(r)).is_ok()
        });
        if let Some(r) = next
            .version_mut(model, version)
            .and_then(|v| v.formats.get_mut(format))
        {
            r.path = alt.clone();
            r.sha256 = hash.sha256.clone();
            r.bytes = hash.bytes;
            r.created = crate::time::now_rfc3339();
            r.source = source;
        }
        let mut plan = Plan::new(next);
        plan.place.push(Place {
            rel: alt.clone(),
            from: PlaceFrom::Staged(0),
            sha256: hash.sha256.clone(),
            bytes: hash.bytes,
        });
        // The damaged file goes to quarantine once the registry names the proven one, then
        // the proven one takes the canonical name back.
        plan.quarantine.push(rec.path.clone());
        plan.renames.push(Rename {
            model: model.into(),
            version: version.into(),
            format: format.into(),
            from: alt,
            to: rec.path.clone(),
        });
        self.apply(lock, &current, plan, vec![Some(staged)], &[])?;
        *reg = self.registry()?;
        Ok(action("file", rec.path, true, how))
    }

    /// Recomputes a version's per-tensor digests from an intact registered file.
    fn repair_digests(
        &self,
        reg: &Registry,
        model: &str,
        version: &str,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<RepairAction> {
        let path = format!(
            "digests/{}.json",
            reg.version(model, version)
                .map(|v| v.content.clone())
                .unwrap_or_default()
        );
        let Some(ver) = reg.version(model, version) else {
            return Ok(action("digests", path, false, "the version is gone"));
        };
        for rec in ver.formats.values() {
            let file = self.abs(&rec.path);
            if !fsx::hash_file(&file, &tantra_formats::NoProgress)
                .is_ok_and(|h| h.sha256 == rec.sha256)
            {
                continue;
            }
            let src = open(&file)?;
            let t = TensorTable::of(src.as_ref(), self.jobs, progress)?;
            if t.content != ver.content {
                continue;
            }
            if !dry_run {
                self.save_digests(&t)?;
            }
            return Ok(action(
                "digests",
                path,
                true,
                format!("recomputed from {}", rec.path),
            ));
        }
        Ok(action(
            "digests",
            path,
            false,
            "no registered file of the version is intact",
        ))
    }

    /// Rebuilds a damaged checkpoint record from its weight file.
    fn repair_checkpoint_record(
        &self,
        model: &str,
        record_rel: &str,
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<RepairAction> {
        let name = record_rel.rsplit('/').next().unwrap_or(record_rel);
        let Some(step) = name
            .strip_prefix("step_")
            .and_then(|s| s.strip_suffix(".json"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            return Ok(action(
                "checkpoint-record",
                record_rel,
                false,
                "not a checkpoint record name",
            ));
        };
        let prefix = format!("step_{step:010}.");
        let files: Vec<String> = crate::cleanup::list_files(&self.checkpoint_dir(model))?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| n.starts_with(&prefix) && !n.ends_with(".json") && !fsx::is_temp_name(n))
            .collect();
        let [file] = files.as_slice() else {
            return Ok(action(
                "checkpoint-record",
                record_rel,
                false,
                format!(
                    "{} weight files for step {step}: restore the record from `tantra backups`",
                    files.len()
                ),
            ));
        };
        let rel = format!("checkpoints/{model}/{file}");
        let path = self.abs(&rel);
        let format = match crate::weights::output_format_of(&path) {
            Ok(f) => f,
            Err(e) => {
                return Ok(action(
                    "checkpoint-record",
                    record_rel,
                    false,
                    format!("{rel}: {}", tantra_formats::chain(&e)),
                ))
            }
        };
        let hash = fsx::hash_file(&path, &tantra_formats::NoProgress)?;
        let table = match open(&path).map_err(StoreError::from).and_then(|s| {
            TensorTable::of(s.as_ref(), self.jobs, progress).map_err(StoreError::from)
        }) {
            Ok(t) => t,
            Err(e) => {
                return Ok(action(
                    "checkpoint-record",
                    record_rel,
                    false,
                    format!("{rel} does not read: {}", tantra_formats::chain(&e)),
                ))
            }
        };
        // Metrics from a backup of this checkpoint with these bytes, when there is one.
        let metrics: Option<BTreeMap<String, f64>> = self.load_manifest().ok().and_then(|m| {
            m.backups.iter().rev().find_map(|b| {
                (b.sha256.as_deref() == Some(hash.sha256.as_str()))
                    .then(|| b.record.clone())
                    .flatten()
                    .and_then(|r| serde_json::from_value::<CheckpointRecord>(r).ok())
                    .map(|r| r.metrics)
            })
        });
        let detail = match &metrics {
            Some(_) => format!("rebuilt from {rel}, metrics from its backup"),
            None => format!("rebuilt from {rel}; its metrics were lost with the record"),
        };
        if !dry_run {
            let rec = CheckpointRecord {
                schema: 1,
                model: model.into(),
                step,
                file: rel.clone(),
                format: format.name().into(),
                bytes: hash.bytes,
                sha256: hash.sha256.clone(),
                created: crate::time::now_rfc3339(),
                metrics: metrics.unwrap_or_default(),
                parameters: table.parameters,
                tensors: table.tensors.len() as u64,
                content: table.content.clone(),
            };
            let record_path = self.abs(record_rel);
            self.quarantine(record_rel, "damaged checkpoint record replaced by repair")?;
            fsx::write_json_atomic(&record_path, &rec)?;
        }
        Ok(action("checkpoint-record", record_rel, true, detail))
    }
}
