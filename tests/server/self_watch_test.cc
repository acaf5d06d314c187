// The server watching its own traffic (server/telemetry_watch.h) on the real process: with
// --dq-db and a one-second --dq-watch-window, requests unlike the seeded history of
// "vlcache.requests" are caught (counted in /metrics) and the window is appended to that history;
// without --dq-db nothing is watched and serving is unchanged; at shutdown the open window is
// dropped and the server still stops at once. Each case starts its own server.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <thread>

#include "common/fs.h"
#include "dq/store.h"
#include "server/telemetry_watch.h"
#include "tests/server/server_fixture.h"
#include "vlcache/v1/data_quality.grpc.pb.h"

namespace vlc::server {
namespace {

constexpr int kSeededRuns = 10;  // more than dq::AvhOptions::min_history_runs (8)

// One seeded window of ordinary traffic, as CSV with the watch's columns: 30 requests with
// prompts of about 2000 tokens (a video workload). Fixed seeds, so every run of the test sees the
// same history.
std::string SeededWindowCsv(int run) {
  std::mt19937_64 rng(1000 + run);
  std::normal_distribution<double> prompt(2000, 20), ttft(0.8, 0.05), per_token(0.02, 0.002);
  std::uniform_int_distribution<int> generated(8, 32), chars(40, 120), finish(0, 3);
  std::ostringstream out;
  out << "prompt_tokens,visual_tokens,generated_tokens,image_width,image_height,frames,"
         "ttft_seconds,seconds_per_token,kv_kept_ratio,output_chars,finish_reason,method,"
         "kv_policy\n";
  for (int i = 0; i < 30; ++i) {
    out << std::lround(prompt(rng)) << ",1024," << generated(rng) << ",1280,720,8," << ttft(rng)
        << "," << per_token(rng) << ",0.25," << chars(rng) << ","
        << (finish(rng) == 0 ? "eos" : "length") << ",Generate,vlcache\n";
  }
  return out.str();
}

class SelfWatchTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { MakeSuiteModelDir("vlcache-self-watch-", &dir_); }
  static void TearDownTestSuite() { RemoveSuiteDir(&dir_); }

  static StreamResult Generate(ServerProcess& server, const std::string& prompt) {
    pb::GenerateRequest req;
    req.set_prompt(prompt);
    req.mutable_sampling()->set_max_new_tokens(4);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(1));
    auto reader = server.stub()->Generate(&ctx, req);
    return ReadStream(reader.get());
  }

  // Runs of `pipeline` in the server's history; 0 when it has none.
  static int64_t RunsOf(pb::DataQuality::Stub* dq, const std::string& pipeline) {
    grpc::ClientContext ctx;
    pb::ListPipelinesResponse list;
    const grpc::Status s = dq->ListPipelines(&ctx, pb::ListPipelinesRequest(), &list);
    EXPECT_TRUE(s.ok()) << s.error_message();
    for (const auto& p : list.pipelines()) {
      if (p.name() == pipeline) return p.runs();
    }
    return 0;
  }

  static std::string* dir_;
};
std::string* SelfWatchTest::dir_ = nullptr;

