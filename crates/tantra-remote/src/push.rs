//! `push`: a registered version to a remote, each distinct tensor stored once.
//!
//! For each format file the push first checks, locally, that tantra's writer rebuilds the file
//! byte for byte from its tensors and layout ([`crate::source::ManifestSource`] over the open
//! file, written into a hash); a file that is not rebuilt exactly (a `.pt` written by torch) is
//! also sent whole. Then it asks the remote (HEAD, in parallel) which blobs it lacks and sends
//! only those, binds the version name ([`crate::claims`]) and writes the format manifests. A
//! push that was interrupted sends again only what is missing: blobs are written before any
//! manifest names them, and a present blob is never re-sent.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use serde::Serialize;
use tantra_formats::convert::archive_name;
use tantra_formats::{open, write_to, DynSource, OutputFormat, Progress};
use tantra_store::WeightManager;

use crate::claims::{bind, Bound};
use crate::client::Client;
use crate::error::{RemoteError, Result};
use crate::manifest::{
    format_key, tensor_bytes, version_key, ConfigBlob, FormatManifest, Layout, VersionManifest,
    SCHEMA,
};
use crate::source::{Bytes as SrcBytes, HashSink, ManifestSource};
use crate::transfer::{missing, upload_all, Upload};

/// What to push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Only these formats (default: every registered one).
    pub formats: Vec<OutputFormat>,
}

/// What a push did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    pub remote: String,
    pub model: String,
    pub version: String,
    pub content: String,
    /// Formats whose manifest this push wrote.
    pub formats_pushed: Vec<String>,
    /// Formats the remote had already (same file).
    pub formats_present: Vec<String>,
    /// Formats sent whole because tantra's writer does not rebuild them byte for byte.
    pub whole_files: Vec<String>,
    /// Whether this push bound the version name (false: the remote had it).
    pub version_written: bool,
    /// Blobs (tensors and whole files) sent, and their bytes.
    pub blobs_uploaded: u64,
    pub bytes_uploaded: u64,
    /// Blobs the pushed formats reference, and their bytes (what a whole-file tool would count
    /// is `file_bytes`).
    pub blobs_referenced: u64,
    pub bytes_referenced: u64,
    /// Bytes of the pushed format files.
    pub file_bytes: u64,
    /// Bytes of the manifests written.
    pub manifest_bytes: u64,
}

/// One format file, opened and analysed.
struct Analysed {
    format: OutputFormat,
    manifest: FormatManifest,
    src: DynSource,
    path: std::path::PathBuf,
}

