//! Verification: re-hash every registered file (and checkpoint) and compare with what was
//! recorded; report everything the store cannot vouch for.
//!
//! Sizes are compared first (a truncated file is found without reading it), then the files of
//! the right size are hashed on several threads, largest first; a file whose sha256 differs is
//! read tensor by tensor against the version's per-tensor digests, so the report names the
//! tensor that changed. Beyond the files, `verify` checks the per-tensor digests themselves, a
//! default that names a missing version, symlinks and other non-regular entries, quarantined
//! and unaccounted files, the backup manifest, the history and the registry itself (a missing
//! or damaged registry is a problem in the report, never an empty store).
//!
//! `verify` takes no lock, so it works for a user who can only read the root and on a read-only
//! mount. The registry is replaced by rename, so it reads one generation; when a file it names
//! is missing and the registry has moved on meanwhile (a concurrent `remove`), it starts over on
//! the fresh registry instead of reporting a false "missing".

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use tantra_formats::Progress;

use crate::error::{Result, StoreError};
use crate::fsx;
use crate::registry::Registry;
use crate::WeightManager;

/// What to verify: everything, one model, or one version.
#[derive(Debug, Clone, Default)]
pub struct VerifyScope {
    pub model: Option<String>,
    pub version: Option<String>,
}

impl VerifyScope {
    /// Parses `MODEL` or `MODEL:VERSION`.
    ///
    /// # Errors
    /// Invalid names.
    pub fn parse(s: &str) -> Result<VerifyScope> {
        let r = crate::modelref::ModelRef::parse(s)?;
        Ok(VerifyScope {
            model: Some(r.model),
            version: r.version,
        })
    }
}

/// What is wrong with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProblemKind {
    /// Registered, but not there.
    Missing,
    /// There, but not the recorded bytes.
    Changed,
    /// In `weights/`, but not in the registry.
    Unregistered,
    /// A temporary file left by an interrupted write.
    Temp,
    /// A checkpoint whose record or file is incomplete.
    IncompleteCheckpoint,
    /// A checkpoint record that does not parse: `tantra repair` rebuilds it from its file.
    DamagedCheckpoint,
    /// A symlink, folder or device where the store keeps regular files.
    NotRegular,
    /// A version's per-tensor digests are missing or damaged.
    Digests,
    /// A model's default names a version that is not registered.
    DefaultMissing,
    /// A file in `quarantine/`: moved aside because the store could not account for it.
    Quarantined,
    /// The registry is missing or damaged.
    Registry,
    /// The backup manifest is missing or damaged.
    Manifest,
    /// Lines of the history that do not parse.
    History,
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Missing => "missing",
            ProblemKind::Changed => "changed",
            ProblemKind::Unregistered => "unregistered",
            ProblemKind::Temp => "temp",
            ProblemKind::IncompleteCheckpoint => "incomplete-checkpoint",
            ProblemKind::DamagedCheckpoint => "damaged-checkpoint",
            ProblemKind::NotRegular => "not-regular",
            ProblemKind::Digests => "digests",
            ProblemKind::DefaultMissing => "default-missing",
            ProblemKind::Quarantined => "quarantined",
            ProblemKind::Registry => "registry",
            ProblemKind::Manifest => "manifest",
            ProblemKind::History => "history",
        }
    }
}

/// One problem.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyProblem {
    pub kind: ProblemKind,
    /// Relative to the root.
    pub path: String,
    pub model: Option<String>,
    pub version: Option<String>,
    pub format: Option<String>,
    pub step: Option<u64>,
    pub detail: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// Files checked.
    pub files: usize,
    /// Bytes hashed.
    pub bytes: u64,
    pub seconds: f64,
    pub problems: Vec<VerifyProblem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Expect {
    /// The version's content digest, for naming the tensor that changed.
    content: Option<String>,
    rel: String,
    bytes: u64,
    sha256: String,
    model: String,
    version: Option<String>,
    format: String,
    step: Option<u64>,
}

impl WeightManager {
    /// Re-hashes the registered files in `scope` (and, for the whole root or a whole model,
    /// the checkpoints) and reports every problem (see the module docs).
    ///
    /// # Errors
    /// An unknown model or version. Problems with files and metadata are not errors: they are
    /// the report.
    pub fn verify(&self, scope: &VerifyScope, progress: &dyn Progress) -> Result<VerifyReport> {
        let mut attempt = 0;
        loop {
            let (report, moved_on) = self.verify_once(scope, progress)?;
            attempt += 1;
            if !moved_on || attempt >= 10 {
                return Ok(report);
            }
        }
    }

