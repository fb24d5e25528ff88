//! Plans: every change of a version decided in memory, before any file moves.
//!
//! A plan is a pure function of the registry as it is and the request: the files to place (and
//! under which names), the files to back up, the registry to publish, and the files that the
//! published registry no longer names. [`crate::txn`] carries a plan out in an order that keeps
//! one invariant, **a file that the published registry names is never changed or removed**:
//! new files go to names the registry does not use (an alternate name when the canonical one is
//! taken by the version being replaced), backups are taken, the new registry is published with
//! one rename, and only then are the old files unlinked. So a failure or a crash at any step
//! leaves each version either exactly as it was or exactly as requested.
//!
//! Because planning touches no file, the decisions are tested by a table of cases
//! (`tests` below) rather than through the file system. The shape follows uv's installer
//! planner (`Planner::build` -> `Plan`).

use std::collections::BTreeMap;

use serde::Serialize;
use tantra_formats::OutputFormat;

use crate::backup::{BackupKind, BackupSpec};
use crate::error::{Result, StoreError};
use crate::names::weight_file_name;
use crate::registry::{FormatRecord, ModelRecord, Registry, Source, VersionRecord};

mod lookup;
use lookup::Lookup;

/// Where a placed file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PlaceFrom {
    /// The staged temporary file with this index (in the request's file list).
    Staged(usize),
    /// A hard link to this registered file, which holds the same bytes (stored once).
    Link(String),
    /// The file is already at its place (written there by its generator).
    InPlace,
}

/// A file to put at `rel` before the registry is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub rel: String,
    pub from: PlaceFrom,
    pub sha256: String,
    pub bytes: u64,
}

/// A registered file to move to its canonical name once the plan is published (it was placed
/// under an alternate name because the canonical one was still in use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rename {
    pub model: String,
    pub version: String,
    pub format: String,
    pub from: String,
    pub to: String,
}

/// Everything one change does, decided before it starts.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The registry to publish.
    pub registry: Registry,
    pub place: Vec<Place>,
    pub backups: Vec<BackupSpec>,
    /// Files the current registry names and the new one does not: unlinked after publishing.
    pub retire: Vec<String>,
    /// Files the current registry names and the new one does not, moved to `quarantine/`
    /// after publishing instead of unlinked (damaged files that `repair` replaces).
    pub quarantine: Vec<String>,
    pub renames: Vec<Rename>,
    /// `MODEL:VERSION` of the other versions that hold the weights being registered (found
    /// while planning a registration; empty otherwise).
    pub duplicates: Vec<String>,
}

impl Plan {
    pub(crate) fn new(registry: Registry) -> Plan {
        Plan {
            registry,
            place: Vec::new(),
            backups: Vec::new(),
            retire: Vec::new(),
            quarantine: Vec::new(),
            renames: Vec::new(),
            duplicates: Vec::new(),
        }
    }

    /// True when the plan changes nothing.
    pub fn is_noop(&self, current: &Registry) -> bool {
        self.place.is_empty()
            && self.retire.is_empty()
            && self.backups.is_empty()
            && self.quarantine.is_empty()
            && self.renames.is_empty()
            && self.registry == *current
    }
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
    /// `MODEL:VERSION` of a registered file that already held these bytes: the new file is a
    /// hard link to it, stored once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub same_as: Option<String>,
}

/// A file a registration brings.
#[derive(Debug, Clone)]
pub(crate) struct NewFile {
    pub format: OutputFormat,
    pub sha256: String,
    pub bytes: u64,
    pub source: Source,
    /// False when the file already sits at its canonical path.
    pub staged: bool,
}

/// A registration request, with everything measured.
#[derive(Debug, Clone)]
pub(crate) struct RegisterRequest {
    pub model: String,
    pub version: String,
    pub content: String,
    pub parameters: u64,
    pub tensors: u64,
    pub dtypes: Vec<String>,
    pub files: Vec<NewFile>,
    pub tags: Vec<String>,
    pub note: Option<String>,
    pub config: Option<String>,
    pub make_default: bool,
    pub force: bool,
    pub now: String,
    /// Why replaced files are backed up (`register --force`, `restore ID`).
    pub reason: String,
}

