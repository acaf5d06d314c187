// vlcache-loadtest against the real server process on loopback: its counts agree with the
// server's own metrics, its timings with the server's usage messages, a burst against a one-slot
// queue is counted by status code, and its JSON has the documented fields.
#include <stdio.h>
#include <sys/wait.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/server/server_fixture.h"

namespace vlc::server {
namespace {

using nlohmann::json;

class LoadtestTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { MakeSuiteModelDir("vlcache-loadtest-", &dir_); }
  static void TearDownTestSuite() { RemoveSuiteDir(&dir_); }

  // Runs the tool against the server with `args`; returns its summary JSON (empty on failure).
  json RunLoadtest(const std::string& args, std::vector<json>* records = nullptr) {
    const std::string out = *dir_ + "/summary.json", rec = *dir_ + "/records.jsonl";
    const std::string command = std::string(VLC_BIN_DIR) + "/vlcache-loadtest --target " +
                                server_.target() + " " + args + " --json " + out +
                                " --records " + rec + " > /dev/null 2>&1";
    const int status = std::system(command.c_str());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command;
    std::ifstream in(out);
    if (!in) return json();
    json summary = json::parse(in, nullptr, false);
    if (records) {
      std::ifstream lines(rec);
      std::string line;
      while (std::getline(lines, line)) records->push_back(json::parse(line));
    }
    return summary;
  }

  static std::string* dir_;
  ServerProcess server_;
};
std::string* LoadtestTest::dir_ = nullptr;

TEST_F(LoadtestTest, CountsAndTimingsAgreeWithTheServer) {
  ASSERT_TRUE(server_.Start(*dir_ + "/model"));
  std::vector<json> records;
  const json s = RunLoadtest(
      "--workload image --num-requests 10 --concurrency 3 --rate 50 --max-new-tokens 8",
      &records);
  ASSERT_TRUE(s.is_object());
  for (const char* key :
       {"duration", "completed", "failed", "request_throughput", "output_throughput",
        "total_input_tokens", "total_output_tokens", "mean_ttft_ms", "median_ttft_ms",
        "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "p99_itl_ms",
        "mean_e2el_ms", "p99_e2el_ms", "client_cpu_seconds_per_request"}) {
    EXPECT_TRUE(s.contains(key)) << key;
  }
  EXPECT_EQ(s["completed"], 10);
  EXPECT_EQ(s["failed"], 0);
  const std::string metrics = server_.Metrics();
  EXPECT_EQ(SumSamples(metrics, "vlcache_requests_total",
                       {"method=\"Generate\"", "code=\"OK\""}),
            10);
  EXPECT_EQ(SumSamples(metrics, "vlcache_generated_tokens_total"),
            s["total_output_tokens"].get<double>());
  ASSERT_EQ(records.size(), 10u);
  for (const auto& r : records) {
    ASSERT_EQ(r["code"], "OK") << r.dump();
    EXPECT_GE(r["output_tokens"].get<int>(), 1);
    EXPECT_LE(r["output_tokens"].get<int>(), 8);
    // The client's first token comes after the server's (it also waits for the network and for
    // the request's conversion), and within the request's own end-to-end time.
    const double client = r["ttft_s"], server = r["server_ttft_s"], e2e = r["e2e_s"];
    EXPECT_GE(client, 0.0);
    EXPECT_GE(client + 0.005, server) << r.dump();
    EXPECT_LE(client, e2e);
  }
}

TEST_F(LoadtestTest, ABurstAtAOneSlotQueueIsCountedByStatusCode) {
  ASSERT_TRUE(server_.Start(*dir_ + "/model", {"--max-queue", "1", "--max-running", "1"}));
  const json s = RunLoadtest(
      "--workload image --num-requests 24 --concurrency 12 --max-new-tokens 64");
  ASSERT_TRUE(s.is_object());
  const int completed = s["completed"], failed = s["failed"];
  EXPECT_EQ(completed + failed, 24);
  EXPECT_GT(completed, 0);
  ASSERT_GT(failed, 0) << "twelve at once against one queue slot: some are refused";
  EXPECT_EQ(s["failed_by_code"]["RESOURCE_EXHAUSTED"], failed) << s.dump();
  const std::string metrics = server_.Metrics();
  EXPECT_EQ(SumSamples(metrics, "vlcache_requests_total",
                       {"method=\"Generate\"", "code=\"RESOURCE_EXHAUSTED\""}),
            failed);
  EXPECT_EQ(SumSamples(metrics, "vlcache_requests_total", {"method=\"Generate\"", "code=\"OK\""}),
            completed);
}

TEST_F(LoadtestTest, AVideoMixRunsAndARunMustBeBounded) {
  ASSERT_TRUE(server_.Start(*dir_ + "/model"));
  const json s =
      RunLoadtest("--workload video --frames 4 --num-requests 3 --concurrency 2 --max-new-tokens 4");
  ASSERT_TRUE(s.is_object());
  EXPECT_EQ(s["completed"], 3);
  EXPECT_EQ(s["workload"], "video");
  EXPECT_EQ(s["total_input_tokens"].get<int>() % 3, 0) << "three equal prompts";
  const std::string unbounded = std::string(VLC_BIN_DIR) + "/vlcache-loadtest --target " +
                                server_.target() + " > /dev/null 2>&1";
  const int status = std::system(unbounded.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << "neither a count nor a duration";
}

}  // namespace
}  // namespace vlc::server
