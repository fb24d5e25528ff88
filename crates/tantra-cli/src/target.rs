//! How the commands read `MODEL[:VERSION]` and `FILE-or-MODEL[:VERSION]` arguments.
//!
//! One grammar for the whole command line: `mamba` (the default version), `mamba:full`, and
//! `mamba:golden` (the version tagged `golden`; the store resolves tags). The older spelling
//! with the version as a second positional (`tantra set-default mamba full`) is still read
//! here, so that scripts written for it keep working. The file commands (`inspect`, `convert`,
//! `diff`, `scan`, `run --weights`) take either a path or a registered version.

use std::path::{Path, PathBuf};

use anyhow::bail;
use tantra_store::{ModelRef, WeightManager};

/// `MODEL[:VERSION]`, or the old `MODEL VERSION` (`second`); both at once is an error.
pub fn model_ref(first: &str, second: Option<&str>) -> anyhow::Result<ModelRef> {
    let mut r = ModelRef::parse(first)?;
    if let Some(v) = second {
        if r.version.is_some() {
            bail!("{first} already names a version; give either MODEL:VERSION or MODEL VERSION, not both");
        }
        tantra_store::validate_name("version", v)?;
        r.version = Some(v.to_string());
    }
    Ok(r)
}

/// [`model_ref`] where a version is required (`register`, `remove`, `cp`).
pub fn versioned(first: &str, second: Option<&str>, command: &str) -> anyhow::Result<ModelRef> {
    let r = model_ref(first, second)?;
    if r.version.is_none() {
        bail!(
            "{command} needs a version: write {}:VERSION (see `tantra versions {}`)",
            r.model,
            r.model
        );
    }
    Ok(r)
}

/// The weight file a file command means by `spec`: a path, or a registered
/// `MODEL[:VERSION]` (its best format: safetensors, then pt, bin, gguf, as the runtimes load).
///
/// A spec with a `/` or one that cannot be a name is a path. A bare word that is both an
/// existing file and a registered model is refused as ambiguous (`./NAME` is the file). A
/// word that is neither says so, listing the known models.
pub fn weight_file(spec: &str, root: &Path) -> anyhow::Result<PathBuf> {
    let path = Path::new(spec);
    let Ok(r) = ModelRef::parse(spec) else {
        return Ok(path.to_path_buf());
    };
    let exists = path.exists();
    let wm = WeightManager::open(root)?;
    let reg = match wm.registry() {
        Ok(reg) => reg,
        Err(_) if exists => return Ok(path.to_path_buf()),
        Err(e) => return Err(e.into()),
    };
    let registered = reg.models.contains_key(&r.model);
    match (exists, registered) {
        (true, false) => Ok(path.to_path_buf()),
        (true, true) => bail!(
            "{spec:?} is ambiguous: it is a file here and a model registered in {}; write ./{spec} for the file, or rename it",
            root.display()
        ),
        (false, true) => Ok(wm.resolve(&r.model, r.version.as_deref(), None)?.path),
        // `x.pt` or `model.safetensors` is a file name: let the reader say it is missing.
        (false, false) if r.version.is_none() && spec.contains('.') => Ok(path.to_path_buf()),
        (false, false) => {
            let known: Vec<&str> = reg.models.keys().map(String::as_str).collect();
            bail!(
                "{spec}: no such file, and no model {:?} registered in {} (known models: {})",
                r.model,
                root.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )
        }
    }
}

/// [`weight_file`] for an argument clap parsed as a path.
pub fn weight_path(p: &Path, root: &Path) -> anyhow::Result<PathBuf> {
    match p.to_str() {
        Some(s) => weight_file(s, root),
        None => Ok(p.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_and_new_spellings() {
        let r = model_ref("mamba:full", None).unwrap();
        assert_eq!(r.version.as_deref(), Some("full"));
        let r = model_ref("mamba", Some("full")).unwrap();
        assert_eq!(r.to_string(), "mamba:full");
        assert!(model_ref("mamba:full", Some("x")).is_err());
        assert!(versioned("mamba", None, "remove").is_err());
        assert!(model_ref("mamba", Some("../x")).is_err());
    }
}
