//! Export to and import from the Hugging Face layout, on the transformers-written fixture
//! (`fixtures/hf_mamba_tiny`) and on our own weights.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use tantra_formats::fsutil::atomic_write;
use tantra_formats::{all_digests, write_to, MemorySource, NoProgress, OutputFormat, TensorSource};
use tantra_models::hf::{export_hf, import_hf, ExportOptions, HfError};
use tantra_models::{init_weights, Architecture, MambaConfig, ModelConfig, Preset};

fn fixture(form: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/hf_mamba_tiny")
        .join(form)
}

fn digests(src: &dyn TensorSource) -> BTreeMap<String, String> {
    all_digests(src).unwrap().into_iter().collect()
}

fn write_safetensors(path: &Path, src: &dyn TensorSource) {
    atomic_write(path, true, |w| {
        write_to(w, OutputFormat::Safetensors, src, "model", &NoProgress)
    })
    .unwrap();
}

fn write_config(dir: &Path, config: &MambaConfig) {
    fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
}

#[test]
fn fixture_safetensors_imports_with_tied_head() {
    let ck = import_hf(&fixture("safetensors")).unwrap();
    assert_eq!(ck.config.hidden_size, 32);
    assert_eq!(ck.config.dt_rank(), 2);
    assert!(ck.config.tie_word_embeddings);
    assert!(ck.tensors().iter().all(|t| t.name != "lm_head.weight"));
    assert_eq!(ck.tensors().len(), 22);
}

#[test]
fn fixture_safetensors_and_pytorch_import_to_the_same_tensors() {
    let st = import_hf(&fixture("safetensors")).unwrap();
    let pt = import_hf(&fixture("pytorch")).unwrap();
    // torch.save keeps the tied head under its own name; it is checked and dropped.
    assert!(pt.dropped_tied_head);
    assert_eq!(digests(&st), digests(&pt));
    assert_eq!(st.config, pt.config);
}

#[test]
fn export_then_import_round_trips_single_and_sharded() {
    let config = MambaConfig::sample_small();
    let w = init_weights(&ModelConfig::Mamba(config.clone()), 3).unwrap();
    let want = digests(&w);

    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("single");
    let r = export_hf(&config, &w, &single, &ExportOptions::default(), &NoProgress).unwrap();
    assert_eq!(r.parameters, config.parameter_count());
    assert!(single.join("model.safetensors").is_file());
    let back = import_hf(&single).unwrap();
    assert_eq!(digests(&back), want);
    assert_eq!(back.config.hidden_size, config.hidden_size);
    assert_eq!(back.config.vocab_size, config.vocab_size);

    // Again without --force: refused, nothing changed.
    let again = export_hf(&config, &w, &single, &ExportOptions::default(), &NoProgress);
    assert!(matches!(again, Err(HfError::Exists { .. })));

    let sharded = dir.path().join("sharded");
    let opts = ExportOptions {
        shard_size: Some(600_000),
        force: false,
    };
    let r = export_hf(&config, &w, &sharded, &opts, &NoProgress).unwrap();
    let shards: Vec<_> = r
        .files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    assert!(shards.len() >= 4, "{shards:?}");
    let index: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(sharded.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        index["metadata"]["total_size"].as_u64().unwrap(),
        config.parameter_count() * 4
    );
    assert_eq!(index["weight_map"].as_object().unwrap().len(), want.len());
    let back = import_hf(&sharded).unwrap();
    assert_eq!(digests(&back), want);
}

