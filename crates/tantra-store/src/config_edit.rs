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
        self.commit_edit(model, name, &old, &config, force, &format!("set {field}"))?;
        Ok(config)
    }

    /// Removes one field (a dotted path) of config `name`, with the checks of
    /// [`ConfigManager::set_checked`] (a required field cannot go: the config would be invalid).
    ///
    /// # Errors
    /// A field the config does not have; as [`ConfigManager::set_checked`].
    pub fn unset(&self, model: &str, name: &str, field: &str, force: bool) -> Result<Value> {
        let old = self.show(model, name)?;
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

    /// Refuses a top-level key that is neither a schema field nor already in the config.
    fn check_key(&self, model: &str, name: &str, config: &Value, field: &str) -> Result<()> {
        let key = field.split('.').next().unwrap_or(field);
        if key == "model_type" || config.get(key).is_some() {
            return Ok(());
        }
        let Some(schema) = self.schema_for(model, config) else {
            return Ok(());
        };
        let known = schema.field_names();
        if known.is_empty() || known.iter().any(|k| k == key) {
            return Ok(());
        }
        let best = known
            .iter()
            .map(|k| (edit_distance(key, k), k))
            .min()
            .filter(|(d, k)| *d <= 2.max(k.len() / 4));
        Err(StoreError::UnknownField {
            path: self.path(model, name)?,
            field: field.into(),
            model_type: schema.model_type().into(),
            suggestion: match best {
                Some((_, k)) => format!(" (did you mean {k:?}?)"),
                None => format!(" (its fields: {})", known.join(", ")),
            },
        })
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
            Ok(p) => format!("{} has no such field", p.display()),
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
