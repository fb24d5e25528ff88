//! `tantra remote/push/pull/ls --remote` against a real three-node Garage cluster on loopback.
//!
//! `scripts/test-all` starts the cluster (`scripts/garage-cluster`) and exports its endpoint,
//! bucket and key; without them these tests say loudly that they skip, and fail when
//! `TANTRA_REQUIRE_GARAGE=1`. Each test works under its own prefix of the bucket.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as J;
use tantra_formats::{open, write_to, MemorySource, NoProgress, OutputFormat};

/// The cluster the environment names, if any.
struct Garage {
    endpoint: String,
    bucket: String,
    dir: Option<PathBuf>,
}

fn garage() -> Option<Garage> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("TANTRA_S3_ENDPOINT"),
        get("TANTRA_S3_BUCKET"),
        get("AWS_ACCESS_KEY_ID"),
    ) {
        (Some(endpoint), Some(bucket), Some(_)) => Some(Garage {
            endpoint,
            bucket,
            dir: get("TANTRA_GARAGE_DIR").map(PathBuf::from),
        }),
        _ => {
            if get("TANTRA_REQUIRE_GARAGE").as_deref() == Some("1") {
                panic!("TANTRA_REQUIRE_GARAGE=1 but TANTRA_S3_ENDPOINT / TANTRA_S3_BUCKET / AWS_ACCESS_KEY_ID are not set: start the cluster with scripts/garage-cluster");
            }
            eprintln!("\n!!! SKIPPED: no Garage cluster (TANTRA_S3_ENDPOINT unset); run `bash scripts/test-all` to run the remote tests !!!\n");
            None
        }
    }
}

/// A prefix no other test (or run) uses.
fn unique(name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{t}", std::process::id())
}

/// A root with the mamba sample weights in every format and remote `r` at `prefix`.
fn root_with_remote(g: &Garage, prefix: &str, dir: &Path, weights: bool) -> PathBuf {
    let root = dir.to_path_buf();
    if weights {
        create_samples(&root, "mamba", "all");
    }
    ok(&tantra(
        &root,
        &[
            "remote",
            "add",
            "r",
            &format!("s3://{}/{prefix}", g.bucket),
            "--endpoint",
            &g.endpoint,
            "--region",
            "garage",
        ],
    ));
    root
}

fn registry(root: &Path) -> J {
    serde_json::from_slice(&std::fs::read(root.join("weight_config.json")).unwrap()).unwrap()
}

/// The registry entries that must agree between two roots: per format sha256, bytes, path,
/// and the version's content, tensors, tags, note.
fn entries(root: &Path, model: &str, version: &str) -> J {
    let v = &registry(root)["models"][model]["versions"][version];
    let mut formats = serde_json::Map::new();
    for (f, r) in v["formats"].as_object().unwrap() {
        formats.insert(
            f.clone(),
            serde_json::json!({"sha256": r["sha256"], "bytes": r["bytes"], "path": r["path"]}),
        );
    }
    serde_json::json!({
        "content": v["content"], "parameters": v["parameters"], "tensors": v["tensors"],
        "tags": v["tags"], "note": v["note"], "formats": formats,
    })
}

fn assert_same_files(a: &Path, b: &Path, model: &str, version: &str) {
    let reg = registry(a);
    let formats = reg["models"][model]["versions"][version]["formats"]
        .as_object()
        .unwrap()
        .clone();
    assert!(!formats.is_empty());
    for (_, r) in formats {
        let rel = r["path"].as_str().unwrap();
        let x = std::fs::read(a.join(rel)).unwrap();
        let y = std::fs::read(b.join(rel)).unwrap();
        assert!(x == y, "{rel} differs between the roots");
    }
}

