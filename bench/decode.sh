#!/usr/bin/env bash
# Decode and prefill benchmark of the full Mamba (57M parameters, CPU) at each weight precision,
# next to llama.cpp at the same precision and to the memory-bandwidth limit, in one run.
#
#   bench/decode.sh                               PROMPT_LEN=64 TOKENS=128 THREADS=2 ROUNDS=3
#   LLAMA_CPP_DIR=/work/llama/build bench/decode.sh    (a build with bin/llama-completion)
#   TRANSFORMERS_PYTHON=/path/to/python TRANSFORMERS_PYTHONPATH=/dir/with/transformers ...
#
# Writes the `full` preset (seed 0) as a Hugging Face directory into a temp dir, then:
#   - tantra: `tantra run --dtype f32|bf16|q8 --threads THREADS --json` (the command people
#     use; the prompt's bytes given as `--input-ids`, so that both tools prefill the same
#     PROMPT_LEN tokens, without <bos>), prefill and decode tokens/s, peak resident memory;
#   - llama.cpp, when LLAMA_CPP_DIR is set: the same weights registered in a temp root and
#     written by tantra's GGUF writer (`tantra export-gguf --type f32|bf16|q8_0`: llama.cpp's
#     names and keys, tantra's byte-level vocabulary), run by `llama-completion` greedy with
#     the same thread count and the same prompt bytes; its own timings (prompt eval, eval);
#   - transformers, when TRANSFORMERS_PYTHON (default /root/.cache/torch-check-venv/bin/python,
#     if it exists) imports torch and transformers (TRANSFORMERS_PYTHONPATH is added to its
#     PYTHONPATH): MambaForCausalLM at f32 on the same directory, offline, THREADS torch
#     threads, the ids `tantra run` fed, greedy TOKENS tokens (bench/hf_decode.py, best of 3,
#     run once after the rounds); its prefill and decode tokens/s beside tantra's f32, the
#     ratios tantra / transformers at each precision, and how many of its tokens equal tantra
#     f32's before the first difference (a check that both run the same model);
#   - the bandwidth limit of each precision: bytes of weights one decoding step reads /
#     measured read bandwidth (THREADS threads);
#   - greedy agreement: how many of the TOKENS generated tokens equal the f32 run's before the
#     first difference, for tantra bf16/q8 against tantra f32 and llama.cpp BF16/Q8_0 against
#     llama.cpp F32.
# The configurations take turns within each of ROUNDS rounds and the best round of each is
# kept, so the ratios compare runs made under the same load. Not a test: numbers depend on the
# machine and on what else runs.
set -euo pipefail

PROMPT_LEN="${PROMPT_LEN:-64}"
TOKENS="${TOKENS:-128}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-3}"
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup

echo "measuring memory bandwidth..." >&2
RAYON_NUM_THREADS="$THREADS" "$HELPER" bandwidth > "$WORK/bandwidth.json"
for d in f32 bf16 q8; do
  "$HELPER" bytes "$MODEL" "$d" > "$WORK/bytes_$d.json"
done

# The prompt: PROMPT_LEN printable ASCII bytes; tantra gets them as ids, which is what
# llama.cpp feeds (no <bos> in either).
PROMPT="$(bench_prompt "$PROMPT_LEN")"
PROMPT_IDS="$(bench_ids "$PROMPT")"
bench_llama

HF_PY="${TRANSFORMERS_PYTHON:-}"
if [ -z "$HF_PY" ] && [ -x /root/.cache/torch-check-venv/bin/python ]; then
  HF_PY=/root/.cache/torch-check-venv/bin/python
fi
HF_PATH="${TRANSFORMERS_PYTHONPATH:+$TRANSFORMERS_PYTHONPATH${PYTHONPATH:+:$PYTHONPATH}}"
HF_PATH="${HF_PATH:-${PYTHONPATH:-}}"
if [ -n "$HF_PY" ] && ! PYTHONPATH="$HF_PATH" "$HF_PY" -c "import torch, transformers" 2> /dev/null; then
  echo "$HF_PY cannot import torch and transformers (set TRANSFORMERS_PYTHONPATH?); transformers skipped" >&2
  HF_PY=""
