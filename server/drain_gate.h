// The server's drain: once it starts (SIGTERM), new calls are refused with UNAVAILABLE while the
// calls already admitted run to their end, and the main thread waits for them (up to
// --drain-timeout) before it stops the engine. Every RPC handler holds a DrainGate::Call from
// its first line; Admit() is where a call is counted in or refused.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>

#include "absl/status/status.h"

namespace vlc::server {

// The grpc.health.v1 service name that stays SERVING while the process loads and drains (the
// liveness probe's); the overall status ("") is SERVING only while the server takes calls.
inline constexpr char kLivenessService[] = "liveness";

class DrainGate {
 public:
  // One call's place in the count: admitted by Admit(), released when it goes out of scope.
  class Call {
   public:
    explicit Call(DrainGate* gate) : gate_(gate) {}
    ~Call() {
      if (admitted_) gate_->Leave();
    }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;
    // OK, counting the call in flight; UNAVAILABLE once the server drains. A null gate admits.
    absl::Status Admit() {
      if (gate_ == nullptr || admitted_) return absl::OkStatus();
      std::lock_guard<std::mutex> lock(gate_->mu_);
      if (gate_->draining_) {
        return absl::UnavailableError(
            "the server is draining (shutting down) and takes no new calls; retry on another "
            "replica");
      }
      ++gate_->in_flight_;
      admitted_ = true;
      return absl::OkStatus();
    }

   private:
    DrainGate* gate_;
    bool admitted_ = false;
  };

  void StartDraining() {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }
  bool draining() const {
    std::lock_guard<std::mutex> lock(mu_);
    return draining_;
  }
  int in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return in_flight_;
  }
  // Waits until no admitted call is in flight or `deadline` passes; true when none is.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return in_flight_ == 0; });
  }

 private:
  void Leave() {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    cv_.notify_all();
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool draining_ = false;
  int in_flight_ = 0;
};

}  // namespace vlc::server
