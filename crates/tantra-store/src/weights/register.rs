//! Registration: validate, stage, plan, commit.
//!
//! All slow work happens first, without the root's lock: each file is copied into a locked
//! temporary file in `weights/` (hashed while it is written), re-opened and every tensor read and
//! digested (that is the validation), and the other formats asked for are written from it and
//! digested too; each must hold the same tensors. Only then is the lock taken, the registry
//! re-read, and [`crate::plan::plan_register`] decides against the registry as it is *now*;
//! [`WeightManager::apply`] carries the plan out.

use std::path::{Path, PathBuf};

use tantra_formats::convert::archive_name;
use tantra_formats::{open, write_to, DynSource, OutputFormat, Progress, TensorSource};

use super::{
    absolute, check_format, file_len, output_format_of, relabel, same_file, RegisterOptions,
    RegisterReport, WeightManager,
};
use crate::content::TensorTable;
use crate::error::{Result, StoreError};
use crate::fsx::{self, FileHash};
use crate::names::validate_name;
use crate::plan::{plan_register, NewFile, RegisterRequest};
use crate::registry::Source;
use crate::time::now_rfc3339;

/// A file the caller wrote at its canonical path, for [`WeightManager::register_written`].
#[derive(Debug, Clone)]
pub struct WrittenFile {
    pub format: OutputFormat,
    pub path: PathBuf,
    /// The sha256 and size of the bytes as they were written.
    pub hash: FileHash,
    /// Where the file came from, for the registry.
    pub source: Source,
    /// The caller wrote this file's tensors from bytes it checked against their digests, so
    /// the store need not read them; `false` for a file copied whole.
    pub tensors_verified: bool,
}

/// Refuses a second file for a format already in `prepared`.
fn one_file_per_format(prepared: &[Prepared], format: OutputFormat) -> Result<()> {
    if prepared.iter().any(|p| p.format == format) {
        return Err(StoreError::InvalidArgument {
            what: "file list",
            value: format.name().into(),
            detail: "two files for one format".into(),
        });
    }
    Ok(())
}

/// An input file of a registration, staged in `weights/` or already in place.
pub(crate) struct Prepared {
    format: OutputFormat,
    /// `None` when the file already sits at its canonical path.
    staged: Option<tempfile::NamedTempFile>,
    hash: FileHash,
    source: Source,
}

impl WeightManager {
    /// Registers one weight file as (model, version): validates it (every tensor is read),
    /// hashes it, copies it to its canonical name, writes the other formats asked for, and
    /// records everything. The file's format comes from its content (`.bin` extension makes a
    /// PyTorch file `bin`, otherwise `pt`).
    ///
    /// # Errors
    /// An invalid name; a file that is not readable weights; a version that already holds
    /// other weights (without `force`); a conversion that does not reproduce the tensors; a
    /// name collision; the lock not coming in time. Nothing is recorded on error, and nothing
    /// is left under a final name.
    pub fn register(
        &self,
        file: &Path,
        model: &str,
        version: &str,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        let format = output_format_of(file)?;
        self.register_files(
            &[(format, file.to_path_buf())],
            model,
            version,
            None,
            opts,
            progress,
        )
    }

