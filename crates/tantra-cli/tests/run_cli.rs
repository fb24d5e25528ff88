//! `tantra run` driven as a user drives it: a Hugging Face directory written by transformers
//! (checked against transformers' logits and greedy output), and the three sample models
//! created in a temporary root.

// Test helpers unwrap: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{create_samples, fails_with, fixtures, ok, ok_json, tantra};
use serde_json::Value as J;

fn ids(j: &J) -> Vec<u64> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect()
}

/// A minimal RGB PNG (stored deflate blocks), so that the tests need no image encoder.
fn png(w: u32, h: u32, px: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in data {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0);
        for x in 0..w {
            raw.extend(px(x, y));
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        z.extend((b.len() as u16).to_le_bytes());
        z.extend((!(b.len() as u16)).to_le_bytes());
        z.extend_from_slice(b);
    }
    let (mut a, mut s) = (1u32, 0u32);
    for &b in &raw {
        a = (a + u32::from(b)) % 65_521;
        s = (s + a) % 65_521;
    }
    z.extend(((s << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn hf_directory_matches_transformers() {
    let root = tempfile::tempdir().unwrap();
    let reference: J = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("hf_mamba_tiny/reference.json")).unwrap(),
    )
    .unwrap();
    let input: Vec<String> = ids(&reference["input_ids"])
        .iter()
        .map(u64::to_string)
        .collect();
    let input = input.join(",");
    for form in ["safetensors", "pytorch"] {
        let dir = fixtures().join("hf_mamba_tiny").join(form);
        let out = tantra(
            root.path(),
            &[
                "run",
                "mamba",
                "--weights",
                dir.to_str().unwrap(),
                "--input-ids",
                &input,
                "--max-new-tokens",
                "8",
                "--json",
                "--dump-logits",
            ],
        );
        let j = ok_json(&out);
        assert_eq!(j["output_ids"], reference["greedy_ids"], "{form}");
        assert_eq!(j["input_ids"], reference["input_ids"]);
        assert!(j["text"].is_null(), "not a byte-level vocabulary: no text");
        let rows = j["prompt_logits"].as_array().unwrap();
        assert_eq!(rows.len(), 6);
        for (row, key) in [(&rows[0], "logits_first"), (&rows[5], "logits_last")] {
            let a = row.as_array().unwrap();
            let b = reference[key].as_array().unwrap();
            assert_eq!(a.len(), 64);
            for (x, y) in a.iter().zip(b) {
                let d = (x.as_f64().unwrap() - y.as_f64().unwrap()).abs();
                assert!(d <= 1e-4, "{form} {key}: {d}");
            }
        }
        assert!(j["decode_tokens_per_second"].as_f64().unwrap() > 0.0);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("prefill:") && err.contains("tokens/s"),
            "{err}"
        );
    }

    // Streaming output: ids of a non-byte vocabulary as numbers; the directory as MODEL.
    let dir = fixtures().join("hf_mamba_tiny/safetensors");
    let out = tantra(
        root.path(),
        &[
            "run",
            dir.to_str().unwrap(),
            "--input-ids",
            &input,
            "--max-new-tokens",
            "3",
        ],
    );
    assert_eq!(ok(&out).trim(), "44 44 44");

    // A text prompt needs the byte-level vocabulary.
    let out = tantra(
        root.path(),
        &[
            "run",
            "mamba",
            "--weights",
            dir.to_str().unwrap(),
            "--prompt",
            "hi",
        ],
    );
    fails_with(&out, "--input-ids");
    let out = tantra(
        root.path(),
        &["run", "mamba", "--weights", dir.to_str().unwrap()],
    );
    fails_with(&out, "--prompt");
}

#[test]
fn sample_models_run_from_the_root() {
    let root = tempfile::tempdir().unwrap();
    create_samples(
        root.path(),
        "mamba,mamba_multimodal,ocr_native",
        "safetensors,pt",
    );

    // Text: byte-level prompt with <bos>, greedy, same result from either format.
    let run_text = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "mamba",
            "--prompt",
            "hi",
            "--max-new-tokens",
            "5",
            "--json",
        ];
        args.extend_from_slice(extra);
        ok_json(&tantra(root.path(), &args))
    };
    let a = run_text(&[]);
    assert_eq!(ids(&a["input_ids"]), vec![257, 104, 105]);
    let out_ids = ids(&a["output_ids"]);
    assert!(out_ids.len() > 3 && out_ids.len() <= 8);
    assert!(a["text"].is_string());
    let b = run_text(&["--version", "sample_small", "--format", "pt"]);
    assert_eq!(
        a["output_ids"], b["output_ids"],
        "safetensors and pt differ"
    );
    // Sampling is seeded.
    let s1 = run_text(&[
        "--temperature",
        "1.0",
        "--top-k",
        "50",
        "--top-p",
        "0.9",
        "--seed",
        "4",
    ]);
    let s2 = run_text(&[
        "--temperature",
        "1.0",
        "--top-k",
        "50",
        "--top-p",
        "0.9",
        "--seed",
        "4",
    ]);
    assert_eq!(s1["output_ids"], s2["output_ids"]);

    // Multimodal: the image is read, resized, and changes the logits.
    let img1 = root.path().join("a.png");
    let img2 = root.path().join("b.png");
    std::fs::write(
        &img1,
        png(40, 30, |x, y| [(x * 6) as u8, (y * 8) as u8, 90]),
    )
    .unwrap();
    std::fs::write(&img2, png(40, 30, |x, _| [255 - (x * 6) as u8, 0, 0])).unwrap();
    let mm = |img: &Path| {
        ok_json(&tantra(
            root.path(),
            &[
                "run",
                "mamba_multimodal",
                "--image",
                img.to_str().unwrap(),
                "--prompt",
                "a",
                "--max-new-tokens",
                "4",
                "--json",
                "--dump-logits",
            ],
        ))
    };
    let (m1, m2, again) = (mm(&img1), mm(&img2), mm(&img1));
    assert!(m1["output_ids"] == again["output_ids"], "not deterministic");
    assert!(
        m1["prompt_logits"] == again["prompt_logits"],
        "not deterministic"
    );
    assert_eq!(m1["prompt_logits"].as_array().unwrap().len(), 2);
    assert!(
        m1["prompt_logits"] != m2["prompt_logits"],
        "the image had no effect"
    );

    // OCR: 64 x 32 pixels -> 8 frames of 8 columns at the sample's height of 32.
    let line = root.path().join("line.png");
    std::fs::write(
        &line,
        png(64, 32, |x, _| if x % 5 == 0 { [0; 3] } else { [255; 3] }),
    )
    .unwrap();
    let o = ok_json(&tantra(
        root.path(),
        &[
            "run",
            "ocr_native",
            "--image",
            line.to_str().unwrap(),
            "--json",
        ],
    ));
    assert_eq!(o["frame_classes"].as_array().unwrap().len(), 8);
    assert!(o["text"].as_str().unwrap().chars().count() <= 8);
    let plain = ok(&tantra(
        root.path(),
        &["run", "ocr_native", "--image", line.to_str().unwrap()],
    ));
    assert_eq!(plain.trim_end_matches('\n'), o["text"].as_str().unwrap());

    fails_with(
        &tantra(root.path(), &["run", "ocr_native", "--prompt", "x"]),
        "--image",
    );
    fails_with(
        &tantra(
            root.path(),
            &[
                "run",
                "mamba",
                "--prompt",
                "x",
                "--image",
                line.to_str().unwrap(),
            ],
        ),
        "--image",
    );
    let not_image = root.path().join("x.png");
    std::fs::write(&not_image, b"not an image").unwrap();
    fails_with(
        &tantra(
            root.path(),
            &["run", "ocr_native", "--image", not_image.to_str().unwrap()],
        ),
        "cannot decode",
    );
    fails_with(
        &tantra(
            root.path(),
            &["run", "mamba", "--version", "nope", "--prompt", "x"],
        ),
        "nope",
    );
}

