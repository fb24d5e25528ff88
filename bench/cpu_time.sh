#!/usr/bin/env bash
# CPU time per token of prefill and of decoding, one thread, tantra against llama.cpp at each
# weight precision, on the full Mamba (57M parameters): the comparison that holds on a busy
# machine, where wall-clock tokens/s (bench/decode.sh) measure the load as much as the code.
#
#   LLAMA_CPP_DIR=/work/llama/build bench/cpu_time.sh      PROMPT_LEN=512 TOKENS=512 ROUNDS=3
#
# Each figure is a difference of two runs' user+system CPU seconds (/usr/bin/time), so the
# loading and the process start cancel out:
#   prefill = run(PROMPT_LEN-token prompt, 1 new token) - run(1-token prompt, 1 new token)
#   decode  = run(1-token prompt, TOKENS + 1 new tokens) - run(1-token prompt, 1 new token)
# with `--threads 1` (llama.cpp: `-t 1`), each difference taken within a round, the median of
# ROUNDS rounds, the two programs taking turns. A program waiting for a core uses no CPU time, so other work on the machine
# changes these figures far less than it changes wall-clock rates (it still shares the memory
# bandwidth and the caches). One thread says nothing about how well each program uses two.
# Not a test.
set -euo pipefail

PROMPT_LEN="${PROMPT_LEN:-512}"
TOKENS="${TOKENS:-512}"
ROUNDS="${ROUNDS:-3}"
cd "$(dirname "$0")/.."

. bench/common.sh
bench_setup
bench_llama
PROMPT="$(bench_prompt "$PROMPT_LEN")"

# cpu NAME PROGRAM ARGS...: user + system CPU seconds of one run, appended to $WORK/NAME.
cpu() {
  local name="$1"
  shift
  /usr/bin/time -o "$WORK/time" -f '%U %S' "$@" > /dev/null 2> "$WORK/err" < /dev/null \
    || { echo "failed: $*" >&2; tail -3 "$WORK/err" >&2; return 1; }
  awk '{ print $1 + $2 }' "$WORK/time" >> "$WORK/$name"
}
tantra() { # name dtype prompt new_tokens (the prompt's bytes as ids, as llama.cpp feeds them)
  cpu "$1" "$TANTRA" run mamba --weights "$MODEL" --input-ids "$(bench_ids "$3")" \
    --max-new-tokens "$4" --ignore-eos --dtype "$2" --threads 1 --json
}
llama() { # name type prompt new_tokens
  cpu "$1" "$LLAMA_BIN" -m "$WORK/full_$2.gguf" -p "$3" -n "$4" -t 1 --temp 0 --ignore-eos \
    -no-cnv --no-display-prompt -c $((PROMPT_LEN + TOKENS + 16))
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  for d in f32 bf16 q8; do
    tantra "tantra_${d}_base" "$d" a 1
    tantra "tantra_${d}_prefill" "$d" "$PROMPT" 1
    tantra "tantra_${d}_decode" "$d" a $((TOKENS + 1))
    if [ -n "$LLAMA_BIN" ]; then
      t=$d; [ "$d" = q8 ] && t=q8_0
      llama "llama_${d}_base" "$t" a 1
      llama "llama_${d}_prefill" "$t" "$PROMPT" 1
      llama "llama_${d}_decode" "$t" a $((TOKENS + 1))
    fi
  done
done

python3 - "$WORK" "$PROMPT_LEN" "$TOKENS" "$ROUNDS" <<'EOF'
import os, sys
work, prompt_len, tokens, rounds = sys.argv[1], *map(int, sys.argv[2:5])
def runs(name):
    p = os.path.join(work, name)
    return [float(x) for x in open(p).read().split()] if os.path.exists(p) else None
def rate(prog, d, what, count):
    # Paired within each round (the base run of the same round), then the median round.
    base, full = runs(f"{prog}_{d}_base"), runs(f"{prog}_{d}_{what}")
    if not base or not full:
        return None
    diffs = sorted(f - b for b, f in zip(base, full))
    mid = diffs[len(diffs) // 2] if len(diffs) % 2 else (diffs[len(diffs) // 2 - 1] + diffs[len(diffs) // 2]) / 2
    return count / mid if mid > 0 else float("nan")
def rates(prog, d):
    pre, dec = rate(prog, d, "prefill", prompt_len - 1), rate(prog, d, "decode", tokens)
    return None if pre is None or dec is None else (pre, dec)
print(f"full Mamba (57M), one thread, tokens per CPU-second (median of {rounds} rounds); prefill of "
      f"{prompt_len} tokens, decoding of {tokens}; load {open('/proc/loadavg').read().split()[0]}")
print(f"{'':8} {'tantra pre':>10} {'llama pre':>10} {'ratio':>7} {'tantra dec':>10} {'llama dec':>10} {'ratio':>7}")
for d in ("f32", "bf16", "q8"):
    t, l = rates("tantra", d), rates("llama", d)
    row = f"{d:8} {t[0]:10.1f} "
    row += f"{l[0]:10.1f} {t[0] / l[0]:6.2f}x " if l else f"{'-':>10} {'-':>7} "
    row += f"{t[1]:10.1f} "
    row += f"{l[1]:10.1f} {t[1] / l[1]:6.2f}x" if l else f"{'-':>10} {'-':>7}"
    print(row)
print("ratio: tantra / llama.cpp (> 1: tantra does the same work in less CPU time)")
EOF