    /// One pass; the flag says that a file was missing while the registry moved on.
    fn verify_once(
        &self,
        scope: &VerifyScope,
        progress: &dyn Progress,
    ) -> Result<(VerifyReport, bool)> {
        let start = Instant::now();
        let mut problems = Vec::new();
        let mut expect = Vec::new();
        let reg = match self.registry() {
            Ok(r) => r,
            Err(e @ (StoreError::Corrupt { .. } | StoreError::RegistryMissing { .. })) => {
                problems.push(plain(
                    ProblemKind::Registry,
                    crate::weights::REGISTRY_FILE.into(),
                    &tantra_formats::chain(&e).to_string(),
                ));
                Registry::default()
            }
            Err(e) => return Err(e),
        };
        // A tag names its version (`mamba:golden`).
        let resolved;
        let scope = match (&scope.model, &scope.version, problems.is_empty()) {
            (Some(m), Some(v), true) => {
                resolved = VerifyScope {
                    model: Some(m.clone()),
                    version: Some(reg.resolve_version(m, Some(v))?),
                };
                &resolved
            }
            _ => scope,
        };
        if let Some(m) = &scope.model {
            if problems.is_empty() {
                match &scope.version {
                    Some(v) => {
                        crate::weights::find_version(&reg, m, v)?;
                    }
                    None => {
                        if !reg.models.contains_key(m) && self.checkpoints(m)?.is_empty() {
                            return Err(StoreError::unknown_model(m, reg.models.keys()));
                        }
                    }
                }
            }
        }
        for (m, model) in &reg.models {
            if scope.model.as_deref().is_some_and(|s| s != m) {
                continue;
            }
            if let Some(d) = &model.default {
                if !model.versions.contains_key(d) && scope.version.is_none() {
                    problems.push(VerifyProblem {
                        model: Some(m.clone()),
                        version: Some(d.clone()),
                        ..plain(
                            ProblemKind::DefaultMissing,
                            crate::weights::REGISTRY_FILE.into(),
                            &format!("the default of {m} is {d}, which is not registered; run `tantra set-default {m} VERSION`"),
                        )
                    });
                }
            }
            for (v, ver) in &model.versions {
                if scope.version.as_deref().is_some_and(|s| s != v) {
                    continue;
                }
                if let Err(e) = self.digests_of(m, v, &ver.content) {
                    problems.push(VerifyProblem {
                        model: Some(m.clone()),
                        version: Some(v.clone()),
                        ..plain(
                            ProblemKind::Digests,
                            format!("digests/{}.json", ver.content),
                            &tantra_formats::chain(&e).to_string(),
                        )
                    });
                }
                for (f, rec) in &ver.formats {
                    expect.push(Expect {
                        rel: rec.path.clone(),
                        bytes: rec.bytes,
                        sha256: rec.sha256.clone(),
                        model: m.clone(),
                        version: Some(v.clone()),
                        format: f.clone(),
                        step: None,
                        content: Some(ver.content.clone()),
                    });
                }
            }
        }
        if scope.version.is_none() {
            let models = match &scope.model {
                Some(m) => vec![m.clone()],
                None => self.checkpoint_models()?,
            };
            for m in models {
                for (path, status) in self.checkpoint_scan(&m)? {
                    let rel = format!(
                        "checkpoints/{m}/{}",
                        path.file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_default()
                    );
                    match status {
                        Ok(r) => expect.push(Expect {
                            rel: r.file.clone(),
                            bytes: r.bytes,
                            sha256: r.sha256.clone(),
                            model: m.clone(),
                            version: None,
                            format: r.format.clone(),
                            step: Some(r.step),
                            content: None,
                        }),
                        Err(why) => {
                            let damaged = matches!(
                                self.read_checkpoint_record(&path),
                                Err(StoreError::Corrupt { .. })
                            );
                            problems.push(VerifyProblem {
                                model: Some(m.clone()),
                                ..plain(
                                    if damaged {
                                        ProblemKind::DamagedCheckpoint
                                    } else {
                                        ProblemKind::IncompleteCheckpoint
                                    },
                                    rel,
                                    &why,
                                )
                            })
                        }
                    }
                }
                for (name, what) in crate::cleanup::list_other(&self.checkpoint_dir(&m))? {
                    problems.push(plain(
                        ProblemKind::NotRegular,
                        format!("checkpoints/{m}/{name}"),
                        &format!("{what}, not a regular file"),
                    ));
                }
            }
        }
        if scope.model.is_none() {
            let registered = reg.all_paths();
            let (stale, files) = self.scan_folder("weights")?;
            for f in stale {
                problems.push(plain(
                    ProblemKind::Temp,
                    f.rel,
                    "left by an interrupted write; `tantra cleanup` removes it",
                ));
            }
            for f in files {
                if !registered.contains(f.rel.as_str()) {
                    problems.push(plain(ProblemKind::Unregistered, f.rel, "not named by the registry; register it, or `tantra cleanup` moves it to quarantine/"));
                }
            }
            for sub in ["weights", "backups"] {
                for (name, what) in crate::cleanup::list_other(&self.abs(sub))? {
                    let rel = format!("{sub}/{name}");
                    if registered.contains(rel.as_str()) {
                        continue; // reported with the registered file below
                    }
                    problems.push(plain(
                        ProblemKind::NotRegular,
                        rel,
                        &format!("{what}, not a regular file; replace it with the file itself"),
                    ));
                }
            }
            for (name, bytes) in
                crate::cleanup::list_files(&self.root.join(crate::txn::QUARANTINE_DIR))?
            {
                if name == "index.jsonl" {
                    continue;
                }
                problems.push(plain(
                    ProblemKind::Quarantined,
                    format!("{}/{name}", crate::txn::QUARANTINE_DIR),
                    &format!("{bytes} bytes the store could not account for (see quarantine/index.jsonl); look, then restore or delete it yourself"),
                ));
            }
            if let Err(e) = self.load_manifest() {
                problems.push(plain(
                    ProblemKind::Manifest,
                    format!("backups/{}", crate::backup::MANIFEST_FILE),
                    &tantra_formats::chain(&e).to_string(),
                ));
            }
            let (_, bad) = crate::history::read_raw(&self.root.join(crate::history::HISTORY_FILE))?;
            if bad > 0 {
                problems.push(plain(
                    ProblemKind::History,
                    crate::history::HISTORY_FILE.into(),
                    &format!("{bad} line(s) do not parse (a write cut short?); they are ignored"),
                ));
            }
        }

        // Sizes first; then hash what has the right size.
        let mut to_hash: Vec<&Expect> = Vec::new();
        for e in &expect {
            match std::fs::symlink_metadata(self.abs(&e.rel)) {
                Err(_) => {
                    // Whether the registry moved on is asked once, below, not per file.
                    problems.push(problem(
                        ProblemKind::Missing,
                        e,
                        "registered, but the file is gone".into(),
                    ))
                }
                Ok(m) if !m.file_type().is_file() => problems.push(problem(
                    ProblemKind::NotRegular,
                    e,
                    "registered, but not a regular file (a symlink?): its bytes are not the store's".into(),
                )),
                Ok(m) if m.len() != e.bytes => problems.push(problem(
                    ProblemKind::Changed,
                    e,
                    format!("{} bytes, registered {}", m.len(), e.bytes),
                )),
                Ok(_) => to_hash.push(e),
            }
        }
        let paths: Vec<PathBuf> = to_hash.iter().map(|e| self.abs(&e.rel)).collect();
        let total: u64 = to_hash.iter().map(|e| e.bytes).sum();
        progress.begin("verifying", total);
        let results = fsx::hash_files_parallel(&paths, self.jobs, progress);
        progress.end();
        for (e, r) in to_hash.iter().zip(results) {
            match r {
                Ok(h) if h.sha256 == e.sha256 => {}
                Ok(h) => {
                    let which = self.changed_tensor(e).unwrap_or_default();
                    problems.push(problem(
                        ProblemKind::Changed,
                        e,
                        format!(
                            "sha256 {:.16}..., registered {:.16}...{which}",
                            h.sha256, e.sha256
                        ),
                    ))
                }
                Err(err) => problems.push(problem(
                    ProblemKind::Missing,
                    e,
                    format!("unreadable: {}", tantra_formats::chain(&err)),
                )),
            }
        }
        // A registered file missing, changed or replaced while the registry moved on was the
        // work of a concurrent writer, not damage: the caller looks again at the fresh registry.
        let mut moved_on = false;
        if problems.iter().any(|p| {
            p.version.is_some()
                && matches!(
                    p.kind,
                    ProblemKind::Missing | ProblemKind::Changed | ProblemKind::NotRegular
                )
        }) && self
            .registry()
            .is_ok_and(|now| now.generation != reg.generation)
        {
            moved_on = true;
        }
        problems.sort_by(|a, b| a.path.cmp(&b.path).then(a.kind.name().cmp(b.kind.name())));
        Ok((
            VerifyReport {
                files: expect.len(),
                bytes: total,
                seconds: start.elapsed().as_secs_f64(),
                problems,
            },
            moved_on,
        ))
    }

