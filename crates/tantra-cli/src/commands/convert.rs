//! `tantra convert INPUT OUTPUT [--to F] [--force] [--no-verify] [--select P] [--strip P]
//! [--json]`: the summary goes to
//! stderr (the data is the written file), or with `--json` to stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use tantra_formats::subtree::Selection;
use tantra_formats::{convert, ConvertOptions, OutputFormat};

use crate::progress::Bar;
use crate::table::{group_digits, human_bytes};

#[derive(clap::Args)]
pub struct Args {
    /// The weight file to read (any format, detected by content).
    pub input: PathBuf,
    /// Where to write; the format comes from --to or the extension (.safetensors, .pt, .pth, .bin).
    pub output: PathBuf,
    /// Output format: safetensors, pt or bin.
    #[arg(long, value_name = "FORMAT")]
    pub to: Option<OutputFormat>,
    /// Overwrite OUTPUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Skip re-reading the output and comparing every tensor with the input.
    #[arg(long)]
    pub no_verify: bool,
    /// Keep only the tensors and values named PREFIX or under `PREFIX.` (a training
    /// checkpoint's `state_dict`, say).
    #[arg(long, value_name = "PREFIX")]
    pub select: Option<String>,
    /// Remove a leading `PREFIX.` from names that have it (`--select model --strip model`
    /// turns a checkpoint's model into inference weights).
    #[arg(long, value_name = "PREFIX")]
    pub strip: Option<String>,
    /// Print {input, output, input_format, output_format, tensors, parameters, bytes_written,
    /// verified, warnings, seconds} as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let opts = ConvertOptions {
        format: a.to,
        force: a.force,
        verify: !a.no_verify,
        selection: Selection {
            select: a.select,
            strip: a.strip,
        },
    };
    let report = convert(&a.input, &a.output, &opts, &Bar::new())?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let seconds = start.elapsed().as_secs_f64();
    if a.json {
        let out = serde_json::json!({
            "input": a.input.display().to_string(),
            "output": a.output.display().to_string(),
            "input_format": report.input_format.name(),
            "output_format": report.output_format.name(),
            "tensors": report.tensors,
            "parameters": report.parameters,
            "bytes_written": report.bytes_written,
            "verified": report.verified,
            "warnings": report.warnings,
            "seconds": seconds,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "{} ({}) -> {} ({}): {} tensors, {} parameters, {} written{} in {:.2}s",
        a.input.display(),
        report.input_format,
        a.output.display(),
        report.output_format,
        report.tensors,
        group_digits(report.parameters),
        human_bytes(report.bytes_written),
        if report.verified {
            ", verified"
        } else {
            ", not verified"
        },
        seconds
    );
    Ok(ExitCode::SUCCESS)
}
