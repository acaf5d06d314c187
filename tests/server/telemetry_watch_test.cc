// The telemetry watch without the server: a request's row from the engine's usage, the window's
// table (its columns, their types and nulls), and closing windows over a real SQLite history:
// idle windows skipped, the first windows appended unchecked, a window unlike its history
// counted, logged and still appended, busy windows sampled, and the thread's own cadence and
// prompt stop.
#include "server/telemetry_watch.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/fs.h"
#include "dq/pipeline_service.h"
#include "engine/pipeline.h"
#include "tests/server/server_fixture.h"

namespace vlc::server {
namespace {

// An ordinary request of the seeded history: about `prompt_tokens` tokens, varying a little.
RequestTelemetry Row(int64_t prompt_tokens, int i) {
  RequestTelemetry r;
  r.prompt_tokens = prompt_tokens + (i * 37) % 41 - 20;
  r.visual_tokens = 16;
  r.generated_tokens = 8 + i % 5;
  r.image_width = 640;
  r.image_height = 480;
  r.frames = 1;
  r.ttft_seconds = 0.05 + 0.001 * (i % 7);
  r.seconds_per_token = 0.01 + 0.0005 * (i % 3);
  r.kv_kept_ratio = 0.25;
  r.output_chars = 30 + i % 11;
  r.finish_reason = i % 4 == 0 ? "eos" : "length";
  r.method = "Generate";
  r.kv_policy = "vlcache";
  return r;
}

std::vector<RequestTelemetry> Rows(int64_t prompt_tokens, int n, int seed) {
  std::vector<RequestTelemetry> rows;
  for (int i = 0; i < n; ++i) rows.push_back(Row(prompt_tokens, seed * 13 + i));
  return rows;
}

class TelemetryWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("vlc_telemetry_watch_test_");
    ASSERT_FALSE(dir_.empty());
    auto store = dq::Store::Open(dir_ + "/dq.db");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::make_unique<LockedStore>(std::move(*store));
  }
  void TearDown() override {
    store_.reset();
    RemoveTree(dir_);
  }

  // `runs` windows of ordinary traffic as the pipeline's history, appended as the watch would.
  void SeedHistory(int runs) {
    std::vector<std::pair<std::string, dq::Table>> seeded;
    for (int i = 0; i < runs; ++i) {
      auto table = TelemetryTable(Rows(2000, 30, i));
      ASSERT_TRUE(table.ok()) << table.status();
      seeded.emplace_back("seed-" + std::to_string(100 + i), std::move(*table));
    }
    std::lock_guard<std::mutex> lock(store_->mu);
    auto added = dq::AppendAndLearn(store_->store, kRequestsPipeline, seeded, {});
    ASSERT_TRUE(added.ok()) << added.status();
  }

  int64_t Runs() {
    std::lock_guard<std::mutex> lock(store_->mu);
    auto runs = store_->store.Runs(kRequestsPipeline);
    return runs.ok() ? static_cast<int64_t>(runs->size()) : 0;
  }

  std::string dir_;
  std::unique_ptr<LockedStore> store_;
};

TEST(TelemetryRow, ConvertsTheEngineUsageToBaseUnits) {
  engine::GenerateResponse u;
  u.prompt_tokens = 120;
  u.visual_tokens = 64;
  u.generated_tokens = 5;
  u.media_width = 640;
  u.media_height = 480;
  u.media_frames = 4;
  u.ttft_ms = 250;
  u.decode_ms_per_token = 20;
  u.kv_bytes = 1000;
  u.kv_bytes_full = 4000;
  u.text = "caf\xc3\xa9 ok";  // 7 characters, 8 bytes
  u.finish_reason = "eos";
  u.kv_policy = "vlcache";
  const RequestTelemetry r = TelemetryRow("SessionGenerate", u);
  EXPECT_EQ(r.prompt_tokens, 120);
  EXPECT_EQ(r.visual_tokens, 64);
  EXPECT_EQ(r.generated_tokens, 5);
  EXPECT_EQ(r.image_width, 640);
  EXPECT_EQ(r.image_height, 480);
  EXPECT_EQ(r.frames, 4);
  EXPECT_DOUBLE_EQ(r.ttft_seconds, 0.25);
  ASSERT_TRUE(r.seconds_per_token.has_value());
  EXPECT_DOUBLE_EQ(*r.seconds_per_token, 0.02);
  ASSERT_TRUE(r.kv_kept_ratio.has_value());
  EXPECT_DOUBLE_EQ(*r.kv_kept_ratio, 0.25);
  EXPECT_EQ(r.output_chars, 7);
  EXPECT_EQ(r.finish_reason, "eos");
  EXPECT_EQ(r.method, "SessionGenerate");
  EXPECT_EQ(r.kv_policy, "vlcache");

  // One token has no decode step to time, and an empty cache no ratio: nulls, not zeros.
  u.generated_tokens = 1;
  u.kv_bytes_full = 0;
  const RequestTelemetry short_one = TelemetryRow("Generate", u);
  EXPECT_FALSE(short_one.seconds_per_token.has_value());
  EXPECT_FALSE(short_one.kv_kept_ratio.has_value());
}

