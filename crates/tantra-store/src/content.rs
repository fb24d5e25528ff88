//! Tensor tables: the per-tensor digests of a weight file, and the one `content` digest that
//! summarizes them.
//!
//! Computing the table reads every tensor, which is also how registration "fully validates" a
//! file: a tensor that cannot be read fails here, before anything is recorded. Two files hold
//! the same weights exactly when their tables are equal (DESIGN.md, "Names"), so the table is
//! what lets a `.pt` and a `.safetensors` of one version be compared. Tensors are digested on
//! several threads; each digest is the sha256 of the tensor's row-major little-endian bytes
//! ([`tantra_formats::tensor_digest`]).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tantra_formats::{tensor_digest, FormatError, Progress, TensorSource};

use crate::error::Result;

/// One tensor's description and digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorDigest {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<u64>,
    /// sha256 of the row-major little-endian bytes, lowercase hex.
    pub sha256: String,
}

/// Every tensor of a file, sorted by name, with the summary digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorTable {
    /// sha256 over the sorted table; see [`TensorTable::content_of`].
    pub content: String,
    pub parameters: u64,
    pub tensors: Vec<TensorDigest>,
}

impl TensorTable {
    /// Reads and digests every tensor of `src` on `jobs` threads.
    ///
    /// # Errors
    /// The first tensor that cannot be read (the error names the file and the tensor's rule).
    pub fn of(
        src: &(dyn TensorSource + Sync),
        jobs: usize,
        progress: &dyn Progress,
    ) -> Result<TensorTable, FormatError> {
        let infos = src.tensors();
        let total: u64 = infos.iter().map(|t| t.byte_len().unwrap_or(0)).sum();
        progress.begin("reading tensors", total);
        let next = AtomicUsize::new(0);
        let digests: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; infos.len()]);
        let failure: Mutex<Option<FormatError>> = Mutex::new(None);
        let jobs = jobs.clamp(1, infos.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| loop {
                    if failure.lock().map(|f| f.is_some()).unwrap_or(true) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(info) = infos.get(i) else { break };
                    match tensor_digest(src, i) {
                        Ok(d) => {
                            if let Ok(mut v) = digests.lock() {
                                v[i] = Some(d);
                            }
                            progress.advance(info.byte_len().unwrap_or(0));
                        }
                        Err(e) => {
                            if let Ok(mut f) = failure.lock() {
                                f.get_or_insert(e);
                            }
                            break;
                        }
                    }
                });
            }
        });
        progress.end();
        if let Some(e) = failure.into_inner().ok().flatten() {
            return Err(e);
        }
        let digests = digests
            .into_inner()
            .map_err(|_| FormatError::memory("digest table poisoned"))?;
        let mut tensors = Vec::with_capacity(infos.len());
        for (info, d) in infos.iter().zip(digests) {
            let Some(sha256) = d else {
                return Err(FormatError::memory(format!(
                    "tensor {:?} was not digested",
                    info.name
                )));
            };
            tensors.push(TensorDigest {
                name: info.name.clone(),
                dtype: info.dtype.as_str().to_string(),
                shape: info.shape.clone(),
                sha256,
            });
        }
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(TensorTable {
            content: Self::content_of(&tensors),
            parameters: src.parameter_count(),
            tensors,
        })
    }

    /// sha256 of one line per tensor, `name \t dtype \t d0,d1,.. \t digest \n`, in name order.
    pub fn content_of(sorted: &[TensorDigest]) -> String {
        let mut h = Sha256::new();
        for t in sorted {
            let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
            h.update(t.name.as_bytes());
            h.update(b"\t");
            h.update(t.dtype.as_bytes());
            h.update(b"\t");
            h.update(shape.join(",").as_bytes());
            h.update(b"\t");
            h.update(t.sha256.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }

    /// The distinct dtypes, sorted.
    pub fn dtypes(&self) -> Vec<String> {
        self.tensors
            .iter()
            .map(|t| t.dtype.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// The first difference from `other`, in words; `None` when they hold the same weights.
    pub fn difference(&self, other: &TensorTable) -> Option<String> {
        if self.content == other.content {
            return None;
        }
        let mut a = self.tensors.iter().peekable();
        let mut b = other.tensors.iter().peekable();
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return Some("the tensor tables differ".into()),
                (Some(x), None) => return Some(format!("tensor {:?} is only in one file", x.name)),
                (None, Some(y)) => return Some(format!("tensor {:?} is only in one file", y.name)),
                (Some(x), Some(y)) if x.name != y.name => {
                    let n = if x.name < y.name { &x.name } else { &y.name };
                    return Some(format!("tensor {n:?} is only in one file"));
                }
                (Some(x), Some(y)) => {
                    if x.dtype != y.dtype || x.shape != y.shape {
                        return Some(format!(
                            "tensor {:?}: {} {:?} vs {} {:?}",
                            x.name, x.dtype, x.shape, y.dtype, y.shape
                        ));
                    }
                    if x.sha256 != y.sha256 {
                        return Some(format!("tensor {:?}: the values differ", x.name));
                    }
                    a.next();
                    b.next();
                }
            }
        }
    }

    /// The content digest its entries add up to; equal to `content` for an intact table.
    pub fn recomputed_content(&self) -> String {
        let mut sorted = self.tensors.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        TensorTable::content_of(&sorted)
    }

    /// Reads a table written by [`TensorTable::save`]; `None` when missing.
    pub fn load(path: &Path) -> Result<Option<TensorTable>> {
        crate::fsx::read_json(path)
    }

    /// Writes the table atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            crate::fsx::create_dirs(dir)?;
        }
        crate::fsx::write_json_atomic(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantra_formats::{MemorySource, NoProgress};

    fn src(vals: &[f32]) -> MemorySource {
        let mut m = MemorySource::new();
        m.push_f32("b", vec![vals.len() as u64], vals).unwrap();
        m.push_f32("a", vec![1], &[1.0]).unwrap();
        m
    }

    #[test]
    fn equal_weights_equal_content() {
        let t1 = TensorTable::of(&src(&[1.0, 2.0]), 2, &NoProgress).unwrap();
        let t2 = TensorTable::of(&src(&[1.0, 2.0]), 1, &NoProgress).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.tensors[0].name, "a");
        assert_eq!(t1.parameters, 3);
        assert_eq!(t1.dtypes(), vec!["F32".to_string()]);
        assert_eq!(t1.difference(&t2), None);
        let t3 = TensorTable::of(&src(&[1.0, 2.5]), 2, &NoProgress).unwrap();
        assert_ne!(t1.content, t3.content);
        assert_eq!(
            t1.difference(&t3).unwrap(),
            "tensor \"b\": the values differ"
        );
        let t4 = TensorTable::of(&src(&[1.0]), 2, &NoProgress).unwrap();
        assert!(t1.difference(&t4).unwrap().contains("[2] vs F32 [1]"));
    }
}
