// The serving core: requests in, token streams out, over one model and one paged KV cache.
//
// Callers (the gRPC service, the in-process CLI path) submit Jobs and read each job's events from
// its channel; every job carries a cancellation flag and a deadline. Behind Submit:
//   1. media workers (engine/media_workers.h) decode and preprocess the job's media and run the
//      vision tower, once per job, off the engine thread;
//   2. the engine thread admits prepared jobs while fewer than max_running sequences run and the
//      pool has the pages for the job's whole prompt (idle sessions are evicted, least recently
//      used first, to make room; a prompt larger than the whole pool is refused at once);
//   3. each step of the engine thread prefills at most prefill_chunk_tokens prompt tokens of the
//      admitted prompts and decodes one token for every running sequence (engine/generator.h);
//   4. tokens become text deltas on the job's channel (engine/token_stream.h); the final event
//      carries the usage or the error.
// Sessions (engine/session_table.h) keep their compressed cache between turns. The engine thread
// alone touches the model's cache and the generator: no locks inside the engine.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/clock.h"
#include "engine/generator.h"
#include "engine/media_workers.h"
#include "engine/metrics_sink.h"
#include "engine/request.h"
#include "engine/session_snapshot.h"
#include "engine/session_table.h"

namespace vlc::engine {

class Pipeline;
class TokenStream;

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
  std::vector<int> history;  // every id fed so far (the opening's prompt, then each turn)
};

// What a caller receives: text deltas, then one final event with the usage or an error.
struct StreamEvent {
  std::string text;
  std::vector<int> token_ids;
  bool final = false;
  absl::Status status;              // final only
  GenerateResponse usage;           // final and OK only
  double queue_seconds = 0;         // final only
  SessionView session;              // final, for session calls
};

// A single-producer (engine thread), single-consumer (caller) queue of events.
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
  GenerateRequest request;          // media and prompt prefix for kCreateSession
  std::string session_id;           // session calls; an opening: the id chosen ("": any)
  std::string owner;                // the caller's identity (its token) when auth is on
  std::shared_ptr<EventChannel> channel = std::make_shared<EventChannel>();
  std::atomic<bool> cancelled{false};
  Clock::TimePoint enqueued{};      // set by Submit
  Clock::TimePoint deadline = Clock::TimePoint::max();
  // Set by a media worker: the prompt with its visual rows, or why it could not be built.
  std::optional<absl::StatusOr<PreparedPrompt>> prepared;
};

struct SchedulerOptions {
  int max_queue = 64;         // jobs submitted and not yet admitted
  int max_running = 16;       // sequences prefilling or decoding at once
  int max_sessions = 256;
  double session_ttl_seconds = 600;  // <= 0: sessions never expire
  int media_workers = 0;      // threads preparing media; 0: DefaultMediaWorkers(cores)
  int64_t prefill_chunk_tokens = 512;  // prompt tokens prefilled per step; 0: whole prompts
  const Clock* clock = nullptr;        // null: Clock::Steady()
  MetricsSink* metrics = nullptr;      // null: nothing is reported
  // Where sessions go when this scheduler hands them over (MoveSessions) and where a turn for a
  // session it does not hold looks for it (engine/session_snapshot.h); null: a session ends with
  // its scheduler. Snapshots carry `model_fingerprint`, and only matching ones are restored.
  SessionStore* session_store = nullptr;
  std::string model_fingerprint;
  // Once the engine has been idle this long (nothing running or waiting) after doing work, the
  // memory freed meanwhile goes back to the system (`heap_trim`, by default TrimHeap: malloc
  // keeps freed memory in its arenas, and a burst of traffic would otherwise leave the process
  // at its peak size). At most once per idle period; <= 0: never.
  double heap_trim_idle_seconds = 5;
  std::function<void()> heap_trim;  // null: TrimHeap
};

// Returns the memory malloc holds free to the system (glibc's malloc_trim); a no-op elsewhere.
void TrimHeap();

class Scheduler {
 public:
  // `pipeline` must outlive the scheduler; while it runs, the scheduler alone uses its cache.
  Scheduler(const Pipeline* pipeline, SchedulerOptions options);
  ~Scheduler();  // Stop()

