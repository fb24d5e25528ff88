//! `pull`: a version from a remote into the weights root, every format rebuilt and verified.
//!
//! The version manifest is checked first (its tensor table must add up to its content digest,
//! and the local root must not hold other weights under the name). The blobs the wanted formats
//! need are downloaded into `<root>/remote-cache/`, each verified against its name before it
//! gets it ([`crate::transfer`]); each file is then rebuilt by tantra's writer (or copied from
//! its whole-file blob) through the store's atomic path, its sha256 checked before it takes its
//! name, and the version registered only once every file is in place. An interrupted pull
//! resumes from the blobs in the cache, each hashed again first; the cache is emptied when the
//! pull completes.
//!
//! Each byte is written twice (cache, file) and hashed twice (on arrival, as the file is
//! written): a rebuilt file is registered from what was verified on the way
//! ([`WeightManager::register_written`]) rather than read and hashed a third and fourth time,
//! and cache blobs are not synced (they live for seconds; a crash's torn blob fails its hash on
//! resume). Only the files, which stay, are synced.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tantra_formats::fsutil::atomic_write_checked;
use tantra_formats::{write_to, ErrorKind, FormatError, OutputFormat, Progress};
use tantra_store::{FileHash, RegisterOptions, Source, TensorTable, WeightManager, WrittenFile};

use crate::client::Client;
use crate::error::{RemoteError, Result};
use crate::manifest::{
    format_key, tensor_bytes, version_dir, version_key, FormatManifest, VersionManifest,
};
use crate::source::{Bytes as SrcBytes, ManifestSource, Tee};
use crate::transfer::{download_all, Arrivals};

/// The folder under the root where a pull keeps verified blobs until it completes.
pub const CACHE_DIR: &str = "remote-cache";

/// What to pull.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Only these formats (default: every format on the remote).
    pub formats: Vec<OutputFormat>,
    /// Make the pulled version the model's default.
    pub make_default: bool,
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub remote: String,
    pub model: String,
    pub version: String,
    pub content: String,
    /// Formats written and registered.
    pub formats_pulled: Vec<String>,
    /// Formats the root had already.
    pub formats_present: Vec<String>,
    /// Formats copied from a whole-file blob rather than rebuilt.
    pub whole_files: Vec<String>,
    pub blobs_downloaded: u64,
    pub bytes_downloaded: u64,
    /// Blobs found verified in the cache from an interrupted pull.
    pub blobs_resumed: u64,
    /// Tensors taken from other versions in the root instead of downloaded (verified too).
    pub blobs_local: u64,
    /// Bytes of the files written.
    pub file_bytes: u64,
}

/// Reads and checks a version manifest.
pub(crate) async fn version_manifest(
    client: &Client,
    model: &str,
    version: &str,
) -> Result<VersionManifest> {
    let key = version_key(model, version);
    let Some(b) = client.get(&key).await? else {
        return Err(RemoteError::NotOnRemote {
            remote: client.name.clone(),
            what: format!("version {model}:{version}"),
            key: client.key(&key),
        });
    };
    let bad = |detail: String| RemoteError::BadManifest {
        remote: client.name.clone(),
        key: client.key(&key),
        detail,
    };
    let vm: VersionManifest =
        serde_json::from_slice(&b).map_err(|e| bad(format!("not a version manifest: {e}")))?;
    if vm.model != model || vm.version != version {
        return Err(bad(format!("it describes {}:{}", vm.model, vm.version)));
    }
    let mut sorted = vm.tensors.clone();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    if sorted != vm.tensors || TensorTable::content_of(&sorted) != vm.content {
        return Err(bad(
            "its tensor table does not add up to its content digest".into(),
        ));
    }
    for t in &vm.tensors {
        if tensor_bytes(t).is_none() || t.sha256.len() != 64 {
            return Err(bad(format!(
                "tensor {:?} has a bad dtype, shape or digest",
                t.name
            )));
        }
    }
    Ok(vm)
}