TEST_F(SelfWatchTest, RequestsUnlikeTheHistoryAreCaughtAndTheWindowIsAppended) {
  ServerProcess server;
  ASSERT_TRUE(
      server.Start(*dir_ + "/model", {"--dq-db", *dir_ + "/caught.db", "--dq-watch-window", "1s"}));
  auto dq = pb::DataQuality::NewStub(server.channel());

  // The history: windows of ~2000-token prompts, added as any pipeline's runs are.
  {
    pb::AddRunsRequest req;
    req.set_pipeline(kRequestsPipeline);
    for (int run = 0; run < kSeededRuns; ++run) {
      pb::Run* r = req.add_runs();
      r->set_key("2024-01-01T0" + std::to_string(run) + ":00:00.000Z");  // hourly windows
      r->set_csv(SeededWindowCsv(run));
    }
    grpc::ClientContext ctx;
    pb::AddRunsResponse added;
    const grpc::Status s = dq->AddRuns(&ctx, req, &added);
    ASSERT_TRUE(s.ok()) << s.error_message();
    for (const auto& c : added.columns()) {
      if (c.column() == "prompt_tokens") EXPECT_TRUE(c.learned()) << c.note();
    }
  }
  ASSERT_EQ(RunsOf(dq.get(), kRequestsPipeline), kSeededRuns);

  // Short text-only prompts: a few dozen tokens, no media.
  for (const char* prompt : {"count to three", "what is red?", "say hello"}) {
    const StreamResult r = Generate(server, prompt);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ASSERT_LT(r.usage.prompt_tokens(), 200);
  }

  // The window that holds them closes within a second or so; its check shows in /metrics.
  const std::vector<std::string> ours = {"pipeline=\"vlcache.requests\""};
  std::string text;
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < give_up) {
    text = server.Metrics();
    if (SumSamples(text, "vlcache_dq_checks_total", ours) >= 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_GE(SumSamples(text, "vlcache_dq_checks_total", ours), 1) << text;
  EXPECT_GE(SumSamples(text, "vlcache_dq_checks_total",
                       {"pipeline=\"vlcache.requests\"", "verdict=\"fail\""}),
            1)
      << text;
  EXPECT_GT(SumSamples(text, "vlcache_dq_violations_total",
                       {"pipeline=\"vlcache.requests\"", "column=\"prompt_tokens\""}),
            0)
      << text;

  // Appended although it failed (the requests may have fallen into two windows).
  const int64_t runs = RunsOf(dq.get(), kRequestsPipeline);
  EXPECT_GE(runs, kSeededRuns + 1);
  EXPECT_LE(runs, kSeededRuns + 3);
  grpc::ClientContext ctx;
  pb::GetProgramRequest req;
  req.set_pipeline(kRequestsPipeline);
  req.set_column("prompt_tokens");
  pb::GetProgramResponse program;
  const grpc::Status s = dq->GetProgram(&ctx, req, &program);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_GE(program.learned_at_seq(), kSeededRuns + 1);  // re-learned with the new window

  // Serving goes on while windows close.
  EXPECT_TRUE(Generate(server, "one more").status.ok());
}

TEST_F(SelfWatchTest, WithoutDqDbNothingIsWatchedAndServingIsUnchanged) {
  ServerProcess server;
  ASSERT_TRUE(server.Start(*dir_ + "/model", {"--dq-watch-window", "1s"}));
  for (const char* prompt : {"count to three", "say hello"}) {
    const StreamResult r = Generate(server, prompt);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    EXPECT_EQ(r.usage_messages, 1);
  }
  const std::string text = server.Metrics();
  EXPECT_TRUE(std::isnan(SumSamples(text, "vlcache_dq_checks_total"))) << text;
  EXPECT_TRUE(std::isnan(SumSamples(text, "vlcache_dq_violations_total"))) << text;
  {
    auto dq = pb::DataQuality::NewStub(server.channel());
    grpc::ClientContext ctx;
    pb::ListPipelinesResponse out;
    EXPECT_EQ(dq->ListPipelines(&ctx, pb::ListPipelinesRequest(), &out).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  server.Stop();  // a clean exit (status 0) is required
}

TEST_F(SelfWatchTest, ShutdownDropsTheOpenWindowAndDoesNotWaitForItsEnd) {
  const std::string db = *dir_ + "/dropped.db";
  {
    ServerProcess server;
    // The default window, one hour: the requests' window is still open at shutdown.
    ASSERT_TRUE(server.Start(*dir_ + "/model", {"--dq-db", db}));
    ASSERT_TRUE(Generate(server, "count to three").status.ok());
    const auto t0 = std::chrono::steady_clock::now();
    server.Stop();
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  }
  auto store = dq::Store::Open(db);
  ASSERT_TRUE(store.ok()) << store.status();
  auto pipelines = store->Pipelines();
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  EXPECT_TRUE(pipelines->empty());  // the partial window was not appended
}

}  // namespace
}  // namespace vlc::server