  void Start();
  // Fails the jobs still queued, preparing or running with UNAVAILABLE and joins the threads.
  void Stop();
  // Sessions held now (any thread).
  int64_t num_sessions() const { return sessions_.count(); }
  // The drain's hand-over (any thread; needs a session store): from now on every session is
  // saved to the store and leaves this scheduler, idle ones at once, busy ones as their turn ends
  // (before its caller hears the end), new ones as their opening ends, so another replica can
  // continue each. Sessions that cannot be saved stay (and end with the process).
  void MoveSessions();

  // RESOURCE_EXHAUSTED when max_queue jobs wait already; UNAVAILABLE once stopped.
  absl::Status Submit(std::shared_ptr<Job> job);

  int64_t queue_depth() const { return pending_.load(); }
  int64_t running() const { return running_count_.load(); }
  const SchedulerOptions& options() const { return options_; }

 private:
  struct Active;
  void Run();
  void Deliver(std::shared_ptr<Job> job);
  void Prepare(Job& job);
  void Admit(std::deque<std::shared_ptr<Job>>& waiting);
  // Admits the job at the front of `waiting`: false when it must wait for pages.
  enum class Admission { kStarted, kAnswered, kWait };
  Admission AdmitOne(const std::shared_ptr<Job>& job);
  // A job whose media a worker prepared: a one-shot request, or a session's opening.
  Admission StartPrepared(const std::shared_ptr<Job>& job);
  Admission StartTurn(const std::shared_ptr<Job>& job);
  void AnswerSessionCall(const std::shared_ptr<Job>& job);
  // Pages for a prompt of `tokens` on `seq` (-1: a new one) and the tokens the job may generate,
  // beside what the running sequences may still take: kStarted when they are free now (evicting
  // idle sessions if needed), kWait when running sequences hold them, kAnswered (the job failed)
  // when the whole pool cannot hold the prompt.
  Admission ReservePages(Job& job, SeqId seq, int64_t tokens);
  Active& Activate(const std::shared_ptr<Job>& job, std::string policy);
  // The job's token stream, and the generator's callback that feeds it.
  std::function<bool(int)> AttachStream(Active& a);
  void CheckCancellations();
  // Answers the jobs whose sequences finished; returns how many.
  int FinishSequences();
  void FinishOpening(Active& a, const SequenceResult& res);
  void FinishTurn(Active& a, const SequenceResult& res);
  SessionView View(const std::string& id, const Session& s) const;
  // Frees idle sessions, least recently used first, until `pages` are free; false if impossible.
  bool EvictFor(int64_t pages);
  void Evict(const std::string& id, SessionEnd why);
  // Saves a session that is not busy to the store and removes it; false (it stays) on failure.
  bool SaveSession(const std::string& id);
  // A session call for a session this scheduler lacks: brings it back from the store. kStarted:
  // it is in the table now; kAnswered: the job failed with `*why` (no snapshot: the lookup's own
  // NOT_FOUND, extended; a snapshot that cannot be restored: FAILED_PRECONDITION; another
  // caller's: PERMISSION_DENIED); kWait: the pool lacks its pages now.
  Admission RestoreSession(Job& job, const absl::Status& lookup, absl::Status* why);
  void ExpireIdle();
  void Fail(Job& job, absl::Status status);
  void Answered();  // a job left the queue
  void PublishGauges();
  // After `heap_trim_idle_seconds` without work, returns freed memory (once per idle period).
  void MaybeTrimHeap(bool jobs_waiting);
  void Shutdown(std::deque<std::shared_ptr<Job>>& waiting);

  const Pipeline* pipeline_;
  SchedulerOptions options_;
  const Clock* clock_;
  MetricsSink* metrics_;
  std::unique_ptr<Generator> generator_;
  SessionTable sessions_;
  std::unique_ptr<MediaWorkers> media_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> inbox_;  // prepared jobs and session calls
  bool stop_ = false;
  bool started_ = false;
  bool swept_ = false;  // Stop has answered the inbox's last jobs
  std::thread thread_;
  std::atomic<int64_t> pending_{0};
  std::atomic<int64_t> running_count_{0};
  std::vector<std::unique_ptr<Active>> active_;
  std::atomic<bool> moving_{false};  // MoveSessions was called
  bool moved_idle_ = false;          // the engine thread saved the idle sessions since
  bool trim_pending_ = false;        // work was done since the heap was last trimmed
  Clock::TimePoint last_work_;       // when the engine last had something to do
};

}  // namespace vlc::engine
