//! `tantra diff A B [--json] [--atol X]`: which tensors differ between two files (or
//! registered versions), and by how much. Exit 0 when identical (within `--atol`), 1
//! otherwise. The comparison is `tantra_formats::diff`; this file prints its report.

use std::path::PathBuf;
use std::process::ExitCode;

use tantra_formats::diff::{diff, DiffOptions, DiffReport};
use tantra_formats::open;

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
    /// Values within this absolute difference count as equal.
    #[arg(long, default_value_t = 0.0)]
    pub atol: f64,
}

/// What `diff --json` prints: the files compared and the report.
#[derive(serde::Serialize)]
struct DiffJson<'a> {
    a: String,
    b: String,
    #[serde(flatten)]
    report: &'a DiffReport,
}

pub fn run(mut a: Args, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    a.a = crate::target::weight_path(&a.a, root)?;
    a.b = crate::target::weight_path(&a.b, root)?;
    let sa = open(&a.a)?;
    let sb = open(&a.b)?;
    let r = diff(
        sa.as_ref(),
        sb.as_ref(),
        &DiffOptions { atol: a.atol },
        &Bar::new(),
    )?;
    if a.json {
        let out = DiffJson {
            a: a.a.display().to_string(),
            b: a.b.display().to_string(),
            report: &r,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", human(&r));
    }
    Ok(if r.identical {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The human form of a [`DiffReport`].
fn human(r: &DiffReport) -> String {
    if r.identical {
        return format!("identical: {} tensors\n", r.compared);
    }
    let mut out = String::new();
    for n in &r.only_in_a {
        out.push_str(&format!("only in A: {n}\n"));
    }
    for n in &r.only_in_b {
        out.push_str(&format!("only in B: {n}\n"));
    }
    for c in &r.changed {
        let shape = |s: &[u64]| serde_json::to_string(s).unwrap_or_default();
        out.push_str(&format!(
            "changed:   {} {}{} -> {}{}\n",
            c.name,
            c.a.dtype,
            shape(&c.a.shape),
            c.b.dtype,
            shape(&c.b.shape)
        ));
    }
    for v in &r.values_differ {
        let d = if v.max_abs_diff.is_finite() {
            v.max_abs_diff.to_string()
        } else {
            "inf".to_string()
        };
        out.push_str(&format!("values:    {} max abs diff {d}\n", v.name));
    }
    for v in &r.non_tensor_values_differ {
        let show = |x: &Option<serde_json::Value>| {
            x.as_ref()
                .map_or_else(|| "null".to_string(), |v| v.to_string())
        };
        out.push_str(&format!(
            "value:     {} {} -> {}\n",
            v.name,
            show(&v.a),
            show(&v.b)
        ));
    }
    out
}
