//! [`ConfigManager`]: model configurations as JSON files under `configs/<model>/<name>.json`.
//!
//! A version's config is the one its registry entry names (`--config NAME`, so several
//! versions can share one file), else `configs/<model>/<version>.json`. The store knows no
//! architectures (those live in tantra-models, which depends on the store, not the other way
//! round), so what a config must contain is pluggable: a [`ConfigSchema`] validates a config's
//! fields and lists the tensors (name and shape) that weights for it must hold, and a
//! [`Schemas`] set picks one by the config's `"model_type"` field or, failing that, by the
//! model's name. [`FieldSchema`] is a ready-made declarative schema (typed fields with ranges)
//! for simple models and tests.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use tantra_formats::TensorSource;

use crate::backup::{BackupKind, BackupSpec};
use crate::cleanup::{list_dirs, list_files};
use crate::error::{Result, StoreError};
use crate::fsx;
use crate::names::validate_name;
use crate::WeightManager;

/// One thing wrong with a config, or with weights checked against a config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigProblem {
    /// The field (`hidden_size`) or tensor (`backbone.embeddings.weight`) concerned.
    pub what: String,
    pub message: String,
}

impl ConfigProblem {
    pub fn new(what: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigProblem {
            what: what.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.message)
    }
}

/// A tensor that weights for a config must hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedTensor {
    pub name: String,
    pub shape: Vec<u64>,
}

impl ExpectedTensor {
    pub fn new(name: impl Into<String>, shape: Vec<u64>) -> Self {
        ExpectedTensor {
            name: name.into(),
            shape,
        }
    }
}

/// What a model type's config must contain, and what its weights must hold.
///
/// Implemented by the crate that knows the architecture (tantra-models) and handed to
/// [`ConfigManager`] through [`Schemas`].
pub trait ConfigSchema: Send + Sync {
    /// The model type (`mamba`), matched against a config's `"model_type"`, else the model's
    /// folder name.
    fn model_type(&self) -> &str;

    /// Problems with the config's fields (types, ranges, relations between fields); empty
    /// when the config is valid.
    fn validate(&self, config: &Value) -> Vec<ConfigProblem>;

    /// The tensors weights for `config` must hold. Called only for a valid config.
    ///
    /// # Errors
    /// A message when the list cannot be derived from the config.
    fn expected_tensors(&self, config: &Value) -> std::result::Result<Vec<ExpectedTensor>, String>;

    /// The top-level fields this schema knows, for refusing (and correcting) misspelled keys;
    /// empty when the schema does not say (then any key is accepted).
    fn field_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// A config in which every field this schema knows appears, at every level (a nested
    /// object holds its own fields), for refusing misspelled keys at any depth. A `null` leaf
    /// means "a field whose inside is not described"; `null` as a whole means the schema does
    /// not say. The default is [`ConfigSchema::field_names`] as a flat object.
    fn template(&self) -> Value {
        let names = self.field_names();
        if names.is_empty() {
            return Value::Null;
        }
        Value::Object(names.into_iter().map(|n| (n, Value::Null)).collect())
    }
}

/// The schemas a [`ConfigManager`] knows, by model type.
#[derive(Clone, Default)]
pub struct Schemas {
    by_type: BTreeMap<String, Arc<dyn ConfigSchema>>,
}

impl fmt::Debug for Schemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_type.keys()).finish()
    }
}

impl Schemas {
    pub fn new() -> Self {
        Schemas::default()
    }

    /// Adds (or replaces) the schema for its model type.
    pub fn register(&mut self, schema: Arc<dyn ConfigSchema>) -> &mut Self {
        self.by_type.insert(schema.model_type().to_string(), schema);
        self
    }

    /// [`Schemas::register`], by value.
    pub fn with(mut self, schema: Arc<dyn ConfigSchema>) -> Self {
        self.register(schema);
        self
    }

    pub fn get(&self, model_type: &str) -> Option<&Arc<dyn ConfigSchema>> {
        self.by_type.get(model_type)
    }

    /// The known model types, sorted.
    pub fn names(&self) -> Vec<String> {
        self.by_type.keys().cloned().collect()
    }
}

/// The JSON type a field must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Integer,
    Number,
    Bool,
    String,
    /// Any JSON value.
    Any,
}

/// One field of a [`FieldSchema`].
#[derive(Debug, Clone)]
pub struct FieldSpec {
    pub name: String,
    pub kind: FieldKind,
    pub required: bool,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Allowed values of a string field (empty: any).
    pub choices: Vec<String>,
}

