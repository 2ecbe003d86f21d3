#!/usr/bin/env bash
# The README's first command: makes sure a Vulkan driver is present (Mesa's
# lavapipe when there is no GPU), builds the CLI in release mode, and runs it.
# With no arguments it answers a chat prompt with the default model, which the
# CLI downloads (and checksums) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_vulkan
cargo build --release -q -p hearth-cli
if [ $# -eq 0 ]; then
  set -- run --chat "Which ocean is the largest?" --max-tokens 64
fi
exec "${CARGO_TARGET_DIR:-target}/release/hearth" "$@"
