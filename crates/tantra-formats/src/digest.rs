//! Tensor digests: sha256 of a tensor's row-major little-endian bytes.
//!
//! This is the definition in DESIGN.md ("Names") and the one `torch-check digest` computes:
//! two files hold the same weights exactly when names, dtypes, shapes and digests agree,
//! whatever container they are in.

use sha2::{Digest, Sha256};

use crate::error::FormatError;
use crate::tensor::TensorSource;

/// Hex sha256 of tensor `index` of `src`, streamed (no copy of the tensor is made where the
/// source can stream).
pub fn tensor_digest(src: &dyn TensorSource, index: usize) -> Result<String, FormatError> {
    tensor_sha256(src, index).map(hex::encode)
}

/// [`tensor_digest`] as the 32 raw bytes (what a table of a million digests should hold).
///
/// # Errors
/// As [`tensor_digest`].
pub fn tensor_sha256(src: &dyn TensorSource, index: usize) -> Result<[u8; 32], FormatError> {
    let mut h = Sha256::new();
    src.stream_tensor(index, &mut |chunk| {
        h.update(chunk);
        Ok(())
    })?;
    Ok(h.finalize().into())
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Digests of every tensor of `src`, in `src`'s order, as `(name, hex)`.
pub fn all_digests(src: &dyn TensorSource) -> Result<Vec<(String, String)>, FormatError> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(src.tensors().len());
    for (i, t) in src.tensors().iter().enumerate() {
        // A tensor read through several names is hashed once.
        let d = match src.same_bytes_as(i).and_then(|j| out.get(j)) {
            Some((_, d)) => d.clone(),
            None => tensor_digest(src, i)?,
        };
        out.push((t.name.clone(), d));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::MemorySource;

    #[test]
    fn empty_tensor_digest_is_sha256_of_nothing() {
        let mut m = MemorySource::new();
        m.push_f32("e", vec![0, 4], &[]).unwrap();
        assert_eq!(
            tensor_digest(&m, 0).unwrap(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
