//! The history: an append-only log of every registry change, `history.jsonl` under the root.
//!
//! Each published registry generation gets one line: who, when, which command, what changed in
//! words (`registered`, `replaced`, `removed`, `default moved`, `tag added`, ...) and, for replay,
//! the state after the change of every version and default it touched. The line is appended and
//! synced *before* the registry is renamed into place, under the root's lock, so the two are one
//! commit: a line whose generation is above the registry's belongs to a change that never
//! published (a crash between the two) and is ignored, and when a generation appears twice the
//! later line wins. That is also what makes `repair` possible: a damaged registry is rebuilt from
//! the newest kept generation (`generations/`) plus the history lines after it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use std::sync::Arc;

use imbl::ordmap::DiffItem;

use crate::registry::{Registry, VersionRecord, Versions};

/// The history's file name under the root.
pub const HISTORY_FILE: &str = "history.jsonl";

/// What kind of change one history item records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// A new version.
    Registered,
    /// A version now holds other weights (`register --force`, a restore of older weights).
    Replaced,
    /// A version is gone.
    Removed,
    /// A version gained a format.
    FormatAdded,
    /// A version lost a format.
    FormatRemoved,
    /// A file of a version was replaced by other bytes of the same weights, or moved.
    FileChanged,
    DefaultMoved,
    TagAdded,
    TagRemoved,
    NoteChanged,
    ConfigChanged,
}

impl ChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Registered => "registered",
            ChangeKind::Replaced => "replaced",
            ChangeKind::Removed => "removed",
            ChangeKind::FormatAdded => "format-added",
            ChangeKind::FormatRemoved => "format-removed",
            ChangeKind::FileChanged => "file-changed",
            ChangeKind::DefaultMoved => "default-moved",
            ChangeKind::TagAdded => "tag-added",
            ChangeKind::TagRemoved => "tag-removed",
            ChangeKind::NoteChanged => "note-changed",
            ChangeKind::ConfigChanged => "config-changed",
        }
    }
}

/// One thing that changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A few words: the format, the tag, `old -> new` of a default, the source of the weights.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// The state of one version after a change (`None`: removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionAfter {
    pub model: String,
    pub version: String,
    pub record: Option<VersionRecord>,
}

/// A model's default after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefaultAfter {
    pub model: String,
    pub default: Option<String>,
}

/// One line of the history: one published generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub generation: u64,
    /// RFC 3339 UTC.
    pub time: String,
    pub user: String,
    pub command: String,
    pub changes: Vec<Change>,
    #[serde(default)]
    pub after: Vec<VersionAfter>,
    #[serde(default)]
    pub defaults: Vec<DefaultAfter>,
}

impl HistoryEntry {
    /// True when the entry touches `model` (and `version`, when given).
    pub fn touches(&self, model: &str, version: Option<&str>) -> bool {
        self.changes
            .iter()
            .any(|c| c.model == model && version.is_none_or(|v| c.version.as_deref() == Some(v)))
    }
}

/// The user to record: `$USER`, else `$LOGNAME`, else the numeric uid.
pub fn current_user() -> String {
    for var in ["USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var) {
            if !u.is_empty() {
                return u;
            }
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata("/proc/self") {
            return format!("uid {}", m.uid());
        }
    }
    "unknown".into()
}

/// The versions that differ between two generations of a model, in name order, with each
/// generation's record. Subtrees the two share are skipped, not walked
/// ([`imbl::OrdMap::diff`]).
fn changed<'a>(
    a: &'a Versions,
    b: &'a Versions,
) -> impl Iterator<
    Item = (
        &'a String,
        Option<&'a Arc<VersionRecord>>,
        Option<&'a Arc<VersionRecord>>,
    ),
> {
    a.diff(b).map(|d| match d {
        DiffItem::Add(k, v) => (k, None, Some(v)),
        DiffItem::Update { old, new } => (old.0, Some(old.1), Some(new.1)),
        DiffItem::Remove(k, v) => (k, Some(v), None),
    })
}

/// What changed from `old` to `new`, in words and as after-states for replay.
pub fn diff(old: &Registry, new: &Registry) -> (Vec<Change>, Vec<VersionAfter>, Vec<DefaultAfter>) {
    let mut changes = Vec::new();
    let mut after = Vec::new();
    let mut defaults = Vec::new();
    let empty = Versions::new();
    let models: std::collections::BTreeSet<&String> =
        old.models.keys().chain(new.models.keys()).collect();
    for m in models {
        let om = old.models.get(m);
        let nm = new.models.get(m);
        let ov = om.map(|x| &x.versions).unwrap_or(&empty);
        let nv = nm.map(|x| &x.versions).unwrap_or(&empty);
        for (v, a, b) in changed(ov, nv) {
            // Shared records (`Arc`) compare by pointer first: a registry of 10,000 versions
            // is diffed in a walk over two sorted maps, not 10,000 deep comparisons.
            if a == b {
                continue;
            }
            version_changes(m, v, a.map(|r| &**r), b.map(|r| &**r), &mut changes);
            after.push(VersionAfter {
                model: m.clone(),
                version: v.clone(),
                record: b.map(|r| (**r).clone()),
            });
        }
        let (od, nd) = (
            om.and_then(|x| x.default.clone()),
            nm.and_then(|x| x.default.clone()),
        );
        if od != nd {
            changes.push(Change {
                kind: ChangeKind::DefaultMoved,
                model: m.clone(),
                version: nd.clone(),
                detail: format!(
                    "{} -> {}",
                    od.as_deref().unwrap_or("none"),
                    nd.as_deref().unwrap_or("none")
                ),
            });
            defaults.push(DefaultAfter {
                model: m.clone(),
                default: nd,
            });
        }
    }
    (changes, after, defaults)
}