/// `--dtype f32|bf16|q8` for all three models: each runs, says its dtype, and stays close to
/// f32 (the prompt logits of the multimodal model, the frame logits of OCR); a fourth name is
/// refused.
#[test]
fn every_model_runs_at_every_dtype() {
    let root = tempfile::tempdir().unwrap();
    create_samples(
        root.path(),
        "mamba,mamba_multimodal,ocr_native",
        "safetensors",
    );
    let img = root.path().join("img.png");
    std::fs::write(&img, png(64, 32, |x, y| [(x * 4) as u8, (y * 8) as u8, 90])).unwrap();
    let img = img.to_str().unwrap();
    let max_diff = |a: &J, b: &J| -> f64 {
        let flat = |v: &J| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
                .collect()
        };
        let (a, b) = (flat(a), flat(b));
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    };
    let run = |args: &[&str], dtype: &str| {
        let mut v = vec!["run"];
        v.extend_from_slice(args);
        v.extend_from_slice(&["--json", "--dtype", dtype, "--threads", "2"]);
        let j = ok_json(&tantra(root.path(), &v));
        assert_eq!(j["dtype"], dtype);
        j
    };
    let text = [
        "mamba",
        "--prompt",
        "hi",
        "--max-new-tokens",
        "6",
        "--dump-logits",
    ];
    let mm = [
        "mamba_multimodal",
        "--image",
        img,
        "--prompt",
        "a",
        "--max-new-tokens",
        "3",
        "--dump-logits",
    ];
    let ocr = ["ocr_native", "--image", img, "--dump-logits"];
    let (t32, m32, o32) = (run(&text, "f32"), run(&mm, "f32"), run(&ocr, "f32"));
    for dtype in ["bf16", "q8"] {
        let t = run(&text, dtype);
        let d = max_diff(&t["prompt_logits"], &t32["prompt_logits"]);
        assert!(d > 0.0 && d < 0.5, "mamba {dtype}: {d}");
        let m = run(&mm, dtype);
        let d = max_diff(&m["prompt_logits"], &m32["prompt_logits"]);
        assert!(d > 0.0 && d < 0.5, "mamba_multimodal {dtype}: {d}");
        let o = run(&ocr, dtype);
        let d = max_diff(&o["frame_logits"], &o32["frame_logits"]);
        assert!(d > 0.0 && d < 0.5, "ocr_native {dtype}: {d}");
        assert_eq!(o["frame_classes"].as_array().unwrap().len(), 8);
    }
    fails_with(
        &tantra(
            root.path(),
            &["run", "mamba", "--prompt", "hi", "--dtype", "f16"],
        ),
        "unknown dtype",
    );
}

/// `--ignore-eos` keeps generating past the end-of-text token: here the tiny model's config
/// names as end of text the token its greedy continuation repeats.
#[test]
fn ignore_eos_generates_every_token_asked_for() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tiny");
    std::fs::create_dir(&dir).unwrap();
    let src = fixtures().join("hf_mamba_tiny").join("safetensors");
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let mut config: J =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["eos_token_id"] = J::from(44);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "run",
            "mamba",
            "--weights",
            dir.to_str().unwrap(),
            "--input-ids",
            "1,5,9,12,3,44",
            "--max-new-tokens",
            "8",
            "--json",
        ];
        args.extend_from_slice(extra);
        ids(&ok_json(&tantra(root.path(), &args))["output_ids"])
    };
    let stopped = run(&[]);
    let all = run(&["--ignore-eos"]);
    assert_eq!(stopped, vec![1, 5, 9, 12, 3, 44, 44]);
    assert_eq!(all.len(), 6 + 8);
    assert!(all[6..].iter().all(|&t| t == 44), "{all:?}");
}
