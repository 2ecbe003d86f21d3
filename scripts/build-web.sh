#!/usr/bin/env bash
# Builds the in-browser engine: the `hearth-web` crate for wasm32, then
# wasm-bindgen's JS glue into web/www/pkg/. The wasm-bindgen CLI must be the
# exact version in Cargo.lock; it is installed (about 3 minutes) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target add wasm32-unknown-unknown >/dev/null 2>&1 || true

want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "== installing wasm-bindgen-cli $want (have: ${have:-none})"
  # Not --locked: its lockfile pins a crate version this registry lacks.
  cargo install -q wasm-bindgen-cli --version "$want"
fi

echo "== cargo build (wasm32, release)"
cargo build -q -p hearth-web --release --target wasm32-unknown-unknown
echo "== wasm-bindgen -> web/www/pkg"
wasm-bindgen --target web --no-typescript --out-dir web/www/pkg \
  target/wasm32-unknown-unknown/release/hearth_web.wasm
ls -l web/www/pkg/hearth_web_bg.wasm | awk '{printf "web/www/pkg/hearth_web_bg.wasm: %.1f MiB\n", $5/1048576}'
