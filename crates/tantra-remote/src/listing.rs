//! `ls --remote`: the versions a remote holds, and which of them the local root has.

use std::collections::BTreeMap;

use serde::Serialize;
use tantra_store::WeightManager;

use crate::client::Client;
use crate::error::{RemoteError, Result};
use crate::manifest::{FormatManifest, VersionManifest};

/// One version on a remote.
#[derive(Debug, Clone, Serialize)]
pub struct RemoteVersion {
    pub model: String,
    pub version: String,
    pub content: String,
    pub parameters: u64,
    pub created: String,
    pub tags: Vec<String>,
    /// Format name -> file bytes.
    pub formats: BTreeMap<String, u64>,
    /// Formats the local root holds of the same weights.
    pub local_formats: Vec<String>,
    /// The local root holds other weights under this name.
    pub local_conflict: bool,
}

/// Every version on the remote (of `model`, when given), sorted by model and version.
///
/// # Errors
/// A manifest that does not parse; a request failing; an unreadable local registry.
pub fn list_remote(
    client: &Client,
    wm: &WeightManager,
    model: Option<&str>,
) -> Result<Vec<RemoteVersion>> {
    let reg = wm.registry()?;
    let prefix = match model {
        Some(m) => format!("versions/{m}/"),
        None => "versions/".into(),
    };
    client.block_on(async {
        let mut by_version: BTreeMap<(String, String), RemoteVersion> = BTreeMap::new();
        let mut formats: Vec<(String, String, String)> = Vec::new();
        for (k, _) in client.list(&prefix).await? {
            let parts: Vec<&str> = k.split('/').collect();
            let [_, m, v, file] = parts.as_slice() else {
                continue;
            };
            if *file != "version.json" {
                formats.push((m.to_string(), v.to_string(), k.clone()));
                continue;
            }
            let b = client.get(&k).await?.unwrap_or_default();
            let vm: VersionManifest =
                serde_json::from_slice(&b).map_err(|e| RemoteError::BadManifest {
                    remote: client.name.clone(),
                    key: client.key(&k),
                    detail: format!("not a version manifest: {e}"),
                })?;
            let local = reg.version(&vm.model, &vm.version);
            let conflict = local.is_some_and(|l| l.content != vm.content);
            by_version.insert(
                (m.to_string(), v.to_string()),
                RemoteVersion {
                    model: vm.model,
                    version: vm.version,
                    content: vm.content,
                    parameters: vm.parameters,
                    created: vm.created,
                    tags: vm.tags,
                    formats: BTreeMap::new(),
                    local_formats: Vec::new(),
                    local_conflict: conflict,
                },
            );
        }
        for (m, v, k) in formats {
            let Some(rv) = by_version.get_mut(&(m.clone(), v.clone())) else {
                continue;
            };
            let Some(b) = client.get(&k).await? else {
                continue;
            };
            let fm: FormatManifest =
                serde_json::from_slice(&b).map_err(|e| RemoteError::BadManifest {
                    remote: client.name.clone(),
                    key: client.key(&k),
                    detail: format!("not a format manifest: {e}"),
                })?;
            let have = reg
                .version(&m, &v)
                .filter(|l| l.content == rv.content)
                .is_some_and(|l| l.formats.contains_key(&fm.format));
            if have {
                rv.local_formats.push(fm.format.clone());
            }
            rv.formats.insert(fm.format, fm.bytes);
        }
        Ok(by_version.into_values().collect())
    })
}
