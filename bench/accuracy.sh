#!/usr/bin/env bash
# Accuracy of bf16 and 8-bit weights against f32 on the full Mamba, tantra and llama.cpp side
# by side, each against its own f32, measured the same way in one run:
#
#   LLAMA_CPP_DIR=/work/llama/build LLAMA_CPP_SRC=/path/to/llama.cpp bench/accuracy.sh
#   (PROMPTS=8 PROMPT_LEN=64 TOKENS=256 THREADS=2; without LLAMA_CPP_DIR and LLAMA_CPP_SRC
#   only tantra's side is measured)
#
# LLAMA_CPP_DIR is a build with bin/libllama.so (and libggml*.so), LLAMA_CPP_SRC the source
# tree with include/llama.h and ggml/include: bench/llama_logits.cpp is compiled against them
# with c++. The model is the `full` preset (seed 0) written as a Hugging Face directory;
# llama.cpp gets the same weights through tantra's GGUF export (`runtime_bench gguf`, what
# `tantra import-hf` + `tantra export-gguf --type f32|bf16|q8_0` write), whose byte-level
# vocabulary gives token i the byte i, and both sides are fed token ids directly (no
# tokenizer, no BOS), so they see the same ids. tantra's side is `runtime_bench score|greedy`
# (the runtime's prefill and step, as `tantra run` uses them).
#
# Prompt set: PROMPTS sequences of PROMPT_LEN ids, (i * (7 + 4k) + 3k + 1) mod 256 for prompt
# k. For each precision against f32 at the same tool:
#   - max abs error: max over all prompt positions and vocabulary entries of |x - x_f32|;
#   - max rel error: for each position, max |x - x_f32| / max |x_f32| over the vocabulary;
#     the largest over positions;
#   - greedy agreement: each prompt continued TOKENS tokens greedily, (a) tokens equal to the
#     f32 run's before the first difference, summed over prompts, and (b) teacher-forced: the
#     prompt plus the f32 run's tokens fed as they are, the fraction of the TOKENS positions
#     whose argmax is the f32 run's next token (one early difference does not count against
#     every later position, so this is the fairer number).
# The f32 rows check the method: teacher-forced f32 against its own greedy run (1.0 unless a
# batch and a step disagree). Only agreement and errors are printed, no speed: it does not
# matter what else runs on the machine.
set -euo pipefail

PROMPTS="${PROMPTS:-8}"
PROMPT_LEN="${PROMPT_LEN:-64}"
TOKENS="${TOKENS:-256}"
THREADS="${THREADS:-2}"
cd "$(dirname "$0")/.."

echo "building (release)..." >&2
cargo build --release --quiet -p tantra-runtime --example runtime_bench

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
HELPER=target/release/examples/runtime_bench
MODEL="$WORK/mamba_full"
"$HELPER" write "$MODEL" full

python3 - "$PROMPTS" "$PROMPT_LEN" > "$WORK/prompts.txt" <<'EOF'
import sys
n, length = map(int, sys.argv[1:])
for k in range(n):
    print(" ".join(str((i * (7 + 4 * k) + 3 * k + 1) % 256) for i in range(length)))
EOF

LLAMA=""
if [ -n "${LLAMA_CPP_DIR:-}" ] && [ -n "${LLAMA_CPP_SRC:-}" ]; then
  LIB="$LLAMA_CPP_DIR/bin"
  [ -e "$LIB/libllama.so" ] || LIB="$LLAMA_CPP_DIR"
  if [ ! -e "$LIB/libllama.so" ] || [ ! -e "$LLAMA_CPP_SRC/include/llama.h" ]; then
    echo "no libllama.so under LLAMA_CPP_DIR=$LLAMA_CPP_DIR or no include/llama.h under" \
      "LLAMA_CPP_SRC=$LLAMA_CPP_SRC; llama.cpp skipped" >&2
  else
    echo "compiling bench/llama_logits.cpp..." >&2
    c++ -O2 -std=c++17 -I"$LLAMA_CPP_SRC/include" -I"$LLAMA_CPP_SRC/ggml/include" \
      bench/llama_logits.cpp -o "$WORK/llama_logits" -L"$LIB" -lllama -Wl,-rpath,"$LIB"
    LLAMA="$WORK/llama_logits"
    echo "writing GGUF files..." >&2
    for t in f32 bf16 q8_0; do
      "$HELPER" gguf "$MODEL" "$t" "$WORK/full_$t.gguf"
    done
  fi
else
  echo "LLAMA_CPP_DIR and LLAMA_CPP_SRC not both set; llama.cpp skipped" >&2
fi

# run SIDE DTYPE MODE IDS ARG: one invocation of either side's tool.
run() {
  case "$1" in
    tantra) "$HELPER" "$3" "$MODEL" "$2" "$4" "$5" ;;
    llama)
      local t=$2
      [ "$t" = q8 ] && t=q8_0
      "$LLAMA" "$WORK/full_$t.gguf" "$3" "$4" "$5" "$THREADS" ;;
  esac
}

