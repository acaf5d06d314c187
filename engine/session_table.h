// The sessions a scheduler holds: who owns each, how long it has been idle, what it has cost, and
// for a bounded number of gone ones, why they are gone (so a late call gets a clear NOT_FOUND).
// Plain bookkeeping on the engine thread: the KV pages a session holds belong to the generator,
// and whoever removes a session here closes its sequence there.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/clock.h"
#include "engine/metrics_sink.h"
#include "kvcache/kv_cache.h"

namespace vlc::engine {

struct Session {
  kvcache::SeqId seq = -1;
  std::string owner;
  std::string policy;
  int64_t next_pos = 0;   // logical length: positions used by the tokens fed so far
  int last_token = -1;    // sampled at the end of the last turn, not yet fed
  int turns = 0;
  int visual_tokens = 0;
  bool has_prefix = false;  // the opening carried prefix text
  bool busy = false;        // a turn is generating (never evicted, never expired)
  bool delete_when_idle = false;  // deleted while a turn ran: it goes when that turn ends
  Clock::TimePoint last_used;
  std::vector<int> history;  // every id fed so far, opening included, in order
};

// Why a session left (counted as vlcache_session_evictions_total{reason}, except kDeleted,
// kFailed and kMoved: saved to the session store for another replica to continue).
enum class SessionEnd { kDeleted, kTtl, kKvPages, kMaxSessions, kFailed, kMoved };
const char* SessionEndName(SessionEnd why);

struct SessionTableOptions {
  int max_sessions = 256;
  double ttl_seconds = 600;  // <= 0: sessions never expire
  size_t remembered_gone = 10000;
};

class SessionTable {
 public:
  SessionTable(SessionTableOptions options, const Clock* clock, MetricsSink* metrics);

  // A new session with an unguessable id (128 random bits); returns the id.
  // Adds `s` under `id`, or a new random id when `id` is empty; ALREADY_EXISTS when a session
  // has that id. A gone id may be given again.
  absl::StatusOr<std::string> Insert(Session s, const std::string& id = "");
  bool Contains(const std::string& id) const { return sessions_.count(id) > 0; }
  // NOT_FOUND saying why when it is gone or unknown, PERMISSION_DENIED when another caller owns it.
  absl::StatusOr<Session*> Find(const std::string& id, const std::string& owner);
  // Removes it, remembers why (`detail` adds to the message a late caller gets) and returns the
  // sequence the caller must close; -1 when unknown.
  // `id` is taken by value: callers pass the table's own key, which the removal frees.
  kvcache::SeqId Remove(std::string id, SessionEnd why, const std::string& detail = "");

  // Idle sessions past their TTL.
  std::vector<std::string> Expired() const;
  // The idle session used least recently; empty when every session is busy (or none exists).
  std::string LeastRecentlyUsedIdle() const;
  bool Full() const { return static_cast<int>(sessions_.size()) >= options_.max_sessions; }
  size_t size() const { return sessions_.size(); }
  bool empty() const { return sessions_.empty(); }
  // The number of sessions, readable from any thread.
  int64_t count() const { return count_.load(); }
  const std::map<std::string, Session>& all() const { return sessions_; }
  const Clock* clock() const { return clock_; }

 private:
  SessionTableOptions options_;
  const Clock* clock_;
  MetricsSink* metrics_;
  std::map<std::string, Session> sessions_;
  std::atomic<int64_t> count_{0};
  // Why the last `remembered_gone` sessions went, in a ring allocated once: a long-running
  // server ends sessions all the time, and small records allocated one by one among the
  // requests' short-lived buffers would pin the heap's pages long after those are freed. An id
  // is remembered by its 64-bit hash (a late call brings the id; a collision could only turn an
  // "unknown session" answer into another NOT_FOUND message).
  struct Gone {
    SessionEnd why = SessionEnd::kDeleted;
    float idle_seconds = 0;
    std::array<char, 120> detail{};  // kFailed's reason, cut to fit
  };
  std::vector<uint64_t> gone_ids_;  // hashes, scanned newest first on a miss
  std::vector<Gone> gone_;
  size_t gone_next_ = 0;   // the slot the next one takes
  size_t gone_count_ = 0;  // slots in use
  std::string GoneMessage(const std::string& id, const Gone& g) const;
};

}  // namespace vlc::engine
