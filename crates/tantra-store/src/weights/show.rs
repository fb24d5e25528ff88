//! `show`: everything known about one version in one typed report (what `tantra show` and
//! `tantra show --json` print): its files, contents, config, tags, lineage and recent history.

use std::collections::BTreeMap;

use serde::Serialize;

use super::WeightManager;
use crate::config::{ConfigManager, Schemas};
use crate::error::{Result, StoreError};
use crate::history::HistoryEntry;
use crate::names::validate_name;
use crate::registry::Source;

/// One version, as `tantra show` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ShowReport {
    pub model: String,
    pub version: String,
    /// True when this is the model's default version.
    pub default: bool,
    /// The model's default version, whichever it is.
    pub default_version: Option<String>,
    pub tags: Vec<String>,
    /// When the version was first registered (RFC 3339 UTC).
    pub created: String,
    pub note: Option<String>,
    pub parameters: u64,
    pub tensors: u64,
    pub dtypes: Vec<String>,
    /// The content digest (equal exactly when two versions hold the same weights).
    pub content: String,
    /// Other versions holding the same weights (`model:version`).
    pub same_content: Vec<String>,
    /// One per file, in load order (the first is what `load_model_weights` opens).
    pub formats: Vec<ShowFormat>,
    /// The checkpoint the version was promoted from, when it was.
    pub promoted_from: Option<PromotedFrom>,
    pub config: Option<ShowConfig>,
    /// The last history entries touching this version, oldest first.
    pub history: Vec<HistoryEntry>,
}

/// One file of a version.
#[derive(Debug, Clone, Serialize)]
pub struct ShowFormat {
    pub format: String,
    /// Relative to the root.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    pub created: String,
    /// Where the file came from (imported, converted, generated, checkpoint).
    pub source: Source,
}

/// A promotion from a training checkpoint, with the checkpoint's metrics when its record is
/// still kept.
#[derive(Debug, Clone, Serialize)]
pub struct PromotedFrom {
    pub step: u64,
    pub from: String,
    pub metrics: Option<BTreeMap<String, f64>>,
}

/// The config a version belongs to.
#[derive(Debug, Clone, Serialize)]
pub struct ShowConfig {
    pub name: String,
    pub values: serde_json::Value,
}

impl WeightManager {
    /// Everything about `model:version` (a tag names its version, no version means the
    /// default), with the last `history` history entries.
    ///
    /// # Errors
    /// An unknown model or version; a registry, config or history that cannot be read.
    pub fn show(&self, model: &str, version: Option<&str>, history: usize) -> Result<ShowReport> {
        validate_name("model", model)?;
        let reg = self.registry()?;
        let version = reg.resolve_version(model, version)?;
        let m = super::find_model(&reg, model)?;
        let rec = super::model_version(m, model, &version)?;
        let formats: Vec<ShowFormat> = rec
            .available_formats()
            .into_iter()
            .filter_map(|f| {
                rec.formats.get(f.name()).map(|r| ShowFormat {
                    format: f.name().into(),
                    path: r.path.clone(),
                    bytes: r.bytes,
                    sha256: r.sha256.clone(),
                    created: r.created.clone(),
                    source: r.source.clone(),
                })
            })
            .collect();
        let promoted_from = formats.iter().find_map(|f| match &f.source {
            Source::Checkpoint { step, from } => Some((*step, from.clone())),
            _ => None,
        });
        let promoted_from = match promoted_from {
            Some((step, from)) => {
                let metrics = self
                    .checkpoints(model)?
                    .into_iter()
                    .find(|c| c.step == step)
                    .map(|c| c.metrics);
                Some(PromotedFrom {
                    step,
                    from,
                    metrics,
                })
            }
            None => None,
        };
        let cm = ConfigManager::new(self.clone(), Schemas::new());
        let config = match cm.config_for_version(model, &version) {
            Ok(name) => Some(ShowConfig {
                values: cm.show(model, &name)?,
                name,
            }),
            Err(StoreError::NoConfig { .. }) => None,
            Err(e) => return Err(e),
        };
        let same_content = reg
            .models
            .iter()
            .flat_map(|(mn, mr)| mr.versions.iter().map(move |(vn, vr)| (mn, vn, vr)))
            .filter(|(mn, vn, vr)| vr.content == rec.content && !(*mn == model && **vn == version))
            .map(|(mn, vn, _)| format!("{mn}:{vn}"))
            .collect();
        let mut log = self.log(Some(model), Some(&version))?;
        let keep = log.len().saturating_sub(history);
        log.drain(..keep);
        Ok(ShowReport {
            model: model.into(),
            default: m.default.as_deref() == Some(version.as_str()),
            default_version: m.default.clone(),
            tags: rec.tags.clone(),
            created: rec.created.clone(),
            note: rec.note.clone(),
            parameters: rec.parameters,
            tensors: rec.tensors,
            dtypes: rec.dtypes.clone(),
            content: rec.content.clone(),
            same_content,
            formats,
            promoted_from,
            config,
            history: log,
            version,
        })
    }
}
