//! `tantra tag MODEL[:VERSION] TAG [--remove]`: label a version (tagged versions survive
//! `cleanup --keep`, and `MODEL:TAG` names the version everywhere). `MODEL VERSION TAG` is the
//! older spelling, still read.

use std::path::Path;
use std::process::ExitCode;

use tantra_store::WeightManager;

#[derive(clap::Args)]
pub struct Args {
    /// The version: MODEL:VERSION, or MODEL for its default version.
    #[arg(value_name = "MODEL[:VERSION]")]
    pub target: String,
    /// The tag (with the older spelling MODEL VERSION TAG: the version).
    #[arg(value_name = "TAG")]
    pub tag: String,
    /// The tag, with the older spelling MODEL VERSION TAG.
    #[arg(value_name = "OLD_TAG", hide = true)]
    pub old_tag: Option<String>,
    /// Remove the tag instead.
    #[arg(long)]
    pub remove: bool,
    /// Print {model, version, tags} (the tags after the change) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `tag --json` prints: the version's tags after the change.
#[derive(serde::Serialize)]
struct TagReport<'a> {
    model: &'a str,
    version: &'a str,
    tags: Vec<String>,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let (r, tag) = match &a.old_tag {
        Some(t) => (
            crate::target::model_ref(&a.target, Some(&a.tag))?,
            t.clone(),
        ),
        None => (crate::target::model_ref(&a.target, None)?, a.tag.clone()),
    };
    let wm = WeightManager::open(root)?;
    let (model, version) = wm.resolve_ref(&r)?;
    wm.tag(&model, &version, &tag, a.remove)?;
    if a.json {
        let tags = wm
            .versions(&model)?
            .into_iter()
            .find(|v| v.version == version)
            .map(|v| v.tags)
            .unwrap_or_default();
        let r = TagReport {
            model: &model,
            version: &version,
            tags,
        };
        println!("{}", serde_json::to_string(&r)?);
    } else {
        let what = if a.remove { "removed tag" } else { "tagged" };
        crate::note!("{model}:{version}: {what} {tag}");
    }
    Ok(ExitCode::SUCCESS)
}
