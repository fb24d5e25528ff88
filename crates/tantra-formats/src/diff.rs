//! Comparing two weight sources: which tensors exist in one only, which changed dtype or
//! shape, which hold different values (the largest absolute difference, with a tolerance),
//! and which non-tensor values (epoch, optimizer settings) differ. The report is typed so
//! that the CLI prints it for people and as JSON from the same data.
//!
//! Tensors are compared in bounded chunks of both files where both sources can serve parts
//! of a tensor from their file (memory maps), so comparing two 10 GB checkpoints holds a few
//! MB, not two `Vec<f64>` of every element; a tensor that has to be materialized (a strided
//! PyTorch view) is read whole once. f16 and bf16 are decoded with `half`.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Serialize, Serializer};

use crate::error::FormatError;
use crate::{DType, Progress, TensorSource};

/// Bytes of each tensor compared at a time.
const CHUNK: u64 = 4 << 20;

/// How to compare.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiffOptions {
    /// Values within this absolute difference count as equal (floats and integers alike).
    pub atol: f64,
}

/// What differs between two sources.
#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub identical: bool,
    /// Tensors compared (present in both with the same dtype and shape).
    pub compared: usize,
    pub only_in_a: Vec<String>,
    pub only_in_b: Vec<String>,
    /// Same name, other dtype or shape.
    pub changed: Vec<ShapeChange>,
    /// Same dtype and shape, values further apart than the tolerance.
    pub values_differ: Vec<ValueDiff>,
    pub non_tensor_values_differ: Vec<NonTensorDiff>,
}

/// A tensor whose dtype or shape differs.
#[derive(Debug, Clone, Serialize)]
pub struct ShapeChange {
    pub name: String,
    pub a: Layout,
    pub b: Layout,
}

/// A tensor's dtype and shape.
#[derive(Debug, Clone, Serialize)]
pub struct Layout {
    pub dtype: &'static str,
    pub shape: Vec<u64>,
}

/// A tensor whose values differ.
#[derive(Debug, Clone, Serialize)]
pub struct ValueDiff {
    pub name: String,
    /// Infinite (printed `"inf"` in JSON) when the values cannot be compared as numbers (a
    /// dtype without a numeric decoding, or NaN against a number) and the bytes differ.
    #[serde(serialize_with = "finite_or_inf")]
    pub max_abs_diff: f64,
}

/// A non-tensor value that differs (absent on one side: `null`).
#[derive(Debug, Clone, Serialize)]
pub struct NonTensorDiff {
    pub name: String,
    pub a: Option<serde_json::Value>,
    pub b: Option<serde_json::Value>,
}

fn finite_or_inf<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str("inf")
    }
}

/// Compares `a` with `b`, reporting progress over the bytes of `a`'s tensors.
///
/// # Errors
/// A tensor of either source that cannot be read.
pub fn diff(
    a: &dyn TensorSource,
    b: &dyn TensorSource,
    opts: &DiffOptions,
    progress: &dyn Progress,
) -> Result<DiffReport, FormatError> {
    let index = |s: &dyn TensorSource| -> BTreeMap<String, usize> {
        s.tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect()
    };
    let (ia, ib) = (index(a), index(b));
    let only_in_a: Vec<String> = ia
        .keys()
        .filter(|k| !ib.contains_key(*k))
        .cloned()
        .collect();
    let only_in_b: Vec<String> = ib
        .keys()
        .filter(|k| !ia.contains_key(*k))
        .cloned()
        .collect();
    let mut changed = Vec::new();
    let mut values_differ = Vec::new();
    let mut compared = 0;
    let total = a
        .tensors()
        .iter()
        .map(|t| t.byte_len().unwrap_or(0))
        .fold(0u64, u64::saturating_add);
    progress.begin("comparing", total);
    let result = (|| {
        for (i, ta) in a.tensors().iter().enumerate() {
            let len = ta.byte_len().unwrap_or(0);
            if let Some(&j) = ib.get(&ta.name) {
                let tb = &b.tensors()[j];
                if ta.dtype != tb.dtype || ta.shape != tb.shape {
                    changed.push(ShapeChange {
                        name: ta.name.clone(),
                        a: Layout {
                            dtype: ta.dtype.as_str(),
                            shape: ta.shape.clone(),
                        },
                        b: Layout {
                            dtype: tb.dtype.as_str(),
                            shape: tb.shape.clone(),
                        },
                    });
                } else {
                    compared += 1;
                    let d = compare(a, i, b, j, ta.dtype, len)?;
                    if d > opts.atol {
                        values_differ.push(ValueDiff {
                            name: ta.name.clone(),
                            max_abs_diff: d,
                        });
                    }
                }
            }
            progress.advance(len);
        }
        Ok::<(), FormatError>(())
    })();
    progress.end();
    result?;
    changed.sort_by(|x, y| x.name.cmp(&y.name));
    values_differ.sort_by(|x, y| x.name.cmp(&y.name));
    let keys: BTreeSet<&String> = a.values().keys().chain(b.values().keys()).collect();
    let non_tensor_values_differ: Vec<NonTensorDiff> = keys
        .into_iter()
        .filter_map(|k| {
            let (va, vb) = (a.values().get(k), b.values().get(k));
            (va != vb).then(|| NonTensorDiff {
                name: k.clone(),
                a: va.map(|v| v.to_json()),
                b: vb.map(|v| v.to_json()),
            })
        })
        .collect();
    Ok(DiffReport {
        identical: only_in_a.is_empty()
            && only_in_b.is_empty()
            && changed.is_empty()
            && values_differ.is_empty()
            && non_tensor_values_differ.is_empty(),
        compared,
        only_in_a,
        only_in_b,
        changed,
        values_differ,
        non_tensor_values_differ,
    })
}

