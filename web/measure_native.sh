#!/usr/bin/env bash
# Measures the desktop app under Xvfb (docs/APP.md): time from launch to the
# first entropy plot, and frame times while a computation runs, for a given
# view (JSON state) and engine. Prints the app's own timing lines and the
# wall time from launch. Needs xvfb (apt-get install xvfb xauth), and for
# a screenshot imagemagick (and xdotool, which moves the pointer off the
# window first, so that no hover shows in it).
#
#   web/measure_native.sh '{"length":4096,"backend":"cpu"}' [seconds] [screenshot.png]
set -euo pipefail
cd "$(dirname "$0")/.."
state="${1:-{\}}"
secs="${2:-40}"
shot="${3:-}"
bin=target/release/nopescope
[ -x "$bin" ] || cargo build --release
export XDG_RUNTIME_DIR="$(mktemp -d)"
log="$(mktemp)"
start=$(date +%s.%N)
# A fresh storage directory so no saved state interferes.
NOPESCOPE_TIMING=1 NOPESCOPE_STATE="$state" HOME="$(mktemp -d)" \
  xvfb-run -a -s "-screen 0 1280x900x24" bash -c '
    "$0" & app=$!
    sleep "$1"
    if command -v xdotool >/dev/null; then xdotool mousemove 1279 899; sleep 1; fi
    # The window is 1280 x 860 (src/app/mod.rs): the screen below it is not shown.
    if [ -n "$2" ]; then import -window root -crop 1280x860+0+0 +repage "$2"; fi
    kill "$app"' "$bin" "$secs" "$shot" >"$log" 2>&1 &
runner=$!
while kill -0 "$runner" 2>/dev/null; do
  if grep -q '^timing:' "$log" && [ -z "${first:-}" ]; then
    first=$(date +%s.%N)
    echo "first timing line $(echo "$first - $start" | bc) s after launch"
  fi
  sleep 0.2
done
grep -E '^timing:|backend|error' "$log" || true
