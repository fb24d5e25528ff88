//! `tantra remote add|list|remove|gc`: the remotes of the weights root (`remotes.json`) and
//! garbage collection on one of them. Credentials are never stored: they come from the AWS
//! environment variables or a `~/.aws/credentials` profile when a command connects.

use std::path::Path;
use std::process::ExitCode;

use tantra_remote::config::{RemoteDef, Remotes};

use crate::table::render;

#[derive(clap::Subcommand)]
pub enum Action {
    /// Define a remote: `tantra remote add NAME s3://BUCKET[/PREFIX] [--endpoint URL] [--region R]`.
    Add(AddArgs),
    /// List the remotes.
    List(ListArgs),
    /// Forget a remote (its objects stay where they are).
    Remove(RemoveArgs),
    /// Remove blobs no manifest references, after a grace period (--dry-run to preview).
    Gc(super::remote_gc::Args),
}

#[derive(clap::Args)]
pub struct AddArgs {
    /// The remote's name (`[A-Za-z0-9._-]`), used by `push --remote NAME`.
    pub name: String,
    /// s3://BUCKET[/PREFIX]
    pub url: String,
    /// The S3 endpoint (for Garage, MinIO, ...), e.g. http://127.0.0.1:3900.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// The region (Garage's is usually `garage`).
    #[arg(long, value_name = "R")]
    pub region: Option<String>,
    /// The ~/.aws/credentials profile to use when the environment has no key.
    #[arg(long, value_name = "P")]
    pub profile: Option<String>,
    /// Use this remote when a command names none.
    #[arg(long)]
    pub default: bool,
}

#[derive(clap::Args)]
pub struct ListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct RemoveArgs {
    /// The remote to forget (its objects are not touched).
    pub name: String,
}

pub fn run(a: Action, root: &Path) -> anyhow::Result<ExitCode> {
    match a {
        Action::Add(a) => add(a, root),
        Action::List(a) => list(a, root),
        Action::Remove(a) => remove(a, root),
        Action::Gc(a) => super::remote_gc::run(a, root),
    }
}

fn add(a: AddArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let mut def = RemoteDef::from_url(&a.url)?;
    def.endpoint = a.endpoint;
    def.region = a.region;
    def.profile = a.profile;
    let mut remotes = Remotes::load(root)?;
    let url = def.url();
    remotes.add(&a.name, def, a.default)?;
    remotes.save(root)?;
    eprintln!("remote {} -> {url}", a.name);
    Ok(ExitCode::SUCCESS)
}

fn list(a: ListArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let remotes = Remotes::load(root)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&remotes)?);
        return Ok(ExitCode::SUCCESS);
    }
    if remotes.remotes.is_empty() {
        eprintln!("no remotes (add one with `tantra remote add NAME s3://BUCKET`)");
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = remotes
        .remotes
        .iter()
        .map(|(n, d)| {
            vec![
                n.clone(),
                if remotes.default.as_deref() == Some(n) {
                    "*"
                } else {
                    ""
                }
                .into(),
                d.url(),
                d.endpoint.clone().unwrap_or_default(),
                d.region.clone().unwrap_or_default(),
                d.profile.clone().unwrap_or_default(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &["name", "default", "url", "endpoint", "region", "profile"],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn remove(a: RemoveArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let mut remotes = Remotes::load(root)?;
    remotes.remove(&a.name)?;
    remotes.save(root)?;
    eprintln!("removed remote {} (its objects were not touched)", a.name);
    Ok(ExitCode::SUCCESS)
}
