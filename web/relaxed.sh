#!/usr/bin/env bash
# Trunk's post-build hook (Trunk.toml): a second build of the page's wasm
# with relaxed SIMD, whose f32x4.relaxed_madd is one fused multiply-add
# where the processor has FMA (the CPU engine's products and attention run
# 1.2-1.5x faster, docs/BENCH.md). A module that uses relaxed SIMD does not
# load where the browser lacks it, so the page keeps trunk's plain build
# too, and this script replaces trunk's loader in index.html with one that
# asks the browser (WebAssembly.validate on a 37-byte module) which build
# it can run (and falls back to the plain build if the relaxed one does not
# start). `?simd=plain` in the page's URL forces the plain build.
#
# Runs inside `trunk build` / `trunk serve`, which set TRUNK_STAGING_DIR
# (the folder that becomes dist/) and TRUNK_PROFILE. `web/relaxed.sh
# --test` instead runs the library's model tests in this build, in
# headless Chromium (.ci/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# This build's flags and its own target folder (other RUSTFLAGS, so
# nothing to share with the plain build's).
export CARGO_TARGET_DIR=target/relaxed-simd
export RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd"

if [ "${1:-}" = "--test" ]; then
  # Release, as the page's build, whose compiled dependencies it shares.
  export WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER=/usr/bin/chromedriver WASM_BINDGEN_TEST_TIMEOUT=300
  exec cargo test --release --target wasm32-unknown-unknown --no-default-features --lib -- model::
fi

: "${TRUNK_STAGING_DIR:?run by trunk (web/serve.sh), not by hand}"
html="$TRUNK_STAGING_DIR/index.html"

profile_flag=--release
profile_dir=release
if [ "${TRUNK_PROFILE:-release}" = "debug" ]; then
  profile_flag=
  profile_dir=debug
fi

cargo build $profile_flag --offline --target wasm32-unknown-unknown \
  --no-default-features --features app --bin nopescope-web
wasm="$CARGO_TARGET_DIR/wasm32-unknown-unknown/$profile_dir/nopescope-web.wasm"

# Content-hashed names, as trunk's, so a browser never mixes two builds.
hash=$(sha256sum "$wasm" | cut -c1-16)
name="nopescope-web-relaxed-$hash"
rm -rf "$TRUNK_STAGING_DIR/relaxed"
wasm-bindgen --target web --no-typescript --out-dir "$TRUNK_STAGING_DIR/relaxed" \
  --out-name "$name" "$wasm"

# The plain build's names, from trunk's loader.
plain=$(grep -o "nopescope-web-[0-9a-f]*\.js" "$html" | head -n 1)
plain=${plain%.js}
[ -n "$plain" ] || { echo "relaxed.sh: no trunk loader found in $html" >&2; exit 1; }

# Trunk's loader (a module script) and its preloads of the plain build go;
# this loader comes in their place. The probe is a function of three v128
# parameters returning f32x4.relaxed_madd of them (opcode 0xfd 0x105).
loader=$(cat <<EOF
<script type="module">
const probe = new Uint8Array([0,97,115,109,1,0,0,0,1,8,1,96,3,123,123,123,1,123,3,2,1,0,10,13,1,11,0,32,0,32,1,32,2,253,133,2,11]);
const fused = WebAssembly.validate(probe) && !/[?&]simd=plain(&|$)/.test(location.search);
// The relaxed build first where the browser validates it; if it does not
// start (a network error, or a browser that validates relaxed SIMD but
// cannot compile it), the plain build.
const builds = fused ? ['./relaxed/$name', './$plain'] : ['./$plain'];
async function start(base) {
  const bindings = await import(base + '.js');
  const wasm = await bindings.default({ module_or_path: base + '_bg.wasm' });
  window.wasmBindings = bindings;
  dispatchEvent(new CustomEvent("TrunkApplicationStarted", { detail: { wasm } }));
}
try {
  try {
    await start(builds[0]);
  } catch (e) {
    if (builds.length < 2) throw e;
    console.warn('nopescope: the relaxed-SIMD build did not start (' + e + '); starting the plain build');
    await start(builds[1]);
  }
} catch (e) {
  document.getElementById('nopescope_error').textContent =
    'nopescope could not start: ' + e + '. Reload the page; if it persists, try another browser.';
  throw e;
}
</script>
EOF
)
LOADER="$loader" perl -0pi -e '
  my $n = s{<script type="module">(?:(?!</script>).)*?TrunkApplicationStarted.*?</script>}{$ENV{LOADER}}s;
  die "relaxed.sh: trunk loader not found\n" unless $n == 1;
  s{<link rel="modulepreload"[^>]*nopescope-web-[^>]*>}{}g;
  s{<link rel="preload"[^>]*nopescope-web-[^>]*>}{}g;
' "$html"
echo "relaxed.sh: relaxed/$name.js and _bg.wasm, and the loader choosing between them and $plain"
