//! `tantra list-weights [--model M] [--format F] [--json]`: every registered weight file.
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
    /// Only this model.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// Only this format: safetensors, pt or bin.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<OutputFormat>,
    /// Print a JSON array of {model, version, format, path, bytes, sha256, parameters,
    /// default, created} (path relative to the root).
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    let filter = ListFilter {
        model: a.model,
        format: a.format,
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let written = wm.with_rows(&filter, |rows| -> anyhow::Result<bool> {
        if a.json {
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
        eprintln!("no weights registered under {}", root.display());
    }
    Ok(ExitCode::SUCCESS)
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

/// The table `crate::table::render` would draw (numbers right-aligned), written directly.
fn write_table(out: &mut impl Write, rows: &[WeightRowRef<'_>]) -> std::io::Result<()> {
    let sizes: Vec<String> = rows.iter().map(|r| human_bytes(r.bytes)).collect();
    let params: Vec<String> = rows.iter().map(|r| group_digits(r.parameters)).collect();
    let mut w: [usize; 8] = HEADER.map(str::len);
    for (i, r) in rows.iter().enumerate() {
        w[0] = w[0].max(r.model.len());
        w[1] = w[1].max(r.version.len());
        w[2] = w[2].max(r.format.len());
        w[4] = w[4].max(sizes[i].len());
        w[5] = w[5].max(params[i].len());
        w[6] = w[6].max(19);
    }
    writeln!(
        out,
        "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {:<w5$}  {:<w6$}  {}",
        HEADER[0],
        HEADER[1],
        HEADER[2],
        HEADER[3],
        HEADER[4],
        HEADER[5],
        HEADER[6],
        HEADER[7],
        w0 = w[0],
        w1 = w[1],
        w2 = w[2],
        w3 = w[3],
        w4 = w[4],
        w5 = w[5],
        w6 = w[6],
    )?;
    for (i, r) in rows.iter().enumerate() {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {:>w5$}  {:<w6$}  {}",
            r.model,
            r.version,
            r.format,
            if r.default { "*" } else { "" },
            sizes[i],
            params[i],
            short_time(r.created),
            r.path,
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3],
            w4 = w[4],
            w5 = w[5],
            w6 = w[6],
        )?;
    }
    Ok(())
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

/// `2025-01-02T03:04:05.123456Z` -> `2025-01-02 03:04:05`.
pub(super) fn short_time(t: &str) -> String {
    match t.get(..19) {
        Some(s) => s.replacen('T', " ", 1),
        None => t.to_string(),
    }
}
