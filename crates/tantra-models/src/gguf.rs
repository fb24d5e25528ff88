//! Mamba to llama.cpp's GGUF: the names, metadata and tokenizer llama.cpp's `mamba`
//! architecture loads (`tantra export-gguf`).
//!
//! # Why it is written this way
//! llama.cpp reads a Mamba only under its own names and keys (what `convert_hf_to_gguf.py`
//! writes, see `docs/gguf.md`): `blk.N.ssm_*` tensors, `A = -exp(A_log)` stored instead of
//! `A_log`, `conv1d.weight` squeezed to `[d_inner, d_conv]`, the head omitted when tied, and the
//! `mamba.*` hyperparameters. The tokenizer section describes tantra's byte-level vocabulary in
//! the one shape llama.cpp's BPE understands without merges: model `gpt2`, token `i < 256` the
//! byte `i` in GPT-2's byte-to-unicode spelling (so every byte of a prompt becomes its own
//! token, exactly as [`crate::tokenizer::ByteTokenizer`] encodes), the specials as control
//! tokens, and an empty merge list. The writing itself is `tantra_formats::gguf`'s, verified.
//!
//! # Reading back
//! [`crate::gguf_source::MambaGgufSource`] is the inverse, so that a llama.cpp Mamba GGUF runs
//! as tantra's Mamba: the names map back ([`tantra_name`]) and `A_log = ln(-A)`. That inverse is
//! not bit-exact (`-exp(ln(-A))` may differ from `A` in the last bit), the one way a GGUF run can
//! differ from a run of the original weights. An unknown name is kept as it is, so the runtime's
//! "unused tensor" check names it.

use std::path::Path;

use tantra_formats::gguf::write::{write_gguf_file, Written};
use tantra_formats::gguf::{GgufFile, GgufOptions, KeepF32, MetaArray, MetaValue};
use tantra_formats::{DType, FormatError, MemorySource, Progress, TensorInfo, TensorSource};

use tantra_store::{ConfigManager, WeightManager};

use crate::arch::Architecture;
use crate::hf::HfError;
use crate::mamba::{names, MambaConfig};
use crate::names::Scope;
use crate::schema::schemas;
use crate::tokenizer::ByteTokenizer;

/// The names of the whole model: (tantra's name, llama.cpp's name), one row each. Both
/// directions of the map read this table, and tantra's side is built from
/// [`crate::mamba::names`].
fn model_names() -> [(String, &'static str); 3] {
    let root = Scope::root();
    let [embeddings, _] = names::embeddings(&root);
    [
        (embeddings.weight(), "token_embd.weight"),
        (names::norm_f(&root).weight(), "output_norm.weight"),
        (names::lm_head(&root).weight(), "output.weight"),
    ]
}

/// The names inside one block: (tantra's name below `backbone.layers.{i}`, llama.cpp's below
/// `blk.{i}`), one row each, as [`model_names`].
fn block_names() -> [(String, &'static str); 12] {
    let layer = Scope::root();
    let m = names::mixer(&layer);
    let (in_proj, conv1d) = (m.pp(names::IN_PROJ), m.pp(names::CONV1D));
    let (dt_proj, out_proj) = (m.pp(names::DT_PROJ), m.pp(names::OUT_PROJ));
    [
        (names::norm(&layer).weight(), "attn_norm.weight"),
        (in_proj.weight(), "ssm_in.weight"),
        (in_proj.bias(), "ssm_in.bias"),
        (conv1d.weight(), "ssm_conv1d.weight"),
        (conv1d.bias(), "ssm_conv1d.bias"),
        (m.pp(names::X_PROJ).weight(), "ssm_x.weight"),
        (dt_proj.weight(), "ssm_dt.weight"),
        (dt_proj.bias(), "ssm_dt.bias"),
        (m.name(names::A_LOG), "ssm_a"),
        (m.name(names::D), "ssm_d"),
        (out_proj.weight(), "ssm_out.weight"),
        (out_proj.bias(), "ssm_out.bias"),
    ]
}

/// llama.cpp's block prefix.
const BLK: &str = "blk";

/// `name` split as `{prefix}.{layer}.{rest}` with a decimal layer number.
fn split_layer<'n>(name: &'n str, prefix: &str) -> Option<(&'n str, &'n str)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('.')?;
    let (layer, part) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((layer, part))
}

