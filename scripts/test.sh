#!/usr/bin/env bash
# The README's second command, and what CI runs: installs what a fresh Debian
# machine lacks, fetches the test data, then runs the format check, clippy,
# the whole test suite (on lavapipe when there is no GPU), the wasm32 build
# and the browser tests (headless Chromium, WebGPU on SwiftShader).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_vulkan
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true

command -v chromium >/dev/null || { echo "installing chromium (browser tests)..." >&2; apt_install chromium; }
command -v npm >/dev/null || { echo "installing nodejs and npm (browser tests)..." >&2; apt_install nodejs npm; }

echo "== the README's first command with an empty models folder: stdout is the answer alone"
first_models="$(mktemp -d)"
answer="$(HEARTH_MODELS="$first_models" bash scripts/hearth.sh)"
rm -rf "$first_models"
if ! grep -q Pacific <<<"$answer" || grep -qiE 'collecting|successfully|downloading|saved |hearth:|MB/s|━' <<<"$answer"; then
  printf 'scripts/hearth.sh printed more than the answer on stdout:\n%s\n' "$answer" >&2
  exit 1
fi

echo "== fetching test data (default model, tokenizer vectors)"
cargo run --release -q -p hearth-cli -- fetch
bash scripts/fetch-vocab-fixtures.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== cargo clippy (wasm32: the runtime and hearth-web)"
cargo clippy -q -p hearth -p hearth-web --target wasm32-unknown-unknown -- -D warnings
echo "== python venv with the official openai client and jsonschema (the hearth serve client tests) and gguf-py"
venv=.cache/openai-venv
if ! "$venv/bin/python" -c 'import openai' 2>/dev/null; then
  # Debian's python3 makes venvs only with python3-venv installed.
  python3 -c 'import ensurepip' 2>/dev/null || apt_install python3-venv || true
  rm -rf "$venv"
  python3 -m venv "$venv" && "$venv/bin/pip" install -q 'openai==3.54.0' || echo "warning: no openai client; its test will skip" >&2
fi
# jsonschema: the structured-output test validates the server's answers with it.
if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import jsonschema' 2>/dev/null; then
  "$venv/bin/pip" install -q 'jsonschema==4.23.0' || echo "warning: no jsonschema; the structured-output test will fail" >&2
fi
# gguf: llama.cpp's Python GGUF writer splits a model for tests/gguf_split.rs.
if [ -x "$venv/bin/python" ] && ! "$venv/bin/python" -c 'import gguf' 2>/dev/null; then
  "$venv/bin/pip" install -q 'gguf==0.19.0' || echo "warning: no gguf-py; the split-GGUF test will fail" >&2
fi
if "$venv/bin/python" -c 'import openai' 2>/dev/null; then export HEARTH_PYTHON="$PWD/$venv/bin/python"; fi
echo "== cargo test (release: the CPU reference runs a 135M-parameter model)"
cargo test --release --workspace -- --test-threads="${HEARTH_TEST_THREADS:-2}"
bash scripts/c-example.sh

echo "== browser tests (wasm build, headless Chromium)"
bash scripts/build-web.sh
(cd web && npm ci --no-audit --no-fund --silent)
node --test web/tests/