/// Writes a copy of `src` with its `count` largest tensors (of distinct values) altered, as
/// safetensors; returns the altered bytes.
fn changed_copy(src: &Path, out: &Path, count: usize) -> u64 {
    let s = open(src).unwrap();
    let mut by_size: Vec<usize> = (0..s.tensors().len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(s.tensors()[i].byte_len().unwrap()));
    let mut changed = Vec::new();
    let mut seen = Vec::new();
    for i in by_size {
        let b = s.tensor_bytes(i).unwrap().into_owned();
        if !seen.contains(&b) {
            seen.push(b);
            changed.push(i);
        }
        if changed.len() == count {
            break;
        }
    }
    let mut m = MemorySource::new();
    let mut changed_bytes = 0;
    for (i, t) in s.tensors().iter().enumerate() {
        let mut b = s.tensor_bytes(i).unwrap().into_owned();
        if changed.contains(&i) {
            for x in b.iter_mut() {
                *x ^= 0x01;
            }
            changed_bytes += b.len() as u64;
        }
        m.push(t.clone(), b).unwrap();
    }
    let mut f = std::fs::File::create(out).unwrap();
    write_to(&mut f, OutputFormat::Safetensors, &m, "x", &NoProgress).unwrap();
    changed_bytes
}

#[test]
fn push_pull_round_trip_with_dedup() {
    let Some(g) = garage() else { return };
    let prefix = unique("roundtrip");
    let tmp = tempfile::tempdir().unwrap();
    let a = root_with_remote(&g, &prefix, &tmp.path().join("a"), true);
    let b = root_with_remote(&g, &prefix, &tmp.path().join("b"), false);
    ok(&tantra(&a, &["tag", "mamba", "sample_small", "gold"]));

    // First push of one format: everything referenced is sent.
    let r = ok_json(&tantra(
        &a,
        &[
            "push",
            "mamba:sample_small",
            "--formats",
            "safetensors",
            "--json",
        ],
    ));
    assert_eq!(r["formats_pushed"], serde_json::json!(["safetensors"]));
    assert_eq!(r["version_written"], true);
    let referenced = r["bytes_referenced"].as_u64().unwrap();
    assert!(referenced > 2_000_000, "{r}");
    assert_eq!(r["bytes_uploaded"].as_u64().unwrap(), referenced);
    assert_eq!(r["whole_files"], serde_json::json!([]));

    // The other formats of the same weights: only manifests.
    let r = ok_json(&tantra(&a, &["push", "mamba:sample_small", "--json"]));
    assert_eq!(r["formats_present"], serde_json::json!(["safetensors"]));
    assert_eq!(r["formats_pushed"], serde_json::json!(["bin", "pt"]));
    assert_eq!(
        r["whole_files"],
        serde_json::json!([]),
        "tantra's own files rebuild exactly"
    );
    assert_eq!(r["bytes_uploaded"].as_u64().unwrap(), 0, "{r}");
    assert_eq!(r["version_written"], false);
    assert!(r["manifest_bytes"].as_u64().unwrap() < r["file_bytes"].as_u64().unwrap() / 50);

    // A copy with two tensors changed: only those two are sent.
    let st = a.join("weights/mamba_sample_small_safetensors.safetensors");
    let ft = tmp.path().join("ft.safetensors");
    let changed = changed_copy(&st, &ft, 2);
    ok(&tantra(
        &a,
        &[
            "register",
            ft.to_str().unwrap(),
            "--model",
            "mamba",
            "--version",
            "ft",
        ],
    ));
    let r = ok_json(&tantra(&a, &["push", "mamba:ft", "--json"]));
    assert_eq!(r["bytes_uploaded"].as_u64().unwrap(), changed, "{r}");
    assert_eq!(r["blobs_uploaded"], 2);

    // Pushing again sends nothing.
    let r = ok_json(&tantra(&a, &["push", "mamba:sample_small", "--json"]));
    assert_eq!(r["bytes_uploaded"], 0);
    assert_eq!(r["formats_pushed"], serde_json::json!([]));

    // The remote's listing, seen from the empty root.
    let ls = ok_json(&tantra(&b, &["ls", "--remote", "r", "--json"]));
    let rows = ls.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1]["version"], "sample_small");
    assert_eq!(rows[1]["formats"].as_object().unwrap().len(), 3);
    assert_eq!(rows[1]["local_formats"], serde_json::json!([]));

    // Pull into the other root: identical files, the same registry entries.
    let r = ok_json(&tantra(&b, &["pull", "mamba:sample_small", "--json"]));
    assert_eq!(
        r["formats_pulled"],
        serde_json::json!(["bin", "pt", "safetensors"])
    );
    assert_eq!(r["bytes_downloaded"].as_u64().unwrap(), referenced);
    assert_same_files(&a, &b, "mamba", "sample_small");
    assert_eq!(
        entries(&a, "mamba", "sample_small"),
        entries(&b, "mamba", "sample_small")
    );
    assert!(!b.join("remote-cache").exists(), "the cache is emptied");
    ok(&tantra(&b, &["verify"]));
    // Lineage: where this root got each file, and where the pushing root had it from.
    let fb = &registry(&b)["models"]["mamba"]["versions"]["sample_small"]["formats"];
    let fa = &registry(&a)["models"]["mamba"]["versions"]["sample_small"]["formats"];
    for f in ["bin", "pt", "safetensors"] {
        let from = fb[f]["source"]["from"].as_str().unwrap();
        assert_eq!(fb[f]["source"]["kind"], "imported", "{f}");
        assert!(
            from.starts_with(&format!(
                "remote r (s3://{}/{prefix}/versions/mamba/sample_small); there: ",
                g.bucket
            )),
            "{f}: {from}"
        );
        let kind = fa[f]["source"]["kind"].as_str().unwrap();
        assert!(
            from.contains(&format!("there: {kind}")),
            "{f}: {from} vs {kind}"
        );
    }
    let ls = ok_json(&tantra(&b, &["ls", "--remote", "r", "--json"]));
    assert_eq!(
        ls[1]["local_formats"],
        serde_json::json!(["bin", "pt", "safetensors"])
    );
    // Pulling again: nothing to do.
    let r = ok_json(&tantra(&b, &["pull", "mamba:sample_small", "--json"]));
    assert_eq!(r["formats_pulled"], serde_json::json!([]));
    // A fine-tune: only the changed tensors come over the network.
    let r = ok_json(&tantra(&b, &["pull", "mamba:ft", "--json"]));
    assert_eq!(r["bytes_downloaded"].as_u64().unwrap(), changed, "{r}");
    assert_eq!(r["blobs_downloaded"], 2);
    assert!(r["blobs_local"].as_u64().unwrap() > 10);
    assert_same_files(&a, &b, "mamba", "ft");
}

