//! The Mamba runtime against transformers: the fixture `hf_mamba_tiny` was written by
//! transformers 5.24 (MambaForCausalLM, f32), with its logits and greedy continuation in
//! `reference.json`. Both the safetensors and the pytorch_model.bin form must reproduce them.

#![allow(clippy::unwrap_used)] // tests may unwrap; helpers outside #[test] too

use std::path::{Path, PathBuf};

use tantra_formats::{MemorySource, TensorSource};
use tantra_models::MambaConfig;
use tantra_runtime::{
    GenerateOptions, Logits, MambaModel, MambaRuntime, RuntimeError, SamplingConfig, Weights,
};

fn fixture(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/hf_mamba_tiny")
        .join(sub)
}

struct Reference {
    input_ids: Vec<u32>,
    logits_first: Vec<f32>,
    logits_last: Vec<f32>,
    greedy_ids: Vec<u32>,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(fixture("reference.json")).unwrap();
    let j: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ints = |k: &str| -> Vec<u32> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect()
    };
    let floats = |k: &str| -> Vec<f32> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect()
    };
    Reference {
        input_ids: ints("input_ids"),
        logits_first: floats("logits_first"),
        logits_last: floats("logits_last"),
        greedy_ids: ints("greedy_ids"),
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits at the first and last prompt position within 1e-4 of transformers', and the greedy
/// continuation equal to transformers' `generate`.
fn check_against_reference(dir: &Path) {
    let r = reference();
    let rt = MambaRuntime::from_path(dir).unwrap();
    let model = rt.model();
    let v = model.vocab_size();
    let mut state = model.new_state();
    let logits = model
        .forward(&r.input_ids, &mut state, Logits::All)
        .unwrap();
    assert_eq!(logits.len(), r.input_ids.len() * v);
    let first = max_abs_diff(&logits[..v], &r.logits_first);
    let last = max_abs_diff(&logits[logits.len() - v..], &r.logits_last);
    eprintln!(
        "{}: max |logit - transformers| first {first:e}, last {last:e}",
        dir.display()
    );
    assert!(first <= 1e-4, "first position: {first}");
    assert!(last <= 1e-4, "last position: {last}");

    let options = GenerateOptions {
        max_new_tokens: r.greedy_ids.len() - r.input_ids.len(),
        sampling: SamplingConfig::greedy(),
        eos_token_id: rt.config().eos_token_id,
        prompt_logits: true,
    };
    let mut streamed = Vec::new();
    let g = rt
        .generate(&r.input_ids, &options, &mut |t| streamed.push(t))
        .unwrap();
    assert_eq!(g.output_ids(), r.greedy_ids);
    assert_eq!(streamed, g.generated);
    let rows = g.prompt_logits.unwrap();
    assert_eq!(rows.len(), r.input_ids.len());
    assert!(max_abs_diff(&rows[0], &r.logits_first) <= 1e-4);
}

#[test]
fn safetensors_matches_transformers() {
    check_against_reference(&fixture("safetensors"));
}

#[test]
fn pytorch_bin_matches_transformers() {
    check_against_reference(&fixture("pytorch"));
}

#[test]
fn single_file_with_inferred_config_matches() {
    // The weight file alone, copied away from its config.json: the config is read off the shapes.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weights.safetensors");
    std::fs::copy(fixture("safetensors/model.safetensors"), &file).unwrap();
    let rt = MambaRuntime::from_path(&file).unwrap();
    let r = reference();
    let mut state = rt.model().new_state();
    let last = rt
        .model()
        .forward(&r.input_ids, &mut state, Logits::Last)
        .unwrap();
    assert!(max_abs_diff(&last, &r.logits_last) <= 1e-4);
}

fn fixture_model() -> (MambaModel, MemorySource) {
    let src = tantra_formats::open(&fixture("safetensors/model.safetensors")).unwrap();
    let mem = MemorySource::copy_from(src.as_ref()).unwrap();
    let text = std::fs::read_to_string(fixture("safetensors/config.json")).unwrap();
    let config: MambaConfig = serde_json::from_str(&text).unwrap();
    let w = Weights::new(&mem).unwrap();
    (MambaModel::load(&w, &config).unwrap(), mem)
}

#[test]
fn prefill_leaves_exactly_the_states_of_token_by_token_feeding() {
    let (model, _) = fixture_model();
    let ids = [1u32, 5, 9, 12, 3, 44, 7, 7, 0, 63];
    let mut prefilled = model.new_state();
    let logits_prefill = model.forward(&ids, &mut prefilled, Logits::All).unwrap();
    let mut stepped = model.new_state();
    let mut logits_steps = Vec::new();
    for &id in &ids {
        logits_steps.extend(model.step(id, &mut stepped).unwrap());
    }
    assert_eq!(prefilled, stepped, "states differ");
    assert_eq!(logits_prefill, logits_steps, "logits differ");
    assert_eq!(prefilled.position(), ids.len());

    // A prompt longer than the prefill chunk (256) too.
    let long: Vec<u32> = (0..600u32).map(|i| (i * 13 + 5) % 64).collect();
    let mut a = model.new_state();
    let la = model.forward(&long, &mut a, Logits::Last).unwrap();
    let mut b = model.new_state();
    let mut lb = Vec::new();
    for &id in &long {
        lb = model.step(id, &mut b).unwrap();
    }
    assert_eq!(a, b);
    assert_eq!(la, lb);

    // Split prefills carry the states across the boundary.
    let mut split = model.new_state();
    model.forward(&ids[..4], &mut split, Logits::None).unwrap();
    model.forward(&ids[4..], &mut split, Logits::None).unwrap();
    assert_eq!(split, stepped);
}

#[test]
fn sampling_is_seeded_and_stops_on_eos() {
    let rt = MambaRuntime::from_path(&fixture("safetensors")).unwrap();
    let sampled = |seed| {
        let o = GenerateOptions {
            max_new_tokens: 12,
            sampling: SamplingConfig {
                temperature: 1.5,
                top_k: Some(20),
                top_p: 0.95,
                seed,
            },
            eos_token_id: None,
            prompt_logits: false,
        };
        rt.generate(&[1, 2, 3], &o, &mut |_| {}).unwrap().generated
    };
    assert_eq!(sampled(11), sampled(11));
    assert_ne!(sampled(11), sampled(12));

    // Greedy continuation of the reference prompt is 44, 44, ...: make 44 the end token.
    let o = GenerateOptions {
        max_new_tokens: 10,
        eos_token_id: Some(44),
        ..GenerateOptions::default()
    };
    let g = rt.generate(&[1, 5, 9, 12, 3, 44], &o, &mut |_| {}).unwrap();
    assert_eq!(g.generated, vec![44]);
    assert_eq!(g.stop, tantra_runtime::StopReason::Eos);
    assert_eq!(g.decode_steps, 0);

    let o = GenerateOptions {
        max_new_tokens: 0,
        ..GenerateOptions::default()
    };
    assert!(rt
        .generate(&[1], &o, &mut |_| {})
        .unwrap()
        .generated
        .is_empty());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let (model, mem) = fixture_model();
    let mut s = model.new_state();
    assert!(matches!(
        model.forward(&[64], &mut s, Logits::Last),
        Err(RuntimeError::TokenOutOfRange {
            id: 64,
            vocab_size: 64
        })
    ));
    assert!(matches!(
        model.forward_embeddings(vec![0.0; 33], &mut s, Logits::Last),
        Err(RuntimeError::InputShape { .. })
    ));
    let rt = MambaRuntime::from_path(&fixture("safetensors")).unwrap();
    assert!(matches!(
        rt.generate(&[], &GenerateOptions::default(), &mut |_| {}),
        Err(RuntimeError::EmptyPrompt)
    ));

    // A config that disagrees with the weights names the tensor.
    let text = std::fs::read_to_string(fixture("safetensors/config.json")).unwrap();
    let mut config: MambaConfig = serde_json::from_str(&text).unwrap();
    config.state_size = 4;
    let w = Weights::new(&mem).unwrap();
    match MambaModel::load(&w, &config) {
        Err(RuntimeError::Shape { name, .. }) => assert!(name.ends_with("mixer.A_log"), "{name}"),
        other => panic!("{other:?}"),
    }
    // A config with fewer layers leaves tensors over.
    config.state_size = 8;
    config.num_hidden_layers = 1;
    let w = Weights::new(&mem).unwrap();
    match MambaModel::load(&w, &config) {
        Err(RuntimeError::UnexpectedTensors { examples, .. }) => {
            assert!(
                examples[0].starts_with("backbone.layers.1."),
                "{examples:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A missing tensor is named.
    let mut partial = MemorySource::new();
    for (i, info) in mem.tensors().iter().enumerate() {
        if info.name != "backbone.norm_f.weight" {
            partial
                .push(info.clone(), mem.tensor_bytes(i).unwrap().into_owned())
                .unwrap();
        }
    }
    config.num_hidden_layers = 2;
    let w = Weights::new(&partial).unwrap();
    match MambaModel::load(&w, &config) {
        Err(RuntimeError::MissingTensor { name }) => assert_eq!(name, "backbone.norm_f.weight"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn half_precision_weights_are_widened_on_load() {
    let (model32, mem) = fixture_model();
    let mut bf = MemorySource::new();
    for (i, info) in mem.tensors().iter().enumerate() {
        let bytes = mem.tensor_bytes(i).unwrap();
        let halves: Vec<u8> = bytes
            .chunks_exact(4)
            .flat_map(|c| {
                half::bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
            })
            .collect();
        let mut info = info.clone();
        info.dtype = tantra_formats::DType::BF16;
        bf.push(info, halves).unwrap();
    }
    let w = Weights::new(&bf).unwrap();
    let model16 = MambaModel::load(&w, model32.config()).unwrap();
    let ids = [1u32, 5, 9];
    let a = model32
        .forward(&ids, &mut model32.new_state(), Logits::Last)
        .unwrap();
    let b = model16
        .forward(&ids, &mut model16.new_state(), Logits::Last)
        .unwrap();
    let d = max_abs_diff(&a, &b);
    assert!(d > 0.0 && d < 0.05, "{d}");
}

/// Writes the fixture's tensors as two shards plus an index, in `format`.
fn write_sharded(dir: &Path, format: tantra_formats::OutputFormat, stem: &str, index_name: &str) {
    let src = tantra_formats::open(&fixture("safetensors/model.safetensors")).unwrap();
    let ext = format.extension();
    let mut shards = [MemorySource::new(), MemorySource::new()];
    let mut map = serde_json::Map::new();
    for (i, info) in src.tensors().iter().enumerate() {
        let s = i % 2;
        shards[s]
            .push(info.clone(), src.tensor_bytes(i).unwrap().into_owned())
            .unwrap();
        map.insert(
            info.name.clone(),
            format!("{stem}-0000{}-of-00002.{ext}", s + 1).into(),
        );
    }
    for (s, shard) in shards.iter().enumerate() {
        let mut f = std::fs::File::create(dir.join(format!("{stem}-0000{}-of-00002.{ext}", s + 1)))
            .unwrap();
        tantra_formats::write_to(
            &mut f,
            format,
            shard,
            "archive",
            &tantra_formats::NoProgress,
        )
        .unwrap();
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(dir.join(index_name), index.to_string()).unwrap();
    std::fs::copy(fixture("safetensors/config.json"), dir.join("config.json")).unwrap();
}

#[test]
fn sharded_directories_match_transformers() {
    for (format, stem, index) in [
        (
            tantra_formats::OutputFormat::Safetensors,
            "model",
            "model.safetensors.index.json",
        ),
        (
            tantra_formats::OutputFormat::Bin,
            "pytorch_model",
            "pytorch_model.bin.index.json",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_sharded(dir.path(), format, stem, index);
        check_against_reference(dir.path());
    }
}

#[test]
fn shard_indexes_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let index = "model.safetensors.index.json";
    write_sharded(
        dir.path(),
        tantra_formats::OutputFormat::Safetensors,
        "model",
        index,
    );
    let path = dir.path().join(index);
    let good = std::fs::read_to_string(&path).unwrap();

    // A shard name that leaves the directory.
    let bad = good.replacen(
        "model-00001-of-00002.safetensors",
        "../model-00001-of-00002.safetensors",
        1,
    );
    std::fs::write(&path, bad).unwrap();
    assert!(matches!(
        MambaRuntime::from_path(dir.path()),
        Err(RuntimeError::Open(
            tantra_models::OpenError::BadShardName { .. }
        ))
    ));

    // A tensor the index places in a shard that does not hold it.
    let mut j: serde_json::Value = serde_json::from_str(&good).unwrap();
    let map = j["weight_map"].as_object_mut().unwrap();
    let (name, shard) = map
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let other = if shard == "model-00001-of-00002.safetensors" {
        "model-00002-of-00002.safetensors"
    } else {
        "model-00001-of-00002.safetensors"
    };
    map.insert(name.clone(), other.into());
    std::fs::write(&path, j.to_string()).unwrap();
    match MambaRuntime::from_path(dir.path()) {
        Err(RuntimeError::MissingTensor { name: n }) => assert!(n.starts_with(&name), "{n}"),
        other => panic!("{other:?}"),
    }

    // Not JSON.
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(
        MambaRuntime::from_path(dir.path()),
        Err(RuntimeError::Json { .. })
    ));

    // No config.
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    assert!(matches!(
        MambaRuntime::from_path(dir.path()),
        Err(RuntimeError::NoConfig { .. })
    ));
}

#[test]
fn runtimes_come_from_the_weights_root() {
    use tantra_formats::{NoProgress, OutputFormat};
    use tantra_runtime::LoadedModel;
    use tantra_store::{RegisterOptions, WeightManager};

    let root = tempfile::tempdir().unwrap();
    let wm = WeightManager::open(root.path()).unwrap();
    let opts = RegisterOptions {
        formats: vec![OutputFormat::Pt],
        ..RegisterOptions::default()
    };
    let file = fixture("safetensors/model.safetensors");
    wm.register(&file, "mamba", "tiny", &opts, &NoProgress)
        .unwrap();

    // No config registered and no preset of that name: the config is read off the shapes.
    let r = reference();
    let last = |rt: &MambaRuntime| {
        let mut s = rt.model().new_state();
        rt.model()
            .forward(&r.input_ids, &mut s, Logits::Last)
            .unwrap()
    };
    let by_default = MambaRuntime::new(root.path(), "mamba").unwrap();
    assert!(max_abs_diff(&last(&by_default), &r.logits_last) <= 1e-4);
    assert!(
        by_default.origin().contains("tiny"),
        "{}",
        by_default.origin()
    );
    let pt = MambaRuntime::with_format(root.path(), "mamba", Some("tiny"), Some(OutputFormat::Pt))
        .unwrap();
    assert!(pt.origin().contains("pt"), "{}", pt.origin());
    assert_eq!(last(&pt), last(&by_default));
    assert!(MambaRuntime::with_version(root.path(), "mamba", "tiny").is_ok());

    assert!(matches!(
        MambaRuntime::with_version(root.path(), "mamba", "nope"),
        Err(RuntimeError::Store(_))
    ));
    assert!(matches!(
        MambaRuntime::with_format(root.path(), "mamba", None, Some(OutputFormat::Bin)),
        Err(RuntimeError::Store(_))
    ));

    // The same tensors registered as an OCR model have no OCR config to run with.
    wm.register(
        &file,
        "ocr_native",
        "tiny",
        &RegisterOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(matches!(
        LoadedModel::from_store(root.path(), "ocr_native", None, None),
        Err(RuntimeError::NoConfigFor { .. })
    ));
}

/// A model wide enough for the multi-threaded decoding step (d 192, 2 layers, random weights).
fn wide_model() -> MambaModel {
    use tantra_models::{init_weights, MambaBlockConfig, ModelConfig};
    let config = MambaConfig::byte_level(&MambaBlockConfig::new(192, 2));
    let src = init_weights(&ModelConfig::Mamba(config.clone()), 1).unwrap();
    let mem = src.materialize().unwrap();
    MambaModel::load(&Weights::new(&mem).unwrap(), &config).unwrap()
}

#[test]
fn threaded_decoding_is_bitwise_the_prefill_whatever_the_thread_count() {
    let model = wide_model();
    let ids: Vec<u32> = (0..20u32).map(|i| (i * 37 + 11) % 264).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut prefilled = model.new_state();
            let all = model.forward(&ids, &mut prefilled, Logits::All).unwrap();
            let mut stepped = model.new_state();
            let mut steps = Vec::new();
            for &id in &ids {
                steps.extend(model.step(id, &mut stepped).unwrap());
            }
            assert_eq!(prefilled, stepped, "{threads} threads: states differ");
            assert_eq!(all, steps, "{threads} threads: logits differ");
            (stepped, steps)
        })
    };
    let one = run(1);
    assert_eq!(run(2), one);
    assert_eq!(run(3), one);
}

/// The same weights converted by llama.cpp's `convert_hf_to_gguf.py` (llama.cpp names, squeezed
/// conv1d, `A = -exp(A_log)` stored) run like the original.
#[test]
fn llama_cpp_gguf_matches_transformers() {
    check_against_reference(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/mamba_tiny_f32.gguf"),
    );
}

/// llama-quantize's `--pure` Q8_0 of that conversion runs too (dequantized to f32): logits
/// within 2e-2 of transformers', the same greedy ids.
#[test]
fn llama_cpp_q8_0_gguf_runs_close_to_transformers() {
    let r = reference();
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/mamba_tiny_q8_0.gguf");
    let rt = MambaRuntime::from_path(&path).unwrap();
    let mut state = rt.model().new_state();
    let last = rt
        .model()
        .forward(&r.input_ids, &mut state, Logits::Last)
        .unwrap();
    let d = max_abs_diff(&last, &r.logits_last);
    eprintln!("q8_0: max |logit - transformers| {d:e}");
    assert!(d <= 2e-2, "{d}");
    let options = GenerateOptions {
        max_new_tokens: r.greedy_ids.len() - r.input_ids.len(),
        sampling: SamplingConfig::greedy(),
        eos_token_id: None,
        prompt_logits: false,
    };
    let g = rt.generate(&r.input_ids, &options, &mut |_| {}).unwrap();
    assert_eq!(g.output_ids(), r.greedy_ids);
}
