//! The PyTorch reader against the fixtures: names, dtypes, shapes and sha256 digests from
//! `fixtures/expected.json` (computed by torch), values of checkpoints, and refusal of the
//! malicious files.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};

use tantra_formats::pickle::{PickleError, Verdict};
use tantra_formats::pytorch::{scan_file, PytorchError, PytorchFile};
use tantra_formats::{tensor_digest, ErrorKind, Format, TensorSource, Value};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"))
}

fn expected() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn find(file: &str) -> PathBuf {
    for dir in ["torch", "malicious"] {
        let p = fixtures().join(dir).join(file);
        if p.exists() {
            return p;
        }
    }
    panic!("fixture {file} not found");
}

fn check_against(path: &Path, entry: &serde_json::Value) {
    let f = PytorchFile::open(path).unwrap_or_else(|e| panic!("{e}"));
    let want = entry["tensors"].as_array().unwrap();
    let mut got: Vec<(String, String, Vec<u64>, String)> = f
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                t.name.clone(),
                t.dtype.to_string(),
                t.shape.clone(),
                tensor_digest(&f, i).unwrap(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String, Vec<u64>, String)> = want
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["dtype"].as_str().unwrap().to_string(),
                t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap())
                    .collect(),
                t["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want, "{}", path.display());
    // tensor_bytes agrees with the streamed digest.
    for i in 0..f.tensors().len() {
        let b = f.tensor_bytes(i).unwrap();
        assert_eq!(
            tantra_formats::digest::sha256_hex(&b),
            tensor_digest(&f, i).unwrap()
        );
        assert_eq!(Some(b.len() as u64), f.tensors()[i].byte_len());
    }
    if let Some(scalars) = entry.get("scalars").and_then(|s| s.as_object()) {
        for (k, v) in scalars {
            let got = f
                .values()
                .get(k)
                .unwrap_or_else(|| panic!("value {k} missing"));
            assert_eq!(Value::from_json(v).as_ref(), Some(got), "value {k}");
        }
    }
}

#[test]
fn fixtures_match_expected() {
    let mut checked = 0;
    for entry in expected() {
        let file = entry["file"].as_str().unwrap();
        if file.ends_with(".safetensors") {
            continue;
        }
        let path = find(file);
        if entry.get("refuse").and_then(|r| r.as_bool()) == Some(true) {
            continue;
        }
        check_against(&path, &entry);
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} fixtures checked");
}

#[test]
fn formats_are_reported() {
    let f = PytorchFile::open(&find("all_dtypes.pt")).unwrap();
    assert_eq!(f.format(), Format::PytorchZip);
    let f = PytorchFile::open(&find("all_dtypes_legacy.pt")).unwrap();
    assert_eq!(f.format(), Format::PytorchLegacy);
    let f = tantra_formats::open(&find("views_legacy.pt")).unwrap();
    assert_eq!(f.format(), Format::PytorchLegacy);
}

#[test]
fn checkpoint_values_are_flattened() {
    let f = PytorchFile::open(&find("checkpoint.pt")).unwrap();
    let v = f.values();
    assert_eq!(v.get("epoch"), Some(&Value::Int(3)));
    assert_eq!(v.get("name"), Some(&Value::Str("tiny-linear".into())));
    assert_eq!(
        v.get("optimizer.param_groups.0.lr"),
        Some(&Value::Float(0.001))
    );
    assert_eq!(
        v.get("optimizer.param_groups.0.betas.1"),
        Some(&Value::Float(0.999))
    );
    assert_eq!(
        v.get("optimizer.param_groups.0.foreach"),
        Some(&Value::None)
    );
    assert_eq!(
        v.get("optimizer.param_groups.0.params.1"),
        Some(&Value::Int(1))
    );
    assert_eq!(v.get("lr_history.1"), Some(&Value::Float(0.0005)));
    // The state dict's `_metadata` (BUILD state) is not data.
    assert!(v.keys().all(|k| !k.contains("_metadata")));
}

#[test]
fn hf_mamba_with_tied_weights_reads() {
    let path = fixtures().join("hf_mamba_tiny/pytorch/pytorch_model.bin");
    let f = PytorchFile::open(&path).unwrap();
    let emb = f.find("backbone.embeddings.weight").unwrap();
    let head = f.find("lm_head.weight").unwrap();
    assert_eq!(f.tensors()[emb].shape, f.tensors()[head].shape);
    assert_eq!(
        tensor_digest(&f, emb).unwrap(),
        tensor_digest(&f, head).unwrap()
    );
}

