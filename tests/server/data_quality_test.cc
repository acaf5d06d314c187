// The DataQuality service (proto/vlcache/v1/data_quality.proto) on the real server process, run
// with --dq-db: a generated pipeline of CSV runs is added, its programs learned, and new runs
// validated, as a data team's job would; bad requests get their precise codes and the server
// keeps serving. ctest runs each case as its own process, so each case builds its own history.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <sstream>
#include <set>
#include <string>

#include "common/fs.h"
#include "tests/server/server_fixture.h"
#include "vlcache/v1/data_quality.grpc.pb.h"

namespace vlc::server {
namespace {

// A fixed 64-bit LCG (Knuth's MMIX constants): the runs are the same on every machine.
class Lcg {
 public:
  explicit Lcg(uint64_t seed) : state_(seed * 2862933555777941757ULL + 3037000493ULL) {}
  double Uniform() {  // in (0, 1)
    state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
    return (static_cast<double>(state_ >> 11) + 0.5) / 9007199254740992.0;
  }
  double Normal(double mean, double sd) {  // Box-Muller
    const double u1 = Uniform(), u2 = Uniform();
    return mean + sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  uint64_t state_;
};

// One run of a small sales pipeline: 200 rows, an amount ~ N(100, 10) (times `scale`) and a
// region drawn from four codes with fixed weights.
std::string RunCsv(uint64_t seed, double scale = 1.0) {
  Lcg rng(seed);
  std::ostringstream out;
  out << "amount,region\n";
  const char* regions[] = {"north", "south", "east", "west"};
  for (int i = 0; i < 200; ++i) {
    const double amount = rng.Normal(100.0, 10.0) * scale;
    const double w = rng.Uniform();
    out << amount << "," << regions[w < 0.4 ? 0 : w < 0.7 ? 1 : w < 0.9 ? 2 : 3] << "\n";
  }
  return out.str();
}

std::string DayKey(int day) {
  char key[16];
  std::snprintf(key, sizeof key, "2024-03-%02d", day);
  return key;
}

class DataQualityServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ClearVlcEnvironment();
    dir_ = new std::string(MakeTempDir("vlcache-dq-service-"));
    ASSERT_FALSE(dir_->empty());
    const absl::Status made = MakeTinyModel(*dir_ + "/model");
    ASSERT_TRUE(made.ok()) << made;
    server_ = new ServerProcess();
    ASSERT_TRUE(server_->Start(*dir_ + "/model",
                               {"--dq-db", *dir_ + "/dq.db", "--dq-max-run-bytes", "64K"}));
    dq_ = pb::DataQuality::NewStub(server_->channel()).release();
  }

