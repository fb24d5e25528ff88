//! The registry, `weight_config.json`: models -> versions -> formats.
//!
//! It is one compact JSON document, parsed once per command (a registry of 10,000 versions
//! lists in a few tens of milliseconds). Per-tensor digests are not in it: they live beside it
//! in `digests/<model>/<version>.json` so that the registry stays small; the registry keeps one
//! `content` digest per version that summarizes them.
//!
//! The document carries `"schema": 1` and a `generation` that every published change raises by
//! one (the history under the root names changes by generation). A newer schema is readable
//! for listing but refused for writing, so an old tantra never rewrites what it does not
//! understand; fields it does not know (added by a newer tantra or by hand) are kept in `extra`
//! maps at every level and written back unchanged.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tantra_formats::OutputFormat;

use crate::error::{Result, StoreError};
use crate::fsx;

/// The schema this tantra reads and writes.
pub const SCHEMA: u64 = 1;

/// Fields a record does not know, kept as they were.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// A model's versions by name: a persistent ordered map (a B-tree whose nodes are shared
/// between copies). Every change of the registry is planned on a copy of the current one and
/// compared with it for the history; with 10,000 versions a `BTreeMap` made each of those a
/// walk over every entry (a clone allocated every name again, a comparison visited every
/// record), while here a copy is one pointer, a change copies the path to one leaf, and
/// [`imbl::OrdMap::diff`] skips the subtrees two generations share.
pub type Versions = imbl::OrdMap<String, Arc<VersionRecord>>;

/// The whole registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub schema: u64,
    /// Raised by one with every published change; 0 for a registry never published by a
    /// tantra that counts.
    #[serde(default)]
    pub generation: u64,
    #[serde(default)]
    pub models: BTreeMap<String, ModelRecord>,
    #[serde(flatten)]
    pub extra: Extra,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            schema: SCHEMA,
            generation: 0,
            models: BTreeMap::new(),
            extra: Extra::new(),
        }
    }
}

/// One model: its versions and which one is the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// Shared records in a shared tree ([`Versions`]): copying a registry of 10,000
    /// versions (every plan starts from a copy of the current one) copies a pointer, and
    /// comparing two generations skips what they share.
    #[serde(default)]
    pub versions: Versions,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One version of a model: the same tensors in one or more formats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRecord {
    /// When the version was first registered (RFC 3339 UTC).
    pub created: String,
    /// Total number of elements over all tensors.
    pub parameters: u64,
    /// Number of tensors.
    pub tensors: u64,
    /// The distinct dtypes, sorted (`["BF16", "F32"]`).
    pub dtypes: Vec<String>,
    /// sha256 over the sorted tensor table (name, dtype, shape, tensor digest): equal exactly
    /// when two files hold the same weights, whatever their format.
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The config (`configs/<model>/<config>.json`) these weights belong to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// By format name (`safetensors`, `pt`, `bin`).
    pub formats: BTreeMap<String, FormatRecord>,
    #[serde(flatten)]
    pub extra: Extra,
}

/// One file of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FormatRecord {
    /// Relative to the root, with `/` separators (`weights/mamba_full_pt.pt`).
    pub path: String,
    pub bytes: u64,
    /// sha256 of the whole file, lowercase hex.
    pub sha256: String,
    /// When this file was placed.
    pub created: String,
    pub source: Source,
    #[serde(flatten)]
    pub extra: Extra,
}

/// Where a file came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    /// Copied in from a file outside the root.
    Imported { from: String },
    /// Written by converting this version's file in another format.
    Converted { from: String },
    /// Produced by a program (model initialization); `by` says which.
    Generated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// Promoted from a training checkpoint.
    Checkpoint { step: u64, from: String },
}

impl Source {
    /// A short human description (`imported from /x/y.pt`).
    pub fn describe(&self) -> String {
        match self {
            Source::Imported { from } => format!("imported from {from}"),
            Source::Converted { from } => format!("converted from {from}"),
            Source::Generated { by: Some(by) } => format!("generated by {by}"),
            Source::Generated { by: None } => "generated".into(),
            Source::Checkpoint { step, from } => format!("checkpoint step {step} ({from})"),
        }
    }
}

// `#[serde(flatten)]` buffers every field of a record before it sorts them out, which made a
// registry of 10,000 versions parse 3x slower. These two records are parsed by hand instead:
// known keys go to their fields, unknown ones to `extra`, in one pass.

fn missing<E: serde::de::Error>(what: &'static str) -> E {
    E::missing_field(what)
}

