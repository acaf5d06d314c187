// Where the server spent a run's time, from its own Prometheus histograms: each one's count and
// sum read before and after the run, and the difference.
#pragma once

#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace vlc::loadtest {

// The histograms read: queueing, media preparation, prefill, first token, token gaps, whole
// requests.
extern const char* const kServerHistograms[6];

struct HistogramTotals {
  std::map<std::string, std::pair<double, double>> count_sum;  // name -> (count, sum), all labels
};

// Totals of kServerHistograms in a /metrics page (series of any labels added together).
HistogramTotals ParseHistograms(const std::string& metrics_text);

// Reads http://host_port/metrics.
absl::StatusOr<HistogramTotals> ScrapeHistograms(const std::string& host_port);

// {"vlcache_prefill_seconds": {"count", "sum_s", "mean_ms"}, ...} of `after` - `before`.
nlohmann::json HistogramDelta(const HistogramTotals& before, const HistogramTotals& after);

}  // namespace vlc::loadtest