#[test]
fn a_file_torch_wrote_comes_back_identical() {
    let Some(g) = garage() else { return };
    let prefix = unique("torchfile");
    let tmp = tempfile::tempdir().unwrap();
    let a = root_with_remote(&g, &prefix, &tmp.path().join("a"), false);
    let b = root_with_remote(&g, &prefix, &tmp.path().join("b"), false);
    let src = fixtures().join("torch/nested_checkpoint.pt");
    ok(&tantra(
        &a,
        &[
            "register",
            src.to_str().unwrap(),
            "--model",
            "ckpt",
            "--version",
            "v1",
        ],
    ));
    let r = ok_json(&tantra(&a, &["push", "ckpt:v1", "--json"]));
    assert_eq!(r["formats_pushed"], serde_json::json!(["pt"]));
    let whole = r["whole_files"].as_array().unwrap().len();
    let r2 = ok_json(&tantra(&b, &["pull", "ckpt:v1", "--json"]));
    assert_eq!(r2["whole_files"].as_array().unwrap().len(), whole);
    assert_eq!(
        std::fs::read(b.join("weights/ckpt_v1_pt.pt")).unwrap(),
        std::fs::read(&src).unwrap()
    );
    assert_eq!(entries(&a, "ckpt", "v1"), entries(&b, "ckpt", "v1"));
}

