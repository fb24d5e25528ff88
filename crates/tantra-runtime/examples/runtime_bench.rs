//! Helper of `bench/decode.sh`: writes a Mamba preset as a Hugging Face directory, measures
//! this machine's memory bandwidth, and times decoding in-process.
//!
//! ```text
//! runtime_bench write DIR [sample_small|full]   config.json + model.safetensors (seed 0)
//! runtime_bench bandwidth                       copy and read bandwidth, JSON
//! runtime_bench decode DIR PROMPT_LEN TOKENS [DTYPE]  prefill + greedy decode (best of 3), JSON
//! runtime_bench prefill DIR PROMPT_LEN ROUNDS [DTYPE]  prefill only, ROUNDS times, JSON
//! runtime_bench bytes DIR DTYPE                 weight bytes one decoding step reads, JSON
//! runtime_bench gguf DIR TYPE OUT.gguf           the directory as llama.cpp's GGUF (f32|bf16|q8_0)
//! runtime_bench score DIR DTYPE IDS_FILE OUT.f32  logits of every position of each line
//! runtime_bench greedy DIR DTYPE IDS_FILE TOKENS  TOKENS greedy tokens after each line, JSON
//! ```
//!
//! `score` and `greedy` are tantra's half of `bench/accuracy.sh` and behave as its llama.cpp
//! half, `bench/llama_logits.cpp`, does: IDS_FILE holds one sequence of token ids per line;
//! `score` feeds each line as a prefill from a fresh state and appends the logits of every
//! position to OUT.f32 (f32 little-endian, `[positions, vocab]`); `greedy` feeds each line,
//! then feeds back the argmax (lowest id on ties) TOKENS times, never stopping at `<eos>`.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;
use tantra_formats::gguf::{GgufOptions, TargetType};
use tantra_formats::NoProgress;
use tantra_models::gguf::export_gguf;
use tantra_models::hf::{export_seeded, import_hf};
use tantra_models::{Architecture, ModelConfig, Preset};
use tantra_runtime::{argmax, kernel_name, GenerateOptions, Logits, MambaRuntime, Precision};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("write") if args.len() >= 2 => write(
            Path::new(&args[1]),
            args.get(2).map_or("full", String::as_str),
        ),
        Some("bandwidth") => bandwidth(),
        Some("decode") if args.len() == 4 || args.len() == 5 => decode(
            Path::new(&args[1]),
            args[2].parse()?,
            args[3].parse()?,
            args.get(4).map_or(Ok(Precision::F32), |d| d.parse())?,
        ),
        Some("gguf") if args.len() == 4 => gguf(
            Path::new(&args[1]),
            args[2].parse()?,
            Path::new(&args[3]),
        ),
        Some("score") if args.len() == 5 => score(
            Path::new(&args[1]),
            args[2].parse()?,
            Path::new(&args[3]),
            Path::new(&args[4]),
        ),
        Some("greedy") if args.len() == 5 => greedy(
            Path::new(&args[1]),
            args[2].parse()?,
            Path::new(&args[3]),
            args[4].parse()?,
        ),
        Some("prefill") if args.len() == 4 || args.len() == 5 => prefill(
            Path::new(&args[1]),
            args[2].parse()?,
            args[3].parse()?,
            args.get(4).map_or(Ok(Precision::F32), |d| d.parse())?,
        ),
        Some("bytes") if args.len() == 3 => {
            let rt = MambaRuntime::from_path_as(Path::new(&args[1]), args[2].parse()?)?;
            println!(
                "{}",
                serde_json::json!({"dtype": args[2], "bytes_per_token": rt.model().bytes_per_token()})
            );
            Ok(())
        }
        _ => Err(
            "usage: runtime_bench write DIR [preset] | bandwidth | decode DIR PROMPT_LEN TOKENS [DTYPE] | prefill DIR PROMPT_LEN ROUNDS [DTYPE] | bytes DIR DTYPE | gguf DIR TYPE OUT.gguf | score DIR DTYPE IDS_FILE OUT.f32 | greedy DIR DTYPE IDS_FILE TOKENS"
                .into(),
        ),
    }
}

