# What bench/decode.sh and bench/cpu_time.sh share; sourced by them, not run on its own.
#
# After `bench_setup`: TANTRA and HELPER (release builds), WORK (a temp dir removed on exit),
# MODEL (the full Mamba preset, seed 0, as a Hugging Face directory in WORK). After
# `bench_llama`: LLAMA_BIN (llama.cpp's llama-completion, or empty when LLAMA_CPP_DIR is unset
# or has none) and, when set, WORK/full_{f32,bf16,q8_0}.gguf written by tantra's GGUF writer
# from the same weights.

# Release builds, the temp dir and the model.
bench_setup() {
  echo "building (release)..." >&2
  cargo build --release --quiet -p tantra-cli --bin tantra
  cargo build --release --quiet -p tantra-runtime --example runtime_bench
  WORK="$(mktemp -d)"
  trap 'rm -rf "$WORK"' EXIT
  HELPER=target/release/examples/runtime_bench
  TANTRA=target/release/tantra
  MODEL="$WORK/mamba_full"
  "$HELPER" write "$MODEL" full
}

# llama.cpp's binary and the GGUF files, when LLAMA_CPP_DIR points to a build.
bench_llama() {
  LLAMA_BIN=""
  [ -n "${LLAMA_CPP_DIR:-}" ] || return 0
  for cand in "$LLAMA_CPP_DIR/bin/llama-completion" "$LLAMA_CPP_DIR/build/bin/llama-completion"; do
    [ -x "$cand" ] && LLAMA_BIN="$cand" && break
  done
  if [ -z "$LLAMA_BIN" ]; then
    echo "LLAMA_CPP_DIR=$LLAMA_CPP_DIR has no bin/llama-completion; llama.cpp skipped" >&2
    return 0
  fi
  echo "writing GGUF files (tantra export-gguf)..." >&2
  "$TANTRA" --root "$WORK/root" import-hf "$MODEL" --model mamba --version full > /dev/null
  for t in f32 bf16 q8_0; do
    "$TANTRA" --root "$WORK/root" export-gguf mamba:full "$WORK/full_$t.gguf" --type "$t" > /dev/null
  done
}

# bench_prompt LEN: LEN printable ASCII bytes, one token each in both vocabularies.
bench_prompt() {
  python3 -c "print(''.join(chr(97 + (i * 7 + 3) % 26) for i in range($1)))"
}

# bench_ids TEXT: the byte-level ids of TEXT, comma-separated, without <bos>: what
# llama-completion feeds for TEXT with tantra's GGUF (which does not add <bos>), so that
# `tantra run --input-ids` prefills exactly the same tokens.
bench_ids() {
  python3 -c 'import sys; print(",".join(str(b) for b in sys.argv[1].encode()))' "$1"
}
