//! Remotes from Python: `WeightManager.push`, `pull`, `remote_versions` and the remote
//! definitions (`add_remote`, `remotes`, `remove_remote`).
//!
//! Free functions over the compiled `_WeightManager` rather than more methods on it, so that the
//! store's class stays one `#[pymethods]` block; `tantra/_store.py` shapes them into methods.
//! Each call connects with the same definitions (`remotes.json`) and credentials (AWS
//! environment variables, `~/.aws/credentials` profiles) as the `tantra` command, releases the
//! GIL for the transfer, and returns the report the command's `--json` prints.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tantra_formats::{NoProgress, OutputFormat};
use tantra_remote::client::Client;
use tantra_remote::config::{RemoteDef, Remotes};
use tantra_remote::listing::list_remote;
use tantra_remote::pull::{pull, PullOptions};
use tantra_remote::push::{push, PushOptions};
use tantra_store::ModelRef;

use crate::errors::{remote_err, store_err};
use crate::store::{to_py, Store};

fn formats(f: Option<Vec<String>>) -> PyResult<Vec<OutputFormat>> {
    f.unwrap_or_default()
        .iter()
        .map(|s| s.parse().map_err(PyValueError::new_err))
        .collect()
}

/// `model` may be `MODEL[:VERSION]`; an explicit `version` must not contradict it.
fn target(model: &str, version: Option<&str>) -> PyResult<ModelRef> {
    let mut r = ModelRef::parse(model).map_err(store_err)?;
    if let Some(v) = version {
        match &r.version {
            Some(w) if w != v => {
                return Err(PyValueError::new_err(format!(
                    "{model:?} names version {w:?} but version={v:?} was given"
                )))
            }
            _ => r.version = Some(v.to_string()),
        }
    }
    Ok(r)
}

/// Connects to `remote` (the default or only one when `None`) of `store`'s root.
fn connect(store: &Store, remote: Option<&str>) -> PyResult<Client> {
    let (name, def) = Remotes::load(store.wm.root())
        .and_then(|r| r.get(remote))
        .map_err(remote_err)?;
    Client::connect(&name, &def).map_err(remote_err)
}

#[pyfunction]
#[pyo3(signature = (store, model, version=None, *, remote=None, formats=None))]
pub fn _push(
    py: Python<'_>,
    store: &Store,
    model: &str,
    version: Option<&str>,
    remote: Option<&str>,
    formats: Option<Vec<String>>,
) -> PyResult<Py<PyAny>> {
    let t = target(model, version)?;
    let opts = PushOptions {
        formats: self::formats(formats)?,
    };
    let r = py.detach(|| {
        let client = connect(store, remote)?;
        push(
            &client,
            &store.wm,
            &t.model,
            t.version.as_deref(),
            &opts,
            &NoProgress,
        )
        .map_err(remote_err)
    })?;
    to_py(py, &r)
}

#[pyfunction]
#[pyo3(signature = (store, model, version=None, *, remote=None, formats=None, default=false))]
pub fn _pull(
    py: Python<'_>,
    store: &Store,
    model: &str,
    version: Option<&str>,
    remote: Option<&str>,
    formats: Option<Vec<String>>,
    default: bool,
) -> PyResult<Py<PyAny>> {
    let t = target(model, version)?;
    let opts = PullOptions {
        formats: self::formats(formats)?,
        make_default: default,
    };
    let r = py.detach(|| {
        let client = connect(store, remote)?;
        pull(
            &client,
            &store.wm,
            &t.model,
            t.version.as_deref(),
            &opts,
            &NoProgress,
        )
        .map_err(remote_err)
    })?;
    to_py(py, &r)
}

#[pyfunction]
#[pyo3(signature = (store, remote=None, model=None))]
pub fn _remote_versions(
    py: Python<'_>,
    store: &Store,
    remote: Option<&str>,
    model: Option<&str>,
) -> PyResult<Py<PyAny>> {
    let r = py.detach(|| {
        let client = connect(store, remote)?;
        list_remote(&client, &store.wm, model).map_err(remote_err)
    })?;
    to_py(py, &r)
}

#[pyfunction]
pub fn _remotes(py: Python<'_>, store: &Store) -> PyResult<Py<PyAny>> {
    let r = Remotes::load(store.wm.root()).map_err(remote_err)?;
    to_py(py, &r)
}

#[pyfunction]
#[pyo3(signature = (store, name, url, *, endpoint=None, region=None, profile=None, default=false))]
#[allow(clippy::too_many_arguments)]
pub fn _add_remote(
    store: &Store,
    name: &str,
    url: &str,
    endpoint: Option<String>,
    region: Option<String>,
    profile: Option<String>,
    default: bool,
) -> PyResult<()> {
    let mut def = RemoteDef::from_url(url).map_err(remote_err)?;
    def.endpoint = endpoint;
    def.region = region;
    def.profile = profile;
    let root = store.wm.root();
    let mut remotes = Remotes::load(root).map_err(remote_err)?;
    remotes.add(name, def, default).map_err(remote_err)?;
    remotes.save(root).map_err(remote_err)
}

#[pyfunction]
pub fn _remove_remote(store: &Store, name: &str) -> PyResult<()> {
    let root = store.wm.root();
    let mut remotes = Remotes::load(root).map_err(remote_err)?;
    remotes.remove(name).map_err(remote_err)?;
    remotes.save(root).map_err(remote_err)
}
