#!/usr/bin/env bash
# Benchmark: convert a >= 200 MB PyTorch file to safetensors, next to `cp` of the same file,
# and peak memory next to the file size, in one run.
#
#   bash bench/convert.sh [SIZE_MB]      (default 256)
#
# The input is written by real torch.save when a Python with torch is available
# (TORCH_PYTHON, default the torch-check venv), otherwise by tantra itself from a synthetic
# safetensors file. Reports the median of RUNS rounds (default 5; the commands take turns within
# a round, each started after a `sync` with no output present), the input's page cache warm,
# and the load average before and after: on a shared machine, numbers taken under load are
# not comparable. TANTRA=/path/to/tantra measures that binary instead of building this tree
# (to compare two builds on the same machine at the same time).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB="${1:-256}"
OUT="${BENCH_DIR:-bench/out}"
mkdir -p "$OUT"
RUNS="${RUNS:-5}"
if [ -z "${TANTRA:-}" ]; then
  cargo build --release --quiet --bin tantra
  TANTRA="$PWD/target/release/tantra"
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
PY="${TORCH_PYTHON:-$HOME/.cache/torch-check-venv/bin/python}"
IN="$OUT/input.pt"

if [ ! -f "$IN" ] || [ "$(stat -c %s "$IN")" -lt $((SIZE_MB * 1000000)) ]; then
  if [ -x "$PY" ] && "$PY" -c "import torch" 2>/dev/null; then
    echo "writing $IN with torch.save (${SIZE_MB} MB of f32 in 16 tensors)" >&2
    "$PY" - "$IN" "$SIZE_MB" <<'PYEOF'
import sys, torch
path, mb = sys.argv[1], int(sys.argv[2])
g = torch.Generator().manual_seed(0)
per = mb * 1024 * 1024 // 4 // 16
sd = {f"layers.{i}.weight": torch.randn(per // 1024, 1024, generator=g) for i in range(16)}
torch.save(sd, path)
PYEOF
  else
    echo "no torch: writing $IN with tantra from a synthetic safetensors file" >&2
    python3 - "$OUT/input.safetensors" "$SIZE_MB" <<'PYEOF'
import sys, json, struct, random
path, mb = sys.argv[1], int(sys.argv[2])
per = mb * 1024 * 1024 // 4 // 16
rows = per // 1024
header, off = {}, 0
for i in range(16):
    n = rows * 1024 * 4
    header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [rows, 1024], "data_offsets": [off, off + n]}
    off += n
h = json.dumps(header).encode()
h += b" " * ((8 - len(h) % 8) % 8)
rnd = random.Random(0)
block = bytes(rnd.getrandbits(8) for _ in range(1 << 20))
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h))); f.write(h)
    left = off
    while left:
        k = min(left, len(block)); f.write(block[:k]); left -= k
PYEOF
    "$TANTRA" convert --force "$OUT/input.safetensors" "$IN" 2>/dev/null
  fi
fi
BYTES=$(stat -c %s "$IN")
cat "$IN" > /dev/null   # warm the page cache

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() { # prints seconds; starts from a clean slate: no output, nothing dirty in the page
  # cache, the input read once more (proactive reclaim may have evicted it since the last run)
  local s e
  rm -f "$OUT/out.safetensors" "$OUT/copy.pt"; sync; cat "$IN" > /dev/null; sleep 0.2
  s=$(date +%s%N); "$@" >/dev/null 2>&1; e=$(date +%s%N)
  awk -v d=$((e - s)) 'BEGIN { printf "%.4f\n", d / 1e9 }'
}
cp_sync() { cp "$1" "$2" && sync "$2"; }
# The four commands take turns, round after round, so that a slow spell of a shared machine
# falls on all of them alike; each is reported as the median of its RUNS rounds. Each command
# writes over the blocks the one before it freed: on this development machine's virtual disk,
# writing to blocks never written before was several times slower (for `cp` + `sync` as much
# as for tantra), which would measure the disk's provisioning, not the tools.
: > "$OUT/times"
for _ in $(seq "$RUNS"); do
  echo "cp $(timeit cp "$IN" "$OUT/copy.pt")" >> "$OUT/times"
  echo "cpsync $(timeit cp_sync "$IN" "$OUT/copy.pt")" >> "$OUT/times"
  echo "conv $(timeit "$TANTRA" convert --force "$IN" "$OUT/out.safetensors")" >> "$OUT/times"
  echo "noverify $(timeit "$TANTRA" convert --force --no-verify "$IN" "$OUT/out.safetensors")" >> "$OUT/times"
done
pick() { awk -v k="$1" '$1 == k {print $2}' "$OUT/times" | median; }
T_CP=$(pick cp)
T_CPSYNC=$(pick cpsync)
T_CONV=$(pick conv)
T_NOVERIFY=$(pick noverify)
RSS_KB=$(/usr/bin/time -f %M "$TANTRA" convert --force "$IN" "$OUT/out.safetensors" 2>&1 >/dev/null | tail -n 1)
T_PY=""
if [ -x "$PY" ] && "$PY" -c "import torch, safetensors" 2>/dev/null; then
  T_PY=$(for _ in 1 2 3; do
    "$PY" - "$IN" "$OUT/py.safetensors" <<'PYEOF'
import sys, time, torch
from safetensors.torch import save_file
s = time.perf_counter()
sd = torch.load(sys.argv[1], weights_only=True, map_location="cpu")
save_file({k: v.contiguous() for k, v in sd.items()}, sys.argv[2], metadata={"format": "pt"})
print(time.perf_counter() - s)
PYEOF
  done | median)
fi

rm -f "$OUT/out.safetensors" "$OUT/copy.pt" "$OUT/times"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
awk -v b="$BYTES" -v cp="$T_CP" -v cps="$T_CPSYNC" -v conv="$T_CONV" -v nov="$T_NOVERIFY" -v rss="$RSS_KB" -v py="$T_PY" 'BEGIN {
  printf "input                      %.1f MB (%s)\n", b/1e6, "'"$IN"'"
  printf "cp                         %.3f s\n", cp
  printf "cp + sync (durable copy)   %.3f s\n", cps
  printf "tantra convert (verified)  %.3f s   %.2fx cp   %.2fx cp+sync\n", conv, conv/cp, conv/cps
  printf "tantra convert --no-verify %.3f s   %.2fx cp   %.2fx cp+sync\n", nov, nov/cp, nov/cps
  if (py != "") printf "torch.load + save_file     %.3f s   %.2fx cp  (tantra verified is %.1fx faster)\n", py, py/cp, py/conv
  printf "peak RSS (verified)        %.1f MB  = %.3f of the file size\n", rss/1024, rss*1024/b
  printf "median of %s runs; load average %s before, %s after; %s\n", "'"$RUNS"'", "'"$LOAD_BEFORE"'", "'"$LOAD_AFTER"'", "'"$TANTRA"'"
}'
