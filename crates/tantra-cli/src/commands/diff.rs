//! `tantra diff A B [--json] [--atol X]`: which tensors differ between two files, and by how
//! much. Exit 0 when identical (within `--atol`), 1 otherwise.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;
use tantra_formats::{open, DType, TensorSource};

use super::with_bar;
use crate::progress::Bar;

#[derive(clap::Args)]
pub struct Args {
    /// The first weight file, or a registered MODEL[:VERSION].
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// The second weight file, or a registered MODEL[:VERSION].
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Values within this absolute difference count as equal (floats only).
    #[arg(long, default_value_t = 0.0)]
    pub atol: f64,
}

/// Decodes little-endian elements of the numeric dtypes to f64 for comparison.
fn to_f64(dtype: DType, bytes: &[u8]) -> Option<Vec<f64>> {
    fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N).map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
    }
    Some(match dtype {
        DType::F32 => chunks::<4>(bytes)
            .map(|a| f32::from_le_bytes(a) as f64)
            .collect(),
        DType::F64 => chunks::<8>(bytes).map(f64::from_le_bytes).collect(),
        DType::F16 => chunks::<2>(bytes)
            .map(|a| f16_to_f64(u16::from_le_bytes(a)))
            .collect(),
        DType::BF16 => chunks::<2>(bytes)
            .map(|a| f32::from_bits((u16::from_le_bytes(a) as u32) << 16) as f64)
            .collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as f64).collect(),
        DType::U8 | DType::Bool => bytes.iter().map(|&b| b as f64).collect(),
        DType::I16 => chunks::<2>(bytes)
            .map(|a| i16::from_le_bytes(a) as f64)
            .collect(),
        DType::U16 => chunks::<2>(bytes)
            .map(|a| u16::from_le_bytes(a) as f64)
            .collect(),
        DType::I32 => chunks::<4>(bytes)
            .map(|a| i32::from_le_bytes(a) as f64)
            .collect(),
        DType::U32 => chunks::<4>(bytes)
            .map(|a| u32::from_le_bytes(a) as f64)
            .collect(),
        DType::I64 => chunks::<8>(bytes)
            .map(|a| i64::from_le_bytes(a) as f64)
            .collect(),
        DType::U64 => chunks::<8>(bytes)
            .map(|a| u64::from_le_bytes(a) as f64)
            .collect(),
        _ => return None,
    })
}

fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24),
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        _ => sign * (1.0 + frac / 1024.0) * 2f64.powi(exp - 15),
    }
}

/// The largest absolute difference between two tensors' values; `None` for dtypes that are
/// compared byte for byte only (then any byte difference is reported as infinite).
fn max_abs_diff(dtype: DType, x: &[u8], y: &[u8]) -> f64 {
    if x == y {
        return 0.0;
    }
    match (to_f64(dtype, x), to_f64(dtype, y)) {
        (Some(a), Some(b)) => a.iter().zip(&b).fold(0.0f64, |m, (p, q)| {
            if p.is_nan() && q.is_nan() {
                m
            } else {
                let d = (p - q).abs();
                if d.is_nan() {
                    f64::INFINITY
                } else {
                    m.max(d)
                }
            }
        }),
        _ => f64::INFINITY,
    }
}

pub fn run(mut a: Args, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    a.a = crate::target::weight_path(&a.a, root)?;
    a.b = crate::target::weight_path(&a.b, root)?;
    let sa = open(&a.a)?;
    let sb = open(&a.b)?;
    let index = |s: &dyn TensorSource| -> BTreeMap<String, usize> {
        s.tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect()
    };
    let (ia, ib) = (index(sa.as_ref()), index(sb.as_ref()));
    let only_a: Vec<&String> = ia.keys().filter(|k| !ib.contains_key(*k)).collect();
    let only_b: Vec<&String> = ib.keys().filter(|k| !ia.contains_key(*k)).collect();
    let mut changed = Vec::new();
    let mut values = Vec::new();
    // Every tensor of A is visited (in file order, for the bar); those only in A are skipped.
    with_bar(
        &Bar::new(),
        "comparing",
        sa.as_ref(),
        |i| -> anyhow::Result<()> {
            let ta = &sa.tensors()[i];
            let Some(&j) = ib.get(&ta.name) else {
                return Ok(());
            };
            let tb = &sb.tensors()[j];
            let name = &ta.name;
            if ta.dtype != tb.dtype || ta.shape != tb.shape {
                changed.push((
                    name,
                    json!({"name": name,
                "a": {"dtype": ta.dtype.as_str(), "shape": ta.shape},
                "b": {"dtype": tb.dtype.as_str(), "shape": tb.shape}}),
                ));
                return Ok(());
            }
            let (xa, xb) = (sa.tensor_bytes(i)?, sb.tensor_bytes(j)?);
            let d = max_abs_diff(ta.dtype, &xa, &xb);
            if d > a.atol {
                values.push((name, json!({"name": name, "max_abs_diff": if d.is_finite() { json!(d) } else { json!("inf") }})));
            }
            Ok(())
        },
    )?;
    // Reported by name, as before.
    changed.sort_by(|x, y| x.0.cmp(y.0));
    values.sort_by(|x, y| x.0.cmp(y.0));
    let changed: Vec<serde_json::Value> = changed.into_iter().map(|(_, v)| v).collect();
    let values: Vec<serde_json::Value> = values.into_iter().map(|(_, v)| v).collect();
    let mut value_changes = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        sa.values().keys().chain(sb.values().keys()).collect();
    for k in keys {
        let (va, vb) = (sa.values().get(k), sb.values().get(k));
        if va != vb {
            value_changes.push(json!({"name": k,
                "a": va.map(|v| v.to_json()), "b": vb.map(|v| v.to_json())}));
        }
    }
    let identical = only_a.is_empty()
        && only_b.is_empty()
        && changed.is_empty()
        && values.is_empty()
        && value_changes.is_empty();
    if a.json {
        let out = json!({
            "a": a.a.display().to_string(), "b": a.b.display().to_string(),
            "identical": identical,
            "only_in_a": only_a, "only_in_b": only_b,
            "changed": changed, "values_differ": values, "non_tensor_values_differ": value_changes,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if identical {
        println!("identical: {} tensors", ia.len());
    } else {
        for n in &only_a {
            println!("only in A: {n}");
        }
        for n in &only_b {
            println!("only in B: {n}");
        }
        for c in &changed {
            println!(
                "changed:   {} {}{} -> {}{}",
                c["name"].as_str().unwrap_or(""),
                c["a"]["dtype"].as_str().unwrap_or(""),
                c["a"]["shape"],
                c["b"]["dtype"].as_str().unwrap_or(""),
                c["b"]["shape"]
            );
        }
        for v in &values {
            println!(
                "values:    {} max abs diff {}",
                v["name"].as_str().unwrap_or(""),
                v["max_abs_diff"]
            );
        }
        for v in &value_changes {
            println!(
                "value:     {} {} -> {}",
                v["name"].as_str().unwrap_or(""),
                v["a"],
                v["b"]
            );
        }
    }
    Ok(if identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_halves() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0xc000), -2.0);
        assert_eq!(f16_to_f64(0x0001), 2f64.powi(-24));
    }

    #[test]
    fn measures_difference() {
        let a: Vec<u8> = [1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [1.0f32, 2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(max_abs_diff(DType::F32, &a, &b), 0.5);
        assert_eq!(max_abs_diff(DType::F32, &a, &a), 0.0);
        assert_eq!(max_abs_diff(DType::F8E4M3, &[1], &[2]), f64::INFINITY);
    }
}
