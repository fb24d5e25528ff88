//! Edits of a stored config that are refused when they are mistakes: a key the architecture
//! does not have (with a did-you-mean), a value of the wrong type or out of range (the
//! schema's validation), and a change after which registered weights no longer fit the config
//! (which would otherwise surface later as "tensor ... is missing" in `run`), unless forced.

use serde_json::Value;

use crate::config::{set_path, ConfigManager};
use crate::content::TensorTable;
use crate::error::{Result, StoreError};

impl ConfigManager {
    /// Sets one field (a dotted path) of config `name`, checked: the top-level key must be a
    /// field of the architecture's schema (or already in the config), the config must stay
    /// valid, and the registered versions that use this config must still fit it unless
    /// `force`. Returns the new config.
    ///
    /// # Errors
    /// [`StoreError::UnknownField`] (with a suggestion), [`StoreError::ConfigInvalid`],
    /// [`StoreError::ConfigBreaksWeights`]; a missing config; the lock. Nothing is written on
    /// error.
    pub fn set_checked(
        &self,
        model: &str,
        name: &str,
        field: &str,
        value: Value,
        force: bool,
    ) -> Result<Value> {
        let old = self.show(model, name)?;
        self.check_key(model, name, &old, field)?;
        let mut config = old.clone();
        set_path(&mut config, field, value).map_err(|detail| StoreError::InvalidArgument {
            what: "field",
            value: field.into(),
            detail,
        })?;
        if let Err(e) = self.require_valid(model, name, &config) {
            return Err(self
                .wrong_kind(model, name, &old, field, &config)
                .unwrap_or(e));
        }
        self.commit_edit(model, name, &old, &config, force, &format!("set {field}"))?;
        Ok(config)
    }

    /// When a set made the config invalid and the new value is of another JSON kind than the
    /// schema's example of that field, an error that names the field and the kind it takes
    /// (the architecture's own message for a nested type error often names neither).
    fn wrong_kind(
        &self,
        model: &str,
        name: &str,
        old: &Value,
        field: &str,
        new: &Value,
    ) -> Option<StoreError> {
        let schema = self.schema_for(model, old)?;
        let mut example = schema.template();
        let mut value = new;
        for part in field.split('.') {
            example = example.get(part)?.clone();
            value = value.get(part)?;
        }
        let (want, got) = (json_kind(&example), json_kind(value));
        if want == got || example.is_null() {
            return None;
        }
        let like = match example {
            Value::Object(_) | Value::Array(_) => String::new(),
            e => format!(" (like {e})"),
        };
        Some(StoreError::ConfigInvalid {
            path: self.path(model, name).ok()?,
            problems: vec![format!(
                "{field} takes a {want}{like}, not the {got} {value}"
            )],
        })
    }

    /// Removes one field (a dotted path) of config `name`, with the checks of
    /// [`ConfigManager::set_checked`] (a required field cannot go: the config would be invalid).
    ///
    /// # Errors
    /// A field the config does not have; as [`ConfigManager::set_checked`].
    pub fn unset(&self, model: &str, name: &str, field: &str, force: bool) -> Result<Value> {
        let old = self.show(model, name)?;
        // A misspelled field is named as such, with a suggestion, before "not set".
        self.check_key(model, name, &old, field)?;
        let mut config = old.clone();
        let (parents, last) = match field.rsplit_once('.') {
            Some((p, l)) => (Some(p), l),
            None => (None, field),
        };
        let mut cur = &mut config;
        for p in parents.into_iter().flat_map(|p| p.split('.')) {
            cur = cur
                .get_mut(p)
                .ok_or_else(|| no_field(self, model, name, field))?;
        }
        let removed = cur.as_object_mut().and_then(|o| o.remove(last));
        if removed.is_none() {
            return Err(no_field(self, model, name, field));
        }
        self.commit_edit(model, name, &old, &config, force, &format!("unset {field}"))?;
        Ok(config)
    }

