//! Mistakes are refused, not guessed: misspelled config keys (with a suggestion), values of
//! the wrong type, config changes the registered weights no longer fit, prune metrics no
//! checkpoint carries; registering the same weights under a second name warns.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::{create_samples, fails_with, ok, ok_json, s, stderr, tantra};

fn config(root: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(root.join("configs/mamba/sample_small.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn config_edits_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    create_samples(&root, "mamba", "safetensors");
    let before = config(&root);
    let set = |args: &[&str]| {
        let mut a = vec!["config", "set", "mamba", "sample_small"];
        a.extend_from_slice(args);
        tantra(&root, &a)
    };
    fails_with(
        &set(&["hidden_sise", "10"]),
        "did you mean \"hidden_size\"?",
    );
    fails_with(&set(&["zzz", "1"]), "its fields: vocab_size, hidden_size");
    fails_with(&set(&["hidden_size", "abc"]), "the config is invalid");
    // A change the weights no longer fit: refused, then forced.
    fails_with(
        &set(&["num_hidden_layers", "3"]),
        "the weights of mamba:sample_small no longer fit the config",
    );
    assert_eq!(config(&root), before, "nothing written");
    ok(&set(&["num_hidden_layers", "3", "--force"]));
    assert_eq!(config(&root)["num_hidden_layers"], 3);
    ok(&set(&["num_hidden_layers", "4"]));
    // A change that keeps the tensors is fine.
    ok(&set(&["layer_norm_epsilon", "0.0001"]));
    assert_eq!(config(&root)["layer_norm_epsilon"], 0.0001);
    let unset = |field: &str| tantra(&root, &["config", "unset", "mamba", "sample_small", field]);
    fails_with(&unset("hidden_size"), "hidden_size");
    fails_with(&unset("nope"), "\"nope\" is not a field of mamba configs");
    fails_with(&unset("hidden_sise"), "did you mean \"hidden_size\"?");
    ok(&unset("architectures"));
    assert!(config(&root).get("architectures").is_none());
    // The weights still load and run.
    ok(&tantra(
        &root,
        &["run", "mamba", "hi", "--max-new-tokens", "2"],
    ));
}

/// Nested fields are checked at every level: a misspelled key inside `vision_config` or
/// `mamba` gets a suggestion with its full path, a value of the wrong kind names the field and
/// the kind it takes, a range is checked, and a leaf cannot hold fields.
#[test]
fn nested_config_edits_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    create_samples(&root, "mamba_multimodal,ocr_native", "safetensors");
    let path = root.join("configs/mamba_multimodal/sample_small.json");
    let read = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    };
    let before = read();
    let set = |model: &str, args: &[&str]| {
        let mut a = vec!["config", "set", model, "sample_small"];
        a.extend_from_slice(args);
        tantra(&root, &a)
    };
    let mm = |args: &[&str]| set("mamba_multimodal", args);
    fails_with(
        &mm(&["vision_config.patch_sise", "4"]),
        "did you mean \"vision_config.patch_size\"?",
    );
    fails_with(
        &mm(&["text_config.state_sise", "4"]),
        "did you mean \"text_config.state_size\"?",
    );
    let e = stderr(&mm(&["vision_config.zzz", "4"]));
    assert!(e.contains("its fields: vision_config.image_size, "), "{e}");
    fails_with(
        &mm(&["vision_confg.patch_size", "4"]),
        "did you mean \"vision_config\"?",
    );
    fails_with(
        &mm(&["vision_config.patch_size.x", "4"]),
        "vision_config.patch_size is a number, not a group of fields",
    );
    fails_with(
        &mm(&["vision_config.patch_size", "big"]),
        "vision_config.patch_size takes a number (like ",
    );
    fails_with(
        &mm(&["text_config.use_bias", "3"]),
        "text_config.use_bias takes a boolean (like false), not the number 3",
    );
    // In range of the type but not of the architecture: patch_size must divide image_size.
    fails_with(
        &mm(&["vision_config.patch_size", "0"]),
        "the config is invalid",
    );
    assert_eq!(read(), before, "nothing written");
    // A nested change the weights still fit is written.
    ok(&mm(&["vision_config.initializer_range", "0.01"]));
    assert_eq!(read()["vision_config"]["initializer_range"], 0.01);
    // ocr_native keeps its Mamba stack under `mamba`.
    fails_with(
        &set("ocr_native", &["mamba.expnd", "3"]),
        "did you mean \"mamba.expand\"?",
    );
    // unset is checked the same way, at every level.
    let unset = |field: &str| {
        tantra(
            &root,
            &["config", "unset", "mamba_multimodal", "sample_small", field],
        )
    };
    fails_with(
        &unset("vision_config.image_mian"),
        "did you mean \"vision_config.image_mean\"?",
    );
    fails_with(&unset("vision_config.image_size"), "the config is invalid");
    ok(&unset("vision_config.initializer_range"));
    assert!(read()["vision_config"].get("initializer_range").is_none());
    // A field of the schema the config does not set: nothing to remove.
    fails_with(
        &unset("vision_config.initializer_range"),
        "does not set it (its default applies)",
    );
}

