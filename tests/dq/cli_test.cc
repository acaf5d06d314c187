// vlcache-dq as a user runs it: the real binary (VLC_BIN_DIR) on a generated CSV pipeline in a
// temporary directory, and `eval` on the real weather table.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "common/fs.h"
#include "dq/issues.h"
#include "dq/pipeline_service.h"
#include "dq/store.h"
#include "nlohmann/json.hpp"

namespace vlc::dq {
namespace {

struct Result {
  int code = -1;
  std::string output;  // stdout and stderr together
};

Result RunDq(const std::string& args) {
  const std::string cmd = std::string(VLC_BIN_DIR) + "/vlcache-dq " + args + " 2>&1";
  Result r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// One day of a small sales pipeline: 200 rows, an amount ~ N(100, 10) (times `scale`) and a
// region drawn from four codes with fixed weights.
void WriteRun(const std::string& path, uint64_t seed, double scale = 1.0) {
  SplitMix64 rng(seed);
  std::ofstream out(path);
  out << "amount,region\n";
  const char* regions[] = {"north", "south", "east", "west"};
  for (int i = 0; i < 200; ++i) {
    const double u1 = 1.0 - rng.Uniform(), u2 = rng.Uniform();
    const double amount = 100.0 + 10.0 * std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
    const double w = rng.Uniform();
    const int region = w < 0.4 ? 0 : w < 0.7 ? 1 : w < 0.9 ? 2 : 3;
    out << amount * scale << "," << regions[region] << "\n";
  }
}

class DqCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("vlc_dq_cli_");
    ASSERT_FALSE(dir_.empty());
    db_ = dir_ + "/history.sqlite";
    for (int day = 1; day <= 14; ++day) {
      char name[64];
      std::snprintf(name, sizeof name, "/2024-03-%02d.csv", day);
      runs_.push_back(dir_ + name);
      WriteRun(runs_.back(), 1000 + day);
    }
  }
  void TearDown() override { RemoveTree(dir_); }

  // learn on runs [0, n)
  Result LearnFirst(size_t n) {
    std::string args = "learn --pipeline sales --db " + db_;
    for (size_t i = 0; i < n; ++i) args += " " + runs_[i];
    return RunDq(args);
  }