/// llama.cpp's name of a tantra Mamba tensor, `None` for a name llama.cpp's Mamba has no
/// place for.
pub fn llama_cpp_name(name: &str) -> Option<String> {
    if let Some((_, l)) = model_names().into_iter().find(|(t, _)| t == name) {
        return Some(l.to_string());
    }
    let layers = names::layers(&Scope::root());
    let (layer, part) = split_layer(name, layers.path())?;
    let (_, l) = block_names().into_iter().find(|(t, _)| t == part)?;
    Some(Scope::new(BLK).pp(layer).name(l))
}

/// GPT-2's `bytes_to_unicode`: the printable character that stands for byte `b`.
pub fn gpt2_byte_char(b: u8) -> char {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    if printable(b) {
        return char::from(b);
    }
    // The n-th non-printable byte maps to U+0100 + n.
    let n = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + n).unwrap_or('?')
}

/// The tokenizer keys for tantra's byte-level vocabulary (see the module docs).
fn tokenizer_kv() -> Vec<(String, MetaValue)> {
    let mut tokens: Vec<String> = (0..=255u8).map(|b| gpt2_byte_char(b).to_string()).collect();
    let mut types = vec![1i32; 256];
    for s in ["<pad>", "<bos>", "<eos>", "<image>"] {
        tokens.push(s.into());
        types.push(3);
    }
    for i in 0..ByteTokenizer::VOCAB_SIZE - tokens.len() {
        tokens.push(format!("<reserved_{i}>"));
        types.push(3);
    }
    let u32v = |v: u32| MetaValue::U32(v);
    vec![
        ("tokenizer.ggml.model".into(), MetaValue::Str("gpt2".into())),
        (
            "tokenizer.ggml.pre".into(),
            MetaValue::Str("default".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            MetaValue::Array(MetaArray::Str(tokens)),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            MetaValue::Array(MetaArray::I32(types)),
        ),
        (
            "tokenizer.ggml.merges".into(),
            MetaValue::Array(MetaArray::Str(Vec::new())),
        ),
        (
            "tokenizer.ggml.bos_token_id".into(),
            u32v(ByteTokenizer::BOS),
        ),
        (
            "tokenizer.ggml.eos_token_id".into(),
            u32v(ByteTokenizer::EOS),
        ),
        (
            "tokenizer.ggml.padding_token_id".into(),
            u32v(ByteTokenizer::PAD),
        ),
        (
            "tokenizer.ggml.add_bos_token".into(),
            MetaValue::Bool(false),
        ),
        (
            "tokenizer.ggml.add_eos_token".into(),
            MetaValue::Bool(false),
        ),
    ]
}

/// The `general.*` and `mamba.*` keys for `config`, then the tokenizer keys when the model uses
/// the byte-level vocabulary.
pub fn mamba_kv(config: &MambaConfig, name: &str) -> Vec<(String, MetaValue)> {
    let u = |v: usize| MetaValue::U32(u32::try_from(v).unwrap_or(u32::MAX));
    let d_inner = config.intermediate();
    let mut kv = vec![
        (
            "general.architecture".into(),
            MetaValue::Str("mamba".into()),
        ),
        ("general.name".into(), MetaValue::Str(name.into())),
        ("mamba.vocab_size".into(), u(config.vocab_size)),
        ("mamba.context_length".into(), u(1 << 20)),
        ("mamba.embedding_length".into(), u(config.hidden_size)),
        ("mamba.feed_forward_length".into(), u(0)),
        ("mamba.attention.head_count".into(), u(0)),
        ("mamba.block_count".into(), u(config.num_hidden_layers)),
        ("mamba.ssm.conv_kernel".into(), u(config.conv_kernel)),
        ("mamba.ssm.inner_size".into(), u(d_inner)),
        ("mamba.ssm.state_size".into(), u(config.state_size)),
        ("mamba.ssm.time_step_rank".into(), u(config.dt_rank())),
        (
            "mamba.attention.layer_norm_rms_epsilon".into(),
            MetaValue::F32(config.layer_norm_epsilon as f32),
        ),
        ("mamba.ssm.dt_b_c_rms".into(), MetaValue::Bool(false)),
    ];
    if config.vocab_size == ByteTokenizer::VOCAB_SIZE {
        kv.extend(tokenizer_kv());
    }
    kv
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `src`'s tensors under llama.cpp's names and layouts (see the module docs). Tensors with no
/// llama.cpp name are refused: llama.cpp would refuse the file.
///
/// # Errors
/// A tensor llama.cpp's Mamba has no place for, an `A_log` that is not F32, a read error.
pub fn mamba_tensors(
    config: &MambaConfig,
    src: &dyn TensorSource,
) -> Result<MemorySource, FormatError> {
    let mut out = MemorySource::new();
    for (i, t) in src.tensors().iter().enumerate() {
        if config.tie_word_embeddings && t.name == names::lm_head(&Scope::root()).weight() {
            continue;
        }
        let name = llama_cpp_name(&t.name).ok_or_else(|| {
            FormatError::memory(format!(
                "tensor {:?} has no place in llama.cpp's Mamba",
                t.name
            ))
        })?;
        let bytes = src.tensor_bytes(i)?;
        let (shape, data) = if name.ends_with(".ssm_a") {
            if t.dtype != DType::F32 {
                return Err(FormatError::memory(format!(
                    "tensor {:?}: A_log must be F32, found {}",
                    t.name, t.dtype
                )));
            }
            let a: Vec<u8> = f32s(&bytes)
                .iter()
                .flat_map(|&l| (-l.exp()).to_le_bytes())
                .collect();
            (t.shape.clone(), a)
        } else if name.ends_with(".ssm_conv1d.weight") && t.shape.len() == 3 && t.shape[1] == 1 {
            (vec![t.shape[0], t.shape[2]], bytes.into_owned())
        } else {
            (t.shape.clone(), bytes.into_owned())
        };
        out.push(TensorInfo::new(name, t.dtype, shape), data)?;
    }
    Ok(out)
}

/// Writes `src` (a Mamba of `config`) as a llama.cpp GGUF at `output`, verified.
///
/// # Errors
/// What [`mamba_tensors`] refuses, and the writer's errors.
pub fn export_gguf(
    config: &MambaConfig,
    src: &dyn TensorSource,
    name: &str,
    output: &Path,
    options: &GgufOptions,
    progress: &dyn Progress,
) -> Result<(u64, Written), FormatError> {
    let tensors = mamba_tensors(config, src)?;
    let kv = mamba_kv(config, name);
    // The tensors llama.cpp's own converter keeps F32 stay F32 at every target: its CPU
    // `ssm_conv` takes an F32 `ssm_conv1d` only.
    let options = GgufOptions {
        keep_f32: KeepF32::LlamaCpp,
        ..options.clone()
    };
    write_gguf_file(&tensors, Some(&kv), output, &options, progress)
}

/// What [`export_gguf_from_store`] wrote.
#[derive(Debug, Clone)]
pub struct GgufExportReport {
    pub model: String,
    pub version: String,
    /// The stored file the tensors were read from.
    pub from: std::path::PathBuf,
    pub tensors: usize,
    pub bytes: u64,
    pub written: Written,
}

/// Exports `mamba:version` (the default version when `version` is `None`) from the weights
/// root as a llama.cpp GGUF at `output` (see [`export_gguf`]).
///
/// # Errors
/// An unknown version, no config for it, a stored config that is not a Mamba config, or what
/// [`export_gguf`] refuses.
pub fn export_gguf_from_store(
    wm: &WeightManager,
    version: Option<&str>,
    output: &Path,
    options: &GgufOptions,
    progress: &dyn Progress,
) -> Result<GgufExportReport, HfError> {
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
    let title = format!("{model}:{}", loaded.version);
    let (bytes, written) = export_gguf(
        &config,
        loaded.source.as_ref(),
        &title,
        output,
        options,
        progress,
    )
    .map_err(|e| e.with_path(&loaded.path))?;
    Ok(GgufExportReport {
        model: model.to_string(),
        version: loaded.version,
        from: loaded.path,
        tensors: written.tensors.len(),
        bytes,
        written,
    })
}

/// The tantra name of a llama.cpp Mamba tensor name (the inverse of [`llama_cpp_name`]); a
/// name it does not know is kept as it is.
pub fn tantra_name(name: &str) -> String {
    if let Some((t, _)) = model_names().into_iter().find(|(_, l)| *l == name) {
        return t;
    }
    let Some((layer, part)) = split_layer(name, BLK) else {
        return name.into();
    };
    match block_names().into_iter().find(|(_, l)| *l == part) {
        Some((t, _)) => names::layers(&Scope::root()).pp(layer).name(&t),
        None => name.into(),
    }
}

/// True when `file` is a llama.cpp Mamba model.
pub fn is_llama_cpp_mamba(file: &GgufFile) -> bool {
    file.header().architecture() == Some("mamba")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_bytes_to_unicode() {
        assert_eq!(gpt2_byte_char(b'a'), 'a');
        assert_eq!(gpt2_byte_char(b' '), '\u{120}');
        assert_eq!(gpt2_byte_char(b'\n'), '\u{10A}');
        assert_eq!(gpt2_byte_char(0), '\u{100}');
        assert_eq!(gpt2_byte_char(0xAD), '\u{143}');
        let all: std::collections::BTreeSet<char> = (0..=255u8).map(gpt2_byte_char).collect();
        assert_eq!(all.len(), 256);
    }

    #[test]
    fn names_round_trip_with_the_runtime_map() {
        for n in [
            "backbone.embeddings.weight",
            "backbone.layers.3.mixer.A_log",
            "backbone.layers.0.norm.weight",
            "backbone.layers.1.mixer.conv1d.weight",
        ] {
            let l = llama_cpp_name(n).unwrap();
            assert_eq!(tantra_name(&l), n);
        }
        assert_eq!(llama_cpp_name("backbone.layers.x.mixer.D"), None);
        assert_eq!(llama_cpp_name("backbone.layers.0.mixer.E"), None);
        assert_eq!(llama_cpp_name("backbone.layersx.0.mixer.D"), None);
        // Every parameter of every variant has a llama.cpp name that maps back to it.
        let mut c = MambaConfig::new(300, 16, 2);
        c.use_bias = true;
        c.tie_word_embeddings = false;
        let params = c.parameters();
        assert_eq!(params.len(), 2 + 2 * 12 + 1);
        for p in params {
            let l = llama_cpp_name(&p.name).unwrap();
            assert_eq!(tantra_name(&l), p.name);
        }
    }

    #[test]
    fn names_map_to_tantra() {
        assert_eq!(
            tantra_name("token_embd.weight"),
            "backbone.embeddings.weight"
        );
        assert_eq!(
            tantra_name("blk.12.ssm_a"),
            "backbone.layers.12.mixer.A_log"
        );
        assert_eq!(
            tantra_name("blk.0.attn_norm.weight"),
            "backbone.layers.0.norm.weight"
        );
        assert_eq!(tantra_name("blk.x.ssm_a"), "blk.x.ssm_a");
        assert_eq!(tantra_name("blk.3.ssm_zz"), "blk.3.ssm_zz");
        assert_eq!(tantra_name("blk.3"), "blk.3");
        assert_eq!(tantra_name("other"), "other");
    }
}
