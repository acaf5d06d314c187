#include "loadtest/server_histograms.h"

#include <cstdlib>
#include <sstream>

#include "common/http_get.h"

namespace vlc::loadtest {

const char* const kServerHistograms[6] = {
    "vlcache_queue_time_seconds",          "vlcache_media_prepare_seconds",
    "vlcache_prefill_seconds",             "vlcache_time_to_first_token_seconds",
    "vlcache_inter_token_latency_seconds", "vlcache_request_duration_seconds"};

HistogramTotals ParseHistograms(const std::string& metrics_text) {
  HistogramTotals t;
  for (const char* name : kServerHistograms) t.count_sum[name] = {0, 0};
  std::istringstream in(metrics_text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    for (const char* name : kServerHistograms) {
      const std::string n(name);
      if (line.compare(0, n.size(), n) != 0) continue;
      const std::string rest = line.substr(n.size());
      const bool count = rest.rfind("_count", 0) == 0, sum = rest.rfind("_sum", 0) == 0;
      if (!count && !sum) continue;
      const char next = rest[count ? 6 : 4];
      if (next != ' ' && next != '{') continue;
      const double v = std::strtod(line.c_str() + line.rfind(' ') + 1, nullptr);
      (count ? t.count_sum[n].first : t.count_sum[n].second) += v;
    }
  }
  return t;
}

absl::StatusOr<HistogramTotals> ScrapeHistograms(const std::string& host_port) {
  auto body = HttpGetBody(host_port, "/metrics");
  if (!body.ok()) return body.status();
  return ParseHistograms(*body);
}

nlohmann::json HistogramDelta(const HistogramTotals& before, const HistogramTotals& after) {
  nlohmann::json j = nlohmann::json::object();
  for (const char* name : kServerHistograms) {
    const auto b = before.count_sum.at(name), a = after.count_sum.at(name);
    const double count = a.first - b.first, sum = a.second - b.second;
    j[name] = {{"count", count}, {"sum_s", sum}, {"mean_ms", count > 0 ? sum / count * 1e3 : 0}};
  }
  return j;
}

}  // namespace vlc::loadtest
