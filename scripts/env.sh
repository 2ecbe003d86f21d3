# Shared set-up for the project scripts (sourced).
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"
# The project's scripts and tests keep models in the checkout's git-ignored
# models/ (an installed hearth uses the user's data folder instead).
export HEARTH_MODELS="${HEARTH_MODELS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/models}"
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
  export XDG_RUNTIME_DIR="/tmp/hearth-xdg-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
fi

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "please install: $*" >&2
    return 1
  fi
}

# A Vulkan ICD must exist for wgpu; without a GPU that is Mesa's lavapipe.
ensure_vulkan() {
  if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
    echo "installing mesa-vulkan-drivers (Vulkan on the CPU: lavapipe)..." >&2
    apt_install mesa-vulkan-drivers
  fi
}
