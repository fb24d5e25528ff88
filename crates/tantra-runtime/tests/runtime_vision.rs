//! The multimodal and OCR runtimes on fixed inputs: the `sample_small` configs initialized
//! with a fixed seed, synthetic images written as PNG and JPEG into a temp dir. The checks are
//! structural (shapes, determinism, the image reaching the output, the state carried from the
//! image tokens into the text, the CTC decoding rules), not accuracy: the weights are random.

#![allow(clippy::unwrap_used)] // tests may unwrap; helpers outside #[test] too

use image::{DynamicImage, GrayImage, RgbImage};
use tantra_formats::MemorySource;
use tantra_models::{init_weights, MambaMultimodalConfig, ModelConfig, OcrNativeConfig};
use tantra_runtime::image::load_image;
use tantra_runtime::{GenerateOptions, Logits, MultimodalModel, OcrModel, RuntimeError, Weights};

fn materialize(config: ModelConfig, seed: u64) -> MemorySource {
    init_weights(&config, seed).unwrap().materialize().unwrap()
}

fn multimodal() -> MultimodalModel {
    let c = MambaMultimodalConfig::sample_small();
    let mem = materialize(ModelConfig::MambaMultimodal(c.clone()), 3);
    MultimodalModel::load(&Weights::new(&mem).unwrap(), &c).unwrap()
}

fn ocr() -> OcrModel {
    let c = OcrNativeConfig::sample_small();
    let mem = materialize(ModelConfig::OcrNative(c.clone()), 5);
    OcrModel::load(&Weights::new(&mem).unwrap(), &c).unwrap()
}

fn gradient(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 128])
    }))
}

fn checkerboard(w: u32, h: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        let v = if (x / 8 + y / 8) % 2 == 0 { 255 } else { 0 };
        image::Rgb([v, v / 2, 255 - v])
    }))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn multimodal_image_tokens_have_the_configured_shape_and_files_decode() {
    let m = multimodal();
    let v = &m.config().vision_config;
    let d = m.config().text_config.hidden_size;
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("a.png");
    let jpg = dir.path().join("a.jpg");
    // Not square and not the configured size: resized to image_size x image_size.
    gradient(100, 80).save(&png).unwrap();
    gradient(100, 80).save(&jpg).unwrap();
    for path in [&png, &jpg] {
        let img = load_image(path).unwrap();
        assert_eq!(m.pixels(&img).len(), 3 * v.image_size * v.image_size);
        let tokens = m.image_tokens(&img).unwrap();
        assert_eq!(tokens.len(), v.num_patches() * d);
        assert!(tokens.iter().all(|x| x.is_finite()));
    }
    let not_image = dir.path().join("x.png");
    std::fs::write(&not_image, b"hello").unwrap();
    assert!(matches!(
        load_image(&not_image),
        Err(RuntimeError::Image { .. })
    ));
    assert!(matches!(
        m.image_tokens_from_pixels(&[0.0; 7]),
        Err(RuntimeError::InputShape { .. })
    ));
}

#[test]
fn multimodal_is_deterministic_and_the_image_changes_the_output() {
    let m = multimodal();
    let prompt = [257u32, b'a' as u32, b' ' as u32];
    let lm = m.language();
    let run = |img: Option<&DynamicImage>| {
        let mut s = lm.new_state();
        m.forward(img, &prompt, &mut s, Logits::Last).unwrap()
    };
    let (g, c) = (gradient(64, 64), checkerboard(64, 64));
    let a = run(Some(&g));
    assert_eq!(a.len(), lm.vocab_size());
    assert_eq!(a, run(Some(&g)), "same inputs, same logits");
    let b = run(Some(&c));
    let none = run(None);
    assert!(max_diff(&a, &b) > 1e-6, "two images gave the same logits");
    assert!(max_diff(&a, &none) > 1e-6, "the image had no effect");

    let opts = GenerateOptions {
        max_new_tokens: 6,
        ..GenerateOptions::default()
    };
    let g1 = m.generate(Some(&g), &prompt, &opts, &mut |_| {}).unwrap();
    let g2 = m.generate(Some(&g), &prompt, &opts, &mut |_| {}).unwrap();
    assert_eq!(g1.generated, g2.generated);
    assert_eq!(g1.generated.len(), 6);
    assert_eq!(
        g1.prefill_tokens,
        m.config().vision_config.num_patches() + prompt.len()
    );
    assert_eq!(g1.output_ids()[..3], prompt);

    // An image alone is a prompt too.
    let alone = m.generate(Some(&g), &[], &opts, &mut |_| {}).unwrap();
    assert_eq!(alone.generated.len(), 6);
    assert!(matches!(
        m.generate(None, &[], &opts, &mut |_| {}),
        Err(RuntimeError::EmptyPrompt)
    ));
}

