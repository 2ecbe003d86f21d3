#!/usr/bin/env bash
# Real-GPU figures in one short run, on a machine that has a GPU but no Rust
# toolchain and no network, and takes few files (the project's `device`
# tool: 64 MiB carried, 15 minutes of device time in all).
#
#   bash benches/device_bench.sh prepare
#       here: release build; stripped `hearth` and the matmul/attention
#       benchmarks into .device/bin; model skeletons (each GGUF's header,
#       tokenizer and tensor table, cut where the weights begin, run with
#       --dummy-weights: speed does not depend on the values) into
#       .device/models, MoE skeletons (benches/moe_skeleton.py) into
#       .device/moe; Debian's Vulkan loader into .gl (the GPU machine's
#       driver ships without one).
#   bash benches/device_bench.sh run
#       there (carry .device and .gl): every figure docs/PERFORMANCE.md
#       wants, into $OUT/device_bench.log (and stdout). QUICK=1 shrinks the
#       lengths, to check the script on lavapipe.
set -euo pipefail
cd "$(dirname "$0")/.."

# Bytes of each model kept: SmolLM2's header (its 49152-token vocabulary and
# merges) ends before 8 MiB; `hearth` refuses a cut inside the header.
SKELETON_BYTES=$((8 << 20))

prepare() {
    mkdir -p .device/bin .device/models .gl
    grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >>.git/info/exclude
    grep -qx '/.gl/' .git/info/exclude 2>/dev/null || echo '/.gl/' >>.git/info/exclude
    cargo build --release -q -p hearth-cli
    strip -o .device/bin/hearth target/release/hearth
    # The benchmark executables' paths, from cargo's JSON messages.
    cargo bench --no-run -q --bench matmul --bench attention --message-format=json |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "bench" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do strip -o ".device/bin/$name" "$exe"; done
    local smol=models/SmolLM2-135M-Instruct.Q4_1.gguf
    [ -f "$smol" ] || HEARTH_MODELS=models ./target/release/hearth fetch
    head -c "$SKELETON_BYTES" "$smol" >.device/models/smollm2-135m-q4_1.gguf
    local big=.cache/models/random-llama-0.5b.Q4_K_M.gguf
    if [ -f "$big" ]; then
        head -c "$SKELETON_BYTES" "$big" >.device/models/random-llama-0.5b-q4_k_m.gguf
    else
        echo "note: $big missing (bash benches/llama_cpp_compare.sh random-q4km makes it); only SmolLM2 will run"
    fi
    # Qwen3-30B-A3B's shape and its dense twin of the same active size
    # (docs/PERFORMANCE.md, "Mixture of experts"), 8 of 48 layers: dummy
    # weights are made on the CPU at load, and 48 layers would take minutes.
    local py=.cache/openai-venv/bin/python
    [ -x "$py" ] || py=python3
    mkdir -p .device/moe
    "$py" benches/moe_skeleton.py "$smol" .device/moe 8 ||
        echo "note: no MoE skeletons (benches/moe_skeleton.py needs gguf from pip)"
    (cd .gl && apt-get download -q libvulkan1 >/dev/null)
    du -sh .device .gl
    echo "ready: device run with command 'bash benches/device_bench.sh run', carry ['.device', '.gl']"
}

run() {
    local out="${OUT:-/tmp/device-bench}"
    mkdir -p "$out"
    exec > >(tee "$out/device_bench.log") 2>&1
    if ! ldconfig -p | grep -q libvulkan.so.1; then
        for f in .gl/*.deb; do dpkg -x "$f" /; done
        ldconfig
    fi
    local icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
    [ -f "$icd" ] && export VK_DRIVER_FILES="$icd"
    export WGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp/xdg
    mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
    local b=.device/bin m=.device/models pp=512 tg=128 conc=1,16,64 secs=0.3
    if [ "${QUICK:-}" = 1 ]; then pp=32 tg=8 conc=1,4 secs=0.05; fi
    step() {
        echo
        echo "\$ $*"
        timeout 240 "$@" || echo "(exit $?)"
    }
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv
    step $b/hearth info
    for model in "$m"/*.gguf; do
        local bench=($b/hearth bench --model "$model" --dummy-weights)
        step "${bench[@]}" --prompt-tokens $pp --gen-tokens $tg --roofline
        step "${bench[@]}" --prompt-tokens $pp --gen-tokens $tg --json
        step env HEARTH_TILED_F16=0 "${bench[@]}" --prompt-tokens $pp --gen-tokens $tg --json
        step "${bench[@]}" --prompt-tokens 64 --gen-tokens 16 --profile
        step "${bench[@]}" --concurrency $conc --prompt-tokens 8 --gen-tokens 16
    done
    # One decode-and-prefill run each: their loads are the slow part.
    for model in .device/moe/*.gguf; do
        [ -f "$model" ] || continue
        step $b/hearth bench --model "$model" --dummy-weights --prompt-tokens $pp --gen-tokens $tg --json
    done
    step env HEARTH_BENCH_SECONDS=$secs $b/matmul
    step $b/attention smollm2
    date -u
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: bash benches/device_bench.sh prepare|run" >&2
    exit 2
    ;;
esac
