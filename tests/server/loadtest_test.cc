// vlcache-loadtest against the real server process on loopback: its counts agree with the
// server's own metrics, its timings with the server's usage messages, a burst against a one-slot
// queue is counted by status code, and its JSON has the documented fields.
#include <stdio.h>
#include <sys/wait.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>

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
    std::remove(out.c_str());
    std::remove(rec.c_str());
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
    if (client < 0) {
      // The random model's greedy answer can be the end token alone (batch composition moves
      // its close logits): no text arrived, so there is no first token to time.
      EXPECT_EQ(r["output_tokens"], 1) << r.dump();
      EXPECT_EQ(r["text"], "") << r.dump();
      continue;
    }
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
  std::vector<json> records;
  const json s = RunLoadtest(
      "--workload video --frames 4 --num-requests 3 --concurrency 2 --max-new-tokens 4", &records);
  ASSERT_TRUE(s.is_object());
  EXPECT_EQ(s["completed"], 3);
  EXPECT_EQ(s["workload"], "video");
  EXPECT_EQ(s["answers_known"], 3) << "generated questions have known answers";
  ASSERT_EQ(records.size(), 3u);
  for (const auto& r : records) {
    EXPECT_EQ(r["scenario"], "video");
    EXPECT_FALSE(r["expected"].get<std::string>().empty());
    EXPECT_TRUE(r["correct"].is_boolean());
  }
  const std::string unbounded = std::string(VLC_BIN_DIR) + "/vlcache-loadtest --target " +
                                server_.target() + " > /dev/null 2>&1";
  const int status = std::system(unbounded.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << "neither a count nor a duration";
}

// Sessions are created with their media, asked every turn, and deleted: the calls agree with the
// server's own counts, no session is left, and every turn's answer is checked.
TEST_F(LoadtestTest, ASessionMixCreatesAsksAndDeletesSessions) {
  ASSERT_TRUE(server_.Start(*dir_ + "/model"));
  std::vector<json> records;
  const json s = RunLoadtest(
      "--workload session --turns 3 --think-time 0.01 --num-requests 4 --concurrency 2 "
      "--max-new-tokens 6",
      &records);
  ASSERT_TRUE(s.is_object());
  const json& calls = s["calls_by_method"];
  EXPECT_EQ(calls["CreateSession"]["OK"], 4) << calls.dump();
  EXPECT_EQ(calls["SessionGenerate"]["OK"], 12) << calls.dump();
  EXPECT_EQ(calls["DeleteSession"]["OK"], 4) << calls.dump();
  EXPECT_EQ(s["completed"], 12) << "the summary's requests are the turns";
  const std::string metrics = server_.Metrics();
  for (const char* method : {"CreateSession", "SessionGenerate", "DeleteSession"}) {
    EXPECT_EQ(SumSamples(metrics, "vlcache_requests_total",
                         {"method=\"" + std::string(method) + "\"", "code=\"OK\""}),
              calls[method]["OK"].get<double>())
        << method;
  }
  EXPECT_EQ(SumSamples(metrics, "vlcache_sessions_active"), 0) << "every session was deleted";
  // Each session's turns in order, after its creation and before its deletion, each with a
  // known answer that was checked.
  std::map<int, std::vector<json>> by_unit;
  for (const auto& r : records) by_unit[r["unit"].get<int>()].push_back(r);
  ASSERT_EQ(by_unit.size(), 4u);
  int checked = 0;
  for (const auto& [unit, calls_of_unit] : by_unit) {
    ASSERT_EQ(calls_of_unit.size(), 5u) << unit;
    EXPECT_EQ(calls_of_unit.front()["method"], "CreateSession");
    EXPECT_EQ(calls_of_unit.back()["method"], "DeleteSession");
    for (int turn = 0; turn < 3; ++turn) {
      const json& r = calls_of_unit[1 + turn];
      EXPECT_EQ(r["method"], "SessionGenerate");
      EXPECT_EQ(r["turn"], turn);
      EXPECT_GE(r["start_s"].get<double>(), calls_of_unit[turn]["start_s"].get<double>());
      ASSERT_TRUE(r.contains("expected")) << r.dump();
      EXPECT_FALSE(r["expected"].get<std::string>().empty());
      EXPECT_EQ(r["correct"].get<bool>(), r["text"].get<std::string>() == r["expected"]);
      ++checked;
    }
  }
  EXPECT_EQ(s["answers_known"], checked);
}

// The answers of a run alone (one request at a time) and of the same requests batched eight at
// a time are the same: batching changes when a request runs, not what it answers.
TEST_F(LoadtestTest, AnswersDoNotChangeUnderLoad) {
  ASSERT_TRUE(server_.Start(*dir_ + "/model"));
  std::vector<json> alone, loaded;
  const std::string common = "--workload image:2,video:1 --frames 3 --num-requests 16 "
                             "--max-new-tokens 8 --seed 7 --rate 0 ";
  RunLoadtest(common + "--concurrency 1", &alone);
  RunLoadtest(common + "--concurrency 8", &loaded);
  ASSERT_EQ(alone.size(), 16u);
  ASSERT_EQ(loaded.size(), 16u);
  std::map<int, std::string> first;
  for (const auto& r : alone) first[r["unit"].get<int>()] = r["text"];
  for (const auto& r : loaded) {
    ASSERT_EQ(r["code"], "OK") << r.dump();
    EXPECT_EQ(r["text"], first[r["unit"].get<int>()]) << "unit " << r["unit"];
  }
}

