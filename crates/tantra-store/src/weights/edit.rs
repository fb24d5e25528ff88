//! Edits of registered versions: the default, tags, removal. Each is a plan published as one
//! registry generation.

use tantra_formats::OutputFormat;

use super::{RemoveReport, WeightManager};
use crate::error::Result;
use crate::names::validate_name;
use crate::plan::{plan_remove, plan_set_default, plan_tag, Removal};

/// How to remove.
#[derive(Debug, Clone, Default)]
pub struct RemoveOptions {
    /// Only this format (default: the whole version).
    pub format: Option<OutputFormat>,
    /// Remove the model's default version too (the model is left without a default).
    pub force: bool,
    /// Delete without taking a backup first: the bytes are freed now.
    pub no_backup: bool,
    /// Only say what would happen.
    pub dry_run: bool,
}

impl WeightManager {
    /// Makes `version` (a version or a tag of one) the default of `model`.
    ///
    /// # Errors
    /// An unknown model or version; the lock.
    pub fn set_default(&self, model: &str, version: &str) -> Result<()> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        let lock = self.lock()?;
        let current = self.registry_shared()?;
        let version = &current.resolve_version(model, Some(version))?;
        let plan = plan_set_default(&current, model, version)?;
        self.apply(&lock, &current, plan, Vec::new(), &[])?;
        Ok(())
    }

    /// Adds (or with `remove`, removes) a tag of a version. A tag names one version of a model:
    /// adding it moves it from any other version. Tagged versions survive retention.
    ///
    /// # Errors
    /// An invalid tag; an unknown model or version; the lock.
    pub fn tag(&self, model: &str, version: &str, tag: &str, remove: bool) -> Result<()> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        validate_name("tag", tag)?;
        let lock = self.lock()?;
        let current = self.registry_shared()?;
        let version = &current.resolve_version(model, Some(version))?;
        let plan = plan_tag(&current, model, version, tag, remove)?;
        self.apply(&lock, &current, plan, Vec::new(), &[])?;
        Ok(())
    }

    /// Removes one format of a version, or the whole version; every file is backed up first.
    ///
    /// # Errors
    /// An unknown model, version or format; the default version without `force` (removing it
    /// leaves the model without a default).
    pub fn remove(
        &self,
        model: &str,
        version: &str,
        format: Option<OutputFormat>,
        force: bool,
    ) -> Result<RemoveReport> {
        self.remove_with(
            model,
            version,
            &RemoveOptions {
                format,
                force,
                ..RemoveOptions::default()
            },
        )
    }

    /// [`WeightManager::remove`] with every option.
    ///
    /// # Errors
    /// As [`WeightManager::remove`].
    pub fn remove_with(
        &self,
        model: &str,
        version: &str,
        opts: &RemoveOptions,
    ) -> Result<RemoveReport> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        let lock = if opts.dry_run {
            None
        } else {
            Some(self.lock()?)
        };
        let current = self.registry_shared()?;
        // A tag names its version (`tantra rm mamba:golden`).
        let version = &current.resolve_version(model, Some(version))?;
        let removal = Removal {
            model: model.into(),
            version: version.into(),
            formats: opts.format.map(|f| vec![f.name().to_string()]),
        };
        let reason = "removed by `tantra remove`";
        let plan_on = |current| {
            plan_remove(
                current,
                std::slice::from_ref(&removal),
                opts.force,
                opts.no_backup,
                reason,
            )
        };
        let plan = plan_on(&current)?;
        let ver = super::find_version(&current, model, version)?.clone();
        let mut removed = Vec::new();
        let mut bytes = 0;
        for rel in &plan.retire {
            if let Some((f, rec)) = ver.formats.iter().find(|(_, r)| &r.path == rel) {
                removed.push((f.clone(), rec.path.clone()));
                bytes += rec.bytes;
            }
        }
        let version_removed = plan.registry.version(model, version).is_none();
        let (backups, freed) = match lock {
            None => (Vec::new(), if opts.no_backup { bytes } else { 0 }),
            Some(lock) => {
                let applied = self.apply(&lock, &current, plan, Vec::new(), &[])?;
                (
                    applied.backups.into_iter().map(|b| b.id).collect(),
                    applied.freed,
                )
            }
        };
        Ok(RemoveReport {
            model: model.into(),
            version: version.clone(),
            removed,
            bytes,
            freed,
            kept_in_backups: if opts.no_backup { 0 } else { bytes },
            backups,
            version_removed,
            dry_run: opts.dry_run,
        })
    }
}