    /// For a changed registered file: `; tensor "x" differs` from its per-tensor digests, or
    /// why the file no longer reads.
    fn changed_tensor(&self, e: &Expect) -> Option<String> {
        let (content, version) = (e.content.as_ref()?, e.version.as_ref()?);
        let want = self.digests_of(&e.model, version, content).ok()?;
        let src = match tantra_formats::open(&self.abs(&e.rel)) {
            Ok(s) => s,
            Err(err) => {
                return Some(format!(
                    "; it no longer reads: {}",
                    tantra_formats::chain(&err.kind)
                ))
            }
        };
        match crate::content::TensorTable::of(src.as_ref(), self.jobs, &tantra_formats::NoProgress)
        {
            Ok(t) => Some(match want.difference(&t) {
                Some(d) => format!("; {d}"),
                None => "; the tensors are intact (only the container bytes differ)".into(),
            }),
            Err(err) => Some(format!(
                "; it no longer reads: {}",
                tantra_formats::chain(&err.kind)
            )),
        }
    }
}

fn plain(kind: ProblemKind, path: String, detail: &str) -> VerifyProblem {
    VerifyProblem {
        kind,
        path,
        model: None,
        version: None,
        format: None,
        step: None,
        detail: detail.into(),
    }
}

fn problem(kind: ProblemKind, e: &Expect, detail: String) -> VerifyProblem {
    VerifyProblem {
        kind,
        path: e.rel.clone(),
        model: Some(e.model.clone()),
        version: e.version.clone(),
        format: Some(e.format.clone()),
        step: e.step,
        detail,
    }
}
