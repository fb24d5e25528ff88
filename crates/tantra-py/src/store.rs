//! `_WeightManager` and `_ConfigManager`: the weights root from Python.
//!
//! Thin: every method validates nothing itself, calls the store with the GIL released, and
//! returns the store's reports as the JSON the CLI's `--json` prints, parsed into Python dicts
//! (the reports are `Serialize`). Loading hands back a `_File` opened only after the store
//! checked the file's size and sha256 against the registry.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use tantra_formats::{MemorySource, NoProgress, OutputFormat, TensorInfo};
use tantra_store::{
    CleanupOptions, ConfigManager, ListFilter, MetricMode, PruneRule, RegisterOptions,
    RemoveOptions, VerifyScope, WeightManager,
};

use crate::errors::store_err;
use crate::file::File;
use crate::write::value_from_py;

/// Any report as Python data, through its JSON form.
pub fn to_py<T: serde::Serialize>(py: Python<'_>, v: &T) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(v)
        .map_err(|e| PyValueError::new_err(format!("report to JSON: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

fn format_opt(f: Option<&str>) -> PyResult<Option<OutputFormat>> {
    f.map(|s| s.parse().map_err(PyValueError::new_err))
        .transpose()
}

/// The weights root: `root`, else `TANTRA_ROOT`, else `./Model`.
pub fn root_path(root: Option<PathBuf>) -> PathBuf {
    root.or_else(|| std::env::var_os("TANTRA_ROOT").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("Model"))
}

/// The compiled half of `tantra.WeightManager` (see its docs in `tantra/_store.py`).
#[pyclass(frozen, module = "tantra._tantra", name = "_WeightManager")]
pub struct Store {
    pub(crate) wm: WeightManager,
}

#[pymethods]
impl Store {
    #[new]
    #[pyo3(signature = (root=None))]
    fn new(py: Python<'_>, root: Option<PathBuf>) -> PyResult<Self> {
        let root = root_path(root);
        let wm = py
            .detach(|| WeightManager::open(root))
            .map_err(store_err)?
            .with_command("python");
        Ok(Store { wm })
    }

    #[getter]
    fn root(&self) -> PathBuf {
        self.wm.root().to_path_buf()
    }

    #[pyo3(signature = (path, model, version, *, formats=None, default=false, force=false, tags=None, note=None, config=None))]
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        py: Python<'_>,
        path: PathBuf,
        model: &str,
        version: &str,
        formats: Option<Vec<String>>,
        default: bool,
        force: bool,
        tags: Option<Vec<String>>,
        note: Option<String>,
        config: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let formats = match formats {
            Some(f) => f
                .iter()
                .map(|s| s.parse().map_err(PyValueError::new_err))
                .collect::<PyResult<Vec<OutputFormat>>>()?,
            None => Vec::new(),
        };
        let opts = RegisterOptions {
            formats,
            make_default: default,
            force,
            tags: tags.unwrap_or_default(),
            note,
            config,
            reason: None,
        };
        let r = py
            .detach(|| self.wm.register(&path, model, version, &opts, &NoProgress))
            .map_err(store_err)?;
        to_py(py, &r)
    }

    /// Opens the registered file after checking its size and sha256: `(file, info)`.
    #[pyo3(signature = (model, version=None, format=None))]
    fn load(
        &self,
        py: Python<'_>,
        model: &str,
        version: Option<&str>,
        format: Option<&str>,
    ) -> PyResult<(File, Py<PyAny>)> {
        let format = format_opt(format)?;
        let loaded = py
            .detach(|| self.wm.load_model_weights(model, version, format))
            .map_err(store_err)?;
        let info = PyDict::new(py);
        info.set_item("model", &loaded.model)?;
        info.set_item("version", &loaded.version)?;
        info.set_item("format", loaded.format.name())?;
        info.set_item("path", loaded.path.display().to_string())?;
        info.set_item("sha256", &loaded.record.sha256)?;
        let file = File::from_source(py, loaded.path.clone(), loaded.source)?;
        Ok((file, info.into_any().unbind()))
    }

    fn versions(&self, py: Python<'_>, model: &str) -> PyResult<Py<PyAny>> {
        let v = py.detach(|| self.wm.versions(model)).map_err(store_err)?;
        to_py(py, &v)
    }

    #[pyo3(signature = (model=None, format=None))]
    fn list_weights(
        &self,
        py: Python<'_>,
        model: Option<String>,
        format: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let filter = ListFilter {
            model,
            format: format_opt(format)?,
        };
        let v = py.detach(|| self.wm.list(&filter)).map_err(store_err)?;
        to_py(py, &v)
    }

    fn set_default(&self, py: Python<'_>, model: &str, version: &str) -> PyResult<()> {
        py.detach(|| self.wm.set_default(model, version))
            .map_err(store_err)
    }

    #[pyo3(signature = (model, version, tag, *, remove=false))]
    fn tag(
        &self,
        py: Python<'_>,
        model: &str,
        version: &str,
        tag: &str,
        remove: bool,
    ) -> PyResult<()> {
        py.detach(|| self.wm.tag(model, version, tag, remove))
            .map_err(store_err)
    }

    #[pyo3(signature = (model, version, *, format=None, force=false, backup=true, dry_run=false))]
    #[allow(clippy::too_many_arguments)]
    fn remove(
        &self,
        py: Python<'_>,
        model: &str,
        version: &str,
        format: Option<&str>,
        force: bool,
        backup: bool,
        dry_run: bool,
    ) -> PyResult<Py<PyAny>> {
        let opts = RemoveOptions {
            format: format_opt(format)?,
            force,
            no_backup: !backup,
            dry_run,
        };
        let r = py
            .detach(|| self.wm.remove_with(model, version, &opts))
            .map_err(store_err)?;
        to_py(py, &r)
    }

    fn backups(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let b = py.detach(|| self.wm.backups()).map_err(store_err)?;
        to_py(py, &b)
    }

    fn restore(&self, py: Python<'_>, id: &str) -> PyResult<Py<PyAny>> {
        let r = py
            .detach(|| self.wm.restore(id, &NoProgress))
            .map_err(store_err)?;
        to_py(py, &r)
    }

    #[pyo3(signature = (scope=None))]
    fn verify(&self, py: Python<'_>, scope: Option<&str>) -> PyResult<Py<PyAny>> {
        let scope = match scope {
            Some(s) => VerifyScope::parse(s).map_err(store_err)?,
            None => VerifyScope::default(),
        };
        let r = py
            .detach(|| self.wm.verify(&scope, &NoProgress))
            .map_err(store_err)?;
        to_py(py, &r)
    }

    #[pyo3(signature = (*, keep_versions=None, model=None, orphans=false, dry_run=false, backup=true))]
    fn cleanup(
        &self,
        py: Python<'_>,
        keep_versions: Option<usize>,
        model: Option<String>,
        orphans: bool,
        dry_run: bool,
        backup: bool,
    ) -> PyResult<Py<PyAny>> {
        let opts = CleanupOptions {
            keep_versions,
            model,
            backups_older_than: None,
            orphans,
            dry_run,
            no_backup: !backup,
        };
        let r = py.detach(|| self.wm.cleanup(&opts)).map_err(store_err)?;
        to_py(py, &r)
    }

    /// Saves tensors handed over as raw bytes (see `tantra._files`) as a checkpoint.
    #[pyo3(signature = (model, step, tensors, values, metrics, format="safetensors", force=false, structure=None))]
    #[allow(clippy::too_many_arguments)]
    fn save_checkpoint(
        &self,
        py: Python<'_>,
        model: &str,
        step: u64,
        tensors: Vec<(String, String, Vec<u64>, numpy::PyReadonlyArray1<'_, u8>)>,
        values: &Bound<'_, PyDict>,
        metrics: BTreeMap<String, f64>,
        format: &str,
        force: bool,
        structure: Option<&str>,
    ) -> PyResult<Py<PyAny>> {
        let format: OutputFormat = format.parse().map_err(PyValueError::new_err)?;
        let mut src = MemorySource::new();
        for (name, dtype, shape, bytes) in &tensors {
            let dtype = dtype
                .parse()
                .map_err(|e: tantra_formats::dtype::UnknownDType| {
                    PyValueError::new_err(e.to_string())
                })?;
            let data = bytes
                .as_slice()
                .map_err(|_| PyValueError::new_err(format!("tensor {name:?}: not contiguous")))?
                .to_vec();
            src.push(TensorInfo::new(name.clone(), dtype, shape.clone()), data)
                .map_err(crate::errors::format_err)?;
        }
        for (k, v) in values.iter() {
            let k: String = k.extract()?;
            let v = value_from_py(&k, &v)?;
            src.values_mut().insert(k, v);
        }
        if let Some(s) = structure {
            let s = tantra_formats::Structure::from_json_str(s)
                .map_err(|e| PyValueError::new_err(format!("structure: {e}")))?;
            if !s.is_flat() && s.fits(&src) {
                src.set_structure(Some(s));
            }
        }
        let r = py
            .detach(|| {
                self.wm
                    .save_checkpoint(model, step, &metrics, &src, format, force, &NoProgress)
            })
            .map_err(store_err)?;
        to_py(py, &r)
    }

    fn list_checkpoints(&self, py: Python<'_>, model: &str) -> PyResult<Py<PyAny>> {
        let r = py
            .detach(|| self.wm.checkpoints(model))
            .map_err(store_err)?;
        to_py(py, &r)
    }

    #[pyo3(signature = (model, *, keep_last=0, keep_best=0, metric=None, mode="min", dry_run=false, backup=true))]
    #[allow(clippy::too_many_arguments)]
    fn prune_checkpoints(
        &self,
        py: Python<'_>,
        model: &str,
        keep_last: usize,
        keep_best: usize,
        metric: Option<String>,
        mode: &str,
        dry_run: bool,
        backup: bool,
    ) -> PyResult<Py<PyAny>> {
        let mode = match mode {
            "min" => MetricMode::Min,
            "max" => MetricMode::Max,
            other => {
                return Err(PyValueError::new_err(format!(
                    "mode must be \"min\" or \"max\", not {other:?}"
                )))
            }
        };
        let rule = PruneRule {
            keep_last,
            keep_best,
            metric,
            mode,
        };
        let r = py
            .detach(|| self.wm.prune_checkpoints(model, &rule, dry_run, backup))
            .map_err(store_err)?;
        to_py(py, &r)
    }

    #[pyo3(signature = (model, step, version, *, default=false))]
    fn promote(
        &self,
        py: Python<'_>,
        model: &str,
        step: u64,
        version: &str,
        default: bool,
    ) -> PyResult<Py<PyAny>> {
        let opts = RegisterOptions {
            make_default: default,
            ..RegisterOptions::default()
        };
        let r = py
            .detach(|| {
                self.wm
                    .promote_checkpoint(model, step, version, &opts, &NoProgress)
            })
            .map_err(store_err)?;
        to_py(py, &r)
    }
}

/// The compiled half of `tantra.ConfigManager`: model configurations under `configs/`.
#[pyclass(frozen, module = "tantra._tantra", name = "_ConfigManager")]
pub struct Configs {
    cm: ConfigManager,
}

#[pymethods]
impl Configs {
    #[new]
    #[pyo3(signature = (root=None))]
    fn new(py: Python<'_>, root: Option<PathBuf>) -> PyResult<Self> {
        let root = root_path(root);
        let wm = py
            .detach(|| WeightManager::open(root))
            .map_err(store_err)?
            .with_command("python");
        Ok(Configs {
            cm: ConfigManager::new(wm, tantra_models::schema::schemas()),
        })
    }

    #[pyo3(signature = (model=None))]
    fn list(&self, py: Python<'_>, model: Option<&str>) -> PyResult<Py<PyAny>> {
        let r = py.detach(|| self.cm.list(model)).map_err(store_err)?;
        to_py(py, &r)
    }

    /// The config `name` of `model` as JSON text.
    fn show(&self, py: Python<'_>, model: &str, name: &str) -> PyResult<String> {
        let v = py.detach(|| self.cm.show(model, name)).map_err(store_err)?;
        Ok(v.to_string())
    }

    /// Stores `config` (JSON text) as `name` of `model`, validated against its schema.
    #[pyo3(signature = (model, name, config, *, force=false))]
    fn import_config(
        &self,
        py: Python<'_>,
        model: &str,
        name: &str,
        config: &str,
        force: bool,
    ) -> PyResult<()> {
        let v: serde_json::Value = serde_json::from_str(config)
            .map_err(|e| crate::errors::ConfigError::new_err(format!("config is not JSON: {e}")))?;
        py.detach(|| self.cm.import(model, name, &v, force))
            .map_err(store_err)
    }

    /// Sets `field` (a dotted path) of config `name` to `value` (JSON text); returns the config.
    fn set(
        &self,
        py: Python<'_>,
        model: &str,
        name: &str,
        field: &str,
        value: &str,
    ) -> PyResult<String> {
        let v: serde_json::Value = serde_json::from_str(value)
            .map_err(|e| crate::errors::ConfigError::new_err(format!("value is not JSON: {e}")))?;
        let out = py
            .detach(|| self.cm.set(model, name, field, v))
            .map_err(store_err)?;
        Ok(out.to_string())
    }

    /// Problems of config `name` against its schema (empty when valid).
    fn validate(&self, py: Python<'_>, model: &str, name: &str) -> PyResult<Py<PyAny>> {
        let r = py
            .detach(|| self.cm.validate(model, name))
            .map_err(store_err)?;
        to_py(py, &r)
    }
}