    /// Refuses a dotted field that the architecture does not have, checked at every level
    /// against the schema's [`template`](crate::ConfigSchema::template): each component must
    /// be a field of the object above it in the template, or already be in the config (a
    /// field kept from another tool). The suggestion is the closest field at the level that
    /// failed, or the list of that level's fields.
    fn check_key(&self, model: &str, name: &str, config: &Value, field: &str) -> Result<()> {
        if field == "model_type" {
            return Ok(());
        }
        let Some(schema) = self.schema_for(model, config) else {
            return Ok(());
        };
        let path = self.path(model, name)?;
        let mut template = Some(schema.template());
        let mut current = Some(config);
        let parts: Vec<&str> = field.split('.').collect();
        for (i, part) in parts.iter().enumerate() {
            let t = template.as_ref();
            let have = current.and_then(|c| c.get(part));
            let known = t.and_then(|t| t.get(part));
            let unknown = |suggestion: String| StoreError::UnknownField {
                path: path.clone(),
                field: field.into(),
                model_type: schema.model_type().into(),
                suggestion,
            };
            match (t, known, have) {
                // Nothing described here (no schema, a null leaf): anything goes below.
                (None | Some(Value::Null), None, _) => return Ok(()),
                (Some(Value::Object(fields)), None, None) => {
                    let prefix = parts[..i].join(".");
                    let full = |k: &str| {
                        if prefix.is_empty() {
                            k.to_string()
                        } else {
                            format!("{prefix}.{k}")
                        }
                    };
                    let best = fields
                        .keys()
                        .map(|k| (edit_distance(part, k), k))
                        .min()
                        .filter(|(d, k)| *d <= 2.max(k.len() / 4));
                    let names: Vec<String> = fields.keys().map(|k| full(k)).collect();
                    return Err(unknown(match best {
                        Some((_, k)) => format!(" (did you mean {:?}?)", full(k)),
                        None => format!(" (its fields: {})", names.join(", ")),
                    }));
                }
                (Some(leaf), None, None) => {
                    return Err(unknown(format!(
                        " ({} is a {}, not a group of fields)",
                        parts[..i].join("."),
                        json_kind(leaf)
                    )));
                }
                // In the config but not the schema: kept from another tool, accepted as is.
                (_, None, Some(_)) => return Ok(()),
                (_, Some(_), _) => {}
            }
            template = known.cloned();
            current = have;
        }
        Ok(())
    }

    /// Validates `new`, refuses it when registered weights that fit `old` would not fit it
    /// (unless `force`), and writes it (the old file is backed up).
    fn commit_edit(
        &self,
        model: &str,
        name: &str,
        old: &Value,
        new: &Value,
        force: bool,
        what: &str,
    ) -> Result<()> {
        let path = self.require_valid(model, name, new)?;
        if !force {
            if let Some(schema) = self.schema_for(model, new) {
                let mut broken = Vec::new();
                let mut detail = String::new();
                for version in self.versions_using(model, name)? {
                    let table = self.wm.tensor_digests(model, &version)?;
                    let fits = |c: &Value| {
                        schema
                            .expected_tensors(c)
                            .map(|e| mismatch(&e, &table))
                            .unwrap_or_else(Some)
                    };
                    if fits(old).is_none() {
                        if let Some(d) = fits(new) {
                            if detail.is_empty() {
                                detail = d;
                            }
                            broken.push(format!("{model}:{version}"));
                        }
                    }
                }
                if !broken.is_empty() {
                    return Err(StoreError::ConfigBreaksWeights {
                        path,
                        versions: broken.join(", "),
                        detail,
                    });
                }
            }
        }
        self.write(model, name, new, true, &format!("changed by config {what}"))
    }

    /// The registered versions of `model` whose config is `name`.
    fn versions_using(&self, model: &str, name: &str) -> Result<Vec<String>> {
        let reg = self.wm.registry()?;
        let Some(m) = reg.models.get(model) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for v in m.versions.keys() {
            match self.config_for_version(model, v) {
                Ok(c) if c == name => out.push(v.clone()),
                Ok(_) | Err(StoreError::NoConfig { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

fn no_field(cm: &ConfigManager, model: &str, name: &str, field: &str) -> StoreError {
    StoreError::InvalidArgument {
        what: "field",
        value: field.into(),
        detail: match cm.path(model, name) {
            Ok(p) => format!("{} does not set it (its default applies)", p.display()),
            Err(_) => "no such field".into(),
        },
    }
}

/// The first way `table` fails the expected tensors, if any.
fn mismatch(expected: &[crate::config::ExpectedTensor], table: &TensorTable) -> Option<String> {
    for e in expected {
        match table.tensors.iter().find(|t| t.name == e.name) {
            None => return Some(format!("tensor {} would be missing", e.name)),
            Some(t) if t.shape != e.shape => {
                return Some(format!(
                    "tensor {} has shape {:?}, the config would want {:?}",
                    e.name, t.shape, e.shape
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(t) = table
        .tensors
        .iter()
        .find(|t| !expected.iter().any(|e| e.name == t.name))
    {
        return Some(format!("tensor {} would be unexpected", t.name));
    }
    None
}

/// "number", "string", ... for messages about a JSON value.
fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "group of fields",
    }
}

/// Levenshtein distance, for did-you-mean suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("hidden_sise", "hidden_size"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("state_size", "state_size"), 0);
    }
}
