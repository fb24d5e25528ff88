//! `MambaRuntime` from Python: load a Mamba model from the weights root or a path, get logits
//! as NumPy arrays, generate (all at once or token by token).
//!
//! Generation runs with the GIL released. The streaming form runs it on its own thread and
//! hands tokens over a channel to a Python iterator, so a consumer can print each token as it
//! comes; dropping the iterator early lets the thread finish its (bounded) work and exit.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use tantra_formats::OutputFormat;
use tantra_models::ByteTokenizer;
use tantra_runtime::{
    GenerateOptions, Generation, Logits, MambaRuntime, Precision, RuntimeError, SamplingConfig,
    StopReason, Threads,
};

use crate::errors::runtime_err;
use crate::store::root_path;

/// A Mamba language model ready to run (tantra's byte-level vocabulary, or any Hugging Face
/// Mamba checkpoint when prompts are given as ids).
///
/// `MambaRuntime(model_type="mamba", version=None, root=None, format=None, dtype="f32")` loads
/// the default (or named) version from the weights root (`root`, else `TANTRA_ROOT`, else
/// `./Model`) after the store's hash check; `MambaRuntime.from_path(path, dtype="f32")` loads a
/// Hugging Face directory or a single weight file. `dtype` is the precision weight matrices are
/// kept at: `"f32"`, `"bf16"` or `"q8"`. `threads` is the number of threads this runtime
/// computes on (a pool of its own; `None`: all cores, like the CLI's `--threads`); results do
/// not depend on it.
#[pyclass(frozen, module = "tantra", name = "MambaRuntime")]
pub struct Runtime {
    rt: Arc<MambaRuntime>,
    /// The pool every computation of this runtime runs on.
    threads: Threads,
}

impl Runtime {
    fn byte_level(&self) -> bool {
        self.rt.model().vocab_size() == ByteTokenizer::VOCAB_SIZE
    }

    /// The prompt as ids: a list of ints as given, a string through the byte-level tokenizer.
    fn prompt_ids(&self, prompt: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
        if let Ok(s) = prompt.cast::<PyString>() {
            if !self.byte_level() {
                return Err(PyValueError::new_err(format!(
                    "this model's vocabulary ({} tokens) is not tantra's byte-level one; give the prompt as a list of token ids",
                    self.rt.model().vocab_size()
                )));
            }
            let text: String = s.extract()?;
            let text = text.as_str();
            let t = ByteTokenizer::new();
            return Ok(
                if self.rt.config().bos_token_id == Some(ByteTokenizer::BOS) {
                    t.encode_with_bos(text)
                } else {
                    t.encode(text)
                },
            );
        }
        prompt
            .extract::<Vec<u32>>()
            .map_err(|_| PyTypeError::new_err("prompt must be a str or a list of token ids"))
    }

    fn text(&self, ids: &[u32]) -> Option<String> {
        self.byte_level().then(|| ByteTokenizer::new().decode(ids))
    }
}

#[allow(clippy::too_many_arguments)]
fn options(
    max_new_tokens: usize,
    temperature: f32,
    top_k: Option<usize>,
    top_p: f32,
    seed: u64,
    eos_token_id: Option<u32>,
) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: SamplingConfig {
            temperature,
            top_k,
            top_p,
            seed,
        },
        eos_token_id,
        prompt_logits: false,
    }
}

/// The pool a `threads=` argument asks for.
fn parse_threads(threads: Option<usize>) -> PyResult<Threads> {
    Threads::new(threads).map_err(|e| PyValueError::new_err(tantra_formats::chain(&e).to_string()))
}

/// The precision a `dtype=` argument names.
pub(crate) fn parse_dtype(dtype: &str) -> PyResult<Precision> {
    dtype
        .parse()
        .map_err(|e: tantra_runtime::UnknownPrecision| PyValueError::new_err(e.to_string()))
}