#[test]
fn prune_by_an_unknown_metric_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let mut m = tantra_formats::MemorySource::new();
    m.push_f32("w", vec![2], &[1.0, 2.0]).unwrap();
    let f = common::write_weights(
        &m,
        dir.path().join("c.safetensors"),
        tantra_formats::OutputFormat::Safetensors,
    );
    for (step, loss) in [("1", "loss=0.5"), ("2", "loss=0.4")] {
        ok(&tantra(
            &root,
            &[
                "checkpoint",
                "save",
                "mamba",
                s(&f),
                "--step",
                step,
                "--metric",
                loss,
                "--metric",
                "acc=0.9",
            ],
        ));
    }
    let out = tantra(
        &root,
        &[
            "checkpoint",
            "prune",
            "mamba",
            "--keep-best",
            "1",
            "--metric",
            "los",
            "--dry-run",
        ],
    );
    fails_with(
        &out,
        "no checkpoint of mamba carries it (metrics present: acc, loss)",
    );
    let plan = ok_json(&tantra(
        &root,
        &[
            "checkpoint",
            "prune",
            "mamba",
            "--keep-best",
            "1",
            "--metric",
            "loss",
            "--dry-run",
            "--json",
        ],
    ));
    assert_eq!(plan.as_array().unwrap().len(), 1);
}

#[test]
fn registering_the_same_weights_twice_warns() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Model");
    let mut m = tantra_formats::MemorySource::new();
    m.push_f32("w", vec![2], &[1.0, 2.0]).unwrap();
    let f = common::write_weights(
        &m,
        dir.path().join("a.pt"),
        tantra_formats::OutputFormat::Pt,
    );
    ok(&tantra(&root, &["register", s(&f), "tiny:v1"]));
    let again = tantra(&root, &["register", s(&f), "tiny:v9", "--json"]);
    let rep: serde_json::Value = serde_json::from_str(&ok(&again)).unwrap();
    assert_eq!(rep["duplicates"], serde_json::json!(["tiny:v1"]));
    let err = stderr(&again);
    assert!(err.contains("tiny:v9 duplicates tiny:v1"), "{err}");
    assert!(err.contains("stored once"), "{err}");
    // The same weights in another format are still the same weights.
    let st = common::write_weights(
        &m,
        dir.path().join("a.safetensors"),
        tantra_formats::OutputFormat::Safetensors,
    );
    let other = tantra(&root, &["register", s(&st), "other:x"]);
    ok(&other);
    assert!(
        stderr(&other).contains("duplicates tiny:v1, tiny:v9"),
        "{}",
        stderr(&other)
    );
}