TEST(TelemetryTable, HasTheDocumentedColumnsInOrderWithTheirTypes) {
  std::vector<RequestTelemetry> rows = Rows(2000, 3, 0);
  rows[1].seconds_per_token.reset();
  auto table = TelemetryTable(rows);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->num_rows(), 3u);
  const std::vector<std::string> expected = {
      "prompt_tokens", "visual_tokens", "generated_tokens",  "image_width",   "image_height",
      "frames",        "ttft_seconds",  "seconds_per_token", "kv_kept_ratio", "output_chars",
      "finish_reason", "method",        "kv_policy"};
  EXPECT_EQ(table->ColumnNames(), expected);
  for (const dq::Column& c : table->columns()) {
    const bool categorical =
        c.name() == "finish_reason" || c.name() == "method" || c.name() == "kv_policy";
    EXPECT_EQ(c.type(), categorical ? dq::ColumnType::kCategorical : dq::ColumnType::kNumeric)
        << c.name();
  }
  const dq::Column* prompt = table->Find("prompt_tokens");
  ASSERT_NE(prompt, nullptr);
  EXPECT_EQ(prompt->numeric()[2], static_cast<double>(rows[2].prompt_tokens));
  const dq::Column* per_token = table->Find("seconds_per_token");
  ASSERT_NE(per_token, nullptr);
  EXPECT_EQ(per_token->null_count(), 1u);
  EXPECT_TRUE(per_token->IsNull(1));
  EXPECT_EQ(*table->Find("method")->strings()[0], "Generate");

  // An empty window is an empty table of the same columns (the watch never stores one).
  auto empty = TelemetryTable({});
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(empty->num_rows(), 0u);
  EXPECT_EQ(empty->num_columns(), expected.size());
}

TEST_F(TelemetryWatchTest, AnEmptyWindowIsSkipped) {
  TelemetryWatch watch(store_.get(), nullptr, {});
  auto closed = watch.CloseWindow();
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_TRUE(closed->run_key.empty());
  EXPECT_EQ(closed->rows, 0u);
  EXPECT_EQ(closed->seq, 0);
  std::lock_guard<std::mutex> lock(store_->mu);
  auto pipelines = store_->store.Pipelines();
  ASSERT_TRUE(pipelines.ok()) << pipelines.status();
  EXPECT_TRUE(pipelines->empty());  // not even the pipeline was created
}

TEST_F(TelemetryWatchTest, WindowsWithoutAHistoryAreAppendedUnchecked) {
  TelemetryWatch watch(store_.get(), nullptr, {});
  for (const auto& r : Rows(2000, 5, 1)) watch.Record(r);
  auto closed = watch.CloseWindow();
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_FALSE(closed->checked);
  EXPECT_EQ(closed->rows, 5u);
  EXPECT_EQ(closed->requests, 5);
  EXPECT_EQ(closed->seq, 1);
  // The key is the window's start in UTC, ISO-8601 with milliseconds.
  ASSERT_EQ(closed->run_key.size(), 24u) << closed->run_key;
  EXPECT_EQ(closed->run_key[4], '-');
  EXPECT_EQ(closed->run_key[10], 'T');
  EXPECT_EQ(closed->run_key[19], '.');
  EXPECT_EQ(closed->run_key.back(), 'Z');
  EXPECT_EQ(Runs(), 1);
  // The next window starts empty.
  auto next = watch.CloseWindow();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_TRUE(next->run_key.empty());
  EXPECT_EQ(Runs(), 1);
}

