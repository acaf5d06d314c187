// The anchors AVH is compared with (dq/baselines.h) on hand-made histories, and the evaluation
// harness (dq/evaluate.h) on a pipeline small enough to count by hand.
#include "dq/evaluate.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "dq/baselines.h"

namespace vlc::dq {
namespace {

// 50 fixed values moved by `offset`: Min, Max, Mean, Median and Sum all move with the offset,
// Count and the ratios stay put, so the history of the mean is exactly the offsets' history.
Column Shifted(double offset) {
  Column::NumericValues v;
  for (int i = 0; i < 50; ++i) v.push_back(10.0 + 0.37 * i + offset);
  return Column::Numeric("x", v);
}

// Offsets +1, -1, +1, ...: mean 0, sample sd sqrt(20/19) over 20 runs.
std::vector<Column> AlternatingHistory(int runs) {
  std::vector<Column> h;
  for (int i = 0; i < runs; ++i) h.push_back(Shifted(i % 2 == 0 ? 1.0 : -1.0));
  return h;
}

Column Categories(int a, int b) {
  Column::StringValues v;
  for (int i = 0; i < a; ++i) v.push_back("a");
  for (int i = 0; i < b; ++i) v.push_back("b");
  return Column::Categorical("c", v);
}

BaselineVerdict Check(BaselineKind kind, const std::vector<Column>& history, const Column& run) {
  absl::StatusOr<BaselineValidator> v = BaselineValidator::Learn(kind, history);
  EXPECT_TRUE(v.ok()) << v.status();
  absl::StatusOr<BaselineVerdict> verdict = v->Check(history.back(), run);
  EXPECT_TRUE(verdict.ok()) << verdict.status();
  return *verdict;
}

TEST(DqBaselines, BatchNormalFlagsAMeanTenSdAwayNotOneSdAway) {
  const std::vector<Column> history = AlternatingHistory(20);
  const double sd = std::sqrt(20.0 / 19.0);
  const BaselineVerdict one = Check(BaselineKind::kBatchNormal, history, Shifted(0.99 * sd));
  EXPECT_FALSE(one.flagged()) << one.score;
  EXPECT_NEAR(one.score, 0.99 / 3.0, 1e-6);
  const BaselineVerdict ten = Check(BaselineKind::kBatchNormal, history, Shifted(10 * sd));
  EXPECT_TRUE(ten.flagged());
  EXPECT_NEAR(ten.score, 10.0 / 3.0, 1e-6);
  bool names_mean = false;
  for (const std::string& r : ten.reasons) names_mean |= r.find("num_mean") != std::string::npos;
  EXPECT_TRUE(names_mean);
}

TEST(DqBaselines, OnlineNormalLeavesAnAnomalousHistoryRunOutBatchNormalDoesNot) {
  std::vector<Column> history = AlternatingHistory(19);
  history.push_back(Shifted(100.0));  // one bad run late in the history
  // The outlier inflates the batch sd to ~22, so a shift of 8 passes; the online strategy never
  // let the outlier into its statistics (sd ~1), so it flags the shift.
  EXPECT_FALSE(Check(BaselineKind::kBatchNormal, history, Shifted(8.0)).flagged());
  EXPECT_TRUE(Check(BaselineKind::kOnlineNormal, history, Shifted(8.0)).flagged());
  EXPECT_FALSE(Check(BaselineKind::kOnlineNormal, history, Shifted(0.5)).flagged());
}

TEST(DqBaselines, KsFlagsAShiftedSampleNotAnInterleavedOne) {
  Column::NumericValues prev, same, shifted;
  for (int i = 0; i < 200; ++i) {
    prev.push_back(i / 200.0);
    same.push_back((i + 0.5) / 200.0);
    shifted.push_back(i / 200.0 + 0.3);
  }
  const std::vector<Column> history = {Column::Numeric("x", prev), Column::Numeric("x", prev)};
  EXPECT_FALSE(Check(BaselineKind::kTwoSampleTest, history, Column::Numeric("x", same)).flagged());
  const BaselineVerdict v =
      Check(BaselineKind::kTwoSampleTest, history, Column::Numeric("x", shifted));
  EXPECT_TRUE(v.flagged());
  ASSERT_EQ(v.reasons.size(), 1u);
  EXPECT_NE(v.reasons[0].find("num_ks_p_value"), std::string::npos);
}

TEST(DqBaselines, LInfFlagsAChangedCategoricalDistribution) {
  const std::vector<Column> history = {Categories(50, 50), Categories(50, 50)};
  EXPECT_FALSE(Check(BaselineKind::kTfdvDrift, history, Categories(50, 50)).flagged());
  EXPECT_FALSE(Check(BaselineKind::kTfdvDrift, history, Categories(25, 25)).flagged());
  const BaselineVerdict v = Check(BaselineKind::kTfdvDrift, history, Categories(60, 40));
  EXPECT_TRUE(v.flagged());
  EXPECT_NEAR(v.score, 0.1 / 0.01, 1e-9);  // L_inf = 0.1 against a threshold of 0.01
}

TEST(DqBaselines, RelativeRateOfChangeFlagsAHalvedLoadNotAMildOne) {
  const std::vector<Column> history = {Categories(50, 50), Categories(50, 50)};
  EXPECT_TRUE(Check(BaselineKind::kRelativeRateOfChange, history, Categories(20, 20)).flagged());
  EXPECT_FALSE(Check(BaselineKind::kRelativeRateOfChange, history, Categories(30, 30)).flagged());
  EXPECT_TRUE(Check(BaselineKind::kRelativeRateOfChange, history, Categories(101, 100)).flagged());
}

TEST(DqBaselines, AllNullRunIsFlaggedByEveryBaseline) {
  const std::vector<Column> history = AlternatingHistory(10);
  const Column nulls = Column::Numeric("x", Column::NumericValues(50));
  for (BaselineKind kind : AllBaselines()) {
    EXPECT_TRUE(Check(kind, history, nulls).flagged()) << BaselineName(kind);
  }
}

TEST(DqBaselines, RefusesAnEmptyHistoryAndMixedTypes) {
  EXPECT_EQ(BaselineValidator::Learn(BaselineKind::kBatchNormal, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BaselineValidator::Learn(BaselineKind::kBatchNormal, {Shifted(0), Categories(1, 1)})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- The harness.

TEST(DqEvaluate, CountsGiveTheTextbookFigures) {
  EvalCounts c;
  c.tp = 8;
  c.fn = 2;
  c.fp = 1;
  c.tn = 9;
  EXPECT_DOUBLE_EQ(c.Precision(), 8.0 / 9.0);
  EXPECT_DOUBLE_EQ(c.Recall(), 0.8);
  EXPECT_DOUBLE_EQ(c.Fpr(), 0.1);
  EXPECT_DOUBLE_EQ(c.F1(), 2 * (8.0 / 9.0) * 0.8 / (8.0 / 9.0 + 0.8));
  EXPECT_DOUBLE_EQ(c.BalancedPrecision(), 0.8 / 0.9);
}

TEST(DqEvaluate, MatchThresholdIsTheLoosestWithinTheTargetFpr) {
  const std::vector<double> clean = {3.0, 0.0, 2.0, 0.5};
  EXPECT_EQ(MatchThreshold(clean, 0.25), 2.0);  // only 3.0 exceeds it: FPR 1/4
  EXPECT_EQ(MatchThreshold(clean, 0.0), 3.0);   // nothing exceeds it
  EXPECT_EQ(MatchThreshold(clean, 0.5), 0.5);
  EXPECT_EQ(MatchThreshold(clean, 1.0), -std::numeric_limits<double>::infinity());
}

// Twelve runs of one numeric column: ten identical history runs, then a test run identical to
// them and one with a single value changed. AVH learns only invariants (every metric is constant),
// so by hand: the identical run passes (TN), the changed one fails (FP), and each of the 24
// variants (27 less the 3 schema changes: no other column) changes some metric of each test run
// (TP), 48 in all.
TEST(DqEvaluate, HandCountablePipeline) {
  Column::NumericValues base;
  for (int i = 1; i <= 40; ++i) base.push_back(i);
  Column::NumericValues changed = base;
  changed.back() = 41.0;
  std::vector<Table> runs;
  for (int i = 0; i < 11; ++i) runs.push_back(*Table::Make({Column::Numeric("x", base)}));
  runs.push_back(*Table::Make({Column::Numeric("x", changed)}));

  EvalOptions options;
  options.history_runs = 10;
  absl::StatusOr<EvalResult> r = EvaluatePipeline(runs, options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->test_runs, 2u);
  ASSERT_EQ(r->methods.size(), 1 + AllBaselines().size());
  const MethodResult& avh = r->methods[0];
  EXPECT_EQ(avh.name, "avh");
  EXPECT_EQ(avh.counts.tp, 48u);
  EXPECT_EQ(avh.counts.fn, 0u);
  EXPECT_EQ(avh.counts.fp, 1u);
  EXPECT_EQ(avh.counts.tn, 1u);
  EXPECT_DOUBLE_EQ(avh.counts.Precision(), 48.0 / 49.0);
  EXPECT_DOUBLE_EQ(avh.counts.Recall(), 1.0);
  EXPECT_DOUBLE_EQ(avh.counts.Fpr(), 0.5);
  EXPECT_EQ(avh.clean_runs, 2u);
  EXPECT_EQ(avh.flagged_clean_runs, 1u);
  EXPECT_EQ(avh.errors, 0u);
  for (const MethodResult& m : r->methods) {
    EXPECT_EQ(m.counts.tp + m.counts.fn, 48u) << m.name;
    EXPECT_EQ(m.counts.fp + m.counts.tn, 2u) << m.name;
    if (m.name != "avh") {
      EXPECT_TRUE(m.has_matched);
      EXPECT_LE(m.matched.Fpr(), avh.counts.Fpr()) << m.name;
    }
  }
  // batch_normal's history has sd 0 too: the changed run's Max and Sum break it.
  EXPECT_EQ(r->methods[1].name, "batch_normal");
  EXPECT_EQ(r->methods[1].counts.fp, 1u);

  // Realistic: per test run one x1000, one all-null, one partial load, one duplicated load (one
  // column: no swap, no lower-casing); AVH's invariants catch all of them.
  size_t avh_cases = 0, avh_detected = 0;
  for (const RealisticResult& x : r->realistic) {
    if (x.method != "avh") continue;
    EXPECT_EQ(x.cases, 2u) << x.issue;
    avh_cases += x.cases;
    avh_detected += x.detected;
  }
  EXPECT_EQ(avh_cases, 8u);
  EXPECT_EQ(avh_detected, 8u);

  const nlohmann::json j = ToJson(*r);
  ASSERT_TRUE(j["methods"].is_array());
  EXPECT_EQ(j["methods"][0]["name"], "avh");
  EXPECT_EQ(j["methods"][0]["counts"]["tp"], 48);
  EXPECT_DOUBLE_EQ(j["methods"][0]["fpr"].get<double>(), 0.5);
  EXPECT_EQ(j["realistic"].size(), 4 * r->methods.size());
  EXPECT_NE(FormatEvalTable(*r).find("batch_normal"), std::string::npos);
}

// A pipeline whose run-to-run swing grows once and stays so (a new normal: +-1 around the level,
// then +-500): learned once from the calm runs, every later clean run is flagged; re-learned
// before each run from the 8 runs before it, only the runs whose window reaches back into the
// calm ones can be.
TEST(DqEvaluate, ReLearningFollowsASwingThatGrewOnce) {
  std::vector<Table> runs;
  for (int i = 0; i < 40; ++i) {
    const double swing = i < 12 ? 1.0 : 500.0;
    runs.push_back(*Table::Make({Shifted(i % 2 == 0 ? swing : -swing)}));
  }
  EvalOptions once;
  once.history_runs = 10;
  absl::StatusOr<EvalResult> a = EvaluatePipeline(runs, once);
  ASSERT_TRUE(a.ok()) << a.status();
  EvalOptions every = once;
  every.relearn_every_run = true;
  every.relearn_window = 8;
  absl::StatusOr<EvalResult> b = EvaluatePipeline(runs, every);
  ASSERT_TRUE(b.ok()) << b.status();
  ASSERT_EQ(a->methods[0].clean_runs, 30u);
  ASSERT_EQ(b->methods[0].clean_runs, 30u);
  EXPECT_GE(a->methods[0].flagged_clean_runs, 28u);  // runs 12..39 swing 500 times wider
  // Test runs 12..19 re-learn from windows that reach back before the step.
  EXPECT_LE(b->methods[0].flagged_clean_runs, 9u);
  // A window too short for AVH is refused, naming it.
  every.relearn_window = 4;
  absl::StatusOr<EvalResult> c = EvaluatePipeline(runs, every);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("re-learning window"), std::string::npos);
}

TEST(DqEvaluate, RefusesAHistoryThatLeavesNothingToTest) {
  std::vector<Table> runs;
  for (int i = 0; i < 10; ++i) runs.push_back(*Table::Make({Shifted(i % 2)}));
  EvalOptions options;
  options.history_runs = 10;
  EXPECT_EQ(EvaluatePipeline(runs, options).status().code(), absl::StatusCode::kInvalidArgument);
  options.history_runs = 4;  // below AVH's minimum
  EXPECT_EQ(EvaluatePipeline(runs, options).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vlc::dq
