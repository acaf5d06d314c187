// LibTorch's CPU kernels run on OpenMP threads, and Debian's OpenBLAS runs its GEMMs on threads
// of its own; both kinds keep spinning (OpenMP) or yielding (OpenBLAS) for a while after their
// work ends, and on a machine with as many threads as cores they then take the core the other
// kind needs. Measured here (2 cores, docs/BENCHMARKS.md, "Serving core"), with 4 streams
// decoding while a long prompt is prefilled in chunks: the streams' p99 gap was 287 ms with
// spinning OpenMP workers and 111 ms with sleeping ones (64-token chunks), and 4.5x against 3.8x
// their median with OpenBLAS's default yield timeout and the shortest (16-token chunks); whole-
// prompt prefill and decode did not change. Both libraries read these settings once, when they
// load, so a program that wants them re-executes itself with OMP_WAIT_POLICY=PASSIVE and
// OPENBLAS_THREAD_TIMEOUT=4 (the shortest). A value already in the environment is kept.
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <utility>

namespace vlc {

// Call first thing in main(); returns only when the process keeps its environment (both were
// already set, or the re-execution failed, in which case the program runs as it is).
inline void PreferSleepingOpenMpWorkers(char** argv) {
  bool changed = false;
  for (const auto& [name, value] : {std::pair<const char*, const char*>{"OMP_WAIT_POLICY", "PASSIVE"},
                                    {"OPENBLAS_THREAD_TIMEOUT", "4"}}) {
    if (getenv(name) != nullptr) continue;
    if (setenv(name, value, 1) != 0) return;
    changed = true;
  }
  if (changed) execv("/proc/self/exe", argv);
}

}  // namespace vlc
