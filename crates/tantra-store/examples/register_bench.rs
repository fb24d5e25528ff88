//! How long `register` takes as the registry grows: a root with N versions (each a real,
//! registered file: hard links of one small weight file, so building the root is quick), then
//! the median of several registrations of a new version, and what one registry parse, clone
//! and write cost at that size.
//!
//! `cargo run --release -p tantra-store --example register_bench -- 10 1000 10000`

use std::collections::BTreeMap;
use std::time::Instant;

use tantra_formats::{MemorySource, NoProgress, OutputFormat};
use tantra_store::registry::{Extra, FormatRecord, ModelRecord, Registry, Source, VersionRecord};
use tantra_store::{RegisterOptions, WeightManager};

fn small(seed: u32) -> MemorySource {
    let mut m = MemorySource::new();
    let v: Vec<f32> = (0..64u32).map(|i| (i ^ seed) as f32).collect();
    m.push_f32("w", vec![64], &v).expect("a tensor");
    m
}

/// Nanoseconds this thread has run on a CPU (Linux `schedstat`): on a shared machine, time
/// spent waiting for a core is not the registry's cost. `None` elsewhere.
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![10, 1000, 10000]
    } else {
        sizes
    };
    let reps: u32 = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    println!("versions  register (median of {reps})  on cpu  parse  clone  write  registry bytes");
    for n in sizes {
        let dir = tempfile::tempdir()?;
        let wm = WeightManager::open(dir.path().join("Model"))?;
        let opts = RegisterOptions::default();
        let first = wm.register_source(
            &small(0),
            "m",
            "v0",
            Source::Generated { by: None },
            &opts,
            &NoProgress,
        )?;
        // N-1 more versions of the same bytes, written straight into the registry.
        let mut reg = wm.registry()?;
        let base = reg.version("m", "v0").cloned().ok_or("v0 is registered")?;
        let src = wm.abs(&first.files[0].path);
        let model: &mut ModelRecord = reg.models.get_mut("m").ok_or("model m")?;
        for i in 1..n {
            let v = format!("v{i}");
            let rel = format!("weights/m_{v}_safetensors.safetensors");
            std::fs::hard_link(&src, wm.abs(&rel))?;
            let mut rec: VersionRecord = base.clone();
            let f: FormatRecord = FormatRecord {
                path: rel,
                extra: Extra::new(),
                ..base.formats["safetensors"].clone()
            };
            rec.formats = BTreeMap::from([("safetensors".to_string(), f)]);
            model.versions.insert(v, rec.into());
        }
        reg.save(&wm.registry_path())?;
        let bytes = std::fs::metadata(wm.registry_path())?.len();
        let mut times = Vec::new();
        let mut cpu = Vec::new();
        for k in 0..reps {
            let (t, c) = (Instant::now(), on_cpu_ns());
            wm.register_source(
                &small(1000 + k),
                "m",
                &format!("new{k}"),
                Source::Generated { by: None },
                &RegisterOptions {
                    formats: vec![OutputFormat::Safetensors],
                    ..Default::default()
                },
                &NoProgress,
            )?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            if let (Some(a), Some(b)) = (c, on_cpu_ns()) {
                cpu.push((b - a) as f64 / 1e6);
            }
        }
        let raw = std::fs::read(wm.registry_path())?;
        let t = Instant::now();
        let parsed = Registry::parse(&raw, &wm.registry_path())?;
        let parse = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let cloned = parsed.clone();
        let clone = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let out = cloned.to_bytes();
        let write = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{n:>8}  {:>10.1} ms            {:>6.1}  {parse:>5.1}  {clone:>5.1}  {write:>5.1}  {}",
            median(times),
            if cpu.is_empty() {
                f64::NAN
            } else {
                median(cpu)
            },
            out.len().max(bytes as usize)
        );
    }
    Ok(())
}