fn write(dir: &Path, preset: &str) -> Res<()> {
    let ModelConfig::Mamba(config) = Architecture::Mamba.preset(Preset::parse(preset)?) else {
        return Err("the mamba architecture gave a config of another family".into());
    };
    let report = export_seeded(&config, 0, dir)?;
    eprintln!("wrote {} ({} parameters)", dir.display(), report.parameters);
    Ok(())
}

/// A dot product in 16 independent lanes, which the compiler vectorizes: a read-only pass
/// over both slices at full speed.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum()
}

/// Best of several passes over buffers far larger than the caches, on all threads: a copy
/// (STREAM convention: bytes read + bytes written) and a read-only sum.
fn bandwidth() -> Res<()> {
    const BYTES: usize = 512 << 20;
    let n = BYTES / 4;
    let src: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let mut dst = vec![0.0f32; n];
    let threads = rayon::current_num_threads();
    let chunk = n.div_ceil(threads * 4);
    let mut copy_best = f64::MAX;
    let mut read_best = f64::MAX;
    let mut sink = 0.0f32;
    for _ in 0..5 {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        copy_best = copy_best.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        sink += src
            .par_chunks(chunk)
            .zip(dst.par_chunks(chunk))
            .map(|(a, b)| dot(a, b))
            .sum::<f32>();
        read_best = read_best.min(t.elapsed().as_secs_f64());
    }
    // Copy: read + write; read: two buffers read once each.
    let copy = 2.0 * BYTES as f64 / copy_best / 1e9;
    let read = 2.0 * BYTES as f64 / read_best / 1e9;
    println!(
        "{}",
        serde_json::json!({
            "threads": threads,
            "copy_gb_per_s": copy,
            "read_gb_per_s": read,
            "checksum": sink,
        })
    );
    Ok(())
}

fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Prefill alone, `rounds` times from a fresh state (the last position's logits, as
/// `tantra run` asks for), for profiling: the median and the best rate.
fn prefill(dir: &Path, prompt_len: usize, rounds: usize, precision: Precision) -> Res<()> {
    let rt = MambaRuntime::from_path_as(dir, precision)?;
    let model = rt.model();
    let vocab = model.vocab_size() as u32;
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| (i * 7 + 3) % vocab.min(256))
        .collect();
    let mut rates = Vec::with_capacity(rounds);
    let mut first: Option<Vec<f32>> = None;
    for _ in 0..rounds.max(1) {
        let mut state = model.new_state();
        let t = Instant::now();
        let logits = model.forward(&prompt, &mut state, Logits::Last)?;
        rates.push(prompt_len as f64 / t.elapsed().as_secs_f64());
        match &first {
            Some(f) if *f != logits => return Err("prefill is not deterministic".into()),
            Some(_) => {}
            None => first = Some(logits),
        }
    }
    let in_order = rates.clone();
    rates.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "dtype": precision.name(),
            "threads": rayon::current_num_threads(),
            "prompt_tokens": prompt_len,
            "median_tokens_per_second": rates[rates.len() / 2],
            "best_tokens_per_second": rates[rates.len() - 1],
            "tokens_per_second": in_order,
        })
    );
    Ok(())
}

