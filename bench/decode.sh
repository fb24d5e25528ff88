#!/usr/bin/env bash
# Decode benchmark of the full Mamba (57M parameters, f32, CPU).
#
#   bench/decode.sh                 PROMPT_LEN=64 TOKENS=128 by default
#   PROMPT_LEN=32 TOKENS=256 bench/decode.sh
#
# Writes the `full` preset (seed 0) as a Hugging Face directory into a temp dir, then reports,
# from one run on this machine:
#   - tantra: `tantra run` (the command people use, one run) and the in-process helper (best
#     of three runs, like the transformers figure), decode and prefill tokens/s, peak
#     resident memory;
#   - the memory-bandwidth limit: bytes of weights one decoding step reads / measured copy
#     bandwidth (all threads, STREAM convention: bytes read + bytes written), and the same with
#     the read-only bandwidth (decoding only reads, so that is the tighter bound);
#   - transformers' MambaForCausalLM on the same weights, when a Python with torch and
#     transformers is available ($PYTHON, else the torch-check venv, else python3), and whether
#     its greedy output equals ours.
# Not a test: numbers depend on the machine and on what else runs. Run it on a quiet machine.
set -euo pipefail

PROMPT_LEN="${PROMPT_LEN:-64}"
TOKENS="${TOKENS:-128}"
cd "$(dirname "$0")/.."

echo "building (release)..." >&2
cargo build --release --quiet -p tantra-cli -p tantra-runtime --example runtime_bench

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
HELPER=target/release/examples/runtime_bench
MODEL="$WORK/mamba_full"
"$HELPER" write "$MODEL" full

echo "measuring memory bandwidth..." >&2
"$HELPER" bandwidth > "$WORK/bandwidth.json"

echo "tantra (in-process helper)..." >&2
"$HELPER" decode "$MODEL" "$PROMPT_LEN" "$TOKENS" > "$WORK/helper.json"

echo "tantra run..." >&2
IDS="$(python3 -c "print(','.join(str((i * 7 + 3) % 256) for i in range($PROMPT_LEN)))")"
/usr/bin/time -f '%M' -o "$WORK/cli_rss_kb" \
  target/release/tantra run mamba --weights "$MODEL" --input-ids "$IDS" \
  --max-new-tokens "$TOKENS" --json > "$WORK/cli.json" 2> "$WORK/cli.err"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in "${TORCH_CHECK_VENV:-$HOME/.cache/torch-check-venv}/bin/python" python3; do
    if command -v "$cand" > /dev/null 2>&1 && "$cand" -c 'import torch, transformers' 2> /dev/null; then
      PY="$cand"
      break
    fi
  done
fi
if [ -n "$PY" ]; then
  echo "transformers ($PY)..." >&2
  "$PY" bench/hf_decode.py "$MODEL" "$PROMPT_LEN" "$TOKENS" > "$WORK/hf.json" 2> "$WORK/hf.err" \
    || { echo "transformers run failed:" >&2; tail -5 "$WORK/hf.err" >&2; rm -f "$WORK/hf.json"; }
else
  echo "transformers: no Python with torch and transformers found; skipped" >&2
fi

python3 - "$WORK" "$PROMPT_LEN" "$TOKENS" <<'EOF'
import json, os, sys
work, prompt_len, tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
load = lambda n: json.load(open(os.path.join(work, n))) if os.path.exists(os.path.join(work, n)) else None
bw, helper, cli, hf = load("bandwidth.json"), load("helper.json"), load("cli.json"), load("hf.json")
cli_rss = int(open(os.path.join(work, "cli_rss_kb")).read().split()[-1]) * 1024
bpt = helper["bytes_per_token"]
limit = bw["copy_gb_per_s"] * 1e9 / bpt
read_limit = bw["read_gb_per_s"] * 1e9 / bpt
mib = lambda b: b / 2**20
print(f"full Mamba (57M), f32, prompt {prompt_len} tokens, {tokens} new tokens, "
      f"{os.cpu_count()} CPUs, kernels {helper['kernel']}, {helper['threads']} threads")
print(f"weights read per token: {mib(bpt):.1f} MiB; copy bandwidth {bw['copy_gb_per_s']:.1f} GB/s, "
      f"read bandwidth {bw['read_gb_per_s']:.1f} GB/s")
print(f"{'':28} {'decode tok/s':>12} {'prefill tok/s':>13} {'peak RSS':>10}")
row = lambda name, d, p, r: print(f"{name:28} {d:12.1f} {p:13.1f} {mib(r):8.0f} MiB")
row("tantra run", cli["decode_tokens_per_second"], cli["prefill_tokens_per_second"], cli_rss)
row("tantra (in-process helper)", helper["decode_tokens_per_second"],
    helper["prefill_tokens_per_second"], helper["peak_rss_bytes"] or 0)
print(f"{'bandwidth limit (copy)':28} {limit:12.1f}")
print(f"{'bandwidth limit (read)':28} {read_limit:12.1f}")
if hf:
    row(f"transformers (torch {hf['torch']})", hf["decode_tokens_per_second"],
        hf["prefill_tokens_per_second"], hf["peak_rss_bytes"])
best = max(cli["decode_tokens_per_second"], helper["decode_tokens_per_second"])
print(f"tantra decode / bandwidth limit: {best / limit:.2f} of the copy limit (target >= 0.5), "
      f"{best / read_limit:.2f} of the read limit")
if hf:
    print(f"tantra decode / transformers: {best / hf['decode_tokens_per_second']:.1f}x (target >= 3)")
    same = hf["output_ids"] == cli["output_ids"]
    print(f"greedy output equals transformers': {same}")
EOF
