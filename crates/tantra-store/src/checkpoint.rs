//! Training checkpoints: `checkpoints/<model>/step_<step>.<ext>` plus a record
//! `step_<step>.json` with the step, metrics, size and sha256.
//!
//! The record is the completeness marker. A save writes the weights to a temporary file,
//! validates it (every tensor is read back), renames it into place and only then writes the
//! record (atomically); a listing shows only checkpoints whose record parses and whose file has
//! the recorded size. A crash at any instant therefore leaves either a complete checkpoint or
//! one that does not list (and that `cleanup --orphans` removes). Replacing a checkpoint removes
//! the old record before the old file is replaced, so no record ever names bytes it did not
//! describe.
//!
//! Retention keeps the last N by step and the best K by one metric (lower or higher is
//! better), the rule Lightning's `ModelCheckpoint` popularised; pruned checkpoints are backed
//! up like everything else the store removes, unless asked not to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tantra_formats::convert::archive_name;
use tantra_formats::{open, write_to, OutputFormat, Progress, TensorSource};

use crate::backup::{BackupKind, BackupSpec};
use crate::cleanup::{list_dirs, list_files, CleanupItem, CleanupKind};
use crate::content::TensorTable;
use crate::error::{Result, StoreError};
use crate::fsx::{self, FileHash};
use crate::names::{checkpoint_file_name, checkpoint_record_name, validate_name};
use crate::registry::Source;
use crate::time::now_rfc3339;
use crate::weights::{check_sha256, output_format_of, relabel, RegisterOptions, RegisterReport};
use crate::WeightManager;

const SCHEMA: u64 = 1;

/// A checkpoint's record (`step_<step>.json`), as `checkpoint list --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    pub schema: u64,
    pub model: String,
    pub step: u64,
    /// The weights file, relative to the root.
    pub file: String,
    pub format: String,
    pub bytes: u64,
    pub sha256: String,
    pub created: String,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    pub parameters: u64,
    pub tensors: u64,
    /// The tensor-table digest (see [`TensorTable::content`]).
    pub content: String,
}

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricMode {
    /// Lower is better (a loss).
    #[default]
    Min,
    /// Higher is better (an accuracy).
    Max,
}

impl std::str::FromStr for MetricMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "min" => Ok(MetricMode::Min),
            "max" => Ok(MetricMode::Max),
            _ => Err(format!("unknown mode {s:?} (min or max)")),
        }
    }
}

/// A retention rule for checkpoints: keep the last `keep_last` by step and the best
/// `keep_best` by `metric`; everything else goes.
#[derive(Debug, Clone, Default)]
pub struct PruneRule {
    pub keep_last: usize,
    pub keep_best: usize,
    pub metric: Option<String>,
    pub mode: MetricMode,
}

/// Parses `name=value` (`loss=0.31`).
///
/// # Errors
/// No `=`, an invalid name, or a value that is not a finite number.
pub fn parse_metric(s: &str) -> Result<(String, f64)> {
    let bad = |detail: &str| StoreError::InvalidArgument {
        what: "metric",
        value: s.into(),
        detail: detail.into(),
    };
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| bad("write it as name=value, e.g. loss=0.31"))?;
    validate_name("metric", k)?;
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|_| bad("the value is not a number"))?;
    if !v.is_finite() {
        return Err(bad("the value must be finite"));
    }
    Ok((k.to_string(), v))
}

impl WeightManager {
    pub(crate) fn checkpoint_dir(&self, model: &str) -> PathBuf {
        self.checkpoints_dir().join(model)
    }

    pub(crate) fn checkpoint_record_path(&self, model: &str, step: u64) -> PathBuf {
        self.checkpoint_dir(model)
            .join(checkpoint_record_name(step))
    }

    pub(crate) fn read_checkpoint_record(&self, path: &Path) -> Result<Option<CheckpointRecord>> {
        fsx::read_json(path)
    }

    pub(crate) fn checkpoint_backup_spec(
        &self,
        rec: &CheckpointRecord,
        reason: &str,
    ) -> BackupSpec {
        BackupSpec {
            kind: BackupKind::Checkpoint,
            src_rel: rec.file.clone(),
            model: Some(rec.model.clone()),
            version: None,
            format: Some(rec.format.clone()),
            step: Some(rec.step),
            sha256: Some(rec.sha256.clone()),
            bytes: rec.bytes,
            reason: reason.into(),
            record: serde_json::to_value(rec).ok(),
        }
    }

