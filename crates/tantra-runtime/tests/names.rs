//! The names each runtime reads are exactly the names its family's parameter list creates,
//! so the two cannot drift apart: both are built from the tables in tantra-models
//! (`tantra_models::{mamba, mamba_multimodal, ocr_native}::names`), and these tests fail when
//! either side adds, drops or respells a tensor. Each config switch that adds or removes
//! tensors (`use_bias`, `use_conv_bias`, `tie_word_embeddings`) is covered. The aliases the
//! Mamba loader accepts (mamba_ssm's `embedding`, a `[E, K]` convolution, a tied head stored
//! beside the embeddings) load to the same logits, and a missing tensor is reported under its
//! full name, for every tensor.

#![allow(clippy::unwrap_used)] // tests may unwrap; helpers outside #[test] too

use std::collections::BTreeSet;

use tantra_formats::{MemorySource, TensorInfo, TensorSource};
use tantra_models::{
    init_weights, MambaBlockConfig, MambaConfig, MambaMultimodalConfig, ModelConfig,
    OcrNativeConfig, ParamSpec,
};
use tantra_runtime::{Logits, MambaModel, MultimodalModel, OcrModel, RuntimeError, Weights};

fn materialize(config: &ModelConfig) -> MemorySource {
    init_weights(config, 11).unwrap().materialize().unwrap()
}

fn spec_names(params: &[ParamSpec]) -> BTreeSet<String> {
    params.iter().map(|p| p.name.clone()).collect()
}

/// `src` with tensor `name` renamed to `to` (and reshaped to `shape` when given), or dropped
/// when `to` is `None`.
fn edited(
    src: &MemorySource,
    name: &str,
    to: Option<&str>,
    shape: Option<Vec<u64>>,
) -> MemorySource {
    let mut out = MemorySource::new();
    for (i, t) in src.tensors().iter().enumerate() {
        let bytes = src.tensor_bytes(i).unwrap().into_owned();
        if t.name != name {
            out.push(t.clone(), bytes).unwrap();
        } else if let Some(to) = to {
            let shape = shape.clone().unwrap_or_else(|| t.shape.clone());
            out.push(TensorInfo::new(to, t.dtype, shape), bytes)
                .unwrap();
        }
    }
    out
}

/// Tiny Mamba configs, one per combination of the switches that add or drop tensors.
fn mamba_variants() -> Vec<MambaConfig> {
    let mut out = Vec::new();
    for tie in [true, false] {
        for bias in [false, true] {
            for conv_bias in [true, false] {
                let mut c = MambaConfig::new(300, 16, 2);
                c.tie_word_embeddings = tie;
                c.use_bias = bias;
                c.use_conv_bias = conv_bias;
                out.push(c);
            }
        }
    }
    out
}

