//! The remote layout and its manifests (`docs/remote.md` describes both for people).
//!
//! ```text
//! <prefix>/blobs/<sha256>                             a tensor's row-major little-endian bytes,
//!                                                      or a whole file, named by their sha256
//! <prefix>/versions/<model>/<version>/version.json    the version: tensor table, tags, config, ...
//! <prefix>/versions/<model>/<version>/<format>.json   one file of it: sha256, how to rebuild it
//! <prefix>/claims/<model>/<version>/<content>.<nonce> a pusher's claim on the name (short-lived)
//! ```
//!
//! A version manifest is written once and never changed: the name stays bound to its weights
//! (the claims protocol in [`crate::claims`] decides who binds it). A format manifest says how
//! to get one file of the version back byte for byte: the order, metadata, values and nesting
//! that tantra's writer needs to rebuild it from the tensor blobs, and whether that rebuild was
//! checked to reproduce the file (`reproducible`); a file that is not is referenced whole
//! (`whole_file`), as a blob named by the file's sha256.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tantra_store::{Source, TensorDigest};

/// The layout version written into every manifest.
pub const SCHEMA: u64 = 1;

/// The key of a blob.
pub fn blob_key(sha256: &str) -> String {
    format!("blobs/{sha256}")
}

/// The folder of a version's manifests.
pub fn version_dir(model: &str, version: &str) -> String {
    format!("versions/{model}/{version}")
}

/// The key of a version manifest.
pub fn version_key(model: &str, version: &str) -> String {
    format!("{}/version.json", version_dir(model, version))
}

/// The key of a format manifest.
pub fn format_key(model: &str, version: &str, format: &str) -> String {
    format!("{}/{format}.json", version_dir(model, version))
}

/// The folder of a name's claims.
pub fn claims_dir(model: &str, version: &str) -> String {
    format!("claims/{model}/{version}/")
}

/// A model's configuration, carried with the version that names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigBlob {
    pub name: String,
    pub json: serde_json::Value,
}

/// `versions/<model>/<version>/version.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionManifest {
    pub schema: u64,
    pub model: String,
    pub version: String,
    /// The store's content digest: sha256 over the sorted tensor table.
    pub content: String,
    pub parameters: u64,
    /// Every tensor: name, dtype, shape, digest (the blob's name), sorted by name.
    pub tensors: Vec<TensorDigest>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ConfigBlob>,
    /// When the version was first registered where it was pushed from.
    pub created: String,
}

impl VersionManifest {
    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorDigest> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .and_then(|i| self.tensors.get(i))
    }

    /// Total bytes of the distinct tensor blobs.
    pub fn blob_bytes(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for t in &self.tensors {
            out.insert(t.sha256.clone(), tensor_bytes(t).unwrap_or(0));
        }
        out
    }
}

/// The byte length of a tensor from its dtype and shape, `None` when they do not make one.
pub fn tensor_bytes(t: &TensorDigest) -> Option<u64> {
    let dtype: tantra_formats::DType = t.dtype.parse().ok()?;
    let numel = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d))?;
    dtype.byte_len(numel)
}

/// How a file is laid out, beyond its tensors: what the writer needs to rebuild it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    /// Tensor names in the file's order.
    pub order: Vec<String>,
    /// `[i, j]`: tensor `i` is tensor `j` read through another name (shared storage).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub same_bytes_as: Vec<[usize; 2]>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Non-tensor values by dotted name, as [`tantra_formats::Value::to_json`] writes them.
    #[serde(default)]
    pub values: BTreeMap<String, serde_json::Value>,
    /// The nesting ([`tantra_formats::Structure::to_json`]), when the file has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub structure: Option<serde_json::Value>,
    /// The top folder of a PyTorch archive.
    pub archive: String,
}

/// `versions/<model>/<version>/<format>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FormatManifest {
    pub schema: u64,
    pub format: String,
    /// sha256 of the whole file.
    pub sha256: String,
    pub bytes: u64,
    /// Where the file came from, as the pushing root recorded it (lineage).
    pub source: Source,
    pub created: String,
    /// tantra's writer, fed the tensor blobs and `layout`, reproduces the file byte for byte
    /// (checked when it was pushed).
    pub reproducible: bool,
    pub layout: Layout,
    /// The sha256 of the whole file as a blob, for files that are not reproducible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_file: Option<String>,
}