    /// Registers a set of files of one version, one per format, without converting them (each
    /// is validated and must hold the same tensors). Files already at their canonical path
    /// ([`WeightManager::canonical_path`]) are recorded in place, others are copied.
    /// `source` overrides where the files are said to come from (default: imported from their
    /// path, or generated for files already in place).
    ///
    /// # Errors
    /// As [`WeightManager::register`]; also a file whose content is not the format it is
    /// given as.
    pub fn register_files(
        &self,
        files: &[(OutputFormat, PathBuf)],
        model: &str,
        version: &str,
        source: Option<Source>,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        self.check_request(model, version, opts)?;
        if files.is_empty() {
            return Err(StoreError::NothingToDo("no files to register".into()));
        }
        self.ensure_layout()?;
        let wdir = self.weights_dir();
        let mut prepared = Vec::new();
        let mut first: Option<(DynSource, TensorTable, PathBuf)> = None;
        for (format, path) in files {
            one_file_per_format(&prepared, *format)?;
            let target = self.canonical_path(model, version, *format)?;
            let in_place = same_file(path, &target);
            let (staged, hash) = if in_place {
                let h = fsx::hash_file_with(path, "hashing", file_len(path)?, progress)?;
                (None, h)
            } else {
                let s = fsx::copy_to_temp(path, &wdir, &target, progress)?;
                let hash = s.hash.clone();
                (Some(s.tmp), hash)
            };
            let readable: PathBuf = match &staged {
                Some(t) => t.path().to_path_buf(),
                None => path.clone(),
            };
            let src = open(&readable).map_err(|e| relabel(e, &readable, path))?;
            check_format(path, *format, src.format())?;
            let table = TensorTable::of(src.as_ref(), self.jobs, progress)
                .map_err(|e| relabel(e, &readable, path))?;
            let src_desc = match &source {
                Some(s) => s.clone(),
                None if in_place => Source::Generated { by: None },
                None => Source::Imported {
                    from: absolute(path).display().to_string(),
                },
            };
            match &first {
                None => first = Some((src, table, path.clone())),
                Some((_, t0, p0)) => {
                    if let Some(d) = t0.difference(&table) {
                        return Err(StoreError::ContentMismatch {
                            path: path.clone(),
                            other: p0.display().to_string(),
                            detail: d,
                        });
                    }
                }
            }
            prepared.push(Prepared {
                format: *format,
                staged,
                hash,
                source: src_desc,
            });
        }
        let (Some((src0, table, _)), Some(from_format)) =
            (first, prepared.first().map(|p| p.format))
        else {
            return Err(StoreError::NothingToDo("no files to register".into()));
        };
        let skip = self.precheck(model, version, &table, opts)?;
        for f in &opts.formats {
            if prepared.iter().any(|p| p.format == *f) || skip.contains(f) {
                continue;
            }
            prepared.push(self.convert_into_temp(
                src0.as_ref(),
                &table,
                model,
                version,
                *f,
                from_format,
                progress,
            )?);
        }
        drop(src0);
        self.commit(model, version, &table, prepared, opts)
    }

    /// Registers files the caller has just written at their canonical paths, with their
    /// sha256 taken as the bytes were written (`hash`) and the version's tensors (`table`).
    /// A file marked `tensors_verified` (written by the caller from bytes it checked against
    /// each tensor's digest) is not read again; any other (a file copied whole) is opened, its
    /// format checked and every tensor digested, and must hold exactly `table`, as in
    /// [`WeightManager::register_files`]. This is how a pull from a remote, which verified
    /// every blob and every rebuilt file on the way in, avoids reading and hashing each file
    /// twice more, while each file keeps its own lineage.
    ///
    /// # Errors
    /// A file not at its canonical path, or whose size is not the one given; a table whose
    /// content digest does not add up; a file read here that is not in its format or holds
    /// other tensors; the rest as [`WeightManager::register`].
    pub fn register_written(
        &self,
        files: &[WrittenFile],
        table: &TensorTable,
        model: &str,
        version: &str,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        self.check_request(model, version, opts)?;
        if files.is_empty() {
            return Err(StoreError::NothingToDo("no files to register".into()));
        }
        let mut sorted = table.tensors.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        if TensorTable::content_of(&sorted) != table.content {
            return Err(StoreError::InvalidArgument {
                what: "tensor table",
                value: table.content.clone(),
                detail: "its tensors do not add up to its content digest".into(),
            });
        }
        let mut prepared = Vec::new();
        for f in files {
            one_file_per_format(&prepared, f.format)?;
            let target = self.canonical_path(model, version, f.format)?;
            if !same_file(&f.path, &target) {
                return Err(StoreError::InvalidArgument {
                    what: "written file",
                    value: f.path.display().to_string(),
                    detail: format!("not at its canonical path {}", target.display()),
                });
            }
            let len = file_len(&f.path)?;
            if len != f.hash.bytes {
                return Err(StoreError::Changed {
                    path: f.path.clone(),
                    what: format!("{len} bytes, written {}", f.hash.bytes),
                });
            }
            if !f.tensors_verified {
                let src = open(&f.path)?;
                check_format(&f.path, f.format, src.format())?;
                let t = TensorTable::of(src.as_ref(), self.jobs, progress)?;
                if let Some(detail) = table.difference(&t) {
                    return Err(StoreError::ContentMismatch {
                        path: f.path.clone(),
                        other: format!("the tensors of {model}:{version}"),
                        detail,
                    });
                }
            }
            prepared.push(Prepared {
                format: f.format,
                staged: None,
                hash: f.hash.clone(),
                source: f.source.clone(),
            });
        }
        self.precheck(model, version, table, opts)?;
        self.commit(model, version, table, prepared, opts)
    }