/// Pushes `model:version` (the model's default version when `None`) of `wm` to `client`.
///
/// # Errors
/// An unknown version; a local file that does not match its registry entry or digests; the
/// name taken on the remote by other weights; any request failing (named, with what to do).
pub fn push(
    client: &Client,
    wm: &WeightManager,
    model: &str,
    version: Option<&str>,
    opts: &PushOptions,
    progress: &dyn Progress,
) -> Result<PushReport> {
    let reg = wm.registry()?;
    // `MODEL`, `MODEL:VERSION` or `MODEL:TAG` (a tag is an alias of its version).
    if !reg.models.contains_key(model) {
        return Err(tantra_store::StoreError::unknown_model(model, reg.models.keys()).into());
    }
    let version = reg.resolve_version(model, version)?;
    let ver = reg
        .version(model, &version)
        .ok_or_else(|| tantra_store::StoreError::UnknownVersion {
            model: model.into(),
            version: version.clone(),
        })?
        .clone();
    let table = wm.tensor_digests(model, &version)?;
    let config = match &ver.config {
        Some(name) => {
            let p = wm.configs_dir().join(model).join(format!("{name}.json"));
            let text = std::fs::read(&p).map_err(|e| RemoteError::io(&p, e))?;
            let json = serde_json::from_slice(&text).map_err(|e| RemoteError::Config {
                path: p.clone(),
                detail: format!("not JSON: {e}"),
            })?;
            Some(ConfigBlob {
                name: name.clone(),
                json,
            })
        }
        None => None,
    };
    let vm = VersionManifest {
        schema: SCHEMA,
        model: model.into(),
        version: version.clone(),
        content: table.content.clone(),
        parameters: table.parameters,
        tensors: table.tensors.clone(),
        tags: ver.tags.clone(),
        note: ver.note.clone(),
        config,
        created: ver.created.clone(),
    };
    let mut report = PushReport {
        remote: client.name.clone(),
        model: model.into(),
        version: version.clone(),
        content: table.content.clone(),
        formats_pushed: Vec::new(),
        formats_present: Vec::new(),
        whole_files: Vec::new(),
        version_written: false,
        blobs_uploaded: 0,
        bytes_uploaded: 0,
        blobs_referenced: 0,
        bytes_referenced: 0,
        file_bytes: 0,
        manifest_bytes: 0,
    };
    client.block_on(async {
        // The name first: a push that would be refused should not send anything.
        let vkey = version_key(model, &version);
        if let Some(b) = client.get(&vkey).await? {
            let theirs: VersionManifest =
                serde_json::from_slice(&b).map_err(|e| RemoteError::BadManifest {
                    remote: client.name.clone(),
                    key: client.key(&vkey),
                    detail: format!("not a version manifest: {e}"),
                })?;
            if theirs.content != vm.content {
                return Err(RemoteError::VersionTaken {
                    remote: client.name.clone(),
                    name: format!("{}:{}", model, version),
                    theirs: theirs.content,
                    ours: vm.content.clone(),
                });
            }
        }
        // Which formats the remote lacks.
        let mut todo = Vec::new();
        for (fname, frec) in &ver.formats {
            let Ok(format) = fname.parse::<OutputFormat>() else {
                continue;
            };
            if !opts.formats.is_empty() && !opts.formats.contains(&format) {
                continue;
            }
            report.file_bytes += frec.bytes;
            let fkey = format_key(model, &version, fname);
            if let Some(b) = client.get(&fkey).await? {
                if let Ok(m) = serde_json::from_slice::<FormatManifest>(&b) {
                    if m.sha256 == frec.sha256 {
                        report.formats_present.push(fname.clone());
                        continue;
                    }
                }
            }
            todo.push((format, frec.clone()));
        }
        let mut analysed = Vec::new();
        for (format, frec) in &todo {
            analysed.push(analyse(wm, &vm, *format, frec, progress)?);
        }
        // The blobs: every tensor (once), and whole files.
        let mut uploads: BTreeMap<String, Upload<'_>> = BTreeMap::new();
        let first = analysed.first();
        if let Some(a) = first {
            for (i, info) in a.src.tensors().iter().enumerate() {
                let Some(t) = vm.tensor(&info.name) else {
                    continue;
                };
                uploads.entry(t.sha256.clone()).or_insert(Upload::Tensor {
                    sha256: t.sha256.clone(),
                    bytes: tensor_bytes(t).unwrap_or(0),
                    src: a.src.as_ref(),
                    index: i,
                });
            }
        }
        for a in &analysed {
            if let Some(sha) = &a.manifest.whole_file {
                uploads.entry(sha.clone()).or_insert(Upload::File {
                    sha256: sha.clone(),
                    bytes: a.manifest.bytes,
                    path: a.path.clone(),
                });
            }
        }
        report.blobs_referenced = uploads.len() as u64;
        report.bytes_referenced = uploads.values().map(Upload::bytes).sum();
        let lacking: BTreeSet<String> = missing(
            client,
            uploads
                .iter()
                .map(|(k, u)| (k.clone(), u.bytes()))
                .collect(),
        )
        .await?
        .into_iter()
        .collect();
        let send: Vec<&Upload<'_>> = uploads
            .iter()
            .filter(|(k, _)| lacking.contains(*k))
            .map(|(_, u)| u)
            .collect();
        report.blobs_uploaded = send.len() as u64;
        report.bytes_uploaded = upload_all(client, &send, progress).await?;
        // The name, then the formats.
        if !analysed.is_empty() || client.get(&vkey).await?.is_none() {
            let body = to_json(&vm);
            report.manifest_bytes += body.len() as u64;
            report.version_written = bind(client, &vm, body).await? == Bound::Written;
        }
        for a in &analysed {
            let body = to_json(&a.manifest);
            report.manifest_bytes += body.len() as u64;
            client
                .put(&format_key(model, &version, a.format.name()), body)
                .await?;
            report.formats_pushed.push(a.format.name().into());
            if a.manifest.whole_file.is_some() {
                report.whole_files.push(a.format.name().into());
            }
        }
        // A gc that ran while this push reused blobs it thought unreferenced may have removed
        // some: now that the manifests name them, send again whatever is gone.
        let gone: BTreeSet<String> = missing(
            client,
            uploads
                .iter()
                .map(|(k, u)| (k.clone(), u.bytes()))
                .collect(),
        )
        .await?
        .into_iter()
        .collect();
        if !gone.is_empty() {
            let again: Vec<&Upload<'_>> = uploads
                .iter()
                .filter(|(k, _)| gone.contains(*k))
                .map(|(_, u)| u)
                .collect();
            report.blobs_uploaded += again.len() as u64;
            report.bytes_uploaded += upload_all(client, &again, progress).await?;
        }
        Ok(())
    })?;
    Ok(report)
}

