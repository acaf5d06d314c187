#!/usr/bin/env bash
# The whole check on the GPU machine, in one run within a time budget (PyTorch's LibTorch 2.x,
# CUDA, no package registry): builds the LibTorch-only parts of vlcache (kvcache, engine core, the
# CUDA kernels, benchmarks) against that LibTorch and runs, in this order, what only that machine
# can run first:
#   1. configure (CUDA on, sm_90; dq, media and tokenizer off: their libraries are not there)
#   2. build the GPU targets: the CUDA test suites and vlcache-bench-cuda
#   3. the CUDA test suites, one by one (log and gtest XML each)
#   4. vlcache-bench-cuda at its default sizes (JSON)
#   5. build everything else of this configuration (the CPU suites and benchmarks)
#   6. the CPU ctest (everything but the CUDA suites of step 3)
#   7. the CPU benchmarks (engine, KV cache), each only if the time left allows it
# Every step's log goes to $OUT/<step>.log and its exit status and time to $OUT/summary.txt; a step
# that fails does not stop the next ones (a build failure leaves what did build to run).
#
# Here first: scripts/pack-device-deps.sh (the header-only and small dependencies, in .devdeps/),
# then on the GPU machine, carrying .devdeps: scripts/device-check.sh
# On this machine, to test the script's logic: OUT=/tmp/dc BUILD=build-cb JOBS=1 \
#   scripts/device-check.sh --dry-run
# (--dry-run: no time budget unless BUDGET_S is set, Debian's LibTorch when python3 has no torch,
# the system's packages when .devdeps is absent, the CUDA benchmark's exit 2 without a device
# counted as expected, and the CPU benchmarks at token sizes.)
#
# Environment: OUT (results, default /tmp/vlcache-device-check), BUILD (build folder, default
# build-device), JOBS (default nproc), BUDGET_S (seconds for the whole script, default 450, which
# with the machine's start fits the 15 minutes it is lent for; 0 = none), CUDA_ARCH (default 90),
# PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

T0=$(date +%s)
OUT=${OUT:-/tmp/vlcache-device-check}
BUILD=${BUILD:-build-device}
JOBS=${JOBS:-$(nproc)}
CUDA_ARCH=${CUDA_ARCH:-90}
PY=${PYTHON:-python3}
# Each step's own cap (below, in seconds for the GPU machine's 16 cores) is stretched here.
if [ "$DRY" = 1 ]; then BUDGET_S=${BUDGET_S:-0}; CAP_SCALE=10; else BUDGET_S=${BUDGET_S:-450}; CAP_SCALE=1; fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)  # absolute: some steps run in the build folder
: > "$OUT/summary.txt"