    /// Registers tensors that are not a file of the root's formats as (model, version),
    /// writing `opts.formats` (safetensors when empty) from `src` one tensor at a time.
    /// `source` is recorded as where every written file comes from: [`Source::Generated`] for
    /// model initialization, [`Source::Imported`] for a checkpoint read from elsewhere (a
    /// Hugging Face directory, say).
    ///
    /// # Errors
    /// As [`WeightManager::register`].
    pub fn register_source(
        &self,
        src: &(dyn TensorSource + Sync),
        model: &str,
        version: &str,
        source: Source,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        self.check_request(model, version, opts)?;
        self.ensure_layout()?;
        let table = TensorTable::of(src, self.jobs, progress)?;
        let skip = self.precheck(model, version, &table, opts)?;
        let mut formats = opts.formats.clone();
        if formats.is_empty() {
            formats.push(OutputFormat::Safetensors);
        }
        formats.sort();
        formats.dedup();
        let mut prepared = Vec::new();
        for f in formats {
            if skip.contains(&f) {
                continue;
            }
            let mut p = self.convert_into_temp(src, &table, model, version, f, f, progress)?;
            p.source = source.clone();
            prepared.push(p);
        }
        self.commit(model, version, &table, prepared, opts)
    }

    /// Registers the weights of `from_model:from_version` (a tag names its version) as
    /// `model:version` as well, every format of it, without copying bytes: each file is hard
    /// linked (copied only where the file system cannot link), through the same atomic
    /// registration as [`WeightManager::register`]. Tags and the note are not carried over
    /// (tags are unique per model); the config is, when the model is the same.
    ///
    /// # Errors
    /// An unknown source; a target that holds other weights (without `force`); a source file
    /// that is missing or changed; the lock.
    pub fn copy_version(
        &self,
        from_model: &str,
        from_version: &str,
        model: &str,
        version: &str,
        opts: &RegisterOptions,
        progress: &dyn Progress,
    ) -> Result<RegisterReport> {
        validate_name("model", from_model)?;
        let reg = self.registry()?;
        let from_version = reg.resolve_version(from_model, Some(from_version))?;
        let rec = super::find_version(&reg, from_model, &from_version)?.clone();
        let mut opts = opts.clone();
        if opts.config.is_none() && from_model == model {
            opts.config = rec.config.clone();
        }
        self.check_request(model, version, &opts)?;
        let table = self.tensor_digests(from_model, &from_version)?;
        self.precheck(model, version, &table, &opts)?;
        self.ensure_layout()?;
        let wdir = self.weights_dir();
        let mut prepared = Vec::new();
        for format in rec.available_formats() {
            let Some(f) = rec.formats.get(format.name()) else {
                continue;
            };
            let src = self.abs(&f.path);
            let len = file_len(&src)?;
            if len != f.bytes {
                return Err(StoreError::Changed {
                    path: src,
                    what: format!("{len} bytes, registered {}", f.bytes),
                });
            }
            let target = self.canonical_path(model, version, format)?;
            let staged = match fsx::link_to_temp(&src, &wdir, &target)? {
                Some(t) => t,
                None => fsx::copy_to_temp(&src, &wdir, &target, progress)?.tmp,
            };
            prepared.push(Prepared {
                format,
                staged: Some(staged),
                hash: FileHash {
                    sha256: f.sha256.clone(),
                    bytes: f.bytes,
                },
                source: Source::Imported {
                    from: format!("{from_model}:{from_version} ({})", f.path),
                },
            });
        }
        self.commit(model, version, &table, prepared, &opts)
    }

    fn check_request(&self, model: &str, version: &str, opts: &RegisterOptions) -> Result<()> {
        validate_name("model", model)?;
        validate_name("version", version)?;
        for t in &opts.tags {
            validate_name("tag", t)?;
        }
        if let Some(c) = &opts.config {
            validate_name("config", c)?;
            let path = self.configs_dir().join(model).join(format!("{c}.json"));
            if !path.is_file() {
                return Err(StoreError::UnknownConfig {
                    path,
                    model: model.into(),
                    name: c.clone(),
                });
            }
        }
        Ok(())
    }

