#!/usr/bin/env bash
# The README's second command, and what CI runs: installs what a fresh Debian
# machine lacks, fetches the test data, then runs the format check, clippy,
# the whole test suite (on lavapipe when there is no GPU) and the wasm32 check.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_vulkan
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true

echo "== fetching test data (default model, tokenizer vectors)"
cargo run --release -q -p hearth-cli -- fetch
bash scripts/fetch-vocab-fixtures.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo check (wasm32)"
cargo check -q -p hearth --target wasm32-unknown-unknown
echo "== cargo test (release: the CPU reference runs a 135M-parameter model)"
cargo test --release --workspace -- --test-threads="${HEARTH_TEST_THREADS:-2}"
