// The server's Prometheus metrics (prefix vlcache_, base units), served on their own port at
// /metrics. One Metrics object per process; its methods are thread-safe (prometheus-cpp's
// counters, gauges and histograms are). It is the serving core's sink (engine/metrics_sink.h):
// what the scheduler measures arrives here, and its events go to the log.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/metrics_sink.h"

namespace vlc::server {

class Metrics final : public engine::MetricsSink {
 public:
  // Starts the exposer on `listen` ("host:port"; port 0 picks a free one). INVALID_ARGUMENT or
  // UNAVAILABLE when it cannot bind.
  static absl::StatusOr<std::unique_ptr<Metrics>> Start(const std::string& listen);
  ~Metrics() override;

  // The port the exposer listens on (the real one when 0 was asked).
  int port() const;

  // vlcache_requests_total{method, code}
  void CountRequest(const std::string& method, const std::string& code);
  // vlcache_time_to_first_token_seconds, vlcache_inter_token_latency_seconds,
  // vlcache_queue_time_seconds, vlcache_prefill_seconds, vlcache_request_duration_seconds
  void ObserveTtft(double seconds) override;
  void ObserveInterToken(double seconds) override;
  void ObserveQueueTime(double seconds) override;
  void ObservePrefill(double seconds) override;
  void ObserveEndToEnd(double seconds) override;
  // vlcache_prompt_tokens_total{modality="text"|"visual"}, vlcache_generated_tokens_total
  void CountPromptTokens(int64_t text, int64_t visual) override;
  void CountGeneratedTokens(int64_t n) override;
  // vlcache_kv_cache_bytes{state="used"|"capacity"|"full_equivalent"}
  void SetKvBytes(int64_t used, int64_t capacity, int64_t full_equivalent) override;
  // vlcache_kv_compression_ratio (kept / full of the last compressed prompt) and
  // vlcache_kv_layer_budget_ratio histogram (per-layer kept / prompt length)
  void ObserveCompression(double kept_over_full, const std::vector<double>& layer_ratios) override;
  // vlcache_sessions_active, vlcache_session_evictions_total{reason}
  void SetSessionsActive(int64_t n) override;
  void CountEviction(const std::string& reason) override;
  // vlcache_batch_size (sequences in the last decode step), vlcache_queue_depth
  void SetBatchSize(int64_t n) override;
  void SetQueueDepth(int64_t n) override;
  void SetRunning(int64_t n) override;
  void SetKvCacheShape(int64_t page_tokens, int64_t pages) override;
  void CountKvBytes(const std::string& policy, int64_t kept, int64_t full) override;
  void CountSessionLookup(bool hit) override;
  void CountSessionMove(const std::string& result) override;
  // vlcache_media_prepare_seconds, vlcache_vision_encoded_pictures_total
  void ObserveMediaPrepared(double seconds, int64_t pictures) override;
  // One log line (spdlog, the server's format).
  void LogEvent(const std::string& fields) override;
  // vlcache_dq_checks_total{pipeline, verdict="pass"|"fail"}: runs validated against their
  // pipeline's history (users' pipelines and the server's own "vlcache.requests");
  // vlcache_dq_violations_total{pipeline, column, metric}: constraints they broke.
  // Creates the pipeline's check series at zero (the server's own telemetry pipeline, whose
  // checks an alert and a dashboard panel watch before the first one happens).
  void DeclareDqPipeline(const std::string& pipeline);
  void CountDqCheck(const std::string& pipeline, bool passed);
  void CountDqViolation(const std::string& pipeline, const std::string& column,
                        const std::string& metric);

 private:
  // The labels a pipeline's (and a column's, when given) series are counted under: their own
  // names for the first kMaxDqPipelines pipelines and kMaxDqColumnsPerPipeline columns of each,
  // "_other" after (metrics.cc).
  std::pair<std::string, std::string> DqLabels(const std::string& pipeline,
                                               const std::string& column);
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Metrics();
};

}  // namespace vlc::server