/// The largest absolute difference between tensor `i` of `a` and `j` of `b` (same dtype and
/// `len` bytes), in chunks where both can serve ranges of their file.
fn compare(
    a: &dyn TensorSource,
    i: usize,
    b: &dyn TensorSource,
    j: usize,
    dtype: DType,
    len: u64,
) -> Result<f64, FormatError> {
    let ranged = a.file_range(i).is_some() && b.file_range(j).is_some();
    if !ranged || len <= CHUNK {
        let (x, y): (Cow<'_, [u8]>, Cow<'_, [u8]>) = (a.tensor_bytes(i)?, b.tensor_bytes(j)?);
        return Ok(max_abs_diff(dtype, &x, &y));
    }
    let elem = dtype.size().unwrap_or(1).max(1);
    let step = (CHUNK - CHUNK % elem).max(elem);
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut worst = 0.0f64;
    let mut off = 0;
    while off < len {
        let end = (off + step).min(len);
        x.clear();
        y.clear();
        a.stream_tensor_range(i, off..end, &mut |c| {
            x.extend_from_slice(c);
            Ok(())
        })?;
        b.stream_tensor_range(j, off..end, &mut |c| {
            y.extend_from_slice(c);
            Ok(())
        })?;
        worst = worst.max(max_abs_diff(dtype, &x, &y));
        off = end;
    }
    Ok(worst)
}

/// Decodes element `k` of little-endian `bytes` as f64; `None` for dtypes without a numeric
/// decoding (compared byte for byte).
fn element(dtype: DType, bytes: &[u8], k: usize) -> Option<f64> {
    fn arr<const N: usize>(b: &[u8], k: usize) -> Option<[u8; N]> {
        b.get(k * N..(k + 1) * N).and_then(|s| s.try_into().ok())
    }
    Some(match dtype {
        DType::F32 => f64::from(f32::from_le_bytes(arr(bytes, k)?)),
        DType::F64 => f64::from_le_bytes(arr(bytes, k)?),
        DType::F16 => half::f16::from_bits(u16::from_le_bytes(arr(bytes, k)?)).to_f64(),
        DType::BF16 => half::bf16::from_bits(u16::from_le_bytes(arr(bytes, k)?)).to_f64(),
        DType::I8 => f64::from(*bytes.get(k)? as i8),
        DType::U8 | DType::Bool => f64::from(*bytes.get(k)?),
        DType::I16 => f64::from(i16::from_le_bytes(arr(bytes, k)?)),
        DType::U16 => f64::from(u16::from_le_bytes(arr(bytes, k)?)),
        DType::I32 => f64::from(i32::from_le_bytes(arr(bytes, k)?)),
        DType::U32 => f64::from(u32::from_le_bytes(arr(bytes, k)?)),
        DType::I64 => i64::from_le_bytes(arr(bytes, k)?) as f64,
        DType::U64 => u64::from_le_bytes(arr(bytes, k)?) as f64,
        _ => return None,
    })
}

