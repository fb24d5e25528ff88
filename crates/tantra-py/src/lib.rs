//! `tantra._tantra`: the compiled half of the `tantra` Python package.
//!
//! The Rust crates do the work (parsing, writing, hashing, the store, the runtimes); this crate
//! only moves data across the boundary, releases the GIL around anything long, and turns errors
//! into the exceptions of [`errors`]. What Python users call (`tantra.load`, `safe_open`,
//! `WeightManager`, ...) is shaped in `python/tantra/`, which builds NumPy arrays and torch
//! tensors from the raw bytes handed out here.

mod errors;
mod file;
mod remote;
mod runtime;
mod store;
mod tools;
mod vision;
mod write;

use pyo3::prelude::*;

#[pymodule]
mod _tantra {
    use pyo3::prelude::*;

    #[pymodule_export]
    use super::errors::{
        BadFileError, ConfigError, RemoteError, StoreError, TantraError, UnsafePickleError,
    };
    #[pymodule_export]
    use super::file::{File, Mapping};
    #[pymodule_export]
    use super::remote::{_add_remote, _pull, _push, _remote_versions, _remotes, _remove_remote};
    #[pymodule_export]
    use super::runtime::{Runtime, TokenStream};
    #[pymodule_export]
    use super::store::{Configs, Store};
    #[pymodule_export]
    use super::tools::{convert, diff, inspect, scan};
    #[pymodule_export]
    use super::vision::{Multimodal, Ocr};
    #[pymodule_export]
    use super::write::_save;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