/// Every tensor of `mem` dropped in turn: `load` fails naming exactly that tensor.
fn each_missing_tensor_is_named(
    mem: &MemorySource,
    load: &dyn Fn(&Weights<'_>) -> Result<(), RuntimeError>,
) {
    for t in mem.tensors() {
        let less = edited(mem, &t.name, None, None);
        let w = Weights::new(&less).unwrap();
        match load(&w) {
            Err(RuntimeError::MissingTensor { name }) => assert_eq!(name, t.name),
            Err(other) => panic!("without {}: {other}", t.name),
            Ok(()) => panic!("loaded without {}", t.name),
        }
    }
}

#[test]
fn mamba_reads_exactly_its_parameter_list() {
    // Per layer: norm, in_proj (+bias), conv1d (+bias), x_proj, dt_proj weight and bias,
    // A_log, D, out_proj (+bias).
    let mut counts = Vec::new();
    for c in mamba_variants() {
        let mem = materialize(&ModelConfig::Mamba(c.clone()));
        let w = Weights::new(&mem).unwrap();
        MambaModel::load(&w, &c).unwrap();
        let spec = spec_names(&c.parameters());
        assert_eq!(w.used_names(), spec, "{c:?}");
        counts.push(spec.len());
    }
    // tie x bias x conv_bias, in the order of mamba_variants.
    assert_eq!(counts, vec![22, 20, 26, 24, 23, 21, 27, 25]);
}

#[test]
fn multimodal_reads_exactly_its_parameter_list() {
    for tie in [true, false] {
        let mut c = MambaMultimodalConfig::sample_small();
        c.text_config.tie_word_embeddings = tie;
        let mem = materialize(&ModelConfig::MambaMultimodal(c.clone()));
        let w = Weights::new(&mem).unwrap();
        MultimodalModel::load(&w, &c).unwrap();
        let spec = spec_names(&c.parameters());
        assert_eq!(w.used_names(), spec);
        // 5 layers of 10, embeddings, norm_f, 7 of the vision path, the head when untied.
        assert_eq!(spec.len(), 59 + usize::from(!tie));
        assert!(spec.contains("vision.position_embedding.weight"));
        assert!(spec.contains("projector.linear_2.bias"));
    }
}

#[test]
fn ocr_reads_exactly_its_parameter_list() {
    for (bias, conv_bias) in [(false, true), (true, false)] {
        let mut c = OcrNativeConfig::sample_small();
        c.mamba.use_bias = bias;
        c.mamba.use_conv_bias = conv_bias;
        let mem = materialize(&ModelConfig::OcrNative(c.clone()));
        let w = Weights::new(&mem).unwrap();
        OcrModel::load(&w, &c).unwrap();
        let spec = spec_names(&c.parameters());
        assert_eq!(w.used_names(), spec);
        let per_layer = if bias { 12 } else { 10 } - usize::from(!conv_bias);
        assert_eq!(spec.len(), 5 + c.mamba.num_hidden_layers * per_layer);
        assert!(spec.contains("ctc_head.bias"));
        assert!(!spec
            .iter()
            .any(|n| n.contains("embeddings") || n == "lm_head.weight"));
    }
}

#[test]
fn missing_tensors_are_named_in_full() {
    for c in [&mamba_variants()[0], &mamba_variants()[7]] {
        let mem = materialize(&ModelConfig::Mamba(c.clone()));
        each_missing_tensor_is_named(&mem, &|w| MambaModel::load(w, c).map(drop));
    }
    let mut o = OcrNativeConfig::sample_small();
    o.mamba = MambaBlockConfig {
        use_bias: true,
        ..MambaBlockConfig::new(16, 2)
    };
    let mem = materialize(&ModelConfig::OcrNative(o.clone()));
    each_missing_tensor_is_named(&mem, &|w| OcrModel::load(w, &o).map(drop));
    let m = MambaMultimodalConfig::sample_small();
    let mem = materialize(&ModelConfig::MambaMultimodal(m.clone()));
    each_missing_tensor_is_named(&mem, &|w| MultimodalModel::load(w, &m).map(drop));
}

fn logits(mem: &MemorySource, c: &MambaConfig) -> Vec<f32> {
    let model = MambaModel::load(&Weights::new(mem).unwrap(), c).unwrap();
    let mut state = model.new_state();
    model
        .forward(&[1, 7, 42, 299], &mut state, Logits::All)
        .unwrap()
}

#[test]
fn aliases_load_to_the_same_model() {
    let c = &mamba_variants()[0];
    let mem = materialize(&ModelConfig::Mamba(c.clone()));
    let want = logits(&mem, c);
    assert_eq!(want.len(), 4 * 300);

    // mamba_ssm's name for the embeddings.
    let ssm = edited(
        &mem,
        "backbone.embeddings.weight",
        Some("backbone.embedding.weight"),
        None,
    );
    assert_eq!(logits(&ssm, c), want);

    // A depthwise convolution stored [E, K] instead of [E, 1, K].
    let e = c.intermediate() as u64;
    let k = c.conv_kernel as u64;
    let name = "backbone.layers.1.mixer.conv1d.weight";
    let squeezed = edited(&mem, name, Some(name), Some(vec![e, k]));
    assert_eq!(logits(&squeezed, c), want);

    // A tied head stored beside the embeddings (as a .bin does) is accounted for, not read.
    let mut with_head = MemorySource::copy_from(&mem).unwrap();
    let emb = mem
        .tensors()
        .iter()
        .position(|t| t.name == "backbone.embeddings.weight");
    let emb = emb.unwrap();
    let bytes = mem.tensor_bytes(emb).unwrap().into_owned();
    let mut head = mem.tensors()[emb].clone();
    head.name = "lm_head.weight".into();
    with_head.push(head, bytes).unwrap();
    let w = Weights::new(&with_head).unwrap();
    MambaModel::load(&w, c).unwrap();
    assert!(w.used_names().contains("lm_head.weight"));
    assert_eq!(logits(&with_head, c), want);

    // Any other shape of the convolution is refused under its full name.
    let bad = edited(&mem, name, Some(name), Some(vec![e, k, 1]));
    match MambaModel::load(&Weights::new(&bad).unwrap(), c) {
        Err(RuntimeError::Shape {
            name: n,
            expected,
            found,
        }) => {
            assert_eq!(n, name);
            assert_eq!(expected, vec![e as usize, 1, k as usize]);
            assert_eq!(found, vec![e, k, 1]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_language_model_below_a_prefix_loads_from_its_scope() {
    let c = &mamba_variants()[4];
    let mem = materialize(&ModelConfig::Mamba(c.clone()));
    let mut nested = MemorySource::new();
    for (i, t) in mem.tensors().iter().enumerate() {
        let mut t = t.clone();
        t.name = format!("language_model.{}", t.name);
        nested
            .push(t, mem.tensor_bytes(i).unwrap().into_owned())
            .unwrap();
    }
    let w = Weights::new(&nested).unwrap();
    let model = MambaModel::load_prefixed(&w, c, "language_model.").unwrap();
    w.check_all_used().unwrap();
    let want: BTreeSet<String> = spec_names(&c.parameters())
        .into_iter()
        .map(|n| format!("language_model.{n}"))
        .collect();
    assert_eq!(w.used_names(), want);
    let mut state = model.new_state();
    let got = model
        .forward(&[1, 7, 42, 299], &mut state, Logits::All)
        .unwrap();
    assert_eq!(got, logits(&mem, c));
    // The root is not the scope: the names are reported with the prefix.
    let less = edited(&nested, "language_model.backbone.norm_f.weight", None, None);
    match MambaModel::load_prefixed(&Weights::new(&less).unwrap(), c, "language_model") {
        Err(RuntimeError::MissingTensor { name }) => {
            assert_eq!(name, "language_model.backbone.norm_f.weight")
        }
        other => panic!("{other:?}"),
    }
}