impl<'de> Deserialize<'de> for VersionRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = VersionRecord;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a version record")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<VersionRecord, A::Error> {
                let (mut created, mut parameters, mut tensors, mut dtypes, mut content) =
                    (None, None, None, None, None);
                let (mut tags, mut note, mut config, mut formats) = (Vec::new(), None, None, None);
                let mut extra = Extra::new();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    match k.as_ref() {
                        "created" => created = Some(map.next_value()?),
                        "parameters" => parameters = Some(map.next_value()?),
                        "tensors" => tensors = Some(map.next_value()?),
                        "dtypes" => dtypes = Some(map.next_value()?),
                        "content" => content = Some(map.next_value()?),
                        "tags" => tags = map.next_value()?,
                        "note" => note = map.next_value()?,
                        "config" => config = map.next_value()?,
                        "formats" => formats = Some(map.next_value()?),
                        _ => {
                            extra.insert(k.into_owned(), map.next_value()?);
                        }
                    }
                }
                Ok(VersionRecord {
                    created: created.ok_or_else(|| missing("created"))?,
                    parameters: parameters.ok_or_else(|| missing("parameters"))?,
                    tensors: tensors.ok_or_else(|| missing("tensors"))?,
                    dtypes: dtypes.ok_or_else(|| missing("dtypes"))?,
                    content: content.ok_or_else(|| missing("content"))?,
                    tags,
                    note,
                    config,
                    formats: formats.ok_or_else(|| missing("formats"))?,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> Deserialize<'de> for FormatRecord {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FormatRecord;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a file record")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<FormatRecord, A::Error> {
                let (mut path, mut bytes, mut sha256, mut created, mut source) =
                    (None, None, None, None, None);
                let mut extra = Extra::new();
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    match k.as_ref() {
                        "path" => path = Some(map.next_value()?),
                        "bytes" => bytes = Some(map.next_value()?),
                        "sha256" => sha256 = Some(map.next_value()?),
                        "created" => created = Some(map.next_value()?),
                        "source" => source = Some(map.next_value()?),
                        _ => {
                            extra.insert(k.into_owned(), map.next_value()?);
                        }
                    }
                }
                Ok(FormatRecord {
                    path: path.ok_or_else(|| missing("path"))?,
                    bytes: bytes.ok_or_else(|| missing("bytes"))?,
                    sha256: sha256.ok_or_else(|| missing("sha256"))?,
                    created: created.ok_or_else(|| missing("created"))?,
                    source: source.ok_or_else(|| missing("source"))?,
                    extra,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl VersionRecord {
    /// The formats present, in preference order (safetensors, pt, bin).
    pub fn available_formats(&self) -> Vec<OutputFormat> {
        OutputFormat::EVERY
            .into_iter()
            .filter(|f| self.formats.contains_key(f.name()))
            .collect()
    }

    /// Total bytes over all formats.
    pub fn total_bytes(&self) -> u64 {
        self.formats.values().map(|f| f.bytes).sum()
    }
}

impl Registry {
    /// Reads the registry at `path`; a missing file is an empty registry (the store decides
    /// whether a missing registry is an error: see `WeightManager::registry`).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a file that does not parse or names an unknown format,
    /// [`StoreError::SchemaTooNew`] for a newer schema whose shape this tantra cannot read.
    pub fn load(path: &Path) -> Result<Registry> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Registry::default()),
            Err(e) => return Err(StoreError::io(path, e)),
        };
        Registry::parse(&bytes, path)
    }

    /// Parses registry bytes read from `path` (for errors). A newer schema parses when its
    /// shape is one this tantra can read; [`Registry::check_writable`] refuses to write it.
    ///
    /// # Errors
    /// As [`Registry::load`].
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Registry> {
        // One pass for the common case; the schema is looked at separately only when the
        // document does not fit, so that a newer registry gets the right message.
        let reg: Registry = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => {
                #[derive(Deserialize)]
                struct Head {
                    schema: u64,
                }
                return Err(match serde_json::from_slice::<Head>(bytes) {
                    Ok(h) if h.schema > SCHEMA => StoreError::SchemaTooNew {
                        path: path.to_path_buf(),
                        found: h.schema,
                        supported: SCHEMA,
                    },
                    Ok(_) => StoreError::corrupt(
                        path,
                        format!("the registry does not match schema 1: {e}"),
                    ),
                    Err(e) => {
                        StoreError::corrupt(path, format!("the registry is not valid JSON: {e}"))
                    }
                });
            }
        };
        reg.check(path)?;
        Ok(reg)
    }

    /// Refuses to write a registry of a newer schema than this tantra's.
    ///
    /// # Errors
    /// [`StoreError::SchemaTooNew`].
    pub fn check_writable(&self, path: &Path) -> Result<()> {
        if self.schema > SCHEMA {
            return Err(StoreError::SchemaTooNew {
                path: path.to_path_buf(),
                found: self.schema,
                supported: SCHEMA,
            });
        }
        Ok(())
    }

    /// Writes the registry atomically (compact JSON).
    ///
    /// # Errors
    /// A newer schema ([`Registry::check_writable`]); the write.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check_writable(path)?;
        fsx::write_json_atomic(path, self)
    }

    /// The registry as the bytes [`Registry::save`] writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Rejects names and paths that a hand edit could have broken.
    fn check(&self, path: &Path) -> Result<()> {
        for (m, model) in &self.models {
            if !crate::names::is_valid_name(m) {
                return Err(StoreError::corrupt(
                    path,
                    format!("invalid model name {m:?}"),
                ));
            }
            for (v, ver) in &model.versions {
                if !crate::names::is_valid_name(v) {
                    return Err(StoreError::corrupt(
                        path,
                        format!("model {m}: invalid version name {v:?}"),
                    ));
                }
                for (f, rec) in &ver.formats {
                    if OutputFormat::from_str(f).is_err() {
                        return Err(StoreError::corrupt(
                            path,
                            format!("{m}:{v}: unknown format {f:?}"),
                        ));
                    }
                    if !is_safe_relative(&rec.path) {
                        return Err(StoreError::corrupt(
                            path,
                            format!("{m}:{v}: path {:?} leaves the root", rec.path),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub fn version(&self, model: &str, version: &str) -> Option<&VersionRecord> {
        self.models.get(model)?.versions.get(version).map(|v| &**v)
    }

    pub fn version_mut(&mut self, model: &str, version: &str) -> Option<&mut VersionRecord> {
        self.models
            .get_mut(model)?
            .versions
            .get_mut(version)
            .map(Arc::make_mut)
    }

    /// Who owns the file at relative path `rel`: `(model, version, format)`.
    pub fn owner_of(&self, rel: &str) -> Option<(&str, &str, &str)> {
        self.models.iter().find_map(|(m, model)| {
            model.versions.iter().find_map(|(v, ver)| {
                ver.formats
                    .iter()
                    .find(|(_, r)| r.path == rel)
                    .map(|(f, _)| (m.as_str(), v.as_str(), f.as_str()))
            })
        })
    }

    /// Every registered relative path.
    pub fn all_paths(&self) -> std::collections::HashSet<&str> {
        self.models
            .values()
            .flat_map(|m| m.versions.values())
            .flat_map(|v| v.formats.values())
            .map(|f| f.path.as_str())
            .collect()
    }
}

/// A read-only view of the registry for listings: it borrows its strings from the file's
/// bytes and skips the fields a listing does not show, so that listing a registry of 10,000
/// versions costs one pass of the JSON parser and few allocations.
#[derive(Debug, Deserialize)]
pub struct RegistryView<'a> {
    pub schema: u64,
    #[serde(borrow, default)]
    pub models: BTreeMap<Cow<'a, str>, ModelView<'a>>,
}

/// A model, as [`RegistryView`] sees it.
#[derive(Debug, Deserialize)]
pub struct ModelView<'a> {
    #[serde(borrow, default)]
    pub default: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub versions: BTreeMap<Cow<'a, str>, VersionView<'a>>,
}

/// A version, as [`RegistryView`] sees it.
#[derive(Debug, Deserialize)]
pub struct VersionView<'a> {
    pub parameters: u64,
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub formats: BTreeMap<Cow<'a, str>, FormatView<'a>>,
}

/// A file, as [`RegistryView`] sees it.
#[derive(Debug, Deserialize)]
pub struct FormatView<'a> {
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    pub bytes: u64,
    #[serde(borrow)]
    pub sha256: Cow<'a, str>,
    #[serde(borrow)]
    pub created: Cow<'a, str>,
}

impl<'a> RegistryView<'a> {
    /// Parses registry bytes read from `path` (for errors).
    ///
    /// # Errors
    /// As [`Registry::load`].
    pub fn parse(bytes: &'a [u8], path: &Path) -> Result<RegistryView<'a>> {
        let view: RegistryView<'a> = serde_json::from_slice(bytes).map_err(|e| {
            match serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| v.get("schema").and_then(|s| s.as_u64()))
            {
                Some(found) if found > SCHEMA => StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found,
                    supported: SCHEMA,
                },
                _ => StoreError::corrupt(
                    path,
                    format!("the registry is not valid JSON for schema 1: {e}"),
                ),
            }
        })?;
        Ok(view)
    }
}

