//! `remote gc`: removes blobs that no manifest references, without racing pushes in flight.
//!
//! A push writes its blobs before the manifests that name them, and may reuse (skip) a blob
//! that is already there but unreferenced. So a blob is removed only when two things hold:
//! it is older than the grace period (a push in flight wrote it less than that ago), and it was
//! unreferenced already at the previous gc run, at least the grace period ago, as well as now
//! (a push that reused it meanwhile has written its manifest, if it takes less than the grace
//! period). The candidates of each run are kept in `gc/pending.json` on the remote. Claims older
//! than the grace period (left by crashed pushers) are removed too.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::{RemoteError, Result};
use crate::manifest::{FormatManifest, VersionManifest};

/// The key of the previous run's candidates.
pub const PENDING_KEY: &str = "gc/pending.json";

/// How to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Report, remove nothing.
    pub dry_run: bool,
    /// Blobs younger than this, and candidates marked less than this ago, are kept.
    pub grace: std::time::Duration,
}

/// What gc found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    pub remote: String,
    pub manifests: u64,
    pub blobs: u64,
    pub blobs_referenced: u64,
    /// Unreferenced blobs removed now (or that would be, with `dry_run`).
    pub removed: Vec<String>,
    pub removed_bytes: u64,
    /// Unreferenced blobs kept for now: marked by this run, or younger than the grace period.
    pub pending: u64,
    pub pending_bytes: u64,
    pub stale_claims_removed: u64,
    pub dry_run: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Pending {
    /// Unix milliseconds (the store's clock, from the listing) of the run that marked them.
    marked_ms: i64,
    blobs: BTreeSet<String>,
}

/// Collects garbage on `client` (module docs).
///
/// # Errors
/// A manifest that does not parse (nothing is removed then: its references are unknown); any
/// request failing.
pub fn gc(client: &Client, opts: &GcOptions) -> Result<GcReport> {
    client.block_on(async {
        let mut report = GcReport {
            remote: client.name.clone(),
            dry_run: opts.dry_run,
            ..Default::default()
        };
        let grace_ms = opts.grace.as_millis() as i64;
        // Blobs first, then manifests: a manifest written after this listing names blobs that
        // are either listed young or not listed at all.
        let blobs: BTreeMap<String, (u64, i64)> = client
            .list("blobs/")
            .await?
            .into_iter()
            .filter_map(|(k, m)| {
                k.strip_prefix("blobs/")
                    .map(|s| (s.to_string(), (m.size, m.last_modified.timestamp_millis())))
            })
            .collect();
        let now_ms = blobs.values().map(|(_, t)| *t).max().unwrap_or(0).max(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        );
        let (referenced, manifests) = references(client).await?;
        report.manifests = manifests;
        report.blobs = blobs.len() as u64;
        report.blobs_referenced = blobs.keys().filter(|b| referenced.contains(*b)).count() as u64;
        let previous: Pending = match client.get(PENDING_KEY).await? {
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => Pending::default(),
        };
        let previous_ripe = now_ms - previous.marked_ms >= grace_ms;
        let mut next = Pending {
            marked_ms: now_ms,
            blobs: BTreeSet::new(),
        };
        for (sha, (size, modified)) in &blobs {
            if referenced.contains(sha) {
                continue;
            }
            let old = now_ms - modified >= grace_ms;
            let was_marked = previous_ripe && previous.blobs.contains(sha);
            if old && (was_marked || grace_ms == 0) {
                report.removed.push(sha.clone());
                report.removed_bytes += size;
            } else {
                report.pending += 1;
                report.pending_bytes += size;
                next.blobs.insert(sha.clone());
            }
        }
        if previous.marked_ms != 0 && !previous_ripe {
            // Too early: keep the older marks so that they ripen.
            next.marked_ms = previous.marked_ms;
            next.blobs = next.blobs.intersection(&previous.blobs).cloned().collect();
        }
        if opts.dry_run {
            return Ok(report);
        }
        // Manifests written since the first look keep their blobs (pushes also check their
        // blobs after writing their manifests and send again what is gone).
        let (now_referenced, _) = references(client).await?;
        report.removed.retain(|sha| !now_referenced.contains(sha));
        report.removed_bytes = report
            .removed
            .iter()
            .map(|sha| blobs.get(sha).map(|(s, _)| *s).unwrap_or(0))
            .sum();
        for sha in &report.removed {
            client.delete(&format!("blobs/{sha}")).await?;
        }
        let body = serde_json::to_vec(&next).unwrap_or_default();
        client.put(PENDING_KEY, Bytes::from(body)).await?;
        for (k, m) in client.list("claims/").await? {
            if now_ms - m.last_modified.timestamp_millis()
                >= grace_ms.max(crate::claims::CLAIM_TTL.as_millis() as i64)
            {
                client.delete(&k).await?;
                report.stale_claims_removed += 1;
            }
        }
        Ok(report)
    })
}

/// Every blob the manifests name, and how many manifests there are.
async fn references(client: &Client) -> Result<(BTreeSet<String>, u64)> {
    let mut referenced = BTreeSet::new();
    let mut count = 0;
    for (k, _) in client.list("versions/").await? {
        let Some(b) = client.get(&k).await? else {
            continue;
        };
        let bad = |e: serde_json::Error| RemoteError::BadManifest {
            remote: client.name.clone(),
            key: client.key(&k),
            detail: format!("does not parse ({e}); gc removes nothing until it is fixed"),
        };
        count += 1;
        if k.ends_with("/version.json") {
            let vm: VersionManifest = serde_json::from_slice(&b).map_err(bad)?;
            referenced.extend(vm.tensors.into_iter().map(|t| t.sha256));
        } else {
            let fm: FormatManifest = serde_json::from_slice(&b).map_err(bad)?;
            referenced.extend(fm.whole_file);
        }
    }
    Ok((referenced, count))
}