/// The canonical root-relative path of a weight file.
pub(crate) fn canonical_rel(model: &str, version: &str, format: OutputFormat) -> String {
    format!("weights/{}", weight_file_name(model, version, format))
}

/// A root-relative path for (model, version, format) that the registry does not name and
/// that is not in `taken`: the canonical one if free, else `<stem>.<n>.<ext>`.
fn free_rel(
    files: &Lookup<'_>,
    taken: &[String],
    model: &str,
    version: &str,
    format: OutputFormat,
) -> String {
    let used = |r: &str| files.owner_of(r).is_some() || taken.iter().any(|t| t == r);
    free_name(model, version, format, used)
}

/// The canonical root-relative path of (model, version, format) unless `used` says it is
/// taken, else the first free `<stem>.<n>.<ext>`.
pub(crate) fn free_name(
    model: &str,
    version: &str,
    format: OutputFormat,
    used: impl Fn(&str) -> bool,
) -> String {
    let canonical = canonical_rel(model, version, format);
    if !used(&canonical) {
        return canonical;
    }
    let ext = format.extension();
    let stem = canonical
        .strip_suffix(&format!(".{ext}"))
        .unwrap_or(&canonical)
        .to_string();
    (1u32..)
        .map(|n| format!("{stem}.{n}.{ext}"))
        .find(|r| !used(r))
        .unwrap_or(canonical)
}