/// The versions of `model` on the remote, newest first by their `created` time.
pub(crate) async fn remote_versions(client: &Client, model: &str) -> Result<Vec<String>> {
    let dir = format!("versions/{model}/");
    let mut out = Vec::new();
    for (k, _) in client.list(&dir).await? {
        if let Some(v) = k
            .strip_prefix(&dir)
            .and_then(|r| r.strip_suffix("/version.json"))
        {
            out.push(v.to_string());
        }
    }
    Ok(out)
}

/// Pulls `model:version` (the newest on the remote when `None`) into `wm`.
///
/// # Errors
/// No such version on the remote; a manifest that does not add up; a blob whose bytes do not
/// match its name (never used); a rebuilt file whose sha256 is not the manifest's; the local
/// root holding other weights under the name; any request failing.
pub fn pull(
    client: &Client,
    wm: &WeightManager,
    model: &str,
    version: Option<&str>,
    opts: &PullOptions,
    progress: &dyn Progress,
) -> Result<PullReport> {
    tantra_store::validate_name("model", model)?;
    let (vm, manifests) = client.block_on(async {
        let version = match version {
            Some(v) => v.to_string(),
            None => newest(client, model).await?,
        };
        tantra_store::validate_name("version", &version)?;
        let vm = version_manifest(client, model, &version).await?;
        let mut manifests = Vec::new();
        let dir = format!("{}/", version_dir(model, &version));
        for (k, _) in client.list(&dir).await? {
            let Some(f) = k.strip_prefix(&dir).and_then(|r| r.strip_suffix(".json")) else {
                continue;
            };
            let Ok(format) = f.parse::<OutputFormat>() else {
                continue;
            };
            if !opts.formats.is_empty() && !opts.formats.contains(&format) {
                continue;
            }
            let b = client
                .get(&k)
                .await?
                .ok_or_else(|| RemoteError::NotOnRemote {
                    remote: client.name.clone(),
                    what: format!("the {f} manifest"),
                    key: client.key(&k),
                })?;
            let m: FormatManifest =
                serde_json::from_slice(&b).map_err(|e| RemoteError::BadManifest {
                    remote: client.name.clone(),
                    key: client.key(&k),
                    detail: format!("not a format manifest: {e}"),
                })?;
            manifests.push((format, k, m));
        }
        Ok::<_, RemoteError>((vm, manifests))
    })?;
    for f in &opts.formats {
        if !manifests.iter().any(|(g, _, _)| g == f) {
            return Err(RemoteError::NotOnRemote {
                remote: client.name.clone(),
                what: format!("{} format of {model}:{}", f.name(), vm.version),
                key: client.key(&format_key(model, &vm.version, f.name())),
            });
        }
    }
    let version = vm.version.clone();
    let mut report = PullReport {
        remote: client.name.clone(),
        model: model.into(),
        version: version.clone(),
        content: vm.content.clone(),
        formats_pulled: Vec::new(),
        formats_present: Vec::new(),
        whole_files: Vec::new(),
        blobs_downloaded: 0,
        bytes_downloaded: 0,
        blobs_resumed: 0,
        blobs_local: 0,
        file_bytes: 0,
    };
    // What the root has.
    let reg = wm.registry()?;
    let local = reg.version(model, &version).cloned();
    if let Some(l) = &local {
        if l.content != vm.content {
            return Err(RemoteError::LocalConflict {
                remote: client.name.clone(),
                name: format!("{}:{}", model, version),
                local: l.content.clone(),
                remote_content: vm.content.clone(),
            });
        }
    }
    let mut wanted: Vec<(OutputFormat, String, FormatManifest)> = manifests
        .into_iter()
        .filter(|(f, _, _)| {
            let have = local
                .as_ref()
                .is_some_and(|l| l.formats.contains_key(f.name()));
            if have {
                report.formats_present.push(f.name().into());
            }
            !have
        })
        .collect();
    if wanted.is_empty() {
        return Ok(report);
    }
    // The blobs, in the order the first file rebuilt from tensor blobs uses them.
    wanted.sort_by_key(|(_, _, m)| m.whole_file.is_some());
    let cache = wm.root().join(CACHE_DIR);
    std::fs::create_dir_all(&cache).map_err(|e| RemoteError::io(&cache, e))?;
    let mut items: Vec<(String, u64)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for (_, _, m) in &wanted {
        let mut add = |sha: &str, bytes: u64| {
            if seen.insert(sha.to_string()) {
                items.push((sha.to_string(), bytes));
            }
        };
        match &m.whole_file {
            Some(sha) => add(sha, m.bytes),
            None => {
                for name in &m.layout.order {
                    if let Some(t) = vm.tensor(name) {
                        add(&t.sha256, tensor_bytes(t).unwrap_or(0));
                    }
                }
            }
        }
    }
    report.blobs_resumed = verify_cached(&cache, &items)?;
    report.blobs_local = copy_local_tensors(wm, &reg, &cache, &items)?;
    wm.ensure_layout()?;
    // Download on one thread while each file rebuilt from tensor blobs is written on its own
    // thread from the blobs as they land (downloads and writes overlap instead of following
    // each other); whole-file blobs are copied into place once the download is done.
    let targets: Vec<PathBuf> = wanted
        .iter()
        .map(|(format, _, _)| wm.canonical_path(model, &version, *format))
        .collect::<std::result::Result<_, _>>()?;
    let arrivals = Arrivals::default();
    let (downloaded, written) = std::thread::scope(|s| {
        let download = s.spawn(|| {
            client.block_on(download_all(
                client,
                &cache,
                &items,
                progress,
                Some(&arrivals),
            ))
        });
        let writers: Vec<_> = wanted
            .iter()
            .zip(&targets)
            .filter(|((_, _, m), _)| m.whole_file.is_none())
            .map(|((format, key, m), target)| {
                let (vm, cache, arrivals) = (&vm, &cache, &arrivals);
                s.spawn(move || {
                    let r = rebuild(
                        client,
                        vm,
                        m,
                        key,
                        cache,
                        Some(arrivals),
                        target,
                        *format,
                        &tantra_formats::NoProgress,
                    );
                    if r.is_err() {
                        arrivals.cancel();
                    }
                    r
                })
            })
            .collect();
        let panicked = || RemoteError::io(&cache, std::io::Error::other("a pull thread panicked"));
        let written: Vec<Result<()>> = writers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err(panicked())))
            .collect();
        let downloaded = download.join().unwrap_or_else(|_| Err(panicked()));
        (downloaded, written)
    });
    // A failed download explains a failed write (it waited for a blob that never came).
    let (n, bytes) = downloaded?;
    report.blobs_downloaded = n;
    report.bytes_downloaded = bytes;
    for r in written {
        r?;
    }
    let mut files = Vec::new();
    for ((format, key, m), target) in wanted.iter().zip(targets) {
        if m.whole_file.is_some() {
            rebuild(
                client, &vm, m, key, &cache, None, &target, *format, progress,
            )?;
            report.whole_files.push(format.name().into());
        }
        report.file_bytes += m.bytes;
        report.formats_pulled.push(format.name().into());
        files.push((*format, target));
    }
    report.formats_pulled.sort();
    report.whole_files.sort();
    // The config the version names.
    let mut config = None;
    if let Some(c) = &vm.config {
        tantra_store::validate_name("config", &c.name)?;
        let p = wm
            .configs_dir()
            .join(model)
            .join(format!("{}.json", c.name));
        if !p.is_file() {
            std::fs::create_dir_all(wm.configs_dir().join(model))
                .map_err(|e| RemoteError::io(&p, e))?;
            let mut b = serde_json::to_vec_pretty(&c.json).unwrap_or_default();
            b.push(b'\n');
            tantra_formats::fsutil::atomic_write_bytes(&p, &b, false)?;
        }
        config = Some(c.name.clone());
    }
    let ropts = RegisterOptions {
        make_default: opts.make_default,
        tags: vm.tags.clone(),
        note: vm.note.clone(),
        config,
        ..Default::default()
    };
    // Each file's lineage: where this root got it, and where the pushing root had it from.
    let origin = format!(
        "remote {} ({}/{})",
        client.name,
        client.def.url(),
        version_dir(model, &version)
    );
    // A file rebuilt here from verified blobs is registered without being read again; one
    // copied from a whole-file blob (a `.pt` torch wrote) is read and its tensors checked
    // against the version's by the store.
    let written: Vec<WrittenFile> = files
        .into_iter()
        .zip(&wanted)
        .map(|((format, path), (_, _, m))| WrittenFile {
            format,
            path,
            hash: FileHash {
                sha256: m.sha256.clone(),
                bytes: m.bytes,
            },
            source: pulled_source(&origin, &m.source),
            tensors_verified: m.whole_file.is_none(),
        })
        .collect();
    let table = TensorTable {
        content: vm.content.clone(),
        parameters: vm.parameters,
        tensors: vm.tensors.clone(),
    };
    wm.register_written(&written, &table, model, &version, &ropts, progress)?;
    // Done: the cache has served its purpose.
    for (sha, _) in &items {
        let _ = std::fs::remove_file(cache.join(sha));
    }
    let _ = std::fs::remove_dir(&cache);
    Ok(report)
}

