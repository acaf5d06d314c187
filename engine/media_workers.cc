#include "engine/media_workers.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace vlc::engine {

int DefaultMediaWorkers(int cores) { return std::clamp(cores / 2, 1, 4); }

MediaWorkers::MediaWorkers(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Work(); });
}

MediaWorkers::~MediaWorkers() { Stop(); }

void MediaWorkers::Post(Task task) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!stop_) {
      tasks_.push_back(std::move(task));
      task = nullptr;
    }
  }
  if (task) {
    task(false);
    return;
  }
  cv_.notify_one();
}

void MediaWorkers::Stop() {
  std::deque<Task> left;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ && threads_.empty()) return;
    stop_ = true;
    left.swap(tasks_);
  }
  cv_.notify_all();
  for (auto& t : left) t(false);
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

void MediaWorkers::Work() {
  at::init_num_threads();  // LibTorch's configured thread count, on this thread too
  while (true) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task(true);
  }
}

}  // namespace vlc::engine