#[test]
fn export_refuses_weights_of_another_config() {
    let config = MambaConfig::sample_small();
    let other = init_weights(&Architecture::Mamba.preset(Preset::SampleSmall), 0).unwrap();
    let mut small = config.clone();
    small.num_hidden_layers = 2;
    let dir = tempfile::tempdir().unwrap();
    let e = export_hf(
        &small,
        &other,
        dir.path(),
        &ExportOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    assert!(matches!(e, HfError::Tensors { .. }), "{e}");
    assert!(!dir.path().join("config.json").exists());
}

/// A tiny Mamba as a MemorySource, plus its config.
fn tiny(tie: bool) -> (MambaConfig, MemorySource) {
    let mut config = MambaConfig::new(16, 8, 1);
    config.state_size = 4;
    config.tie_word_embeddings = tie;
    let w = init_weights(&ModelConfig::Mamba(config.clone()), 1).unwrap();
    (config, w.materialize().unwrap())
}

fn renamed(src: &MemorySource, f: impl Fn(&str) -> Option<String>) -> MemorySource {
    let mut out = MemorySource::new();
    for (i, t) in src.tensors().iter().enumerate() {
        if let Some(name) = f(&t.name) {
            let mut info = t.clone();
            info.name = name;
            out.push(info, src.tensor_bytes(i).unwrap().into_owned())
                .unwrap();
        }
    }
    out
}

#[test]
fn mamba_ssm_names_and_bare_models_are_mapped() {
    let (config, w) = tiny(true);
    let want = digests(&w);
    for (label, map) in [
        (
            "mamba_ssm",
            Box::new(|n: &str| Some(n.replace("backbone.embeddings.", "backbone.embedding.")))
                as Box<dyn Fn(&str) -> Option<String>>,
        ),
        (
            "bare",
            Box::new(|n: &str| Some(n.trim_start_matches("backbone.").to_string())),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), &config);
        write_safetensors(&dir.path().join("model.safetensors"), &renamed(&w, map));
        let ck = import_hf(dir.path()).unwrap_or_else(|e| panic!("{label}: {e}"));
        assert_eq!(digests(&ck), want, "{label}");
        assert!(!ck.renamed.is_empty());
    }
}

#[test]
fn tied_head_must_equal_embeddings_and_untied_head_must_exist() {
    let (config, w) = tiny(true);
    // Tied, head present and equal: dropped.
    let dir = tempfile::tempdir().unwrap();
    let mut with_head = renamed(&w, |n| Some(n.to_string()));
    let emb = w.find("backbone.embeddings.weight").unwrap();
    let mut info = w.tensors()[emb].clone();
    info.name = "lm_head.weight".into();
    with_head
        .push(info.clone(), w.tensor_bytes(emb).unwrap().into_owned())
        .unwrap();
    write_config(dir.path(), &config);
    write_safetensors(&dir.path().join("model.safetensors"), &with_head);
    let ck = import_hf(dir.path()).unwrap();
    assert!(ck.dropped_tied_head);
    assert_eq!(digests(&ck), digests(&w));

    // Tied, head different: refused.
    let dir = tempfile::tempdir().unwrap();
    let mut bad = renamed(&w, |n| Some(n.to_string()));
    let zeros = vec![0u8; info.byte_len().unwrap() as usize];
    bad.push(info, zeros).unwrap();
    write_config(dir.path(), &config);
    write_safetensors(&dir.path().join("model.safetensors"), &bad);
    assert!(matches!(
        import_hf(dir.path()),
        Err(HfError::TiedHeadDiffers { .. })
    ));

    // Untied, head missing: refused.
    let (untied, w2) = tiny(false);
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &untied);
    write_safetensors(
        &dir.path().join("model.safetensors"),
        &renamed(&w2, |n| (n != "lm_head.weight").then(|| n.to_string())),
    );
    assert!(matches!(
        import_hf(dir.path()),
        Err(HfError::MissingHead { .. })
    ));
}

#[test]
fn index_shard_names_cannot_leave_the_directory() {
    let (config, w) = tiny(true);
    let outer = tempfile::tempdir().unwrap();
    let dir = outer.path().join("model");
    fs::create_dir(&dir).unwrap();
    write_config(&dir, &config);
    write_safetensors(&outer.path().join("evil.safetensors"), &w);
    let map: BTreeMap<String, String> = w
        .tensors()
        .iter()
        .map(|t| (t.name.clone(), "../evil.safetensors".to_string()))
        .collect();
    fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let e = import_hf(&dir).unwrap_err();
    assert!(matches!(e, HfError::Checkpoint(_)), "{e}");
    assert!(e.to_string().contains("evil"), "{e}");
}

#[test]
fn missing_or_bad_config_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(import_hf(dir.path()), Err(HfError::Io { .. })));
    fs::write(dir.path().join("config.json"), "{\"vocab_size\": 1").unwrap();
    assert!(matches!(import_hf(dir.path()), Err(HfError::Json { .. })));
    fs::write(
        dir.path().join("config.json"),
        r#"{"vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 1, "hidden_act": "relu"}"#,
    )
    .unwrap();
    let e = import_hf(dir.path()).unwrap_err();
    assert!(matches!(e, HfError::Config { .. }), "{e}");
    // The config rule is the cause, printed once after the file's own level.
    let path = dir.path().join("config.json");
    assert_eq!(
        e.to_string(),
        format!("{}: not a valid mamba config", path.display())
    );
    let full = tantra_formats::chain(&e).to_string();
    assert!(full.contains("hidden_act"), "{full}");
    assert_eq!(full.matches("hidden_act").count(), 1, "{full}");
}
