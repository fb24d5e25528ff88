//! The image models from Python: `MultimodalRuntime` (image + prompt -> text) and
//! `OcrRuntime` (image -> text), with `image=` a path, PNG/JPEG bytes, a PIL image or an
//! `H x W x C` `uint8` array (C = 1, 3 or 4).

use std::path::PathBuf;

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray3, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};
use tantra_formats::OutputFormat;
use tantra_models::{Architecture, ByteTokenizer};
use tantra_runtime::image::{decode_image, load_image};
use tantra_runtime::{
    GenerateOptions, LoadedModel, MultimodalModel, OcrModel, RuntimeError, SamplingConfig,
    StopReason,
};

use crate::errors::{runtime_err, BadFileError};
use crate::runtime::parse_dtype;
use crate::store::root_path;

/// An image from any of the accepted Python forms.
fn image_from_py(obj: &Bound<'_, PyAny>) -> PyResult<image::DynamicImage> {
    let py = obj.py();
    if obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__")? {
        let path: PathBuf = obj.extract()?;
        return py.detach(|| load_image(&path)).map_err(runtime_err);
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        let bytes = b.as_bytes().to_vec();
        return py
            .detach(|| decode_image(&bytes))
            .map_err(|e| BadFileError::new_err(format!("image bytes: {e}")));
    }
    // A PIL image: its RGB pixels as an array.
    let obj = if obj.hasattr("convert")? && obj.hasattr("size")? {
        py.import("numpy")?
            .call_method1("asarray", (obj.call_method1("convert", ("RGB",))?,))?
    } else {
        obj.clone()
    };
    let arr: PyReadonlyArray3<'_, u8> = obj.extract().map_err(|_| {
        PyTypeError::new_err(
            "image must be a path, PNG/JPEG bytes, a PIL image or an HxWxC uint8 array",
        )
    })?;
    let shape = arr.shape().to_vec();
    let (h, w, c) = (shape[0], shape[1], shape[2]);
    let data = arr.as_array().iter().copied().collect::<Vec<u8>>();
    let (w32, h32) = (
        u32::try_from(w).map_err(|_| PyValueError::new_err("image too wide"))?,
        u32::try_from(h).map_err(|_| PyValueError::new_err("image too tall"))?,
    );
    let bad = || PyValueError::new_err(format!("image array of shape {shape:?} does not fit"));
    Ok(match c {
        1 => image::DynamicImage::ImageLuma8(
            image::GrayImage::from_raw(w32, h32, data).ok_or_else(bad)?,
        ),
        3 => image::DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(w32, h32, data).ok_or_else(bad)?,
        ),
        4 => image::DynamicImage::ImageRgba8(
            image::RgbaImage::from_raw(w32, h32, data).ok_or_else(bad)?,
        ),
        _ => {
            return Err(PyValueError::new_err(format!(
                "image array has {c} channels; 1, 3 or 4 are read"
            )))
        }
    })
}

fn load(
    py: Python<'_>,
    model_type: &str,
    version: Option<&str>,
    root: Option<PathBuf>,
    format: Option<&str>,
    dtype: &str,
) -> PyResult<LoadedModel> {
    let precision = parse_dtype(dtype)?;
    let format: Option<OutputFormat> = format
        .map(|f| f.parse().map_err(PyValueError::new_err))
        .transpose()?;
    let root = root_path(root);
    py.detach(|| LoadedModel::from_store_as(&root, model_type, version, format, precision))
        .map_err(runtime_err)
}

fn wrong(what: &str, expected: Architecture, found: &LoadedModel) -> PyErr {
    runtime_err(RuntimeError::WrongArchitecture {
        what: what.to_string(),
        expected: expected.name(),
        found: found.architecture().name(),
    })
}

/// Image + prompt -> text: the `mamba_multimodal` model.
///
/// `MultimodalRuntime(model_type="mamba_multimodal", version=None, root=None, format=None,
/// dtype="f32")`
/// loads from the weights root after the store's hash check; `from_path(path)` loads a file or
/// directory.
#[pyclass(frozen, module = "tantra", name = "MultimodalRuntime")]
pub struct Multimodal {
    m: Box<MultimodalModel>,
}

#[pymethods]
impl Multimodal {
    #[new]
    #[pyo3(signature = (model_type="mamba_multimodal", version=None, root=None, format=None, dtype="f32"))]
    fn new(
        py: Python<'_>,
        model_type: &str,
        version: Option<&str>,
        root: Option<PathBuf>,
        format: Option<&str>,
        dtype: &str,
    ) -> PyResult<Self> {
        match load(py, model_type, version, root, format, dtype)? {
            LoadedModel::Multimodal(m) => Ok(Multimodal { m }),
            other => Err(wrong(model_type, Architecture::MambaMultimodal, &other)),
        }
    }

    #[staticmethod]
    #[pyo3(signature = (path, dtype="f32"))]
    fn from_path(py: Python<'_>, path: PathBuf, dtype: &str) -> PyResult<Self> {
        let precision = parse_dtype(dtype)?;
        let l = py
            .detach(|| {
                LoadedModel::from_path_as(&path, Some(Architecture::MambaMultimodal), precision)
            })
            .map_err(runtime_err)?;
        match l {
            LoadedModel::Multimodal(m) => Ok(Multimodal { m }),
            other => Err(wrong(
                &path.display().to_string(),
                Architecture::MambaMultimodal,
                &other,
            )),
        }
    }

