//! [`MambaGgufSource`]: a llama.cpp Mamba GGUF seen as tantra's Mamba, read from the file on
//! demand.
//!
//! # Why it exists
//! A GGUF written by llama.cpp's converter (or by `tantra export-gguf`) holds a Mamba under
//! llama.cpp's names and with `A = -exp(A_log)` stored (see [`crate::gguf`]). The runtime wants
//! tantra's names and `A_log`. Copying every tensor into memory under the new names would hold
//! the whole model a second time, in f32 for a quantized file, while the runtime builds its own
//! matrices from it. This adapter renames instead: it lists the file's tensors under
//! [`tantra_name`]s with the file's torch-order shapes, and hands each tensor out from the
//! memory-mapped file when asked, in the file's own element type (a quantized tensor
//! dequantized as [`GgufFile`] does). The stored `Q8_0` blocks stay reachable through
//! [`TensorSource::stored_blocks`], so an 8-bit run takes them as they are.
//!
//! The one tensor whose values change is `A` (F32, or listed as F32 when quantized): it is
//! handed out as `A_log = ln(-A)`, computed whenever it is read (it is small: `d_inner x
//! d_state`). That inverse is not bit-exact, as the module docs of [`crate::gguf`] say. A name
//! llama.cpp's Mamba does not have is kept as it is, so the runtime's "unused tensor" check
//! names it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use tantra_formats::gguf::GgufFile;
use tantra_formats::{DType, Format, FormatError, StoredBlocks, TensorInfo, TensorSource, Value};

use crate::gguf::tantra_name;

/// The tensors of a llama.cpp Mamba GGUF under tantra's names, read from the file on demand
/// (see the module docs).
#[derive(Debug)]
pub struct MambaGgufSource {
    file: GgufFile,
    infos: Vec<TensorInfo>,
    /// Per tensor: true for `A`, handed out as `A_log = ln(-A)`.
    a_log: Vec<bool>,
}

impl MambaGgufSource {
    /// The tensors of `file` under tantra's names. Nothing is read yet: each tensor is read
    /// when it is asked for.
    pub fn new(file: GgufFile) -> Self {
        let infos: Vec<TensorInfo> = file
            .tensors()
            .iter()
            .map(|t| TensorInfo::new(tantra_name(&t.name), t.dtype, t.shape.clone()))
            .collect();
        let a_log = infos
            .iter()
            .map(|t| t.name.ends_with(".A_log") && t.dtype == DType::F32)
            .collect();
        MambaGgufSource { file, infos, a_log }
    }

    /// The GGUF file read from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    fn is_a_log(&self, index: usize) -> bool {
        self.a_log.get(index).copied().unwrap_or(false)
    }

    /// `ln(-A)` of tensor `index` (an F32 `A`) as little-endian f32 bytes.
    fn a_log_bytes(&self, index: usize) -> Result<Vec<u8>, FormatError> {
        let a = self.file.tensor_bytes(index)?;
        Ok(a.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .flat_map(|a| (-a).ln().to_le_bytes())
            .collect())
    }

    /// The error for bytes `range` of tensor `index` that lie outside its bytes.
    fn outside(&self, index: usize, range: &Range<u64>, len: usize) -> FormatError {
        let name = self.infos.get(index).map_or("?", |t| t.name.as_str());
        let e = FormatError::memory(format!(
            "bytes {}..{} of tensor {name:?} asked for; it has {len}",
            range.start, range.end
        ));
        match self.file.path() {
            Some(p) => e.with_path(p),
            None => e,
        }
    }
}