// A sweep runs once per rate, writes every run in the JSON and draws the PNG; the goodput counts
// the requests within the SLO; --metrics reports the server's own histograms over the run.
TEST_F(LoadtestTest, ASweepWritesItsRunsAndThePlot) {
  ASSERT_TRUE(server_.Start(*dir_ + "/model"));
  const std::string png = *dir_ + "/sweep.png";
  const json s = RunLoadtest("--workload image --rates 20,40 --num-requests 6 --concurrency 4 "
                             "--max-new-tokens 6 --slo ttft=60000,e2el=60000 --plot " + png +
                             " --metrics " + server_.metrics_target());
  ASSERT_TRUE(s.contains("runs")) << s.dump();
  ASSERT_EQ(s["runs"].size(), 2u);
  double generated = 0;
  for (int i = 0; i < 2; ++i) {
    const json& run = s["runs"][i];
    EXPECT_EQ(run["request_rate"], i == 0 ? 20.0 : 40.0);
    EXPECT_EQ(run["completed"], 6);
    // Generous objectives: every request meets them.
    EXPECT_EQ(run["slo_attainment"], 1.0);
    EXPECT_DOUBLE_EQ(run["request_goodput"].get<double>(), run["request_throughput"].get<double>());
    const json& h = run["server_histograms"];
    EXPECT_EQ(h["vlcache_request_duration_seconds"]["count"], 6) << h.dump();
    EXPECT_EQ(h["vlcache_time_to_first_token_seconds"]["count"], 6) << h.dump();
    EXPECT_GT(h["vlcache_prefill_seconds"]["sum_s"].get<double>(), 0);
    generated += run["total_output_tokens"].get<double>();
  }
  EXPECT_EQ(SumSamples(server_.Metrics(), "vlcache_generated_tokens_total"), generated);
  const cv::Mat img = cv::imread(png);
  ASSERT_FALSE(img.empty()) << "no PNG at " << png;
  EXPECT_GT(img.cols, 600);
  // Impossible objectives: no request meets them, and the goodput is zero.
  const json strict = RunLoadtest("--workload image --num-requests 3 --max-new-tokens 6 "
                                  "--slo ttft=0.001");
  EXPECT_EQ(strict["request_goodput"], 0.0);
  EXPECT_EQ(strict["slo_attainment"], 0.0);
}

// The items.jsonl that vlcache-vqa writes is a workload file as it stands; a hand-written one
// mixes cache policies per request; a bad one is refused with its line named.
TEST_F(LoadtestTest, WorkloadFilesFromVlcacheVqaAndByHand) {
  // The items' prompts (~31 tokens) are compressed only without the size rule.
  ASSERT_TRUE(server_.Start(*dir_ + "/model", {"--kv-compress-min-tokens", "0"}));
  const std::string vqa = *dir_ + "/vqa";
  ASSERT_EQ(std::system((std::string(VLC_BIN_DIR) + "/vlcache-vqa --split test --n 3 --out " +
                         vqa + " > /dev/null").c_str()),
            0);
  std::vector<json> records;
  const json s = RunLoadtest("--workload-file " + vqa + "/items.jsonl --num-requests 9 "
                             "--max-new-tokens 6", &records);
  EXPECT_EQ(s["completed"], 9);
  EXPECT_EQ(s["answers_known"], 9);
  std::set<std::string> expected;
  for (const auto& r : records) expected.insert(r["expected"].get<std::string>());
  std::ifstream items(vqa + "/items.jsonl");
  std::set<std::string> answers;
  for (std::string line; std::getline(items, line);) answers.insert(json::parse(line)["answer"]);
  EXPECT_EQ(expected, answers) << "the three items' answers, and no other";

  const std::string mix = *dir_ + "/mix.jsonl";
  WriteFile(mix,
            "{\"type\": \"image\", \"name\": \"full\", \"kv_policy\": \"full\"}\n"
            "{\"type\": \"image\", \"name\": \"compressed\", \"kv_policy\": \"vlcache\", "
            "\"kv_budget\": 0.1}\n");
  records.clear();
  const json m = RunLoadtest("--workload-file " + mix + " --num-requests 12 --max-new-tokens 4",
                             &records);
  ASSERT_EQ(m["completed"], 12);
  ASSERT_TRUE(m["by_scenario"].contains("full") && m["by_scenario"].contains("compressed"));
  for (const auto& r : records) {
    const double kept = r["kv_bytes_kept"], full = r["kv_bytes_full"];
    if (r["scenario"] == "compressed") {
      EXPECT_LT(kept, 0.6 * full) << r.dump();
    } else {
      EXPECT_GE(kept, full) << r.dump();
    }
  }

  WriteFile(mix, "{\"type\": \"image\"}\n{\"type\": \"picture\"}\n");
  const std::string bad = std::string(VLC_BIN_DIR) + "/vlcache-loadtest --target " +
                          server_.target() + " --num-requests 1 --workload-file " + mix + " 2>&1";
  FILE* p = ::popen(bad.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[256];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2);
  EXPECT_NE(out.find("mix.jsonl:2"), std::string::npos) << out;
  EXPECT_NE(out.find("picture"), std::string::npos) << out;
}

}  // namespace
}  // namespace vlc::server
