// Timing helpers every benchmark shares: a steady clock, seconds between two instants, the
// process's CPU time, and the median of repeats. Plain C++, so that benchmarks of modules without
// LibTorch (dq) use them too.
#pragma once

#include <algorithm>
#include <chrono>
#include <ctime>
#include <vector>

namespace vlc::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::time_point a, Clock::time_point b = Clock::now()) {
  return std::chrono::duration<double>(b - a).count();
}

// CPU seconds this process has used, all threads together. For single-threaded code on a shared
// machine it shows what the work cost apart from waiting for a core.
inline double CpuSeconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace vlc::bench
