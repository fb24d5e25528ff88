//! The `ocr_native` runtime: an image of one text line to text, as
//! [`tantra_models::ocr_native::config`] specifies it. The line is resized to the model's height,
//! cut into column frames, projected to the Mamba width, run through the blocks (the same
//! ones the language model uses, causal over the columns), scored per frame by the CTC head,
//! and decoded greedily ([`tantra_models::ocr_native::ctc`]).

use ::image::DynamicImage;

use tantra_models::mamba::names as mamba_names;
use tantra_models::ocr_native::{greedy_decode, names, OcrNativeConfig};

use super::error::{Result, RuntimeError};
use super::image::gray_line;
use super::layers::Linear;
use super::mamba::{MambaBlocks, RmsNorm};
use super::sampling::argmax;
use super::weights::Weights;

/// What the recognizer read.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrOutput {
    /// The decoded text.
    pub text: String,
    /// The decoded class ids (blanks dropped, repeats merged).
    pub classes: Vec<u32>,
    /// The argmax class of each frame, before decoding.
    pub frame_classes: Vec<u32>,
    /// Per-frame logits, `[T, C]` row-major.
    pub logits: Vec<f32>,
}

/// A loaded `ocr_native` model.
#[derive(Debug, Clone)]
pub struct OcrModel {
    config: OcrNativeConfig,
    patch_embedding: Linear,
    blocks: MambaBlocks,
    norm_f: RmsNorm,
    head: Linear,
}

impl OcrModel {
    /// Builds the model from tensors named as the config's parameter list names them
    /// (`patch_embedding.*`, `backbone.*`, `ctc_head.*`; the table is
    /// [`tantra_models::ocr_native::names`]), checked, nothing left over.
    ///
    /// # Errors
    /// An invalid config, a missing tensor, one of another shape or dtype, or a leftover
    /// tensor.
    pub fn load(weights: &Weights<'_>, config: &OcrNativeConfig) -> Result<Self> {
        config.validate()?;
        let d = config.mamba.hidden_size;
        let root = weights.root();
        let patch_embedding =
            Linear::load(&names::patch_embedding(&root), d, config.patch_dim(), true)?;
        let blocks = MambaBlocks::load(&mamba_names::layers(&root), &config.mamba)?;
        let norm_f = RmsNorm::load(
            &mamba_names::norm_f(&root),
            d,
            config.mamba.layer_norm_epsilon,
        )?;
        let head = Linear::load(&names::ctc_head(&root), config.num_classes(), d, true)?;
        weights.check_all_used()?;
        Ok(OcrModel {
            config: config.clone(),
            patch_embedding,
            blocks,
            norm_f,
            head,
        })
    }

    pub fn config(&self) -> &OcrNativeConfig {
        &self.config
    }

    /// The frames of a line image: `[T, H*w]` row-major, each frame flattened row by row,
    /// normalized as the config says.
    pub fn frames(&self, image: &DynamicImage) -> Vec<f32> {
        let c = &self.config;
        let (h, w) = (c.image_height, c.patch_width);
        let (gray, width) = gray_line(image, h as u32, w as u32);
        let width = width as usize;
        let t_len = width / w;
        let (mean, std) = (c.pixel_mean, c.pixel_std);
        let raw = gray.as_raw();
        let mut out = vec![0.0f32; t_len * h * w];
        for t in 0..t_len {
            for y in 0..h {
                for x in 0..w {
                    let v = f64::from(raw[y * width + t * w + x]);
                    out[t * h * w + y * w + x] = ((v / 255.0 - mean) / std) as f32;
                }
            }
        }
        out
    }

    /// Per-frame class logits of preprocessed frames (`[T, H*w]`): `[T, C]`.
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`] when `frames` is not a whole number of frames.
    pub fn logits(&self, frames: &[f32]) -> Result<Vec<f32>> {
        let pd = self.config.patch_dim();
        if !frames.len().is_multiple_of(pd) {
            return Err(RuntimeError::InputShape {
                what: "OCR frames (a multiple of image_height * patch_width)",
                expected: pd * (frames.len() / pd + 1),
                found: frames.len(),
            });
        }
        let mut h = self.patch_embedding.apply(frames);
        let mut state = self.blocks.new_state();
        self.blocks.forward(&mut h, &mut state)?;
        let n = self.norm_f.apply(&h);
        Ok(self.head.apply(&n))
    }

    /// Reads the text of a line image (greedy CTC).
    ///
    /// # Errors
    /// As [`OcrModel::logits`].
    pub fn recognize(&self, image: &DynamicImage) -> Result<OcrOutput> {
        let logits = self.logits(&self.frames(image))?;
        Ok(self.decode(logits))
    }

    /// Greedy CTC over per-frame logits: argmax per frame, repeats merged, blanks dropped.
    pub fn decode(&self, logits: Vec<f32>) -> OcrOutput {
        let c = self.config.num_classes();
        let frame_classes: Vec<u32> = logits.chunks_exact(c).map(argmax).collect();
        let classes = greedy_decode(&frame_classes);
        OcrOutput {
            text: self.config.classes_to_text(&classes),
            classes,
            frame_classes,
            logits,
        }
    }
}
