// How measurements and events leave the serving core. The scheduler reports through this
// interface and knows nothing of Prometheus or of a log library; the server implements it
// (server/metrics.h, its log), in-process callers leave it out. Every method may be called from
// the engine thread and from media workers at once.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vlc::engine {

class MetricsSink {
 public:
  virtual ~MetricsSink() = default;
  virtual void ObserveTtft(double seconds) {}
  virtual void ObserveInterToken(double seconds) {}
  virtual void ObserveQueueTime(double seconds) {}
  virtual void ObservePrefill(double seconds) {}
  virtual void ObserveEndToEnd(double seconds) {}
  virtual void CountPromptTokens(int64_t text, int64_t visual) {}
  virtual void CountGeneratedTokens(int64_t n) {}
  virtual void SetKvBytes(int64_t used, int64_t capacity, int64_t full_equivalent) {}
  // kept / full of a compressed prompt, and each layer's kept / prompt length.
  virtual void ObserveCompression(double kept_over_full, const std::vector<double>& layer_ratios) {}
  virtual void SetSessionsActive(int64_t n) {}
  virtual void CountEviction(const std::string& reason) {}
  virtual void SetBatchSize(int64_t n) {}
  // Requests accepted and not yet admitted (waiting for media preparation, a batch slot or
  // pages), and requests admitted (prefilling or decoding).
  virtual void SetQueueDepth(int64_t n) {}
  virtual void SetRunning(int64_t n) {}
  // The KV pool's shape, once: tokens per page and pages (every layer's pages together).
  virtual void SetKvCacheShape(int64_t page_tokens, int64_t pages) {}
  // A finished request's cache under `policy`: bytes its pages held and what the uncompressed
  // cache would hold for the same tokens.
  virtual void CountKvBytes(const std::string& policy, int64_t kept, int64_t full) {}
  // A call naming a session found it (a hit) or not (a miss: unknown, expired or evicted).
  virtual void CountSessionLookup(bool hit) {}
  // A session that left for the session store ("saved"), came back from it ("restored"), was
  // deleted while there ("dropped"), or whose snapshot could not be restored ("rejected").
  virtual void CountSessionMove(const std::string& result) {}
  // A request's media prepared on a worker: decode, preprocess and vision tower.
  virtual void ObserveMediaPrepared(double seconds, int64_t pictures) {}
  // One event as key=value fields ("event=session_evicted session=... reason=ttl").
  virtual void LogEvent(const std::string& fields) {}
};

}  // namespace vlc::engine