/// The registry's record of a pulled file: imported from the remote, with the lineage the
/// pushing root recorded (`converted from safetensors`, `checkpoint step 400 (...)`).
fn pulled_source(origin: &str, there: &Source) -> Source {
    Source::Imported {
        from: format!("{origin}; there: {}", there.describe()),
    }
}

/// Hashes the blobs among `items` that an interrupted pull left in `cache` and deletes those
/// whose bytes are not their name (downloads are not synced, so a crash can tear one); returns
/// how many good ones there are. They were verified when they arrived, but that was another
/// process.
fn verify_cached(cache: &Path, items: &[(String, u64)]) -> Result<u64> {
    let mut good = 0;
    for (sha, bytes) in items {
        let p = cache.join(sha);
        if !p.is_file() {
            continue;
        }
        let ok = tantra_store::hash_file(&p, &tantra_formats::NoProgress)
            .is_ok_and(|h| h.sha256 == *sha && h.bytes == *bytes);
        if ok {
            good += 1;
        } else {
            std::fs::remove_file(&p).map_err(|e| RemoteError::io(&p, e))?;
        }
    }
    Ok(good)
}

/// Puts into `cache` the tensors among `items` that versions already in the root hold (read
/// from their files, each checked against its digest): a pull of a fine-tune downloads only
/// the tensors that changed. Returns how many were taken.
fn copy_local_tensors(
    wm: &WeightManager,
    reg: &tantra_store::Registry,
    cache: &Path,
    items: &[(String, u64)],
) -> Result<u64> {
    let mut wanted: BTreeMap<&str, u64> = items
        .iter()
        .filter(|(s, _)| !cache.join(s).is_file())
        .map(|(s, b)| (s.as_str(), *b))
        .collect();
    let mut taken = 0;
    for (model, m) in &reg.models {
        for (version, v) in &m.versions {
            if wanted.is_empty() {
                return Ok(taken);
            }
            let Ok(table) = wm.tensor_digests(model, version) else {
                continue;
            };
            let names: Vec<(&str, &str)> = table
                .tensors
                .iter()
                .filter(|t| wanted.contains_key(t.sha256.as_str()))
                .map(|t| (t.name.as_str(), t.sha256.as_str()))
                .collect();
            if names.is_empty() {
                continue;
            }
            let Some(rec) = OutputFormat::EVERY
                .iter()
                .find_map(|f| v.formats.get(f.name()))
            else {
                continue;
            };
            let Ok(src) = tantra_formats::open(&wm.abs(&rec.path)) else {
                continue;
            };
            for (name, sha) in names {
                if !wanted.contains_key(sha) {
                    continue;
                }
                let Some(i) = src.find(name) else { continue };
                let Ok(bytes) = src.tensor_bytes(i) else {
                    continue;
                };
                if tantra_formats::digest::sha256_hex(&bytes) != sha {
                    continue;
                }
                tantra_formats::fsutil::atomic_write_bytes(&cache.join(sha), &bytes, true)?;
                wanted.remove(sha);
                taken += 1;
            }
        }
    }
    Ok(taken)
}

