//! Loading: which registered file a request means, and opening it only after its size and
//! sha256 match the registry.

use std::path::Path;

use tantra_formats::{open, OutputFormat, Progress};

use super::{
    find_model, format_missing, model_version, LoadOptions, LoadedWeights, Resolved, WeightManager,
};
use crate::content::TensorTable;
use crate::error::{Result, StoreError};
use crate::fsx;
use crate::names::validate_name;
use crate::registry::Registry;

impl WeightManager {
    /// Finds the file for (model, version, format): no version means the model's default, a
    /// tag means the version it tags, no format means safetensors, else pt, else bin.
    ///
    /// # Errors
    /// Unknown model or version, no default version, or the format asked for is missing.
    pub fn resolve(
        &self,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
    ) -> Result<Resolved> {
        validate_name("model", model)?;
        let reg = self.registry_shared()?;
        resolve_in(self, &reg, model, version, format)
    }

    /// Loads the weights of (model, version, format) (see [`WeightManager::resolve`]), after
    /// checking the file's size and sha256 against the registry.
    ///
    /// # Errors
    /// As [`WeightManager::resolve`]; [`StoreError::Missing`] or [`StoreError::Changed`] (the
    /// file is never used then); a file that does not read as weights.
    pub fn load_model_weights(
        &self,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
    ) -> Result<LoadedWeights> {
        self.load_with(
            model,
            version,
            format,
            &LoadOptions::default(),
            &tantra_formats::NoProgress,
        )
    }

    /// [`WeightManager::load_model_weights`] with options and progress for the hashing.
    ///
    /// # Errors
    /// As [`WeightManager::load_model_weights`].
    pub fn load_with(
        &self,
        model: &str,
        version: Option<&str>,
        format: Option<OutputFormat>,
        opts: &LoadOptions,
        progress: &dyn Progress,
    ) -> Result<LoadedWeights> {
        // A reader takes no lock. A file can vanish between reading the registry and opening
        // the file only because a writer published a newer registry meanwhile: look again at a
        // fresh registry before calling the file missing.
        let mut attempts = 0;
        let (r, len) = loop {
            let reg = self.registry_shared()?;
            validate_name("model", model)?;
            let r = resolve_in(self, &reg, model, version, format)?;
            match std::fs::symlink_metadata(&r.path) {
                Ok(m) if m.file_type().is_file() => break (r, m.len()),
                Ok(_) => {
                    return Err(StoreError::NotRegular {
                        path: r.path,
                        what: "the registered path is not a regular file (a symlink or a folder?)"
                            .into(),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    attempts += 1;
                    let again = self.registry_shared()?;
                    if again.generation != reg.generation && attempts < 8 {
                        continue;
                    }
                    return Err(StoreError::Missing {
                        path: r.path,
                        model: r.model,
                        version: r.version,
                    });
                }
                Err(e) => return Err(StoreError::io(&r.path, e)),
            }
        };
        if len != r.record.bytes {
            return Err(StoreError::Changed {
                path: r.path,
                what: format!("{len} bytes, registered {}", r.record.bytes),
            });
        }
        if opts.verify_hash {
            check_sha256(&r.path, len, &r.record.sha256, "registered", progress)?;
        }
        let source = open(&r.path)?;
        Ok(LoadedWeights {
            model: r.model,
            version: r.version,
            format: r.format,
            path: r.path,
            record: r.record,
            version_record: r.version_record,
            source,
        })
    }

    /// The per-tensor digests of a registered version.
    ///
    /// # Errors
    /// An unknown version; a digest file that is missing or damaged.
    pub fn tensor_digests(&self, model: &str, version: &str) -> Result<TensorTable> {
        let reg = self.registry_shared()?;
        let version = &reg.resolve_version(model, Some(version))?;
        let rec = super::find_version(&reg, model, version)?;
        self.digests_of(model, version, &rec.content)
    }

    /// The digests of content `content` (of `model:version`, for the legacy location and for
    /// errors).
    pub(crate) fn digests_of(
        &self,
        model: &str,
        version: &str,
        content: &str,
    ) -> Result<TensorTable> {
        let mut tried = Vec::new();
        for path in [
            self.content_digests_path(content),
            self.legacy_digests_path(model, version),
        ] {
            match TensorTable::load(&path) {
                Ok(Some(t)) if t.content == content && t.recomputed_content() == content => {
                    return Ok(t)
                }
                Ok(Some(_)) => tried.push(format!(
                    "{}: damaged (its digests do not add up to {model}:{version}'s content)",
                    path.display()
                )),
                Ok(None) => tried.push(format!("{}: missing", path.display())),
                Err(e) => tried.push(tantra_formats::chain(&e).to_string()),
            }
        }
        Err(StoreError::corrupt(
            self.content_digests_path(content),
            format!(
                "no intact per-tensor digests for {model}:{version} ({}); `tantra repair` rebuilds them",
                tried.join("; ")
            ),
        ))
    }
}

pub(crate) fn resolve_in(
    wm: &WeightManager,
    reg: &Registry,
    model: &str,
    version: Option<&str>,
    format: Option<OutputFormat>,
) -> Result<Resolved> {
    let m = find_model(reg, model)?;
    if let Some(v) = version {
        validate_name("version", v)?;
    }
    // A tag is an alias of its version (`mamba:golden`).
    let version = reg.resolve_version(model, version)?;
    let ver = model_version(m, model, &version)?;
    let format = match format {
        Some(f) => {
            if !ver.formats.contains_key(f.name()) {
                return Err(format_missing(model, &version, f, ver));
            }
            f
        }
        None => *ver
            .available_formats()
            .first()
            .ok_or_else(|| StoreError::UnknownVersion {
                model: model.into(),
                version: version.clone(),
            })?,
    };
    let record = ver
        .formats
        .get(format.name())
        .cloned()
        .ok_or_else(|| format_missing(model, &version, format, ver))?;
    Ok(Resolved {
        model: model.into(),
        path: wm.abs(&record.path),
        version,
        format,
        record,
        version_record: ver.clone(),
    })
}

/// Re-hashes the `len` bytes of `path` (with a progress bar) and fails with
/// [`StoreError::Changed`] unless they hash to `sha256`, the hash the `noun` ("registered",
/// "recorded") file had.
pub(crate) fn check_sha256(
    path: &Path,
    len: u64,
    sha256: &str,
    noun: &str,
    progress: &dyn Progress,
) -> Result<()> {
    let h = fsx::hash_file_with(path, "checking sha256", len, progress)?;
    if h.sha256 == sha256 {
        return Ok(());
    }
    Err(StoreError::Changed {
        path: path.to_path_buf(),
        what: format!("sha256 {:.16}..., {noun} {:.16}...", h.sha256, sha256),
    })
}
