#!/usr/bin/env bash
# Hearth against llama.cpp on the same GGUF and the same Vulkan adapter, side
# by side in one run, plus llama.cpp's CPU backend as a second reference.
#
#   bash benches/llama_cpp_compare.sh [MODEL.gguf]     (default: the default model)
#   bash benches/llama_cpp_compare.sh random-q4km      (a random ~0.5B Llama, Q4_K_M)
#   PP=64 TG=16 bash benches/llama_cpp_compare.sh      (shorter runs)
#
# Builds llama.cpp's `llama-bench` (CPU + Vulkan backends) from the vendored
# copy in the llama-cpp-python==0.3.36 sdist on PyPI into .cache/llama.cpp
# (once; needs cmake, glslc, libvulkan-dev, spirv-headers, a C++ compiler: installed with
# apt-get when run as root), then prints prompt processing (ppPP) and decode
# (tgTG) tok/s for each engine and the ratios hearth / llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ensure_vulkan

MODEL="${1:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [ "$MODEL" = random-q4km ]; then
  # benches/random_llama.py's F16 model (SmolLM2's tokenizer), made Q4_K_M by
  # llama.cpp's own llama-quantize, built below beside llama-bench.
  MODEL=.cache/models/random-llama-0.5b.Q4_K_M.gguf
  RANDOM_F16=.cache/models/random-llama-0.5b.f16.gguf
fi
PP="${PP:-512}"
TG="${TG:-128}"
CACHE=.cache/llama.cpp
SDIST=.cache/llama_cpp_python-0.3.36.tar.gz
BENCH="$CACHE/build/bin/llama-bench"

[ -f "$MODEL" ] || { [ "$MODEL" = models/SmolLM2-135M-Instruct.Q4_1.gguf ] && cargo run --release -q -p hearth-cli -- fetch; }
[ -f "$MODEL" ] || [ -n "${RANDOM_F16:-}" ] || { echo "no model file at $MODEL" >&2; exit 1; }

if [ ! -x "$BENCH" ]; then
  need=()
  command -v cmake >/dev/null || need+=(cmake)
  command -v glslc >/dev/null || need+=(glslc)
  command -v c++ >/dev/null || need+=(g++)
  [ -f /usr/include/vulkan/vulkan.h ] || need+=(libvulkan-dev)
  [ -d /usr/include/spirv ] || need+=(spirv-headers)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} (llama.cpp build)..." >&2
    apt_install "${need[@]}"
  fi
  if [ ! -f "$SDIST" ]; then
    python3 -m pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d .cache
  fi
  rm -rf "$CACHE/src" && mkdir -p "$CACHE/src"
  tar xzf "$SDIST" -C "$CACHE/src" --strip-components=3 --wildcards '*/vendor/llama.cpp/*'
  rm -f "$CACHE/src/.git" # a submodule link to the sdist's absent parent repository
  # Debian 12's Vulkan headers (1.3.239) lack VK_EXT_layer_settings, which
  # this llama.cpp uses only to configure validation layers at instance
  # creation: drop that block.
  python3 - "$CACHE/src/ggml/src/ggml-vulkan/ggml-vulkan.cpp" <<'PY'
import re, sys
p = sys.argv[1]
s = open(p).read()
s2, n1 = re.subn(r"\n\s*VkBool32 enable_best_practice = layer_settings;.*?vk::LayerSettingsCreateInfoEXT layer_setting_info\(settings\);", "", s, flags=re.S)
s2, n2 = re.subn(r"extensions, &layer_setting_info\);", "extensions, nullptr);", s2)
if (n1, n2) != (1, 1):
    sys.exit(f"ggml-vulkan.cpp: layer-settings patch did not apply ({n1}, {n2})")
open(p, "w").write(s2)
PY
  cmake -S "$CACHE/src" -B "$CACHE/build" -DCMAKE_BUILD_TYPE=Release -DGGML_VULKAN=ON \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$CACHE/build" --target llama-bench -j "$(nproc)"
fi

if [ -n "${RANDOM_F16:-}" ] && [ ! -f "$MODEL" ]; then
  [ -f models/SmolLM2-135M-Instruct.Q4_1.gguf ] || cargo run --release -q -p hearth-cli -- fetch
  VENV=.cache/bench-venv
  [ -x "$VENV/bin/python" ] || { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q numpy gguf==0.19.0; }
  mkdir -p "$(dirname "$MODEL")"
  "$VENV/bin/python" benches/random_llama.py models/SmolLM2-135M-Instruct.Q4_1.gguf "$RANDOM_F16"
  cmake --build "$CACHE/build" --target llama-quantize -j "$(nproc)"
  "$CACHE/build/bin/llama-quantize" "$RANDOM_F16" "$MODEL" Q4_K_M "$(nproc)" >"$CACHE/quantize.log" 2>&1 ||
    { tail -20 "$CACHE/quantize.log" >&2; rm -f "$MODEL"; exit 1; }
  rm -f "$RANDOM_F16"
fi

# llama-bench's JSON: one object per test with n_prompt, n_gen, avg_ts.
# lavapipe is a CPU-type device, which llama.cpp's Vulkan backend hides
# unless it is named (and llama-bench crashes with no device at all).
llama_bench() { # arguments: llama-bench options choosing the backend
  GGML_VK_VISIBLE_DEVICES=0 "$BENCH" -m "$MODEL" -p "$PP" -n "$TG" -r 1 -o json "$@" 2>/dev/null |
    python3 -c '
import json, sys
rows = json.load(sys.stdin)
pp = next(r["avg_ts"] for r in rows if r["n_prompt"] > 0)
tg = next(r["avg_ts"] for r in rows if r["n_gen"] > 0)
dev = next((r.get("backends") or r.get("gpu_info") or "") for r in rows)
print(f"{pp} {tg} {dev}")'
}

sha=$(sha256sum "$MODEL" | cut -c1-16)
echo "model $MODEL (sha256 $sha...), pp$PP / tg$TG, $(date -u +%Y-%m-%dT%H:%MZ)"
cargo build --release -q -p hearth-cli
read -r h_pp h_tg < <(target/release/hearth bench --model "$MODEL" --prompt-tokens "$PP" --gen-tokens "$TG" --json 2>/dev/null |
  python3 -c 'import json,sys; j=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(j["prefill_tok_s"], j["decode_tok_s"])')
read -r v_pp v_tg v_dev < <(llama_bench -ngl 99)
# The CPU backend of the same build: no layers and no ops offloaded.
read -r c_pp c_tg c_dev < <(llama_bench -ngl 0 -nopo 1)
python3 - "$h_pp" "$h_tg" "$v_pp" "$v_tg" "$c_pp" "$c_tg" "$PP" "$TG" <<'PY'
import sys
h_pp, h_tg, v_pp, v_tg, c_pp, c_tg = map(float, sys.argv[1:7])
pp, tg = sys.argv[7], sys.argv[8]
print(f"| engine | pp{pp} tok/s | tg{tg} tok/s |")
print("|---|---|---|")
print(f"| hearth (wgpu, Vulkan) | {h_pp:.1f} | {h_tg:.1f} |")
print(f"| llama.cpp Vulkan | {v_pp:.1f} | {v_tg:.1f} |")
print(f"| llama.cpp CPU | {c_pp:.1f} | {c_tg:.1f} |")
print(f"| hearth / llama.cpp Vulkan | {h_pp / v_pp:.2f}x | {h_tg / v_tg:.2f}x |")
print(f"| hearth / llama.cpp CPU | {h_pp / c_pp:.2f}x | {h_tg / c_tg:.2f}x |")
PY
