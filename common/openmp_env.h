// LibTorch's CPU kernels run on OpenMP threads, and Debian's OpenBLAS runs its GEMMs on threads
// of its own. By default an OpenMP worker spins for about a millisecond after every parallel
// region, and a LibTorch forward pass opens one per operator, so the spinning worker takes the
// core that OpenBLAS's second thread needs: measured here (2 cores), a 64-token prefill chunk of
// a 4-layer, 1024-wide decoder took 200-250 ms with spinning workers and 78 ms with sleeping
// ones, while whole-prompt prefill and decode did not change. libgomp reads its wait policy once,
// when it loads, so a program that wants it re-executes itself with OMP_WAIT_POLICY=PASSIVE.
// An OMP_WAIT_POLICY already in the environment (ACTIVE, say) is kept.
#pragma once

#include <stdlib.h>
#include <unistd.h>

namespace vlc {

// Call first thing in main(); returns only when the process keeps its environment (the policy
// was already set, or the re-execution failed, in which case the program runs as it is).
inline void PreferSleepingOpenMpWorkers(char** argv) {
  if (getenv("OMP_WAIT_POLICY") != nullptr) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
  execv("/proc/self/exe", argv);
}

}  // namespace vlc
