//! A [`TensorSource`] rebuilt from a manifest: tensors in the file's order with the file's
//! metadata, values and nesting, their bytes taken from verified blobs on disk (a pull) or from
//! the original file (the check at push time that the rebuild reproduces the file). Both use
//! the same type, so what push checks is exactly what pull will do.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tantra_formats::{
    DType, ErrorKind, Format, FormatError, Structure, TensorInfo, TensorSource, Value,
};

use crate::manifest::{Layout, VersionManifest};
use crate::transfer::Arrivals;

/// Where the tensor bytes come from.
pub(crate) enum Bytes<'a> {
    /// `<dir>/<digest>`, each checked against its digest when it was downloaded; with
    /// `arrivals`, a download still in progress that a read waits for.
    Blobs {
        dir: PathBuf,
        arrivals: Option<&'a Arrivals>,
    },
    /// The same index of an open file.
    File(&'a dyn TensorSource),
}

/// A file's tensors as a manifest describes them.
pub(crate) struct ManifestSource<'a> {
    infos: Vec<TensorInfo>,
    digests: Vec<String>,
    same: Vec<Option<usize>>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
    structure: Option<Structure>,
    bytes: Bytes<'a>,
}

impl<'a> ManifestSource<'a> {
    /// Builds the source of `layout` over the tensors of `version`.
    ///
    /// # Errors
    /// (As a message, for [`crate::RemoteError::BadManifest`].) A name the version does not
    /// have, a dtype tantra does not know, a value or structure that does not parse.
    pub(crate) fn new(
        version: &VersionManifest,
        layout: &Layout,
        bytes: Bytes<'a>,
    ) -> Result<Self, String> {
        let mut infos = Vec::with_capacity(layout.order.len());
        let mut digests = Vec::with_capacity(layout.order.len());
        for name in &layout.order {
            let t = version.tensor(name).ok_or_else(|| {
                format!("the layout names tensor {name:?}, which the version lacks")
            })?;
            let dtype: DType = t
                .dtype
                .parse()
                .map_err(|_| format!("tensor {name:?} has an unknown dtype {:?}", t.dtype))?;
            infos.push(TensorInfo::new(name.clone(), dtype, t.shape.clone()));
            digests.push(t.sha256.clone());
        }
        let mut same = vec![None; infos.len()];
        for [i, j] in &layout.same_bytes_as {
            if *j >= *i || *i >= infos.len() {
                return Err(format!("same_bytes_as [{i}, {j}] is out of order or range"));
            }
            same[*i] = Some(*j);
        }
        let mut values = BTreeMap::new();
        for (k, v) in &layout.values {
            let v = Value::from_json(v).ok_or_else(|| format!("value {k:?} does not parse"))?;
            values.insert(k.clone(), v);
        }
        let structure = match &layout.structure {
            Some(j) => Some(Structure::from_json(j).map_err(|e| format!("the nesting: {e}"))?),
            None => None,
        };
        Ok(ManifestSource {
            infos,
            digests,
            same,
            metadata: layout.metadata.clone(),
            values,
            structure,
            bytes,
        })
    }
}

impl TensorSource for ManifestSource<'_> {
    fn format(&self) -> Format {
        Format::Memory
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        match &self.bytes {
            Bytes::File(src) => src.tensor_bytes(index),
            Bytes::Blobs { dir, arrivals } => {
                let d = self.digests.get(index).ok_or_else(|| {
                    FormatError::memory(format!("tensor index {index} out of range"))
                })?;
                let path = dir.join(d);
                if let Some(a) = arrivals {
                    if !a.wait_for(&path) {
                        return Err(FormatError::new(
                            &path,
                            ErrorKind::Unsupported(format!(
                                "the download ended without the blob of tensor {:?}",
                                self.infos[index].name
                            )),
                        ));
                    }
                }
                let b = std::fs::read(&path).map_err(|e| FormatError::new(&path, e))?;
                let want = self.infos[index].byte_len();
                if want != Some(b.len() as u64) {
                    return Err(FormatError::new(
                        &path,
                        ErrorKind::Unsupported(format!(
                            "blob of tensor {:?} has {} bytes, expected {want:?}",
                            self.infos[index].name,
                            b.len()
                        )),
                    ));
                }
                Ok(Cow::Owned(b))
            }
        }
    }
    fn same_bytes_as(&self, index: usize) -> Option<usize> {
        self.same.get(index).copied().flatten()
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
    fn structure(&self) -> Option<&Structure> {
        self.structure.as_ref()
    }
}

/// A writer that only hashes (and counts) what it is given.
#[derive(Default)]
pub(crate) struct HashSink {
    pub(crate) hash: Sha256,
    pub(crate) bytes: u64,
}

impl HashSink {
    pub(crate) fn hex(self) -> String {
        hex::encode(self.hash.finalize())
    }
}

impl Write for HashSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.hash.update(buf);
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer that hashes what passes through to `inner`.
pub(crate) struct Tee<'w, W: Write> {
    pub(crate) inner: &'w mut W,
    pub(crate) sink: HashSink,
}

impl<W: Write> Write for Tee<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sink.hash.update(&buf[..n]);
        self.sink.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
