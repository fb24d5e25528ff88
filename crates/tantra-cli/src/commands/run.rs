//! `tantra run MODEL[:VERSION] [PROMPT]`: run a model on a prompt (and an image), from the
//! weights root or from a path. Without a prompt, the prompt is read from stdin when stdin is
//! not a terminal (`echo hi | tantra run mamba`).
//!
//! The text is streamed to stdout as tokens come (byte tokens are decoded as UTF-8 as soon
//! as a character is complete); prefill and decode speed go to stderr. `--json` prints one
//! object at the end instead. The byte-level tokenizer is used for vocabularies of its size;
//! checkpoints with other vocabularies take `--input-ids`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use tantra_formats::OutputFormat;
use tantra_models::{Architecture, ByteTokenizer};
use tantra_runtime::image::load_image;
use tantra_runtime::{
    GenerateOptions, Generation, LoadedModel, MambaModel, OcrOutput, Precision, SamplingConfig,
};

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").args(["prompt", "input_ids"])))]
pub struct Args {
    /// The model: MODEL[:VERSION] in the weights root (mamba, mamba:full, mamba:golden), or
    /// a model directory / weight file.
    #[arg(value_name = "MODEL[:VERSION]")]
    pub model: String,
    /// The prompt (same as --prompt); read from stdin when neither is given and stdin is not
    /// a terminal.
    #[arg(value_name = "PROMPT", conflicts_with_all = ["prompt", "input_ids"])]
    pub prompt_text: Option<String>,
    /// The version in the weights root (older spelling of MODEL:VERSION).
    #[arg(long, conflicts_with = "weights")]
    pub version: Option<String>,
    /// Run these weights instead of the root's: a model directory (config.json plus
    /// safetensors or pytorch_model*.bin, single or sharded), one weight file, or a
    /// registered MODEL[:VERSION].
    #[arg(long, value_name = "PATH|MODEL[:VERSION]")]
    pub weights: Option<PathBuf>,
    /// Prefer this format in the weights root (default: safetensors, then pt, then bin).
    #[arg(long, conflicts_with = "weights")]
    pub format: Option<OutputFormat>,
    /// The prompt, encoded with the byte-level tokenizer.
    #[arg(long)]
    pub prompt: Option<String>,
    /// The prompt as token ids, comma-separated (for checkpoints with other vocabularies).
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub input_ids: Option<Vec<u32>>,
    /// An image (PNG or JPEG): prefilled before the prompt (mamba_multimodal), or the text
    /// line to read (ocr_native).
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// At most this many new tokens.
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sample only from the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only from the most likely tokens whose probability adds up to P.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// With --json: include the logits of every prompt position.
    #[arg(long)]
    pub dump_logits: bool,
    /// Print one JSON object at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Keep generating after the end-of-text token, up to --max-new-tokens (benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// The precision weight matrices are kept at: f32, bf16 (half the bytes, computed in
    /// f32) or q8 (blocks of 32 int8 values with one scale each). Converted on load from any
    /// file; a bf16 file run at bf16 and a Q8_0 GGUF run at q8 are kept as they are.
    #[arg(long, default_value = "f32", value_name = "f32|bf16|q8")]
    pub dtype: Precision,
    /// Threads to compute on (default: all cores).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
}

pub fn run(mut a: Args, root: &Path) -> anyhow::Result<ExitCode> {
    if let Some(p) = a.prompt_text.take() {
        a.prompt = Some(p);
    }
    if let Some(w) = &a.weights {
        a.weights = Some(crate::target::weight_path(w, root)?);
    }
    if let Some(n) = a.threads {
        tantra_runtime::set_threads(usize::from(n))?;
    }
    let (loaded, name) = load(&a, root)?;
    match &loaded {
        LoadedModel::Mamba(rt) => {
            if a.image.is_some() {
                bail!("{name} is a text model: --image is for mamba_multimodal and ocr_native");
            }
            if interactive(&a) {
                return chat(&mut a, &name, rt.model(), &|ids, opts, sink| {
                    rt.generate(ids, opts, sink)
                });
            }
            let ids = prompt_ids(&a, rt.model(), false)?;
            let g = generate(&a, rt.model(), &mut |opts, sink| {
                rt.generate(&ids, opts, sink)
            })?;
            report(&a, &name, rt.model(), &g)
        }
        LoadedModel::Multimodal(m) => {
            let image = match &a.image {
                Some(p) => Some(load_image(p)?),
                None => None,
            };
            let ids = prompt_ids(&a, m.language(), image.is_some())?;
            let g = generate(&a, m.language(), &mut |opts, sink| {
                m.generate(image.as_ref(), &ids, opts, sink)
            })?;
            report(&a, &name, m.language(), &g)
        }
        LoadedModel::Ocr(m) => {
            if a.prompt.is_some() || a.input_ids.is_some() {
                bail!("ocr_native reads an image: give --image FILE and no prompt");
            }
            let Some(path) = &a.image else {
                bail!("ocr_native reads an image: give --image FILE");
            };
            let image = load_image(path)?;
            let start = std::time::Instant::now();
            let out = m.recognize(&image)?;
            let secs = start.elapsed().as_secs_f64();
            report_ocr(&a, &name, m.config().num_classes(), &out, secs)
        }
    }
}

