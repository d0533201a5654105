#!/usr/bin/env bash
# Trunk's post-build hook (Trunk.toml): two more builds of the page's wasm
# beside trunk's plain one, and a loader that picks the fastest the
# browser can run (docs/BENCH.md has the speeds):
#
# * relaxed/: relaxed SIMD, whose f32x4.relaxed_madd is one fused
#   multiply-add where the processor has FMA (the CPU engine's products
#   and attention run 1.2-1.5x faster). A module that uses it does not load
#   where the browser lacks it, so the loader asks the browser first
#   (WebAssembly.validate on a 37-byte module).
# * threads/: relaxed SIMD on shared memory, so Web Workers run the CPU
#   engine's parallel loops beside the page's thread (model::cpu::par,
#   app::web). Shared memory needs a cross-origin-isolated page (served
#   with Cross-Origin-Opener-Policy: same-origin and
#   Cross-Origin-Embedder-Policy: require-corp, as web/serve.sh does) and a
#   standard library built with atomics: cargo's -Z build-std on the pinned
#   stable toolchain (RUSTC_BOOTSTRAP=1, for this build only) from rust-src.
#
# If a build does not start (a network error, or a browser that validates
# a feature but cannot compile it), the loader starts the next one. Once
# one has started, it keeps the files it used in a cache that the page's
# service worker (web/sw.js) serves from, so the page also opens with no
# network.
# `?simd=plain` in the page's URL forces the plain build, `?threads=1` the
# relaxed one.
#
# Runs inside `trunk build` / `trunk serve`, which set TRUNK_STAGING_DIR
# (the folder that becomes dist/) and TRUNK_PROFILE. `web/builds.sh
# --test` instead runs the library's model tests in the relaxed build, in
# headless Chromium (.ci/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

RELAXED="-C target-feature=+simd128,+relaxed-simd"

if [ "${1:-}" = "--test" ]; then
  # Release, as the page's build, whose compiled dependencies it shares.
  export CARGO_TARGET_DIR=target/relaxed-simd RUSTFLAGS="$RELAXED"
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

# build FOLDER TARGET_DIR RUSTFLAGS [cargo flags...]: builds the web binary
# into TARGET_DIR (each build its own: other flags), runs wasm-bindgen into
# $TRUNK_STAGING_DIR/FOLDER, and prints the bindings' name.
build() {
  local folder=$1 target_dir=$2 flags=$3
  shift 3
  CARGO_TARGET_DIR=$target_dir RUSTFLAGS=$flags cargo build $profile_flag "$@" \
    --target wasm32-unknown-unknown --no-default-features --features app --bin nopescope-web >&2
  local wasm="$target_dir/wasm32-unknown-unknown/$profile_dir/nopescope-web.wasm"
  # Content-hashed names, as trunk's, so a browser never mixes two builds.
  local name
  name="nopescope-web-$folder-$(sha256sum "$wasm" | cut -c1-16)"
  rm -rf "${TRUNK_STAGING_DIR:?}/$folder"
  wasm-bindgen --target web --no-typescript --out-dir "$TRUNK_STAGING_DIR/$folder" \
    --out-name "$name" "$wasm" >&2
  echo "$name"
}

relaxed=$(build relaxed target/relaxed-simd "$RELAXED" --offline)

# Shared memory: atomics in every crate, the standard library rebuilt with
# them, and the linker's flags for a memory the workers import (up to
# 4 GiB), with the thread-local storage each thread sets up.
if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
  rustup component add rust-src
fi
shared="$RELAXED,+atomics,+bulk-memory,+mutable-globals"
for arg in --shared-memory --import-memory --max-memory=4294967296 \
  --export=__wasm_init_tls --export=__tls_size --export=__tls_align --export=__tls_base; do
  shared="$shared -C link-arg=$arg"
done
threads=$(RUSTC_BOOTSTRAP=1 build threads target/wasm-threads "$shared" -Z build-std=std,panic_abort)

# The plain build's names, from trunk's loader.
plain=$(grep -o "nopescope-web-[0-9a-f]*\.js" "$html" | head -n 1)
plain=${plain%.js}
[ -n "$plain" ] || { echo "builds.sh: no trunk loader found in $html" >&2; exit 1; }

