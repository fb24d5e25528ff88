//! Interchange with the Hugging Face layout for `mamba`: a directory holding `config.json` and
//! `model.safetensors` (or shards listed in `model.safetensors.index.json`), which transformers'
//! `MambaForCausalLM.from_pretrained` loads unchanged.
//!
//! - **Export** ([`export_hf`]) writes the config and the weights, one safetensors file or
//!   shards of at most a given size, with the metadata `{"format": "pt"}` that transformers
//!   requires. A tied head is not written (transformers does not write it either).
//! - **Import** ([`import_hf`]) reads `config.json` plus a single or sharded safetensors or
//!   `pytorch_model*.bin` checkpoint (shards are opened through
//!   [`crate::open::OpenWeights::directory`], which refuses shard names that leave the
//!   directory), renames original `mamba_ssm` tensors (`backbone.embedding.weight` ->
//!   `backbone.embeddings.weight`; a bare `MambaModel` without the `backbone.` prefix), drops a
//!   tied `lm_head.weight` after checking it equals the embeddings, and checks every name and
//!   shape against the config. The result is a [`TensorSource`] ready to be stored.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tantra_formats::fsutil::atomic_write;
use tantra_formats::{
    write_to, Format, FormatError, OutputFormat, Progress, TensorInfo, TensorSource, Value,
};

use tantra_store::{
    ConfigManager, RegisterOptions, RegisterReport, Source, StoreError, WeightManager,
};

use crate::arch::{check_against, Architecture, TensorMismatch};
use crate::error::ConfigError;
use crate::mamba::{names, MambaConfig};
use crate::names::Scope;
use crate::open::{OpenError, OpenWeights};
use crate::schema::schemas;

/// The name transformers gives a single safetensors checkpoint.
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// The index of a sharded safetensors checkpoint.
pub const SAFETENSORS_INDEX: &str = "model.safetensors.index.json";
/// The config file.
pub const CONFIG_FILE: &str = "config.json";

/// `backbone.embeddings.weight` and `backbone.embedding.weight` (mamba_ssm), from the table.
fn embeddings_names() -> [String; 2] {
    names::embeddings(&Scope::root()).map(|s| s.weight())
}

/// `lm_head.weight`, from the table.
fn lm_head_name() -> String {
    names::lm_head(&Scope::root()).weight()
}

/// An error of export or import.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    #[error("{path}: I/O error")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid JSON")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: not a valid mamba config")]
    Config { path: PathBuf, source: ConfigError },
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Opening the checkpoint failed: no weights, a bad shard name, an index that lies.
    #[error(transparent)]
    Checkpoint(#[from] OpenError),
    /// Two tensors end up with the same name (after renaming).
    #[error("{dir}: tensor {name:?} appears twice in the checkpoint")]
    DuplicateTensor { dir: PathBuf, name: String },
    /// `tie_word_embeddings` is true but the file's head differs from the embeddings.
    #[error("{dir}: lm_head.weight differs from backbone.embeddings.weight although config.json says tie_word_embeddings: true; set it to false to keep the separate head")]
    TiedHeadDiffers { dir: PathBuf },
    /// `tie_word_embeddings` is false and the file has no head.
    #[error("{dir}: lm_head.weight is missing and config.json says tie_word_embeddings: false")]
    MissingHead { dir: PathBuf },
    /// Names or shapes disagree with the config.
    #[error("{dir}: the tensors do not match config.json: {}", summarize(.problems))]
    Tensors {
        dir: PathBuf,
        problems: Vec<TensorMismatch>,
    },
    /// An output file exists and overwriting was not asked for.
    #[error("{path} already exists (use --force to overwrite)")]
    Exists { path: PathBuf },
    /// A shard size of 0.
    #[error("shard size must be at least 1 byte")]
    ShardSize,
    /// The weights root refused (unknown version, no config, a version holding other weights).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The stored config of the version is not a valid Mamba config.
    #[error("{model}:{version}: the stored config is not a valid mamba config")]
    StoredConfig {
        model: String,
        version: String,
        source: ConfigError,
    },
}

