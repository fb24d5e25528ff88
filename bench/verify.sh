#!/usr/bin/env bash
# Benchmark of the weights root: `tantra verify` throughput next to `sha256sum` on the same
# files, and `tantra list-weights` time on a registry of 10,000 versions.
#
#   bash bench/verify.sh [FILES] [SIZE_MB]     (default 4 files of 256 MB)
#
# Targets: verify at least as fast as sha256sum over the same files; list-weights under
# 100 ms for 10,000 versions. All runs use a warm page cache (each is run once before it is
# timed); the best of 3 (hashing) or 5 (listing) runs is reported. Everything is written under
# bench/out (BENCH_DIR), which is not tracked.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES="${1:-4}"
SIZE_MB="${2:-256}"
OUT="${BENCH_DIR:-bench/out}/verify"
mkdir -p "$OUT"
cargo build --release --quiet --bin tantra
TANTRA="$PWD/target/release/tantra"
ROOT="$OUT/root"
export TANTRA_ROOT="$ROOT"

# Wall-clock seconds of the best of N runs of a command (stdout discarded).
best_of() {
  local n="$1"; shift
  "$@" >/dev/null 2>&1 || true # warm-up (and the page cache)
  local best=""
  for _ in $(seq "$n"); do
    local t0 t1
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    local dt=$(( t1 - t0 ))
    if [ -z "$best" ] || [ "$dt" -lt "$best" ]; then best="$dt"; fi
  done
  python3 -c "print(f'{$best / 1e9:.3f}')"
}

# 1. Registered files to verify: synthetic safetensors files, registered once.
if [ ! -f "$ROOT/weight_config.json" ] || [ "$(ls "$ROOT/weights" | wc -l)" -ne "$FILES" ]; then
  rm -rf "$ROOT"
  for i in $(seq "$FILES"); do
    python3 - "$OUT/in.safetensors" "$SIZE_MB" "$i" <<'PYEOF'
import sys, json, struct, os
path, mb, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n = mb * 1000 * 1000 // 4 // 4 * 4
header = {f"t{k}": {"dtype": "F32", "shape": [n // 4], "data_offsets": [k * n, (k + 1) * n]} for k in range(4)}
h = json.dumps(header).encode()
h += b" " * (-len(h) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    chunk = os.urandom(1 << 20)
    left = 4 * n
    while left:
        k = min(left, len(chunk))
        f.write(chunk[:k])
        left -= k
    f.seek(8 + len(h))
    f.write(struct.pack("<I", seed))  # make each file's content distinct
PYEOF
    "$TANTRA" register "$OUT/in.safetensors" --model bench --version "v$i" >/dev/null
  done
  rm -f "$OUT/in.safetensors"
fi
TOTAL=$(du -cb "$ROOT"/weights/* | tail -1 | cut -f1)
MB=$(python3 -c "print(f'{$TOTAL / 1e6:.0f}')")
echo "verify: $FILES files, $MB MB, page cache warm; $(nproc) cores; sha_ni: $(grep -qo sha_ni /proc/cpuinfo && echo yes || echo no)"

T_SUM=$(best_of 3 sha256sum "$ROOT"/weights/*)
T_SUM2=$(best_of 3 bash -c "ls '$ROOT'/weights/* | xargs -P 2 -n 1 sha256sum")
T_VER=$(best_of 3 "$TANTRA" verify)
T_VER1=$(best_of 3 env TANTRA_JOBS=1 "$TANTRA" verify)
rate() { python3 -c "print(f'{$TOTAL / $1 / 1e6:8.0f} MB/s  ({$1:.3f} s)')"; }
printf '  %-34s %s\n' "sha256sum (1 process)" "$(rate "$T_SUM")"
printf '  %-34s %s\n' "sha256sum (xargs -P 2)" "$(rate "$T_SUM2")"
printf '  %-34s %s\n' "tantra verify (1 thread)" "$(rate "$T_VER1")"
printf '  %-34s %s\n' "tantra verify (2 threads, default)" "$(rate "$T_VER")"
"$TANTRA" verify >/dev/null || { echo "verify found problems" >&2; exit 1; }

# 2. list-weights on a registry of 10,000 versions x 3 formats (files need not exist to list).
BIG="$OUT/big"
rm -rf "$BIG"
mkdir -p "$BIG"
python3 - "$BIG/weight_config.json" <<'PYEOF'
import sys, json
models = {}
for m in range(100):
    versions = {}
    for v in range(100):
        fmts = {}
        for f, ext in (("safetensors", "safetensors"), ("pt", "pt"), ("bin", "bin")):
            fmts[f] = {"path": f"weights/model{m}_v{v}_{f}.{ext}", "bytes": 123456789,
                       "sha256": f"{m:04d}{v:04d}" + "ab" * 28, "created": "2025-01-02T03:04:05.123456Z",
                       "source": {"kind": "converted", "from": "safetensors"}}
        versions[f"v{v}"] = {"created": "2025-01-02T03:04:05.123456Z", "parameters": 130000000,
                             "tensors": 292, "dtypes": ["F32"], "content": "cd" * 32,
                             "tags": [], "formats": fmts}
    models[f"model{m}"] = {"default": "v0", "versions": versions}
json.dump({"schema": 1, "models": models}, open(sys.argv[1], "w"), separators=(",", ":"))
PYEOF
SIZE=$(stat -c %s "$BIG/weight_config.json")
echo "list-weights: registry of 10,000 versions (30,000 files), $((SIZE / 1000)) KB"
# The reference: Python reading the same registry with its C JSON parser, and nothing else.
T_PY=$(best_of 5 python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$BIG/weight_config.json")
T_LIST=$(best_of 5 "$TANTRA" --root "$BIG" list-weights)
T_JSON=$(best_of 5 "$TANTRA" --root "$BIG" list-weights --json)
T_ONE=$(best_of 5 "$TANTRA" --root "$BIG" list-weights --model model7)
T_ALL=$(best_of 5 "$TANTRA" --root "$BIG" list-weights --all-formats)
T_ALLJ=$(best_of 5 "$TANTRA" --root "$BIG" list-weights --all-formats --json)
ms() { python3 -c "print(f'{$1 * 1000:6.1f} ms  ({$1 / $T_PY:.2f}x python json.load)')"; }
printf '  %-44s %s\n' "python3 json.load (reference)" "$(ms "$T_PY")"
printf '  %-44s %s\n' "list-weights (per version, table)" "$(ms "$T_LIST")"
printf '  %-44s %s\n' "list-weights --json (per version)" "$(ms "$T_JSON")"
printf '  %-44s %s\n' "list-weights --model (100 versions)" "$(ms "$T_ONE")"
printf '  %-44s %s\n' "list-weights --all-formats (per file, table)" "$(ms "$T_ALL")"
printf '  %-44s %s\n' "list-weights --all-formats --json" "$(ms "$T_ALLJ")"
