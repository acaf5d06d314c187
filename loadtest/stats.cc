#include "loadtest/stats.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "loadtest/workload.h"

namespace vlc::loadtest {

namespace {

// Time per output token after the first (the benchmark's TPOT); 0 for one token or none.
double Tpot(const RequestRecord& r) {
  if (r.output_tokens <= 1 || r.ttft_s < 0) return 0;
  return (r.e2e_s - r.ttft_s) / (r.output_tokens - 1);
}

}  // namespace

bool RequestRecord::correct() const {
  return !expected.empty() && code == "OK" && AnswerMatches(text, expected);
}

nlohmann::json RequestRecord::ToJson() const {
  nlohmann::json j = {{"method", method},
                      {"scenario", scenario},
                      {"unit", unit},
                      {"turn", turn},
                      {"code", code},
                      {"error", error},
                      {"start_s", start_s},
                      {"e2e_s", e2e_s},
                      {"retries", retries}};
  if (!churn.empty()) j["churn"] = churn;
  if (streamed()) {
    j.update({{"ttft_s", ttft_s},
              {"tpot_s", Tpot(*this)},
              {"itl_s", itl_s},
              {"prompt_tokens", prompt_tokens},
              {"output_tokens", output_tokens},
              {"kv_bytes_kept", kv_bytes_kept},
              {"kv_bytes_full", kv_bytes_full},
              {"server_ttft_s", server_ttft_s},
              {"server_queue_s", server_queue_s},
              {"text", text}});
    if (!expected.empty()) j.update({{"expected", expected}, {"correct", correct()}});
  }
  return j;
}

bool Slo::Met(const RequestRecord& r) const {
  if (r.code != "OK") return false;
  if (ttft_ms > 0 && (r.ttft_s < 0 || r.ttft_s * 1e3 > ttft_ms)) return false;
  if (tpot_ms > 0 && Tpot(r) * 1e3 > tpot_ms) return false;
  if (e2el_ms > 0 && r.e2e_s * 1e3 > e2el_ms) return false;
  return true;
}

absl::StatusOr<Slo> ParseSlo(const std::string& spec) {
  Slo slo;
  for (absl::string_view part : absl::StrSplit(spec, ',', absl::SkipWhitespace())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(part, absl::MaxSplits('=', 1));
    kv.first = std::string(absl::StripAsciiWhitespace(kv.first));
    double ms = 0;
    if (!absl::SimpleAtod(kv.second, &ms) || !(ms > 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--slo \"", part, "\": write NAME=MILLISECONDS with a positive number"));
    }
    if (kv.first == "ttft") {
      slo.ttft_ms = ms;
    } else if (kv.first == "tpot") {
      slo.tpot_ms = ms;
    } else if (kv.first == "e2el") {
      slo.e2el_ms = ms;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("--slo: unknown objective \"", kv.first, "\": use ttft, tpot or e2el"));
    }
  }
  if (!slo.any()) return absl::InvalidArgumentError("--slo names no objective");
  return slo;
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

nlohmann::json Summarize(const std::vector<RequestRecord>& records, double duration_s,
                         const Slo& slo) {
  std::vector<double> ttft, tpot, itl, e2el, queue;
  std::map<std::string, int> failed;
  std::map<std::string, std::map<std::string, int>> calls;  // method -> code -> count
  std::map<std::string, std::map<std::string, int>> churned;  // churn kind -> code -> count
  struct PerScenario {
    int completed = 0, failed = 0, known = 0, correct = 0;
    std::vector<double> ttft, tpot;
  };
  std::map<std::string, PerScenario> scenarios;
  int completed = 0, streamed = 0, good = 0, known = 0, correct = 0, retries = 0, retried = 0;
  int64_t input_tokens = 0, output_tokens = 0, kv_kept = 0, kv_full = 0;
  for (const auto& r : records) {
    ++calls[r.method][r.code];
    if (!r.churn.empty()) ++churned[r.churn][r.code];
    retries += r.retries;
    retried += r.retries > 0;
    if (!r.streamed()) continue;
    ++streamed;
    PerScenario& ps = scenarios[r.scenario];
    if (r.code != "OK") {
      ++failed[r.code];
      ++ps.failed;
      continue;
    }
    ++completed;
    ++ps.completed;
    input_tokens += r.prompt_tokens;
    output_tokens += r.output_tokens;
    kv_kept += r.kv_bytes_kept;
    kv_full += r.kv_bytes_full;
    if (r.ttft_s >= 0) {
      ttft.push_back(r.ttft_s);
      ps.ttft.push_back(r.ttft_s);
    }
    if (r.output_tokens > 1 && r.ttft_s >= 0) {
      tpot.push_back(Tpot(r));
      ps.tpot.push_back(Tpot(r));
    }
    itl.insert(itl.end(), r.itl_s.begin(), r.itl_s.end());
    e2el.push_back(r.e2e_s);
    queue.push_back(r.server_queue_s);
    good += slo.any() && slo.Met(r);
    if (!r.expected.empty()) {
      ++known;
      ++ps.known;
      correct += r.correct();
      ps.correct += r.correct();
    }
  }
  const double d = std::max(duration_s, 1e-9);
  nlohmann::json j = {{"duration", duration_s},
                      {"completed", completed},
                      {"failed", streamed - completed},
                      {"failed_by_code", failed},
                      {"calls_by_method", calls},
                      {"retries", retries},
                      {"calls_retried", retried},
                      {"churn_by_code", churned},
                      {"total_input_tokens", input_tokens},
                      {"total_output_tokens", output_tokens},
                      {"request_throughput", completed / d},
                      {"output_throughput", output_tokens / d},
                      {"total_token_throughput", (input_tokens + output_tokens) / d},
                      {"kv_kept_fraction", kv_full > 0 ? static_cast<double>(kv_kept) / kv_full : 0}};
  AddStats(j, "ttft", ttft);
  AddStats(j, "tpot", tpot);
  AddStats(j, "itl", itl);
  AddStats(j, "e2el", e2el);
  AddStats(j, "server_queue", queue);
  if (slo.any()) {
    j["request_goodput"] = good / d;
    j["slo_attainment"] = streamed > 0 ? static_cast<double>(good) / streamed : 0;
    j["slo"] = {{"ttft_ms", slo.ttft_ms}, {"tpot_ms", slo.tpot_ms}, {"e2el_ms", slo.e2el_ms}};
  }
  j["answers_known"] = known;
  j["answers_correct"] = correct;
  j["accuracy"] = known > 0 ? nlohmann::json(static_cast<double>(correct) / known) : nlohmann::json();
  nlohmann::json by = nlohmann::json::object();
  for (const auto& [name, ps] : scenarios) {
    by[name] = {{"completed", ps.completed},
                {"failed", ps.failed},
                {"median_ttft_ms", Percentile(ps.ttft, 50) * 1e3},
                {"p99_ttft_ms", Percentile(ps.ttft, 99) * 1e3},
                {"median_tpot_ms", Percentile(ps.tpot, 50) * 1e3},
                {"p99_tpot_ms", Percentile(ps.tpot, 99) * 1e3},
                {"accuracy", ps.known > 0 ? nlohmann::json(static_cast<double>(ps.correct) / ps.known)
                                          : nlohmann::json()}};
  }
  j["by_scenario"] = by;
  return j;
}

}  // namespace vlc::loadtest
