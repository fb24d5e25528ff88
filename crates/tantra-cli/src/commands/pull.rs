//! `tantra pull MODEL[:VERSION] [--remote NAME] [--formats LIST] [--default] [--json]`: fetch a
//! version from a remote; every blob is verified, every file rebuilt and checked against its
//! sha256, and the version registered only when all its files are in place.

use std::path::Path;
use std::process::ExitCode;

use tantra_remote::client::Client;
use tantra_remote::config::Remotes;
use tantra_remote::pull::{pull, PullOptions};
use tantra_store::WeightManager;

use super::push::list_or_none;
use crate::progress::Bar;
use crate::table::human_bytes;

#[derive(clap::Args)]
pub struct Args {
    /// MODEL or MODEL:VERSION (default: the newest version on the remote).
    pub target: String,
    /// The remote (default: the default or only one).
    #[arg(long, value_name = "NAME")]
    pub remote: Option<String>,
    /// Only these formats (default: every format on the remote).
    #[arg(long, value_name = "LIST")]
    pub formats: Option<String>,
    /// Make the pulled version the model's default.
    #[arg(long)]
    pub default: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?.with_command(format!("tantra pull {}", a.target));
    let target = tantra_store::ModelRef::parse(&a.target)?;
    let (name, def) = Remotes::load(root)?.get(a.remote.as_deref())?;
    let client = Client::connect(&name, &def)?;
    let opts = PullOptions {
        formats: super::register::parse_formats(a.formats.as_deref())?,
        make_default: a.default,
    };
    let r = pull(
        &client,
        &wm,
        &target.model,
        target.version.as_deref(),
        &opts,
        &Bar::new(),
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "pulled {}:{} from {name}: formats {} (already here: {}); downloaded {} in {} blobs ({} taken from local versions, {} resumed from an earlier pull), wrote {}",
        r.model,
        r.version,
        list_or_none(&r.formats_pulled),
        list_or_none(&r.formats_present),
        human_bytes(r.bytes_downloaded),
        r.blobs_downloaded,
        r.blobs_local,
        r.blobs_resumed,
        human_bytes(r.file_bytes),
    );
    Ok(ExitCode::SUCCESS)
}