fn to_json<T: Serialize>(v: &T) -> Bytes {
    let mut b = serde_json::to_vec_pretty(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

/// Opens one registered file, records its layout, and checks whether tantra's writer rebuilds
/// it byte for byte from that layout.
fn analyse(
    wm: &WeightManager,
    vm: &VersionManifest,
    format: OutputFormat,
    frec: &tantra_store::FormatRecord,
    progress: &dyn Progress,
) -> Result<Analysed> {
    let path = wm.abs(&frec.path);
    let src = open(&path)?;
    let infos = src.tensors();
    let mut same = Vec::new();
    for i in 0..infos.len() {
        if let Some(j) = src.same_bytes_as(i) {
            same.push([i, j]);
        }
    }
    let layout = Layout {
        order: infos.iter().map(|t| t.name.clone()).collect(),
        same_bytes_as: same,
        metadata: src.metadata().clone(),
        values: src
            .values()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_json()))
            .collect(),
        structure: src.structure().map(|s| s.to_json()),
        archive: zip_top_folder(&path).unwrap_or(archive_name(&wm.canonical_path(
            &vm.model,
            &vm.version,
            format,
        )?)),
    };
    for info in infos {
        if vm.tensor(&info.name).is_none() {
            return Err(RemoteError::BadManifest {
                remote: "(local)".into(),
                key: path.display().to_string(),
                detail: format!(
                    "tensor {:?} is not in the version's digests; run `tantra verify`",
                    info.name
                ),
            });
        }
    }
    let rebuilt =
        ManifestSource::new(vm, &layout, SrcBytes::File(src.as_ref())).map_err(|detail| {
            RemoteError::BadManifest {
                remote: "(local)".into(),
                key: path.display().to_string(),
                detail,
            }
        })?;
    let mut sink = HashSink::default();
    // The writer draws its own bar ("writing ...") over the tensors' bytes.
    let wrote = write_to(&mut sink, format, &rebuilt, &layout.archive, progress);
    let reproducible = wrote.is_ok() && sink.hex() == frec.sha256;
    let manifest = FormatManifest {
        schema: SCHEMA,
        format: format.name().into(),
        sha256: frec.sha256.clone(),
        bytes: frec.bytes,
        source: frec.source.clone(),
        created: frec.created.clone(),
        reproducible,
        layout,
        whole_file: (!reproducible).then(|| frec.sha256.clone()),
    };
    Ok(Analysed {
        format,
        manifest,
        src,
        path,
    })
}

