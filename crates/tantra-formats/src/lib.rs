//! tantra-formats: bytes <-> tensors.
//!
//! Reads `.safetensors` (memory-mapped), PyTorch zip archives and legacy `torch.save` files
//! (through a pickle reader that executes nothing and resolves only an allowlist of globals),
//! writes safetensors and PyTorch zip archives, detects formats by content and converts between
//! them with verification. It knows nothing of models or registries.
//!
//! ```no_run
//! use tantra_formats::{open, TensorSource};
//! let src = open(std::path::Path::new("model.safetensors"))?;
//! for t in src.tensors() {
//!     println!("{} {} {:?}", t.name, t.dtype, t.shape);
//! }
//! # Ok::<(), tantra_formats::FormatError>(())
//! ```

pub mod convert;
pub mod detect;
pub mod diff;
pub mod digest;
pub mod dtype;
pub mod error;
pub mod failpoint;
mod format;
pub mod fsutil;
pub mod gguf;
mod mmap;
pub mod pickle;
mod progress;
pub mod pytorch;
pub mod safetensors;
pub mod structure;
pub mod subtree;
mod tar;
pub mod temp;
pub mod tensor;
pub mod zip;

use std::io::Write;
use std::path::Path;

pub use convert::{convert, ConvertOptions, ConvertReport};
pub use detect::{detect, detect_bytes, Detected, NotWeights};
pub use diff::{diff, DiffOptions, DiffReport};
pub use digest::{all_digests, tensor_digest};
pub use dtype::DType;
pub use error::{chain, ErrorChain, ErrorKind, FormatError};
pub use format::{Format, OutputFormat};
pub use progress::{NoProgress, Progress};
/// The PyTorch archive writer, under the name it had before `pytorch/` held it.
pub use pytorch::write as pytorch_write;
pub use structure::Structure;
pub use tensor::{BlockLayout, MemorySource, StoredBlocks, TensorInfo, TensorSource, Value};

/// The `__metadata__` key under which non-tensor checkpoint values travel in a safetensors
/// file: a JSON object from dotted name to [`Value::to_json`].
pub const VALUES_METADATA_KEY: &str = "tantra.values";

/// The `__metadata__` key under which the nesting of a checkpoint travels in a safetensors
/// file: the JSON of [`structure::Structure::to_json`], whose leaves are the dotted names of the
/// tensors and of the values under [`VALUES_METADATA_KEY`].
pub const STRUCTURE_METADATA_KEY: &str = "tantra.structure";

/// An open weight file of any readable format.
pub type DynSource = Box<dyn TensorSource + Send + Sync>;

/// Detects the format of `path` and opens it.
///
/// # Errors
/// A file that is not weights (with what it is instead), or one that breaks a rule of its
/// format; the error names the file.
pub fn open(path: &Path) -> Result<DynSource, FormatError> {
    match detect(path)? {
        Format::Safetensors => Ok(Box::new(safetensors::SafetensorsFile::open(path)?)),
        Format::PytorchZip | Format::PytorchLegacy => {
            Ok(Box::new(pytorch::PytorchFile::open(path)?))
        }
        Format::Gguf => Ok(Box::new(gguf::GgufFile::open(path)?)),
        Format::Memory => Err(FormatError::memory("memory is not a file format")),
    }
}

/// Writes `src` to `out` in `format`, one tensor at a time. Returns the bytes written.
/// `archive_name` is the top-level folder of a PyTorch archive (torch uses the file stem).
pub fn write_to(
    out: &mut dyn Write,
    format: OutputFormat,
    src: &dyn TensorSource,
    archive_name: &str,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    match format {
        OutputFormat::Safetensors => safetensors::write_safetensors(out, src, progress),
        OutputFormat::Pt | OutputFormat::Bin => {
            pytorch::write_pytorch(out, src, archive_name, progress)
        }
        OutputFormat::Gguf => {
            let target = gguf::write::TargetType::Keep;
            let planned = gguf::write::plan(src, target).map_err(|e| FormatError {
                path: None,
                kind: e.into(),
            })?;
            let kv = gguf::write::metadata_for(src, None, target, &planned);
            gguf::write::write_gguf(out, src, kv, planned, progress).map(|w| w.bytes)
        }
    }
}