#[pymethods]
impl Runtime {
    #[new]
    #[pyo3(signature = (model_type="mamba", version=None, root=None, format=None, dtype="f32", threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_type: &str,
        version: Option<&str>,
        root: Option<PathBuf>,
        format: Option<&str>,
        dtype: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let precision = parse_dtype(dtype)?;
        let threads = parse_threads(threads)?;
        let format: Option<OutputFormat> = format
            .map(|f| f.parse().map_err(PyValueError::new_err))
            .transpose()?;
        let root = root_path(root);
        let rt = py
            .detach(|| {
                threads.install(|| {
                    MambaRuntime::with_format_as(&root, model_type, version, format, precision)
                })
            })
            .map_err(runtime_err)?;
        Ok(Runtime {
            rt: Arc::new(rt),
            threads,
        })
    }

    /// Loads a Hugging Face Mamba directory or a single weight file.
    #[staticmethod]
    #[pyo3(signature = (path, dtype="f32", threads=None))]
    fn from_path(
        py: Python<'_>,
        path: PathBuf,
        dtype: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let precision = parse_dtype(dtype)?;
        let threads = parse_threads(threads)?;
        let rt = py
            .detach(|| threads.install(|| MambaRuntime::from_path_as(&path, precision)))
            .map_err(runtime_err)?;
        Ok(Runtime {
            rt: Arc::new(rt),
            threads,
        })
    }

    /// The precision of the weight matrices: `"f32"`, `"bf16"` or `"q8"`.
    #[getter]
    fn dtype(&self) -> &'static str {
        self.rt.model().precision().name()
    }

    /// The number of threads this runtime computes on.
    #[getter]
    fn threads(&self) -> usize {
        self.threads.count()
    }

    /// Vocabulary size.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.rt.model().vocab_size()
    }

    /// Where the weights came from.
    #[getter]
    fn origin(&self) -> String {
        self.rt.origin().to_string()
    }

    /// Logits of every position of `ids` (a str or a list of token ids) from a fresh state, as
    /// a float32 array of shape `[len(ids), vocab_size]`.
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, numpy::PyArray2<f32>>> {
        let ids = self.prompt_ids(ids)?;
        let rt = &self.rt;
        let v = rt.model().vocab_size();
        let out = py
            .detach(|| {
                self.threads.install(|| {
                    let mut state = rt.model().new_state();
                    rt.model().forward(&ids, &mut state, Logits::All)
                })
            })
            .map_err(runtime_err)?;
        PyArray1::from_vec(py, out).reshape([ids.len(), v])
    }

    /// Generates a continuation of `prompt` (a str, for the byte-level vocabulary, or a list of
    /// token ids). Greedy unless `temperature > 0`. Returns a dict: `ids` (the new tokens),
    /// `text` (their text, or None for a vocabulary tantra cannot decode), `prompt_ids`,
    /// `stop` (`"eos"` or `"max_tokens"`). `eos_token_id` defaults to the config's.
    #[pyo3(signature = (prompt, *, max_new_tokens=32, temperature=0.0, top_k=None, top_p=1.0, seed=0, eos_token_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn generate<'py>(
        &self,
        py: Python<'py>,
        prompt: &Bound<'py, PyAny>,
        max_new_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: f32,
        seed: u64,
        eos_token_id: Option<u32>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let ids = self.prompt_ids(prompt)?;
        let eos = eos_token_id.or(self.rt.config().eos_token_id);
        let opts = options(max_new_tokens, temperature, top_k, top_p, seed, eos);
        let rt = &self.rt;
        let g: Generation = py
            .detach(|| {
                self.threads
                    .install(|| rt.generate(&ids, &opts, &mut |_| {}))
            })
            .map_err(runtime_err)?;
        let d = PyDict::new(py);
        d.set_item("text", self.text(&g.generated))?;
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

    /// `generate` token by token: an iterator of `(id, text)` pairs (`text` is None for a
    /// vocabulary tantra cannot decode, and may be `""` for a byte that starts a multi-byte
    /// character).
    #[pyo3(signature = (prompt, *, max_new_tokens=32, temperature=0.0, top_k=None, top_p=1.0, seed=0, eos_token_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        prompt: &Bound<'_, PyAny>,
        max_new_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: f32,
        seed: u64,
        eos_token_id: Option<u32>,
    ) -> PyResult<TokenStream> {
        let ids = self.prompt_ids(prompt)?;
        let eos = eos_token_id.or(self.rt.config().eos_token_id);
        let opts = options(max_new_tokens, temperature, top_k, top_p, seed, eos);
        let rt = Arc::clone(&self.rt);
        let threads = self.threads.clone();
        let (tx, rx) = channel::<Result<u32, RuntimeError>>();
        std::thread::spawn(move || {
            let sink = tx.clone();
            let r = threads.install(|| {
                rt.generate(&ids, &opts, &mut |id| {
                    let _ = sink.send(Ok(id));
                })
            });
            if let Err(e) = r {
                let _ = tx.send(Err(e));
            }
        });
        Ok(TokenStream {
            rx: Mutex::new(rx),
            byte_level: self.byte_level(),
            pending: Mutex::new(Vec::new()),
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "<tantra.MambaRuntime {} (vocab {})>",
            self.rt.origin(),
            self.rt.model().vocab_size()
        )
    }
}

/// The iterator `MambaRuntime.stream` returns.
#[pyclass(module = "tantra._tantra")]
pub struct TokenStream {
    rx: Mutex<Receiver<Result<u32, RuntimeError>>>,
    byte_level: bool,
    /// Bytes of a UTF-8 character not yet complete.
    pending: Mutex<Vec<u8>>,
}

#[pymethods]
impl TokenStream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<(u32, Option<String>)>> {
        let rx = &self.rx;
        let next = py.detach(|| rx.lock().ok().and_then(|r| r.recv().ok()));
        match next {
            None => Ok(None),
            Some(Err(e)) => Err(runtime_err(e)),
            Some(Ok(id)) => {
                if !self.byte_level {
                    return Ok(Some((id, None)));
                }
                let mut pending = self
                    .pending
                    .lock()
                    .map_err(|_| PyValueError::new_err("stream state poisoned"))?;
                if let Ok(b) = u8::try_from(id) {
                    pending.push(b);
                }
                let text = match std::str::from_utf8(&pending) {
                    Ok(s) => {
                        let s = s.to_string();
                        pending.clear();
                        s
                    }
                    Err(e) if e.error_len().is_some() => {
                        let s = String::from_utf8_lossy(&pending).into_owned();
                        pending.clear();
                        s
                    }
                    Err(_) => String::new(),
                };
                Ok(Some((id, Some(text))))
            }
        }
    }
}
