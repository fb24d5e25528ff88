//! Binding a version name on a store without conditional writes.
//!
//! Garage 2.5 ignores `If-None-Match` on PUT, so "create the manifest unless it exists" cannot
//! be one request. What the store does give, in its `consistent` mode, is read-after-write: a
//! LIST or HEAD that starts after a PUT completed sees it. The protocol builds on that alone:
//!
//! 1. PUT a claim `claims/<model>/<version>/<content>.<nonce>` (a nonce unique to this push).
//! 2. LIST the name's claims. A claim of *other* content, younger than [`CLAIM_TTL`], is a
//!    rival: delete our claim, wait a random time, start again (at most [`ATTEMPTS`] times).
//! 3. With no rival, HEAD/GET the version manifest: if it exists with other content, the name
//!    is taken ([`RemoteError::VersionTaken`]); if it exists with ours, nothing to write.
//! 4. Otherwise PUT the manifest, then delete the claim.
//!
//! Why at most one of two rivals writes: each LISTs after its own claim is stored, so of two
//! overlapping claims the later LIST sees both; a pusher that saw no rival wrote its manifest
//! before deleting its claim, so a rival whose claim came later either saw that claim (and
//! backed off) or listed after it was deleted, that is after the manifest was written, and its
//! step 3 finds the manifest. Pushers of the same content never block each other (they write
//! the same binding). Claims of crashed pushers stop counting after [`CLAIM_TTL`] (measured on
//! the store's clock, against our own claim's timestamp) and `tantra remote gc` removes them.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::client::Client;
use crate::error::{RemoteError, Result};
use crate::manifest::{claims_dir, version_key, VersionManifest};

/// A claim older than this (on the store's clock) is taken for a crashed pusher's.
pub const CLAIM_TTL: Duration = Duration::from_secs(600);

/// How many times a pusher backs off before giving up.
pub const ATTEMPTS: u32 = 40;

/// What binding the name found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// This push wrote the version manifest.
    Written,
    /// The remote had it already, with the same content.
    Present,
}

/// Binds `vm.model:vm.version` to `vm` on the remote (module docs).
///
/// # Errors
/// The name is taken by other content; rivals kept claiming it; a request failed.
pub(crate) async fn bind(client: &Client, vm: &VersionManifest, body: Bytes) -> Result<Bound> {
    let dir = claims_dir(&vm.model, &vm.version);
    let vkey = version_key(&vm.model, &vm.version);
    let nonce = nonce();
    let mine = format!("{dir}{}.{nonce}", vm.content);
    for attempt in 0..ATTEMPTS {
        if let Some(b) = existing(client, vm, &vkey).await? {
            return Ok(b);
        }
        client.put(&mine, Bytes::from(nonce.clone())).await?;
        let claims = client.list(&dir).await?;
        let my_time = claims
            .iter()
            .find(|(k, _)| *k == mine)
            .map(|(_, m)| m.last_modified.timestamp_millis());
        let rival = claims.iter().any(|(k, m)| {
            let Some(name) = k.strip_prefix(&dir) else {
                return false;
            };
            let content = name.split('.').next().unwrap_or_default();
            let age_ms = my_time.unwrap_or(i64::MAX) - m.last_modified.timestamp_millis();
            *k != mine && content != vm.content && age_ms < CLAIM_TTL.as_millis() as i64
        });
        if my_time.is_none() {
            // Our own claim is not listed: the store is not read-after-write; refuse to guess.
            client.delete(&mine).await?;
            return Err(RemoteError::Contended {
                remote: client.name.clone(),
                name: format!("{}:{}", vm.model, vm.version),
                key: client.key(&dir),
            });
        }
        if rival {
            client.delete(&mine).await?;
            let wait = 20 + (rand_u64() % (50 * u64::from(attempt + 1)).min(2000));
            tokio::time::sleep(Duration::from_millis(wait)).await;
            continue;
        }
        let out = match existing(client, vm, &vkey).await {
            Ok(Some(b)) => Ok(b),
            Ok(None) => client
                .put(&vkey, body.clone())
                .await
                .map(|()| Bound::Written),
            Err(e) => Err(e),
        };
        client.delete(&mine).await?;
        return out;
    }
    Err(RemoteError::Contended {
        remote: client.name.clone(),
        name: format!("{}:{}", vm.model, vm.version),
        key: client.key(&dir),
    })
}

/// The binding already on the remote, if any.
async fn existing(client: &Client, vm: &VersionManifest, vkey: &str) -> Result<Option<Bound>> {
    let Some(bytes) = client.get(vkey).await? else {
        return Ok(None);
    };
    let theirs: VersionManifest =
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::BadManifest {
            remote: client.name.clone(),
            key: client.key(vkey),
            detail: format!("not a version manifest: {e}"),
        })?;
    if theirs.content == vm.content {
        Ok(Some(Bound::Present))
    } else {
        Err(RemoteError::VersionTaken {
            remote: client.name.clone(),
            name: format!("{}:{}", vm.model, vm.version),
            theirs: theirs.content,
            ours: vm.content.clone(),
        })
    }
}

/// A string unique to this call: the hash of the time, the process, the thread and a counter.
pub(crate) fn nonce() -> String {
    let mut h = Sha256::new();
    h.update(format!("{:?}", std::time::SystemTime::now()));
    h.update(std::process::id().to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()));
    h.update(rand_u64().to_le_bytes());
    hex::encode(&h.finalize()[..12])
}

/// A number that differs between calls and processes (for backoff and nonces; not secret).
fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let c = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut h = Sha256::new();
    h.update(t.to_le_bytes());
    h.update(c.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}