fi

tantra_run() { # dtype round
  /usr/bin/time -f '%M' -o "$WORK/tantra_$1_$2.rss" \
    "$TANTRA" run mamba --weights "$MODEL" --input-ids "$PROMPT_IDS" --max-new-tokens "$TOKENS" \
    --dtype "$1" --threads "$THREADS" --ignore-eos --json > "$WORK/tantra_$1_$2.json" 2> "$WORK/tantra_$1_$2.err"
}
llama_run() { # type round
  /usr/bin/time -f '%M' -o "$WORK/llama_$1_$2.rss" \
    "$LLAMA_BIN" -m "$WORK/full_$1.gguf" -p "$PROMPT" -n "$TOKENS" -t "$THREADS" --temp 0 \
    --ignore-eos -no-cnv --no-display-prompt -c $((PROMPT_LEN + TOKENS + 16)) \
    > "$WORK/llama_$1_$2.out" 2> "$WORK/llama_$1_$2.err" < /dev/null
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  for d in f32 bf16 q8; do
    tantra_run "$d" "$r"
    if [ -n "$LLAMA_BIN" ]; then
      t=$d; [ "$d" = q8 ] && t=q8_0
      llama_run "$t" "$r" || { echo "llama.cpp $t failed:" >&2; tail -3 "$WORK/llama_${t}_$r.err" >&2; }
    fi
  done
done

if [ -n "$HF_PY" ]; then
  echo "transformers..." >&2
  IDS="$(python3 -c 'import json, sys; print(",".join(map(str, json.load(open(sys.argv[1]))["input_ids"])))' "$WORK/tantra_f32_1.json")"
  PYTHONPATH="$HF_PATH" "$HF_PY" bench/hf_decode.py "$MODEL" "$IDS" "$TOKENS" "$THREADS" \
    > "$WORK/transformers.json" 2> "$WORK/transformers.err" \
    || { echo "transformers failed:" >&2; tail -3 "$WORK/transformers.err" >&2; }
fi

python3 - "$WORK" "$PROMPT_LEN" "$TOKENS" "$THREADS" "$ROUNDS" "${LLAMA_BIN:-}" <<'EOF'
import json, os, re, sys
work, prompt_len, tokens, threads, rounds, llama = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
path = lambda n: os.path.join(work, n)
load = lambda n: json.load(open(path(n))) if os.path.exists(path(n)) else None
rss = lambda n: int(open(path(n)).read().split()[-1]) * 1024 if os.path.exists(path(n)) else 0
bw = load("bandwidth.json")
mib = lambda b: b / 2**20

def tantra(d):
    runs = [load(f"tantra_{d}_{r}.json") for r in range(1, rounds + 1)]
    runs = [x for x in runs if x]
    return {
        "prefill": max(x["prefill_tokens_per_second"] for x in runs),
        "decode": max(x["decode_tokens_per_second"] for x in runs),
        "rss": max(rss(f"tantra_{d}_{r}.rss") for r in range(1, rounds + 1)),
        "ids": runs[0]["output_ids"][len(runs[0]["input_ids"]):],
    }

def llama_one(t, r):
    err = path(f"llama_{t}_{r}.err")
    if not os.path.exists(err):
        return None
    text = open(err, errors="replace").read()
    p = re.search(r"prompt eval time\s*=.*?([\d.]+) tokens per second", text)
    e = re.search(r"[^t] eval time\s*=.*?([\d.]+) tokens per second", text)
    if not (p and e):
        return None
    return float(p.group(1)), float(e.group(1)), open(path(f"llama_{t}_{r}.out"), "rb").read()

def llama(t):
    runs = [x for x in (llama_one(t, r) for r in range(1, rounds + 1)) if x]
    if not runs:
        return None
    return {
        "prefill": max(x[0] for x in runs),
        "decode": max(x[1] for x in runs),
        "rss": max(rss(f"llama_{t}_{r}.rss") for r in range(1, rounds + 1)),
        "ids": list(runs[0][2]),
    }

def agree(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n

T = {d: tantra(d) for d in ("f32", "bf16", "q8")}
L = {d: llama(t) for d, t in (("f32", "f32"), ("bf16", "bf16"), ("q8", "q8_0"))} if llama else {}
print(f"full Mamba (57M), prompt {prompt_len} tokens, {tokens} new tokens, {threads} threads, "
      f"best of {rounds} interleaved rounds; {os.cpu_count()} CPUs, load {open('/proc/loadavg').read().split()[0]}")
print(f"read bandwidth {bw['read_gb_per_s']:.1f} GB/s, copy {bw['copy_gb_per_s']:.1f} GB/s ({bw['threads']} threads)")
print(f"{'':16} {'MiB/token':>9} {'BW limit':>9} {'decode':>8} {'prefill':>8} {'RSS MiB':>8} "
      f"{'llama dec':>9} {'llama pre':>9} {'llama RSS':>9} {'dec ratio':>9} {'pre ratio':>9} {'greedy=f32':>10} {'llama=F32':>9}")
for d in ("f32", "bf16", "q8"):
    b = load(f"bytes_{d}.json")["bytes_per_token"]
    limit = bw["read_gb_per_s"] * 1e9 / b
    t, l = T[d], L.get(d)
    row = (f"{'tantra ' + d:16} {mib(b):9.1f} {limit:9.1f} {t['decode']:8.1f} {t['prefill']:8.1f} "
           f"{mib(t['rss']):8.0f}")
    if l:
        row += (f" {l['decode']:9.1f} {l['prefill']:9.1f} {mib(l['rss']):9.0f} "
                f"{t['decode'] / l['decode']:8.2f}x {t['prefill'] / l['prefill']:8.2f}x")
    else:
        row += f" {'-':>9} {'-':>9} {'-':>9} {'-':>9} {'-':>9}"
    row += f" {agree(t['ids'], T['f32']['ids']):6}/{len(T['f32']['ids'])}"
    if l and L.get("f32"):
        row += f" {agree(l['ids'], L['f32']['ids']):5}/{len(L['f32']['ids'])}"
    print(row)
H = load("transformers.json")
if H:
    hf_ids = H["output_ids"][len(H["input_ids"]):]
    print(f"{'transformers f32':16} {'':9} {'':9} {H['decode_tokens_per_second']:8.1f} "
          f"{H['prefill_tokens_per_second']:8.1f} {mib(H['peak_rss_bytes']):8.0f}   "
          f"(torch {H['torch']}, transformers {H['transformers']}, {H['threads']} threads; "
          f"tokens = tantra f32's: {agree(hf_ids, T['f32']['ids'])}/{len(T['f32']['ids'])})")
    for d in ("f32", "bf16", "q8"):
        print(f"  tantra {d} / transformers f32: decode "
              f"{T[d]['decode'] / H['decode_tokens_per_second']:.2f}x, prefill "
              f"{T[d]['prefill'] / H['prefill_tokens_per_second']:.2f}x")
print("ratios: tantra / llama.cpp at the same precision (> 1: tantra faster); BW limit: decode "
      "tokens/s if every weight byte were read once at the measured read bandwidth; greedy=f32: "
      "generated tokens equal to the f32 run's before the first difference (llama.cpp: bytes of "
      "its output text against its F32 output)")
print(json.dumps({"tantra": {d: {k: v for k, v in T[d].items() if k != "ids"} for d in T},
                  "llama_cpp": {d: ({k: v for k, v in L[d].items() if k != "ids"} if L.get(d) else None) for d in L},
                  "transformers": ({k: v for k, v in H.items() if not k.endswith("_ids")} if H else None)}))
EOF
