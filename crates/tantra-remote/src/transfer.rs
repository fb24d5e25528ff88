//! Moving blobs: parallel uploads from an open file and parallel, verified downloads into a
//! folder, with a byte budget so that memory stays bounded however many run at once.
//!
//! Every blob is named by the sha256 of its bytes. An upload hashes the bytes it is about to
//! send and refuses to send bytes that do not match their name (a local file damaged since it
//! was registered); a download hashes what arrives into a temporary file and gives it its name
//! only when the hash and size match, so a blob in the folder was a verified one when it got
//! there, and an interrupted pull resumes from the blobs that are there (hashing them again, as
//! they are not synced).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use tantra_formats::{Progress, TensorSource};
use tokio::sync::Semaphore;

use crate::client::Client;
use crate::error::{RemoteError, Result};
use crate::manifest::blob_key;

/// Blobs larger than this go up in parts.
const MULTIPART_ABOVE: usize = 32 << 20;
/// The part size of multipart uploads (S3's minimum is 5 MiB).
const PART: usize = 16 << 20;
/// Bytes held in memory by transfers in flight, at most (a larger blob runs alone).
const BUDGET: usize = 512 << 20;

/// One blob to upload: its name and where its bytes are.
pub(crate) enum Upload<'a> {
    /// Tensor `index` of `src`.
    Tensor {
        sha256: String,
        bytes: u64,
        src: &'a (dyn TensorSource + Sync),
        index: usize,
    },
    /// A whole file.
    File {
        sha256: String,
        bytes: u64,
        path: PathBuf,
    },
}

impl Upload<'_> {
    pub(crate) fn sha256(&self) -> &str {
        match self {
            Upload::Tensor { sha256, .. } | Upload::File { sha256, .. } => sha256,
        }
    }
    pub(crate) fn bytes(&self) -> u64 {
        match self {
            Upload::Tensor { bytes, .. } | Upload::File { bytes, .. } => *bytes,
        }
    }
}

/// Test hooks: `TANTRA_REMOTE_ABORT_AFTER=N` aborts the process (as a kill would) once N blobs
/// have been transferred, so that tests can interrupt a push or pull at a known point;
/// `TANTRA_REMOTE_DELAY_MS=M` waits M ms after each blob, so that a test can act (stop a
/// server) in the middle of a transfer.
fn abort_after() -> Option<u64> {
    std::env::var("TANTRA_REMOTE_ABORT_AFTER")
        .ok()
        .and_then(|v| v.parse().ok())
}