SIDES=tantra
[ -n "$LLAMA" ] && SIDES="tantra llama"
for side in $SIDES; do
  echo "$side: greedy f32..." >&2
  run "$side" f32 greedy "$WORK/prompts.txt" "$TOKENS" > "$WORK/${side}_f32.greedy.json"
  # Teacher forcing: each prompt followed by the f32 run's tokens (the last one predicts
  # nothing and is left out).
  python3 - "$WORK/prompts.txt" "$WORK/${side}_f32.greedy.json" > "$WORK/${side}_forced.txt" <<'EOF'
import json, sys
prompts = [l.split() for l in open(sys.argv[1]) if l.strip()]
gen = json.load(open(sys.argv[2]))["generated"]
for p, g in zip(prompts, gen):
    print(" ".join(p + [str(t) for t in g[:-1]]))
EOF
  for d in f32 bf16 q8; do
    echo "$side: $d..." >&2
    run "$side" "$d" score "$WORK/prompts.txt" "$WORK/${side}_$d.prompts.f32" > /dev/null
    run "$side" "$d" score "$WORK/${side}_forced.txt" "$WORK/${side}_$d.forced.f32" > /dev/null
    [ "$d" = f32 ] || run "$side" "$d" greedy "$WORK/prompts.txt" "$TOKENS" > "$WORK/${side}_$d.greedy.json"
  done
done

python3 - "$WORK" "$PROMPTS" "$PROMPT_LEN" "$TOKENS" "$SIDES" <<'EOF'
import array, json, os, sys
work, prompts, plen, tokens, sides = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5].split()
p = lambda n: os.path.join(work, n)

def floats(name):
    a = array.array("f")
    with open(p(name), "rb") as f:
        a.frombytes(f.read())
    if sys.byteorder != "little":
        a.byteswap()
    return a

def rows(a, vocab):
    return [a[i:i + vocab] for i in range(0, len(a), vocab)]

def argmax(r):
    best = 0
    for i in range(1, len(r)):
        if r[i] > r[best]:
            best = i
    return best

def errors(side, d, vocab):
    ref, other = rows(floats(f"{side}_f32.prompts.f32"), vocab), rows(floats(f"{side}_{d}.prompts.f32"), vocab)
    assert len(ref) == len(other) == prompts * plen, (side, d, len(ref), len(other))
    max_abs = max_rel = 0.0
    for a, b in zip(other, ref):
        e = max(abs(x - y) for x, y in zip(a, b))
        max_abs = max(max_abs, e)
        max_rel = max(max_rel, e / max(abs(y) for y in b))
    return max_abs, max_rel

def agreement(side, d, vocab):
    ref = json.load(open(p(f"{side}_f32.greedy.json")))["generated"]
    got = json.load(open(p(f"{side}_{d}.greedy.json")))["generated"] if d != "f32" else ref
    prefix = []
    for a, b in zip(got, ref):
        n = 0
        while n < min(len(a), len(b)) and a[n] == b[n]:
            n += 1
        prefix.append(n)
    forced = rows(floats(f"{side}_{d}.forced.f32"), vocab)
    length = plen + tokens - 1
    assert len(forced) == prompts * length, (side, d, len(forced))
    same = 0
    for k, g in enumerate(ref):
        for j in range(tokens):
            same += argmax(forced[k * length + plen - 1 + j]) == g[j]
    return prefix, same / (prompts * tokens)

names = {"tantra": {"f32": "tantra f32", "bf16": "tantra bf16", "q8": "tantra q8"},
         "llama": {"f32": "llama.cpp F32", "bf16": "llama.cpp BF16", "q8": "llama.cpp Q8_0"}}
print(f"full Mamba (57M), {prompts} prompts x {plen} tokens, greedy {tokens} tokens; "
      f"errors against the same tool's f32 over the {prompts * plen} prompt positions")
print(f"{'':16} {'max abs err':>12} {'max rel err':>12} {'greedy prefix = f32':>22} "
      f"{'min prefix':>10} {'teacher-forced top-1':>21}")
out = {}
for side in sides:
    vocab = json.load(open(p(f"{side}_f32.greedy.json")))["vocab"]
    for d in ("f32", "bf16", "q8"):
        prefix, top1 = agreement(side, d, vocab)
        ea, er = errors(side, d, vocab) if d != "f32" else (0.0, 0.0)
        total = sum(prefix)
        print(f"{names[side][d]:16} {ea:12.3e} {er:12.3e} {total:>13}/{prompts * tokens} "
              f"({total / (prompts * tokens):4.2f}) {min(prefix):>7}/{tokens} {top1:21.4f}")
        out.setdefault(side, {})[d] = {"max_abs": ea, "max_rel": er, "greedy_prefix": prefix,
                                       "teacher_forced_top1": top1}
print("max rel err: per position, max |x - x_f32| / max |x_f32|, the largest over positions; "
      "greedy prefix: generated tokens equal to the f32 run's before the first difference, summed "
      "over prompts; teacher-forced top-1: positions whose argmax is the f32 run's next token when "
      "fed the f32 run's tokens (the f32 rows: a batch against token-by-token decoding)")
print(json.dumps(out))
EOF