fn summarize(problems: &[TensorMismatch]) -> String {
    let mut s: Vec<String> = problems.iter().take(5).map(|p| p.to_string()).collect();
    if problems.len() > 5 {
        s.push(format!("and {} more", problems.len() - 5));
    }
    s.join("; ")
}

// ---------------------------------------------------------------------------------------------
// Views

/// A source seen through a list of `(index in inner, new name)`, with its own metadata.
struct View<'a> {
    inner: &'a dyn TensorSource,
    picks: Vec<usize>,
    infos: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
}

impl<'a> View<'a> {
    fn new(inner: &'a dyn TensorSource, picks: Vec<usize>) -> Self {
        let infos = picks
            .iter()
            .filter_map(|&i| inner.tensors().get(i).cloned())
            .collect();
        let mut metadata = BTreeMap::new();
        metadata.insert("format".to_string(), "pt".to_string());
        View {
            inner,
            picks,
            infos,
            metadata,
            values: BTreeMap::new(),
        }
    }

    fn inner_index(&self, index: usize) -> Result<usize, FormatError> {
        self.picks
            .get(index)
            .copied()
            .ok_or_else(|| FormatError::memory(format!("no tensor at index {index}")))
    }
}

impl TensorSource for View<'_> {
    fn format(&self) -> Format {
        self.inner.format()
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        self.inner.tensor_bytes(self.inner_index(index)?)
    }
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        self.inner.stream_tensor(self.inner_index(index)?, sink)
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
}

// ---------------------------------------------------------------------------------------------
// Export

/// How to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Split the weights into shards of at most this many bytes of tensor data (a tensor larger
    /// than this gets a shard of its own), listed in `model.safetensors.index.json`.
    pub shard_size: Option<u64>,
    /// Replace existing files.
    pub force: bool,
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Every file written, config first.
    pub files: Vec<PathBuf>,
    pub tensors: usize,
    pub parameters: u64,
    /// Bytes of all weight files (not the config).
    pub bytes: u64,
}