async fn count_and_maybe_abort(done: &std::sync::atomic::AtomicU64) {
    let n = done.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if abort_after() == Some(n) {
        std::process::abort();
    }
    if let Some(ms) = std::env::var("TANTRA_REMOTE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

/// Which of `blobs` (`(sha256, bytes)`) the remote lacks, or holds with another size (a
/// damaged object, sent again), by HEAD requests in parallel.
pub(crate) async fn missing(client: &Client, blobs: Vec<(String, u64)>) -> Result<Vec<String>> {
    let found: Vec<(String, bool)> = futures::stream::iter(blobs)
        .map(|(n, size)| async move {
            let present = client
                .head(&blob_key(&n))
                .await?
                .is_some_and(|m| m.size == size);
            Ok::<_, RemoteError>((n, present))
        })
        .buffer_unordered(client.jobs * 4)
        .try_collect()
        .await?;
    Ok(found
        .into_iter()
        .filter(|(_, p)| !p)
        .map(|(n, _)| n)
        .collect())
}

/// Uploads `items` in parallel; returns the bytes sent.
pub(crate) async fn upload_all(
    client: &Client,
    items: &[&Upload<'_>],
    progress: &dyn Progress,
) -> Result<u64> {
    let total: u64 = items.iter().map(|u| u.bytes()).sum();
    progress.begin("uploading", total);
    let budget = Arc::new(Semaphore::new(BUDGET));
    let done = std::sync::atomic::AtomicU64::new(0);
    let r: Result<Vec<u64>> = futures::stream::iter(items)
        .map(|&it| {
            let budget = budget.clone();
            let done = &done;
            async move {
                let want = (it.bytes() as usize).clamp(1, BUDGET) as u32;
                let _permit = budget
                    .acquire_many(want)
                    .await
                    .map_err(|e| RemoteError::io("transfer budget", std::io::Error::other(e)))?;
                let n = upload_one(client, it, progress).await?;
                count_and_maybe_abort(done).await;
                Ok(n)
            }
        })
        .buffer_unordered(client.jobs)
        .try_collect()
        .await;
    progress.end();
    Ok(r?.into_iter().sum())
}

async fn upload_one(client: &Client, it: &Upload<'_>, progress: &dyn Progress) -> Result<u64> {
    let key = blob_key(it.sha256());
    let data: Bytes = match it {
        Upload::Tensor { src, index, .. } => {
            let b = src.tensor_bytes(*index)?;
            Bytes::copy_from_slice(&b)
        }
        Upload::File { path, .. } => {
            return upload_file(client, it.sha256(), path, &key, progress).await;
        }
    };
    let actual = hex::encode(Sha256::digest(&data));
    if actual != it.sha256() {
        return Err(RemoteError::DigestMismatch {
            remote: client.name.clone(),
            key: format!("(local tensor for {})", client.key(&key)),
            expected: it.sha256().into(),
            actual,
            bytes: data.len() as u64,
        });
    }
    let n = data.len() as u64;
    if data.len() <= MULTIPART_ABOVE {
        client.put(&key, data).await?;
    } else {
        let up = client
            .store
            .put_multipart(&client.path(&key))
            .await
            .map_err(|e| client.err("PUT (multipart)", &key, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(up, PART);
        for chunk in data.chunks(PART) {
            w.wait_for_capacity(4)
                .await
                .map_err(|e| client.err("PUT (part)", &key, e))?;
            w.put(data.slice_ref(chunk));
            progress.advance(chunk.len() as u64);
        }
        w.finish()
            .await
            .map_err(|e| client.err("PUT (complete)", &key, e))?;
        return Ok(n);
    }
    progress.advance(n);
    Ok(n)
}

/// Streams a whole file up in parts, hashing it; aborts when its hash is not its name.
async fn upload_file(
    client: &Client,
    sha256: &str,
    path: &Path,
    key: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| RemoteError::io(path, e))?;
    let up = client
        .store
        .put_multipart(&client.path(key))
        .await
        .map_err(|e| client.err("PUT (multipart)", key, e))?;
    let mut w = WriteMultipart::new_with_chunk_size(up, PART);
    let mut h = Sha256::new();
    let mut n = 0u64;
    loop {
        let mut buf = vec![0u8; PART];
        let mut filled = 0;
        while filled < PART {
            let r = f
                .read(&mut buf[filled..])
                .map_err(|e| RemoteError::io(path, e))?;
            if r == 0 {
                break;
            }
            filled += r;
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        h.update(&buf);
        n += filled as u64;
        w.wait_for_capacity(4)
            .await
            .map_err(|e| client.err("PUT (part)", key, e))?;
        w.put(Bytes::from(buf));
        progress.advance(filled as u64);
    }
    let actual = hex::encode(h.finalize());
    if actual != sha256 {
        let _ = w.abort().await;
        return Err(RemoteError::DigestMismatch {
            remote: client.name.clone(),
            key: format!("(local file {} for {})", path.display(), client.key(key)),
            expected: sha256.into(),
            actual,
            bytes: n,
        });
    }
    w.finish()
        .await
        .map_err(|e| client.err("PUT (complete)", key, e))?;
    Ok(n)
}

/// What a download running on another thread has brought into its folder so far, so that a
/// rebuild can consume each blob as soon as it is there instead of after the last one.
///
/// A blob takes its name in the folder only when complete and verified (renamed from its
/// temporary file), so its presence under that name is the signal; this adds the wake-up and
/// the end of the download (after which a missing blob will not come).
#[derive(Default)]
pub(crate) struct Arrivals {
    state: Mutex<ArrivalState>,
    cv: Condvar,
}

#[derive(Default)]
struct ArrivalState {
    /// The download has ended (complete or failed).
    over: bool,
    /// The consumer gave up: start no more blobs.
    cancelled: bool,
}

impl Arrivals {
    fn lock(&self) -> std::sync::MutexGuard<'_, ArrivalState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn arrived(&self) {
        let _g = self.lock();
        self.cv.notify_all();
    }

    /// The download has ended; waiters for blobs that did not come are released.
    pub(crate) fn finish(&self) {
        self.lock().over = true;
        self.cv.notify_all();
    }

    /// Asks the download to start no more blobs.
    pub(crate) fn cancel(&self) {
        self.lock().cancelled = true;
    }

    fn cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Waits until `path` exists; `false` when the download ended without it.
    pub(crate) fn wait_for(&self, path: &Path) -> bool {
        let mut g = self.lock();
        loop {
            if path.is_file() {
                return true;
            }
            if g.over {
                return false;
            }
            g = self
                .cv
                .wait_timeout(g, std::time::Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Downloads the blobs `items` (`(sha256, bytes)`) that `dir` lacks into `dir/<sha256>`,
/// verified, in parallel, started in the order given; returns (blobs downloaded, bytes
/// downloaded). With `arrivals`, each blob is announced as it lands and the end is marked
/// (whatever the outcome), so a consumer on another thread can follow.
pub(crate) async fn download_all(
    client: &Client,
    dir: &Path,
    items: &[(String, u64)],
    progress: &dyn Progress,
    arrivals: Option<&Arrivals>,
) -> Result<(u64, u64)> {
    let r = download_each(client, dir, items, progress, arrivals).await;
    if let Some(a) = arrivals {
        a.finish();
    }
    r
}

async fn download_each(
    client: &Client,
    dir: &Path,
    items: &[(String, u64)],
    progress: &dyn Progress,
    arrivals: Option<&Arrivals>,
) -> Result<(u64, u64)> {
    let todo: Vec<&(String, u64)> = items
        .iter()
        .filter(|(s, _)| !dir.join(s).is_file())
        .collect();
    let total: u64 = todo.iter().map(|(_, b)| *b).sum();
    progress.begin("downloading", total);
    let done = std::sync::atomic::AtomicU64::new(0);
    let r: Result<Vec<u64>> = futures::stream::iter(todo)
        .map(|(sha, bytes)| {
            let done = &done;
            async move {
                if arrivals.is_some_and(Arrivals::cancelled) {
                    return Ok(0);
                }
                let n = download_one(client, dir, sha, *bytes, progress).await?;
                if let Some(a) = arrivals {
                    a.arrived();
                }
                count_and_maybe_abort(done).await;
                Ok(n)
            }
        })
        .buffer_unordered(client.jobs)
        .try_collect()
        .await;
    progress.end();
    let sizes = r?;
    Ok((sizes.len() as u64, sizes.into_iter().sum()))
}

async fn download_one(
    client: &Client,
    dir: &Path,
    sha256: &str,
    expected_len: u64,
    progress: &dyn Progress,
) -> Result<u64> {
    let key = blob_key(sha256);
    let r = match client.store.get(&client.path(&key)).await {
        Ok(r) => r,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(RemoteError::NotOnRemote {
                remote: client.name.clone(),
                what: format!("blob {sha256} that a manifest references"),
                key: client.key(&key),
            })
        }
        Err(e) => return Err(client.err("GET", &key, e)),
    };
    let mut tmp = tantra_formats::temp::create_in(dir).map_err(|e| RemoteError::io(dir, e))?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut s = r.into_stream();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|e| client.err("GET", &key, e))?;
        h.update(&chunk);
        n += chunk.len() as u64;
        tmp.write_all(&chunk)
            .map_err(|e| RemoteError::io(tmp.path(), e))?;
        progress.advance(chunk.len() as u64);
    }
    let actual = hex::encode(h.finalize());
    if actual != sha256 || n != expected_len {
        return Err(RemoteError::DigestMismatch {
            remote: client.name.clone(),
            key: client.key(&key),
            expected: format!("{sha256} ({expected_len} bytes)"),
            actual,
            bytes: n,
        });
    }
    // Not synced: the blob is used within this pull and deleted after it; one an interrupted
    // pull leaves behind is hashed again before a resumed pull uses it (`pull::verify_cached`).
    let target = dir.join(sha256);
    tmp.persist(&target)
        .map_err(|e| RemoteError::io(&target, e.error))?;
    Ok(n)
}
