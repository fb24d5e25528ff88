//! llama.cpp's Mamba GGUF (`general.architecture = mamba`, the names `convert_hf_to_gguf.py`
//! writes) read as tantra's Mamba tensors, so that `tantra run model.gguf` runs it.
//!
//! llama.cpp renames every tensor (`blk.N.ssm_in.weight` for `backbone.layers.N.mixer.in_proj
//! .weight`), squeezes `conv1d.weight` to `[d_inner, d_conv]` (the runtime accepts both shapes)
//! and stores `A = -exp(A_log)` instead of `A_log`; this maps the names back and takes
//! `A_log = ln(-A)`. That inverse is not bit-exact (`-exp(ln(-A))` may differ from `A` in the
//! last bit), which is the one way a GGUF run can differ from a run of the original weights.
//! Quantized tensors are dequantized to f32 as the runtime computes in f32. An unknown name is
//! kept as it is, so the runtime's "unused tensor" check names it.

use tantra_formats::gguf::GgufFile;
use tantra_formats::{DType, FormatError, MemorySource, TensorInfo, TensorSource};

/// The tantra name of a llama.cpp Mamba tensor name.
pub(crate) fn tantra_name(name: &str) -> String {
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
pub(crate) fn is_llama_cpp_mamba(file: &GgufFile) -> bool {
    file.header().architecture() == Some("mamba")
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The tensors of a llama.cpp Mamba GGUF under tantra's names, in f32 where they are floats.
///
/// # Errors
/// A tensor that cannot be read (a ggml type tantra does not decode, say).
pub(crate) fn mamba_source(file: &GgufFile) -> Result<MemorySource, FormatError> {
    let mut out = MemorySource::new();
    for (i, t) in file.tensors().iter().enumerate() {
        let name = tantra_name(&t.name);
        let bytes = file.tensor_bytes(i)?;
        let data = if name.ends_with(".A_log") && t.dtype == DType::F32 {
            f32s(&bytes)
                .iter()
                .flat_map(|&a| (-a).ln().to_le_bytes())
                .collect()
        } else {
            bytes.into_owned()
        };
        out.push(TensorInfo::new(name, t.dtype, t.shape.clone()), data)?;
    }
    for (k, v) in file.metadata() {
        out.metadata_mut().insert(k.clone(), v.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

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
