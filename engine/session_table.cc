#include "engine/session_table.h"

#include <algorithm>
#include <cstring>
#include <functional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vlc::engine {
namespace {

// 128 random bits: session ids must not be guessable.
std::string NewSessionId() {
  static std::random_device rd;
  std::uniform_int_distribution<uint64_t> d;
  return absl::StrFormat("%016x%016x", d(rd), d(rd));
}

}  // namespace

const char* SessionEndName(SessionEnd why) {
  switch (why) {
    case SessionEnd::kDeleted: return "deleted";
    case SessionEnd::kTtl: return "ttl";
    case SessionEnd::kKvPages: return "kv_pages";
    case SessionEnd::kMaxSessions: return "max_sessions";
    case SessionEnd::kFailed: return "failed";
    case SessionEnd::kMoved: return "moved";
  }
  return "unknown";
}

SessionTable::SessionTable(SessionTableOptions options, const Clock* clock, MetricsSink* metrics)
    : options_(options),
      clock_(clock),
      metrics_(metrics),
      gone_ids_(options.remembered_gone),
      gone_(options.remembered_gone) {}

absl::StatusOr<std::string> SessionTable::Insert(Session s, const std::string& wanted) {
  std::string id = wanted;
  if (id.empty()) {
    id = NewSessionId();
    while (sessions_.count(id)) id = NewSessionId();
  } else if (sessions_.count(id)) {
    return absl::AlreadyExistsError(
        absl::StrCat("a session with id '", id, "' exists; choose another id"));
  }
  s.last_used = clock_->Now();
  sessions_.emplace(id, std::move(s));
  count_ = static_cast<int64_t>(sessions_.size());
  if (metrics_) metrics_->SetSessionsActive(count_);
  return id;
}

absl::StatusOr<Session*> SessionTable::Find(const std::string& id, const std::string& owner) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) {
    const uint64_t h = std::hash<std::string>{}(id);
    for (size_t k = 1; k <= gone_count_; ++k) {  // newest first: an id may have gone twice
      const size_t slot = (gone_next_ + gone_ids_.size() - k) % gone_ids_.size();
      if (gone_ids_[slot] == h) return absl::NotFoundError(GoneMessage(id, gone_[slot]));
    }
    return absl::NotFoundError(absl::StrCat("unknown session id '", id,
                                            "': it was never created here, or it was deleted"));
  }
  if (it->second.owner != owner) {
    return absl::PermissionDeniedError(absl::StrCat("session ", id, " belongs to another caller"));
  }
  return &it->second;
}

kvcache::SeqId SessionTable::Remove(std::string id, SessionEnd why, const std::string& detail) {
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return -1;
  const kvcache::SeqId seq = it->second.seq;
  const double idle = SecondsBetween(it->second.last_used, clock_->Now());
  sessions_.erase(it);
  if (!gone_ids_.empty()) {  // remember recent ones only: the ring overwrites the oldest
    gone_ids_[gone_next_] = std::hash<std::string>{}(id);
    Gone& g = gone_[gone_next_];
    g.why = why;
    g.idle_seconds = static_cast<float>(idle);
    size_t n = std::min(detail.size(), g.detail.size() - 1);
    if (n < detail.size()) {  // cut at a character's start, so the message stays valid UTF-8
      while (n > 0 && (static_cast<unsigned char>(detail[n]) & 0xC0) == 0x80) --n;
    }
    std::memcpy(g.detail.data(), detail.data(), n);
    g.detail[n] = '\0';
    gone_next_ = (gone_next_ + 1) % gone_ids_.size();
    gone_count_ = std::min(gone_count_ + 1, gone_ids_.size());
  }
  if (why != SessionEnd::kDeleted && why != SessionEnd::kFailed && why != SessionEnd::kMoved) {
    if (metrics_) {
      metrics_->LogEvent(absl::StrFormat("event=session_evicted session=%s reason=%s idle_s=%.1f",
                                         id, SessionEndName(why), idle));
      metrics_->CountEviction(SessionEndName(why));
    }
  }
  count_ = static_cast<int64_t>(sessions_.size());
  if (metrics_) metrics_->SetSessionsActive(count_);
  return seq;
}

std::string SessionTable::GoneMessage(const std::string& id, const Gone& g) const {
  switch (g.why) {
    case SessionEnd::kTtl:
      return absl::StrFormat("session %s expired after %.0f s idle", id, g.idle_seconds);
    case SessionEnd::kDeleted:
      return absl::StrCat("session ", id, " was deleted");
    case SessionEnd::kFailed:
      return absl::StrCat("session ", id, " ended when its turn failed: ", g.detail.data());
    case SessionEnd::kMoved:
      return absl::StrCat("session ", id,
                          " moved to the session store as this replica stopped; another "
                          "replica continues it");
    default:
      return absl::StrCat("session ", id, " was evicted (", SessionEndName(g.why),
                          "): the server needed its room; create a new session");
  }
}

std::vector<std::string> SessionTable::Expired() const {
  std::vector<std::string> out;
  if (options_.ttl_seconds <= 0) return out;
  const auto now = clock_->Now();
  for (const auto& [id, s] : sessions_) {
    if (!s.busy && SecondsBetween(s.last_used, now) > options_.ttl_seconds) out.push_back(id);
  }
  return out;
}

std::string SessionTable::LeastRecentlyUsedIdle() const {
  const std::string* lru = nullptr;
  Clock::TimePoint oldest = Clock::TimePoint::max();
  for (const auto& [id, s] : sessions_) {
    if (!s.busy && s.last_used < oldest) {
      oldest = s.last_used;
      lru = &id;
    }
  }
  return lru ? *lru : std::string();
}

}  // namespace vlc::engine