fn decode(dir: &Path, prompt_len: usize, tokens: usize, precision: Precision) -> Res<()> {
    let t = Instant::now();
    let rt = MambaRuntime::from_path_as(dir, precision)?;
    let load_s = t.elapsed().as_secs_f64();
    let vocab = rt.model().vocab_size() as u32;
    let prompt: Vec<u32> = (0..prompt_len as u32)
        .map(|i| (i * 7 + 3) % vocab.min(256))
        .collect();
    let opts = GenerateOptions {
        max_new_tokens: tokens,
        ..GenerateOptions::default()
    };
    // Warm-up (page faults, thread pool start).
    rt.generate(
        &prompt[..prompt_len.min(4)],
        &GenerateOptions {
            max_new_tokens: 2,
            ..opts.clone()
        },
        &mut |_| {},
    )?;
    // Best of three: the machine may be shared.
    let mut g = rt.generate(&prompt, &opts, &mut |_| {})?;
    for _ in 0..2 {
        let again = rt.generate(&prompt, &opts, &mut |_| {})?;
        if again.output_ids() != g.output_ids() {
            return Err("greedy decoding is not deterministic".into());
        }
        if again.decode_time < g.decode_time {
            g.decode_time = again.decode_time;
        }
        if again.prefill_time < g.prefill_time {
            g.prefill_time = again.prefill_time;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "kernel": kernel_name(),
            "dtype": precision.name(),
            "threads": rayon::current_num_threads(),
            "load_seconds": load_s,
            "prompt_tokens": prompt_len,
            "decode_steps": g.decode_steps,
            "prefill_tokens_per_second": g.prefill_tokens_per_second(),
            "decode_tokens_per_second": g.decode_tokens_per_second(),
            "bytes_per_token": rt.model().bytes_per_token(),
            "peak_rss_bytes": peak_rss_bytes(),
            "output_ids": g.output_ids(),
        })
    );
    Ok(())
}

/// What `tantra import-hf` then `tantra export-gguf --type TYPE` write, without a weights
/// root: the directory's tensors through the same GGUF export, verified.
fn gguf(dir: &Path, target: TargetType, out: &Path) -> Res<()> {
    let checkpoint = import_hf(dir)?;
    let options = GgufOptions {
        target,
        force: true,
        verify: true,
        ..GgufOptions::default()
    };
    export_gguf(
        &checkpoint.config,
        &checkpoint,
        "mamba",
        out,
        &options,
        &NoProgress,
    )?;
    eprintln!("wrote {} ({target})", out.display());
    Ok(())
}

/// The sequences of an ids file: one per non-empty line, ids below `vocab` separated by spaces.
fn read_ids(path: &Path, vocab: usize) -> Res<Vec<Vec<u32>>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let ids = line
            .split_whitespace()
            .map(|w| match w.parse::<u32>() {
                Ok(id) if (id as usize) < vocab => Ok(id),
                _ => Err(format!(
                    "{}:{}: {w} is not a token id below {vocab}",
                    path.display(),
                    n + 1
                )),
            })
            .collect::<Result<Vec<u32>, String>>()?;
        if !ids.is_empty() {
            lines.push(ids);
        }
    }
    if lines.is_empty() {
        return Err(format!("{}: no sequences", path.display()).into());
    }
    Ok(lines)
}

fn score(dir: &Path, precision: Precision, ids: &Path, out: &Path) -> Res<()> {
    let rt = MambaRuntime::from_path_as(dir, precision)?;
    let model = rt.model();
    let vocab = model.vocab_size();
    let mut file =
        BufWriter::new(std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?);
    let mut positions = 0;
    for line in read_ids(ids, vocab)? {
        let mut state = model.new_state();
        let logits = model.forward(&line, &mut state, Logits::All)?;
        for x in &logits {
            file.write_all(&x.to_le_bytes())?;
        }
        positions += line.len();
    }
    file.flush()?;
    println!(
        "{}",
        serde_json::json!({"vocab": vocab, "positions": positions})
    );
    Ok(())
}

fn greedy(dir: &Path, precision: Precision, ids: &Path, tokens: usize) -> Res<()> {
    let rt = MambaRuntime::from_path_as(dir, precision)?;
    let model = rt.model();
    let vocab = model.vocab_size();
    let mut generated = Vec::new();
    for line in read_ids(ids, vocab)? {
        let mut state = model.new_state();
        let mut next = argmax(&model.forward(&line, &mut state, Logits::Last)?);
        let mut gen = Vec::with_capacity(tokens);
        for t in 0..tokens {
            gen.push(next);
            if t + 1 < tokens {
                next = argmax(&model.step(next, &mut state)?);
            }
        }
        generated.push(gen);
    }
    println!(
        "{}",
        serde_json::json!({"vocab": vocab, "generated": generated})
    );
    Ok(())
}