/// The top folder of a zip archive's first entry (`mamba_full_pt` of `mamba_full_pt/data.pkl`):
/// the archive name a PyTorch file was written with, which the rebuild must use again. `None`
/// for files that are not zip archives.
fn zip_top_folder(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 30 + 512];
    let mut f = std::fs::File::open(path).ok()?;
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return None,
        }
    }
    if n < 30 || head[..4] != *b"PK\x03\x04" {
        return None;
    }
    let len = u16::from_le_bytes([head[26], head[27]]) as usize;
    let name = head.get(30..30 + len).filter(|_| 30 + len <= n)?;
    let name = std::str::from_utf8(name).ok()?;
    name.split_once('/').map(|(top, _)| top.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantra_formats::{MemorySource, NoProgress};
    use tantra_store::{RegisterOptions, Source};

    fn manifest_of(wm: &WeightManager, model: &str, version: &str) -> VersionManifest {
        let table = wm.tensor_digests(model, version).unwrap();
        VersionManifest {
            schema: SCHEMA,
            model: model.into(),
            version: version.into(),
            content: table.content.clone(),
            parameters: table.parameters,
            tensors: table.tensors,
            tags: vec![],
            note: None,
            config: None,
            created: String::new(),
        }
    }

    #[test]
    fn tantras_own_files_rebuild_byte_for_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let wm = WeightManager::open(tmp.path()).unwrap();
        let mut m = MemorySource::new();
        m.push_f32("b.weight", vec![2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
            .unwrap();
        m.push_f32("a.bias", vec![3], &[0.5, -0.5, 0.0]).unwrap();
        let opts = RegisterOptions {
            formats: OutputFormat::ALL.to_vec(),
            ..Default::default()
        };
        wm.register_source(
            &m,
            "toy",
            "v1",
            Source::Generated { by: None },
            &opts,
            &NoProgress,
        )
        .unwrap();
        let vm = manifest_of(&wm, "toy", "v1");
        let reg = wm.registry().unwrap();
        for (name, rec) in &reg.version("toy", "v1").unwrap().formats {
            let f: OutputFormat = name.parse().unwrap();
            let a = analyse(&wm, &vm, f, rec, &NoProgress).unwrap();
            assert!(a.manifest.reproducible, "{name} is not rebuilt exactly");
            assert_eq!(a.manifest.whole_file, None);
            assert_eq!(a.manifest.layout.order.len(), 2);
        }
    }

    #[test]
    fn a_changed_layout_does_not_pass_for_the_file() {
        // The check is real: a layout that differs from the file (another archive name) makes
        // the rebuild differ, and the file is then sent whole.
        let tmp = tempfile::tempdir().unwrap();
        let wm = WeightManager::open(tmp.path()).unwrap();
        let mut m = MemorySource::new();
        m.push_f32("w", vec![4], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let opts = RegisterOptions {
            formats: vec![OutputFormat::Pt],
            ..Default::default()
        };
        wm.register_source(
            &m,
            "toy",
            "v1",
            Source::Generated { by: None },
            &opts,
            &NoProgress,
        )
        .unwrap();
        let vm = manifest_of(&wm, "toy", "v1");
        let reg = wm.registry().unwrap();
        let rec = &reg.version("toy", "v1").unwrap().formats["pt"];
        let a = analyse(&wm, &vm, OutputFormat::Pt, rec, &NoProgress).unwrap();
        assert!(a.manifest.reproducible);
        assert_eq!(a.manifest.layout.archive, "toy_v1_pt");
        let mut layout = a.manifest.layout.clone();
        layout.archive = "other".into();
        let src = ManifestSource::new(&vm, &layout, SrcBytes::File(a.src.as_ref())).unwrap();
        let mut sink = HashSink::default();
        write_to(
            &mut sink,
            OutputFormat::Pt,
            &src,
            &layout.archive,
            &NoProgress,
        )
        .unwrap();
        assert_ne!(sink.hex(), rec.sha256);
    }
}
