//! bf16 and q8 weights against f32 for the two image models (issue 14), as `precisions.rs`
//! does for the Mamba: the `sample_small` configs initialized with a fixed seed, fed a fixed
//! synthetic image.
//!
//! - Multimodal: the logits of every prompt position after the image tokens, then 40 greedy
//!   steps of the f32 model fed to both (max abs error, the largest per-position relative
//!   error, teacher-forced top-1 agreement), and the free-running greedy continuation's tokens
//!   equal to f32's before the first difference. Prefill of image tokens plus prompt leaves the
//!   states and logits of feeding them one at a time, bit for bit, at every precision.
//! - OCR: the per-frame class logits (the same errors) and the frames whose argmax (the greedy
//!   CTC path) agrees; its Mamba blocks run over all frames at once leave the states and
//!   outputs of running them frame by frame.
//!
//! The bounds are the measured values with a margin (see the comments); each precision must
//! also differ from f32, so a precision that is silently not applied fails.

#![allow(clippy::unwrap_used)] // tests may unwrap; helpers outside #[test] too

use image::{DynamicImage, RgbImage};
use tantra_formats::MemorySource;
use tantra_models::{init_weights, MambaMultimodalConfig, ModelConfig, OcrNativeConfig};
use tantra_runtime::{
    argmax, Linear, Logits, MambaBlocks, MultimodalModel, OcrModel, Precision, Weights,
};

fn materialize(config: ModelConfig, seed: u64) -> MemorySource {
    init_weights(&config, seed).unwrap().materialize().unwrap()
}

/// The multimodal model's input image (resized to its `image_size`).
fn image() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(96, 40, |x, y| {
        let v = if (x / 6 + y / 5) % 2 == 0 { 230 } else { 20 };
        image::Rgb([v, (x * 255 / 96) as u8, (y * 255 / 40) as u8])
    }))
}

/// A wide line for the OCR model: many frames, so that one flipped frame is a small fraction.
fn line_image() -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(960, 32, |x, y| {
        let v = if (x / 7 + y / 9 + x / 31) % 3 == 0 {
            15
        } else {
            240
        };
        image::Rgb([v, v, v])
    }))
}

/// Errors of `other` against `reference`, `vocab` values per position.
#[derive(Debug, Default)]
struct Errors {
    max_abs: f32,
    /// The largest over positions of max |x - x_f32| / max |x_f32|.
    max_rel: f32,
    same: usize,
    total: usize,
}

impl Errors {
    fn add(&mut self, reference: &[f32], other: &[f32], vocab: usize) {
        assert_eq!(reference.len(), other.len());
        for (a, b) in reference.chunks_exact(vocab).zip(other.chunks_exact(vocab)) {
            let e = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            let scale = a.iter().map(|x| x.abs()).fold(0.0, f32::max);
            self.max_abs = self.max_abs.max(e);
            self.max_rel = self.max_rel.max(e / scale);
            self.same += usize::from(argmax(a) == argmax(b));
            self.total += 1;
        }
    }

    fn top1(&self) -> f64 {
        self.same as f64 / self.total as f64
    }
}

fn multimodal(p: Precision) -> MultimodalModel {
    let c = MambaMultimodalConfig::sample_small();
    let mem = materialize(ModelConfig::MambaMultimodal(c.clone()), 3);
    let m = MultimodalModel::load(&Weights::new(&mem).unwrap().with_precision(p), &c).unwrap();
    assert_eq!(m.language().precision(), p);
    m
}

/// The prompt's ids: its bytes (the byte-level vocabulary).
fn prompt() -> Vec<u32> {
    b"Describe the picture: "
        .iter()
        .map(|&b| u32::from(b))
        .collect()
}
const STEPS: usize = 40;

/// Teacher-forced errors over the prompt and `STEPS` greedy steps of the f32 model, and the
/// free-running greedy tokens equal to f32's before the first difference.
fn multimodal_accuracy(reference: &MultimodalModel, other: &MultimodalModel) -> (Errors, usize) {
    let img = image();
    let prompt = prompt();
    let vocab = reference.language().vocab_size();
    let mut errors = Errors::default();
    let (mut sr, mut so) = (
        reference.language().new_state(),
        other.language().new_state(),
    );
    let mut lr = reference
        .forward(Some(&img), &prompt, &mut sr, Logits::All)
        .unwrap();
    let mut lo = other
        .forward(Some(&img), &prompt, &mut so, Logits::All)
        .unwrap();
    for step in 0..=STEPS {
        errors.add(&lr, &lo, vocab);
        if step == STEPS {
            break;
        }
        let next = argmax(&lr[lr.len() - vocab..]);
        lr = reference.language().step(next, &mut sr).unwrap();
        lo = other.language().step(next, &mut so).unwrap();
    }
    let greedy = |m: &MultimodalModel| {
        let mut s = m.language().new_state();
        let mut next = argmax(
            &m.forward(Some(&img), &prompt, &mut s, Logits::Last)
                .unwrap(),
        );
        let mut out = vec![next];
        for _ in 1..STEPS {
            next = argmax(&m.language().step(next, &mut s).unwrap());
            out.push(next);
        }
        out
    };
    let (a, b) = (greedy(reference), greedy(other));
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    (errors, prefix)
}

