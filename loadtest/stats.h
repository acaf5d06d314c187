// What vlcache-loadtest measures per request, and the summary over a run, with the key names of
// the common LLM serving benchmark's result files (request_throughput, mean_ttft_ms, p99_itl_ms,
// ...) so that its plots and comparisons read ours.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlc::loadtest {

struct RequestRecord {
  std::string workload;     // "image", "video", ...
  std::string code = "OK";  // the gRPC status code's name
  std::string error;        // its message when not OK
  double start_s = 0;       // since the run began
  double ttft_s = -1;       // to the first message carrying text or tokens; < 0: none came
  double e2e_s = 0;
  std::vector<double> itl_s;  // gaps between consecutive token-carrying messages, per token
  int prompt_tokens = 0;
  int output_tokens = 0;
  int64_t kv_bytes_kept = 0;
  int64_t kv_bytes_full = 0;
  double server_ttft_s = 0;  // the server's own figure from the final usage
  nlohmann::json ToJson() const;
};

// Percentile q in [0, 100] by linear interpolation between closest ranks (numpy's default).
double Percentile(std::vector<double> v, double q);

// The run's summary: counts, rates and mean / median / p90 / p99 of TTFT, TPOT, ITL and
// end-to-end latency in milliseconds over the completed requests.
nlohmann::json Summarize(const std::vector<RequestRecord>& records, double duration_s);

}  // namespace vlc::loadtest
