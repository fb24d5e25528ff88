//! `_save`: writes tensors (and checkpoint values, and their nesting) handed over from Python
//! as raw little-endian bytes, in any format tantra writes, through a temporary file renamed
//! into place.
//!
//! Flattening a nested Python object into dotted names and a structure is done in Python
//! (`tantra/_files.py`), where the objects are; this side checks every tensor's byte count
//! against its dtype and shape ([`MemorySource::push`]) and writes with the GIL released.

use std::path::PathBuf;

use numpy::{PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyString};
use tantra_formats::convert::archive_name;
use tantra_formats::fsutil::atomic_write;
use tantra_formats::structure::Structure;
use tantra_formats::{
    write_to, DType, MemorySource, NoProgress, OutputFormat, TensorInfo, TensorSource, Value,
};

use crate::errors::format_err;

/// A checkpoint value from a Python object (None, bool, int, float, str, bytes).
pub fn value_from_py(name: &str, v: &Bound<'_, PyAny>) -> PyResult<Value> {
    Ok(if v.is_none() {
        Value::None
    } else if let Ok(b) = v.cast::<PyBool>() {
        Value::Bool(b.is_true())
    } else if v.is_instance_of::<PyInt>() {
        match v.extract::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(v.str()?.to_string()),
        }
    } else if v.is_instance_of::<PyFloat>() {
        Value::Float(v.extract()?)
    } else if v.is_instance_of::<PyString>() {
        Value::Str(v.extract()?)
    } else if let Ok(b) = v.cast::<PyBytes>() {
        Value::Bytes(b.as_bytes().to_vec())
    } else {
        return Err(PyTypeError::new_err(format!(
            "{name}: a {} is neither a tensor nor a value tantra stores (None, bool, int, float, str, bytes)",
            v.get_type().name()?
        )));
    })
}

/// The output format asked for, or the one the path's extension implies.
pub fn output_format(path: &std::path::Path, format: Option<&str>) -> PyResult<OutputFormat> {
    match format {
        Some(f) => f.parse().map_err(PyValueError::new_err),
        None => OutputFormat::from_path(path).ok_or_else(|| {
            PyValueError::new_err(format!(
                "{}: cannot tell the format from the extension; pass format=\"safetensors\", \"pt\" or \"bin\"",
                path.display()
            ))
        }),
    }
}

/// Writes `tensors` (`(name, dtype, shape, uint8 bytes)`), `values`, the nesting `structure`
/// (JSON, or None for a flat dict) and string `metadata` to `path`. Returns the bytes written.
#[pyfunction]
#[pyo3(signature = (path, tensors, values, structure=None, metadata=None, format=None, overwrite=true))]
#[allow(clippy::too_many_arguments)]
pub fn _save(
    py: Python<'_>,
    path: PathBuf,
    tensors: Vec<(String, String, Vec<u64>, PyReadonlyArray1<'_, u8>)>,
    values: &Bound<'_, PyDict>,
    structure: Option<&str>,
    metadata: Option<std::collections::BTreeMap<String, String>>,
    format: Option<&str>,
    overwrite: bool,
) -> PyResult<u64> {
    let format = output_format(&path, format)?;
    let mut src = MemorySource::new();
    for (name, dtype, shape, bytes) in &tensors {
        let dtype: DType = dtype
            .parse()
            .map_err(|e: tantra_formats::dtype::UnknownDType| {
                PyValueError::new_err(e.to_string())
            })?;
        let data = match bytes.as_slice() {
            Ok(s) => s.to_vec(),
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "tensor {name:?}: its bytes are not contiguous ({} elements)",
                    bytes.len()
                )))
            }
        };
        src.push(TensorInfo::new(name.clone(), dtype, shape.clone()), data)
            .map_err(format_err)?;
    }
    for (k, v) in values.iter() {
        let k: String = k.extract()?;
        let v = value_from_py(&k, &v)?;
        src.values_mut().insert(k, v);
    }
    if let Some(m) = metadata {
        *src.metadata_mut() = m;
    }
    if let Some(s) = structure {
        let s = Structure::from_json_str(s)
            .map_err(|e| PyValueError::new_err(format!("structure: {e}")))?;
        if !s.is_flat() && s.fits(&src) {
            src.set_structure(Some(s));
        }
    }
    let name = archive_name(&path);
    py.detach(|| {
        atomic_write(&path, overwrite, |w| {
            write_to(w, format, &src as &dyn TensorSource, &name, &NoProgress)
        })
    })
    .map_err(format_err)
}