    /// Fails early (before converting) when the version holds other weights and `force` is
    /// off, and says which formats of these weights are registered already (no need to
    /// convert them). The decisive check is repeated under the lock, on the registry this read
    /// leaves in the handle's cache (parsed once when nothing changed in between).
    fn precheck(
        &self,
        model: &str,
        version: &str,
        table: &TensorTable,
        opts: &RegisterOptions,
    ) -> Result<Vec<OutputFormat>> {
        let reg = self.registry_shared()?;
        let Some(v) = reg.version(model, version) else {
            return Ok(Vec::new());
        };
        let content = v.content.as_str();
        if content != table.content {
            if !opts.force {
                return Err(StoreError::VersionExists {
                    model: model.into(),
                    version: version.into(),
                    existing: content.into(),
                    new: table.content.clone(),
                });
            }
            return Ok(Vec::new());
        }
        if opts.force {
            return Ok(Vec::new());
        }
        Ok(OutputFormat::EVERY
            .into_iter()
            .filter(|f| v.formats.contains_key(f.name()))
            .collect())
    }

    /// Writes `src` in `format` to a temporary file in `weights/` and checks that it re-reads
    /// to the same tensors.
    #[allow(clippy::too_many_arguments)]
    fn convert_into_temp(
        &self,
        src: &(dyn TensorSource + Sync),
        table: &TensorTable,
        model: &str,
        version: &str,
        format: OutputFormat,
        from: OutputFormat,
        progress: &dyn Progress,
    ) -> Result<Prepared> {
        let target = self.canonical_path(model, version, format)?;
        let archive = archive_name(&target);
        let staged = fsx::write_temp(&self.weights_dir(), &target, |w| {
            write_to(w, format, src, &archive, progress)
                .map(|_| ())
                .map_err(|e| StoreError::from(e.with_path(&target)))
        })?;
        let out = open(staged.path()).map_err(|e| relabel(e, staged.path(), &target))?;
        let t = TensorTable::of(out.as_ref(), self.jobs, progress)
            .map_err(|e| relabel(e, staged.path(), &target))?;
        if let Some(d) = table.difference(&t) {
            return Err(StoreError::ContentMismatch {
                path: target,
                other: format!("the {from} file"),
                detail: d,
            });
        }
        Ok(Prepared {
            format,
            hash: staged.hash.clone(),
            staged: Some(staged.tmp),
            source: Source::Converted {
                from: from.name().to_string(),
            },
        })
    }

    /// The critical section: under the lock, re-read the registry, plan against it, carry the
    /// plan out.
    fn commit(
        &self,
        model: &str,
        version: &str,
        table: &TensorTable,
        prepared: Vec<Prepared>,
        opts: &RegisterOptions,
    ) -> Result<RegisterReport> {
        let mut files = Vec::new();
        let mut staged = Vec::new();
        for p in prepared {
            files.push(NewFile {
                format: p.format,
                sha256: p.hash.sha256.clone(),
                bytes: p.hash.bytes,
                source: p.source,
                staged: p.staged.is_some(),
            });
            staged.push(p.staged);
        }
        let req = RegisterRequest {
            model: model.into(),
            version: version.into(),
            content: table.content.clone(),
            parameters: table.parameters,
            tensors: table.tensors.len() as u64,
            dtypes: table.dtypes(),
            files,
            tags: opts.tags.clone(),
            note: opts.note.clone(),
            config: opts.config.clone(),
            make_default: opts.make_default,
            force: opts.force,
            now: now_rfc3339(),
            reason: opts
                .reason
                .clone()
                .unwrap_or_else(|| "replaced by register --force".into()),
        };
        let lock = self.lock()?;
        let current = self.registry_shared()?;
        let (mut plan, mut files) = plan_register(&current, &req)?;
        let is_default = plan
            .registry
            .models
            .get(model)
            .is_some_and(|m| m.default.as_deref() == Some(version));
        let renames = plan.renames.clone();
        let duplicates = std::mem::take(&mut plan.duplicates);
        let applied = self.apply(&lock, &current, plan, staged, &[table])?;
        drop(lock);
        // Files placed under an alternate name were moved to their canonical one if they could.
        let now = Some(&applied.registry);
        for f in &mut files {
            if let Some(r) = renames.iter().find(|r| r.from == f.path) {
                let moved = now
                    .and_then(|reg| reg.version(model, version))
                    .and_then(|v| v.formats.get(&f.format))
                    .is_some_and(|rec| rec.path == r.to);
                if moved {
                    f.path = r.to.clone();
                }
            }
        }
        Ok(RegisterReport {
            duplicates,
            model: model.into(),
            version: version.into(),
            content: table.content.clone(),
            parameters: table.parameters,
            tensors: table.tensors.len() as u64,
            dtypes: table.dtypes(),
            files,
            backups: applied.backups.into_iter().map(|b| b.id).collect(),
            default: is_default,
        })
    }
}
