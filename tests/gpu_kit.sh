#!/usr/bin/env bash
# The GPU engine's tests and benchmarks on a machine with a real GPU and no
# Rust toolchain (docs/BENCH.md, "On a lent GPU"), in one short run.
#
#   tests/gpu_kit.sh pack              # here: builds and strips the CLI and
#                                      # the two GPU test binaries into
#                                      # target/gpu-kit/kit.tar.xz (~30 MB)
#   tests/gpu_kit.sh run OUT [SECS]    # there, in a copy of this repository
#                                      # with target/gpu-kit beside it: every
#                                      # step below, their output in
#                                      # OUT/steps.log, a summary in
#                                      # OUT/summary.txt
#
# The run needs a Vulkan loader and driver on that machine. Each step has
# its own time limit and the run goes on after one fails, so a slow or
# failing step costs only its share of SECS (default 480).
set -euo pipefail
cd "$(dirname "$0")/.."
kit=target/gpu-kit

pack() {
  cargo build --release --bin nopescope
  local tests
  tests=$(cargo test --release --test gpu_kernels --test gpu_engine --no-run --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*"' | cut -d'"' -f4)
  # Made beside the kit and moved in place whole: a failed pack keeps the
  # last good kit.
  local new="$kit.new"
  rm -rf "$new" && mkdir -p "$new/bin"
  strip -o "$new/bin/nopescope" target/release/nopescope
  local t
  for t in $tests; do
    # gpu_kernels-<hash> -> gpu_kernels
    strip -o "$new/bin/$(basename "$t" | sed 's/-[0-9a-f]*$//')" "$t"
  done
  [ -x "$new/bin/gpu_kernels" ] && [ -x "$new/bin/gpu_engine" ] || {
    echo "gpu_kit: the GPU test binaries were not built" >&2
    exit 1
  }
  git rev-parse --short HEAD >"$new/bin/commit"
  git status --porcelain --untracked-files=no | grep -q . && echo "+ uncommitted changes" >>"$new/bin/commit"
  tar -C "$new" -cJf "$new/kit.tar.xz" bin
  rm -rf "$new/bin" "$kit"
  mv "$new" "$kit"
  ls -l "$kit/kit.tar.xz"
}

run() {
  local out="${1:?usage: gpu_kit.sh run OUT [SECS]}" budget="${2:-480}"
  mkdir -p "$out"
  local unpacked paper
  unpacked=$(mktemp -d)
  paper=$(mktemp -d)
  # shellcheck disable=SC2064 # the folders are known now
  trap "rm -rf '$unpacked' '$paper'" EXIT
  tar -C "$unpacked" -xJf "$kit/kit.tar.xz"
  local bin="$unpacked/bin"
  # The test binaries read their fixtures from the repository they run in.
  export CARGO_MANIFEST_DIR="$PWD" XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
  local summary="$out/summary.txt" start=$SECONDS last_rc=0
  {
    echo "nopescope GPU kit, commit $(tr '\n' ' ' <"$bin/commit")"
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  } | tee "$summary"
  : >"$out/steps.log"

  # step NAME SHARE_OF_BUDGET_PERCENT COMMAND...
  step() {
    local name=$1 share=$2
    shift 2
    local left=$((budget - (SECONDS - start)))
    local limit=$((budget * share / 100))
    ((limit < 15)) && limit=15
    ((limit > left)) && limit=$left
    last_rc=1
    if ((limit < 5)); then
      echo "$name: skipped, no time left" | tee -a "$summary"
      return
    fi
    local t0=$SECONDS rc=0
    local log="$out/steps.log"
    echo "=== $name: $*" >>"$log"
    local from
    from=$(wc -l <"$log")
    timeout --kill-after=5 "$limit" "$@" >>"$log" 2>&1 || rc=$?
    local verdict="ok"
    ((rc == 124 || rc == 137)) && verdict="TIMED OUT after ${limit} s"
    ((rc != 0 && rc != 124 && rc != 137)) && verdict="FAILED (rc $rc)"
    last_rc=$rc
    echo "$name: $verdict in $((SECONDS - t0)) s" | tee -a "$summary"
    tail -n +"$((from + 1))" "$log" | grep -E '^test result|FAILED|panicked' | head -n 5 | sed 's/^/    /' | tee -a "$summary" || true
  }

  step devices 3 "$bin/nopescope" info --devices
  step fixed_cost 4 "$bin/nopescope" bench --backend gpu --fixed-cost
  step gpu_kernels 12 "$bin/gpu_kernels" --test-threads=1 --nocapture
  step gpu_engine 12 "$bin/gpu_engine" --test-threads=1 --nocapture
  step bench 25 "$bin/nopescope" bench --backend gpu --json --profile
  if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    step torch 15 python3 tests/reference/bench_torch.py --device cuda --json
  else
    echo "torch: skipped, no PyTorch with CUDA here" | tee -a "$summary"
  fi
  NOPESCOPE_ATTN_SHAPES=256x6x32,1024x6x32,16384x6x32,2048x32x64 \
    step kernel_probe 12 "$bin/gpu_kernels" attention_speed passes_against --ignored --nocapture --test-threads=1
  NOPESCOPE_PAPER_DIR="$paper" step paper_write 5 "$bin/gpu_engine" write_paper_shape_model --ignored --nocapture
  if ((last_rc == 0)); then
    local w
    for w in f32 f16; do
      step "paper_$w" 5 "$bin/nopescope" bench --model "$paper" --tokens 2048 --runs 3 --backend gpu --gpu-weights "$w"
    done
  fi
  echo "total: $((SECONDS - start)) s of $budget" | tee -a "$summary"
}

case "${1:-}" in
  pack) pack ;;
  run)
    shift
    run "$@"
    ;;
  *)
    echo "usage: tests/gpu_kit.sh pack | run OUT [SECS]" >&2
    exit 2
    ;;
esac