/// Writes `config` and `weights` to `dir` in the Hugging Face layout (see the module docs).
/// `weights` must hold exactly the parameters the config implies; a tied `lm_head.weight` in
/// it is skipped.
///
/// # Errors
/// An invalid config, weights that do not match it, an existing output without `force`, a
/// shard size of 0, or a write error (nothing is left under a final name by a failed write).
pub fn export_hf(
    config: &MambaConfig,
    weights: &dyn TensorSource,
    dir: &Path,
    options: &ExportOptions,
    progress: &dyn Progress,
) -> Result<ExportReport, HfError> {
    config.validate("").map_err(|source| HfError::Config {
        path: dir.join(CONFIG_FILE),
        source,
    })?;
    let picks: Vec<usize> = weights
        .tensors()
        .iter()
        .enumerate()
        .filter(|(_, t)| !(config.tie_word_embeddings && t.name == lm_head_name()))
        .map(|(i, _)| i)
        .collect();
    let view = View::new(weights, picks);
    let problems = check_against(&config.parameters(), &view, true);
    if !problems.is_empty() {
        return Err(HfError::Tensors {
            dir: dir.to_path_buf(),
            problems,
        });
    }
    if options.shard_size == Some(0) {
        return Err(HfError::ShardSize);
    }

    // Plan the files before writing any.
    let groups: Vec<Vec<usize>> = match options.shard_size {
        None => vec![(0..view.tensors().len()).collect()],
        Some(limit) => shard_groups(view.tensors(), limit),
    };
    let names: Vec<String> = if groups.len() == 1 && options.shard_size.is_none() {
        vec![SAFETENSORS_FILE.to_string()]
    } else {
        let n = groups.len();
        (1..=n)
            .map(|i| format!("model-{i:05}-of-{n:05}.safetensors"))
            .collect()
    };
    let mut planned: Vec<PathBuf> = vec![dir.join(CONFIG_FILE)];
    planned.extend(names.iter().map(|n| dir.join(n)));
    if options.shard_size.is_some() {
        planned.push(dir.join(SAFETENSORS_INDEX));
    }
    if !options.force {
        if let Some(p) = planned.iter().find(|p| p.exists()) {
            return Err(HfError::Exists { path: p.clone() });
        }
    }
    fs::create_dir_all(dir).map_err(|source| HfError::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let mut files = Vec::new();
    let config_path = dir.join(CONFIG_FILE);
    write_json(&config_path, &config_json(config))?;
    files.push(config_path);

    let mut bytes = 0u64;
    let mut weight_map = BTreeMap::new();
    let mut total_size = 0u64;
    for (group, name) in groups.iter().zip(&names) {
        let inner: Vec<usize> = group.iter().map(|&i| view.picks[i]).collect();
        let part = View::new(weights, inner);
        for t in part.tensors() {
            weight_map.insert(t.name.clone(), name.clone());
            total_size = total_size.saturating_add(t.byte_len().unwrap_or(0));
        }
        let path = dir.join(name);
        bytes += atomic_write(&path, true, |w| {
            write_to(w, OutputFormat::Safetensors, &part, "model", progress)
        })?;
        files.push(path);
    }
    if options.shard_size.is_some() {
        let index = serde_json::json!({
            "metadata": { "total_size": total_size },
            "weight_map": weight_map,
        });
        let path = dir.join(SAFETENSORS_INDEX);
        write_json(&path, &index)?;
        files.push(path);
    }
    Ok(ExportReport {
        files,
        tensors: view.tensors().len(),
        parameters: view.parameter_count(),
        bytes,
    })
}

/// Writes a Mamba of `config` with the seeded initial weights of [`crate::arch::init_weights`]
/// as a Hugging Face directory (through [`export_hf`], one `model.safetensors`, existing files
/// replaced): a model of any shape without a checkpoint, for benchmarks and tests that need
/// real files of a given size. The same `config` and `seed` give the same bytes.
///
/// # Errors
/// An invalid config (named as `dir/config.json`) or a write error.
///
/// # Examples
/// ```
/// use tantra_models::{hf::export_seeded, Architecture, ModelConfig, Preset};
/// let ModelConfig::Mamba(config) = Architecture::Mamba.preset(Preset::SampleSmall) else {
///     unreachable!()
/// };
/// let dir = tempfile::tempdir()?;
/// let report = export_seeded(&config, 0, dir.path())?;
/// assert!(dir.path().join("model.safetensors").exists());
/// assert_eq!(report.parameters, config.parameter_count());
///
/// // A config that breaks a rule is refused before anything is written.
/// let mut bad = config.clone();
/// bad.hidden_size = 0;
/// let empty = tempfile::tempdir()?;
/// assert!(export_seeded(&bad, 0, empty.path()).is_err());
/// assert!(!empty.path().join("config.json").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn export_seeded(config: &MambaConfig, seed: u64, dir: &Path) -> Result<ExportReport, HfError> {
    let as_config_error = |source| HfError::Config {
        path: dir.join(CONFIG_FILE),
        source,
    };
    config.validate("").map_err(as_config_error)?;
    let weights = crate::arch::init_weights(&crate::arch::ModelConfig::Mamba(config.clone()), seed)
        .map_err(as_config_error)?;
    let options = ExportOptions {
        shard_size: None,
        force: true,
    };
    export_hf(config, &weights, dir, &options, &tantra_formats::NoProgress)
}