TEST_F(TelemetryWatchTest, AWindowUnlikeItsHistoryIsCountedLoggedAndStillAppended) {
  SeedHistory(10);
  ASSERT_EQ(Runs(), 10);
  auto metrics = Metrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  TelemetryWatch watch(store_.get(), metrics->get(), {});

  // Prompts of ~40 tokens where the history has ~2000.
  for (const auto& r : Rows(40, 30, 99)) watch.Record(r);
  auto closed = watch.CloseWindow();
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_TRUE(closed->checked);
  EXPECT_FALSE(closed->passed);
  EXPECT_GT(closed->violations, 0);
  EXPECT_EQ(closed->seq, 11);
  EXPECT_EQ(Runs(), 11);  // a failing window is history too

  const std::string text = HttpGet("127.0.0.1:" + std::to_string((*metrics)->port()), "/metrics");
  EXPECT_GT(SumSamples(text, "vlcache_dq_violations_total",
                       {"pipeline=\"vlcache.requests\"", "column=\"prompt_tokens\""}),
            0)
      << text;
  EXPECT_EQ(SumSamples(text, "vlcache_dq_violations_total"), closed->violations);
  EXPECT_EQ(SumSamples(text, "vlcache_dq_checks_total",
                       {"pipeline=\"vlcache.requests\"", "verdict=\"fail\""}),
            1);

  // The next window is checked against the re-learned programs.
  for (const auto& r : Rows(2000, 30, 7)) watch.Record(r);
  auto ordinary = watch.CloseWindow();
  ASSERT_TRUE(ordinary.ok()) << ordinary.status();
  EXPECT_TRUE(ordinary->checked);
  EXPECT_EQ(ordinary->seq, 12);
  // Closed right after the first, within its millisecond: still a key of its own, later.
  EXPECT_LT(closed->run_key, ordinary->run_key);
}

TEST_F(TelemetryWatchTest, ABusyWindowKeepsAUniformSampleOfMaxRows) {
  TelemetryWatchOptions options;
  options.max_rows = 20;
  TelemetryWatch watch(store_.get(), nullptr, options);
  // 200 requests, prompt_tokens 0..199: a uniform sample of 20 has a mean near 100.
  for (int i = 0; i < 200; ++i) {
    RequestTelemetry r = Row(0, i);
    r.prompt_tokens = i;
    watch.Record(r);
  }
  auto closed = watch.CloseWindow();
  ASSERT_TRUE(closed.ok()) << closed.status();
  EXPECT_EQ(closed->requests, 200);
  EXPECT_EQ(closed->rows, 20u);
  std::lock_guard<std::mutex> lock(store_->mu);
  auto runs = store_->store.Runs(kRequestsPipeline);
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ(runs->front().row_count, 20);
  auto state = dq::LoadPipelineState(store_->store, kRequestsPipeline);
  ASSERT_TRUE(state.ok()) << state.status();
  const dq::Column& kept = state->columns.at("prompt_tokens").window.back();
  double sum = 0;
  int late = 0;  // rows from the second half: a sample that kept only the first 20 has none
  for (double v : kept.NonNullNumbers()) {
    sum += v;
    late += v >= 100 ? 1 : 0;
  }
  EXPECT_GT(late, 0);
  EXPECT_GT(sum / 20, 30);  // the first 20 alone would average 9.5
}

TEST_F(TelemetryWatchTest, TheThreadClosesWindowsOnItsOwnAndStopsAtOnce) {
  TelemetryWatchOptions options;
  options.window = std::chrono::milliseconds(200);
  {
    TelemetryWatch watch(store_.get(), nullptr, options);
    watch.Start();
    for (const auto& r : Rows(2000, 3, 2)) watch.Record(r);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (Runs() == 0 && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    EXPECT_EQ(Runs(), 1);
    watch.Stop();
  }
  // A long window: Stop wakes the thread instead of waiting for the window's end, and the open
  // window's rows are dropped, not appended.
  options.window = std::chrono::hours(1);
  TelemetryWatch watch(store_.get(), nullptr, options);
  watch.Start();
  for (const auto& r : Rows(2000, 3, 3)) watch.Record(r);
  const auto t0 = std::chrono::steady_clock::now();
  watch.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(Runs(), 1);
  watch.Stop();  // idempotent
}

}  // namespace
}  // namespace vlc::server
