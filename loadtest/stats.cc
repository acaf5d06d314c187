#include "loadtest/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace vlc::loadtest {

nlohmann::json RequestRecord::ToJson() const {
  return {{"workload", workload},       {"code", code},
          {"error", error},             {"start_s", start_s},
          {"ttft_s", ttft_s},           {"e2e_s", e2e_s},
          {"itl_s", itl_s},             {"prompt_tokens", prompt_tokens},
          {"output_tokens", output_tokens}, {"kv_bytes_kept", kv_bytes_kept},
          {"kv_bytes_full", kv_bytes_full}, {"server_ttft_s", server_ttft_s}};
}

double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double pos = q / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

namespace {

void AddStats(nlohmann::json& j, const std::string& name, const std::vector<double>& seconds) {
  std::vector<double> ms(seconds.size());
  std::transform(seconds.begin(), seconds.end(), ms.begin(), [](double s) { return s * 1e3; });
  const double mean = ms.empty() ? 0 : std::accumulate(ms.begin(), ms.end(), 0.0) / ms.size();
  j["mean_" + name + "_ms"] = mean;
  j["median_" + name + "_ms"] = Percentile(ms, 50);
  j["p90_" + name + "_ms"] = Percentile(ms, 90);
  j["p99_" + name + "_ms"] = Percentile(ms, 99);
}

}  // namespace

nlohmann::json Summarize(const std::vector<RequestRecord>& records, double duration_s) {
  std::vector<double> ttft, tpot, itl, e2el;
  std::map<std::string, int> failed;
  int completed = 0;
  int64_t input_tokens = 0, output_tokens = 0;
  for (const auto& r : records) {
    if (r.code != "OK") {
      ++failed[r.code];
      continue;
    }
    ++completed;
    input_tokens += r.prompt_tokens;
    output_tokens += r.output_tokens;
    if (r.ttft_s >= 0) ttft.push_back(r.ttft_s);
    // Time per output token after the first (the benchmark's TPOT).
    if (r.output_tokens > 1 && r.ttft_s >= 0) {
      tpot.push_back((r.e2e_s - r.ttft_s) / (r.output_tokens - 1));
    }
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    e2el.push_back(r.e2e_s);
  }
  const double d = std::max(duration_s, 1e-9);
  nlohmann::json j = {{"duration", duration_s},
                      {"completed", completed},
                      {"failed", static_cast<int>(records.size()) - completed},
                      {"failed_by_code", failed},
                      {"total_input_tokens", input_tokens},
                      {"total_output_tokens", output_tokens},
                      {"request_throughput", completed / d},
                      {"output_throughput", output_tokens / d},
                      {"total_token_throughput", (input_tokens + output_tokens) / d}};
  AddStats(j, "ttft", ttft);
  AddStats(j, "tpot", tpot);
  AddStats(j, "itl", itl);
  AddStats(j, "e2el", e2el);
  return j;
}

}  // namespace vlc::loadtest