#[test]
fn views_are_materialized() {
    for file in ["views.pt", "views_legacy.pt"] {
        let f = PytorchFile::open(&find(file)).unwrap();
        let t = f.find("transposed").unwrap();
        assert!(matches!(
            f.tensor_bytes(t).unwrap(),
            std::borrow::Cow::Owned(_)
        ));
        let b = f.find("big").unwrap();
        assert!(matches!(
            f.tensor_bytes(b).unwrap(),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

fn refusal_text(path: &Path) -> String {
    match PytorchFile::open(path) {
        Ok(_) => panic!("{} was not refused", path.display()),
        Err(e) => {
            assert!(e.is_refusal());
            e.to_string()
        }
    }
}

#[test]
fn malicious_fixtures_are_refused_naming_the_global() {
    let msg = refusal_text(&find("zip_os_system.pt"));
    assert!(msg.contains("posix.system"), "{msg}");
    let e = PytorchFile::open(&find("zip_os_system.pt")).err().unwrap();
    assert!(matches!(
        e.kind,
        ErrorKind::Pytorch(PytorchError::Pickle { .. })
    ));
    // Bare pickles are not PyTorch files at all.
    for f in ["os_system.pkl", "builtins_eval.pkl"] {
        refusal_text(&find(f));
    }
}

#[test]
fn malicious_fixtures_scan_unsafe() {
    for (file, global) in [
        ("os_system.pkl", "posix.system"),
        ("builtins_eval.pkl", "__builtin__.eval"),
        ("zip_os_system.pt", "posix.system"),
    ] {
        let r = scan_file(&find(file)).unwrap();
        assert!(
            r.globals.iter().any(|g| g == global),
            "{file}: {:?}",
            r.globals
        );
        match &r.verdict {
            Verdict::Unsafe(reasons) => {
                assert!(reasons.iter().any(|x| x.contains(global)), "{reasons:?}")
            }
            v => panic!("{file}: {v:?}"),
        }
    }
}

#[test]
fn good_fixtures_scan_safe() {
    for file in [
        "all_dtypes.pt",
        "all_dtypes_legacy.pt",
        "views.pt",
        "views_legacy.pt",
        "checkpoint.pt",
        "plain_dict.bin",
    ] {
        let r = scan_file(&find(file)).unwrap();
        assert_eq!(r.verdict, Verdict::Safe, "{file}");
        assert!(r
            .globals
            .iter()
            .any(|g| g == "torch._utils._rebuild_tensor_v2"));
        assert!(r.opcodes.get("BINPERSID").copied().unwrap_or(0) > 0);
    }
    let r = scan_file(&fixtures().join("torch/all_dtypes.safetensors")).unwrap();
    assert!(r.is_safe());
}

/// Every part of every tensor, streamed as a range, is the same bytes as the part cut out of
/// the whole tensor: for storages read in place, views materialized, both archive kinds, and
/// for safetensors files; a range past the end is an error naming the tensor.
#[test]
fn ranges_of_tensors_are_the_bytes_of_the_whole() {
    let files = [
        "torch/all_dtypes.pt",
        "torch/all_dtypes_legacy.pt",
        "torch/views.pt",
        "torch/views_legacy.pt",
        "torch/checkpoint.pt",
        "torch/all_dtypes.safetensors",
    ];
    let mut checked = 0;
    for file in files {
        let path = fixtures().join(file);
        let f = tantra_formats::open(&path).unwrap();
        for (i, t) in f.tensors().iter().enumerate() {
            let whole = f.tensor_bytes(i).unwrap().into_owned();
            let n = whole.len() as u64;
            let cuts = [
                (0, n),
                (0, 0),
                (n, n),
                (n / 3, n),
                (1.min(n), n / 2 + 1.min(n)),
            ];
            for (s, e) in cuts {
                let mut got = Vec::new();
                f.stream_tensor_range(i, s..e, &mut |c| {
                    got.extend_from_slice(c);
                    Ok(())
                })
                .unwrap();
                assert_eq!(
                    got,
                    &whole[s as usize..e as usize],
                    "{file} {} {s}..{e}",
                    t.name
                );
                checked += 1;
            }
            let err = f
                .stream_tensor_range(i, 0..n + 1, &mut |_| Ok(()))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&t.name) && err.contains(file.rsplit('/').next().unwrap()),
                "{err}"
            );
        }
    }
    assert!(checked > 100, "{checked}");
}

#[test]
fn quantized_sparse_and_meta_tensors_are_unsupported_not_unsafe() {
    // Written by torch 2.15 (`torch.save({'q': quantize_per_tensor(...)})`, `.to_sparse()`,
    // `device='meta'`); torch.load(weights_only=True) loads all three.
    for (file, kind) in [
        ("quantized.pt", "quantized"),
        ("sparse.pt", "sparse"),
        ("meta.pt", "meta"),
    ] {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/unsupported"
        ))
        .join(file);
        let e = PytorchFile::open(&path).err().unwrap();
        match e.kind {
            ErrorKind::Pytorch(PytorchError::Pickle {
                error: PickleError::UnsupportedTensorKind { kind: k, .. },
                ..
            }) => assert_eq!(k, kind),
            other => panic!("{file}: {other:?}"),
        }
        assert!(e
            .to_string()
            .contains(&format!("unsupported tensor kind ({kind})")));
        let r = scan_file(&path).unwrap();
        assert_eq!(
            r.verdict,
            Verdict::Unsupported(vec![format!("unsupported tensor kind ({kind})")]),
            "{file}"
        );
        assert_eq!(r.verdict.name(), "unsupported");
    }
}

#[test]
fn torchs_float4_e2m1fn_x2_reads_as_f4() {
    // torch.save({'f': uint8 [[0x12, 0x34, 0x56], [0x78, 0x9a, 0xbc]] viewed as
    // float4_e2m1fn_x2}) by torch 2.15: torch shape [2, 3], two values per byte, which
    // safetensors.torch saves as F4 [2, 6].
    let f = PytorchFile::open(&fixtures().join("torch/float4_e2m1fn_x2.pt")).unwrap();
    assert_eq!(f.tensors()[0].dtype, tantra_formats::DType::F4);
    assert_eq!(f.tensors()[0].shape, vec![2, 6]);
    assert_eq!(
        f.tensor_bytes(0).unwrap().as_ref(),
        &[0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc]
    );
    assert_eq!(
        scan_file(&fixtures().join("torch/float4_e2m1fn_x2.pt"))
            .unwrap()
            .verdict,
        Verdict::Safe
    );
}