fn version_changes(
    m: &str,
    v: &str,
    a: Option<&VersionRecord>,
    b: Option<&VersionRecord>,
    out: &mut Vec<Change>,
) {
    let mut push = |kind, detail: String| {
        out.push(Change {
            kind,
            model: m.into(),
            version: Some(v.into()),
            detail,
        })
    };
    let (a, b) = match (a, b) {
        (None, Some(b)) => {
            let sources: Vec<String> = b
                .formats
                .iter()
                .map(|(f, r)| format!("{f}: {}", r.source.describe()))
                .collect();
            push(ChangeKind::Registered, sources.join("; "));
            return;
        }
        (Some(_), None) => {
            push(ChangeKind::Removed, String::new());
            return;
        }
        (Some(a), Some(b)) => (a, b),
        (None, None) => return,
    };
    if a.content != b.content {
        push(
            ChangeKind::Replaced,
            format!("content {:.12} -> {:.12}", a.content, b.content),
        );
    } else {
        for (f, r) in &b.formats {
            match a.formats.get(f) {
                None => push(
                    ChangeKind::FormatAdded,
                    format!("{f}: {}", r.source.describe()),
                ),
                Some(o) if o.sha256 != r.sha256 => push(ChangeKind::FileChanged, f.clone()),
                Some(o) if o.path != r.path => push(
                    ChangeKind::FileChanged,
                    format!("{f}: {} -> {}", o.path, r.path),
                ),
                Some(_) => {}
            }
        }
        for f in a.formats.keys() {
            if !b.formats.contains_key(f) {
                push(ChangeKind::FormatRemoved, f.clone());
            }
        }
    }
    for t in &b.tags {
        if !a.tags.contains(t) {
            push(ChangeKind::TagAdded, t.clone());
        }
    }
    for t in &a.tags {
        if !b.tags.contains(t) {
            push(ChangeKind::TagRemoved, t.clone());
        }
    }
    if a.note != b.note {
        push(ChangeKind::NoteChanged, b.note.clone().unwrap_or_default());
    }
    if a.config != b.config {
        push(
            ChangeKind::ConfigChanged,
            b.config.clone().unwrap_or_default(),
        );
    }
}

/// Appends `entry` as one line and syncs the file.
pub(crate) fn append(path: &Path, entry: &HistoryEntry) -> Result<()> {
    let mut line = serde_json::to_vec(entry).unwrap_or_default();
    line.push(b'\n');
    crate::fsx::append_synced(path, &line)
}

/// The history as written, with the lines that do not parse counted (a line cut by a crash is
/// the usual one). Nothing is filtered.
pub(crate) fn read_raw(path: &Path) -> Result<(Vec<HistoryEntry>, usize)> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(crate::StoreError::io(path, e)),
    };
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<HistoryEntry>(line) {
            Ok(e) => out.push(e),
            Err(_) => bad += 1,
        }
    }
    Ok((out, bad))
}

/// The committed history up to `generation`: lines above it never published, and of two lines
/// of one generation the later one is the one that did.
pub(crate) fn committed(entries: Vec<HistoryEntry>, generation: u64) -> Vec<HistoryEntry> {
    let mut by_gen: BTreeMap<u64, HistoryEntry> = BTreeMap::new();
    for e in entries {
        if e.generation <= generation {
            by_gen.insert(e.generation, e);
        }
    }
    by_gen.into_values().collect()
}

/// Applies the after-states of `entry` to `reg` (replay).
pub(crate) fn replay(reg: &mut Registry, entry: &HistoryEntry) {
    for a in &entry.after {
        let m = reg.models.entry(a.model.clone()).or_default();
        match &a.record {
            Some(r) => {
                m.versions
                    .insert(a.version.clone(), std::sync::Arc::new(r.clone()));
            }
            None => {
                m.versions.remove(&a.version);
            }
        }
    }
    for d in &entry.defaults {
        let m = reg.models.entry(d.model.clone()).or_default();
        m.default = d.default.clone();
    }
    reg.models
        .retain(|_, m| !m.versions.is_empty() || m.default.is_some() || !m.extra.is_empty());
    reg.generation = entry.generation;
}

impl crate::WeightManager {
    /// The committed history, oldest first; only entries touching `model` (and `version`) when
    /// given. Lines that do not parse are skipped (`verify` counts them).
    ///
    /// # Errors
    /// An unreadable history file; a registry that cannot be read (it says which generations
    /// are committed).
    pub fn log(&self, model: Option<&str>, version: Option<&str>) -> Result<Vec<HistoryEntry>> {
        let (entries, _) = read_raw(&self.root.join(HISTORY_FILE))?;
        let generation = self.registry()?.generation;
        let mut out = committed(entries, generation);
        if let Some(m) = model {
            out.retain(|e| e.touches(m, version));
        }
        Ok(out)
    }
}
