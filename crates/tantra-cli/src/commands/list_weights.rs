//! `tantra list-weights|ls|list [--model M] [--format F] [--all-formats] [--json]`: the
//! registered versions, one row each with its formats (`safetensors,pt,bin`), or with
//! `--all-formats` one row per file; with `--remote NAME`, the versions on that remote and
//! which of them are here (`remote_ls`).
//!
//! A registry can hold tens of thousands of files, so this command borrows its rows from the
//! registry's bytes ([`WeightManager::with_rows`]) and writes the output in one buffered pass
//! rather than building a string per cell.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::ExitCode;

use tantra_formats::OutputFormat;
use tantra_store::{ListFilter, WeightManager, WeightRowRef};

use crate::table::{group_digits, human_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// Only this model (an unknown model is an error).
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Only this format: safetensors, pt, bin or gguf.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
    /// One row per file (format, path, sha256) instead of one per version.
    #[arg(long)]
    pub all_formats: bool,
    /// Print a JSON array: per version {model, version, default, formats, bytes, parameters,
    /// created}; with --all-formats per file {model, version, format, path, bytes, sha256,
    /// parameters, default, created} (path relative to the root, times RFC 3339 UTC).
    #[arg(long)]
    pub json: bool,
    /// List the versions on this remote instead (with the formats the local root has).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    if let Some(remote) = &a.remote {
        return super::remote_ls::run(remote, a.model.as_deref(), a.json, root);
    }
    let wm = WeightManager::open(root)?;
    let filter = ListFilter {
        model: a.model,
        format: a.format,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = wm.with_rows(&filter, |rows| -> anyhow::Result<bool> {
        if !a.all_formats {
            let versions = by_version(rows);
            if a.json {
                serde_json::to_writer_pretty(&mut out, &versions)?;
                out.write_all(b"\n")?;
            } else if !versions.is_empty() {
                out.write_all(version_table(&versions).as_bytes())?;
            }
        } else if a.json {
            serde_json::to_writer_pretty(&mut out, rows)?;
            out.write_all(b"\n")?;
        } else if !rows.is_empty() {
            write_table(&mut out, rows)?;
        }
        out.flush()?;
        Ok(rows.is_empty())
    })?;
    let empty = match written {
        Ok(empty) => empty,
        // `tantra list-weights | head` is not an error.
        Err(e) if is_broken_pipe(&e) => return Ok(ExitCode::SUCCESS),
        Err(e) => return Err(e),
    };
    if empty && !a.json {
        crate::note!("no weights registered under {}", root.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One version, as `ls` shows it by default.
#[derive(serde::Serialize)]
struct VersionLine<'a> {
    model: &'a str,
    version: &'a str,
    default: bool,
    /// In load order (safetensors, pt, bin, gguf).
    formats: Vec<&'a str>,
    /// Over all its files.
    bytes: u64,
    parameters: u64,
    /// When its first file was placed.
    created: &'a str,
}

/// Rows of one version come together from [`WeightManager::with_rows`]: fold them.
fn by_version<'a>(rows: &[WeightRowRef<'a>]) -> Vec<VersionLine<'a>> {
    let mut out: Vec<VersionLine<'a>> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some(v) if v.model == r.model && v.version == r.version => {
                v.formats.push(r.format);
                v.bytes = v.bytes.saturating_add(r.bytes);
                v.created = v.created.min(r.created);
            }
            _ => out.push(VersionLine {
                model: r.model,
                version: r.version,
                default: r.default,
                formats: vec![r.format],
                bytes: r.bytes,
                parameters: r.parameters,
                created: r.created,
            }),
        }
    }
    out
}

fn version_table(rows: &[VersionLine<'_>]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|v| {
            vec![
                v.model.into(),
                v.version.into(),
                if v.default { "*" } else { "" }.into(),
                v.formats.join(","),
                human_bytes(v.bytes),
                group_digits(v.parameters),
                short_time(v.created),
            ]
        })
        .collect();
    crate::table::render(
        &[
            "model",
            "version",
            "default",
            "formats",
            "size",
            "parameters",
            "created",
        ],
        &cells,
    )
}

const HEADER: [&str; 8] = [
    "model",
    "version",
    "format",
    "default",
    "size",
    "parameters",
    "created",
    "path",
];

/// The columns `crate::table::render` right-aligns (its cells are all numbers or sizes).
const RIGHT: [bool; 8] = [false, false, false, false, true, true, false, false];

/// The table `crate::table::render` would draw (numbers right-aligned, header included),
/// written directly.
fn write_table(out: &mut impl Write, rows: &[WeightRowRef<'_>]) -> std::io::Result<()> {
    let sizes: Vec<String> = rows.iter().map(|r| human_bytes(r.bytes)).collect();
    let params: Vec<String> = rows.iter().map(|r| group_digits(r.parameters)).collect();
    let times: Vec<String> = rows.iter().map(|r| short_time(r.created)).collect();
    let mut widths: [usize; 8] = HEADER.map(|h| h.chars().count());
    for (i, r) in rows.iter().enumerate() {
        for (w, c) in widths
            .iter_mut()
            .zip(cells(r, &sizes[i], &params[i], &times[i]))
        {
            *w = (*w).max(c.chars().count());
        }
    }
    write_line(out, &widths, HEADER)?;
    for (i, r) in rows.iter().enumerate() {
        write_line(out, &widths, cells(r, &sizes[i], &params[i], &times[i]))?;
    }
    Ok(())
}

/// The cells of one row, in [`HEADER`] order.
fn cells<'a>(r: &WeightRowRef<'a>, size: &'a str, params: &'a str, time: &'a str) -> [&'a str; 8] {
    [
        r.model,
        r.version,
        r.format,
        if r.default { "*" } else { "" },
        size,
        params,
        time,
        r.path,
    ]
}

/// One line: cells padded to their column's width and separated by two spaces; the last
/// column is not padded.
fn write_line(out: &mut impl Write, widths: &[usize; 8], cells: [&str; 8]) -> std::io::Result<()> {
    let last = cells.len() - 1;
    for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
        let sep = if i == 0 { "" } else { "  " };
        match (i == last, RIGHT[i]) {
            (true, _) => write!(out, "{sep}{cell}")?,
            (false, true) => write!(out, "{sep}{cell:>w$}")?,
            (false, false) => write!(out, "{sep}{cell:<w$}")?,
        }
    }
    out.write_all(b"\n")
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(BrokenPipe)
    })
}

/// `2025-01-02T03:04:05.123456Z` -> `2025-01-02 04:04 (3 days ago)`, local time.
pub(super) fn short_time(t: &str) -> String {
    crate::when::when(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::render;

    #[test]
    fn draws_what_render_draws() {
        let row = |model, version, default, bytes, parameters| WeightRowRef {
            model,
            version,
            format: "safetensors",
            path: "weights/x.safetensors",
            bytes,
            sha256: "ab",
            parameters,
            default,
            created: "2025-01-02T03:04:05.123456Z",
        };
        let rows = [
            row("mamba", "sample_small", true, 2_600_000, 686_584),
            row("ocr_native", "v", false, 12, 241_711_872),
        ];
        let mut out = Vec::new();
        write_table(&mut out, &rows).unwrap();
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.model.into(),
                    r.version.into(),
                    r.format.into(),
                    if r.default { "*" } else { "" }.into(),
                    human_bytes(r.bytes),
                    group_digits(r.parameters),
                    short_time(r.created),
                    r.path.into(),
                ]
            })
            .collect();
        assert_eq!(String::from_utf8(out).unwrap(), render(&HEADER, &cells));
    }
}
