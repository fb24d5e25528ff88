//! The sample weights committed under `Model/` are what `tantra create-sample-weights` makes:
//! regenerated into a temporary root they are byte-identical (weights, configs, digests; not
//! the registry, which holds creation times), the three formats of each model hold identical
//! tensors, and their sizes match the README's table.
//!
//! If this fails after an intended change to initialization, the presets or a writer, run
//! `rm -rf Model && cargo run -p tantra-cli -- --root Model create-sample-weights` at the
//! repository root (then remove `Model/.lock` and `Model/generations`) and commit the result.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tantra_formats::{all_digests, open, NoProgress, OutputFormat};
use tantra_models::create::{create_weights, CreateOptions};
use tantra_models::{Architecture, Preset};
use tantra_store::{Registry, WeightManager};

fn committed_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Model")
}

const REGENERATE: &str =
    "run `rm -rf Model && cargo run -p tantra-cli -- --root Model create-sample-weights` at the repository root";

fn file_name(arch: Architecture, format: OutputFormat) -> String {
    format!(
        "{}_sample_small_{}.{}",
        arch.name(),
        format.name(),
        format.extension()
    )
}

#[test]
fn committed_sample_weights_are_reproducible() {
    let tmp = tempfile::tempdir().unwrap();
    let wm = WeightManager::open(tmp.path()).unwrap();
    for arch in Architecture::ALL {
        let r = create_weights(
            &wm,
            arch,
            Preset::SampleSmall,
            &CreateOptions::default(),
            &NoProgress,
        )
        .unwrap();
        assert_eq!(r.registered.files.len(), 3);
    }
    let committed = committed_root();
    let mut compared = 0;
    for sub in ["weights", "configs", "digests"] {
        for entry in walk(&tmp.path().join(sub)) {
            let rel = entry.strip_prefix(tmp.path()).unwrap();
            let ours = committed.join(rel);
            let want =
                fs::read(&ours).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", ours.display()));
            let got = fs::read(&entry).unwrap();
            assert!(
                want == got,
                "{} differs from a fresh generation; {REGENERATE}",
                ours.display()
            );
            compared += 1;
        }
    }
    // 9 weight files, 3 configs, 3 digest tables.
    assert_eq!(compared, 15);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn committed_formats_hold_identical_tensors() {
    let root = committed_root();
    for arch in Architecture::ALL {
        let mut tables: Vec<(OutputFormat, BTreeMap<String, String>)> = Vec::new();
        for format in OutputFormat::ALL {
            let path = root.join("weights").join(file_name(arch, format));
            let src = open(&path).unwrap_or_else(|e| panic!("{e}; {REGENERATE}"));
            let digests = all_digests(src.as_ref()).unwrap();
            let t: BTreeMap<String, String> = src
                .tensors()
                .iter()
                .zip(digests)
                .map(|(info, (_, digest))| {
                    (
                        info.name.clone(),
                        format!("{} {:?} {digest}", info.dtype, info.shape),
                    )
                })
                .collect();
            tables.push((format, t));
        }
        for (f, t) in &tables[1..] {
            assert!(
                t == &tables[0].1,
                "{arch}: the {f} file holds other tensors than the safetensors file"
            );
        }
        // Names and shapes are those the config implies.
        let config = arch.preset(Preset::SampleSmall);
        let src = open(
            &root
                .join("weights")
                .join(file_name(arch, OutputFormat::Safetensors)),
        )
        .unwrap();
        assert!(config
            .check_tensors(src.as_ref(), false)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn committed_registry_lists_the_nine_files_and_sizes_match_the_table() {
    let root = committed_root();
    let reg = Registry::load(&root.join("weight_config.json")).unwrap();
    // (model, parameters in the table, MiB per format in the table)
    let table = [
        (Architecture::Mamba, 690e3, 2.6),
        (Architecture::MambaMultimodal, 690e3, 2.6),
        (Architecture::OcrNative, 698e3, 2.7),
    ];
    for (arch, params, mib) in table {
        let v = reg
            .version(arch.name(), "sample_small")
            .unwrap_or_else(|| panic!("{arch}:sample_small is not registered; {REGENERATE}"));
        assert!((v.parameters as f64 - params).abs() <= 0.02 * params);
        assert_eq!(v.formats.len(), 3);
        for format in OutputFormat::ALL {
            let rec = &v.formats[format.name()];
            assert_eq!(rec.path, format!("weights/{}", file_name(arch, format)));
            let bytes = fs::metadata(root.join(&rec.path)).unwrap().len();
            assert_eq!(bytes, rec.bytes);
            let got = bytes as f64 / (1024.0 * 1024.0);
            assert!(
                (got - mib).abs() <= 0.02 * mib,
                "{arch} {format}: {got:.3} MiB, the table says {mib}"
            );
        }
    }
}
