#!/usr/bin/env bash
# All of nopescope's checks, in order: format, lints, the wasm32 library
# build, then every test (release profile: the numerics are slow unoptimised).
# Installs what it needs first, idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Toolchain pieces (rustup is the one toolchain on these machines).
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

# Vulkan on the CPU (lavapipe), so the GPU kernel tests really run here.
if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  need_root apt-get update && need_root apt-get install -y mesa-vulkan-drivers libvulkan1
fi
# Quiets lavapipe's warning about a missing runtime directory.
XDG_RUNTIME_DIR=$(mktemp -d)
export XDG_RUNTIME_DIR

echo "== fmt"; cargo fmt --check
echo "== clippy"; cargo clippy --all-targets --release -- -D warnings
echo "== wasm32 library"; cargo check --lib --target wasm32-unknown-unknown
echo "== tests"; cargo test --release
echo "== all checks passed"