    /// Saves a weight file as the checkpoint of `model` at `step`, with metrics. The file is
    /// copied in its own format (validated: every tensor is read back).
    ///
    /// # Errors
    /// An invalid name or metric; an unreadable file; a checkpoint at that step without
    /// `force`; the lock.
    pub fn save_checkpoint_file(
        &self,
        model: &str,
        step: u64,
        metrics: &BTreeMap<String, f64>,
        file: &Path,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<CheckpointRecord> {
        check_metrics(model, metrics)?;
        let format = output_format_of(file)?;
        let (dir, target) = self.checkpoint_target(model, step, format, force)?;
        let staged = fsx::copy_to_temp(file, &dir, &target, progress)?;
        let src = open(staged.path()).map_err(|e| relabel(e, staged.path(), file))?;
        let table = TensorTable::of(src.as_ref(), self.jobs, progress)
            .map_err(|e| relabel(e, staged.path(), file))?;
        drop(src);
        let hash = staged.hash.clone();
        self.commit_checkpoint(
            model, step, metrics, staged.tmp, &hash, format, &table, force,
        )
    }

    /// Saves tensors held in memory (a training loop's state) as the checkpoint of `model` at
    /// `step`, in `format`. The written file is read back and compared with the tensors.
    ///
    /// # Errors
    /// As [`WeightManager::save_checkpoint_file`]; a write that does not read back the same.
    #[allow(clippy::too_many_arguments)]
    pub fn save_checkpoint(
        &self,
        model: &str,
        step: u64,
        metrics: &BTreeMap<String, f64>,
        src: &(dyn TensorSource + Sync),
        format: OutputFormat,
        force: bool,
        progress: &dyn Progress,
    ) -> Result<CheckpointRecord> {
        check_metrics(model, metrics)?;
        let (dir, target) = self.checkpoint_target(model, step, format, force)?;
        let want = TensorTable::of(src, self.jobs, &tantra_formats::NoProgress)?;
        let archive = archive_name(&target);
        let staged = fsx::write_temp(&dir, &target, |w| {
            write_to(w, format, src, &archive, progress)
                .map(|_| ())
                .map_err(|e| StoreError::from(e.with_path(&target)))
        })?;
        let back = open(staged.path())?;
        let table = TensorTable::of(back.as_ref(), self.jobs, progress)?;
        drop(back);
        if let Some(d) = want.difference(&table) {
            return Err(StoreError::ContentMismatch {
                path: target,
                other: "the tensors given".into(),
                detail: d,
            });
        }
        let hash = staged.hash.clone();
        self.commit_checkpoint(
            model, step, metrics, staged.tmp, &hash, format, &table, force,
        )
    }

    /// Refuses an existing checkpoint at `step` without `force`, creates the model's folder
    /// and returns it with the path the checkpoint file will have.
    fn checkpoint_target(
        &self,
        model: &str,
        step: u64,
        format: OutputFormat,
        force: bool,
    ) -> Result<(PathBuf, PathBuf)> {
        let record = self.checkpoint_record_path(model, step);
        if !force && record.exists() {
            return Err(StoreError::CheckpointExists {
                path: record,
                model: model.into(),
                step,
            });
        }
        let dir = self.checkpoint_dir(model);
        fsx::create_dirs(&dir)?;
        let target = dir.join(checkpoint_file_name(step, format));
        Ok((dir, target))
    }

    /// Under the lock: backs up what the step holds now (the recorded file, or, when the
    /// record is damaged, every file of the step and the record itself), places the new file
    /// under a name no record uses, then writes the record (the commit), then unlinks the old
    /// file. A failure at any step leaves the old checkpoint whole or the new one whole.
    #[allow(clippy::too_many_arguments)]
    fn commit_checkpoint(
        &self,
        model: &str,
        step: u64,
        metrics: &BTreeMap<String, f64>,
        tmp: tempfile::NamedTempFile,
        hash: &FileHash,
        format: OutputFormat,
        table: &TensorTable,
        force: bool,
    ) -> Result<CheckpointRecord> {
        let lock = self.lock()?;
        let record_path = self.checkpoint_record_path(model, step);
        let exists = std::fs::symlink_metadata(&record_path).is_ok();
        if exists && !force {
            return Err(StoreError::CheckpointExists {
                path: record_path,
                model: model.into(),
                step,
            });
        }
        let old = self.read_checkpoint_record(&record_path);
        let mut specs = Vec::new();
        let mut in_use: Vec<String> = Vec::new();
        match &old {
            Ok(Some(old)) => {
                specs.push(self.checkpoint_backup_spec(old, "replaced by checkpoint save --force"));
                in_use.push(old.file.clone());
            }
            Ok(None) => {}
            Err(_) => {
                // A damaged record: keep everything of this step before anything changes.
                let prefix = format!("step_{step:010}");
                for (name, bytes) in list_files(&self.checkpoint_dir(model))? {
                    if name.starts_with(&prefix) && !fsx::is_temp_name(&name) {
                        let rel = format!("checkpoints/{model}/{name}");
                        specs.push(BackupSpec {
                            model: Some(model.into()),
                            step: Some(step),
                            ..BackupSpec::file(
                                BackupKind::Checkpoint,
                                &rel,
                                bytes,
                                "replaced by checkpoint save --force (its record was damaged)"
                                    .into(),
                            )
                        });
                        in_use.push(rel);
                    }
                }
            }
        }
        self.backup_locked(&lock, specs)?;
        let rel = free_checkpoint_rel(model, step, format, |r| {
            in_use.iter().any(|u| u == r) || std::fs::symlink_metadata(self.abs(r)).is_ok()
        });
        fsx::persist(tmp, &self.abs(&rel), false)?;
        let rec = CheckpointRecord {
            schema: SCHEMA,
            model: model.into(),
            step,
            file: rel.clone(),
            format: format.name().into(),
            bytes: hash.bytes,
            sha256: hash.sha256.clone(),
            created: now_rfc3339(),
            metrics: metrics.clone(),
            parameters: table.parameters,
            tensors: table.tensors.len() as u64,
            content: table.content.clone(),
        };
        if let Err(e) = fsx::write_json_atomic(&record_path, &rec) {
            // A failure after the record's rename (syncing the folder) leaves the new
            // checkpoint recorded: it is done. Otherwise the old record still holds.
            if !matches!(self.read_checkpoint_record(&record_path), Ok(Some(r)) if r == rec) {
                let _ = std::fs::remove_file(self.abs(&rel));
                return Err(e);
            }
        }
        // The old file is backed up; a failure to unlink it leaves a stray that cleanup moves
        // to quarantine.
        if let Ok(Some(old)) = &old {
            if old.file != rel {
                let _ = fsx::remove_synced(&self.abs(&old.file));
            }
        }
        if old.is_err() {
            for u in in_use
                .iter()
                .filter(|u| **u != rel && !u.ends_with(".json"))
            {
                let _ = fsx::remove_synced(&self.abs(u));
            }
        }
        Ok(rec)
    }

    /// The complete checkpoints of `model` (record present and file of the recorded size),
    /// by step.
    ///
    /// # Errors
    /// An invalid model name; an unreadable folder.
    pub fn checkpoints(&self, model: &str) -> Result<Vec<CheckpointRecord>> {
        validate_name("model", model)?;
        Ok(self
            .checkpoint_scan(model)?
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .collect())
    }

    /// Every record file of `model`'s checkpoints with what it holds: `Ok` for a complete
    /// checkpoint, `Err(reason)` for an incomplete or damaged one.
    pub(crate) fn checkpoint_scan(
        &self,
        model: &str,
    ) -> Result<Vec<(PathBuf, std::result::Result<CheckpointRecord, String>)>> {
        let dir = self.checkpoint_dir(model);
        let mut out = Vec::new();
        for (name, _) in list_files(&dir)? {
            if fsx::is_temp_name(&name) || !name.ends_with(".json") {
                continue;
            }
            let path = dir.join(&name);
            let status = match self.read_checkpoint_record(&path) {
                Ok(Some(r)) => self.checkpoint_complete(model, &name, r),
                Ok(None) => continue,
                Err(e) => Err(tantra_formats::chain(&e).to_string()),
            };
            out.push((path, status));
        }
        out.sort_by(|a, b| {
            let sa = a.1.as_ref().map(|r| r.step).unwrap_or(u64::MAX);
            let sb = b.1.as_ref().map(|r| r.step).unwrap_or(u64::MAX);
            sa.cmp(&sb).then(a.0.cmp(&b.0))
        });
        Ok(out)
    }

    fn checkpoint_complete(
        &self,
        model: &str,
        record_name: &str,
        r: CheckpointRecord,
    ) -> std::result::Result<CheckpointRecord, String> {
        if r.model != model || checkpoint_record_name(r.step) != record_name {
            return Err("the record does not match its file name".into());
        }
        let fmt: OutputFormat = r.format.parse()?;
        if !is_checkpoint_rel(&r.file, model, r.step, fmt) {
            return Err(format!("the record names an unexpected file {:?}", r.file));
        }
        match std::fs::symlink_metadata(self.abs(&r.file)) {
            Ok(m) if !m.file_type().is_file() => {
                Err(format!("{} is not a regular file (a symlink?)", r.file))
            }
            Ok(m) if m.len() == r.bytes => Ok(r),
            Ok(m) => Err(format!("{} bytes, recorded {}", m.len(), r.bytes)),
            Err(_) => Err(format!("the weights file {} is missing", r.file)),
        }
    }

    /// Models that have a checkpoints folder (a folder with a valid model name, not a link).
    ///
    /// # Errors
    /// An unreadable `checkpoints/` folder.
    pub fn checkpoint_models(&self) -> Result<Vec<String>> {
        list_dirs(&self.checkpoints_dir())
    }

    /// The checkpoints a rule would remove, oldest first.
    ///
    /// # Errors
    /// A rule that keeps nothing by neither count, or `keep_best` without a metric; a metric
    /// that no checkpoint of the model carries (a typo would otherwise rank nothing and keep
    /// nothing by it): the error lists the metrics present.
    pub fn prune_plan(&self, model: &str, rule: &PruneRule) -> Result<Vec<CheckpointRecord>> {
        if rule.keep_last == 0 && rule.keep_best == 0 {
            return Err(StoreError::NothingToDo(
                "a prune rule needs --keep-last N and/or --keep-best K --metric NAME".into(),
            ));
        }
        if rule.keep_best > 0 && rule.metric.is_none() {
            return Err(StoreError::InvalidArgument {
                what: "prune rule",
                value: format!("keep best {}", rule.keep_best),
                detail: "name the metric to rank by (--metric loss)".into(),
            });
        }
        let all = self.checkpoints(model)?;
        let mut keep: BTreeSet<u64> = all
            .iter()
            .rev()
            .take(rule.keep_last)
            .map(|c| c.step)
            .collect();
        if let Some(metric) = &rule.metric {
            if !all.is_empty() && !all.iter().any(|c| c.metrics.contains_key(metric)) {
                let present: BTreeSet<&str> = all
                    .iter()
                    .flat_map(|c| c.metrics.keys().map(String::as_str))
                    .collect();
                return Err(StoreError::InvalidArgument {
                    what: "metric",
                    value: metric.clone(),
                    detail: format!(
                        "no checkpoint of {model} carries it (metrics present: {})",
                        if present.is_empty() {
                            "none".to_string()
                        } else {
                            present.into_iter().collect::<Vec<_>>().join(", ")
                        }
                    ),
                });
            }
            let mut ranked: Vec<(f64, u64)> = all
                .iter()
                .filter_map(|c| c.metrics.get(metric).map(|v| (*v, c.step)))
                .collect();
            ranked.sort_by(|a, b| {
                let o = a.0.total_cmp(&b.0);
                let o = if rule.mode == MetricMode::Max {
                    o.reverse()
                } else {
                    o
                };
                o.then(b.1.cmp(&a.1))
            });
            keep.extend(ranked.iter().take(rule.keep_best).map(|r| r.1));
        }
        Ok(all
            .into_iter()
            .filter(|c| !keep.contains(&c.step))
            .collect())
    }

    /// Removes the checkpoints `rule` does not keep (backed up first unless `backup` is
    /// false). With `dry_run` nothing changes.
    ///
    /// # Errors
    /// As [`WeightManager::prune_plan`]; the lock.
    pub fn prune_checkpoints(
        &self,
        model: &str,
        rule: &PruneRule,
        dry_run: bool,
        backup: bool,
    ) -> Result<Vec<CleanupItem>> {
        validate_name("model", model)?;
        if dry_run {
            let plan = self.prune_plan(model, rule)?;
            return Ok(plan.iter().map(|c| checkpoint_item(c, None)).collect());
        }
        let lock = self.lock()?;
        let plan = self.prune_plan(model, rule)?;
        let specs: Vec<BackupSpec> = if backup {
            plan.iter()
                .map(|c| self.checkpoint_backup_spec(c, "pruned by checkpoint prune"))
                .collect()
        } else {
            Vec::new()
        };
        let taken = self.backup_locked(&lock, specs)?;
        let mut items = Vec::new();
        for c in &plan {
            fsx::remove_synced(&self.checkpoint_record_path(model, c.step))?;
            fsx::remove_synced(&self.abs(&c.file))?;
            let id = taken
                .iter()
                .find(|b| b.step == Some(c.step))
                .map(|b| b.id.clone());
            items.push(checkpoint_item(c, id));
        }
        Ok(items)
    }

    /// Registers the checkpoint of `model` at `step` as `version` (source: checkpoint).
    ///
    /// # Errors
    /// An unknown checkpoint; a checkpoint file that no longer matches its sha256
    /// ([`StoreError::Changed`]); as [`WeightManager::register`].
    pub fn promote_checkpoint(
        &self,
        model: &str,
        step: u64,
        version: &str,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        let rec = self
            .checkpoints(model)?
            .into_iter()
            .find(|c| c.step == step)
            .ok_or_else(|| StoreError::UnknownCheckpoint {
                model: model.into(),
                step,
            })?;
        let path = self.abs(&rec.file);
        check_sha256(&path, rec.bytes, &rec.sha256, "recorded", progress)?;
        let format: OutputFormat = rec.format.parse().map_err(|e: String| {
            StoreError::corrupt(self.checkpoint_record_path(model, step), e)
        })?;
        self.register_files(
            &[(format, path)],
            model,
            version,
            Some(Source::Checkpoint {
                step,
                from: rec.file.clone(),
            }),
            opts,
            progress,
        )
    }
}

fn rel_of(model: &str, step: u64, format: OutputFormat) -> String {
    format!("checkpoints/{model}/{}", checkpoint_file_name(step, format))
}

/// The canonical checkpoint path if `used` says it is free, else `step_<step>.<n>.<ext>`.
fn free_checkpoint_rel(
    model: &str,
    step: u64,
    format: OutputFormat,
    used: impl Fn(&str) -> bool,
) -> String {
    let canonical = rel_of(model, step, format);
    if !used(&canonical) {
        return canonical;
    }
    (1u32..)
        .map(|n| {
            format!(
                "checkpoints/{model}/step_{step:010}.{n}.{}",
                format.extension()
            )
        })
        .find(|r| !used(r))
        .unwrap_or(canonical)
}

/// True for `checkpoints/<model>/step_<step>[.<n>].<ext>`.
fn is_checkpoint_rel(rel: &str, model: &str, step: u64, format: OutputFormat) -> bool {
    let Some(rest) = rel
        .strip_prefix(&format!("checkpoints/{model}/step_{step:010}"))
        .and_then(|r| r.strip_suffix(&format!(".{}", format.extension())))
    else {
        return false;
    };
    rest.is_empty()
        || rest
            .strip_prefix('.')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn check_metrics(model: &str, metrics: &BTreeMap<String, f64>) -> Result<()> {
    validate_name("model", model)?;
    for (k, v) in metrics {
        validate_name("metric", k)?;
        if !v.is_finite() {
            return Err(StoreError::InvalidArgument {
                what: "metric",
                value: format!("{k}={v}"),
                detail: "the value must be finite".into(),
            });
        }
    }
    Ok(())
}

fn checkpoint_item(c: &CheckpointRecord, backup: Option<String>) -> CleanupItem {
    CleanupItem {
        kind: CleanupKind::Checkpoint,
        action: crate::cleanup::CleanupAction::Delete,
        path: c.file.clone(),
        bytes: c.bytes,
        model: Some(c.model.clone()),
        version: None,
        format: Some(c.format.clone()),
        step: Some(c.step),
        reason: "not kept by the retention rule".into(),
        backup,
    }
}