/// Groups tensors in order so that each group's data stays within `limit` bytes (a tensor
/// larger than `limit` alone in its group).
fn shard_groups(tensors: &[TensorInfo], limit: u64) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut size = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        let b = t.byte_len().unwrap_or(0);
        if !current.is_empty() && size.saturating_add(b) > limit {
            groups.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(i);
        size = size.saturating_add(b);
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    groups
}

/// The `config.json` text of a Mamba config: our config plus `dtype`, as transformers writes.
fn config_json(config: &MambaConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.entry("dtype").or_insert_with(|| "float32".into());
        o.entry("intermediate_size")
            .or_insert_with(|| config.intermediate().into());
    }
    v
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), HfError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| HfError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    text.push('\n');
    tantra_formats::fsutil::atomic_write_bytes(path, text.as_bytes(), true)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Import

/// A Hugging Face checkpoint read for import: the config and the tensors under tantra's names.
pub struct HfCheckpoint {
    /// The validated config.
    pub config: MambaConfig,
    /// The checkpoint files read (one, or the shards).
    pub files: Vec<PathBuf>,
    /// Renames applied, `(from, to)`.
    pub renamed: Vec<(String, String)>,
    /// True when a tied `lm_head.weight` was found, checked equal to the embeddings, and left
    /// out.
    pub dropped_tied_head: bool,
    open: OpenWeights,
    /// For each tensor of the result: (source, index in source).
    picks: Vec<(usize, usize)>,
    infos: Vec<TensorInfo>,
    metadata: BTreeMap<String, String>,
    values: BTreeMap<String, Value>,
}

impl std::fmt::Debug for HfCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfCheckpoint")
            .field("files", &self.files)
            .field("tensors", &self.infos.len())
            .field("renamed", &self.renamed)
            .field("dropped_tied_head", &self.dropped_tied_head)
            .finish()
    }
}

/// The tantra name of a checkpoint tensor name: `mamba_ssm`'s `backbone.embedding.weight`
/// becomes `backbone.embeddings.weight`; with `bare` (a `MambaModel` saved without the
/// `backbone.` prefix) everything but `lm_head.weight` gets the prefix.
fn map_name(name: &str, bare: bool) -> String {
    let name = if bare && name != lm_head_name() {
        Scope::root().pp(names::BACKBONE).name(name)
    } else {
        name.to_string()
    };
    let [embeddings, mamba_ssm] = embeddings_names();
    if name == mamba_ssm {
        embeddings
    } else {
        name
    }
}

