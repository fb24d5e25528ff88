//! `tantra checkpoint save|list|prune|promote`: training checkpoints of a model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use tantra_store::{parse_metric, MetricMode, PruneRule, RegisterOptions, WeightManager};

use super::list_weights::short_time;
use super::register::{parse_formats, print_report};
use crate::progress::Bar;
use crate::table::{human_bytes, render};

#[derive(Subcommand)]
pub enum Action {
    /// Save a weight file as the checkpoint of MODEL at a step.
    Save {
        /// The model the checkpoints belong to.
        model: String,
        /// The weight file to save (any format).
        file: PathBuf,
        /// The training step.
        #[arg(long)]
        step: u64,
        /// A metric, `name=value` (repeatable): --metric loss=0.31
        #[arg(long = "metric", value_name = "NAME=VALUE")]
        metrics: Vec<String>,
        /// Replace a checkpoint at the same step (backed up first).
        #[arg(long)]
        force: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the complete checkpoints of MODEL.
    List {
        /// The model the checkpoints belong to.
        model: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove checkpoints a retention rule does not keep (last N and best K by a metric).
    Prune {
        /// The model the checkpoints belong to.
        model: String,
        /// Keep the N latest steps.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_last: usize,
        /// Keep the K best by --metric.
        #[arg(long, default_value_t = 0, value_name = "K")]
        keep_best: usize,
        /// The metric that ranks checkpoints for --keep-best.
        #[arg(long, value_name = "NAME")]
        metric: Option<String>,
        /// Whether lower (min) or higher (max) is better.
        #[arg(long, default_value = "min", value_name = "min|max")]
        mode: MetricMode,
        /// Delete without keeping a backup.
        #[arg(long)]
        no_backup: bool,
        /// Show what would go, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Register the checkpoint at STEP as a version of MODEL.
    Promote {
        /// The model the checkpoints belong to.
        model: String,
        /// The training step.
        step: u64,
        /// The version to register it as.
        #[arg(long)]
        version: String,
        /// Also write these formats: a comma list of safetensors, pt, bin, or `all`.
        #[arg(long, value_name = "LIST")]
        formats: Option<String>,
        /// Make the new version the model's default.
        #[arg(long)]
        default: bool,
        /// Replace a version that holds other weights (backed up first).
        #[arg(long)]
        force: bool,
        /// A tag of the new version (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// A free-form note.
        #[arg(long)]
        note: Option<String>,
        /// The config (configs/MODEL/NAME.json) these weights belong to.
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(action: Action, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    match action {
        Action::Save {
            model,
            file,
            step,
            metrics,
            force,
            json,
        } => {
            let mut m = BTreeMap::new();
            for s in &metrics {
                let (k, v) = parse_metric(s)?;
                m.insert(k, v);
            }
            let rec = wm.save_checkpoint_file(&model, step, &m, &file, force, &Bar::new())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rec)?);
            } else {
                println!(
                    "{model}: checkpoint at step {step} saved as {} ({})",
                    rec.file,
                    human_bytes(rec.bytes)
                );
            }
        }
        Action::List { model, json } => {
            let list = wm.checkpoints(&model)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(ExitCode::SUCCESS);
            }
            if list.is_empty() {
                crate::note!("{model} has no checkpoints");
                return Ok(ExitCode::SUCCESS);
            }
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let metrics: Vec<String> =
                        c.metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    vec![
                        c.step.to_string(),
                        c.format.clone(),
                        human_bytes(c.bytes),
                        short_time(&c.created),
                        metrics.join(" "),
                        c.file.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                render(
                    &["step", "format", "size", "saved", "metrics", "path"],
                    &rows
                )
            );
        }
        Action::Prune {
            model,
            keep_last,
            keep_best,
            metric,
            mode,
            no_backup,
            dry_run,
            json,
        } => {
            let rule = PruneRule {
                keep_last,
                keep_best,
                metric,
                mode,
            };
            let items = wm.prune_checkpoints(&model, &rule, dry_run, !no_backup)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(ExitCode::SUCCESS);
            }
            let bytes: u64 = items.iter().map(|i| i.bytes).sum();
            let verb = if dry_run { "would remove" } else { "removed" };
            for i in &items {
                println!("{verb} step {} ({})", i.step.unwrap_or(0), i.path);
            }
            println!(
                "{model}: {verb} {} checkpoints, {}",
                items.len(),
                human_bytes(bytes)
            );
        }
        Action::Promote {
            model,
            step,
            version,
            formats,
            default,
            force,
            tags,
            note,
            config,
            json,
        } => {
            let opts = RegisterOptions {
                formats: parse_formats(formats.as_deref())?,
                make_default: default,
                force,
                tags,
                note,
                config,
                reason: None,
            };
            let r = wm.promote_checkpoint(&model, step, &version, &opts, &Bar::new())?;
            print_report(&r, json, true)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
