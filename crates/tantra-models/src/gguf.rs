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
use crate::mamba::MambaConfig;
use crate::schema::schemas;
use crate::tokenizer::ByteTokenizer;

/// llama.cpp's name of a tantra Mamba tensor, `None` for the head when it is tied.
pub fn llama_cpp_name(name: &str) -> Option<String> {
    match name {
        "backbone.embeddings.weight" => return Some("token_embd.weight".into()),
        "backbone.norm_f.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("backbone.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let blk = |p: &str| Some(format!("blk.{layer}.{p}"));
    match part {
        "norm.weight" => blk("attn_norm.weight"),
        "mixer.in_proj.weight" => blk("ssm_in.weight"),
        "mixer.in_proj.bias" => blk("ssm_in.bias"),
        "mixer.conv1d.weight" => blk("ssm_conv1d.weight"),
        "mixer.conv1d.bias" => blk("ssm_conv1d.bias"),
        "mixer.x_proj.weight" => blk("ssm_x.weight"),
        "mixer.dt_proj.weight" => blk("ssm_dt.weight"),
        "mixer.dt_proj.bias" => blk("ssm_dt.bias"),
        "mixer.A_log" => blk("ssm_a"),
        "mixer.D" => blk("ssm_d"),
        "mixer.out_proj.weight" => blk("ssm_out.weight"),
        "mixer.out_proj.bias" => blk("ssm_out.bias"),
        _ => None,
    }
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
        if t.name == "lm_head.weight" && config.tie_word_embeddings {
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

/// The tantra name of a llama.cpp Mamba tensor name.
pub fn tantra_name(name: &str) -> String {
    match name {
        "token_embd.weight" => return "backbone.embeddings.weight".into(),
        "output_norm.weight" => return "backbone.norm_f.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        _ => {}
    }
    let Some(rest) = name.strip_prefix("blk.") else {
        return name.into();
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return name.into();
    };
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return name.into();
    }
    let mixer = |p: &str| format!("backbone.layers.{layer}.mixer.{p}");
    match part {
        "attn_norm.weight" => format!("backbone.layers.{layer}.norm.weight"),
        "ssm_in.weight" => mixer("in_proj.weight"),
        "ssm_in.bias" => mixer("in_proj.bias"),
        "ssm_conv1d.weight" => mixer("conv1d.weight"),
        "ssm_conv1d.bias" => mixer("conv1d.bias"),
        "ssm_x.weight" => mixer("x_proj.weight"),
        "ssm_dt.weight" => mixer("dt_proj.weight"),
        "ssm_dt.bias" => mixer("dt_proj.bias"),
        "ssm_a" => mixer("A_log"),
        "ssm_d" => mixer("D"),
        "ssm_out.weight" => mixer("out_proj.weight"),
        "ssm_out.bias" => mixer("out_proj.bias"),
        _ => name.into(),
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
        assert_eq!(tantra_name("other"), "other");
    }
}
