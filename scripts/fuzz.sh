#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets of fuzz/ with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer in their own build directory, runs each for FUZZ_SECONDS (60 by
# default) from its seed corpus (fuzz/corpus/<target>), and stops by itself. New inputs go to
# BUILD/corpus/<target>; a crash, a sanitizer report or a hang leaves its input in
# BUILD/findings/<target>/ and makes the run fail. The last lines of each target's log (executions,
# edges covered) are gathered in BUILD/fuzz-report.txt.
#   make fuzz FUZZ_SECONDS=300 FUZZ_TARGETS="http request"
set -euo pipefail
BUILD="${FUZZ_BUILD:-build-fuzz}"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
ALL="safetensors config tokenizer image video request http dq_table snapshot"
TARGETS="${FUZZ_TARGETS:-$ALL}"
JOBS="${JOBS:-$(nproc)}"

command -v clang++ >/dev/null || { echo "fuzz: clang++ is needed (Debian: clang libclang-rt-dev)" >&2; exit 1; }
SAN="-fsanitize=address,undefined,fuzzer-no-link -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
# No precompiled header here: clang refuses one built with other flags (gRPC's -pthread) than a
# target that reuses it.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DVLC_FUZZ=ON -DVLC_BUILD_TESTS=OFF -DVLC_BUILD_BENCH=OFF -DVLC_WITH_CUDA=OFF -DVLC_USE_PCH=OFF \
  -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target $(for t in $TARGETS; do printf '%s_fuzzer ' "$t"; done)

# LibTorch and OpenCV are not instrumented; their allocations at exit are not leaks of ours.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
mkdir -p "$BUILD/logs"
: > "$BUILD/fuzz-report.txt"
failed=""
for t in $TARGETS; do
  mkdir -p "$BUILD/corpus/$t" "$BUILD/findings/$t"
  echo "fuzz: $t for ${SECONDS_EACH}s"
  if ! "$BUILD/bin/${t}_fuzzer" -max_total_time="$SECONDS_EACH" -timeout=20 -rss_limit_mb=6144 \
      -max_len=65536 -print_final_stats=1 -artifact_prefix="$BUILD/findings/$t/" \
      "$BUILD/corpus/$t" "fuzz/corpus/$t" >"$BUILD/logs/$t.log" 2>&1; then
    failed="$failed $t"
    echo "fuzz: $t FOUND something: $BUILD/logs/$t.log, input in $BUILD/findings/$t/" >&2
  fi
  {
    echo "== $t"
    grep -E "^#[0-9]+.*(DONE|cov:)" "$BUILD/logs/$t.log" | tail -n 1 || true
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$BUILD/logs/$t.log" || true
  } >> "$BUILD/fuzz-report.txt"
done
cat "$BUILD/fuzz-report.txt"
if [ -n "$failed" ]; then
  echo "fuzz: findings in:$failed" >&2
  exit 1
fi