#[test]
fn multimodal_carries_the_state_from_image_tokens_into_the_text() {
    let m = multimodal();
    let lm = m.language();
    let img = checkerboard(64, 64);
    let prompt = [257u32, 72, 105];
    // All at once...
    let mut s1 = lm.new_state();
    let l1 = m
        .forward(Some(&img), &prompt, &mut s1, Logits::Last)
        .unwrap();
    // ...equals image tokens one by one, then the text one by one.
    let tokens = m.image_tokens(&img).unwrap();
    let d = lm.hidden_size();
    let mut s2 = lm.new_state();
    for t in tokens.chunks_exact(d) {
        lm.forward_embeddings(t.to_vec(), &mut s2, Logits::None)
            .unwrap();
    }
    let mut l2 = Vec::new();
    for &id in &prompt {
        l2 = lm.step(id, &mut s2).unwrap();
    }
    assert_eq!(s1, s2);
    assert_eq!(l1, l2);
    assert_eq!(
        s1.position(),
        m.config().vision_config.num_patches() + prompt.len()
    );
}

#[test]
fn multimodal_weights_must_match_the_config() {
    let c = MambaMultimodalConfig::sample_small();
    let mem = materialize(ModelConfig::MambaMultimodal(c.clone()), 3);
    let mut huge = c.clone();
    huge.vision_config.image_size = 8192;
    huge.vision_config.patch_size = 512;
    assert!(matches!(
        MultimodalModel::load(&Weights::new(&mem).unwrap(), &huge),
        Err(RuntimeError::TooLarge { .. })
    ));
    let mut other = c.clone();
    other.projector_hidden_size = 32;
    match MultimodalModel::load(&Weights::new(&mem).unwrap(), &other) {
        Err(RuntimeError::Shape { name, .. }) => assert_eq!(name, "projector.linear_1.weight"),
        r => panic!("{r:?}"),
    }
}

fn text_line(text_width: u32) -> DynamicImage {
    // Black bars on white, like glyphs.
    DynamicImage::ImageLuma8(GrayImage::from_fn(text_width, 20, |x, y| {
        let ink = (x / 3) % 3 == 0 && (4..16).contains(&y);
        image::Luma([if ink { 0 } else { 255 }])
    }))
}

#[test]
fn ocr_frames_and_logits_have_the_configured_shapes() {
    let m = ocr();
    let c = m.config();
    let img = text_line(100);
    // 100 x 20 -> height 32 keeps the aspect: 160 columns, 20 frames of 8.
    let frames = m.frames(&img);
    assert_eq!(frames.len(), 20 * c.patch_dim());
    let logits = m.logits(&frames).unwrap();
    assert_eq!(logits.len(), 20 * c.num_classes());
    let out = m.recognize(&img).unwrap();
    assert_eq!(out.frame_classes.len(), 20);
    assert_eq!(out.logits, logits);
    assert!(out.text.chars().count() <= 20);
    assert!(matches!(
        m.logits(&[0.0; 5]),
        Err(RuntimeError::InputShape { .. })
    ));

    // White pads the last frame: a 1-pixel-wide line is one frame, ink in column 0 only.
    let thin = DynamicImage::ImageLuma8(GrayImage::from_pixel(1, 32, image::Luma([0])));
    let f = m.frames(&thin);
    assert_eq!(f.len(), c.patch_dim());
    assert!((f[0] + 1.0).abs() < 1e-6 && (f[1] - 1.0).abs() < 1e-6);
}

#[test]
fn ocr_is_deterministic_and_reads_the_image() {
    let m = ocr();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("line.png");
    text_line(120).save(&path).unwrap();
    let img = load_image(&path).unwrap();
    let a = m.recognize(&img).unwrap();
    assert_eq!(a, m.recognize(&img).unwrap());
    let blank = DynamicImage::ImageLuma8(GrayImage::from_pixel(120, 20, image::Luma([255])));
    let b = m.recognize(&blank).unwrap();
    assert_eq!(a.logits.len(), b.logits.len());
    assert!(max_diff(&a.logits, &b.logits) > 1e-6);
}

#[test]
fn ocr_greedy_ctc_merges_repeats_and_drops_blanks() {
    let m = ocr();
    let c = m.config();
    let n = c.num_classes();
    let class = |ch| c.class_of(ch).unwrap();
    // Frames: blank, H, H, blank, i, i, blank, i, !  ->  "Hii!"
    let path = [
        0,
        class('H'),
        class('H'),
        0,
        class('i'),
        class('i'),
        0,
        class('i'),
        class('!'),
    ];
    let mut logits = vec![0.0f32; path.len() * n];
    for (t, &k) in path.iter().enumerate() {
        logits[t * n + k as usize] = 5.0;
    }
    let out = m.decode(logits);
    assert_eq!(out.frame_classes, path.to_vec());
    assert_eq!(out.text, "Hii!");
    assert_eq!(
        out.classes,
        vec![class('H'), class('i'), class('i'), class('!')]
    );
    assert_eq!(
        m.decode(vec![0.0; 3 * n]).text,
        "",
        "all-blank (ties go to the blank)"
    );
}
