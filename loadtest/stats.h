// What vlcache-loadtest measures per call, and the summary over a run, with the key names of the
// common LLM serving benchmark's result files (request_throughput, mean_ttft_ms, p99_itl_ms,
// request_goodput, ...) so that its plots and comparisons read ours.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"

namespace vlc::loadtest {

// One call. Generate and SessionGenerate stream tokens and carry the latency figures;
// CreateSession and DeleteSession are counted by status code and timed end to end.
struct RequestRecord {
  std::string method = "Generate";  // the RPC: Generate, SessionGenerate, CreateSession, ...
  std::string scenario;     // the workload scenario's name: "image", "video", "session", ...
  int unit = 0;             // the arrival it belongs to (a session's calls share one)
  int turn = 0;             // a session's turn, from 0
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
  double server_ttft_s = 0;   // the server's own figures from the final usage
  double server_queue_s = 0;
  std::string text;           // the answer
  std::string expected;       // the known answer; "": unknown
  int retries = 0;            // earlier attempts that ended UNAVAILABLE (--retries)
  std::string churn;          // "cancel", "deadline", "bad" (--cancel-fraction, ...); "": none
  bool streamed() const { return method == "Generate" || method == "SessionGenerate"; }
  bool correct() const;       // the answer is known and matches
  nlohmann::json ToJson() const;
};

// Service-level objectives a request must meet to count in the goodput; 0: no limit.
struct Slo {
  double ttft_ms = 0, tpot_ms = 0, e2el_ms = 0;
  bool any() const { return ttft_ms > 0 || tpot_ms > 0 || e2el_ms > 0; }
  bool Met(const RequestRecord& r) const;
};
// "ttft=MS,tpot=MS,e2el=MS", any subset.
absl::StatusOr<Slo> ParseSlo(const std::string& spec);

// Percentile q in [0, 100] by linear interpolation between closest ranks (numpy's default).
double Percentile(std::vector<double> v, double q);

// The run's summary over its streamed calls: counts, rates, mean / median / p90 / p99 of TTFT,
// TPOT, ITL and end-to-end latency in milliseconds over the completed ones, goodput under `slo`,
// accuracy where answers are known, and every call counted by method and status code.
nlohmann::json Summarize(const std::vector<RequestRecord>& records, double duration_s,
                         const Slo& slo = {});

}  // namespace vlc::loadtest
