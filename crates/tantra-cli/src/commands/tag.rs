//! `tantra tag MODEL VERSION TAG [--remove]`: label a version (tagged versions survive
//! `cleanup --keep`).

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

#[derive(clap::Args)]
pub struct Args {
    pub model: String,
    pub version: String,
    pub tag: String,
    /// Remove the tag instead.
    #[arg(long)]
    pub remove: bool,
    /// Print {model, version, tags} (the tags after the change) as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    wm.tag(&a.model, &a.version, &a.tag, a.remove)?;
    if a.json {
        let tags = wm
            .versions(&a.model)?
            .into_iter()
            .find(|v| v.version == a.version)
            .map(|v| v.tags)
            .unwrap_or_default();
        println!(
            "{}",
            serde_json::json!({"model": a.model, "version": a.version, "tags": tags})
        );
    } else {
        let what = if a.remove { "removed tag" } else { "tagged" };
        eprintln!("{}:{}: {what} {}", a.model, a.version, a.tag);
    }
    Ok(ExitCode::SUCCESS)
}
