#!/usr/bin/env bash
# Benchmark of remotes: `tantra push`/`pull` of the full Mamba weights to a local three-node
# Garage cluster, next to a plain upload/download of the same files by rclone (Debian's
# package) against the same cluster in the same run, and the bytes each sends.
#
#   bash bench/remote.sh
#
# Reports MB/s of the first push of one format (safetensors) and its pull against rclone's
# copy of the same file (ratios), then the bytes sent by a push of the other formats (pt, bin)
# of the same version and of a copy with 5% of its tensors changed, against what a whole-file
# tool sends (the files' sizes). Targets: push and pull >= 0.9x rclone; other formats < 2% and
# the 5% copy < 10% of the whole-file bytes. Everything lives under bench/out/remote (BENCH_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${BENCH_DIR:-bench/out}/remote"
mkdir -p "$OUT"
export PATH="$HOME/.cargo/bin:$PATH"
command -v rclone >/dev/null || { echo "rclone missing: apt-get install rclone" >&2; exit 1; }
command -v garage >/dev/null || { echo "garage missing: cargo install --locked garage" >&2; exit 1; }
cargo build --release --quiet --bin tantra
TANTRA="$PWD/target/release/tantra"

# The weights: full Mamba in every format (made once, kept).
SRC="$OUT/src"
if [ ! -f "$SRC/weight_config.json" ]; then
  "$TANTRA" --root "$SRC" create-model-weights --models mamba --formats all >/dev/null
fi
ST="$SRC/weights/mamba_full_safetensors.safetensors"
PT="$SRC/weights/mamba_full_pt.pt"
BIN="$SRC/weights/mamba_full_bin.bin"
size() { stat -c %s "$1"; }

CLUSTER="$OUT/cluster"
rm -rf "$CLUSTER"
GARAGE_ENV=$(bash scripts/garage-cluster start "$CLUSTER")
eval "$GARAGE_ENV"
trap 'bash scripts/garage-cluster stop "$CLUSTER"' EXIT
RUN="run$(date +%s)"

# rclone, configured by environment for the same cluster and key.
export RCLONE_CONFIG_G_TYPE=s3 RCLONE_CONFIG_G_PROVIDER=Other RCLONE_CONFIG_G_ENDPOINT="$TANTRA_S3_ENDPOINT"
export RCLONE_CONFIG_G_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" RCLONE_CONFIG_G_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY"
export RCLONE_CONFIG_G_REGION=garage RCLONE_CONFIG_G_FORCE_PATH_STYLE=true

# The AWS SDK inside rclone refuses to start when AWS_CA_BUNDLE is set (plain-HTTP endpoint).
rclone() { env -u AWS_CA_BUNDLE RCLONE_CONFIG=/dev/null rclone "$@"; }

secs() { python3 -c "print(f'{($2 - $1) / 1e9:.3f}')"; }
now() { date +%s%N; }

# A copy of the safetensors file with every 20th tensor changed (one byte flipped each).
FT="$OUT/ft5.safetensors"
python3 - "$ST" "$FT" <<'PYEOF'
import sys, json, struct, shutil
src, dst = sys.argv[1], sys.argv[2]
shutil.copyfile(src, dst)
with open(dst, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(n))
    names = sorted(k for k in header if k != "__metadata__")
    for name in names[::20]:
        start = header[name]["data_offsets"][0]
        f.seek(8 + n + start)
        b = f.read(1)
        f.seek(8 + n + start)
        f.write(bytes([b[0] ^ 1]))
    print(f"changed {len(names[::20])} of {len(names)} tensors", file=sys.stderr)
PYEOF

ROOT="$OUT/pushroot"
rm -rf "$ROOT"
cp -r "$SRC" "$ROOT"
"$TANTRA" --root "$ROOT" remote add g "s3://$TANTRA_S3_BUCKET/$RUN/tantra" --endpoint "$TANTRA_S3_ENDPOINT" --region garage 2>/dev/null

# 1. First push of one format vs rclone upload of the same file.
t0=$(now); rclone copy "$ST" "g:$TANTRA_S3_BUCKET/$RUN/plain/" ; t1=$(now)
R_UP=$(secs "$t0" "$t1")
t0=$(now); "$TANTRA" --root "$ROOT" push mamba:full --formats safetensors --json > "$OUT/push1.json"; t1=$(now)
T_UP=$(secs "$t0" "$t1")
# 2. The other formats of the same version.
"$TANTRA" --root "$ROOT" push mamba:full --json > "$OUT/push2.json"
# 3. A copy with 5% of its tensors changed.
"$TANTRA" --root "$ROOT" register "$FT" --model mamba --version ft5 >/dev/null
"$TANTRA" --root "$ROOT" push mamba:ft5 --json > "$OUT/push3.json"