  static void TearDownTestSuite() {
    delete dq_;
    dq_ = nullptr;
    delete server_;  // SIGTERM; a clean exit is required
    server_ = nullptr;
    if (dir_ != nullptr && !dir_->empty()) RemoveTree(*dir_);
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override { ASSERT_NE(dq_, nullptr) << "the server did not start"; }

  // Runs `first`..`last` (days of March, seeds 1000 + day) of `pipeline` in one AddRuns.
  static grpc::Status AddDays(const std::string& pipeline, int first, int last,
                              pb::AddRunsResponse* response) {
    pb::AddRunsRequest req;
    req.set_pipeline(pipeline);
    for (int day = first; day <= last; ++day) {
      pb::Run* run = req.add_runs();
      run->set_key(DayKey(day));
      run->set_csv(RunCsv(1000 + day));
    }
    grpc::ClientContext ctx;
    return dq_->AddRuns(&ctx, req, response);
  }

  static grpc::Status Validate(const std::string& pipeline, const std::string& key,
                               const std::string& csv, bool append,
                               pb::ValidateResponse* response) {
    pb::ValidateRequest req;
    req.set_pipeline(pipeline);
    req.mutable_run()->set_key(key);
    req.mutable_run()->set_csv(csv);
    req.set_append(append);
    grpc::ClientContext ctx;
    return dq_->Validate(&ctx, req, response);
  }

  static pb::ListPipelinesResponse List() {
    grpc::ClientContext ctx;
    pb::ListPipelinesResponse out;
    const grpc::Status s = dq_->ListPipelines(&ctx, pb::ListPipelinesRequest(), &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  }

  static int64_t RunsOf(const std::string& pipeline) {
    const pb::ListPipelinesResponse list = List();
    for (const auto& p : list.pipelines()) {
      if (p.name() == pipeline) return p.runs();
    }
    return 0;
  }

  static std::string* dir_;
  static ServerProcess* server_;
  static pb::DataQuality::Stub* dq_;
};
std::string* DataQualityServiceTest::dir_ = nullptr;
ServerProcess* DataQualityServiceTest::server_ = nullptr;
pb::DataQuality::Stub* DataQualityServiceTest::dq_ = nullptr;

TEST_F(DataQualityServiceTest, AddRunsLearnsProgramsAndValidateTellsCleanRunsFromBrokenOnes) {
  pb::AddRunsResponse added;
  const grpc::Status s = AddDays("sales", 1, 12, &added);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(added.runs_size(), 12);
  for (int i = 0; i < 12; ++i) {
    EXPECT_EQ(added.runs(i).key(), DayKey(i + 1));
    EXPECT_EQ(added.runs(i).seq(), i + 1);
    EXPECT_EQ(added.runs(i).rows(), 200);
  }
  ASSERT_EQ(added.columns_size(), 2);
  EXPECT_EQ(added.columns(0).column(), "amount");
  EXPECT_EQ(added.columns(0).type(), "numeric");
  EXPECT_EQ(added.columns(1).column(), "region");
  EXPECT_EQ(added.columns(1).type(), "categorical");
  for (const auto& c : added.columns()) {
    EXPECT_TRUE(c.learned()) << c.column() << ": " << c.note();
    EXPECT_EQ(c.history_runs(), 12) << c.column();
    EXPECT_GT(c.constraints(), 0) << c.column();
    EXPECT_LE(c.expected_fpr(), 0.01 + 1e-12) << c.column();
  }

  // The learned constraints, one column at a time or all of them.
  {
    grpc::ClientContext ctx;
    pb::GetProgramRequest req;
    req.set_pipeline("sales");
    req.set_column("amount");
    pb::GetProgramResponse program;
    const grpc::Status got = dq_->GetProgram(&ctx, req, &program);
    ASSERT_TRUE(got.ok()) << got.error_message();
    EXPECT_EQ(program.learned_at_seq(), 12);
    ASSERT_EQ(program.columns_size(), 1);
    const pb::ColumnProgram& amount = program.columns(0);
    EXPECT_EQ(amount.column(), "amount");
    EXPECT_EQ(amount.constraints_size(), added.columns(0).constraints());
    for (const auto& c : amount.constraints()) {
      EXPECT_FALSE(c.metric().empty());
      EXPECT_LE(c.lo(), c.hi()) << c.metric();
    }
  }
  {
    grpc::ClientContext ctx;
    pb::GetProgramRequest req;
    req.set_pipeline("sales");
    pb::GetProgramResponse program;
    ASSERT_TRUE(dq_->GetProgram(&ctx, req, &program).ok());
    EXPECT_EQ(program.columns_size(), 2);
  }

  // A clean run of the same process passes.
  pb::ValidateResponse clean;
  const grpc::Status vs = Validate("sales", "2024-03-13", RunCsv(1013), false, &clean);
  ASSERT_TRUE(vs.ok()) << vs.error_message();
  EXPECT_TRUE(clean.passed());
  ASSERT_EQ(clean.columns_size(), 2);
  for (const auto& c : clean.columns()) EXPECT_TRUE(c.passed()) << c.column();
  EXPECT_FALSE(clean.has_appended());

  // The same day in other units (x1000) fails on amount, with the broken constraints spelled out.
  pb::ValidateResponse broken;
  ASSERT_TRUE(Validate("sales", "2024-03-20", RunCsv(1013, 1000.0), false, &broken).ok());
  EXPECT_FALSE(broken.passed());
  bool amount_failed = false, region_failed = false;
  for (const auto& c : broken.columns()) {
    if (c.column() == "amount") {
      amount_failed = !c.passed();
      ASSERT_GT(c.violations_size(), 0);
      for (const auto& v : c.violations()) {
        EXPECT_FALSE(v.metric().empty());
        EXPECT_FALSE(v.message().empty()) << v.metric();
        EXPECT_TRUE(std::isnan(v.value()) || v.value() < v.lo() || v.value() > v.hi())
            << v.metric() << " = " << v.value() << " in [" << v.lo() << ", " << v.hi() << "]";
      }
    }
    if (c.column() == "region") region_failed = !c.passed();
  }
  EXPECT_TRUE(amount_failed);
  EXPECT_FALSE(region_failed);

  // Validating did not add to the history; append does, and re-learns on 13 runs.
  EXPECT_EQ(RunsOf("sales"), 12);
  pb::ValidateResponse appended;
  const grpc::Status as = Validate("sales", "2024-03-13", RunCsv(1013), true, &appended);
  ASSERT_TRUE(as.ok()) << as.error_message();
  EXPECT_TRUE(appended.passed());
  EXPECT_EQ(appended.appended().key(), "2024-03-13");
  EXPECT_EQ(appended.appended().seq(), 13);
  const pb::ListPipelinesResponse list = List();
  bool listed = false;
  for (const auto& p : list.pipelines()) {
    if (p.name() != "sales") continue;
    listed = true;
    EXPECT_EQ(p.runs(), 13);
    EXPECT_EQ(p.last_run_key(), "2024-03-13");
  }
  EXPECT_TRUE(listed);
}

TEST_F(DataQualityServiceTest, RelearnNeverKeepsTheProgramAcrossAddRunsAndIsStored) {
  auto program_of = [](const std::string& pipeline) {
    grpc::ClientContext ctx;
    pb::GetProgramRequest req;
    req.set_pipeline(pipeline);
    pb::GetProgramResponse out;
    const grpc::Status s = dq_->GetProgram(&ctx, req, &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return out;
  };
  auto add_days = [](int first, int last, pb::Relearn relearn, pb::AddRunsResponse* out) {
    pb::AddRunsRequest req;
    req.set_pipeline("returns");
    req.set_relearn(relearn);
    for (int day = first; day <= last; ++day) {
      pb::Run* run = req.add_runs();
      run->set_key(DayKey(day));
      run->set_csv(RunCsv(2000 + day));
    }
    grpc::ClientContext ctx;
    return dq_->AddRuns(&ctx, req, out);
  };
  pb::AddRunsResponse first;
  ASSERT_TRUE(add_days(1, 10, pb::RELEARN_NEVER, &first).ok());
  for (const auto& c : first.columns()) {
    EXPECT_TRUE(c.learned()) << c.column();
    EXPECT_FALSE(c.kept()) << c.column();
  }
  const pb::GetProgramResponse before = program_of("returns");
  EXPECT_EQ(before.relearn(), pb::RELEARN_NEVER);

  // Unspecified: the stored setting. The programs stay as they were learned from 10 runs.
  pb::AddRunsResponse later;
  ASSERT_TRUE(add_days(11, 13, pb::RELEARN_UNSPECIFIED, &later).ok());
  for (const auto& c : later.columns()) {
    EXPECT_TRUE(c.learned()) << c.column();
    EXPECT_TRUE(c.kept()) << c.column();
    EXPECT_EQ(c.history_runs(), 13) << c.column();  // the window moved on
  }
  const pb::GetProgramResponse kept = program_of("returns");
  ASSERT_EQ(kept.columns_size(), before.columns_size());
  for (int i = 0; i < kept.columns_size(); ++i) {
    EXPECT_EQ(kept.columns(i).history_runs(), 10) << kept.columns(i).column();
    ASSERT_EQ(kept.columns(i).constraints_size(), before.columns(i).constraints_size());
    for (int j = 0; j < kept.columns(i).constraints_size(); ++j) {
      EXPECT_EQ(kept.columns(i).constraints(j).lo(), before.columns(i).constraints(j).lo());
      EXPECT_EQ(kept.columns(i).constraints(j).hi(), before.columns(i).constraints(j).hi());
    }
  }
  EXPECT_EQ(kept.learned_at_seq(), 13);

  // RELEARN_EVERY learns again from the whole window and is stored.
  pb::AddRunsResponse every;
  ASSERT_TRUE(add_days(14, 14, pb::RELEARN_EVERY, &every).ok());
  for (const auto& c : every.columns()) EXPECT_FALSE(c.kept()) << c.column();
  const pb::GetProgramResponse relearned = program_of("returns");
  EXPECT_EQ(relearned.relearn(), pb::RELEARN_EVERY);
  for (const auto& c : relearned.columns()) EXPECT_EQ(c.history_runs(), 14) << c.column();

  // A value outside the enum is INVALID_ARGUMENT, and nothing is recorded.
  pb::AddRunsResponse bad;
  const grpc::Status s = add_days(15, 15, static_cast<pb::Relearn>(7), &bad);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("RELEARN_NEVER"), std::string::npos) << s.error_message();
  EXPECT_EQ(RunsOf("returns"), 14);
}

TEST_F(DataQualityServiceTest, BadRequestsGetPreciseCodesAndTheServerKeepsServing) {
  pb::AddRunsResponse added;
  ASSERT_TRUE(AddDays("orders", 1, 3, &added).ok());

  // Unparsable CSV: INVALID_ARGUMENT naming the run and the line; nothing of the batch recorded.
  {
    pb::AddRunsRequest req;
    req.set_pipeline("orders");
    req.add_runs()->set_key("2024-03-04");
    req.mutable_runs(0)->set_csv(RunCsv(1004));
    req.add_runs()->set_key("2024-03-05");
    req.mutable_runs(1)->set_csv("amount,region\n1.5,north\n2.5,south,extra\n");
    grpc::ClientContext ctx;
    pb::AddRunsResponse out;
    const grpc::Status s = dq_->AddRuns(&ctx, req, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find("runs[1]"), std::string::npos) << s.error_message();
    EXPECT_NE(s.error_message().find(":3:"), std::string::npos) << s.error_message();
    EXPECT_EQ(RunsOf("orders"), 3);
  }
  // A run over --dq-max-run-bytes (64K here): INVALID_ARGUMENT naming the limit.
  {
    pb::ValidateResponse out;
    const std::string big = "amount\n" + std::string(70 << 10, '1') + "\n";
    const grpc::Status s = Validate("orders", "big", big, false, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find("--dq-max-run-bytes"), std::string::npos) << s.error_message();
  }
  // Unknown pipelines: NOT_FOUND, for Validate and GetProgram alike.
  {
    pb::ValidateResponse out;
    const grpc::Status s = Validate("no-such-pipeline", "k", RunCsv(1), false, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
    EXPECT_NE(s.error_message().find("no-such-pipeline"), std::string::npos);
    grpc::ClientContext ctx;
    pb::GetProgramRequest req;
    req.set_pipeline("no-such-pipeline");
    pb::GetProgramResponse program;
    EXPECT_EQ(dq_->GetProgram(&ctx, req, &program).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // A run key the pipeline has: ALREADY_EXISTS, and the new runs of that batch are not recorded.
  {
    pb::AddRunsResponse out;
    const grpc::Status s = AddDays("orders", 3, 4, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::ALREADY_EXISTS) << s.error_message();
    EXPECT_NE(s.error_message().find("2024-03-03"), std::string::npos) << s.error_message();
    EXPECT_EQ(RunsOf("orders"), 3);
    pb::ValidateResponse v;
    EXPECT_EQ(Validate("orders", "2024-03-02", RunCsv(1002), true, &v).error_code(),
              grpc::StatusCode::ALREADY_EXISTS);
  }
  // Three runs are too few to learn from: FAILED_PRECONDITION saying so.
  {
    pb::ValidateResponse out;
    const grpc::Status s = Validate("orders", "", RunCsv(1004), false, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
    EXPECT_NE(s.error_message().find("no learned program"), std::string::npos) << s.error_message();
  }
  // No pipeline name: INVALID_ARGUMENT.
  {
    pb::AddRunsResponse out;
    EXPECT_EQ(AddDays("", 1, 1, &out).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  // The server still serves both services, and counted the calls by method and code.
  grpc::ClientContext ctx;
  pb::ModelInfo info;
  const grpc::Status s = server_->stub()->GetModelInfo(&ctx, pb::GetModelInfoRequest(), &info);
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_GT(info.num_layers(), 0);
  EXPECT_EQ(RunsOf("orders"), 3);
  const std::string metrics = server_->Metrics();
  EXPECT_NE(metrics.find("method=\"AddRuns\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("code=\"ALREADY_EXISTS\""), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("method=\"ListPipelines\""), std::string::npos) << metrics;
}

// Runs that carry their span get rows per span watched over the wire too; a span that is not a
// length is INVALID_ARGUMENT naming the field.
TEST_F(DataQualityServiceTest, RunSpansAddRowsPerSpanAndBadSpansAreRefused) {
  pb::AddRunsRequest req;
  req.set_pipeline("spans");
  for (int day = 1; day <= 10; ++day) {
    pb::Run* run = req.add_runs();
    run->set_key(DayKey(day));
    run->set_csv(RunCsv(3000 + day));
    run->set_span(1.0);
  }
  {
    grpc::ClientContext ctx;
    pb::AddRunsResponse out;
    const grpc::Status s = dq_->AddRuns(&ctx, req, &out);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  auto validate = [](double span, pb::ValidateResponse* out) {
    pb::ValidateRequest v;
    v.set_pipeline("spans");
    v.mutable_run()->set_csv(RunCsv(3011));
    v.mutable_run()->set_span(span);
    grpc::ClientContext ctx;
    return dq_->Validate(&ctx, v, out);
  };
  pb::ValidateResponse clean;
  ASSERT_TRUE(validate(1.0, &clean).ok());
  EXPECT_TRUE(clean.passed());
  // The same rows said to cover two days.
  pb::ValidateResponse halved;
  ASSERT_TRUE(validate(2.0, &halved).ok());
  EXPECT_FALSE(halved.passed());
  bool per_span = false;
  for (const auto& c : halved.columns()) {
    for (const auto& v : c.violations()) per_span |= v.metric().find("rows_per_span") == 4;
  }
  EXPECT_TRUE(per_span) << halved.DebugString();
  for (double bad : {-1.0, std::numeric_limits<double>::infinity()}) {
    pb::ValidateResponse out;
    const grpc::Status s = validate(bad, &out);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_NE(s.error_message().find("span"), std::string::npos) << s.error_message();
  }
  EXPECT_EQ(RunsOf("spans"), 10);
}

// A Validate verdict is counted under the caller's pipeline, as the server's own telemetry
// windows are, so a dashboard sees users' pipelines too.
TEST_F(DataQualityServiceTest, ValidateCountsItsVerdictAndViolationsInTheMetrics) {
  pb::AddRunsResponse added;
  ASSERT_TRUE(AddDays("counted", 1, 12, &added).ok());
  pb::ValidateResponse clean, broken;
  ASSERT_TRUE(Validate("counted", "2024-03-13", RunCsv(1013), false, &clean).ok());
  ASSERT_TRUE(Validate("counted", "2024-03-14", RunCsv(1014, 1000.0), false, &broken).ok());
  ASSERT_TRUE(clean.passed());
  ASSERT_FALSE(broken.passed());
  int violations = 0;
  for (const auto& c : broken.columns()) violations += c.violations_size();
  ASSERT_GT(violations, 0);

  const std::string text = server_->Metrics();
  EXPECT_EQ(
      SumSamples(text, "vlcache_dq_checks_total", {"pipeline=\"counted\"", "verdict=\"pass\""}), 1)
      << text;
  EXPECT_EQ(
      SumSamples(text, "vlcache_dq_checks_total", {"pipeline=\"counted\"", "verdict=\"fail\""}), 1)
      << text;
  EXPECT_EQ(SumSamples(text, "vlcache_dq_violations_total", {"pipeline=\"counted\""}), violations)
      << text;
  EXPECT_GT(SumSamples(text, "vlcache_dq_violations_total",
                       {"pipeline=\"counted\"", "column=\"amount\""}),
            0)
      << text;
}

// Pipeline names are the callers' to choose: a flood of new ones must not grow the metric
// families without bound (32 pipelines by name, the rest under _other; docs/DEPLOY.md).
TEST_F(DataQualityServiceTest, AFloodOfPipelineNamesKeepsTheMetricFamiliesBounded) {
  constexpr int kPipelines = 40;
  for (int p = 0; p < kPipelines; ++p) {
    const std::string name = "flood" + std::to_string(p);
    pb::AddRunsResponse added;
    ASSERT_TRUE(AddDays(name, 1, 8, &added).ok()) << name;
    pb::ValidateResponse broken;
    ASSERT_TRUE(Validate(name, "2024-03-09", RunCsv(1009, 1000.0), false, &broken).ok()) << name;
    ASSERT_FALSE(broken.passed()) << name;
  }
  const std::string text = server_->Metrics();
  std::set<std::string> check_pipelines, violation_pipelines;
  std::istringstream in(text);
  auto label = [](const std::string& line, const std::string& key) {
    const size_t at = line.find(key + "=\"");
    if (at == std::string::npos) return std::string();
    const size_t from = at + key.size() + 2;
    return line.substr(from, line.find('"', from) - from);
  };
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("vlcache_dq_checks_total{", 0) == 0) {
      check_pipelines.insert(label(line, "pipeline"));
    }
    if (line.rfind("vlcache_dq_violations_total{", 0) == 0) {
      violation_pipelines.insert(label(line, "pipeline"));
    }
  }
  EXPECT_LE(check_pipelines.size(), 33u) << text;  // 32 by name and _other
  EXPECT_LE(violation_pipelines.size(), 33u) << text;
  EXPECT_EQ(check_pipelines.count("_other"), 1u) << text;
  // Every failed check was counted, named or not.
  EXPECT_GE(SumSamples(text, "vlcache_dq_checks_total", {"verdict=\"fail\""}), kPipelines) << text;
}

// Without --dq-db the service is not served; with a token, its calls need it like Inference's.
TEST_F(DataQualityServiceTest, IsOffWithoutDqDbAndNeedsTheBearerTokenWhenAuthIsOn) {
  {
    ServerProcess plain;
    ASSERT_TRUE(plain.Start(*dir_ + "/model"));
    auto stub = pb::DataQuality::NewStub(plain.channel());
    grpc::ClientContext ctx;
    pb::ListPipelinesResponse out;
    EXPECT_EQ(stub->ListPipelines(&ctx, pb::ListPipelinesRequest(), &out).error_code(),
              grpc::StatusCode::UNIMPLEMENTED);
  }
  ::setenv("VLC_AUTH_TOKEN", "s3cret", 1);
  ServerProcess secured;
  const auto started = secured.Start(*dir_ + "/model", {"--dq-db", *dir_ + "/secured.db"});
  ::unsetenv("VLC_AUTH_TOKEN");
  ASSERT_TRUE(started);
  auto stub = pb::DataQuality::NewStub(secured.channel());
  {
    grpc::ClientContext ctx;
    pb::ListPipelinesResponse out;
    EXPECT_EQ(stub->ListPipelines(&ctx, pb::ListPipelinesRequest(), &out).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer s3cret");
    pb::ListPipelinesResponse out;
    const grpc::Status s = stub->ListPipelines(&ctx, pb::ListPipelinesRequest(), &out);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(out.pipelines_size(), 0);
  }
}

}  // namespace
}  // namespace vlc::server