# Trunk's loader (a module script) and its preloads of the plain build go;
# this loader comes in their place. The probe is a function of three v128
# parameters returning f32x4.relaxed_madd of them (opcode 0xfd 0x105).
loader=$(cat <<EOF
<script type="module">
const probe = new Uint8Array([0,97,115,109,1,0,0,0,1,8,1,96,3,123,123,123,1,123,3,2,1,0,10,13,1,11,0,32,0,32,1,32,2,253,133,2,11]);
// Some browsers turn WebAssembly off (a lockdown mode, a policy): say so
// instead of loading forever.
if (typeof WebAssembly !== 'object') {
  document.getElementById('nopescope_loading')?.remove();
  document.getElementById('nopescope_error').textContent =
    'nopescope needs WebAssembly, which this browser has turned off for this page. Try another browser or allow it for this site.';
  throw new Error('no WebAssembly');
}
const fused = WebAssembly.validate(probe) && !/[?&]simd=plain(&|$)/.test(location.search);
const isolated = self.crossOriginIsolated === true;
const shared = fused && isolated && !/[?&]threads=1(&|$)/.test(location.search);
// What the app reads of its loader (app::web::loader): what it found, for
// the status bar's note on threads, and the bindings' URL, which the
// shared-memory build's workers load too.
// \`loaded\`: the bytes of the module fetched so far.
globalThis.nopescopeLoader = { fused, isolated, shared, glue: null, loaded: 0 };
const builds = [];
if (shared) builds.push('./threads/$threads');
if (fused) builds.push('./relaxed/$relaxed');
builds.push('./$plain');
// The module is large (the models are inside it): its download is counted
// on the page (#nopescope_loading) as it streams into the compiler. A
// download that stalls (a classroom's Wi-Fi) is said to have stalled, with
// for how long, instead of looking slow; the page keeps waiting for it.
const loading = document.getElementById('nopescope_loading');
const STALL_MS = 15000;
let lastData = performance.now();
let downloading = false;
let counting = loading?.textContent ?? '';
const stallWatch = setInterval(() => {
  const quiet = performance.now() - lastData;
  if (loading && downloading && quiet > STALL_MS) {
    loading.textContent = counting + ' (no data for ' + Math.round(quiet / 1000) +
      ' s: the connection may be down; the page keeps waiting, or reload it to try again)';
  }
}, 1000);
async function counted(url) {
  lastData = performance.now();
  downloading = true;
  const response = await fetch(url).catch((e) => {
    downloading = false;
    throw e;
  });
  lastData = performance.now();
  if (!response.ok || !response.body) {
    downloading = false;
    return response;
  }
  // A compressed transfer's length is not the bytes the stream gives.
  const total = response.headers.get('content-encoding') ? 0 : Number(response.headers.get('content-length')) || 0;
  const reader = response.body.getReader();
  let got = 0;
  const body = new ReadableStream({
    async pull(controller) {
      const { done, value } = await reader.read().catch((e) => {
        downloading = false;
        throw e;
      });
      if (done) {
        downloading = false;
        if (loading) loading.textContent = counting;
        controller.close();
        return;
      }
      got += value.length;
      lastData = performance.now();
      globalThis.nopescopeLoader.loaded = got;
      counting = 'Loading nopescope: ' + (got / 1e6).toFixed(1) +
        (total ? ' of ' + (total / 1e6).toFixed(1) : '') + ' MB';
      if (loading) loading.textContent = counting;
      controller.enqueue(value);
    },
    cancel(reason) {
      downloading = false;
      return reader.cancel(reason);
    },
  });
  return new Response(body, { status: response.status, headers: { 'content-type': 'application/wasm' } });
}
async function start(base) {
  globalThis.nopescopeLoader.glue = new URL(base + '.js', location.href).href;
  const bindings = await import(base + '.js');
  const wasm = await bindings.default({ module_or_path: counted(base + '_bg.wasm') });
  window.wasmBindings = bindings;
  dispatchEvent(new CustomEvent("TrunkApplicationStarted", { detail: { wasm } }));
}
// After a start, what stops the app without a panic (whose message the
// app writes itself): a trap, most often memory running out in a long
// computation, which would otherwise leave the page frozen with the reason
// in the console only.
addEventListener('error', (event) => {
  const error = document.getElementById('nopescope_error');
  if (!error || error.textContent || !(event.error instanceof WebAssembly.RuntimeError)) return;
  error.textContent = 'nopescope stopped: ' + event.error.message +
    ' (most often this means the browser gave the page no more memory: a shorter input needs less). Reloading the page starts it again, at the view kept in its address; the browser\'s console has the details. ';
  const reload = document.createElement('button');
  reload.textContent = 'Reload the page';
  reload.onclick = () => location.reload();
  error.append(reload);
});
for (let i = 0; ; i++) {
  try {
    await start(builds[i]);
    clearInterval(stallWatch);
    loading?.remove();
    break;
  } catch (e) {
    if (i + 1 < builds.length) {
      console.warn('nopescope: ' + builds[i] + ' did not start (' + e + '); starting ' + builds[i + 1]);
      continue;
    }
    clearInterval(stallWatch);
    loading?.remove();
    document.getElementById('nopescope_error').textContent =
      'nopescope could not start: ' + e + '. Reload the page; if it persists, try another browser.';
    throw e;
  }
}
// Offline use: the page itself keeps the files this start used in a cache
// of their own (named after the started build, whose file names carry a
// content hash), the page's document last, and only then drops the caches
// of other builds; web/sw.js serves from the caches when the network
// fails. A copy is thus always one whole version. The files are asked of
// the browser's HTTP cache first (\`force-cache\`), so a module it kept is
// not fetched again.
// nopescopeLoader.offline says 'ready', or why not; '?offline=0' in the
// address removes the worker and the copies.
async function keepOffline() {
  if (!('serviceWorker' in navigator) || !('caches' in self)) throw new Error('this browser keeps no offline copies here');
  await navigator.serviceWorker.register('./sw.js');
  const glue = globalThis.nopescopeLoader.glue;
  const build = glue.slice(glue.lastIndexOf('/') + 1, -3);
  const folder = glue.slice(0, glue.lastIndexOf('/') + 1);
  // This build's files and the style; not those of builds that did not start.
  const other = (u) => /\/(relaxed|threads)\/[^/]+$/.test(new URL(u).pathname) && u.slice(0, u.lastIndexOf('/') + 1) !== folder;
  const files = new Set(performance.getEntriesByType('resource').map((e) => e.name)
    .filter((u) => u.startsWith(location.origin + '/') && !other(u)));
  files.add(glue);
  files.add(folder + build + '_bg.wasm');
  const name = 'nopescope-' + build;
  const cache = await caches.open(name);
  for (const u of files) {
    if (!(await cache.match(u))) await cache.add(new Request(u, { cache: 'force-cache' }));
  }
  const page = new URL(location.href);
  page.search = '';
  page.hash = '';
  if (!(await cache.match(page.href))) {
    const response = await fetch(page.href, { cache: 'no-cache' });
    const text = await response.clone().text();
    // A newer version on the server names other builds: not this copy's page.
    if (!response.ok || !text.includes(build)) throw new Error('the server has a newer version; reload to keep that one');
    await cache.put(page.href, response);
  }
  for (const old of await caches.keys()) {
    if (old.startsWith('nopescope-') && old !== name) await caches.delete(old);
  }
  return 'ready';
}
if (/[?&]offline=0(&|$)/.test(location.search)) {
  globalThis.nopescopeLoader.offline = 'not saved: the address asks (offline=0)';
  navigator.serviceWorker?.getRegistrations().then((rs) => rs.forEach((r) => r.unregister()));
  self.caches?.keys().then((names) => names.filter((n) => n.startsWith('nopescope-')).forEach((n) => caches.delete(n)));
} else {
  keepOffline().then(
    (s) => { globalThis.nopescopeLoader.offline = s; },
    (e) => {
      globalThis.nopescopeLoader.offline = 'not saved: ' + (e.message ?? e);
      console.warn('nopescope: not saved for offline use: ' + e);
    });
}
</script>
EOF
)
LOADER="$loader" perl -0pi -e '
  my $n = s{<script type="module">(?:(?!</script>).)*?TrunkApplicationStarted.*?</script>}{$ENV{LOADER}}s;
  die "builds.sh: trunk loader not found\n" unless $n == 1;
  s{<link rel="modulepreload"[^>]*nopescope-web-[^>]*>}{}g;
  s{<link rel="preload"[^>]*nopescope-web-[^>]*>}{}g;
' "$html"
echo "builds.sh: relaxed/$relaxed, threads/$threads, and the loader choosing between them and $plain"
