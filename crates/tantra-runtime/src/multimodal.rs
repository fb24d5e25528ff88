//! The `mamba_multimodal` runtime: image plus prompt to text, as
//! [`tantra_models::mamba_multimodal::config`] specifies it. The image becomes `P` image tokens
//! (patch embedding, position embedding, a GELU projector into the text width), which are
//! prefilled before the prompt's token embeddings; the recurrent states carry across that
//! boundary and decoding continues from them.

use std::time::Instant;

use ::image::DynamicImage;

use tantra_models::mamba_multimodal::{names, MambaMultimodalConfig};
use tantra_models::names::WEIGHT;

use super::error::{Result, RuntimeError};
use super::generate::{generate, GenerateOptions, Generation};
use super::image::rgb_input;
use super::kernels::gelu;
use super::layers::Linear;
use super::mamba::{Logits, MambaModel, MambaState};
use super::weights::Weights;

/// The largest `image_size` the runtime accepts: the preprocessed image is `3 * S * S` floats,
/// and a config is untrusted input.
pub const MAX_IMAGE_SIZE: usize = 4096;

/// A loaded `mamba_multimodal` model.
#[derive(Debug, Clone)]
pub struct MultimodalModel {
    config: MambaMultimodalConfig,
    language: MambaModel,
    patch_embedding: Linear,
    /// `[P, dv]`.
    position_embedding: Vec<f32>,
    linear_1: Linear,
    linear_2: Linear,
}

impl MultimodalModel {
    /// Builds the model from tensors named as the config's parameter list names them
    /// (`backbone.*`, `vision.*`, `projector.*`; the table is
    /// [`tantra_models::mamba_multimodal::names`]), each checked against the config, nothing
    /// left over.
    ///
    /// # Errors
    /// An invalid config, a missing tensor, one of another shape or dtype, or a leftover
    /// tensor.
    pub fn load(weights: &Weights<'_>, config: &MambaMultimodalConfig) -> Result<Self> {
        config.validate()?;
        let v = &config.vision_config;
        if v.image_size > MAX_IMAGE_SIZE {
            return Err(RuntimeError::TooLarge {
                field: "vision_config.image_size",
                value: v.image_size,
                max: MAX_IMAGE_SIZE,
            });
        }
        let dv = v.hidden_size;
        let dh = config.projector_hidden_size;
        let d = config.text_config.hidden_size;
        let root = weights.root();
        let language = MambaModel::load_at(&names::language(&root), &config.text_config)?;
        let patch_embedding =
            Linear::load(&names::patch_embedding(&root), dv, v.patch_dim(), true)?;
        let position_embedding =
            names::position_embedding(&root).get(WEIGHT, &[v.num_patches(), dv])?;
        let linear_1 = Linear::load(&names::linear_1(&root), dh, dv, true)?;
        let linear_2 = Linear::load(&names::linear_2(&root), d, dh, true)?;
        weights.check_all_used()?;
        Ok(MultimodalModel {
            config: config.clone(),
            language,
            patch_embedding,
            position_embedding,
            linear_1,
            linear_2,
        })
    }

    pub fn config(&self) -> &MambaMultimodalConfig {
        &self.config
    }

    /// The language model the image tokens are fed to.
    pub fn language(&self) -> &MambaModel {
        &self.language
    }

    /// The preprocessed image, `[3, S, S]` channel-major, normalized as the config says.
    pub fn pixels(&self, image: &DynamicImage) -> Vec<f32> {
        let v = &self.config.vision_config;
        rgb_input(image, v.image_size as u32, &v.image_mean, &v.image_std)
    }

    /// The image tokens of preprocessed pixels (`[3, S, S]`): `[P, d]` row-major.
    ///
    /// # Errors
    /// [`RuntimeError::InputShape`] for pixels of another size.
    pub fn image_tokens_from_pixels(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let v = &self.config.vision_config;
        let (s, p, c) = (v.image_size, v.patch_size, v.num_channels);
        if pixels.len() != c * s * s {
            return Err(RuntimeError::InputShape {
                what: "image pixels [C, S, S]",
                expected: c * s * s,
                found: pixels.len(),
            });
        }
        let g = v.grid();
        let pd = v.patch_dim();
        // Patch py*G+px flattened as (c, y, x): the layout of a Conv2d(C, dv, p, p) weight.
        let mut patches = vec![0.0f32; g * g * pd];
        for py in 0..g {
            for px in 0..g {
                let dst = &mut patches[(py * g + px) * pd..(py * g + px + 1) * pd];
                for ch in 0..c {
                    for y in 0..p {
                        let row = ch * s * s + (py * p + y) * s + px * p;
                        dst[ch * p * p + y * p..ch * p * p + (y + 1) * p]
                            .copy_from_slice(&pixels[row..row + p]);
                    }
                }
            }
        }
        let mut e = self.patch_embedding.apply(&patches);
        for (ev, pv) in e.iter_mut().zip(&self.position_embedding) {
            *ev += pv;
        }
        let mut hidden = self.linear_1.apply(&e);
        for x in &mut hidden {
            *x = gelu(*x);
        }
        Ok(self.linear_2.apply(&hidden))
    }

    /// The image tokens of an image: `[P, d]` row-major.
    pub fn image_tokens(&self, image: &DynamicImage) -> Result<Vec<f32>> {
        self.image_tokens_from_pixels(&self.pixels(image))
    }

    /// Feeds the image tokens (if any) and then `prompt_ids`, returning the logits asked for
    /// of the prompt positions (of the last image token when there is no prompt).
    ///
    /// # Errors
    /// A token id out of range, or [`RuntimeError::EmptyPrompt`] with neither input.
    pub fn forward(
        &self,
        image: Option<&DynamicImage>,
        prompt_ids: &[u32],
        state: &mut MambaState,
        logits: Logits,
    ) -> Result<Vec<f32>> {
        let prefix = match image {
            Some(img) => self.image_tokens(img)?,
            None => Vec::new(),
        };
        if prefix.is_empty() && prompt_ids.is_empty() {
            return Err(RuntimeError::EmptyPrompt);
        }
        if prompt_ids.is_empty() {
            return self.language.forward_embeddings(prefix, state, logits);
        }
        self.language
            .forward_embeddings(prefix, state, Logits::None)?;
        self.language.forward(prompt_ids, state, logits)
    }

    /// Image (optional) plus prompt to generated tokens, from a fresh state.
    ///
    /// # Errors
    /// See [`generate`].
    pub fn generate(
        &self,
        image: Option<&DynamicImage>,
        prompt_ids: &[u32],
        options: &GenerateOptions,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<Generation> {
        let start = Instant::now();
        let prefix = match image {
            Some(img) => self.image_tokens(img)?,
            None => Vec::new(),
        };
        let vision = start.elapsed();
        let mut state = self.language.new_state();
        let mut g = generate(
            &self.language,
            &mut state,
            &prefix,
            prompt_ids,
            options,
            on_token,
        )?;
        // Encoding the image is part of the prefill.
        g.prefill_time += vision;
        Ok(g)
    }
}
