// The engine thread: it alone owns the model, the KV cache and the generator (no locks inside
// the engine), and runs continuous batching. gRPC handlers submit jobs through a bounded queue
// and read their results from a per-job channel; every job carries a cancellation flag and a
// deadline, checked between decode steps.
//
// Each loop iteration: admit waiting jobs while fewer than max_running sequences run and the
// pool has the pages for the job's whole prompt (a job that cannot fit even into an empty pool
// fails with RESOURCE_EXHAUSTED); then one decode step for every running sequence; finished
// sequences leave at once, their pages back in the pool.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "engine/pipeline.h"
#include "server/metrics.h"

namespace vlc::server {

// A session as the API reports it.
struct SessionView {
  std::string id;
  std::string policy;
  int64_t kv_bytes_kept = 0;
  int64_t kv_bytes_full = 0;
  std::vector<int64_t> layer_budgets;
  int64_t logical_length = 0;
  double idle_seconds = 0;
  int turns = 0;
  int visual_tokens = 0;
};

// What a handler receives: text deltas, then one final event with the usage or an error.
struct StreamEvent {
  std::string text;
  std::vector<int> token_ids;
  bool final = false;
  absl::Status status;              // final only
  engine::GenerateResponse usage;   // final and OK only
  double queue_seconds = 0;         // final only
  SessionView session;              // final, for session calls
};

// A single-producer (engine thread), single-consumer (handler) queue of events.
class EventChannel {
 public:
  void Push(StreamEvent e);
  // Waits up to `timeout` for an event; false when none arrived.
  bool Pop(StreamEvent* out, std::chrono::milliseconds timeout);

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StreamEvent> events_;
};

struct Job {
  enum class Kind { kGenerate, kCreateSession, kSessionGenerate, kGetSession, kDeleteSession };
  Kind kind = Kind::kGenerate;
  std::string request_id;
  engine::GenerateRequest request;  // media and prompt prefix for kCreateSession
  std::string session_id;           // session calls
  std::string owner;                // the caller's identity (its token) when auth is on
  std::shared_ptr<EventChannel> channel = std::make_shared<EventChannel>();
  std::atomic<bool> cancelled{false};
  std::chrono::steady_clock::time_point enqueued = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct EngineLoopOptions {
  int max_queue = 64;
  int max_running = 16;
  int max_sessions = 256;
  double session_ttl_seconds = 600;
};

class EngineLoop {
 public:
  EngineLoop(engine::Pipeline* pipeline, EngineLoopOptions options, Metrics* metrics);
  ~EngineLoop();

  void Start();
  // Fails the jobs still waiting or running with UNAVAILABLE and joins the thread.
  void Stop();

  // RESOURCE_EXHAUSTED when the queue is full (its length is in the message).
  absl::Status Submit(std::shared_ptr<Job> job);

  int64_t queue_depth() const { return queue_depth_.load(); }
  int64_t running() const { return running_count_.load(); }

 private:
  struct Active;
  struct Session {
    engine::SeqId seq = -1;
    std::string owner;
    std::string policy;
    int64_t next_pos = 0;   // logical length
    int last_token = -1;    // sampled at the end of the last turn, not yet fed
    int turns = 0;
    int visual_tokens = 0;
    bool has_prefix = false;
    bool busy = false;      // a turn is generating
    std::chrono::steady_clock::time_point last_used;
  };
  void Run();
  void Admit(std::vector<std::shared_ptr<Job>>& waiting);
  // Session calls that need no decoding; returns false when the job must wait for pages.
  bool HandleSessionJob(const std::shared_ptr<Job>& job);
  absl::StatusOr<Session*> FindSession(const Job& job);
  SessionView View(const std::string& id, const Session& s) const;
  // Frees idle sessions, least recently used first, until `pages` are free; false if impossible.
  bool EvictFor(int64_t pages);
  void Evict(const std::string& id, const std::string& reason);
  void ExpireIdle();
  void Fail(Job& job, absl::Status status);
  void PublishGauges();

  engine::Pipeline* pipeline_;
  EngineLoopOptions options_;
  Metrics* metrics_;
  std::unique_ptr<engine::Generator> generator_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stop_ = false;
  std::thread thread_;
  std::atomic<int64_t> queue_depth_{0};
  std::atomic<int64_t> running_count_{0};
  std::vector<std::unique_ptr<Active>> active_;
  std::map<std::string, Session> sessions_;
  std::map<std::string, std::string> gone_;  // session id -> why it is gone (bounded)
  std::deque<std::string> gone_order_;
};

}  // namespace vlc::server
