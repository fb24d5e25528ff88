//! `tantra create-sample-weights` and `tantra create-model-weights`: initialize the presets
//! (`sample_small` or `full`) of the chosen models, write them in every requested format,
//! register them as version `sample_small` / `full` with their configs, and print what was
//! made. The work is `tantra_models::create`; this file parses and prints.

use std::path::Path;
use std::process::ExitCode;

use tantra_formats::{NoProgress, OutputFormat, Progress};
use tantra_models::create::{create_weights, CreateOptions, CreateReport, DEFAULT_SEED};
use tantra_models::{Architecture, Preset};
use tantra_store::WeightManager;

use super::register::parse_formats;
use crate::progress::Bar;
use crate::table::{group_digits, render};

#[derive(clap::Args)]
pub struct Args {
    /// Models to create, comma-separated: mamba, mamba_multimodal, ocr_native (default: all).
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub models: Vec<Architecture>,
    /// Formats to write: a comma list of safetensors, pt, bin, or `all` (default: all three).
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    /// Seed of the initialization; the same seed gives byte-identical files everywhere.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Replace a version or config that holds other weights (the old files are backed up).
    #[arg(long)]
    pub force: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path, preset: Preset) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    let mut models: Vec<Architecture> = Vec::new();
    for m in if a.models.is_empty() {
        Architecture::ALL.to_vec()
    } else {
        a.models.clone()
    } {
        if !models.contains(&m) {
            models.push(m);
        }
    }
    let mut formats = parse_formats(a.formats.as_deref())?;
    if formats.is_empty() {
        formats = OutputFormat::ALL.to_vec();
    }
    let options = CreateOptions {
        formats: formats.clone(),
        seed: a.seed,
        force: a.force,
    };
    let bar = Bar::new();
    // Sample weights take a fraction of a second: bars would only flicker.
    let progress: &dyn Progress = match preset {
        Preset::Full => &bar,
        Preset::SampleSmall => &NoProgress,
    };
    let mut reports = Vec::new();
    for arch in models {
        if preset == Preset::Full && !a.json {
            crate::note!(
                "creating {arch} {preset} ({} parameters)...",
                group_digits(arch.preset(preset).parameter_count())
            );
        }
        reports.push(create_weights(&wm, arch, preset, &options, progress)?);
    }
    if a.json {
        let out: Vec<_> = reports.iter().map(report_json).collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", stats_table(&reports, &formats));
        crate::note!(
            "all formats hold identical tensors; registered under {}",
            wm.root().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// model | version | parameters | one column per format | time.
fn stats_table(reports: &[CreateReport], formats: &[OutputFormat]) -> String {
    let mut header = vec!["model", "version", "parameters"];
    header.extend(formats.iter().map(|f| f.name()));
    header.push("time");
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let mut row = vec![
                r.architecture.name().to_string(),
                r.preset.name().to_string(),
                group_digits(r.parameters),
            ];
            for f in formats {
                row.push(
                    r.bytes(*f)
                        .map_or_else(|| "-".into(), crate::table::human_bytes),
                );
            }
            row.push(format!("{:.2}s", r.seconds));
            row
        })
        .collect();
    render(&header, &rows)
}

/// One created model, as `--json` prints it.
#[derive(serde::Serialize)]
struct CreateJson<'a> {
    model: &'a str,
    version: &'a str,
    seed: u64,
    parameters: u64,
    tensors: usize,
    seconds: f64,
    content: &'a str,
    files: &'a [tantra_store::PlacedFile],
}

fn report_json(r: &CreateReport) -> CreateJson<'_> {
    CreateJson {
        model: r.architecture.name(),
        version: r.preset.name(),
        seed: r.seed,
        parameters: r.parameters,
        tensors: r.tensors,
        seconds: r.seconds,
        content: &r.registered.content,
        files: &r.registered.files,
    }
}
