//! `tantra ls --remote NAME [--model M] [--json]`: the versions a remote holds, with the
//! formats of each that the local root has too.

use std::path::Path;
use std::process::ExitCode;

use tantra_remote::client::Client;
use tantra_remote::config::Remotes;
use tantra_remote::listing::list_remote;
use tantra_store::WeightManager;

use crate::table::{group_digits, human_bytes, render};

pub fn run(remote: &str, model: Option<&str>, json: bool, root: &Path) -> anyhow::Result<ExitCode> {
    let wm = WeightManager::open(root)?;
    let (name, def) = Remotes::load(root)?.get(Some(remote))?;
    let client = Client::connect(&name, &def)?;
    let rows = list_remote(&client, &wm, model)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("remote {name} holds no versions");
        return Ok(ExitCode::SUCCESS);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let local = if r.local_conflict {
                "other weights!".to_string()
            } else if r.local_formats.is_empty() {
                "-".into()
            } else {
                r.local_formats.join(",")
            };
            vec![
                r.model.clone(),
                r.version.clone(),
                r.formats.keys().cloned().collect::<Vec<_>>().join(","),
                human_bytes(r.formats.values().sum()),
                group_digits(r.parameters),
                local,
                r.content.get(..12).unwrap_or_default().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "model",
                "version",
                "formats",
                "size",
                "parameters",
                "local",
                "content"
            ],
            &cells
        )
    );
    Ok(ExitCode::SUCCESS)
}
