//! Writing PyTorch zip archives in the layout `torch.save` (torch 2.x) produces.
//!
//! The goal is a file that `torch.load(path, weights_only=True)` loads to exactly the tensors of
//! the source, and that looks like torch's own output to any tool that inspects the bytes. So the
//! archive copies torch's choices (through its zip library, miniz) rather than a generic zip
//! writer's: the same entries in the same order, stored, every record's data at a multiple of 64
//! bytes (padding in an `FB` extra field of the local header), data descriptors after the data,
//! DOS time and date zero, a ZIP64 end record always and ZIP64 extra fields where a size or offset
//! needs them, and a `data.pkl` pickled (protocol 2, same memo numbering) as Python's pickler
//! pickles an `OrderedDict` state dict. For the dtypes of the fixture `all_dtypes.pt` the output
//! is byte-for-byte torch's, except the 40-digit serialization id.
//!
//! Memory stays bounded: `data.pkl` needs only names, dtypes and shapes, and each tensor's bytes
//! go from [`TensorSource::stream_tensor`] straight to `out` while their CRC-32 is computed; the
//! sizes are known up front from dtype and shape, and the CRC travels in a data descriptor after
//! the data, which is why `out` needs only [`Write`], not `Seek`.
//!
//! Deliberate differences from torch: CRCs are always computed (torch may write zeros), ZIP64
//! extra fields in local headers carry the real sizes (miniz writes a zero compressed size), and
//! the serialization id is derived from the record names and CRCs with a fixed hash rather than
//! `std::hash`, so that the same input gives the same bytes on every machine.

use std::io::{self, Write};

use super::plan::Plan;
use super::write_error::io_error;
use crate::error::FormatError;
use crate::tensor::TensorSource;
use crate::zip::write::{ZipWriter, ALIGNMENT};
use crate::Progress;

/// The label of the [`Progress`] this writer reports.
const PROGRESS_LABEL: &str = "writing pytorch";

/// Writes `src` as a PyTorch zip archive that `torch.load(weights_only=True)` loads, with every
/// entry under `<archive_name>/`. Returns the number of bytes written.
///
/// The top-level object is a `collections.OrderedDict` holding the tensors in source order, then
/// the non-tensor values ([`TensorSource::values`]) under their dotted names; or, for a source
/// with a [`crate::Structure`] that names exactly its tensors and values (a nested checkpoint read
/// from a `.pt` or from a safetensors file tantra wrote), that structure rebuilt, so that
/// `torch.load` returns the same nesting as the original. Each tensor gets its
/// own storage (`data/0`, `data/1`, ...). The same input always gives the same bytes.
///
/// # Errors
/// Before anything is written, a [`super::WriteError`] naming the tensor for a dtype torch
/// cannot hold the same way (`F6_E2M3`, `F6_E3M2`; `F4` whose last dimension is odd, as torch's
/// `float4_e2m1fn_x2` packs two values per element) or a shape torch cannot index (a
/// dimension or stride above `i64::MAX`), for a tensor or value name used twice, for an
/// `archive_name` that is empty or holds `/` or `\`, and for an integer value that protocol 2
/// cannot carry within torch's allowed opcodes. While writing, [`crate::ErrorKind::Io`] for a failed
/// write, or (kind `InvalidData`) for a source whose stream of a tensor is not as long as its dtype
/// and shape say; errors of the source are passed through. After an error `out` holds a partial
/// archive.
///
/// ```
/// use tantra_formats::{pytorch::write_pytorch, MemorySource, NoProgress};
/// let mut src = MemorySource::new();
/// src.push_f32("w", vec![2], &[1.0, 2.0])?;
/// let mut out = Vec::new();
/// let n = write_pytorch(&mut out, &src, "model", &NoProgress)?;
/// assert_eq!(n, out.len() as u64);
/// assert_eq!(&out[..4], b"PK\x03\x04");
/// # Ok::<(), tantra_formats::FormatError>(())
/// ```
///
/// A dtype torch has no matching type for is refused:
/// ```
/// use tantra_formats::pytorch::{write_pytorch, WriteError};
/// use tantra_formats::{DType, ErrorKind, MemorySource, NoProgress, TensorInfo};
/// let mut src = MemorySource::new();
/// src.push(TensorInfo::new("packed", DType::F6E2M3, vec![4]), vec![0, 0, 0])?;
/// let err = write_pytorch(&mut Vec::new(), &src, "model", &NoProgress).unwrap_err();
/// assert!(matches!(
///     err.kind,
///     ErrorKind::PytorchWrite(WriteError::NoTorchDType { ref name, .. }) if name == "packed"
/// ));
/// # Ok::<(), tantra_formats::FormatError>(())
/// ```
pub fn write_pytorch(
    out: &mut dyn Write,
    src: &dyn TensorSource,
    archive_name: &str,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    let plan = Plan::new(src, archive_name)?;
    progress.begin(PROGRESS_LABEL, plan.total_bytes);
    let result = write_archive(out, src, &plan, progress);
    progress.end();
    result
}

fn write_archive(
    out: &mut dyn Write,
    src: &dyn TensorSource,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<u64, FormatError> {
    let mut zip = ZipWriter::new(out, &plan.archive_name);
    zip.record("data.pkl", &plan.data_pkl)?;
    zip.record(".format_version", b"1")?;
    zip.record(".storage_alignment", ALIGNMENT.to_string().as_bytes())?;
    zip.record("byteorder", b"little")?;
    for (index, (info, &byte_len)) in src.tensors().iter().zip(&plan.byte_lens).enumerate() {
        let what = format!("tensor {:?}", info.name);
        let mut entry = zip.begin(&format!("data/{index}"), byte_len, what)?;
        // The writer's own failure, kept whole; the source gets a stand-in to pass back.
        let mut failure: Option<FormatError> = None;
        let streamed = src.stream_tensor(index, &mut |chunk| match entry.write(&mut zip, chunk) {
            Ok(()) => {
                progress.advance(chunk.len() as u64);
                Ok(())
            }
            Err(e) => {
                let stand_in = io_error(io::Error::other(crate::error::chain(&e).to_string()));
                failure.get_or_insert(e);
                Err(stand_in)
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        streamed?;
        zip.finish(entry)?;
    }
    zip.record("version", b"3\n")?;
    let id = zip.serialization_id();
    zip.record(".data/serialization_id", id.as_bytes())?;
    zip.finish_archive()
}