impl FieldSpec {
    fn new(name: &str, kind: FieldKind) -> Self {
        FieldSpec {
            name: name.into(),
            kind,
            required: true,
            min: None,
            max: None,
            choices: Vec::new(),
        }
    }
    pub fn integer(name: &str) -> Self {
        Self::new(name, FieldKind::Integer)
    }
    pub fn number(name: &str) -> Self {
        Self::new(name, FieldKind::Number)
    }
    pub fn boolean(name: &str) -> Self {
        Self::new(name, FieldKind::Bool)
    }
    pub fn string(name: &str) -> Self {
        Self::new(name, FieldKind::String)
    }
    pub fn any(name: &str) -> Self {
        Self::new(name, FieldKind::Any)
    }
    /// The field may be absent.
    pub fn optional(mut self) -> Self {
        self.required = false;
        self
    }
    /// Inclusive numeric range.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.min = Some(min);
        self.max = Some(max);
        self
    }
    pub fn min(mut self, min: f64) -> Self {
        self.min = Some(min);
        self
    }
    pub fn choices(mut self, values: &[&str]) -> Self {
        self.choices = values.iter().map(|s| s.to_string()).collect();
        self
    }

    fn check(&self, v: &Value, out: &mut Vec<ConfigProblem>) {
        let type_ok = match self.kind {
            FieldKind::Integer => v.is_i64() || v.is_u64(),
            FieldKind::Number => v.is_number(),
            FieldKind::Bool => v.is_boolean(),
            FieldKind::String => v.is_string(),
            FieldKind::Any => true,
        };
        if !type_ok {
            let want = match self.kind {
                FieldKind::Integer => "an integer",
                FieldKind::Number => "a number",
                FieldKind::Bool => "true or false",
                FieldKind::String => "a string",
                FieldKind::Any => "any value",
            };
            out.push(ConfigProblem::new(
                &self.name,
                format!("must be {want}, found {v}"),
            ));
            return;
        }
        if let Some(x) = v.as_f64() {
            if let Some(min) = self.min {
                if x < min {
                    out.push(ConfigProblem::new(
                        &self.name,
                        format!("{v} is below the minimum {min}"),
                    ));
                }
            }
            if let Some(max) = self.max {
                if x > max {
                    out.push(ConfigProblem::new(
                        &self.name,
                        format!("{v} is above the maximum {max}"),
                    ));
                }
            }
        }
        if let (Some(s), false) = (v.as_str(), self.choices.is_empty()) {
            if !self.choices.iter().any(|c| c == s) {
                out.push(ConfigProblem::new(
                    &self.name,
                    format!("{s:?} is not one of {}", self.choices.join(", ")),
                ));
            }
        }
    }
}

type TensorFn = dyn Fn(&Value) -> std::result::Result<Vec<ExpectedTensor>, String> + Send + Sync;

/// A declarative [`ConfigSchema`]: typed fields with ranges, and a function from a valid config
/// to the tensors its weights hold.
pub struct FieldSchema {
    model_type: String,
    fields: Vec<FieldSpec>,
    allow_unknown: bool,
    tensors: Box<TensorFn>,
}

impl FieldSchema {
    /// A schema for `model_type` with `fields`; unknown fields are allowed (configs carry
    /// extras such as `architectures`), see [`FieldSchema::deny_unknown`].
    pub fn new(
        model_type: &str,
        fields: Vec<FieldSpec>,
        tensors: impl Fn(&Value) -> std::result::Result<Vec<ExpectedTensor>, String>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        FieldSchema {
            model_type: model_type.into(),
            fields,
            allow_unknown: true,
            tensors: Box::new(tensors),
        }
    }

    /// Fields not listed (other than `model_type`) become problems.
    pub fn deny_unknown(mut self) -> Self {
        self.allow_unknown = false;
        self
    }
}

impl ConfigSchema for FieldSchema {
    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn validate(&self, config: &Value) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let Some(obj) = config.as_object() else {
            return vec![ConfigProblem::new("(config)", "must be a JSON object")];
        };
        for f in &self.fields {
            match obj.get(&f.name) {
                Some(v) => f.check(v, &mut out),
                None if f.required => out.push(ConfigProblem::new(&f.name, "is required")),
                None => {}
            }
        }
        if !self.allow_unknown {
            for k in obj.keys() {
                if k != "model_type" && !self.fields.iter().any(|f| &f.name == k) {
                    out.push(ConfigProblem::new(k, "is not a field of this model type"));
                }
            }
        }
        out
    }

    fn expected_tensors(&self, config: &Value) -> std::result::Result<Vec<ExpectedTensor>, String> {
        (self.tensors)(config)
    }

    fn field_names(&self) -> Vec<String> {
        self.fields.iter().map(|f| f.name.clone()).collect()
    }
}

