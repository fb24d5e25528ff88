//! Listings: registered files and versions, read without the lock.

use tantra_formats::OutputFormat;

use std::path::Path;

use super::{find_model, ListFilter, VersionRow, WeightManager, WeightRow, WeightRowRef};
use crate::error::{Result, StoreError};
use crate::names::validate_name;

impl WeightManager {
    /// Every registered file, by model, version and format (safetensors, pt, bin).
    ///
    /// # Errors
    /// A registry that does not parse.
    pub fn list(&self, filter: &ListFilter) -> Result<Vec<WeightRow>> {
        self.with_rows(filter, |rows| {
            rows.iter().map(WeightRowRef::to_owned).collect()
        })
    }

    /// Hands `f` every registered file, borrowed from the registry's bytes: the cheapest way
    /// to list a large registry (one parse, no copies of the strings).
    ///
    /// # Errors
    /// A registry that does not parse; a filter on a model that is not registered
    /// ([`StoreError::UnknownModel`], listing the known ones).
    pub fn with_rows<R>(
        &self,
        filter: &ListFilter,
        f: impl FnOnce(&[WeightRowRef<'_>]) -> R,
    ) -> Result<R> {
        let path = self.registry_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Empty only if the root never held weights (see `registry`).
                let reg = self.registry()?;
                if let Some(m) = &filter.model {
                    reg.check_model(m)?;
                }
                return Ok(f(&[]));
            }
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let reg = crate::registry::RegistryView::parse(&bytes, &path)?;
        if let Some(m) = filter.model.as_deref() {
            if !reg.models.contains_key(m) {
                let known: Vec<String> = reg.models.keys().map(|k| k.to_string()).collect();
                return Err(StoreError::unknown_model(m, &known));
            }
        }
        let mut rows = Vec::new();
        for (m, model) in &reg.models {
            if filter.model.as_deref().is_some_and(|f| f != m) {
                continue;
            }
            for (v, ver) in &model.versions {
                let is_default = model.default.as_deref() == Some(v.as_ref());
                for fmt in OutputFormat::EVERY {
                    if filter.format.is_some_and(|ff| ff != fmt) {
                        continue;
                    }
                    let Some(rec) = ver.formats.get(fmt.name()) else {
                        continue;
                    };
                    rows.push(WeightRowRef {
                        model: m,
                        version: v,
                        format: fmt.name(),
                        path: &rec.path,
                        bytes: rec.bytes,
                        sha256: &rec.sha256,
                        parameters: ver.parameters,
                        default: is_default,
                        created: &rec.created,
                    });
                }
            }
        }
        Ok(f(&rows))
    }

    /// The versions of `model`, oldest first.
    ///
    /// # Errors
    /// An unknown model.
    pub fn versions(&self, model: &str) -> Result<Vec<VersionRow>> {
        validate_name("model", model)?;
        let reg = self.registry()?;
        let m = find_model(&reg, model)?;
        let mut rows: Vec<VersionRow> = m
            .versions
            .iter()
            .map(|(v, rec)| VersionRow {
                version: v.clone(),
                default: m.default.as_deref() == Some(v.as_str()),
                created: rec.created.clone(),
                parameters: rec.parameters,
                tensors: rec.tensors,
                dtypes: rec.dtypes.clone(),
                formats: rec
                    .available_formats()
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect(),
                bytes: rec.total_bytes(),
                tags: rec.tags.clone(),
                note: rec.note.clone(),
                config: rec.config.clone(),
                content: rec.content.clone(),
            })
            .collect();
        rows.sort_by(|a, b| a.created.cmp(&b.created).then(a.version.cmp(&b.version)));
        Ok(rows)
    }

    /// Who owns `path` if it lies inside a weights root: `Some("model:version (format)")` for a
    /// registered file, `Some("a backup")` for a file in `backups/`, `Some("checkpoint ...")`
    /// for a recorded checkpoint file. Programs that write files (`tantra convert`) call this so
    /// that they never overwrite what a root holds behind its registry's back.
    ///
    /// # Errors
    /// The root's registry cannot be read.
    pub fn owner_of_path(path: &Path) -> Result<Option<String>> {
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut dir = abs.parent();
        while let Some(d) = dir {
            if d.join(super::REGISTRY_FILE).is_file()
                || d.join(crate::history::HISTORY_FILE).is_file()
            {
                let wm = WeightManager::open(d)?;
                let Ok(rel) = abs.strip_prefix(d) else {
                    return Ok(None);
                };
                let rel = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                if let Some((m, v, f)) = wm.registry()?.owner_of(&rel) {
                    return Ok(Some(format!("{m}:{v} ({f})")));
                }
                if rel.starts_with("backups/") {
                    return Ok(Some("a backup".into()));
                }
                for m in wm.checkpoint_models()? {
                    for c in wm.checkpoints(&m)? {
                        if c.file == rel {
                            return Ok(Some(format!("checkpoint {m} step {}", c.step)));
                        }
                    }
                }
                return Ok(None);
            }
            dir = d.parent();
        }
        Ok(None)
    }
}