  std::string dir_, db_;
  std::vector<std::string> runs_;
};

TEST_F(DqCli, LearnThenValidateCleanPassesAndBrokenFailsNamingTheColumn) {
  const Result learn = LearnFirst(12);
  ASSERT_EQ(learn.code, 0) << learn.output;
  EXPECT_NE(learn.output.find("column amount:"), std::string::npos) << learn.output;

  const Result clean = RunDq("validate --pipeline sales --db " + db_ + " " + runs_[12]);
  EXPECT_EQ(clean.code, 0) << clean.output;
  EXPECT_NE(clean.output.find("PASSED"), std::string::npos) << clean.output;

  const std::string broken = dir_ + "/2024-03-20.csv";
  WriteRun(broken, 1013, 1000.0);  // the same day in other units
  const Result bad = RunDq("validate --pipeline sales --db " + db_ + " " + broken);
  EXPECT_EQ(bad.code, 1) << bad.output;
  EXPECT_NE(bad.output.find("FAILED  amount"), std::string::npos) << bad.output;
  EXPECT_EQ(bad.output.find("FAILED  region"), std::string::npos) << bad.output;

  const Result json = RunDq("validate --json --pipeline sales --db " + db_ + " " + broken);
  EXPECT_EQ(json.code, 1) << json.output;
  const nlohmann::json report = nlohmann::json::parse(json.output, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << json.output;
  EXPECT_FALSE(report["passed"].get<bool>());
  bool amount_failed = false;
  for (const auto& c : report["columns"]) {
    if (c["column"] == "amount") {
      amount_failed = !c["passed"].get<bool>() && !c["violations"].empty();
    }
  }
  EXPECT_TRUE(amount_failed) << json.output;

  // Validating did not add the runs to the history.
  absl::StatusOr<Store> store = Store::Open(db_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->Runs("sales")->size(), 12u);
}

TEST_F(DqCli, LearnIsIncrementalAndAppendAddsTheValidatedRun) {
  ASSERT_EQ(LearnFirst(12).code, 0);
  const Result more = RunDq("learn --pipeline sales --db " + db_ + " " + runs_[12]);
  ASSERT_EQ(more.code, 0) << more.output;
  EXPECT_NE(more.output.find("learned from 13 runs"), std::string::npos) << more.output;
  const Result again = RunDq("learn --pipeline sales --db " + db_ + " " + runs_[12]);
  EXPECT_EQ(again.code, 2) << again.output;  // the run is recorded already
  const Result append = RunDq("validate --append --pipeline sales --db " + db_ + " " + runs_[13]);
  EXPECT_EQ(append.code, 0) << append.output;
  absl::StatusOr<Store> store = Store::Open(db_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(store->Runs("sales")->size(), 14u);
}

// Runs that give their span (--span) get rows per span watched, and the span survives in the
// stored window: a later learn, reading the history back from the database, still has it.
TEST_F(DqCli, SpanAddsRowsPerSpanThatALaterLearnKeeps) {
  std::string args = "learn --span 1 --pipeline sales --db " + db_;
  for (size_t i = 0; i < 12; ++i) args += " " + runs_[i];
  ASSERT_EQ(RunDq(args).code, 0);
  const Result more = RunDq("learn --span 1 --pipeline sales --db " + db_ + " " + runs_[12]);
  ASSERT_EQ(more.code, 0) << more.output;

  const std::string v = "validate --pipeline sales --db " + db_ + " " + runs_[13];
  const Result clean = RunDq(v + " --span 1");
  EXPECT_EQ(clean.code, 0) << clean.output;
  // The same 200 rows said to cover two days: 100 rows a day where every run had 200.
  const Result halved = RunDq(v + " --span 2");
  EXPECT_EQ(halved.code, 1) << halved.output;
  EXPECT_NE(halved.output.find("rows_per_span"), std::string::npos) << halved.output;
  const Result none = RunDq(v);
  EXPECT_EQ(none.code, 1) << none.output;
  EXPECT_NE(none.output.find("gives no span"), std::string::npos) << none.output;
  for (const char* bad : {" --span 0", " --span -3", " --span inf"}) {
    const Result r = RunDq(v + bad);
    EXPECT_EQ(r.code, 2) << bad << ": " << r.output;
  }
}

TEST_F(DqCli, RelearnNeverKeepsTheFirstProgramWhileTheWindowMovesOn) {
  std::string args = "learn --relearn never --pipeline sales --db " + db_;
  for (size_t i = 0; i < 10; ++i) args += " " + runs_[i];
  const Result first = RunDq(args);
  ASSERT_EQ(first.code, 0) << first.output;
  EXPECT_NE(first.output.find("learned from 10 runs"), std::string::npos) << first.output;
  // The setting is stored: a later learn without it keeps the program, and so does --append.
  const Result more = RunDq("learn --pipeline sales --db " + db_ + " " + runs_[10]);
  ASSERT_EQ(more.code, 0) << more.output;
  EXPECT_NE(more.output.find("column amount: program kept (relearn never)"), std::string::npos)
      << more.output;
  EXPECT_NE(more.output.find("learned from 10 runs"), std::string::npos) << more.output;
  const Result append = RunDq("validate --append --pipeline sales --db " + db_ + " " + runs_[11]);
  EXPECT_EQ(append.code, 0) << append.output;
  {
    absl::StatusOr<Store> store = Store::Open(db_);
    ASSERT_TRUE(store.ok()) << store.status();
    absl::StatusOr<PipelineState> state = LoadPipelineState(*store, "sales");
    ASSERT_TRUE(state.ok()) << state.status();
    EXPECT_EQ(state->relearn, RelearnMode::kNever);
    const ColumnState& amount = state->columns.at("amount");
    ASSERT_TRUE(amount.program.has_value());
    EXPECT_EQ(amount.program->history_runs, 10u);
    EXPECT_EQ(amount.window.size(), 12u);  // validation compares with the latest run
    EXPECT_EQ(amount.run_keys.back(), "2024-03-12");
  }
  // Switching back re-learns from the whole window, and the switch is stored.
  const Result every =
      RunDq("learn --relearn every --pipeline sales --db " + db_ + " " + runs_[12]);
  ASSERT_EQ(every.code, 0) << every.output;
  EXPECT_NE(every.output.find("learned from 13 runs"), std::string::npos) << every.output;
  EXPECT_EQ(every.output.find("program kept"), std::string::npos) << every.output;
  absl::StatusOr<Store> store = Store::Open(db_);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(LoadPipelineState(*store, "sales")->relearn, RelearnMode::kEvery);
  // A mode that does not exist is a usage error.
  const Result bad = RunDq("learn --relearn sometimes --pipeline sales --db " + db_ + " " + runs_[13]);
  EXPECT_EQ(bad.code, 2) << bad.output;
  EXPECT_NE(bad.output.find("--relearn"), std::string::npos) << bad.output;
}

TEST_F(DqCli, ErrorsExitTwoWithAClearMessage) {
  const Result too_few = LearnFirst(3);
  EXPECT_EQ(too_few.code, 0) << too_few.output;
  EXPECT_NE(too_few.output.find("no program yet"), std::string::npos) << too_few.output;
  const Result no_program = RunDq("validate --pipeline sales --db " + db_ + " " + runs_[5]);
  EXPECT_EQ(no_program.code, 2) << no_program.output;
  EXPECT_NE(no_program.output.find("no learned program"), std::string::npos) << no_program.output;

  const Result missing_file =
      RunDq("validate --pipeline sales --db " + db_ + " " + dir_ + "/nope.csv");
  EXPECT_EQ(missing_file.code, 2) << missing_file.output;
  EXPECT_NE(missing_file.output.find("nope.csv"), std::string::npos) << missing_file.output;

  const Result missing_db =
      RunDq("validate --pipeline sales --db " + dir_ + "/none.sqlite " + runs_[0]);
  EXPECT_EQ(missing_db.code, 2) << missing_db.output;
  EXPECT_NE(missing_db.output.find("none.sqlite"), std::string::npos) << missing_db.output;

  EXPECT_EQ(RunDq("learn --pipeline sales " + runs_[0]).code, 2);  // no --db
  EXPECT_EQ(RunDq("frobnicate").code, 2);
  EXPECT_EQ(RunDq("eval --table x.csv --partition-by date --partition-format week").code, 2);
  EXPECT_EQ(RunDq("learn --pipeline p --db " + db_ + " " + dir_ + "/run.txt").code, 2);

  const Result help = RunDq("learn --help");
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.output.find("--history"), std::string::npos) << help.output;
}

TEST_F(DqCli, EvalOnWeatherWritesTheDocumentedJson) {
  const std::string out = dir_ + "/eval.json";
  const Result r = RunDq("eval --table " + std::string(VLC_SOURCE_DIR) +
                         "/tests/data/avh/weather.csv --partition-by date "
                         "--partition-format month --history 24 --delta 0.01 --json " +
                         out);
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("avh"), std::string::npos);
  std::ifstream in(out);
  std::stringstream ss;
  ss << in.rdbuf();
  const nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["runs"], 48);
  EXPECT_EQ(j["test_runs"], 24);
  ASSERT_TRUE(j["methods"].is_array());
  ASSERT_EQ(j["methods"].size(), 7u);
  EXPECT_EQ(j["methods"][0]["name"], "avh");
  for (const auto& m : j["methods"]) {
    for (const char* field : {"name", "precision", "recall", "fpr", "f1", "counts"}) {
      EXPECT_TRUE(m.contains(field)) << field;
    }
    const auto& c = m["counts"];
    // 24 test runs x 6 columns clean; 24 x (4 numeric x 27 + 2 categorical x 33) injected.
    EXPECT_EQ(c["clean_cases"], 24 * 6);
    EXPECT_EQ(c["injected_cases"], 24 * (4 * 27 + 2 * 33));
    EXPECT_DOUBLE_EQ(m["recall"].get<double>(),
                     c["tp"].get<double>() / c["injected_cases"].get<double>());
  }
  ASSERT_TRUE(j["realistic"].is_array());
  EXPECT_FALSE(j["realistic"].empty());
  for (const auto& x : j["realistic"]) {
    for (const char* field : {"method", "issue", "cases", "detected", "recall"}) {
      EXPECT_TRUE(x.contains(field)) << field;
    }
  }
}

}  // namespace
}  // namespace vlc::dq