/// True for a relative path of plain components (no `..`, no root, no backslash).
pub fn is_safe_relative(rel: &str) -> bool {
    !rel.is_empty()
        && !rel.starts_with('/')
        && !rel.contains('\\')
        && !rel.contains('\0')
        && rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Registry {
        let mut r = Registry::default();
        let mut formats = BTreeMap::new();
        formats.insert(
            "pt".to_string(),
            FormatRecord {
                path: "weights/m_v_pt.pt".into(),
                bytes: 10,
                sha256: "ab".into(),
                created: "2025-01-01T00:00:00.000000Z".into(),
                source: Source::Imported {
                    from: "/x.pt".into(),
                },
                extra: Extra::new(),
            },
        );
        let mut model = ModelRecord::default();
        model.versions.insert(
            "v".into(),
            VersionRecord {
                created: "2025-01-01T00:00:00.000000Z".into(),
                parameters: 3,
                tensors: 1,
                dtypes: vec!["F32".into()],
                content: "cd".into(),
                tags: vec![],
                note: None,
                config: None,
                formats,
                extra: Extra::new(),
            }
            .into(),
        );
        model.default = Some("v".into());
        r.models.insert("m".into(), model);
        r
    }

    #[test]
    fn round_trips_compactly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weight_config.json");
        assert_eq!(Registry::load(&p).unwrap(), Registry::default());
        let r = sample();
        r.save(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.starts_with("{\"schema\":1,"), "{text}");
        assert!(!text.contains("\n "), "compact: {text}");
        assert_eq!(Registry::load(&p).unwrap(), r);
        assert_eq!(r.owner_of("weights/m_v_pt.pt"), Some(("m", "v", "pt")));
    }

    #[test]
    fn refuses_newer_schema_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("weight_config.json");
        std::fs::write(&p, r#"{"schema":2,"models":[]}"#).unwrap();
        assert!(matches!(
            Registry::load(&p),
            Err(StoreError::SchemaTooNew { found: 2, .. })
        ));
        // A newer registry of a shape this tantra reads: listed, never written.
        std::fs::write(&p, r#"{"schema":2,"models":{},"shiny":true}"#).unwrap();
        let newer = Registry::load(&p).unwrap();
        assert!(matches!(
            newer.save(&p),
            Err(StoreError::SchemaTooNew { found: 2, .. })
        ));
        std::fs::write(&p, b"{\"schema\":1,\"models\":").unwrap();
        let e = Registry::load(&p).unwrap_err();
        assert!(matches!(e, StoreError::Corrupt { .. }));
        assert!(e.to_string().contains("weight_config.json"));
        let mut r = sample();
        r.version_mut("m", "v")
            .unwrap()
            .formats
            .get_mut("pt")
            .unwrap()
            .path = "../etc/passwd".into();
        std::fs::write(&p, serde_json::to_vec(&r).unwrap()).unwrap();
        assert!(Registry::load(&p)
            .unwrap_err()
            .to_string()
            .contains("leaves the root"));
    }

    #[test]
    fn unknown_fields_survive_a_round_trip_at_every_level() {
        let text = r#"{"schema":1,"generation":4,"future":{"a":1},"models":{"m":{"default":"v","m_extra":2,"versions":{"v":{"created":"2025-01-01T00:00:00.000000Z","parameters":3,"tensors":1,"dtypes":["F32"],"content":"cd","v_extra":[1,2],"formats":{"pt":{"path":"weights/m_v_pt.pt","bytes":10,"sha256":"ab","created":"2025-01-01T00:00:00.000000Z","source":{"kind":"generated"},"f_extra":"x"}}}}}}}"#;
        let reg = Registry::parse(text.as_bytes(), Path::new("r.json")).unwrap();
        assert_eq!(reg.generation, 4);
        let back: serde_json::Value = serde_json::from_slice(&reg.to_bytes()).unwrap();
        let orig: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(back, orig);
    }

    #[test]
    fn safe_relative_paths() {
        assert!(is_safe_relative("weights/a.pt"));
        for bad in ["", "/etc", "a/../b", "..", "a//b", "a\\b", "./a"] {
            assert!(!is_safe_relative(bad), "{bad}");
        }
    }
}
