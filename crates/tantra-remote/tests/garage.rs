//! tantra-remote against a real three-node Garage cluster on loopback (started by
//! `scripts/test-all` through `scripts/garage-cluster`): two pushers racing for one name, and a
//! damaged blob that a pull must refuse. Without the cluster's variables the tests say loudly
//! that they skip, and fail when `TANTRA_REQUIRE_GARAGE=1`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::Path;
use std::sync::{Arc, Barrier};

use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStoreExt, PutPayload};
use tantra_formats::{MemorySource, NoProgress, OutputFormat};
use tantra_remote::client::Client;
use tantra_remote::config::RemoteDef;
use tantra_remote::pull::{pull, PullOptions};
use tantra_remote::push::{push, PushOptions};
use tantra_remote::RemoteError;
use tantra_store::{RegisterOptions, Source, WeightManager};

struct Env {
    endpoint: String,
    bucket: String,
}

fn garage() -> Option<Env> {
    let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (
        get("TANTRA_S3_ENDPOINT"),
        get("TANTRA_S3_BUCKET"),
        get("AWS_ACCESS_KEY_ID"),
    ) {
        (Some(endpoint), Some(bucket), Some(_)) => Some(Env { endpoint, bucket }),
        _ => {
            if get("TANTRA_REQUIRE_GARAGE").as_deref() == Some("1") {
                panic!("TANTRA_REQUIRE_GARAGE=1 but TANTRA_S3_ENDPOINT / TANTRA_S3_BUCKET / AWS_ACCESS_KEY_ID are not set: start the cluster with scripts/garage-cluster");
            }
            eprintln!("\n!!! SKIPPED: no Garage cluster (TANTRA_S3_ENDPOINT unset); run `bash scripts/test-all` to run the remote tests !!!\n");
            None
        }
    }
}

fn def(env: &Env, prefix: &str) -> RemoteDef {
    let mut d = RemoteDef::from_url(&format!("s3://{}/{prefix}", env.bucket)).unwrap();
    d.endpoint = Some(env.endpoint.clone());
    d.region = Some("garage".into());
    d
}

fn unique(name: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}-{}-{t}", std::process::id())
}

/// A root holding `model:version` = 4 tensors whose values start at `seed`.
fn root_with(dir: &Path, version: &str, seed: f32) -> WeightManager {
    let wm = WeightManager::open(dir).unwrap();
    let mut m = MemorySource::new();
    for i in 0..4u64 {
        let vals: Vec<f32> = (0..1000).map(|k| seed + (i * 1000 + k) as f32).collect();
        m.push_f32(format!("layer.{i}.weight"), vec![10, 100], &vals)
            .unwrap();
    }
    let opts = RegisterOptions {
        formats: vec![OutputFormat::Safetensors],
        ..Default::default()
    };
    wm.register_source(
        &m,
        "toy",
        version,
        Source::Generated { by: None },
        &opts,
        &NoProgress,
    )
    .unwrap();
    wm
}

#[test]
fn two_pushers_racing_for_one_name_one_wins() {
    let Some(env) = garage() else { return };
    let prefix = unique("race");
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let version = format!("v{round}");
        let roots: Vec<WeightManager> = (0..2)
            .map(|i| {
                root_with(
                    &tmp.path().join(format!("r{round}-{i}")),
                    &version,
                    i as f32 * 0.5,
                )
            })
            .collect();
        let barrier = Arc::new(Barrier::new(2));
        let results: Vec<Result<_, Box<RemoteError>>> = std::thread::scope(|s| {
            let handles: Vec<_> = roots
                .iter()
                .map(|wm| {
                    let barrier = barrier.clone();
                    let d = def(&env, &prefix);
                    let version = version.clone();
                    s.spawn(move || -> Result<_, Box<RemoteError>> {
                        let client = Client::connect("race", &d)?;
                        barrier.wait();
                        Ok(push(
                            &client,
                            wm,
                            "toy",
                            Some(&version),
                            &PushOptions::default(),
                            &NoProgress,
                        )?)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<usize> = (0..2).filter(|&i| results[i].is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = 1 - winners[0];
        match &results[loser] {
            Err(e) if matches!(**e, RemoteError::VersionTaken { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("toy:v") && msg.contains("another version name"),
                    "{msg}"
                );
            }
            other => panic!("round {round}: the loser got {other:?}"),
        }
        // The remote holds the winner's weights.
        let c = Client::connect("race", &def(&env, &prefix)).unwrap();
        let fresh = WeightManager::open(tmp.path().join(format!("pulled{round}"))).unwrap();
        let r = pull(
            &c,
            &fresh,
            "toy",
            Some(&version),
            &PullOptions::default(),
            &NoProgress,
        )
        .unwrap();
        let want = roots[winners[0]].registry().unwrap();
        assert_eq!(r.content, want.version("toy", &version).unwrap().content);
    }
}

#[test]
fn a_damaged_blob_is_never_used() {
    let Some(env) = garage() else { return };
    let prefix = unique("damaged");
    let tmp = tempfile::tempdir().unwrap();
    let a = root_with(&tmp.path().join("a"), "v1", 3.0);
    let d = def(&env, &prefix);
    let client = Client::connect("dmg", &d).unwrap();
    push(
        &client,
        &a,
        "toy",
        Some("v1"),
        &PushOptions::default(),
        &NoProgress,
    )
    .unwrap();
    // Replace one blob's bytes behind tantra's back.
    let table = a.tensor_digests("toy", "v1").unwrap();
    let victim = &table.tensors[1].sha256;
    let store = AmazonS3Builder::new()
        .with_endpoint(&env.endpoint)
        .with_allow_http(true)
        .with_region("garage")
        .with_bucket_name(&env.bucket)
        .with_access_key_id(std::env::var("AWS_ACCESS_KEY_ID").unwrap())
        .with_secret_access_key(std::env::var("AWS_SECRET_ACCESS_KEY").unwrap())
        .build()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let key = object_store::path::Path::from(format!("{prefix}/blobs/{victim}"));
    rt.block_on(store.put(&key, PutPayload::from(vec![7u8; 4000])))
        .unwrap();

    let bdir = tmp.path().join("b");
    let b = WeightManager::open(&bdir).unwrap();
    let e = pull(
        &client,
        &b,
        "toy",
        Some("v1"),
        &PullOptions::default(),
        &NoProgress,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, RemoteError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&format!("{prefix}/blobs/{victim}")) && msg.contains("push the version again"),
        "{msg}"
    );
    assert!(
        !bdir.join("weight_config.json").exists(),
        "nothing registered"
    );
    assert!(
        !bdir.join("remote-cache").join(victim).exists(),
        "the bad blob was not kept"
    );
    assert!(b.registry().unwrap().models.is_empty());
    assert!(
        std::fs::read_dir(bdir.join("weights"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}