# 4. Pull of one format vs rclone download of the same file.
# Alternated PULL_REPS times (default 3), each into a fresh folder; the medians are reported.
PULLROOT="$OUT/pullroot"
R_DOWNS=(); T_DOWNS=()
for _ in $(seq "${PULL_REPS:-3}"); do
  rm -rf "$PULLROOT" "$OUT/plain-down"
  "$TANTRA" --root "$PULLROOT" remote add g "s3://$TANTRA_S3_BUCKET/$RUN/tantra" --endpoint "$TANTRA_S3_ENDPOINT" --region garage 2>/dev/null
  t0=$(now); rclone copy "g:$TANTRA_S3_BUCKET/$RUN/plain/" "$OUT/plain-down/"; t1=$(now)
  R_DOWNS+=("$(secs "$t0" "$t1")")
  t0=$(now); "$TANTRA" --root "$PULLROOT" pull mamba:full --formats safetensors --json > "$OUT/pull1.json"; t1=$(now)
  T_DOWNS+=("$(secs "$t0" "$t1")")
  cmp "$ST" "$PULLROOT/weights/mamba_full_safetensors.safetensors"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
R_DOWN=$(median "${R_DOWNS[@]}"); T_DOWN=$(median "${T_DOWNS[@]}")
echo "pull runs (s): rclone ${R_DOWNS[*]}; tantra ${T_DOWNS[*]}" >&2
# 5. All formats (the rest rebuilt locally from the same blobs) vs rclone of all three files.
rclone copy "$PT" "g:$TANTRA_S3_BUCKET/$RUN/plain/"; rclone copy "$BIN" "g:$TANTRA_S3_BUCKET/$RUN/plain/"
rm -rf "$OUT/plain-down"
t0=$(now); rclone copy "g:$TANTRA_S3_BUCKET/$RUN/plain/" "$OUT/plain-down/"; t1=$(now)
R_DOWN_ALL=$(secs "$t0" "$t1")
PULLROOT2="$OUT/pullroot2"; rm -rf "$PULLROOT2"
"$TANTRA" --root "$PULLROOT2" remote add g "s3://$TANTRA_S3_BUCKET/$RUN/tantra" --endpoint "$TANTRA_S3_ENDPOINT" --region garage 2>/dev/null
t0=$(now); "$TANTRA" --root "$PULLROOT2" pull mamba:full --json > "$OUT/pull2.json"; t1=$(now)
T_DOWN_ALL=$(secs "$t0" "$t1")
for f in "$ST" "$PT" "$BIN"; do cmp "$f" "$PULLROOT2/weights/$(basename "$f")"; done

python3 - "$OUT" "$(size "$ST")" "$(size "$PT")" "$(size "$BIN")" "$(size "$FT")" \
  "$R_UP" "$T_UP" "$R_DOWN" "$T_DOWN" "$R_DOWN_ALL" "$T_DOWN_ALL" <<'PYEOF'
import json, sys
out = sys.argv[1]
st, pt, bn, ft = map(int, sys.argv[2:6])
r_up, t_up, r_down, t_down, r_all, t_all = map(float, sys.argv[6:12])
p1, p2, p3 = (json.load(open(f"{out}/{n}.json")) for n in ("push1", "push2", "push3"))
mb = lambda b, s: b / 1e6 / s
print(f"safetensors file: {st/1e6:.1f} MB; pt {pt/1e6:.1f} MB; bin {bn/1e6:.1f} MB")
print(f"first push (safetensors): tantra {mb(st, t_up):.0f} MB/s ({t_up:.2f} s, sent {p1['bytes_uploaded']/1e6:.1f} MB)"
      f" vs rclone upload {mb(st, r_up):.0f} MB/s ({r_up:.2f} s): ratio {r_up / t_up:.2f}x")
print(f"pull (safetensors, median): tantra {mb(st, t_down):.0f} MB/s ({t_down:.2f} s)"
      f" vs rclone download {mb(st, r_down):.0f} MB/s ({r_down:.2f} s): ratio {r_down / t_down:.2f}x")
print(f"pull (all 3 formats):     tantra {t_all:.2f} s vs rclone download of the 3 files {r_all:.2f} s: ratio {r_all / t_all:.2f}x")
other = pt + bn
print(f"push of the other formats (pt, bin): sent {p2['bytes_uploaded']} B + {p2['manifest_bytes']} B manifests"
      f" = {100 * (p2['bytes_uploaded'] + p2['manifest_bytes']) / other:.3f}% of {other/1e6:.1f} MB (whole files: {p2['whole_files']})")
print(f"push of a copy with 5% of tensors changed: sent {p3['bytes_uploaded']/1e6:.2f} MB + {p3['manifest_bytes']} B manifests"
      f" = {100 * (p3['bytes_uploaded'] + p3['manifest_bytes']) / ft:.2f}% of {ft/1e6:.1f} MB")
PYEOF
