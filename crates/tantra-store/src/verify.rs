//! Verification: re-hash every registered file (and checkpoint) and compare with what was
//! recorded; report missing, changed and unregistered files.
//!
//! Sizes are compared first (a truncated file is found without reading it), then the files of
//! the right size are hashed on several threads, largest first. The registry and the folder
//! listing are read together under the lock, so that a registration running beside `verify`
//! never shows up as a half-registered file; the hashing itself runs without the lock.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use tantra_formats::Progress;

use crate::error::Result;
use crate::fsx;
use crate::names::validate_name;
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
        let (m, v) = match s.split_once(':') {
            Some((m, v)) => (m, Some(v)),
            None => (s, None),
        };
        validate_name("model", m)?;
        if let Some(v) = v {
            validate_name("version", v)?;
        }
        Ok(VerifyScope {
            model: Some(m.into()),
            version: v.map(str::to_string),
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
}

impl ProblemKind {
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::Missing => "missing",
            ProblemKind::Changed => "changed",
            ProblemKind::Unregistered => "unregistered",
            ProblemKind::Temp => "temp",
            ProblemKind::IncompleteCheckpoint => "incomplete-checkpoint",
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
    /// the checkpoints) and reports what is missing, changed or unregistered.
    ///
    /// # Errors
    /// An unknown model or version; a registry that does not parse; the lock. Problems with
    /// files are not errors: they are the report.
    pub fn verify(&self, scope: &VerifyScope, progress: &dyn Progress) -> Result<VerifyReport> {
        let start = Instant::now();
        let mut problems = Vec::new();
        let mut expect = Vec::new();
        {
            let _lock = if self.root.is_dir() {
                Some(self.lock()?)
            } else {
                None
            };
            let reg = self.registry()?;
            if let Some(m) = &scope.model {
                match &scope.version {
                    Some(v) => {
                        crate::weights::find_version(&reg, m, v)?;
                    }
                    None => {
                        if !reg.models.contains_key(m) && self.checkpoints(m)?.is_empty() {
                            return Err(crate::StoreError::UnknownModel { model: m.clone() });
                        }
                    }
                }
            }
            for (m, model) in &reg.models {
                if scope.model.as_deref().is_some_and(|s| s != m) {
                    continue;
                }
                for (v, ver) in &model.versions {
                    if scope.version.as_deref().is_some_and(|s| s != v) {
                        continue;
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
                        match status {
                            Ok(r) => expect.push(Expect {
                                rel: r.file.clone(),
                                bytes: r.bytes,
                                sha256: r.sha256.clone(),
                                model: m.clone(),
                                version: None,
                                format: r.format.clone(),
                                step: Some(r.step),
                            }),
                            Err(why) => problems.push(VerifyProblem {
                                kind: ProblemKind::IncompleteCheckpoint,
                                path: format!(
                                    "checkpoints/{m}/{}",
                                    path.file_name()
                                        .map(|n| n.to_string_lossy().into_owned())
                                        .unwrap_or_default()
                                ),
                                model: Some(m.clone()),
                                version: None,
                                format: None,
                                step: None,
                                detail: why,
                            }),
                        }
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
                        "left by an interrupted write; `tantra cleanup --orphans` removes it",
                    ));
                }
                for f in files {
                    if !registered.contains(f.rel.as_str()) {
                        problems.push(plain(ProblemKind::Unregistered, f.rel, "not named by the registry; register it, or `tantra cleanup --orphans` removes it"));
                    }
                }
            }
        }

        // Sizes first; then hash what has the right size.
        let mut to_hash: Vec<&Expect> = Vec::new();
        for e in &expect {
            match std::fs::metadata(self.abs(&e.rel)) {
                Err(_) => problems.push(problem(
                    ProblemKind::Missing,
                    e,
                    "registered, but the file is gone".into(),
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
                Ok(h) => problems.push(problem(
                    ProblemKind::Changed,
                    e,
                    format!("sha256 {:.16}..., registered {:.16}...", h.sha256, e.sha256),
                )),
                Err(err) => problems.push(problem(
                    ProblemKind::Missing,
                    e,
                    format!("unreadable: {err}"),
                )),
            }
        }
        problems.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(VerifyReport {
            files: expect.len(),
            bytes: total,
            seconds: start.elapsed().as_secs_f64(),
            problems,
        })
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
