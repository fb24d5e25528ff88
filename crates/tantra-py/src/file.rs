//! `_File`: one open weight file of any format, handing out each tensor's bytes as a NumPy
//! `uint8` array, a view of the file where its bytes lie in one run of it.
//!
//! The Python layer (`tantra/_arrays.py`) turns those bytes into typed NumPy arrays or torch
//! tensors; this module only decides view or copy and keeps the memory alive. Views borrow a
//! copy-on-write map of the file ([`Mapping`]): torch has no read-only tensors, and a write
//! through a tensor into a read-only map would kill the process, while into a private writable
//! map it changes only this process's pages, never the file. Every view's NumPy `base` is the
//! `Mapping`, so the map lives as long as any view, whatever happens to the `_File`.

use std::fs::File as FsFile;
use std::path::PathBuf;

use numpy::ndarray::ArrayView1;
use numpy::PyArray1;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use tantra_formats::{DynSource, FormatError, Value};

use crate::errors::{format_err, BadFileError};

/// `(dtype, shape, bytes, is_view)` as [`File::raw`] hands a tensor out.
type RawTensor<'py> = (&'static str, Vec<u64>, Bound<'py, PyArray1<u8>>, bool);

/// A private, writable (copy-on-write) map of a weight file: the owner of every zero-copy view.
#[pyclass(frozen, module = "tantra._tantra")]
pub struct Mapping {
    map: memmap2::MmapMut,
}

impl Mapping {
    fn bytes(&self) -> &[u8] {
        &self.map
    }
}

/// An open weight file (safetensors, PyTorch zip or legacy, GGUF). Use `tantra.safe_open`.
#[pyclass(frozen, module = "tantra._tantra", name = "_File")]
pub struct File {
    path: PathBuf,
    source: DynSource,
    mapping: Option<Py<Mapping>>,
}

impl File {
    /// Opens `path` with the GIL released.
    pub fn open_path(py: Python<'_>, path: PathBuf) -> PyResult<File> {
        let source = py
            .detach(|| tantra_formats::open(&path))
            .map_err(format_err)?;
        File::from_source(py, path, source)
    }

    /// Wraps a source already open (the store opens files after checking their hash) and maps
    /// the file for views when any tensor lies in one run of it.
    pub fn from_source(py: Python<'_>, path: PathBuf, source: DynSource) -> PyResult<File> {
        let (source, map) = py.detach(|| -> PyResult<_> {
            let any_view = (0..source.tensors().len()).any(|i| source.file_range(i).is_some());
            let map = if any_view {
                let f = FsFile::open(&path).map_err(|e| format_err(FormatError::new(&path, e)))?;
                // SAFETY: a private map: writes (through a torch tensor) go to this process's
                // copies of the pages, never to the file. Like every memory-mapped reader this
                // assumes nobody truncates the file while it is mapped; tantra's own writers
                // never change a file in place (they write a new one and rename it).
                let map = unsafe { memmap2::MmapOptions::new().map_copy(&f) }
                    .map_err(|e| format_err(FormatError::new(&path, e)))?;
                Some(map)
            } else {
                None
            };
            Ok((source, map))
        })?;
        let mapping = match map {
            Some(map) => Some(Py::new(py, Mapping { map })?),
            None => None,
        };
        Ok(File {
            path,
            source,
            mapping,
        })
    }

    fn index(&self, name: &str) -> PyResult<usize> {
        self.source.find(name).ok_or_else(|| {
            pyo3::exceptions::PyKeyError::new_err(format!(
                "{}: no tensor named {name:?}",
                self.path.display()
            ))
        })
    }

    pub fn source(&self) -> &DynSource {
        &self.source
    }
}

/// A Python object for a non-tensor checkpoint value.
pub fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::BigInt(s) => py
            .import("builtins")?
            .getattr("int")?
            .call1((s.as_str(),))?,
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Str(s) => s.into_pyobject(py)?.into_any(),
        Value::Bytes(b) => PyBytes::new(py, b).into_any(),
    })
}

#[pymethods]
impl File {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<File> {
        File::open_path(py, path)
    }

    /// The path the file was opened from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The container: `safetensors`, `pytorch-zip`, `pytorch-legacy` or `gguf`.
    #[getter]
    fn format(&self) -> &'static str {
        self.source.format().name()
    }

    /// Tensor names, in the order the file lists them.
    fn keys(&self) -> Vec<String> {
        self.source
            .tensors()
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    /// `[(name, dtype, shape)]` with the safetensors dtype spelling (`F32`, `BF16`, ...).
    fn infos(&self) -> Vec<(String, &'static str, Vec<u64>)> {
        self.source
            .tensors()
            .iter()
            .map(|t| (t.name.clone(), t.dtype.as_str(), t.shape.clone()))
            .collect()
    }

    /// `(dtype, shape, bytes, is_view)` of tensor `name`: `bytes` is a 1-D `uint8` array of its
    /// row-major little-endian bytes, a view of the file's map where `is_view`, else a copy.
    fn raw<'py>(&self, py: Python<'py>, name: &str) -> PyResult<RawTensor<'py>> {
        let i = self.index(name)?;
        let info = &self.source.tensors()[i];
        let (dtype, shape) = (info.dtype.as_str(), info.shape.clone());
        if let (Some(range), Some(mapping)) = (self.source.file_range(i), &self.mapping) {
            let m = mapping.get();
            let bytes = usize::try_from(range.start)
                .ok()
                .zip(usize::try_from(range.end).ok())
                .and_then(|(s, e)| m.bytes().get(s..e))
                .ok_or_else(|| {
                    BadFileError::new_err(format!(
                        "{}: tensor {name:?} lies beyond the end of the file",
                        self.path.display()
                    ))
                })?;
            let view = ArrayView1::from(bytes);
            // SAFETY: the bytes belong to `Mapping`'s map, which never moves, is never
            // resized and is unmapped only when the `Mapping` object is freed; the array keeps
            // that object alive as its `base`.
            let arr =
                unsafe { PyArray1::borrow_from_array(&view, mapping.bind(py).clone().into_any()) };
            return Ok((dtype, shape, arr, true));
        }
        let source = &self.source;
        let owned = py
            .detach(|| source.tensor_bytes(i).map(|c| c.into_owned()))
            .map_err(|e| format_err(e.with_path(&self.path)))?;
        Ok((dtype, shape, PyArray1::from_vec(py, owned), false))
    }

    /// The string metadata (safetensors `__metadata__`; empty for other formats).
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.source.metadata() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Non-tensor leaves by dotted name (`epoch`, `optimizer.param_groups.0.lr`).
    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.source.values() {
            d.set_item(k, value_to_py(py, v)?)?;
        }
        Ok(d)
    }

    /// The nesting of a checkpoint as JSON (see `tantra_formats::structure`), or `None` for a
    /// plain state dict.
    fn structure(&self) -> Option<String> {
        self.source.structure().map(|s| s.to_json().to_string())
    }

    /// Whether tensor `name` would be handed out as a view of the file.
    fn is_view(&self, name: &str) -> PyResult<bool> {
        let i = self.index(name)?;
        Ok(self.mapping.is_some() && self.source.file_range(i).is_some())
    }

    fn __len__(&self) -> usize {
        self.source.tensors().len()
    }

    fn __repr__(&self) -> String {
        format!(
            "<tantra file {} ({}, {} tensors)>",
            self.path.display(),
            self.source.format().name(),
            self.source.tensors().len()
        )
    }
}