// Measured (sample_small, seed 3, `image()`, 22 prompt tokens + 40 steps): bf16 max abs 6.6e-2,
// max rel 1.9e-2, top-1 1.0, greedy 40/40; q8 max abs 0.21, max rel 5.2e-2, top-1 1.0, greedy
// 40/40. Bounds: about 3.5x the errors, top-1 >= 0.97 / 0.95, greedy >= 30 / 20 of 40.
#[test]
fn multimodal_bf16_and_q8_logits_stay_close_to_f32() {
    let reference = multimodal(Precision::F32);
    // (max abs, max rel, teacher-forced top-1, greedy prefix of STEPS)
    let bounds = [
        (Precision::Bf16, (0.25, 7e-2, 0.97, 30)),
        (Precision::Q8, (0.75, 0.18, 0.95, 20)),
    ];
    for (p, (abs, rel, top1, prefix)) in bounds {
        let (e, greedy) = multimodal_accuracy(&reference, &multimodal(p));
        let report = format!(
            "multimodal {p}: {e:?}, top-1 {}, greedy prefix {greedy}/{STEPS}",
            e.top1()
        );
        eprintln!("{report}");
        assert!(e.max_abs > 0.0, "{report}: the same logits as f32");
        assert!(e.max_abs <= abs, "{report}");
        assert!(e.max_rel <= rel, "{report}");
        assert!(e.top1() >= top1, "{report}");
        assert!(greedy >= prefix, "{report}");
    }
}

/// Image tokens and prompt fed at once leave exactly the states and logits of feeding each
/// image token and each prompt token alone, at every precision.
#[test]
fn multimodal_prefill_equals_stepping_at_every_precision() {
    let img = image();
    for p in Precision::ALL {
        let m = multimodal(p);
        let lang = m.language();
        let d = lang.hidden_size();
        let mut prefilled = lang.new_state();
        let all = m
            .forward(Some(&img), &prompt(), &mut prefilled, Logits::All)
            .unwrap();
        let mut stepped = lang.new_state();
        let tokens = m.image_tokens(&img).unwrap();
        assert!(
            tokens.len() >= 2 * d,
            "{p}: too few image tokens to compare"
        );
        for row in tokens.chunks_exact(d) {
            lang.forward_embeddings(row.to_vec(), &mut stepped, Logits::None)
                .unwrap();
        }
        let mut steps = Vec::new();
        for id in prompt() {
            steps.extend(lang.step(id, &mut stepped).unwrap());
        }
        assert_eq!(prefilled, stepped, "{p}: states differ");
        assert!(all == steps, "{p}: logits differ");
    }
}

fn ocr_weights() -> (MemorySource, OcrNativeConfig) {
    let c = OcrNativeConfig::sample_small();
    (materialize(ModelConfig::OcrNative(c.clone()), 5), c)
}

fn ocr(mem: &MemorySource, c: &OcrNativeConfig, p: Precision) -> OcrModel {
    OcrModel::load(&Weights::new(mem).unwrap().with_precision(p), c).unwrap()
}

// Measured (sample_small, seed 5, the 120 frames of `line_image`): bf16 max abs 1.1e-2, max rel
// 3.8e-3, frame top-1 1.0; q8 max abs 4.6e-2, max rel 1.45e-2, top-1 0.992 (one frame). Bounds:
// about 3.5x the errors, top-1 >= 0.97 / 0.95.
#[test]
fn ocr_bf16_and_q8_logits_stay_close_to_f32() {
    let (mem, c) = ocr_weights();
    let reference = ocr(&mem, &c, Precision::F32);
    let frames = reference.frames(&line_image());
    let want = reference.logits(&frames).unwrap();
    let classes = c.num_classes();
    assert!(want.len() / classes >= 8, "too few frames to compare");
    // (max abs, max rel, frames whose argmax agrees)
    let bounds = [
        (Precision::Bf16, (4e-2, 1.5e-2, 0.97)),
        (Precision::Q8, (0.16, 5e-2, 0.95)),
    ];
    for (p, (abs, rel, top1)) in bounds {
        let mut e = Errors::default();
        e.add(&want, &ocr(&mem, &c, p).logits(&frames).unwrap(), classes);
        let report = format!("ocr {p}: {e:?}, frame top-1 {}", e.top1());
        eprintln!("{report}");
        assert!(e.max_abs > 0.0, "{report}: the same logits as f32");
        assert!(e.max_abs <= abs, "{report}");
        assert!(e.max_rel <= rel, "{report}");
        assert!(e.top1() >= top1, "{report}");
    }
}

/// The OCR model's Mamba blocks over all frames at once leave exactly the states and outputs
/// of running them frame by frame, at every precision (its weights, its patch embedding).
#[test]
fn ocr_blocks_prefill_equals_stepping_at_every_precision() {
    let (mem, c) = ocr_weights();
    let frames = ocr(&mem, &c, Precision::F32).frames(&line_image());
    let d = c.mamba.hidden_size;
    for p in Precision::ALL {
        let w = Weights::new(&mem).unwrap().with_precision(p);
        let patch = Linear::load(&w.pp("patch_embedding"), d, c.patch_dim(), true).unwrap();
        let blocks = MambaBlocks::load(&w.pp("backbone").pp("layers"), &c.mamba).unwrap();
        let h = patch.apply(&frames);
        assert!(h.len() >= 8 * d, "{p}: too few frames");
        let mut all = h.clone();
        let mut prefilled = blocks.new_state();
        blocks.forward(&mut all, &mut prefilled).unwrap();
        let mut stepped = blocks.new_state();
        let mut steps = Vec::new();
        for row in h.chunks_exact(d) {
            let mut one = row.to_vec();
            blocks.forward(&mut one, &mut stepped).unwrap();
            steps.extend(one);
        }
        assert_eq!(prefilled, stepped, "{p}: states differ");
        assert!(all == steps, "{p}: outputs differ");
    }
}