#[test]
fn an_interrupted_push_and_pull_resume() {
    let Some(g) = garage() else { return };
    let prefix = unique("resume");
    let tmp = tempfile::tempdir().unwrap();
    let a = root_with_remote(&g, &prefix, &tmp.path().join("a"), true);
    let b = root_with_remote(&g, &prefix, &tmp.path().join("b"), false);
    // Killed after 5 blobs.
    let out = bin()
        .args([
            "--root",
            a.to_str().unwrap(),
            "push",
            "mamba:sample_small",
            "--json",
        ])
        .env("TANTRA_REMOTE_ABORT_AFTER", "5")
        .env("TANTRA_REMOTE_JOBS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the push was not interrupted");
    let ls = ok_json(&tantra(&b, &["ls", "--remote", "r", "--json"]));
    assert_eq!(
        ls,
        serde_json::json!([]),
        "no manifest before the blobs are complete"
    );
    let r = ok_json(&tantra(&a, &["push", "mamba:sample_small", "--json"]));
    let sent = r["blobs_uploaded"].as_u64().unwrap();
    let referenced = r["blobs_referenced"].as_u64().unwrap();
    assert_eq!(
        sent,
        referenced - 5,
        "the 5 blobs sent before the kill are not sent again"
    );

    let out = bin()
        .args(["--root", b.to_str().unwrap(), "pull", "mamba:sample_small"])
        .env("TANTRA_REMOTE_ABORT_AFTER", "7")
        .env("TANTRA_REMOTE_JOBS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the pull was not interrupted");
    assert!(!b.join("weight_config.json").exists(), "nothing registered");
    // Cache blobs are not synced: one torn by a crash is found by its hash on resume, deleted
    // and downloaded again.
    let cache = b.join("remote-cache");
    let mut blobs: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().len() == 64)
        .collect();
    blobs.sort();
    assert_eq!(blobs.len(), 7);
    let mut torn = std::fs::read(&blobs[0]).unwrap();
    torn[0] ^= 0x55;
    std::fs::write(&blobs[0], torn).unwrap();
    let r = ok_json(&tantra(&b, &["pull", "mamba:sample_small", "--json"]));
    assert_eq!(r["blobs_resumed"], 6);
    assert_eq!(r["blobs_downloaded"].as_u64().unwrap(), referenced - 6);
    assert_same_files(&a, &b, "mamba", "sample_small");
}