/// Reads a Hugging Face Mamba directory (see the module docs).
///
/// # Errors
/// A missing or invalid `config.json`, no checkpoint, a shard name that leaves the directory,
/// an index naming tensors its shards lack, a name appearing twice, a head that contradicts
/// `tie_word_embeddings`, or names and shapes that do not match the config.
pub fn import_hf(dir: &Path) -> Result<HfCheckpoint, HfError> {
    let config_path = dir.join(CONFIG_FILE);
    let text = fs::read_to_string(&config_path).map_err(|source| HfError::Io {
        path: config_path.clone(),
        source,
    })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| HfError::Json {
        path: config_path.clone(),
        source,
    })?;
    let config = MambaConfig::from_json(&json).map_err(|source| HfError::Config {
        path: config_path.clone(),
        source,
    })?;

    let open = OpenWeights::directory(dir)?;
    let files = open.files.clone();
    let sources = open.sources();
    let bare = !sources
        .iter()
        .flat_map(|s| s.tensors())
        .any(|t| t.name.starts_with(&format!("{}.", names::BACKBONE)));

    let mut picks = Vec::new();
    let mut infos: Vec<TensorInfo> = Vec::new();
    let mut renamed = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (s, src) in sources.iter().enumerate() {
        for (i, t) in src.tensors().iter().enumerate() {
            let name = map_name(&t.name, bare);
            if name != t.name {
                renamed.push((t.name.clone(), name.clone()));
            }
            if !seen.insert(name.clone()) {
                return Err(HfError::DuplicateTensor {
                    dir: dir.to_path_buf(),
                    name,
                });
            }
            picks.push((s, i));
            infos.push(TensorInfo::new(name, t.dtype, t.shape.clone()));
        }
    }

    let head = infos.iter().position(|t| t.name == lm_head_name());
    let mut dropped_tied_head = false;
    match (config.tie_word_embeddings, head) {
        (true, Some(h)) => {
            let [embeddings, _] = embeddings_names();
            let emb = infos.iter().position(|t| t.name == embeddings);
            let same = match emb {
                Some(e) => {
                    let (es, ei) = picks[e];
                    let (hs, hi) = picks[h];
                    infos[e].dtype == infos[h].dtype
                        && infos[e].shape == infos[h].shape
                        && tantra_formats::tensor_digest(sources[es], ei)?
                            == tantra_formats::tensor_digest(sources[hs], hi)?
                }
                None => false,
            };
            if !same {
                return Err(HfError::TiedHeadDiffers {
                    dir: dir.to_path_buf(),
                });
            }
            picks.remove(h);
            infos.remove(h);
            dropped_tied_head = true;
        }
        (false, None) => {
            return Err(HfError::MissingHead {
                dir: dir.to_path_buf(),
            })
        }
        _ => {}
    }
    drop(sources);

    let mut metadata = BTreeMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let ckpt = HfCheckpoint {
        config,
        files,
        renamed,
        dropped_tied_head,
        open,
        picks,
        infos,
        metadata,
        values: BTreeMap::new(),
    };
    let problems = check_against(&ckpt.config.parameters(), &ckpt, true);
    if !problems.is_empty() {
        return Err(HfError::Tensors {
            dir: dir.to_path_buf(),
            problems,
        });
    }
    Ok(ckpt)
}

impl HfCheckpoint {
    fn locate(&self, index: usize) -> Result<(&dyn TensorSource, usize), FormatError> {
        let (s, i) = self
            .picks
            .get(index)
            .copied()
            .ok_or_else(|| FormatError::memory(format!("no tensor at index {index}")))?;
        let src = self
            .open
            .sources()
            .get(s)
            .copied()
            .ok_or_else(|| FormatError::memory(format!("no source {s}")))?;
        Ok((src, i))
    }
}

impl TensorSource for HfCheckpoint {
    fn format(&self) -> Format {
        self.open
            .sources()
            .first()
            .map(|s| s.format())
            .unwrap_or(Format::Memory)
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, index: usize) -> Result<Cow<'_, [u8]>, FormatError> {
        let (src, i) = self.locate(index)?;
        src.tensor_bytes(i)
    }
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        let (src, i) = self.locate(index)?;
        src.stream_tensor(i, sink)
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.values
    }
}

// ---------------------------------------------------------------------------------------------
// Through the weights root

/// What [`export_from_store`] exported.
#[derive(Debug, Clone)]
pub struct StoreExportReport {
    pub model: String,
    /// The version exported (the default version when none was asked for).
    pub version: String,
    /// The stored file the tensors were read from.
    pub from: PathBuf,
    pub export: ExportReport,
}

/// Exports `mamba:version` (the model's default version when `version` is `None`) from the
/// weights root to `dir`: the registered weights (safetensors preferred, size and sha256
/// checked) and the version's config from the ConfigManager.
///
/// # Errors
/// An unknown version, no config for it, a stored config that is not a Mamba config, or what
/// [`export_hf`] refuses.
pub fn export_from_store(
    wm: &WeightManager,
    version: Option<&str>,
    dir: &Path,
    options: &ExportOptions,
    progress: &dyn Progress,
) -> Result<StoreExportReport, HfError> {
    let model = Architecture::Mamba.name();
    let loaded = wm.load_model_weights(model, version, None)?;
    let cm = ConfigManager::new(wm.clone(), schemas());
    let name = cm.config_for_version(model, &loaded.version)?;
    let json = cm.show(model, &name)?;
    let config = MambaConfig::from_json(&json).map_err(|source| HfError::StoredConfig {
        model: model.to_string(),
        version: loaded.version.clone(),
        source,
    })?;
    let export = export_hf(&config, loaded.source.as_ref(), dir, options, progress)?;
    Ok(StoreExportReport {
        model: model.to_string(),
        version: loaded.version,
        from: loaded.path,
        export,
    })
}

