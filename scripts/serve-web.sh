#!/usr/bin/env bash
# Serves the in-browser demo on 127.0.0.1 (default port 8123): web/www at "/",
# models/ at "/models/". Build it first with scripts/build-web.sh. Fetches the
# default model when it is missing, so the page's default choice works.
# Arguments go to web/serve.mjs (--port N, --host H, --models DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
if [ ! -f web/www/pkg/hearth_web_bg.wasm ]; then
  echo "web/www/pkg is missing: run bash scripts/build-web.sh first" >&2
  exit 1
fi
if [ ! -f "$HEARTH_MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  cargo run --release -q -p hearth-cli -- fetch
fi
exec node web/serve.mjs "$@"
