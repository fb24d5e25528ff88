//! `tantra set-default MODEL:VERSION`: the version loaded when none is named (a tag names its
//! version; `MODEL VERSION` is the older spelling, still read).

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

#[derive(clap::Args)]
pub struct Args {
    /// The version: MODEL:VERSION (a tag works too, e.g. mamba:golden).
    #[arg(value_name = "MODEL:VERSION")]
    pub target: String,
    /// The version, when written apart (older spelling: MODEL VERSION).
    #[arg(value_name = "VERSION")]
    pub version: Option<String>,
    /// Print {model, default} as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `set-default --json` prints.
#[derive(serde::Serialize)]
struct DefaultReport<'a> {
    model: &'a str,
    default: &'a str,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let r = crate::target::versioned(&a.target, a.version.as_deref(), "set-default")?;
    let wm = WeightManager::open(root)?;
    let (model, version) = wm.resolve_ref(&r)?;
    wm.set_default(&model, &version)?;
    if a.json {
        let r = DefaultReport {
            model: &model,
            default: &version,
        };
        println!("{}", serde_json::to_string(&r)?);
    } else {
        crate::note!("{model}: default version is now {version}");
    }
    Ok(ExitCode::SUCCESS)
}
