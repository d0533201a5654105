#!/usr/bin/env bash
# All of nopescope's checks, in order: format, lints, the wasm32 library
# build, then every test (release profile: the numerics are slow unoptimised),
# then the browser test on WebGPU (tests/web_gpu.rs).
# The app's UI tests (tests/app_ui.rs, egui_kittest on lavapipe) run with
# the other tests; then the web page is built and tested end to end.
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
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src

# Vulkan on the CPU (lavapipe), so the GPU kernel tests really run here.
if ! dpkg -s mesa-vulkan-drivers >/dev/null 2>&1; then
  need_root apt-get update && need_root apt-get install -y mesa-vulkan-drivers libvulkan1
fi
# Headless Chromium (WebGPU on SwiftShader) and its driver, for the browser
# test, and the wasm-bindgen test runner of wasm-bindgen's version (built
# from source: a few minutes, once per machine).
if ! dpkg -s chromium >/dev/null 2>&1 || ! dpkg -s chromium-driver >/dev/null 2>&1; then
  need_root apt-get update && need_root apt-get install -y chromium chromium-driver
fi
if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -qx 'wasm-bindgen-test-runner 0.2.130'; then
  # Not --locked: its lock file names a webpki-roots the registry here lacks.
  cargo install wasm-bindgen-cli --version 0.2.130
fi
# Node: the web page's end-to-end test, and the runner of the library's
# tests in the web build (wasm-bindgen-test-runner uses Node by default).
if ! command -v npm >/dev/null 2>&1; then
  need_root apt-get update && need_root apt-get install -y nodejs npm
fi
# Quiets lavapipe's warning about a missing runtime directory.
XDG_RUNTIME_DIR=$(mktemp -d)
export XDG_RUNTIME_DIR

echo "== fmt"; cargo fmt --check
echo "== clippy"; cargo clippy --all-targets --release -- -D warnings
echo "== wasm32 library and binaries"; cargo check --target wasm32-unknown-unknown
echo "== tests"; cargo test --release
# The library's model tests again in the web page's build (wasm32 with
# simd128, in Node): the CPU engine's wasm kernels and matrix product are
# checked where they run.
echo "== CPU engine tests, wasm32"
cargo test --target wasm32-unknown-unknown --no-default-features --lib -- model::
# tests/web_gpu.rs in headless Chromium on real WebGPU; fails if there is
# none. --no-default-features leaves out the CLI, which does not build for
# wasm32 (integration tests build every binary).
echo "== browser WebGPU tests"
CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=300 WASM_BINDGEN_TEST_DRIVER_TIMEOUT=30 \
  cargo test --target wasm32-unknown-unknown --no-default-features --test web_gpu -- --nocapture
# The web page (Trunk; installs trunk and wasm-bindgen-cli if missing), then
# its end-to-end test in headless Chromium: WebGPU on SwiftShader, a URL
# with state, WebGPU off (CPU engine), the threads build (the page is
# cross-origin isolated) against one thread (it is not). The build needs
# rust-src (web/builds.sh adds it). Screenshots go to target/e2e.
echo "== web page build"; web/serve.sh --build
# The library's model tests in the page's second build (relaxed SIMD:
# fused multiply-adds), with that build's flags and target folder, in
# headless Chromium, which has relaxed SIMD (Node 20 has it only behind a
# flag).
echo "== CPU engine tests, wasm32 with relaxed SIMD"; web/builds.sh --test
echo "== web page end to end"
if [ ! -d web/e2e/node_modules/playwright-core ]; then
  (cd web/e2e && npm ci --no-audit --no-fund)
fi
node web/e2e/e2e.mjs dist target/e2e
echo "== all checks passed"