/// No prompt, a terminal on stdin and text output: an interactive session, as `ollama run`.
fn interactive(a: &Args) -> bool {
    use std::io::IsTerminal;
    a.prompt.is_none() && a.input_ids.is_none() && !a.json && std::io::stdin().is_terminal()
}

type ChatFn<'a> = dyn Fn(
        &[u32],
        &GenerateOptions,
        &mut dyn FnMut(u32),
    ) -> Result<Generation, tantra_runtime::RuntimeError>
    + 'a;

/// Reads a prompt per line (`>>> ` on stderr) and answers each, until end of input or `/bye`.
fn chat(
    a: &mut Args,
    name: &str,
    model: &MambaModel,
    gen: &ChatFn<'_>,
) -> anyhow::Result<ExitCode> {
    crate::note!("{name}: one prompt per line; /bye or Ctrl-D ends");
    let mut line = String::new();
    loop {
        eprint!(">>> ");
        let _ = std::io::stderr().flush();
        line.clear();
        if std::io::stdin()
            .read_line(&mut line)
            .context("reading a prompt")?
            == 0
        {
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text == "/bye" {
            break;
        }
        if text.is_empty() {
            continue;
        }
        a.prompt = Some(text.to_string());
        let ids = prompt_ids(a, model, false)?;
        let g = generate(a, model, &mut |opts, sink| gen(&ids, opts, sink))?;
        report(a, name, model, &g)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The runtime the arguments name, and a name for messages.
fn load(a: &Args, root: &Path) -> anyhow::Result<(LoadedModel, String)> {
    let arch = Architecture::parse(&a.model).ok();
    if let Some(path) = &a.weights {
        let arch = arch.with_context(|| {
            format!(
                "unknown model {:?} (expected mamba, mamba_multimodal or ocr_native)",
                a.model
            )
        })?;
        let m = LoadedModel::from_path_as(path, Some(arch), a.dtype)
            .with_context(|| format!("cannot load {} weights from {}", arch, path.display()))?;
        return Ok((m, format!("{} ({})", arch, path.display())));
    }
    let as_path = Path::new(&a.model);
    if arch.is_none() && as_path.exists() {
        let m = LoadedModel::from_path_as(as_path, None, a.dtype)
            .with_context(|| format!("cannot load weights from {}", as_path.display()))?;
        return Ok((m, a.model.clone()));
    }
    let r = crate::target::model_ref(&a.model, a.version.as_deref())?;
    let m = LoadedModel::from_store_as(root, &r.model, r.version.as_deref(), a.format, a.dtype)
        .with_context(|| format!("cannot load {r} from {}", root.display()))?;
    Ok((m, r.to_string()))
}

/// True for tantra's byte-level vocabulary.
fn byte_level(model: &MambaModel) -> bool {
    model.vocab_size() == ByteTokenizer::VOCAB_SIZE
}

/// The prompt as ids: `--input-ids` as given, or `--prompt` through the byte-level tokenizer
/// (with `<bos>` first when the config names it).
fn prompt_ids(a: &Args, model: &MambaModel, has_image: bool) -> anyhow::Result<Vec<u32>> {
    if let Some(ids) = &a.input_ids {
        return Ok(ids.clone());
    }
    let stdin_text;
    let text = match &a.prompt {
        Some(t) => t,
        None if has_image => return Ok(Vec::new()),
        None => {
            use std::io::{IsTerminal, Read};
            if std::io::stdin().is_terminal() {
                bail!("give a prompt: tantra run MODEL \"TEXT\", --prompt TEXT, --input-ids 1,5,9, or pipe it on stdin");
            }
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the prompt from stdin")?;
            stdin_text = s.trim_end_matches(['\n', '\r']).to_string();
            if stdin_text.is_empty() {
                bail!("no prompt: stdin is empty; give one as tantra run MODEL \"TEXT\", --prompt TEXT or --input-ids 1,5,9");
            }
            &stdin_text
        }
    };
    if !byte_level(model) {
        bail!(
            "this checkpoint's vocabulary ({} tokens) is not tantra's byte-level one; give the prompt as --input-ids",
            model.vocab_size()
        );
    }
    let t = ByteTokenizer::new();
    Ok(if model.config().bos_token_id == Some(ByteTokenizer::BOS) {
        t.encode_with_bos(text)
    } else {
        t.encode(text)
    })
}

type GenerateFn<'a> = dyn FnMut(&GenerateOptions, &mut dyn FnMut(u32)) -> Result<Generation, tantra_runtime::RuntimeError>
    + 'a;

/// Runs generation with the sampling options of `a`, streaming text to stdout unless `--json`.
fn generate(a: &Args, model: &MambaModel, run: &mut GenerateFn<'_>) -> anyhow::Result<Generation> {
    let options = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: SamplingConfig {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
        },
        eos_token_id: model.config().eos_token_id.filter(|_| !a.ignore_eos),
        prompt_logits: a.dump_logits,
    };
    let stream = !a.json;
    let bytes = byte_level(model);
    let mut out = Utf8Stream::default();
    let stdout = std::io::stdout();
    let mut sink = |id: u32| {
        if !stream {
            return;
        }
        let mut lock = stdout.lock();
        let text = if bytes {
            out.push(id)
        } else {
            format!("{id} ")
        };
        // A closed stdout (a pipe into `head`) must not abort generation.
        let _ = lock.write_all(text.as_bytes());
        let _ = lock.flush();
    };
    let g = run(&options, &mut sink)?;
    if stream {
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{}", out.finish());
        let _ = lock.flush();
    }
    Ok(g)
}

/// What `run --json` prints: one object per run (text models and OCR alike).
#[derive(serde::Serialize)]
struct RunJson<'a> {
    model: &'a str,
    /// The precision of the weight matrices (`--dtype`).
    dtype: &'static str,
    input_ids: &'a [u32],
    output_ids: Vec<u32>,
    /// Decoded text (byte-level vocabularies and OCR); null otherwise.
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_classes: Option<&'a [u32]>,
    prefill_tokens_per_second: f64,
    decode_tokens_per_second: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_logits: Option<&'a [Vec<f32>]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frame_logits: Option<Vec<&'a [f32]>>,
}

/// Prints the speeds to stderr and, with `--json`, the result object.
fn report(a: &Args, name: &str, model: &MambaModel, g: &Generation) -> anyhow::Result<ExitCode> {
    crate::note!(
        "prefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s",
        g.prefill_tokens,
        g.prefill_tokens_per_second(),
        g.decode_steps,
        g.decode_tokens_per_second()
    );
    if a.json {
        let text = byte_level(model).then(|| ByteTokenizer::new().decode(&g.generated));
        let o = RunJson {
            model: name,
            dtype: a.dtype.name(),
            input_ids: &g.prompt_ids,
            output_ids: g.output_ids(),
            text,
            frame_classes: None,
            prefill_tokens_per_second: g.prefill_tokens_per_second(),
            decode_tokens_per_second: Some(g.decode_tokens_per_second()),
            prompt_logits: g.prompt_logits.as_deref(),
            frame_logits: None,
        };
        println!("{}", serde_json::to_string(&o)?);
    }
    Ok(ExitCode::SUCCESS)
}

fn report_ocr(
    a: &Args,
    name: &str,
    classes: usize,
    out: &OcrOutput,
    secs: f64,
) -> anyhow::Result<ExitCode> {
    let frames = out.frame_classes.len();
    let rate = if secs > 0.0 {
        frames as f64 / secs
    } else {
        0.0
    };
    crate::note!("read {frames} frames, {rate:.1} frames/s");
    if a.json {
        let o = RunJson {
            model: name,
            dtype: a.dtype.name(),
            input_ids: &[],
            output_ids: out.classes.clone(),
            text: Some(out.text.clone()),
            frame_classes: Some(&out.frame_classes),
            prefill_tokens_per_second: rate,
            decode_tokens_per_second: None,
            prompt_logits: None,
            frame_logits: a
                .dump_logits
                .then(|| out.logits.chunks_exact(classes.max(1)).collect()),
        };
        println!("{}", serde_json::to_string(&o)?);
    } else {
        println!("{}", out.text);
    }
    Ok(ExitCode::SUCCESS)
}

/// Turns a stream of byte tokens into text as soon as each character is complete; specials
/// are skipped, invalid sequences become U+FFFD.
#[derive(Default)]
struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text that token `id` completes (often empty mid-character).
    fn push(&mut self, id: u32) -> String {
        let Ok(b) = u8::try_from(id) else {
            return String::new();
        };
        self.pending.push(b);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    text.push_str(s);
                    self.pending.clear();
                    return text;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    text.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return text;
                        }
                        Some(n) => {
                            text.push('\u{FFFD}');
                            self.pending.drain(..valid + n);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left (an unfinished character becomes U+FFFD).
    fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_waits_for_whole_characters() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes();
        assert_eq!(s.push(u32::from(b'a')), "a");
        assert_eq!(s.push(u32::from(e[0])), "");
        assert_eq!(s.push(u32::from(e[1])), "é");
        assert_eq!(s.push(258), "");
        assert_eq!(s.push(0xFF), "\u{FFFD}");
        assert_eq!(s.push(u32::from(e[0])), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
