#!/usr/bin/env bash
# The check run on the GPU machine (PyTorch's LibTorch 2.x, CUDA, no package registry): builds the
# LibTorch-only parts of vlcache (engine core, kvcache, benchmarks) against that LibTorch, runs
# their test suites, and runs the engine and KV-cache benchmarks on its CPUs. Logs and JSON go to $OUT. Prepare with scripts/pack-device-deps.sh here,
# then: device run --carry .devdeps -- scripts/device-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/vlcache-device-check}
mkdir -p "$OUT"
DEPS=$PWD/.devdeps/usr
[ -d "$DEPS" ] || { echo "missing .devdeps: run scripts/pack-device-deps.sh and carry .devdeps" >&2; exit 2; }
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
PY=${PYTHON:-python3}
TORCH_PREFIX=$($PY -c 'import torch;print(torch.utils.cmake_prefix_path)')
{
  date -u; nproc; free -g | head -2
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
  cmake --version | head -1; nvcc --version | tail -2
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step() {  # name, command...
  local name=$1; shift
  local t0=$(date +%s)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - t0 ))s" | tee -a "$OUT/summary.txt"
  [ $rc -eq 0 ] || tail -n 40 "$OUT/$name.log"
  return $rc
}

GEN=""; KEEP="-k"; command -v ninja >/dev/null && { GEN="-G Ninja"; KEEP="-k 0"; }
step configure cmake -S . -B build-device $GEN -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$TORCH_PREFIX;$DEPS" -DVLC_WITH_MEDIA=OFF -DVLC_WITH_TOKENIZER=OFF || exit 1
step build cmake --build build-device -j "$(nproc)" -- $KEEP || exit 1
step ctest bash -c "cd build-device && ctest --output-on-failure -j 8"
step bench-engine build-device/bin/vlcache-bench-engine --hidden 4096 --intermediate 11008 \
  --layers 2 --repeats 5 --json "$OUT/bench-engine-cpu.json"
step bench-kvcache build-device/bin/vlcache-bench-kvcache --prompts 2048,8192,32768 --budget 0.1 \
  --repeats 3 --steps 6 --json "$OUT/bench-kvcache-cpu.json"
cat "$OUT/bench-engine.log" "$OUT/bench-kvcache.log" 2>/dev/null
exit 0