/// The version of `model` created last, among those on the remote.
async fn newest(client: &Client, model: &str) -> Result<String> {
    let versions = remote_versions(client, model).await?;
    let mut best: Option<(String, String)> = None;
    for v in versions {
        let vm = version_manifest(client, model, &v).await?;
        if best.as_ref().is_none_or(|(c, _)| vm.created > *c) {
            best = Some((vm.created, v));
        }
    }
    best.map(|(_, v)| v)
        .ok_or_else(|| RemoteError::NotOnRemote {
            remote: client.name.clone(),
            what: format!("version of {model}"),
            key: client.key(&format!("versions/{model}/")),
        })
}

/// Writes one format file at `target` through the store's atomic path, checking its sha256
/// before it takes the name. A file already at `target` with the right bytes (left by an
/// interrupted pull) is kept.
#[allow(clippy::too_many_arguments)]
fn rebuild(
    client: &Client,
    vm: &VersionManifest,
    m: &FormatManifest,
    key: &str,
    cache: &Path,
    arrivals: Option<&Arrivals>,
    target: &PathBuf,
    format: OutputFormat,
    progress: &dyn Progress,
) -> Result<()> {
    if target.is_file() {
        let h = tantra_store::hash_file(target, &tantra_formats::NoProgress)?;
        if h.sha256 == m.sha256 {
            return Ok(());
        }
    }
    let got: RefCell<Option<String>> = RefCell::new(None);
    let src = match &m.whole_file {
        None => Some(
            ManifestSource::new(
                vm,
                &m.layout,
                SrcBytes::Blobs {
                    dir: cache.to_path_buf(),
                    arrivals,
                },
            )
            .map_err(|detail| RemoteError::BadManifest {
                remote: client.name.clone(),
                key: client.key(key),
                detail,
            })?,
        ),
        Some(_) => None,
    };
    let write = |w: &mut tantra_formats::fsutil::FileWriter<'_>| -> Result<(), FormatError> {
        let mut tee = Tee {
            inner: w,
            sink: Default::default(),
        };
        match (&src, &m.whole_file) {
            (Some(src), _) => {
                write_to(&mut tee, format, src, &m.layout.archive, progress)?;
            }
            (None, Some(sha)) => {
                let p = cache.join(sha);
                let mut f = std::fs::File::open(&p).map_err(|e| FormatError::new(&p, e))?;
                std::io::copy(&mut f, &mut tee).map_err(|e| FormatError::new(&p, e))?;
            }
            (None, None) => {}
        }
        tee.flush().map_err(|e| FormatError::new(target, e))?;
        *got.borrow_mut() = Some(tee.sink.hex());
        Ok(())
    };
    let check = |_: &Path| -> Result<(), FormatError> {
        let actual = got.borrow().clone().unwrap_or_default();
        if actual == m.sha256 {
            Ok(())
        } else {
            Err(FormatError::new(
                target,
                ErrorKind::Unsupported(format!(
                    "the rebuilt file has sha256 {actual}, the manifest {} says {}; nothing was written",
                    client.key(key),
                    m.sha256
                )),
            ))
        }
    };
    atomic_write_checked(target, false, write, check)?;
    Ok(())
}