note() { echo "$*" | tee -a "$OUT/summary.txt"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
# Seconds left of the budget (a large number when there is none).
left() {
  if [ "$BUDGET_S" -gt 0 ]; then echo $(( BUDGET_S - $(elapsed) )); else echo 999999; fi
}

# step NAME CAP_S COMMAND...: runs COMMAND with its output in $OUT/NAME.log, stopped after CAP_S
# seconds or when the budget runs out, whichever is first; records its status and time.
step() {
  local name=$1 cap=$(( $2 * CAP_SCALE )); shift 2
  local limit; limit=$(left)
  [ "$cap" -lt "$limit" ] && limit=$cap
  if [ "$limit" -lt 5 ]; then
    note "$name: skipped (budget spent at $(elapsed)s)"
    return 124
  fi
  local t0; t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local how="rc=$rc"
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && how="rc=$rc (stopped at its limit of ${limit}s)"
  note "$name: $how in $(( $(date +%s) - t0 ))s (at $(elapsed)s)"
  [ $rc -eq 0 ] || tail -n 30 "$OUT/$name.log"
  return $rc
}

# ---- Where the dependencies come from
DEPS=$PWD/.devdeps/usr
if [ -d "$DEPS" ]; then
  export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
elif [ "$DRY" = 1 ]; then
  DEPS=""
else
  echo "missing .devdeps: run scripts/pack-device-deps.sh and carry .devdeps" >&2
  exit 2
fi
# PyTorch's LibTorch where python3 has torch (the GPU machine), else the default search path
# (Debian's LibTorch here).
TORCH_PREFIX=$($PY -c 'import torch;print(torch.utils.cmake_prefix_path)' 2>/dev/null) || TORCH_PREFIX=""
PREFIX="$TORCH_PREFIX"
[ -n "$DEPS" ] && PREFIX="${PREFIX:+$PREFIX;}$DEPS"

{
  echo "mode: $([ "$DRY" = 1 ] && echo dry-run || echo device)  budget: ${BUDGET_S}s  jobs: $JOBS"
  date -u; nproc; free -g | head -2
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv 2>&1
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -1
  echo "LibTorch: ${TORCH_PREFIX:-default search path}"
  cmake --version | head -1; nvcc --version 2>&1 | tail -2; ${CXX:-c++} --version | head -1
  command -v ninja >/dev/null && echo "ninja $(ninja --version)"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# ---- 1. Configure
GEN=(); KEEP=(-k); command -v ninja >/dev/null && { GEN=(-G Ninja); KEEP=(-k 0); }
# A build folder made by another generator cannot be reused.
if [ -f "$BUILD/CMakeCache.txt" ] && [ ${#GEN[@]} -gt 0 ] && ! grep -q "CMAKE_GENERATOR:INTERNAL=Ninja" "$BUILD/CMakeCache.txt"; then
  note "note: $BUILD was made by another generator; using Unix Makefiles"
  GEN=(); KEEP=(-k)
fi
step configure 180 cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$PREFIX" -DVLC_WITH_MEDIA=OFF -DVLC_WITH_TOKENIZER=OFF -DVLC_WITH_DQ=OFF \
  -DVLC_WITH_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH" -DVLC_BUILD_TESTS=ON \
  -DVLC_BUILD_BENCH=ON || {
  cp "$BUILD"/CMakeFiles/CMakeError.log "$BUILD"/CMakeFiles/CMakeConfigureLog.yaml "$OUT/" 2>/dev/null
  note "configure failed: nothing else can run"
  exit 1
}
# LibTorch's CUDA config enables CUDA before ours: record what the kernels are built for.
note "configured: $(grep -E '^CMAKE_CUDA_ARCHITECTURES:' "$BUILD/CMakeCache.txt"), cuBLAS reference: $(grep -q 'cuBLAS not found' "$OUT/configure.log" && echo no || echo yes)"

# The build's targets (Ninja's and Makefiles' `help` formats).
ALL_TARGETS=$(cmake --build "$BUILD" --target help 2>/dev/null |
  sed -n -e 's/^\.\.\. \([^ ]*\).*/\1/p' -e 's/^\([A-Za-z0-9_.+-]*\): .*/\1/p' | sort -u)
has_target() { grep -qx "$1" <<< "$ALL_TARGETS"; }

# GPU suites: tests/*/cuda/*_test.cc, and tests/*/*{cuda,gpu,device}*_test.cc (the GPU backend of
# the engine and the cache, whose GPU halves skip without a device).
GPU_TESTS=()
for src in tests/*/cuda/*_test.cc tests/*/*cuda*_test.cc tests/*/*gpu*_test.cc tests/*/*device*_test.cc; do
  [ -f "$src" ] || continue
  name=$(basename "$src" .cc)
  has_target "$name" && GPU_TESTS+=("$name")
done
GPU_TESTS=($(printf '%s\n' "${GPU_TESTS[@]}" | sort -u))
GPU_TARGETS=("${GPU_TESTS[@]}")
has_target vlcache-bench-cuda && GPU_TARGETS+=(vlcache-bench-cuda)
note "GPU targets: ${GPU_TARGETS[*]:-none}"

# ---- 2. Build the GPU targets
if [ ${#GPU_TARGETS[@]} -gt 0 ]; then
  step build-gpu 300 cmake --build "$BUILD" -j "$JOBS" --target "${GPU_TARGETS[@]}" -- "${KEEP[@]}"
fi

# ---- 3. The CUDA suites, one by one
mkdir -p "$OUT/gtest"
DEVICES=0
[ -x "$BUILD/bin/vlcache-bench-cuda" ] &&
  DEVICES=$("$BUILD/bin/vlcache-bench-cuda" --probe 2>/dev/null | sed -n 's/^cuda devices: //p')
DEVICES=${DEVICES:-0}
note "CUDA devices visible: $DEVICES"
[ "$DRY" = 0 ] && [ "$DEVICES" = 0 ] && note "WARNING: no CUDA device visible: every GPU test below skips"
for t in "${GPU_TESTS[@]}"; do
  exe=$BUILD/bin/$t
  if [ ! -x "$exe" ]; then
    note "cuda-$t: not built"
    continue
  fi
  step "cuda-$t" 150 "$exe" --gtest_output="xml:$OUT/gtest/$t.xml"
  [ -f "$OUT/cuda-$t.log" ] || continue
  # The counts, so that a run whose tests skipped (no device) is never mistaken for a pass on one.
  passed=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$OUT/cuda-$t.log")
  skipped=$(sed -n 's/^\[  SKIPPED \] \([0-9]*\) test.*/\1/p' "$OUT/cuda-$t.log")
  failed=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$OUT/cuda-$t.log")
  note "  $t: passed ${passed:-?}, skipped ${skipped:-0}, failed ${failed:-0}"
done

# ---- 4. The kernel benchmark
if [ -x "$BUILD/bin/vlcache-bench-cuda" ]; then
  if [ "$DRY" = 1 ]; then
    step bench-cuda 120 "$BUILD/bin/vlcache-bench-cuda" --quick --json "$OUT/bench-cuda.json"
    rc=$?
    [ "$DEVICES" = 0 ] && [ $rc -eq 2 ] && note "  bench-cuda: exit 2 without a device, as expected"
  else
    step bench-cuda 200 "$BUILD/bin/vlcache-bench-cuda" --json "$OUT/bench-cuda.json"
  fi
else
  note "bench-cuda: not built"
fi

# ---- 5. Everything else of this configuration (the CPU suites and benchmarks)
step build-cpu 300 cmake --build "$BUILD" -j "$JOBS" -- "${KEEP[@]}"

# ---- 6. The CPU ctest, without the GPU suites' tests: they ran in step 3 (their exact names,
# from each suite's --gtest_list_tests, are left out).
EXCLUDE="_NOT_BUILT"
for t in "${GPU_TESTS[@]}"; do
  [ -x "$BUILD/bin/$t" ] || continue
  names=$("$BUILD/bin/$t" --gtest_list_tests 2>/dev/null |
    awk '/^[^ ]/ { suite = $1 } /^  [^ ]/ { print suite $1 }' | sed 's/\./\\./g' | paste -sd'|')
  [ -n "$names" ] && EXCLUDE="$EXCLUDE|^($names)\$"
done
JUNIT=()
# (grep without -q: under pipefail an early exit would fail the pipe)
ctest --help 2>/dev/null | grep -- --output-junit > /dev/null && JUNIT=(--output-junit "$OUT/ctest-cpu.xml")
step ctest-cpu 150 bash -c 'cd "$1" && shift && exec ctest --output-on-failure "$@"' _ "$BUILD" \
  -j "$JOBS" -E "$EXCLUDE" --timeout 120 "${JUNIT[@]}"
sed -n -e '/tests passed, /p' -e '/The following tests FAILED/,$p' "$OUT/ctest-cpu.log" 2>/dev/null | head -n 40 |
  tee -a "$OUT/summary.txt"

# ---- 7. The CPU benchmarks, each only with the time it needs left
# name, seconds it needs (the GPU machine's host: 16 cores), command...
maybe_bench() {
  local name=$1 need=$2; shift 2
  if [ ! -x "$1" ]; then note "$name: not built"; return; fi
  if [ "$(left)" -lt $(( need + 15 )) ]; then
    note "$name: skipped (needs ~${need}s, $(left)s left)"
    return
  fi
  step "$name" $(( need * 2 )) "$@"
}
if [ "$DRY" = 1 ]; then
  maybe_bench bench-engine 60 "$BUILD/bin/vlcache-bench-engine" --hidden 256 --intermediate 512 \
    --layers 1 --heads 4 --kv-heads 4 --vocab 1000 --prompt 32 --steps 2 --repeats 1 \
    --json "$OUT/bench-engine-cpu.json"
  maybe_bench bench-kvcache 60 "$BUILD/bin/vlcache-bench-kvcache" --hidden 256 --intermediate 512 \
    --heads 4 --kv-heads 4 --prompts 256 --steps 2 --repeats 1 --prefill-prompt 64 \
    --prefill-hidden 128 --json "$OUT/bench-kvcache-cpu.json"
else
  maybe_bench bench-engine 90 "$BUILD/bin/vlcache-bench-engine" --hidden 4096 --intermediate 11008 \
    --layers 2 --repeats 5 --json "$OUT/bench-engine-cpu.json"
  maybe_bench bench-kvcache 120 "$BUILD/bin/vlcache-bench-kvcache" --prompts 2048,8192,32768 \
    --budget 0.1 --repeats 3 --steps 6 --json "$OUT/bench-kvcache-cpu.json"
fi

note "total: $(elapsed)s"
echo "---- summary"; cat "$OUT/summary.txt"
echo "---- bench-cuda"; cat "$OUT/bench-cuda.log" 2>/dev/null
exit 0