#[test]
fn gc_removes_only_unreferenced_blobs_after_the_grace_period() {
    let Some(g) = garage() else { return };
    let prefix = unique("gc");
    let tmp = tempfile::tempdir().unwrap();
    let a = root_with_remote(&g, &prefix, &tmp.path().join("a"), true);
    // An interrupted push leaves blobs that no manifest names.
    let out = bin()
        .args(["--root", a.to_str().unwrap(), "push", "mamba:sample_small"])
        .env("TANTRA_REMOTE_ABORT_AFTER", "4")
        .env("TANTRA_REMOTE_JOBS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let first = ok_json(&tantra(&a, &["remote", "gc", "--grace", "1s", "--json"]));
    assert_eq!(first["blobs"], 4);
    assert_eq!(first["blobs_referenced"], 0);
    assert_eq!(
        first["removed"],
        serde_json::json!([]),
        "first run only marks"
    );
    assert_eq!(first["pending"], 4);
    std::thread::sleep(Duration::from_millis(1500));
    let dry = ok_json(&tantra(
        &a,
        &["remote", "gc", "--grace", "1s", "--dry-run", "--json"],
    ));
    assert_eq!(dry["removed"].as_array().unwrap().len(), 4);
    let second = ok_json(&tantra(&a, &["remote", "gc", "--grace", "1s", "--json"]));
    assert_eq!(second["removed"].as_array().unwrap().len(), 4);
    let third = ok_json(&tantra(&a, &["remote", "gc", "--grace", "1s", "--json"]));
    assert_eq!(third["blobs"], 0);
    // A complete push: its blobs are referenced and stay.
    ok(&tantra(&a, &["push", "mamba:sample_small"]));
    let r = ok_json(&tantra(&a, &["remote", "gc", "--grace", "0s", "--json"]));
    assert_eq!(r["removed"], serde_json::json!([]));
    assert_eq!(r["blobs"], r["blobs_referenced"]);
    assert!(r["blobs"].as_u64().unwrap() > 10);
}

#[test]
fn errors_name_the_remote_the_key_and_what_to_do() {
    let Some(g) = garage() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let a = root_with_remote(&g, &unique("errors"), &tmp.path().join("a"), true);
    // Bad credentials.
    let out = bin()
        .args(["--root", a.to_str().unwrap(), "push", "mamba:sample_small"])
        .env(
            "AWS_SECRET_ACCESS_KEY",
            "0000000000000000000000000000000000000000000000000000000000000000",
        )
        .output()
        .unwrap();
    fails_with(&out, "remote \"r\"");
    fails_with(&out, "check the credentials");
    // A bucket that does not exist.
    ok(&tantra(
        &a,
        &[
            "remote",
            "add",
            "nob",
            "s3://no-such-bucket-x",
            "--endpoint",
            &g.endpoint,
            "--region",
            "garage",
        ],
    ));
    let out = tantra(&a, &["push", "mamba:sample_small", "--remote", "nob"]);
    fails_with(&out, "s3://no-such-bucket-x");
    fails_with(&out, "bucket");
    // An endpoint nobody listens on.
    ok(&tantra(
        &a,
        &[
            "remote",
            "add",
            "down",
            "s3://tantra-test",
            "--endpoint",
            "http://127.0.0.1:9",
            "--region",
            "garage",
        ],
    ));
    let out = tantra(&a, &["push", "mamba:sample_small", "--remote", "down"]);
    fails_with(&out, "remote \"down\"");
    fails_with(&out, "cannot be reached");
    // Unknown remote; a remote list; a removal.
    fails_with(
        &tantra(&a, &["push", "mamba:sample_small", "--remote", "zz"]),
        "no remote named \"zz\"",
    );
    let list = ok_json(&tantra(&a, &["remote", "list", "--json"]));
    assert_eq!(list["remotes"].as_object().unwrap().len(), 3);
    ok(&tantra(&a, &["remote", "remove", "down"]));
    let list = ok_json(&tantra(&a, &["remote", "list", "--json"]));
    assert_eq!(list["remotes"].as_object().unwrap().len(), 2);
    assert!(!std::fs::read_to_string(a.join("remotes.json"))
        .unwrap()
        .contains("AWS"));
}

#[test]
fn a_pull_completes_when_a_garage_node_stops_midway() {
    let Some(_) = garage() else { return };
    // Its own cluster: stopping a node must not disturb the other tests.
    let tmp = tempfile::tempdir().unwrap();
    let cluster = tmp.path().join("cluster");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/garage-cluster");
    let out = Command::new("bash")
        .arg(&script)
        .arg("start")
        .arg(&cluster)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let env = String::from_utf8_lossy(&out.stdout).into_owned();
    let stop = StopCluster(script.clone(), cluster.clone());
    let var = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("export {k}=")))
            .unwrap()
            .to_string()
    };
    let g = Garage {
        endpoint: var("TANTRA_S3_ENDPOINT"),
        bucket: var("TANTRA_S3_BUCKET"),
        dir: Some(cluster.clone()),
    };
    let a = root_with_remote(&g, "nodes", &tmp.path().join("a"), true);
    let b = root_with_remote(&g, "nodes", &tmp.path().join("b"), false);
    ok(&tantra(&a, &["push", "mamba:sample_small"]));
    let child = bin()
        .args([
            "--root",
            b.to_str().unwrap(),
            "pull",
            "mamba:sample_small",
            "--json",
        ])
        .env("TANTRA_REMOTE_JOBS", "1")
        .env("TANTRA_REMOTE_DELAY_MS", "100")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cache = b.join("remote-cache");
    let start = Instant::now();
    while std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pull did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = Command::new("bash")
        .arg(&script)
        .args(["kill-node", cluster.to_str().unwrap(), "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = child.wait_with_output().unwrap();
    let r: J = serde_json::from_slice(&ok(&out).into_bytes()).unwrap();
    assert_eq!(
        r["formats_pulled"],
        serde_json::json!(["bin", "pt", "safetensors"])
    );
    assert!(r["blobs_downloaded"].as_u64().unwrap() > 10);
    assert_same_files(&a, &b, "mamba", "sample_small");
    drop(stop);
    let _ = g.dir;
}

/// Stops a cluster this test started, also when the test fails.
struct StopCluster(PathBuf, PathBuf);
impl Drop for StopCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.0)
            .arg("stop")
            .arg(&self.1)
            .status();
    }
}