    /// Generates text from `prompt` (a str, or token ids) after the image (optional). Returns
    /// `{"text", "ids", "prompt_ids", "stop"}` as `MambaRuntime.generate` does.
    #[pyo3(signature = (prompt=None, *, image=None, max_new_tokens=32, temperature=0.0, top_k=None, top_p=1.0, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: Option<&Bound<'py, PyAny>>,
        image: Option<&Bound<'py, PyAny>>,
        max_new_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: f32,
        seed: u64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let img = image.map(image_from_py).transpose()?;
        let lm = self.m.language();
        let byte_level = lm.vocab_size() == ByteTokenizer::VOCAB_SIZE;
        let ids: Vec<u32> = if let Some(s) = prompt.and_then(|p| p.cast::<PyString>().ok()) {
            let text: String = s.extract()?;
            if !byte_level {
                return Err(PyValueError::new_err(
                    "this model's vocabulary is not tantra's byte-level one; give token ids",
                ));
            }
            let t = ByteTokenizer::new();
            if lm.config().bos_token_id == Some(ByteTokenizer::BOS) {
                t.encode_with_bos(&text)
            } else {
                t.encode(&text)
            }
        } else {
            prompt.map(|p| p.extract()).transpose()?.unwrap_or_default()
        };
        let opts = GenerateOptions {
            max_new_tokens,
            sampling: SamplingConfig {
                temperature,
                top_k,
                top_p,
                seed,
            },
            eos_token_id: lm.config().eos_token_id,
            prompt_logits: false,
        };
        let m = &self.m;
        let g = py
            .detach(|| m.generate(img.as_ref(), &ids, &opts, &mut |_| {}))
            .map_err(runtime_err)?;
        let d = PyDict::new(py);
        d.set_item(
            "text",
            byte_level.then(|| ByteTokenizer::new().decode(&g.generated)),
        )?;
        d.set_item("ids", g.generated.clone())?;
        d.set_item("prompt_ids", g.prompt_ids.clone())?;
        d.set_item(
            "stop",
            match g.stop {
                StopReason::Eos => "eos",
                StopReason::MaxTokens => "max_tokens",
            },
        )?;
        Ok(d)
    }

    /// The image's tokens as the language model sees them: float32 `[patches, hidden]`.
    fn image_tokens<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        let img = image_from_py(image)?;
        let m = &self.m;
        let t = py.detach(|| m.image_tokens(&img)).map_err(runtime_err)?;
        let d = m.language().hidden_size();
        let rows = t.len() / d.max(1);
        PyArray1::from_vec(py, t).reshape([rows, d])
    }
}

/// Image -> text: the `ocr_native` line recognizer (greedy CTC).
#[pyclass(frozen, module = "tantra", name = "OcrRuntime")]
pub struct Ocr {
    m: OcrModel,
}

#[pymethods]
impl Ocr {
    #[new]
    #[pyo3(signature = (model_type="ocr_native", version=None, root=None, format=None, dtype="f32"))]
    fn new(
        py: Python<'_>,
        model_type: &str,
        version: Option<&str>,
        root: Option<PathBuf>,
        format: Option<&str>,
        dtype: &str,
    ) -> PyResult<Self> {
        match load(py, model_type, version, root, format, dtype)? {
            LoadedModel::Ocr(m) => Ok(Ocr { m }),
            other => Err(wrong(model_type, Architecture::OcrNative, &other)),
        }
    }

    #[staticmethod]
    #[pyo3(signature = (path, dtype="f32"))]
    fn from_path(py: Python<'_>, path: PathBuf, dtype: &str) -> PyResult<Self> {
        let precision = parse_dtype(dtype)?;
        let l = py
            .detach(|| LoadedModel::from_path_as(&path, Some(Architecture::OcrNative), precision))
            .map_err(runtime_err)?;
        match l {
            LoadedModel::Ocr(m) => Ok(Ocr { m }),
            other => Err(wrong(
                &path.display().to_string(),
                Architecture::OcrNative,
                &other,
            )),
        }
    }

    /// Reads the text of `image`: `{"text", "classes", "frame_classes", "logits"}` with
    /// `logits` a float32 array `[frames, classes]`.
    fn recognize<'py>(
        &self,
        py: Python<'py>,
        image: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let img = image_from_py(image)?;
        let m = &self.m;
        let out = py.detach(|| m.recognize(&img)).map_err(runtime_err)?;
        let c = m.config().num_classes();
        let frames = out.logits.len() / c.max(1);
        let d = PyDict::new(py);
        d.set_item("text", &out.text)?;
        d.set_item("classes", out.classes.clone())?;
        d.set_item("frame_classes", out.frame_classes.clone())?;
        d.set_item(
            "logits",
            PyArray1::from_vec(py, out.logits).reshape([frames, c])?,
        )?;
        Ok(d)
    }
}