/// The largest absolute difference between two runs of elements of `dtype`; infinite when
/// the bytes differ and cannot be compared as numbers. NaN equals NaN here (a checkpoint
/// compared with itself is identical).
pub fn max_abs_diff(dtype: DType, x: &[u8], y: &[u8]) -> f64 {
    if x == y {
        return 0.0;
    }
    let numeric = element(dtype, &[0u8; 8], 0).is_some();
    let n = dtype.size().unwrap_or(1).max(1) as usize;
    if !numeric || x.len() != y.len() {
        return f64::INFINITY;
    }
    let mut worst = 0.0f64;
    for k in 0..x.len() / n {
        let (Some(p), Some(q)) = (element(dtype, x, k), element(dtype, y, k)) else {
            return f64::INFINITY;
        };
        if p.is_nan() && q.is_nan() {
            continue;
        }
        let d = (p - q).abs();
        if d.is_nan() {
            return f64::INFINITY;
        }
        worst = worst.max(d);
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemorySource, NoProgress};

    fn le<T: Copy>(v: &[T], f: impl Fn(T) -> Vec<u8>) -> Vec<u8> {
        v.iter().flat_map(|x| f(*x)).collect()
    }

    #[test]
    fn halves_and_floats() {
        let h = |v: &[f32]| {
            le(v, |x| {
                half::f16::from_f32(x).to_bits().to_le_bytes().to_vec()
            })
        };
        assert_eq!(
            max_abs_diff(DType::F16, &h(&[1.0, 2.0]), &h(&[1.0, 2.5])),
            0.5
        );
        let b = |v: &[f32]| {
            le(v, |x| {
                half::bf16::from_f32(x).to_bits().to_le_bytes().to_vec()
            })
        };
        assert_eq!(max_abs_diff(DType::BF16, &b(&[-2.0]), &b(&[2.0])), 4.0);
        let f = |v: &[f32]| le(v, |x| x.to_le_bytes().to_vec());
        assert_eq!(
            max_abs_diff(DType::F32, &f(&[1.0, 2.0]), &f(&[1.0, 2.25])),
            0.25
        );
        assert_eq!(
            max_abs_diff(DType::F32, &f(&[f32::NAN]), &f(&[f32::NAN])),
            0.0
        );
        assert!(max_abs_diff(DType::F32, &f(&[f32::NAN]), &f(&[1.0])).is_infinite());
        let i = |v: &[i64]| le(v, |x| x.to_le_bytes().to_vec());
        assert_eq!(max_abs_diff(DType::I64, &i(&[5]), &i(&[-5])), 10.0);
    }

    #[test]
    fn reports_what_differs() {
        let mut a = MemorySource::new();
        a.push_f32("same", vec![2], &[1.0, 2.0]).unwrap();
        a.push_f32("moved", vec![2], &[1.0, 2.0]).unwrap();
        a.push_f32("reshaped", vec![2], &[1.0, 2.0]).unwrap();
        a.push_f32("gone", vec![1], &[1.0]).unwrap();
        let mut b = MemorySource::new();
        b.push_f32("same", vec![2], &[1.0, 2.0]).unwrap();
        b.push_f32("moved", vec![2], &[1.0, 2.5]).unwrap();
        b.push_f32("reshaped", vec![1, 2], &[1.0, 2.0]).unwrap();
        b.push_f32("new", vec![1], &[1.0]).unwrap();
        let r = diff(&a, &b, &DiffOptions::default(), &NoProgress).unwrap();
        assert!(!r.identical);
        assert_eq!(r.compared, 2);
        assert_eq!(r.only_in_a, vec!["gone"]);
        assert_eq!(r.only_in_b, vec!["new"]);
        assert_eq!(r.changed[0].name, "reshaped");
        assert_eq!(r.changed[0].b.shape, vec![1, 2]);
        assert_eq!(r.values_differ.len(), 1);
        assert_eq!(r.values_differ[0].max_abs_diff, 0.5);
        let tolerant = diff(&a, &b, &DiffOptions { atol: 0.5 }, &NoProgress).unwrap();
        assert!(tolerant.values_differ.is_empty());
        let same = diff(&a, &a, &DiffOptions::default(), &NoProgress).unwrap();
        assert!(same.identical);
        let j = serde_json::to_value(ValueDiff {
            name: "x".into(),
            max_abs_diff: f64::INFINITY,
        })
        .unwrap();
        assert_eq!(j["max_abs_diff"], "inf");
    }

    #[test]
    fn large_tensors_are_compared_in_chunks_of_both_files() {
        let dir = std::env::temp_dir().join(format!("tantra-diff-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = 1_500_000usize; // 6 MB of f32: two chunks
        let v: Vec<f32> = (0..n).map(|i| (i % 1000) as f32).collect();
        let mut w = v.clone();
        w[n - 3] += 0.75;
        let mut paths = Vec::new();
        for (name, data) in [("a", &v), ("b", &w)] {
            let mut m = MemorySource::new();
            m.push_f32("t", vec![n as u64], data).unwrap();
            let p = dir.join(format!("{name}.safetensors"));
            let mut f = std::fs::File::create(&p).unwrap();
            crate::write_to(
                &mut f,
                crate::OutputFormat::Safetensors,
                &m,
                name,
                &NoProgress,
            )
            .unwrap();
            paths.push(p);
        }
        let (sa, sb) = (
            crate::open(&paths[0]).unwrap(),
            crate::open(&paths[1]).unwrap(),
        );
        assert!(sa.file_range(0).is_some() && sb.file_range(0).is_some());
        let r = diff(
            sa.as_ref(),
            sb.as_ref(),
            &DiffOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(r.values_differ.len(), 1);
        assert_eq!(r.values_differ[0].max_abs_diff, 0.75);
        let same = diff(
            sa.as_ref(),
            sa.as_ref(),
            &DiffOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert!(same.identical);
        drop((sa, sb));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
