#!/usr/bin/env bash
# The measurement behind the runtimes' choice of plain Rust kernels over candle: one
# matrix-vector product of decoding size, cache-resident and memory-bound. See docs/runtime.md.
# Builds in a temporary target dir (candle is not a dependency of the workspace).
set -euo pipefail
cd "$(dirname "$0")/candle_matvec"
TARGET="${CARGO_TARGET_DIR:-$(mktemp -d)}"
cargo run --release --quiet --target-dir "$TARGET" --manifest-path Cargo.toml
