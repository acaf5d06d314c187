// Time as an input. The scheduler and the session table read the time through a Clock, so that
// tests move it (TTL expiry, deadlines) instead of sleeping through it.
#pragma once

#include <chrono>
#include <mutex>

namespace vlc::engine {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  // The process's monotonic clock (std::chrono::steady_clock); never null, never freed.
  static const Clock* Steady();
};

// A clock that moves only when told to; thread-safe.
class ManualClock final : public Clock {
 public:
  ManualClock() : now_(std::chrono::steady_clock::now()) {}
  TimePoint Now() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return now_;
  }
  template <typename Rep, typename Period>
  void Advance(std::chrono::duration<Rep, Period> d) {
    std::lock_guard<std::mutex> lock(mu_);
    now_ += std::chrono::duration_cast<std::chrono::steady_clock::duration>(d);
  }

 private:
  mutable std::mutex mu_;
  TimePoint now_;
};

inline double SecondsBetween(Clock::TimePoint a, Clock::TimePoint b) {
  return std::chrono::duration<double>(b - a).count();
}

}  // namespace vlc::engine