/// A backup of one registered file of a version, carrying the version's record (with only
/// that format) so that `restore` can put the entry back.
pub(crate) fn weights_backup(
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

/// Plans a registration. Returns the plan and what happens to each file.
///
/// # Errors
/// [`StoreError::VersionExists`] for other weights under the name without `force`;
/// [`StoreError::NameCollision`] when a file name belongs to another version;
/// [`StoreError::Changed`]-like refusals for a file registered in place whose registered bytes
/// changed.
pub(crate) fn plan_register(
    cur: &Registry,
    req: &RegisterRequest,
) -> Result<(Plan, Vec<PlacedFile>)> {
    let (model, version) = (req.model.as_str(), req.version.as_str());
    let files = Lookup::new(cur, req);
    for f in &req.files {
        let rel = canonical_rel(model, version, f.format);
        if let Some((m, v, ff)) = files.owner_of(&rel) {
            if (m, v, ff) != (model, version, f.format.name()) {
                return Err(StoreError::NameCollision {
                    path: rel.into(),
                    owner: format!("{m}:{v} ({ff})"),
                });
            }
        }
    }
    let existing = cur.version(model, version).cloned();
    let replacing = match &existing {
        Some(v) if v.content != req.content => {
            if !req.force {
                return Err(StoreError::VersionExists {
                    model: model.into(),
                    version: version.into(),
                    existing: v.content.clone(),
                    new: req.content.clone(),
                });
            }
            true
        }
        _ => false,
    };
    let mut plan = Plan::new(cur.clone());
    plan.duplicates = files.same_content(model, version);
    let mut report = Vec::new();
    let mut records: BTreeMap<String, FormatRecord> = match (&existing, replacing) {
        (Some(v), false) => v.formats.clone(),
        _ => BTreeMap::new(),
    };
    let mut taken: Vec<String> = Vec::new();
    if let (true, Some(ex)) = (replacing, &existing) {
        for (f, rec) in &ex.formats {
            plan.backups
                .push(weights_backup(model, version, f, ex, rec, &req.reason));
            plan.retire.push(rec.path.clone());
        }
    }
    for (i, f) in req.files.iter().enumerate() {
        let fname = f.format.name().to_string();
        let canonical = canonical_rel(model, version, f.format);
        let old = existing
            .as_ref()
            .and_then(|v| v.formats.get(&fname))
            .cloned();
        let mut action = if old.is_some() {
            FileAction::Replaced
        } else {
            FileAction::Added
        };
        if !f.staged {
            // Written at its canonical place by a generator: recorded where it is.
            if let Some(o) = old.as_ref().filter(|o| o.path == canonical) {
                if o.sha256 != f.sha256 || o.bytes != f.bytes {
                    return Err(StoreError::Changed {
                        path: canonical.into(),
                        what: "a file registered to this version was rewritten in place; \
                               write new weights to a new version"
                            .into(),
                    });
                }
                report.push(placed(&fname, o, FileAction::Unchanged, None));
                continue;
            }
        }
        if let (Some(o), false) = (&old, replacing) {
            if !req.force {
                // Same bytes, or the same weights in other bytes without --force: keep.
                report.push(placed(&fname, o, FileAction::Unchanged, None));
                continue;
            }
            // --force: back up and replace the file (whatever its bytes are now: that is how
            // a damaged file is put right).
            if let Some(ex) = &existing {
                plan.backups
                    .push(weights_backup(model, version, &fname, ex, o, &req.reason));
            }
            plan.retire.push(o.path.clone());
            action = FileAction::Replaced;
        }
        let (rel, from) = if f.staged {
            let rel = free_rel(&files, &taken, model, version, f.format);
            (rel, PlaceFrom::Staged(i))
        } else {
            (canonical.clone(), PlaceFrom::InPlace)
        };
        let mut same_as = None;
        let from = match (from, files.same_bytes(&f.sha256, f.bytes)) {
            (PlaceFrom::Staged(_), Some((who, src))) if !plan.retire.contains(&src) => {
                same_as = Some(who);
                PlaceFrom::Link(src)
            }
            (from, _) => from,
        };
        if rel != canonical {
            plan.renames.push(Rename {
                model: model.into(),
                version: version.into(),
                format: fname.clone(),
                from: rel.clone(),
                to: canonical.clone(),
            });
        }
        taken.push(rel.clone());
        plan.place.push(Place {
            rel: rel.clone(),
            from,
            sha256: f.sha256.clone(),
            bytes: f.bytes,
        });
        let rec = FormatRecord {
            path: rel,
            bytes: f.bytes,
            sha256: f.sha256.clone(),
            created: req.now.clone(),
            source: f.source.clone(),
            extra: Default::default(),
        };
        report.push(placed(&fname, &rec, action, same_as));
        records.insert(fname, rec);
    }
    let entry = plan.registry.models.entry(model.to_string()).or_default();
    let mut rec = match (&existing, replacing) {
        (Some(ex), false) => ex.clone(),
        _ => VersionRecord {
            created: req.now.clone(),
            parameters: req.parameters,
            tensors: req.tensors,
            dtypes: req.dtypes.clone(),
            content: req.content.clone(),
            tags: existing
                .as_ref()
                .map(|e| e.tags.clone())
                .unwrap_or_default(),
            note: existing.as_ref().and_then(|e| e.note.clone()),
            config: existing.as_ref().and_then(|e| e.config.clone()),
            formats: BTreeMap::new(),
            extra: existing
                .as_ref()
                .map(|e| e.extra.clone())
                .unwrap_or_default(),
        },
    };
    rec.formats = records;
    for t in &req.tags {
        tag_in_model(entry, version, t);
        if !rec.tags.contains(t) {
            rec.tags.push(t.clone());
        }
    }
    rec.tags.sort();
    if req.note.is_some() {
        rec.note = req.note.clone();
    }
    if req.config.is_some() {
        rec.config = req.config.clone();
    }
    entry
        .versions
        .insert(version.to_string(), std::sync::Arc::new(rec));
    let default_missing = entry
        .default
        .as_ref()
        .is_none_or(|d| !entry.versions.contains_key(d));
    if req.make_default || default_missing {
        entry.default = Some(version.to_string());
    }
    report.sort_by(|a, b| a.format.cmp(&b.format));
    Ok((plan, report))
}

/// Removes `tag` from every version of `model` but `keep` (a tag names one version).
fn tag_in_model(model: &mut ModelRecord, keep: &str, tag: &str) {
    // Only the records that change are copied (the others, and the tree nodes that hold
    // only them, stay shared with the current registry).
    let holders: Vec<String> = model
        .versions
        .iter()
        .filter(|(v, rec)| *v != keep && rec.tags.iter().any(|t| t == tag))
        .map(|(v, _)| v.clone())
        .collect();
    for v in holders {
        if let Some(rec) = model.versions.get_mut(&v) {
            std::sync::Arc::make_mut(rec).tags.retain(|t| t != tag);
        }
    }
}

/// One removal: a version's formats (all of them when `formats` is `None`).
#[derive(Debug, Clone)]
pub(crate) struct Removal {
    pub model: String,
    pub version: String,
    pub formats: Option<Vec<String>>,
}

/// Plans the removal of files and versions: their records leave the registry, their files are
/// backed up (unless `no_backup`) and retired. A model's default version is only removed with
/// `force` (the model is then left without a default).
///
/// # Errors
/// An unknown model, version or format; the default version without `force`.
pub(crate) fn plan_remove(
    cur: &Registry,
    removals: &[Removal],
    force: bool,
    no_backup: bool,
    reason: &str,
) -> Result<Plan> {
    let mut plan = Plan::new(cur.clone());
    for r in removals {
        let (model, version) = (r.model.as_str(), r.version.as_str());
        let m = find_model_mut(&mut plan.registry, model)?;
        let ver = m
            .versions
            .get(version)
            .cloned()
            .ok_or_else(|| StoreError::UnknownVersion {
                model: model.into(),
                version: version.into(),
            })?;
        let formats: Vec<String> = match &r.formats {
            Some(fs) => {
                for f in fs {
                    if !ver.formats.contains_key(f) {
                        return Err(StoreError::FormatMissing {
                            model: model.into(),
                            version: version.into(),
                            format: f.clone(),
                            available: ver.formats.keys().cloned().collect::<Vec<_>>().join(", "),
                        });
                    }
                }
                fs.clone()
            }
            None => ver.formats.keys().cloned().collect(),
        };
        let whole = formats.len() == ver.formats.len();
        if whole && m.default.as_deref() == Some(version) && !force {
            return Err(StoreError::IsDefault {
                model: model.into(),
                version: version.into(),
            });
        }
        for f in &formats {
            if let Some(rec) = ver.formats.get(f) {
                if !no_backup {
                    plan.backups
                        .push(weights_backup(model, version, f, &ver, rec, reason));
                }
                plan.retire.push(rec.path.clone());
            }
        }
        if whole {
            m.versions.remove(version);
            if m.default.as_deref() == Some(version) {
                m.default = None;
            }
        } else if let Some(v) = m.versions.get_mut(version).map(std::sync::Arc::make_mut) {
            for f in &formats {
                v.formats.remove(f);
            }
        }
        if m.versions.is_empty() && m.extra.is_empty() {
            plan.registry.models.remove(model);
        }
    }
    Ok(plan)
}

/// Plans making `version` the default of `model`.
///
/// # Errors
/// An unknown model or version.
pub(crate) fn plan_set_default(cur: &Registry, model: &str, version: &str) -> Result<Plan> {
    let mut plan = Plan::new(cur.clone());
    let m = find_model_mut(&mut plan.registry, model)?;
    if !m.versions.contains_key(version) {
        return Err(StoreError::UnknownVersion {
            model: model.into(),
            version: version.into(),
        });
    }
    m.default = Some(version.into());
    Ok(plan)
}

/// Plans adding (or removing) a tag. A tag names one version of a model: adding it to
/// `version` takes it off any other version.
///
/// # Errors
/// An unknown model or version.
pub(crate) fn plan_tag(
    cur: &Registry,
    model: &str,
    version: &str,
    tag: &str,
    remove: bool,
) -> Result<Plan> {
    let mut plan = Plan::new(cur.clone());
    let m = find_model_mut(&mut plan.registry, model)?;
    if !m.versions.contains_key(version) {
        return Err(StoreError::UnknownVersion {
            model: model.into(),
            version: version.into(),
        });
    }
    if !remove {
        tag_in_model(m, version, tag);
    }
    if let Some(v) = m.versions.get_mut(version).map(std::sync::Arc::make_mut) {
        v.tags.retain(|t| t != tag);
        if !remove {
            v.tags.push(tag.into());
            v.tags.sort();
        }
    }
    Ok(plan)
}

fn find_model_mut<'a>(reg: &'a mut Registry, model: &str) -> Result<&'a mut ModelRecord> {
    let known: Vec<String> = reg.models.keys().cloned().collect();
    reg.models
        .get_mut(model)
        .ok_or_else(|| StoreError::unknown_model(model, &known))
}

fn placed(
    format: &str,
    rec: &FormatRecord,
    action: FileAction,
    same_as: Option<String>,
) -> PlacedFile {
    PlacedFile {
        format: format.into(),
        path: rec.path.clone(),
        bytes: rec.bytes,
        sha256: rec.sha256.clone(),
        action,
        same_as,
    }
}

#[cfg(test)]
mod tests;
