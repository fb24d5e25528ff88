//! Opening the weights of a model: Hugging Face model directories: `config.json` plus weights in one file or in shards
//! (`model.safetensors`, `model.safetensors.index.json` + `model-0000i-of-0000n.safetensors`,
//! `pytorch_model.bin`, `pytorch_model.bin.index.json`), and single weight files.
//!
//! An index is untrusted input: it names files to open. Each shard name must be a plain file
//! name (no separators, no `..`), must exist in the directory, and must still lie inside it
//! once symlinks are resolved; every tensor the index lists must be in the shard it names.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tantra_formats::gguf::GgufFile;
use tantra_formats::{detect, open, DynSource, Format, FormatError, TensorSource};

use crate::gguf::is_llama_cpp_mamba;
use crate::gguf_source::MambaGgufSource;

/// An error of opening a checkpoint: its files, its index, its shard names.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A weight file could not be read.
    #[error(transparent)]
    Format(#[from] FormatError),

    /// An index file could not be read.
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// An index is not JSON of the expected form.
    #[error("{path}: not valid JSON")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    /// A tensor an index lists is not in the shard it names.
    #[error("tensor {name:?} is missing from the weights")]
    MissingTensor { name: String },

    /// A directory holds no weights that can be read.
    #[error("{dir}: no weights found (expected model.safetensors, model.safetensors.index.json, pytorch_model.bin or pytorch_model.bin.index.json)")]
    NoWeights { dir: PathBuf },

    /// A shard index names a file outside its directory, or a file that does not exist.
    #[error("{index}: shard {shard:?} is not a plain file name in that directory")]
    BadShardName { index: PathBuf, shard: String },
}

type Result<T, E = OpenError> = std::result::Result<T, E>;

/// The weight files, in the order of preference transformers uses.
const SINGLE_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];
const INDEX_FILES: [&str; 2] = [
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
];

/// Weight files opened as tensor sources (one, or one per shard).
pub struct OpenWeights {
    /// The files, in the order opened.
    pub files: Vec<PathBuf>,
    sources: Vec<DynSource>,
}

impl OpenWeights {
    /// Opens one weight file of any format tantra reads; a llama.cpp Mamba GGUF is read under
    /// tantra's names, from the file on demand (see [`MambaGgufSource`]).
    ///
    /// # Errors
    /// The file's read error.
    pub fn file(path: &Path) -> Result<Self> {
        if detect(path)? == Format::Gguf {
            let g = GgufFile::open(path)?;
            if is_llama_cpp_mamba(&g) {
                return Ok(OpenWeights {
                    files: vec![path.to_path_buf()],
                    sources: vec![Box::new(MambaGgufSource::new(g))],
                });
            }
        }
        Ok(OpenWeights {
            files: vec![path.to_path_buf()],
            sources: vec![open(path)?],
        })
    }

    /// Sources already open (in-memory tensors, or files opened elsewhere).
    pub fn from_sources(sources: Vec<DynSource>) -> Self {
        OpenWeights {
            files: Vec::new(),
            sources,
        }
    }

    /// The sources, one per file.
    pub fn sources(&self) -> Vec<&dyn TensorSource> {
        self.sources
            .iter()
            .map(|s| s.as_ref() as &dyn TensorSource)
            .collect()
    }

    /// Opens the weights of a model directory: a single file if present, else a sharded set
    /// through its index (safetensors preferred over PyTorch in both cases).
    ///
    /// # Errors
    /// [`OpenError::NoWeights`], [`OpenError::BadShardName`], an index that is not
    /// JSON of the expected form, a tensor the index lists but its shard lacks, or a read
    /// error of a file.
    pub fn directory(dir: &Path) -> Result<Self> {
        for name in SINGLE_FILES {
            let p = dir.join(name);
            if p.is_file() {
                return Self::file(&p);
            }
        }
        for name in INDEX_FILES {
            let p = dir.join(name);
            if p.is_file() {
                return Self::index(dir, &p);
            }
        }
        Err(OpenError::NoWeights {
            dir: dir.to_path_buf(),
        })
    }

    fn index(dir: &Path, index_path: &Path) -> Result<Self> {
        #[derive(Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = fs::read_to_string(index_path).map_err(|source| OpenError::Io {
            path: index_path.to_path_buf(),
            source,
        })?;
        let index: Index = serde_json::from_str(&text).map_err(|source| OpenError::Json {
            path: index_path.to_path_buf(),
            source,
        })?;
        let canonical_dir = fs::canonicalize(dir).map_err(|source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut shards: Vec<&str> = index.weight_map.values().map(String::as_str).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut files = Vec::with_capacity(shards.len());
        let mut sources = Vec::with_capacity(shards.len());
        for shard in &shards {
            let path = checked_shard(index_path, &canonical_dir, shard)?;
            sources.push(open(&path)?);
            files.push(path);
        }
        for (tensor, shard) in &index.weight_map {
            let i = shards.binary_search(&shard.as_str()).unwrap_or(0);
            if sources[i].find(tensor).is_none() {
                return Err(OpenError::MissingTensor {
                    name: format!("{tensor} (listed in {} for {shard})", index_path.display()),
                });
            }
        }
        Ok(OpenWeights { files, sources })
    }
}

/// The path of shard `name`, if it is a plain file name of an existing file inside `dir`.
fn checked_shard(index_path: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    let bad = || OpenError::BadShardName {
        index: index_path.to_path_buf(),
        shard: name.to_string(),
    };
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && !name.contains(':');
    if !plain {
        return Err(bad());
    }
    let path = dir.join(name);
    let resolved = fs::canonicalize(&path).map_err(|_| bad())?;
    if !resolved.starts_with(dir) || !resolved.is_file() {
        return Err(bad());
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_must_be_plain_files_inside() {
        let dir = tempfile::tempdir().unwrap();
        let d = fs::canonicalize(dir.path()).unwrap();
        fs::write(d.join("a.safetensors"), b"x").unwrap();
        let idx = d.join("model.safetensors.index.json");
        assert!(checked_shard(&idx, &d, "a.safetensors").is_ok());
        for bad in [
            "../a.safetensors",
            "/etc/passwd",
            "sub/a.safetensors",
            "..",
            "",
            "missing.safetensors",
            "c:a",
        ] {
            assert!(
                matches!(
                    checked_shard(&idx, &d, bad),
                    Err(OpenError::BadShardName { .. })
                ),
                "{bad}"
            );
        }
        #[cfg(unix)]
        {
            let outside = tempfile::tempdir().unwrap();
            fs::write(outside.path().join("o.safetensors"), b"x").unwrap();
            std::os::unix::fs::symlink(
                outside.path().join("o.safetensors"),
                d.join("l.safetensors"),
            )
            .unwrap();
            assert!(checked_shard(&idx, &d, "l.safetensors").is_err());
        }
    }

    #[test]
    fn empty_directory_has_no_weights() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            OpenWeights::directory(dir.path()),
            Err(OpenError::NoWeights { .. })
        ));
    }
}