impl TensorSource for MambaGgufSource {
    fn format(&self) -> Format {
        Format::Gguf
    }

    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }

    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        if self.is_a_log(index) {
            return self.a_log_bytes(index).map(Cow::Owned);
        }
        self.file.tensor_bytes(index)
    }

    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        if self.is_a_log(index) {
            return sink(&self.a_log_bytes(index)?);
        }
        self.file.stream_tensor(index, sink)
    }

    fn stream_tensor_range(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        if !self.is_a_log(index) {
            return self.file.stream_tensor_range(index, range, sink);
        }
        let bytes = self.a_log_bytes(index)?;
        let part = usize::try_from(range.start)
            .ok()
            .zip(usize::try_from(range.end).ok())
            .filter(|(s, e)| s <= e)
            .and_then(|(s, e)| bytes.get(s..e))
            .ok_or_else(|| self.outside(index, &range, bytes.len()))?;
        sink(part)
    }

    fn file_range(&self, index: usize) -> Option<Range<u64>> {
        if self.is_a_log(index) {
            return None;
        }
        self.file.file_range(index)
    }

    fn stored_blocks(&self, index: usize) -> Option<StoredBlocks> {
        if self.is_a_log(index) {
            return None;
        }
        self.file.stored_blocks(index)
    }

    fn stream_blocks(
        &self,
        index: usize,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        if self.is_a_log(index) {
            let name = self.infos.get(index).map_or("?", |t| t.name.as_str());
            let e = FormatError::memory(format!(
                "tensor {name:?} is handed out as ln(-A), not as its stored blocks"
            ));
            return Err(match self.file.path() {
                Some(p) => e.with_path(p),
                None => e,
            });
        }
        self.file.stream_blocks(index, range, sink)
    }

    fn metadata(&self) -> &BTreeMap<String, String> {
        self.file.metadata()
    }

    fn values(&self) -> &BTreeMap<String, Value> {
        self.file.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/gguf")
            .join(name)
    }

    fn f32s(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Every tensor of llama-quantize's Q8_0 file under its tantra name and torch shape, with
    /// the file's values (Q8_0 dequantized, `A` as `ln(-A)`), whole, streamed and in ranges;
    /// the Q8_0 blocks as the file stores them.
    #[test]
    fn renames_and_reads_on_demand() {
        let path = fixture("mamba_tiny_q8_0.gguf");
        let src = MambaGgufSource::new(GgufFile::open(&path).unwrap());
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(src.format(), Format::Gguf);
        assert_eq!(src.tensors().len(), file.tensors().len());
        assert_eq!(src.metadata(), file.metadata());
        let (mut a_logs, mut blocks) = (0, 0);
        for (i, (t, f)) in src.tensors().iter().zip(file.tensors()).enumerate() {
            assert_eq!(t.name, tantra_name(&f.name));
            assert_eq!((t.dtype, &t.shape), (f.dtype, &f.shape));
            let want: Vec<u8> = if t.name.ends_with(".A_log") {
                a_logs += 1;
                f32s(&file.tensor_bytes(i).unwrap())
                    .iter()
                    .flat_map(|a| (-a).ln().to_le_bytes())
                    .collect()
            } else {
                file.tensor_bytes(i).unwrap().into_owned()
            };
            assert!(src.tensor_bytes(i).unwrap() == want, "{}", t.name);
            let mut streamed = Vec::new();
            src.stream_tensor(i, &mut |c| {
                streamed.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert!(streamed == want, "{}", t.name);
            let len = want.len() as u64;
            let mut part = Vec::new();
            src.stream_tensor_range(i, len / 3..len, &mut |c| {
                part.extend_from_slice(c);
                Ok(())
            })
            .unwrap();
            assert!(part[..] == want[want.len() / 3..], "{}", t.name);
            if let Some(b) = src.stored_blocks(i) {
                blocks += 1;
                let mut raw = Vec::new();
                src.stream_blocks(i, 0..b.bytes, &mut |c| {
                    raw.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
                assert!(raw == file.raw_bytes(i).unwrap(), "{}", t.name);
            }
        }
        assert_eq!((a_logs, blocks), (2, 7));
        let a = src.find("backbone.layers.0.mixer.A_log").unwrap();
        let len = src.tensors()[a].byte_len().unwrap();
        let err = src
            .stream_tensor_range(a, 0..len + 4, &mut |_| Ok(()))
            .unwrap_err();
        let msg = tantra_formats::chain(&err).to_string();
        assert!(
            msg.contains("A_log") && msg.contains("mamba_tiny_q8_0.gguf"),
            "{msg}"
        );
        assert!(src.stored_blocks(a).is_none());
    }
}
