//! The file tools of the CLI as functions returning plain Python data: `inspect`, `scan`,
//! `convert`, `diff`. Each reads with the GIL released and returns dicts and lists the way the
//! CLI's `--json` output spells them.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tantra_formats::error::ErrorKind;
use tantra_formats::pickle::{ScanReport, Verdict};
use tantra_formats::subtree::Selection;
use tantra_formats::{all_digests, ConvertOptions, NoProgress};

use crate::errors::format_err;
use crate::file::value_to_py;
use crate::write::output_format;

/// What a file holds without loading its tensors: format, tensors (name, dtype, shape),
/// parameter count, metadata and non-tensor values.
#[pyfunction]
pub fn inspect(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let src = py
        .detach(|| tantra_formats::open(&path))
        .map_err(format_err)?;
    let d = PyDict::new(py);
    d.set_item("path", path.display().to_string())?;
    d.set_item("format", src.format().name())?;
    d.set_item("parameters", src.parameter_count())?;
    let tensors = PyList::empty(py);
    for t in src.tensors() {
        let e = PyDict::new(py);
        e.set_item("name", &t.name)?;
        e.set_item("dtype", t.dtype.as_str())?;
        e.set_item("shape", t.shape.clone())?;
        tensors.append(e)?;
    }
    d.set_item("tensors", tensors)?;
    let meta = PyDict::new(py);
    for (k, v) in src.metadata() {
        meta.set_item(k, v)?;
    }
    d.set_item("metadata", meta)?;
    let values = PyDict::new(py);
    for (k, v) in src.values() {
        values.set_item(k, value_to_py(py, v)?)?;
    }
    d.set_item("values", values)?;
    Ok(d)
}

/// What a pickle would do if unpickled, without unpickling it: `verdict` (`safe`, `unsafe`,
/// `invalid`, `unsupported`), `reasons`, the `globals` it names, its `opcodes` and `protocol`.
#[pyfunction]
pub fn scan(py: Python<'_>, path: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let report = match py.detach(|| tantra_formats::pytorch::scan_file(&path)) {
        Ok(r) => r,
        Err(e) if matches!(e.kind, ErrorKind::NotWeights(_)) => {
            ScanReport::with_verdict(Verdict::Invalid(e.kind.to_string()))
        }
        Err(e) => return Err(format_err(e)),
    };
    let reasons = match &report.verdict {
        Verdict::Safe => Vec::new(),
        Verdict::Unsafe(r) | Verdict::Unsupported(r) => r.clone(),
        Verdict::Invalid(r) => vec![r.clone()],
    };
    let d = PyDict::new(py);
    d.set_item("path", path.display().to_string())?;
    d.set_item("verdict", report.verdict.name())?;
    d.set_item("reasons", reasons)?;
    d.set_item("globals", report.globals.clone())?;
    d.set_item("opcodes", report.opcodes.clone())?;
    d.set_item("protocol", report.protocol)?;
    Ok(d)
}

/// Converts `input` to `output` (format from `format` or the output's extension), verifying
/// the output tensor by tensor before it takes its name.
#[pyfunction]
#[pyo3(signature = (input, output, *, format=None, force=false, verify=true, select=None, strip=None))]
#[allow(clippy::too_many_arguments)]
pub fn convert(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    format: Option<&str>,
    force: bool,
    verify: bool,
    select: Option<String>,
    strip: Option<String>,
) -> PyResult<Py<PyDict>> {
    let format = output_format(&output, format)?;
    let opts = ConvertOptions {
        format: Some(format),
        force,
        verify,
        selection: Selection { select, strip },
    };
    let r = py
        .detach(|| tantra_formats::convert(&input, &output, &opts, &NoProgress))
        .map_err(format_err)?;
    let d = PyDict::new(py);
    d.set_item("input_format", r.input_format.name())?;
    d.set_item("output_format", r.output_format.name())?;
    d.set_item("tensors", r.tensors)?;
    d.set_item("parameters", r.parameters)?;
    d.set_item("bytes_written", r.bytes_written)?;
    d.set_item("verified", r.verified)?;
    d.set_item("warnings", r.warnings)?;
    Ok(d.unbind())
}

/// Which tensors differ between two files (any formats): names only in `a` or only in `b`,
/// and tensors whose dtype, shape or content (sha256 of the row-major bytes) differ.
/// `identical` is true when names, dtypes, shapes and contents all agree.
#[pyfunction]
pub fn diff(py: Python<'_>, a: PathBuf, b: PathBuf) -> PyResult<Bound<'_, PyDict>> {
    type Side = (Vec<tantra_formats::TensorInfo>, Vec<(String, String)>);
    let read = |p: &PathBuf| -> Result<Side, tantra_formats::FormatError> {
        let src = tantra_formats::open(p)?;
        let digests = all_digests(&*src).map_err(|e| e.with_path(p))?;
        Ok((src.tensors().to_vec(), digests))
    };
    let ((ia, da), (ib, db)) = py
        .detach(|| Ok::<_, tantra_formats::FormatError>((read(&a)?, read(&b)?)))
        .map_err(format_err)?;
    let find = |infos: &[tantra_formats::TensorInfo], name: &str| {
        infos.iter().position(|t| t.name == name)
    };
    let mut only_a = Vec::new();
    let mut changed = Vec::new();
    let mut same = 0usize;
    for (i, t) in ia.iter().enumerate() {
        let Some(j) = find(&ib, &t.name) else {
            only_a.push(t.name.clone());
            continue;
        };
        let u = &ib[j];
        let why = if t.dtype != u.dtype {
            Some(format!("dtype {} vs {}", t.dtype, u.dtype))
        } else if t.shape != u.shape {
            Some(format!("shape {:?} vs {:?}", t.shape, u.shape))
        } else if da.get(i).map(|d| &d.1) != db.get(j).map(|d| &d.1) {
            Some("values differ".to_string())
        } else {
            None
        };
        match why {
            Some(w) => changed.push((t.name.clone(), w)),
            None => same += 1,
        }
    }
    let only_b: Vec<String> = ib
        .iter()
        .filter(|t| find(&ia, &t.name).is_none())
        .map(|t| t.name.clone())
        .collect();
    let d = PyDict::new(py);
    d.set_item(
        "identical",
        only_a.is_empty() && only_b.is_empty() && changed.is_empty(),
    )?;
    d.set_item("only_in_a", only_a)?;
    d.set_item("only_in_b", only_b)?;
    let ch = PyList::empty(py);
    for (name, why) in changed {
        let e = PyDict::new(py);
        e.set_item("name", name)?;
        e.set_item("reason", why)?;
        ch.append(e)?;
    }
    d.set_item("changed", ch)?;
    d.set_item("same", same)?;
    Ok(d)
}
