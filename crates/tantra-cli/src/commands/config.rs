//! `tantra config list|show|set|validate|check|import`: model configurations under
//! `configs/<model>/<name>.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use tantra_formats::OutputFormat;
use tantra_store::config::{check_tensors, parse_value};
use tantra_store::{ConfigManager, ConfigProblem, Schemas, WeightManager};

use crate::table::render;

#[derive(Subcommand)]
pub enum Action {
    /// List configs (of one model, or all).
    List {
        /// The model.
        model: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a config.
    Show {
        /// The model.
        model: String,
        /// The config name (configs/MODEL/NAME.json).
        name: String,
    },
    /// Set one field (dotted path); the value is JSON when it parses (4, true, [1,2]), else a
    /// string. Refused for a key the architecture does not have (with a suggestion), a value
    /// of the wrong type or range, or a change registered weights would no longer fit.
    Set {
        /// The model.
        model: String,
        /// The config name (configs/MODEL/NAME.json).
        name: String,
        /// The field, a dotted path (ssm.state_size).
        field: String,
        /// The value: JSON when it parses (4, true, [1,2]), else a string.
        value: String,
        /// Change it even if registered weights no longer fit the config.
        #[arg(long)]
        force: bool,
    },
    /// Remove one field (dotted path), with the checks of `config set`.
    Unset {
        /// The model.
        model: String,
        /// The config name (configs/MODEL/NAME.json).
        name: String,
        /// The field, a dotted path.
        field: String,
        /// Remove it even if registered weights no longer fit the config.
        #[arg(long)]
        force: bool,
    },
    /// Check field types and ranges (exit 1 on problems).
    Validate {
        /// The model.
        model: String,
        /// One config (default: all of the model's).
        name: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check weights against a config: every expected tensor present with its shape, nothing
    /// unexpected (exit 1 on problems).
    Check {
        /// The model.
        model: String,
        /// The registered version whose weights to check.
        version: String,
        /// The config to check against (default: the version's own).
        #[arg(long, value_name = "NAME")]
        config: Option<String>,
        /// Check this file instead of the registered weights.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Which registered format to read (default: the best available).
        #[arg(long, value_name = "FORMAT")]
        format: Option<OutputFormat>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a config from a JSON file (validated first).
    Import {
        /// The model.
        model: String,
        /// The config name (configs/MODEL/NAME.json).
        name: String,
        /// The JSON file to import.
        file: PathBuf,
        /// Replace an existing config (backed up first).
        #[arg(long)]
        force: bool,
    },
}

/// The config schemas the CLI knows: the architectures of tantra-models.
fn schemas() -> Schemas {
    tantra_models::schema::schemas()
}

pub fn run(action: Action, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    let cm = ConfigManager::new(wm.clone(), schemas());
    match action {
        Action::List { model, json } => {
            let list = cm.list(model.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                crate::note!("no configs under {}", root.display());
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            c.model.clone(),
                            c.name.clone(),
                            c.model_type.clone().unwrap_or_default(),
                            c.versions.join(","),
                            c.path.clone(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    render(
                        &["model", "config", "model_type", "versions", "path"],
                        &rows
                    )
                );
            }
        }
        Action::Show { model, name } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&cm.show(&model, &name)?)?
            );
        }
        Action::Set {
            model,
            name,
            field,
            value,
            force,
        } => {
            let v = parse_value(&value);
            cm.set_checked(&model, &name, &field, v.clone(), force)?;
            crate::note!("{model}/{name}: {field} = {v}");
        }
        Action::Unset {
            model,
            name,
            field,
            force,
        } => {
            cm.unset(&model, &name, &field, force)?;
            crate::note!("{model}/{name}: removed {field}");
        }
        Action::Validate { model, name, json } => {
            let names = match name {
                Some(n) => vec![n],
                None => cm.list(Some(&model))?.into_iter().map(|c| c.name).collect(),
            };
            let mut all = Vec::new();
            for n in &names {
                for p in cm.validate(&model, n)? {
                    all.push((n.clone(), p));
                }
            }
            return report(
                &all,
                json,
                &format!("{} configs of {model} are valid", names.len()),
            );
        }
        Action::Check {
            model,
            version,
            config,
            file,
            format,
            json,
        } => {
            let config = match config {
                Some(c) => c,
                None => cm.config_for_version(&model, &version)?,
            };
            let expected = cm.expected_tensors(&model, &config)?;
            let problems: Vec<ConfigProblem> = match file {
                Some(f) => check_tensors(&expected, tantra_formats::open(&f)?.as_ref()),
                None => {
                    let w = wm.load_with(
                        &model,
                        Some(&version),
                        format,
                        &tantra_store::LoadOptions::default(),
                        &crate::progress::Bar::new(),
                    )?;
                    check_tensors(&expected, w.source.as_ref())
                }
            };
            let all: Vec<(String, ConfigProblem)> =
                problems.into_iter().map(|p| (config.clone(), p)).collect();
            return report(
                &all,
                json,
                &format!(
                    "{model}:{version} matches config {config} ({} tensors)",
                    expected.len()
                ),
            );
        }
        Action::Import {
            model,
            name,
            file,
            force,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("{}: cannot read", file.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not valid JSON", file.display()))?;
            cm.import(&model, &name, &v, force)?;
            crate::note!("{model}/{name}: imported from {}", file.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints problems (a JSON array of {config, what, message} with --json); exit 1 when any.
fn report(
    problems: &[(String, ConfigProblem)],
    json: bool,
    ok_line: &str,
) -> anyhow::Result<ExitCode> {
    if json {
        /// One problem of `config validate|check --json`.
        #[derive(serde::Serialize)]
        struct ProblemJson<'a> {
            config: &'a str,
            what: &'a str,
            message: &'a str,
        }
        let arr: Vec<ProblemJson<'_>> = problems
            .iter()
            .map(|(c, p)| ProblemJson {
                config: c,
                what: &p.what,
                message: &p.message,
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
    } else if problems.is_empty() {
        println!("{ok_line}");
    } else {
        let rows: Vec<Vec<String>> = problems
            .iter()
            .map(|(c, p)| vec![c.clone(), p.what.clone(), p.message.clone()])
            .collect();
        print!("{}", render(&["config", "what", "problem"], &rows));
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
