//! `MODEL[:VERSION]`: the one way a person names a version, and how the name is resolved.
//!
//! The command line, the Python package and programs all name versions the same way, as
//! ollama names `name:tag`: `mamba` (the default version), `mamba:full` (a version) or
//! `mamba:golden` (the version tagged `golden`). Tags are unique per model, so a tag is an
//! alias of exactly one version. Resolution lives here, beside the registry, so that every
//! caller gets the same answer; a version name wins over a tag of the same spelling.

use std::fmt;
use std::str::FromStr;

use crate::error::{Result, StoreError};
use crate::names::validate_name;
use crate::registry::Registry;
use crate::weights::WeightManager;

/// A parsed `MODEL[:VERSION]`; the version may be a version name or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRef {
    pub model: String,
    /// `None`: the model's default version.
    pub version: Option<String>,
}

impl ModelRef {
    /// Parses `MODEL` or `MODEL:VERSION` (the version may be a tag).
    ///
    /// # Errors
    /// [`StoreError::InvalidName`] for a model or version that is not a valid name (an empty
    /// version after `:` included).
    ///
    /// ```
    /// use tantra_store::ModelRef;
    /// let r = ModelRef::parse("mamba:golden")?;
    /// assert_eq!((r.model.as_str(), r.version.as_deref()), ("mamba", Some("golden")));
    /// assert!(ModelRef::parse("mamba:").is_err());
    /// # Ok::<(), tantra_store::StoreError>(())
    /// ```
    pub fn parse(s: &str) -> Result<ModelRef> {
        let (model, version) = match s.split_once(':') {
            Some((m, v)) => (m, Some(v)),
            None => (s, None),
        };
        validate_name("model", model)?;
        if let Some(v) = version {
            validate_name("version", v)?;
        }
        Ok(ModelRef {
            model: model.to_string(),
            version: version.map(str::to_string),
        })
    }

    /// True when `s` reads as `MODEL[:VERSION]` (not a path: no `/`, no leading `.`).
    pub fn looks_like(s: &str) -> bool {
        ModelRef::parse(s).is_ok()
    }
}

impl FromStr for ModelRef {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<ModelRef> {
        ModelRef::parse(s)
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}:{v}", self.model),
            None => f.write_str(&self.model),
        }
    }
}

impl Registry {
    /// The registered version that `version` means for `model`: the version of that name,
    /// else the version tagged `version`; `None` means the model's default.
    ///
    /// # Errors
    /// [`StoreError::UnknownModel`] (listing the known models), [`StoreError::NoDefault`],
    /// [`StoreError::UnknownVersion`] for a name that is neither a version nor a tag.
    pub fn resolve_version(&self, model: &str, version: Option<&str>) -> Result<String> {
        let m = self
            .models
            .get(model)
            .ok_or_else(|| StoreError::unknown_model(model, self.models.keys()))?;
        let Some(v) = version else {
            return m.default.clone().ok_or_else(|| StoreError::NoDefault {
                model: model.into(),
            });
        };
        if m.versions.contains_key(v) {
            return Ok(v.to_string());
        }
        m.versions
            .iter()
            .find(|(_, rec)| rec.tags.iter().any(|t| t == v))
            .map(|(name, _)| name.clone())
            .ok_or_else(|| StoreError::UnknownVersion {
                model: model.into(),
                version: v.into(),
            })
    }

    /// Fails with [`StoreError::UnknownModel`] (listing the known models) unless `model` is
    /// registered.
    ///
    /// # Errors
    /// As said.
    pub fn check_model(&self, model: &str) -> Result<()> {
        if self.models.contains_key(model) {
            Ok(())
        } else {
            Err(StoreError::unknown_model(model, self.models.keys()))
        }
    }
}

impl WeightManager {
    /// [`Registry::resolve_version`] on the registry as it is now.
    ///
    /// # Errors
    /// As [`Registry::resolve_version`]; a registry that cannot be read.
    pub fn resolve_version(&self, model: &str, version: Option<&str>) -> Result<String> {
        validate_name("model", model)?;
        self.registry()?.resolve_version(model, version)
    }

    /// [`WeightManager::resolve_version`] for a parsed reference: `(model, version)`.
    ///
    /// # Errors
    /// As [`Registry::resolve_version`].
    pub fn resolve_ref(&self, r: &ModelRef) -> Result<(String, String)> {
        let v = self.resolve_version(&r.model, r.version.as_deref())?;
        Ok((r.model.clone(), v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ModelRecord, VersionRecord};

    fn version(tags: &[&str]) -> VersionRecord {
        VersionRecord {
            created: "2025-01-01T00:00:00Z".into(),
            parameters: 1,
            tensors: 1,
            dtypes: vec!["F32".into()],
            content: "c".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            note: None,
            config: None,
            formats: Default::default(),
            extra: Default::default(),
        }
    }

    fn registry() -> Registry {
        let mut m = ModelRecord {
            default: Some("full".into()),
            ..Default::default()
        };
        m.versions.insert("full".into(), version(&[]).into());
        m.versions.insert("v2".into(), version(&["golden"]).into());
        // A version named like another version's tag: the version wins.
        m.versions.insert("base".into(), version(&[]).into());
        m.versions.insert("v3".into(), version(&["base"]).into());
        let mut r = Registry::default();
        r.models.insert("mamba".into(), m);
        r.models.insert("ocr_native".into(), ModelRecord::default());
        r
    }

    #[test]
    fn parses_and_prints() {
        let r = ModelRef::parse("mamba").unwrap();
        assert_eq!(r.version, None);
        assert_eq!(r.to_string(), "mamba");
        assert_eq!(ModelRef::parse("mamba:v2").unwrap().to_string(), "mamba:v2");
        for bad in ["", ":v", "mamba:", "a/b", "mamba:../x", "./x.pt", "a:b:c"] {
            assert!(ModelRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_aliases_and_versions_win() {
        let r = registry();
        assert_eq!(r.resolve_version("mamba", None).unwrap(), "full");
        assert_eq!(r.resolve_version("mamba", Some("v2")).unwrap(), "v2");
        assert_eq!(r.resolve_version("mamba", Some("golden")).unwrap(), "v2");
        assert_eq!(r.resolve_version("mamba", Some("base")).unwrap(), "base");
        let e = r.resolve_version("mamba", Some("nope")).unwrap_err();
        assert!(matches!(e, StoreError::UnknownVersion { .. }), "{e}");
        let e = r.resolve_version("ocr_native", None).unwrap_err();
        assert!(matches!(e, StoreError::NoDefault { .. }), "{e}");
        let e = r.resolve_version("mambo", None).unwrap_err().to_string();
        assert!(
            e.contains("\"mambo\"") && e.contains("mamba, ocr_native"),
            "{e}"
        );
    }
}