/// One config file, as `config list --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigInfo {
    pub model: String,
    pub name: String,
    /// Relative to the root.
    pub path: String,
    pub model_type: Option<String>,
    /// Registered versions that use it.
    pub versions: Vec<String>,
}

/// The configs of a weights root.
#[derive(Debug, Clone)]
pub struct ConfigManager {
    pub(crate) wm: WeightManager,
    pub(crate) schemas: Schemas,
}

impl ConfigManager {
    pub fn new(wm: WeightManager, schemas: Schemas) -> Self {
        ConfigManager { wm, schemas }
    }

    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }

    /// `configs/<model>/<name>.json`.
    ///
    /// # Errors
    /// Invalid names.
    pub fn path(&self, model: &str, name: &str) -> Result<PathBuf> {
        validate_name("model", model)?;
        validate_name("config", name)?;
        Ok(self
            .wm
            .configs_dir()
            .join(model)
            .join(format!("{name}.json")))
    }

    /// Every config (of one model, or all), by model and name.
    ///
    /// # Errors
    /// An invalid model name; an unreadable folder or registry.
    pub fn list(&self, model: Option<&str>) -> Result<Vec<ConfigInfo>> {
        if let Some(m) = model {
            validate_name("model", m)?;
        }
        let reg = self.wm.registry()?;
        let models = match model {
            Some(m) => vec![m.to_string()],
            None => list_dirs(&self.wm.configs_dir())?,
        };
        let mut out = Vec::new();
        for m in models {
            for (file, _) in list_files(&self.wm.configs_dir().join(&m))? {
                let Some(name) = file.strip_suffix(".json") else {
                    continue;
                };
                if fsx::is_temp_name(&file) || !crate::names::is_valid_name(name) {
                    continue;
                }
                let model_type = self.show(&m, name).ok().and_then(|v| {
                    v.get("model_type")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
                let versions = reg
                    .models
                    .get(&m)
                    .map(|mr| {
                        mr.versions
                            .iter()
                            .filter(|(v, r)| match &r.config {
                                Some(c) => c == name,
                                None => v.as_str() == name,
                            })
                            .map(|(v, _)| v.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ConfigInfo {
                    path: format!("configs/{m}/{file}"),
                    model: m.clone(),
                    name: name.into(),
                    model_type,
                    versions,
                });
            }
        }
        Ok(out)
    }

    /// The config's JSON.
    ///
    /// # Errors
    /// A missing config; a file that is not JSON.
    pub fn show(&self, model: &str, name: &str) -> Result<Value> {
        let path = self.path(model, name)?;
        fsx::read_json(&path)?.ok_or_else(|| StoreError::UnknownConfig {
            path,
            model: model.into(),
            name: name.into(),
        })
    }

    /// The config a registered version belongs to: the one its entry names, else the config
    /// named like the version.
    ///
    /// # Errors
    /// An unknown version; no config for it.
    pub fn config_for_version(&self, model: &str, version: &str) -> Result<String> {
        let reg = self.wm.registry()?;
        let rec = crate::weights::find_version(&reg, model, version)?;
        if let Some(c) = &rec.config {
            return Ok(c.clone());
        }
        if self.path(model, version)?.is_file() {
            return Ok(version.into());
        }
        Err(StoreError::NoConfig {
            model: model.into(),
            version: version.into(),
        })
    }

    /// Writes a whole config (validated first). An existing one is replaced only with
    /// `force`, after a backup.
    ///
    /// # Errors
    /// An invalid config ([`StoreError::ConfigInvalid`], nothing written); an existing config
    /// without `force`; the lock.
    pub fn import(&self, model: &str, name: &str, config: &Value, force: bool) -> Result<()> {
        self.require_valid(model, name, config)?;
        self.write(
            model,
            name,
            config,
            force,
            "replaced by config import --force",
        )
    }

    /// [`ConfigManager::import`], unless the stored config already equals `config` (then
    /// nothing is written and no backup taken). Returns whether it wrote. For programs that
    /// store the config their weights come with (model creation, imports), so that running
    /// them again is harmless.
    ///
    /// # Errors
    /// As [`ConfigManager::import`].
    pub fn import_if_changed(
        &self,
        model: &str,
        name: &str,
        config: &Value,
        force: bool,
    ) -> Result<bool> {
        if matches!(self.show(model, name), Ok(existing) if existing == *config) {
            return Ok(false);
        }
        self.import(model, name, config, force)?;
        Ok(true)
    }

    /// Sets one field (a dotted path, `ssm.state_size`, creating objects on the way) and
    /// writes the config back if it is still valid. Returns the new config.
    ///
    /// # Errors
    /// A missing config; a path through a non-object; a config that the change makes invalid
    /// (nothing is written); the lock.
    pub fn set(&self, model: &str, name: &str, field: &str, value: Value) -> Result<Value> {
        let mut config = self.show(model, name)?;
        set_path(&mut config, field, value).map_err(|detail| StoreError::InvalidArgument {
            what: "field",
            value: field.into(),
            detail,
        })?;
        self.require_valid(model, name, &config)?;
        self.write(
            model,
            name,
            &config,
            true,
            &format!("changed by config set {field}"),
        )?;
        Ok(config)
    }

    pub(crate) fn write(
        &self,
        model: &str,
        name: &str,
        config: &Value,
        force: bool,
        reason: &str,
    ) -> Result<()> {
        let path = self.path(model, name)?;
        let lock = self.wm.lock()?;
        if path.exists() {
            if !force {
                return Err(StoreError::ConfigExists { path });
            }
            let spec = BackupSpec {
                model: Some(model.into()),
                ..BackupSpec::file(
                    BackupKind::Config,
                    &format!("configs/{model}/{name}.json"),
                    crate::weights::file_len(&path).unwrap_or(0),
                    reason.into(),
                )
            };
            self.wm.backup_locked(&lock, vec![spec])?;
        }
        let dir = self.wm.configs_dir().join(model);
        crate::fsx::create_dirs(&dir)?;
        fsx::write_json_pretty_atomic(&path, config)
    }

    /// The schema for a config of `model`: by its `"model_type"`, else by the model's name.
    pub fn schema_for(&self, model: &str, config: &Value) -> Option<&Arc<dyn ConfigSchema>> {
        match config.get("model_type").and_then(Value::as_str) {
            Some(t) => self.schemas.get(t),
            None => self.schemas.get(model),
        }
    }

    /// Problems with a config value (a JSON object is all that is required when no schema
    /// applies).
    pub fn validate_value(&self, model: &str, config: &Value) -> Vec<ConfigProblem> {
        if !config.is_object() {
            return vec![ConfigProblem::new("(config)", "must be a JSON object")];
        }
        match self.schema_for(model, config) {
            Some(s) => s.validate(config),
            None => match config.get("model_type").and_then(Value::as_str) {
                Some(t) => vec![ConfigProblem::new(
                    "model_type",
                    format!(
                        "unknown model type {t:?} (known: {})",
                        self.schemas.names().join(", ")
                    ),
                )],
                None => Vec::new(),
            },
        }
    }

    /// Fails with [`StoreError::ConfigInvalid`] (naming the config's file) when `config`, as
    /// `model`'s config `name`, has problems; returns the file's path otherwise.
    pub(crate) fn require_valid(&self, model: &str, name: &str, config: &Value) -> Result<PathBuf> {
        let path = self.path(model, name)?;
        let problems = self.validate_value(model, config);
        if problems.is_empty() {
            return Ok(path);
        }
        Err(StoreError::ConfigInvalid {
            path,
            problems: problems.iter().map(ToString::to_string).collect(),
        })
    }

    /// Problems with a stored config.
    ///
    /// # Errors
    /// A missing or unparsable config.
    pub fn validate(&self, model: &str, name: &str) -> Result<Vec<ConfigProblem>> {
        let v = self.show(model, name)?;
        Ok(self.validate_value(model, &v))
    }

    /// The tensors weights for a stored config must hold.
    ///
    /// # Errors
    /// A missing or invalid config; no schema for its model type.
    pub fn expected_tensors(&self, model: &str, name: &str) -> Result<Vec<ExpectedTensor>> {
        let config = self.show(model, name)?;
        let path = self.require_valid(model, name, &config)?;
        let schema = self
            .schema_for(model, &config)
            .ok_or_else(|| StoreError::NoSchema {
                model_type: config
                    .get("model_type")
                    .and_then(Value::as_str)
                    .unwrap_or(model)
                    .to_string(),
                known: self.schemas.names().join(", "),
            })?;
        schema
            .expected_tensors(&config)
            .map_err(|detail| StoreError::ConfigInvalid {
                path,
                problems: vec![detail],
            })
    }

    /// Checks weights against a stored config: every expected tensor present with the
    /// expected shape, nothing unexpected. Returns the problems (empty: the weights fit).
    ///
    /// # Errors
    /// As [`ConfigManager::expected_tensors`].
    pub fn check_weights(
        &self,
        model: &str,
        name: &str,
        weights: &dyn TensorSource,
    ) -> Result<Vec<ConfigProblem>> {
        let expected = self.expected_tensors(model, name)?;
        Ok(check_tensors(&expected, weights))
    }
}

/// Compares a source's tensors with the expected list.
pub fn check_tensors(
    expected: &[ExpectedTensor],
    weights: &dyn TensorSource,
) -> Vec<ConfigProblem> {
    let mut out = Vec::new();
    let have: BTreeMap<&str, &Vec<u64>> = weights
        .tensors()
        .iter()
        .map(|t| (t.name.as_str(), &t.shape))
        .collect();
    let mut want: BTreeMap<&str, &Vec<u64>> = BTreeMap::new();
    for e in expected {
        want.insert(e.name.as_str(), &e.shape);
        match have.get(e.name.as_str()) {
            None => out.push(ConfigProblem::new(
                &e.name,
                format!("missing (expected shape {:?})", e.shape),
            )),
            Some(s) if **s != e.shape => out.push(ConfigProblem::new(
                &e.name,
                format!("shape {s:?}, expected {:?}", e.shape),
            )),
            Some(_) => {}
        }
    }
    for (name, shape) in have {
        if !want.contains_key(name) {
            out.push(ConfigProblem::new(
                name,
                format!("unexpected tensor (shape {shape:?})"),
            ));
        }
    }
    out
}

/// Sets `value` at dotted `path` inside `root`, creating objects as needed.
pub(crate) fn set_path(
    root: &mut Value,
    path: &str,
    value: Value,
) -> std::result::Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err("empty component in the field path".into());
    }
    let Some((last, parents)) = parts.split_last() else {
        return Err("empty field path".into());
    };
    let mut cur = root;
    for (i, p) in parents.iter().enumerate() {
        let obj = cur
            .as_object_mut()
            .ok_or_else(|| format!("{} is not an object", parents[..i].join(".")))?;
        cur = obj
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let obj = cur.as_object_mut().ok_or_else(|| {
        if parents.is_empty() {
            "the config is not an object".to_string()
        } else {
            format!("{} is not an object", parents.join("."))
        }
    })?;
    obj.insert(last.to_string(), value);
    Ok(())
}

/// Reads a value as people type it on a command line: JSON when it parses (`4`, `true`,
/// `[1,2]`, `"x"`), else the plain string.
pub fn parse_value(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_dotted_paths() {
        let mut v = json!({"a": 1, "b": {"c": 2}});
        set_path(&mut v, "b.c", json!(3)).unwrap();
        set_path(&mut v, "d.e", json!("x")).unwrap();
        assert_eq!(v, json!({"a": 1, "b": {"c": 3}, "d": {"e": "x"}}));
        assert!(set_path(&mut v, "a.x", json!(1))
            .unwrap_err()
            .contains("a is not an object"));
        assert!(set_path(&mut v, "a..b", json!(1)).is_err());
        assert_eq!(parse_value("4"), json!(4));
        assert_eq!(parse_value("silu"), json!("silu"));
    }

    #[test]
    fn field_specs_check_types_and_ranges() {
        let s = FieldSchema::new(
            "toy",
            vec![
                FieldSpec::integer("dim").range(1.0, 64.0),
                FieldSpec::string("act").choices(&["silu", "gelu"]),
                FieldSpec::boolean("bias").optional(),
            ],
            |_| Ok(Vec::new()),
        )
        .deny_unknown();
        assert!(s.validate(&json!({"dim": 8, "act": "silu"})).is_empty());
        let p = s.validate(&json!({"dim": 0.5, "act": "relu", "extra": 1}));
        let whats: Vec<&str> = p.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(whats, vec!["dim", "act", "extra"]);
        let p = s.validate(&json!({"dim": 65, "act": "gelu", "bias": 1}));
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].message.contains("above the maximum"));
        assert_eq!(s.validate(&json!({}))[0].message, "is required");
    }
}
