//! Creating preset weights in a weights root: the library side of `tantra create-sample-weights`
//! and `tantra create-model-weights`.
//!
//! For each model: the preset's config goes through the store's [`ConfigManager`] (as
//! `configs/<model>/<preset>.json`), the weights are generated lazily ([`crate::init`]) and
//! registered through [`WeightManager::register_source`] as version `<preset>` in every format
//! asked for, which writes each format from the generator (one tensor at a time, so memory
//! stays at one tensor however large the model) and re-reads every written file against the
//! generated digests. Afterwards every registered file of the version is read once more and
//! their tensor tables compared: all formats hold identical tensors, or the call fails.
//!
//! The same `(preset, seed)` gives byte-identical files on every machine: the values come from
//! [`crate::rng`], the bytes from the formats crate's deterministic writers.

use std::time::Instant;

use tantra_formats::{open, OutputFormat, Progress};
use tantra_store::{
    ConfigManager, RegisterOptions, RegisterReport, StoreError, TensorTable, WeightManager,
};

use crate::arch::{init_weights, Architecture, Preset};
use crate::error::ConfigError;
use crate::schema::schemas;

/// The seed used when none is given.
pub const DEFAULT_SEED: u64 = 0;

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Formats to write (all three when empty).
    pub formats: Vec<OutputFormat>,
    pub seed: u64,
    /// Replace a version or config that holds something else (the old files are backed up).
    pub force: bool,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            formats: OutputFormat::ALL.to_vec(),
            seed: DEFAULT_SEED,
            force: false,
        }
    }
}

/// What was created for one model.
#[derive(Debug, Clone)]
pub struct CreateReport {
    pub architecture: Architecture,
    pub preset: Preset,
    pub seed: u64,
    pub parameters: u64,
    pub tensors: usize,
    /// The store's account of the files (paths, sizes, sha256, added/unchanged).
    pub registered: RegisterReport,
    /// Wall time, including the final cross-check of the formats.
    pub seconds: f64,
}

impl CreateReport {
    /// Bytes of the file of `format`, if one was registered.
    pub fn bytes(&self, format: OutputFormat) -> Option<u64> {
        self.registered
            .files
            .iter()
            .find(|f| f.format == format.name())
            .map(|f| f.bytes)
    }
}

/// An error of [`create_weights`].
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{model}: {source}")]
    Config {
        model: &'static str,
        source: ConfigError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Two registered formats of the new version do not hold the same tensors.
    #[error("{model}:{version}: the {format} file differs from the {first} file: {detail}")]
    FormatsDiffer {
        model: String,
        version: String,
        format: String,
        first: String,
        detail: String,
    },
}

/// Creates `preset` weights of `arch` in the root of `wm` (see the module docs).
///
/// # Errors
/// A config or version that exists with other content (without `force`), a write or
/// validation failure of the store, or formats that disagree.
pub fn create_weights(
    wm: &WeightManager,
    arch: Architecture,
    preset: Preset,
    options: &CreateOptions,
    progress: &dyn Progress,
) -> Result<CreateReport, CreateError> {
    let start = Instant::now();
    let model = arch.name();
    let version = preset.name();
    let config = arch.preset(preset);
    let init = init_weights(&config, options.seed)
        .map_err(|source| CreateError::Config { model, source })?;

    let cm = ConfigManager::new(wm.clone(), schemas());
    let json = config.to_json();
    let same = matches!(cm.show(model, version), Ok(existing) if existing == json);
    if !same {
        cm.import(model, version, &json, options.force)?;
    }

    let mut formats = options.formats.clone();
    if formats.is_empty() {
        formats = OutputFormat::ALL.to_vec();
    }
    formats.sort();
    formats.dedup();
    let opts = RegisterOptions {
        formats,
        force: options.force,
        config: Some(version.to_string()),
        ..Default::default()
    };
    let by = format!(
        "tantra-models {} {model} {version} seed {}",
        env!("CARGO_PKG_VERSION"),
        options.seed
    );
    let registered = wm.register_source(&init, model, version, Some(by), &opts, progress)?;

    cross_check(wm, &registered, progress)?;
    Ok(CreateReport {
        architecture: arch,
        preset,
        seed: options.seed,
        parameters: config.parameter_count(),
        tensors: init.specs().len(),
        registered,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Reads every file of a registration and compares their tensor tables.
fn cross_check(
    wm: &WeightManager,
    report: &RegisterReport,
    progress: &dyn Progress,
) -> Result<(), CreateError> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut first: Option<(String, TensorTable)> = None;
    for f in &report.files {
        let path = wm.abs(&f.path);
        let src = open(&path).map_err(StoreError::from)?;
        let table = TensorTable::of(src.as_ref(), jobs, progress).map_err(StoreError::from)?;
        match &first {
            None => first = Some((f.format.clone(), table)),
            Some((name, t0)) => {
                if let Some(detail) = t0.difference(&table) {
                    return Err(CreateError::FormatsDiffer {
                        model: report.model.clone(),
                        version: report.version.clone(),
                        format: f.format.clone(),
                        first: name.clone(),
                        detail,
                    });
                }
            }
        }
    }
    Ok(())
}
