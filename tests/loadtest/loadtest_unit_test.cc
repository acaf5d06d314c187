// The load generator's parts that need no server: mixes, workload files, objectives, the
// summary's arithmetic, the server's histograms read from a /metrics page, the sweep's picture.
#include <fstream>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <opencv2/imgcodecs.hpp>

#include "common/fs.h"
#include "loadtest/plot.h"
#include "loadtest/server_histograms.h"
#include "loadtest/stats.h"
#include "loadtest/workload.h"

namespace vlc::loadtest {
namespace {

TEST(LoadtestMix, KindsWeightsAndErrors) {
  Scenario base;
  base.kv_policy = "vlcache";
  auto mix = ParseMix("image:3, video:1,session", base, 8, 2);
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_EQ(mix->size(), 3u);
  EXPECT_EQ((*mix)[0].kind, Kind::kImage);
  EXPECT_EQ((*mix)[0].weight, 3);
  EXPECT_EQ((*mix)[0].frames, 1);
  EXPECT_EQ((*mix)[1].frames, 8);
  EXPECT_EQ((*mix)[2].frames, 2);
  EXPECT_EQ((*mix)[2].weight, 1);
  EXPECT_EQ((*mix)[2].kv_policy, "vlcache") << "entries copy the base";
  for (const char* bad : {"", "picture", "image:x", "image:0", "image:1:2", "video:-1"}) {
    EXPECT_EQ(ParseMix(bad, base, 8, 1).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
  // The sampler follows the weights: 3 to 1 to 0.
  auto two = ParseMix("image:3,video:1", base, 8, 1);
  MixSampler sampler(*two);
  std::mt19937_64 rng(1);
  int images = 0;
  for (int i = 0; i < 4000; ++i) images += sampler.Next(rng) == 0;
  EXPECT_NEAR(images / 4000.0, 0.75, 0.03);
}

class WorkloadFileTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = MakeTempDir("vlcache-workload-"); }
  void TearDown() override { RemoveTree(dir_); }
  std::string Write(const std::string& text) {
    const std::string path = dir_ + "/w.jsonl";
    std::ofstream(path) << text;
    return path;
  }
  std::string dir_;
};

TEST_F(WorkloadFileTest, FieldsDefaultsAndFixedMedia) {
  std::ofstream(dir_ + "/a.png") << "not really a png";
  Scenario base;
  base.max_new_tokens = 9;
  base.frames = 6;
  auto mix = ReadWorkloadFile(
      Write("{\"type\": \"video\", \"weight\": 2, \"kv_policy\": \"snapkv\", \"kv_budget\": 0.2}\n"
            "\n"
            "{\"images\": [\"a.png\"], \"prompt\": \"what?\", \"answer\": \"red\"}\n"
            "{\"type\": \"session\", \"images\": [\"a.png\"], \"prompts\": [\"a\", \"b\"],"
            " \"think_time_s\": 0.5, \"max_new_tokens\": 3}\n"),
      base);
  ASSERT_TRUE(mix.ok()) << mix.status();
  ASSERT_EQ(mix->size(), 3u);
  const Scenario& v = (*mix)[0];
  EXPECT_EQ(v.kind, Kind::kVideo);
  EXPECT_EQ(v.name, "video");
  EXPECT_EQ(v.weight, 2);
  EXPECT_EQ(v.frames, 6);
  EXPECT_EQ(v.kv_policy, "snapkv");
  EXPECT_DOUBLE_EQ(v.kv_budget, 0.2);
  EXPECT_EQ(v.max_new_tokens, 9);
  const Scenario& img = (*mix)[1];
  EXPECT_EQ(img.kind, Kind::kImage);
  ASSERT_EQ(img.image_paths.size(), 1u);
  EXPECT_EQ(img.image_paths[0], dir_ + "/a.png") << "relative to the file's folder";
  EXPECT_EQ(img.answers, std::vector<std::string>{"red"});
  const Scenario& ses = (*mix)[2];
  EXPECT_EQ(ses.turns, 2) << "one turn per prompt";
  EXPECT_DOUBLE_EQ(ses.think_s, 0.5);
  EXPECT_EQ(ses.max_new_tokens, 3);

  // The fixed media is read as it is; the prompts and answers go with it.
  MediaOptions mo;
  auto tasks = MakeTasks(*mix, mo);
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  EXPECT_EQ((*tasks)[0].size(), static_cast<size_t>(mo.distinct));
  ASSERT_EQ((*tasks)[1].size(), 1u);
  EXPECT_EQ((*tasks)[1][0].request.media().images(0), "not really a png");
  EXPECT_EQ((*tasks)[1][0].request.prompt(), "what?");
  EXPECT_EQ((*tasks)[1][0].turns[0].answer, "red");
  EXPECT_EQ((*tasks)[2][0].create.media().images_size(), 1);
  EXPECT_EQ((*tasks)[2][0].turns.size(), 2u);
  EXPECT_EQ((*tasks)[2][0].sampling.max_new_tokens(), 3);
  // A generated video has its frames and a question with a known answer; its policy goes along.
  const Task& vt = (*tasks)[0][0];
  EXPECT_FALSE(vt.request.media().video().empty());
  EXPECT_EQ(vt.request.media().video_frames(), 6);
  EXPECT_EQ(vt.request.cache().policy(), "snapkv");
  EXPECT_FALSE(vt.turns[0].answer.empty());
  EXPECT_EQ(vt.request.prompt().rfind("in frame ", 0), 0u) << vt.request.prompt();
}

TEST_F(WorkloadFileTest, BadLinesAreNamed) {
  Scenario base;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"type\": \"image\"}\nnot json\n", ":2: not a JSON object"},
      {"{\"type\": \"movie\"}\n", "unknown workload kind \"movie\""},
      {"{\"weight\": \"heavy\"}\n", ":1: a field has the wrong type"},
      {"{\"images\": [\"a.png\"]}\n", "give media and prompts together"},
      {"{\"prompt\": \"p\", \"images\": [\"a.png\"], \"answers\": [\"x\", \"y\"]}\n",
       "one answer per prompt"},
      {"{\"type\": \"image\", \"video\": \"v.mp4\", \"prompt\": \"p\"}\n", "not \"video\""},
      {"{\"weight\": 0}\n", "the weight must be positive"},
      {"\n\n", "holds no scenario"},
  };
  for (const auto& [text, want] : cases) {
    auto mix = ReadWorkloadFile(Write(text), base);
    ASSERT_FALSE(mix.ok()) << text;
    EXPECT_EQ(mix.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_NE(std::string(mix.status().message()).find(want), std::string::npos)
        << mix.status() << " for " << text;
  }
  EXPECT_EQ(ReadWorkloadFile(dir_ + "/none.jsonl", base).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(LoadtestSessions, GeneratedTurnsAskDifferentQuestionsWithKnownAnswers) {
  Scenario s;
  s.kind = Kind::kSession;
  s.name = "session";
  s.turns = 4;
  s.frames = 3;
  MediaOptions mo;
  mo.distinct = 5;
  auto tasks = MakeTasks({s}, mo);
  ASSERT_TRUE(tasks.ok()) << tasks.status();
  ASSERT_EQ((*tasks)[0].size(), 5u);
  for (const Task& t : (*tasks)[0]) {
    EXPECT_EQ(t.create.media().images_size(), 3);
    ASSERT_GE(t.turns.size(), 2u);
    std::set<std::string> prompts;
    for (const Turn& turn : t.turns) {
      EXPECT_FALSE(turn.answer.empty()) << turn.prompt;
      EXPECT_EQ(turn.prompt.rfind("in frame ", 0), 0u) << turn.prompt;
      prompts.insert(turn.prompt);
    }
    EXPECT_EQ(prompts.size(), t.turns.size()) << "no question asked twice";
  }
}

TEST(LoadtestSlo, ParseAndMeet) {
  auto slo = ParseSlo("ttft=500, tpot=50");
  ASSERT_TRUE(slo.ok()) << slo.status();
  EXPECT_EQ(slo->ttft_ms, 500);
  EXPECT_EQ(slo->tpot_ms, 50);
  EXPECT_EQ(slo->e2el_ms, 0);
  for (const char* bad : {"", "ttft", "ttft=-1", "ttft=abc", "latency=3"}) {
    EXPECT_FALSE(ParseSlo(bad).ok()) << bad;
  }
  RequestRecord r;
  r.ttft_s = 0.4;
  r.e2e_s = 0.4 + 10 * 0.045;
  r.output_tokens = 11;  // TPOT 45 ms
  EXPECT_TRUE(slo->Met(r));
  r.e2e_s = 0.4 + 10 * 0.055;
  EXPECT_FALSE(slo->Met(r));
  r.e2e_s = 0.5;
  r.ttft_s = 0.6;
  EXPECT_FALSE(slo->Met(r));
  r.ttft_s = 0.1;
  r.code = "DEADLINE_EXCEEDED";
  EXPECT_FALSE(slo->Met(r));
}

TEST(LoadtestSummary, RatesPercentilesGoodputAccuracyAndCalls) {
  EXPECT_DOUBLE_EQ(Percentile({4, 1, 3, 2}, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile({1, 2, 3, 4, 5}, 90), 4.6);
  EXPECT_DOUBLE_EQ(Percentile({}, 99), 0);
  std::vector<RequestRecord> rs;
  for (int i = 0; i < 4; ++i) {
    RequestRecord r;
    r.scenario = i < 2 ? "a" : "b";
    r.ttft_s = 0.1 * (i + 1);
    r.e2e_s = r.ttft_s + 0.2;
    r.output_tokens = 3;
    r.prompt_tokens = 10;
    r.text = i == 3 ? " blue " : "red";
    r.expected = i == 0 ? "" : i == 3 ? "blue" : "green";
    rs.push_back(r);
  }
  RequestRecord failed;
  failed.code = "RESOURCE_EXHAUSTED";
  rs.push_back(failed);
  RequestRecord create;
  create.method = "CreateSession";
  rs.push_back(create);
  Slo slo;
  slo.ttft_ms = 250;
  const nlohmann::json s = Summarize(rs, 2.0, slo);
  EXPECT_EQ(s["completed"], 4);
  EXPECT_EQ(s["failed"], 1);
  EXPECT_EQ(s["failed_by_code"]["RESOURCE_EXHAUSTED"], 1);
  EXPECT_EQ(s["calls_by_method"]["Generate"]["OK"], 4);
  EXPECT_EQ(s["calls_by_method"]["CreateSession"]["OK"], 1);
  EXPECT_DOUBLE_EQ(s["request_throughput"].get<double>(), 2.0);
  EXPECT_DOUBLE_EQ(s["output_throughput"].get<double>(), 6.0);
  EXPECT_DOUBLE_EQ(s["median_ttft_ms"].get<double>(), 250);
  EXPECT_DOUBLE_EQ(s["mean_tpot_ms"].get<double>(), 100);
  EXPECT_DOUBLE_EQ(s["request_goodput"].get<double>(), 1.0) << "two of four within 250 ms";
  EXPECT_DOUBLE_EQ(s["slo_attainment"].get<double>(), 0.4) << "of five calls";
  EXPECT_EQ(s["answers_known"], 3);
  EXPECT_EQ(s["answers_correct"], 1) << "spaces around an answer do not count";
  EXPECT_EQ(s["by_scenario"]["a"]["completed"], 2);
  EXPECT_EQ(s["by_scenario"]["b"]["accuracy"], 0.5);
}

TEST(LoadtestServerHistograms, CountsAndSumsAcrossLabelsAndTheirDifference) {
  const std::string before =
      "# TYPE vlcache_prefill_seconds histogram\n"
      "vlcache_prefill_seconds_bucket{le=\"0.1\"} 2\n"
      "vlcache_prefill_seconds_sum 0.5\n"
      "vlcache_prefill_seconds_count 2\n"
      "vlcache_queue_time_seconds_sum{model=\"m\"} 1\n"
      "vlcache_queue_time_seconds_count{model=\"m\"} 4\n"
      "vlcache_queue_time_seconds_countless 99\n";
  const std::string after =
      "vlcache_prefill_seconds_sum 2.5\n"
      "vlcache_prefill_seconds_count 6\n"
      "vlcache_queue_time_seconds_sum{model=\"m\"} 1.5\n"
      "vlcache_queue_time_seconds_count{model=\"m\"} 5\n"
      "vlcache_queue_time_seconds_sum{model=\"n\"} 0.5\n"
      "vlcache_queue_time_seconds_count{model=\"n\"} 1\n";
  const nlohmann::json d = HistogramDelta(ParseHistograms(before), ParseHistograms(after));
  EXPECT_EQ(d["vlcache_prefill_seconds"]["count"], 4);
  EXPECT_DOUBLE_EQ(d["vlcache_prefill_seconds"]["mean_ms"].get<double>(), 500);
  EXPECT_EQ(d["vlcache_queue_time_seconds"]["count"], 2);
  EXPECT_DOUBLE_EQ(d["vlcache_queue_time_seconds"]["sum_s"].get<double>(), 1.0);
  EXPECT_EQ(d["vlcache_request_duration_seconds"]["count"], 0);
  EXPECT_EQ(ScrapeHistograms("not-an-address").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LoadtestPlot, ASweepBecomesAPicture) {
  const std::string dir = MakeTempDir("vlcache-plot-");
  std::vector<nlohmann::json> runs;
  for (double rate : {0.5, 1.0, 2.0, 4.0}) {
    runs.push_back({{"request_rate", rate},
                    {"request_throughput", std::min(rate, 2.2)},
                    {"median_ttft_ms", 100 * rate},
                    {"p99_ttft_ms", 300 * rate * rate},
                    {"median_tpot_ms", 20.0},
                    {"p99_tpot_ms", 40 * rate}});
  }
  ASSERT_TRUE(PlotSweep(runs, "test", dir + "/p.png").ok());
  const cv::Mat img = cv::imread(dir + "/p.png");
  ASSERT_FALSE(img.empty());
  EXPECT_EQ(img.cols, 1240);
  EXPECT_EQ(img.rows, 560);
  // Something besides white and grid was drawn.
  int coloured = 0;
  for (int y = 0; y < img.rows; ++y) {
    for (int x = 0; x < img.cols; ++x) {
      const cv::Vec3b p = img.at<cv::Vec3b>(y, x);
      coloured += p[0] != p[1] || p[1] != p[2];
    }
  }
  EXPECT_GT(coloured, 2000);
  runs[1]["request_rate"] = "inf";
  EXPECT_FALSE(PlotSweep(runs, "test", dir + "/q.png").ok()) << "a closed loop has no rate";
  RemoveTree(dir);
}

}  // namespace
}  // namespace vlc::loadtest
