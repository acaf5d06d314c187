// A bounded pool of threads for the work a request needs before the engine can take it: decoding
// its image or video, resizing and normalising the pictures, and running the vision tower. The
// engine thread never does this work, so a request that arrives (or waits for KV pages) never
// stalls the streams already decoding, and each request's media are prepared exactly once.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace vlc::engine {

// Workers for `cores` available cores when none are configured: half of them, at least one and
// at most four (the engine thread and LibTorch's own threads need the rest).
int DefaultMediaWorkers(int cores);

class MediaWorkers {
 public:
  // A task runs with `run` true on a worker, or with `run` false when the pool stops before it
  // ran (so that its owner can answer it).
  using Task = std::function<void(bool run)>;

  explicit MediaWorkers(int threads);
  ~MediaWorkers();  // Stop()
  void Post(Task task);
  // Tasks not started are called with run = false; running ones finish; threads join.
  void Stop();
  int threads() const { return static_cast<int>(threads_.size()); }

 private:
  void Work();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> tasks_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace vlc::engine