/// How to import into the weights root.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Formats to store (safetensors when empty).
    pub formats: Vec<OutputFormat>,
    /// Replace a version or config that holds something else (backed up first).
    pub force: bool,
    /// Make the version the model's default.
    pub make_default: bool,
}

/// What [`import_into_store`] did.
#[derive(Debug)]
pub struct StoreImportReport {
    pub checkpoint_files: Vec<PathBuf>,
    pub renamed: Vec<(String, String)>,
    pub dropped_tied_head: bool,
    pub registered: RegisterReport,
}

/// Imports a Hugging Face Mamba directory ([`import_hf`]) as `mamba:version`: the config goes
/// to `configs/mamba/<version>.json` through the ConfigManager (transformers' extra fields
/// kept), the tensors are registered in the formats asked for, each file recorded as imported
/// from the directory ([`Source::Imported`] with its absolute path).
///
/// # Errors
/// What [`import_hf`] refuses; a version or config that exists with other content (without
/// `force`); a store write or validation failure.
pub fn import_into_store(
    wm: &WeightManager,
    dir: &Path,
    version: &str,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<StoreImportReport, HfError> {
    let model = Architecture::Mamba.name();
    let ck = import_hf(dir)?;
    tantra_store::validate_name("version", version)?;
    let json = serde_json::to_value(&ck.config).map_err(|source| HfError::Json {
        path: dir.join(CONFIG_FILE),
        source,
    })?;
    ConfigManager::new(wm.clone(), schemas()).import_if_changed(
        model,
        version,
        &json,
        options.force,
    )?;
    let opts = RegisterOptions {
        formats: options.formats.clone(),
        force: options.force,
        make_default: options.make_default,
        config: Some(version.to_string()),
        ..Default::default()
    };
    let source = Source::Imported {
        from: std::path::absolute(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display()
            .to_string(),
    };
    let registered = wm.register_source(&ck, model, version, source, &opts, progress)?;
    Ok(StoreImportReport {
        checkpoint_files: ck.files.clone(),
        renamed: ck.renamed.clone(),
        dropped_tied_head: ck.dropped_tied_head,
        registered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map() {
        let emb = "backbone.embeddings.weight";
        assert_eq!(map_name("backbone.embedding.weight", false), emb);
        assert_eq!(map_name("embedding.weight", true), emb);
        assert_eq!(
            map_name("layers.0.norm.weight", true),
            "backbone.layers.0.norm.weight"
        );
        assert_eq!(map_name("lm_head.weight", true), "lm_head.weight");
        assert_eq!(
            map_name("backbone.norm_f.weight", false),
            "backbone.norm_f.weight"
        );
    }

    #[test]
    fn shards_respect_the_limit() {
        let t = |n: &str, k: u64| TensorInfo::new(n, tantra_formats::DType::F32, vec![k]);
        let ts = [t("a", 10), t("b", 10), t("c", 100), t("d", 1)];
        // 40-byte limit: a+b (80 bytes) do not fit together.
        assert_eq!(
            shard_groups(&ts, 40),
            vec![vec![0], vec![1], vec![2], vec![3]]
        );
        assert_eq!(shard_groups(&ts, 80), vec![vec![0, 1], vec![2], vec![3]]);
        assert_eq!(shard_groups(&ts, 1000), vec![vec![0, 1, 2, 3]]);
        assert_eq!(shard_groups(&[], 10), vec![Vec::<usize>::new()]);
    }
}
