//! `tantra convert INPUT OUTPUT [--to F] [--type T] [--force] [--no-verify] [--select P]
//! [--strip P] [--json]`: the summary goes to stderr (the data is the written file), or with
//! `--json` to stdout. An output ending in `.gguf` is written by the GGUF writer (`--type` picks
//! f32, f16, bf16, q8_0 or q4_0).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use tantra_formats::gguf::{convert_to_gguf, GgufOptions, TargetType};
use tantra_formats::subtree::Selection;
use tantra_formats::{convert, ConvertOptions, OutputFormat};

use crate::progress::Bar;
use crate::table::{group_digits, human_bytes};

/// What `convert --json` prints.
#[derive(serde::Serialize)]
struct ConvertJson<'a> {
    input: String,
    output: String,
    input_format: &'a str,
    output_format: &'a str,
    tensors: usize,
    parameters: u64,
    bytes_written: u64,
    verified: bool,
    warnings: &'a [String],
    seconds: f64,
    /// The GGUF writer's extra facts, for a `.gguf` output.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    gguf: Option<GgufJson<'a>>,
}

/// The GGUF part of [`ConvertJson`].
#[derive(serde::Serialize)]
struct GgufJson<'a> {
    #[serde(rename = "type")]
    target: &'a str,
    tensor_types: &'a std::collections::BTreeMap<String, usize>,
    quantized_tensors: usize,
    max_abs_error: f64,
    relative_error: f64,
}

#[derive(clap::Args)]
pub struct Args {
    /// The weight file to read (any format, detected by content).
    pub input: PathBuf,
    /// Where to write; the format comes from --to or the extension (.safetensors, .pt, .pth,
    /// .bin, .gguf).
    pub output: PathBuf,
    /// Output format: safetensors, pt or bin.
    #[arg(long, value_name = "FORMAT")]
    pub to: Option<OutputFormat>,
    /// GGUF output only: store float tensors as f32, f16, bf16, q8_0 or q4_0 (default: each
    /// tensor's own type).
    #[arg(long = "type", value_name = "TYPE")]
    pub gguf_type: Option<TargetType>,
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

fn is_gguf(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

pub fn run(mut a: Args, root: &std::path::Path) -> anyhow::Result<ExitCode> {
    a.input = crate::target::weight_path(&a.input, root)?;
    // A file a weights root holds is changed only through the root (register, restore), never
    // behind its registry's back.
    if let Some(owner) = tantra_store::WeightManager::owner_of_path(&a.output)? {
        anyhow::bail!(
            "{}: this file belongs to {owner} in a weights root; write elsewhere, or use `tantra register --force` to replace registered weights",
            a.output.display()
        );
    }
    let gguf_out = match a.to {
        Some(f) => f == OutputFormat::Gguf,
        None => is_gguf(&a.output),
    };
    if gguf_out {
        if a.select.is_some() || a.strip.is_some() {
            anyhow::bail!("--select and --strip are not available for GGUF output yet; convert to safetensors first");
        }
        return run_gguf(a);
    }
    if a.gguf_type.is_some() {
        anyhow::bail!("--type applies to GGUF output only (an OUTPUT ending in .gguf)");
    }
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
        let out = ConvertJson {
            input: a.input.display().to_string(),
            output: a.output.display().to_string(),
            input_format: report.input_format.name(),
            output_format: report.output_format.name(),
            tensors: report.tensors,
            parameters: report.parameters,
            bytes_written: report.bytes_written,
            verified: report.verified,
            warnings: &report.warnings,
            seconds,
            gguf: None,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    crate::note!(
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

fn run_gguf(a: Args) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let opts = GgufOptions {
        target: a.gguf_type.unwrap_or_default(),
        force: a.force,
        verify: !a.no_verify,
        ..Default::default()
    };
    let report = convert_to_gguf(&a.input, &a.output, &opts, &Bar::new())?;
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    let seconds = start.elapsed().as_secs_f64();
    let e = report.error;
    if a.json {
        let out = ConvertJson {
            input: a.input.display().to_string(),
            output: a.output.display().to_string(),
            input_format: report.input_format.name(),
            output_format: "gguf",
            tensors: report.tensors,
            parameters: report.parameters,
            bytes_written: report.bytes_written,
            verified: report.verified,
            warnings: &report.warnings,
            seconds,
            gguf: Some(GgufJson {
                target: report.target.name(),
                tensor_types: &report.types,
                quantized_tensors: e.tensors,
                max_abs_error: e.max_abs,
                relative_error: e.relative,
            }),
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let types: Vec<String> = report
        .types
        .iter()
        .map(|(t, n)| format!("{n} {t}"))
        .collect();
    crate::note!(
        "{} ({}) -> {} (gguf, {}): {} tensors ({}), {} parameters, {} written{} in {:.2}s",
        a.input.display(),
        report.input_format,
        a.output.display(),
        report.target,
        report.tensors,
        types.join(", "),
        group_digits(report.parameters),
        human_bytes(report.bytes_written),
        if report.verified {
            ", verified"
        } else {
            ", not verified"
        },
        seconds
    );
    if e.tensors > 0 {
        crate::note!(
            "quantization error over {} tensors: max abs {:.3e}, relative (rms) {:.3e}",
            e.tensors,
            e.max_abs,
            e.relative
        );
    }
    Ok(ExitCode::SUCCESS)
}
