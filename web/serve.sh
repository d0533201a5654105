#!/usr/bin/env bash
# Builds the web page and serves it on http://127.0.0.1:8080 (a secure
# context, so the browser offers WebGPU). Installs what is missing first,
# from the registries only: the wasm32 target, trunk 0.21.14 and
# wasm-bindgen-cli 0.2.130 (the version of the wasm-bindgen crate).
# wasm-opt is off (index.html, data-wasm-opt="0"): Debian's binaryen 108
# writes a wasm that fails to load, and trunk must not download one.
#
#   web/serve.sh            build and serve
#   web/serve.sh --build    only build, into dist/ (any static server works)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi
if ! trunk --version 2>/dev/null | grep -q '^trunk 0\.21\.14$'; then
  cargo install trunk --version 0.21.14 --locked
fi
if ! wasm-bindgen --version 2>/dev/null | grep -q '^wasm-bindgen 0\.2\.130$'; then
  # Not --locked: its lock file names a webpki-roots the registry lacks.
  cargo install wasm-bindgen-cli --version 0.2.130
fi

if [ "${1:-}" = "--build" ]; then
  exec trunk build --release
fi
exec trunk serve --release --address 127.0.0.1 --port "${PORT:-8080}"
