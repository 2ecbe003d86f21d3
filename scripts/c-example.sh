#!/usr/bin/env bash
# Builds the C ABI as a static library, compiles examples/c/two_requests.c
# with the system C compiler against it, and runs it on the default model
# (two requests at once, one cancelled): what CI checks of the C ABI.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
model="${HEARTH_MODELS:-models}/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || { echo "$model is missing: run \`bash scripts/hearth.sh fetch\`" >&2; exit 1; }

echo "== C ABI example (examples/c/two_requests.c)"
cargo build --release -q -p hearth-capi
out=target/c-example
mkdir -p "$out"
# The link libraries are those `cargo rustc --release -p hearth-capi
# --crate-type staticlib -- --print native-static-libs` names on Linux.
"${CC:-cc}" -std=c11 -Wall -Wextra -Werror -Icapi/include examples/c/two_requests.c \
  target/release/libhearth_capi.a -lpthread -ldl -lm -o "$out/two_requests"
"$out/two_requests" "$model"
