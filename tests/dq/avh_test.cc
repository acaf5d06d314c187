// Learning AVH programs and validating runs with them (dq/avh.h): the selection's budget and
// guarantee, programs learned from synthetic and real histories, and what a violation says.
#include "dq/avh.h"

#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "dq/io.h"
#include "dq/issues.h"

namespace vlc::dq {
namespace {

// N(mean, sd) by Box-Muller on the issues' generator, so the test data is the same everywhere.
class Normal {
 public:
  explicit Normal(uint64_t seed) : rng_(seed) {}
  double Next(double mean, double sd) {
    const double u1 = 1.0 - rng_.Uniform();  // (0, 1]
    const double u2 = rng_.Uniform();
    return mean + sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  SplitMix64 rng_;
};

Column NormalRun(Normal& gen, size_t rows, const std::string& name = "delay") {
  Column::NumericValues v;
  for (size_t i = 0; i < rows; ++i) v.push_back(gen.Next(100.0, 10.0));
  return Column::Numeric(name, v);
}

const IssueSpec& Spec(ColumnType type, const std::string& name) {
  for (const IssueSpec& s : IssueSpecsFor(type)) {
    if (s.name == name) return s;
  }
  ADD_FAILURE() << "no issue " << name;
  static const IssueSpec none;
  return none;
}

// ---- Selection.

constexpr double kGuarantee = (1.0 - 1.0 / M_E) / 2.0;

struct Instance {
  std::vector<CoverageCandidate> candidates;
  size_t num_issues = 12;
  double delta = 0.0;
};

// Groups of 2 nested candidates, as one metric's k grid gives: the smaller k covers a superset
// and costs more.
Instance RandomInstance(SplitMix64& rng) {
  Instance in;
  const int groups = 3 + static_cast<int>(rng.Below(2));  // 6 or 8 candidates, + 1 free
  for (int g = 0; g < groups; ++g) {
    CoverageCandidate wide, narrow;
    wide.group = narrow.group = g;
    for (size_t j = 0; j < in.num_issues; ++j) {
      if (rng.Uniform() < 0.3) {
        narrow.covers.push_back(j);
        wide.covers.push_back(j);
      } else if (rng.Uniform() < 0.25) {
        wide.covers.push_back(j);
      }
    }
    narrow.fpr = 0.02 + 0.3 * rng.Uniform();
    wide.fpr = narrow.fpr + 0.02 + 0.3 * rng.Uniform();
    in.candidates.push_back(wide);
    in.candidates.push_back(narrow);
  }
  // Sometimes an invariant: free, its own group.
  if (rng.Below(2) == 0) {
    CoverageCandidate invariant;
    invariant.group = groups;
    for (size_t j = 0; j < in.num_issues; ++j) {
      if (rng.Uniform() < 0.2) invariant.covers.push_back(j);
    }
    in.candidates.push_back(invariant);
  }
  in.delta = 0.1 + 0.6 * rng.Uniform();
  return in;
}

size_t Covered(const Instance& in, const std::vector<size_t>& chosen) {
  std::set<size_t> hit;
  for (size_t i : chosen)
    hit.insert(in.candidates[i].covers.begin(), in.candidates[i].covers.end());
  return hit.size();
}

size_t ExhaustiveOptimum(const Instance& in) {
  const size_t n = in.candidates.size();
  size_t best = 0;
  for (uint32_t mask = 0; mask < (1u << n); ++mask) {
    std::vector<size_t> chosen;
    std::set<int> groups;
    double fpr = 0;
    bool ok = true;
    for (size_t i = 0; i < n; ++i) {
      if (!(mask >> i & 1)) continue;
      ok = ok && groups.insert(in.candidates[i].group).second;
      fpr += in.candidates[i].fpr;
      chosen.push_back(i);
    }
    if (ok && fpr <= in.delta) best = std::max(best, Covered(in, chosen));
  }
  return best;
}

TEST(DqAvhSelection, RespectsBudgetOneKPerMetricAndTheStatedGuarantee) {
  SplitMix64 rng(2024);
  double worst_ratio = 1.0;
  for (int trial = 0; trial < 400; ++trial) {
    const Instance in = RandomInstance(rng);
    const CoverageSelection s = SelectBudgetedMaxCoverage(in.candidates, in.num_issues, in.delta);
    double fpr = 0;
    std::set<int> groups;
    for (size_t i : s.chosen) {
      fpr += in.candidates[i].fpr;
      EXPECT_TRUE(groups.insert(in.candidates[i].group).second) << "two k of one metric";
    }
    EXPECT_LE(fpr, in.delta);
    EXPECT_DOUBLE_EQ(fpr, s.fpr);
    EXPECT_EQ(Covered(in, s.chosen), s.covered);
    const size_t opt = ExhaustiveOptimum(in);
    EXPECT_GE(static_cast<double>(s.covered), kGuarantee * static_cast<double>(opt))
        << "trial " << trial;
    if (opt > 0) worst_ratio = std::min(worst_ratio, static_cast<double>(s.covered) / opt);
  }
  std::cout << "worst covered / optimum over 400 instances: " << worst_ratio << "\n";
}

TEST(DqAvhSelection, BestSingleBeatsAGreedyThatSpendsTheBudgetOnCheapScraps) {
  // The greedy's first pick (ratio 1 / 0.01) leaves no room for the candidate covering 10.
  std::vector<CoverageCandidate> c(2);
  c[0] = {0, 0.01, {0}};
  c[1] = {1, 1.0, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}};
  const CoverageSelection s = SelectBudgetedMaxCoverage(c, 11, 1.0);
  EXPECT_TRUE(s.single_won);
  EXPECT_EQ(s.covered, 10u);
  EXPECT_EQ(s.chosen, std::vector<size_t>({1}));
}

TEST(DqAvhSelection, TakesEveryZeroCostCandidate) {
  std::vector<CoverageCandidate> c(3);
  c[0] = {0, 0.0, {}};
  c[1] = {1, 0.0, {0}};
  c[2] = {2, 0.5, {1}};
  const CoverageSelection s = SelectBudgetedMaxCoverage(c, 2, 0.1);
  EXPECT_EQ(s.chosen, std::vector<size_t>({0, 1}));
  EXPECT_EQ(s.fpr, 0.0);
}

// ---- Learning and validating.

void PrintProgram(const ColumnProgram& p) {
  std::cout << p.column << ": covers " << p.issues_covered << "/" << p.issues_total
            << " issues, expected FPR " << p.ExpectedFpr() << "\n";
  for (const Constraint& c : p.constraints) {
    std::cout << "  " << MetricName(c.metric) << " " << c.transform.ToString() << " "
              << BoundKindName(c.bound) << " k=" << c.k << " [" << c.lo << ", " << c.hi
              << "] fpr=" << c.fpr << (c.invariant ? " invariant" : "") << " covers "
              << c.covered_issues << "\n";
  }
  for (const std::string& n : p.notes) std::cout << "  note: " << n << "\n";
}

TEST(DqAvh, StationaryHistoryPassesCleanRunsAndFlagsUnitChangeAndNulls) {
  Normal gen(7);
  std::vector<Column> runs;
  for (int i = 0; i < 60; ++i) runs.push_back(NormalRun(gen, 200));
  const std::vector<Column> history(runs.begin(), runs.begin() + 30);
  AvhOptions options;
  options.delta = 0.01;
  absl::StatusOr<ColumnProgram> program = LearnColumnProgram(history, {}, options);
  ASSERT_TRUE(program.ok()) << program.status();
  EXPECT_LE(program->ExpectedFpr(), 0.01);
  EXPECT_EQ(program->history_runs, 30u);
  std::set<Metric> metrics;
  for (const Constraint& c : program->constraints) {
    EXPECT_TRUE(metrics.insert(c.metric).second) << MetricName(c.metric) << " twice";
  }
  EXPECT_GT(program->issues_covered, program->issues_total / 2);
  PrintProgram(*program);

  int passed = 0;
  for (int t = 30; t < 60; ++t) {
    const std::vector<Column> tail(runs.begin(), runs.begin() + t);
    absl::StatusOr<ColumnReport> report = ValidateColumn(*program, tail, runs[t]);
    ASSERT_TRUE(report.ok()) << report.status();
    passed += report->passed;
    for (const Violation& v : report->violations)
      std::cout << "clean run " << t << ": " << v.message << "\n";
  }
  EXPECT_GE(passed, 27);

  const std::vector<Column> tail(runs.begin(), runs.begin() + 30);
  for (const std::string issue :
       {"unit_change x100 p=1", "unit_change x100 p=0.1", "extra_nulls p=0.5"}) {
    absl::StatusOr<Column> broken = ApplyIssue(Spec(ColumnType::kNumeric, issue), runs[30], {}, 3);
    ASSERT_TRUE(broken.ok());
    absl::StatusOr<ColumnReport> report = ValidateColumn(*program, tail, *broken);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_FALSE(report->passed) << issue;
    if (!report->violations.empty()) {
      const std::string& m = report->violations.front().message;
      EXPECT_NE(m.find("column 'delay'"), std::string::npos) << m;
      EXPECT_NE(m.find("30 runs"), std::string::npos) << m;
    }
  }
}

TEST(DqAvh, GrowingRowCountLearnsADifferencedCount) {
  Normal gen(11);
  std::vector<Column> runs;
  for (int i = 0; i < 31; ++i) runs.push_back(NormalRun(gen, 100 + 10 * i));
  const std::vector<Column> history(runs.begin(), runs.begin() + 30);
  absl::StatusOr<ColumnProgram> program = LearnColumnProgram(history, {});
  ASSERT_TRUE(program.ok()) << program.status();
  const Constraint* count = nullptr;
  for (const Constraint& c : program->constraints) {
    if (c.metric == Metric::kNumCount) count = &c;
  }
  PrintProgram(*program);
  ASSERT_NE(count, nullptr);
  EXPECT_EQ(count->transform.kind, Transform::Kind::kDiff);
  EXPECT_TRUE(count->invariant);  // +10 rows every run
  EXPECT_NEAR(count->mean, 10.0, 1e-9);
  EXPECT_EQ(HistoryTailNeeded(*program) >= 1u, true);

  // The next run grows by 10 as expected: Count passes; one that stalls fails on Count.
  absl::StatusOr<ColumnReport> ok = ValidateColumn(*program, history, runs[30]);
  ASSERT_TRUE(ok.ok()) << ok.status();
  for (const Violation& v : ok->violations) EXPECT_NE(v.metric, Metric::kNumCount) << v.message;
  absl::StatusOr<ColumnReport> stalled = ValidateColumn(*program, history, runs[29]);
  ASSERT_TRUE(stalled.ok()) << stalled.status();
  bool count_flagged = false;
  for (const Violation& v : stalled->violations) count_flagged |= v.metric == Metric::kNumCount;
  EXPECT_TRUE(count_flagged);
}

// Rows per run as a monthly table has them (two stations, 28 to 31 days): a Count history that is
// stationary but far from normal. The Normal bound would claim a 0.27% FPR at k = 3 and flag
// every February; the Shapiro-Wilk check gives Count Chebyshev's bound instead.
TEST(DqAvh, ANonNormalCountHistoryGetsChebyshevNotNormal) {
  const int month_rows[] = {62, 58, 62, 60, 62, 60, 62, 62, 60, 62, 60, 62};
  Normal gen(21);
  std::vector<Column> history;
  for (int i = 0; i < 24; ++i) history.push_back(NormalRun(gen, month_rows[i % 12]));
  const Column february = NormalRun(gen, 56);  // a leap year's February has 58, this one 56

  auto count_constraint = [](const ColumnProgram& p) -> const Constraint* {
    for (const Constraint& c : p.constraints) {
      if (c.metric == Metric::kNumCount) return &c;
    }
    return nullptr;
  };
  auto has_note = [](const ColumnProgram& p, const std::string& text) {
    for (const std::string& n : p.notes) {
      if (n.find(text) != std::string::npos) return true;
    }
    return false;
  };

  AvhOptions paper_rule;
  paper_rule.normality_alpha = 0;
  absl::StatusOr<ColumnProgram> normal = LearnColumnProgram(history, {}, paper_rule);
  ASSERT_TRUE(normal.ok()) << normal.status();
  PrintProgram(*normal);
  const Constraint* c0 = count_constraint(*normal);
  ASSERT_NE(c0, nullptr);
  EXPECT_EQ(c0->bound, BoundKind::kNormal);
  EXPECT_FALSE(c0->Accepts(56.0)) << "the Normal bound's k rejects a 56-row month";
  EXPECT_FALSE(has_note(*normal, "num_count: Chebyshev bound"));

  AvhOptions chebyshev;  // normality_alpha 0.05 by default
  chebyshev.unimodal = false;
  chebyshev.all_transforms = false;  // Count under its first transform only
  absl::StatusOr<ColumnProgram> checked = LearnColumnProgram(history, {}, chebyshev);
  ASSERT_TRUE(checked.ok()) << checked.status();
  PrintProgram(*checked);
  EXPECT_TRUE(has_note(*checked, "num_count: Chebyshev bound, not Normal: Shapiro-Wilk p = "));
  if (const Constraint* c = count_constraint(*checked)) {
    EXPECT_EQ(c->bound, BoundKind::kChebyshev);
    EXPECT_LE(c->fpr, checked->delta);
  }
  absl::StatusOr<ColumnReport> report = ValidateColumn(*checked, history, february);
  ASSERT_TRUE(report.ok()) << report.status();
  for (const Violation& v : report->violations) EXPECT_NE(v.metric, Metric::kNumCount) << v.message;

  AvhOptions bad;
  bad.normality_alpha = 1.0;
  EXPECT_EQ(LearnColumnProgram(history, {}, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Rows per run with a weekly pattern (a busy Tuesday, a quiet Sunday). With the options beyond
// the paper the program weighs issues injected into four runs, keeps candidates under several
// transforms of a metric, and gives no metric Chebyshev's or Cantelli's bound; it stays within
// its budget, passes the next clean run and flags one with a tenth of its values in other units.
TEST(DqAvh, OptionsBeyondThePaperStayWithinTheBudget) {
  const int weekday_rows[] = {200, 240, 260, 250, 230, 120, 100};
  Normal gen(31);
  std::vector<Column> runs;
  for (int i = 0; i < 43; ++i) {
    const int rows = weekday_rows[i % 7] + static_cast<int>(std::lround(gen.Next(0.0, 2.0)));
    runs.push_back(NormalRun(gen, static_cast<size_t>(rows)));
  }
  const std::vector<Column> history(runs.begin(), runs.begin() + 42);
  auto passes = [&](const ColumnProgram& p, const Column& run) {
    absl::StatusOr<ColumnReport> report = ValidateColumn(p, history, run);
    EXPECT_TRUE(report.ok()) << report.status();
    return report.ok() && report->passed;
  };

  absl::StatusOr<ColumnProgram> paper = LearnColumnProgram(history, {}, PaperAvhOptions());
  ASSERT_TRUE(paper.ok()) << paper.status();
  AvhOptions beyond;  // the defaults, spelled out
  beyond.all_transforms = true;
  beyond.issue_runs = 4;
  beyond.unimodal = true;
  beyond.predictive = true;
  absl::StatusOr<ColumnProgram> program = LearnColumnProgram(history, {}, beyond);
  ASSERT_TRUE(program.ok()) << program.status();
  PrintProgram(*program);
  EXPECT_LE(program->ExpectedFpr(), beyond.delta);
  EXPECT_EQ(program->issues_total, 4 * paper->issues_total);
  std::map<Metric, std::set<std::string>> transforms;
  for (const Constraint& c : program->constraints) {
    EXPECT_TRUE(transforms[c.metric].insert(c.transform.ToString()).second)
        << MetricName(c.metric) << " twice under " << c.transform.ToString();
    EXPECT_NE(c.bound, BoundKind::kCantelli) << MetricName(c.metric);
    EXPECT_NE(c.bound, BoundKind::kChebyshev) << MetricName(c.metric);
  }
  size_t most = 0;
  for (const auto& [metric, names] : transforms) most = std::max(most, names.size());
  EXPECT_GE(most, 2u);  // some metric kept under two transforms
  EXPECT_TRUE(passes(*program, runs[42]));
  absl::StatusOr<Column> units =
      ApplyIssue(Spec(ColumnType::kNumeric, "unit_change x10 p=0.1"), runs[42], {}, 3);
  ASSERT_TRUE(units.ok());
  EXPECT_FALSE(passes(*program, *units));

  // The program, unimodal bounds included, survives its JSON.
  absl::StatusOr<ColumnProgram> back =
      ColumnProgramFromJson(nlohmann::json::parse(ToJson(*program).dump()));
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->constraints.size(), program->constraints.size());
  for (size_t i = 0; i < back->constraints.size(); ++i) {
    EXPECT_EQ(back->constraints[i].bound, program->constraints[i].bound);
    EXPECT_EQ(back->constraints[i].transform, program->constraints[i].transform);
    EXPECT_EQ(back->constraints[i].fpr, program->constraints[i].fpr);
  }

  AvhOptions bad;
  bad.issue_runs = 0;
  EXPECT_EQ(LearnColumnProgram(history, {}, bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DqAvh, RefusesShortHistoriesAndShortTails) {
  Normal gen(3);
  std::vector<Column> runs;
  for (int i = 0; i < 5; ++i) runs.push_back(NormalRun(gen, 50));
  EXPECT_EQ(LearnColumnProgram(runs, {}).status().code(), absl::StatusCode::kInvalidArgument);
  for (int i = 0; i < 10; ++i) runs.push_back(NormalRun(gen, 50));
  absl::StatusOr<ColumnProgram> program = LearnColumnProgram(runs, {});
  ASSERT_TRUE(program.ok()) << program.status();
  ASSERT_GE(HistoryTailNeeded(*program), 1u);  // the pairwise invariants need the previous run
  EXPECT_EQ(ValidateColumn(*program, {}, runs.back()).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A categorical run where the program expects numbers fails with a problem, not an error.
  absl::StatusOr<ColumnReport> typed =
      ValidateColumn(*program, runs, Column::Categorical("delay", {"a"}));
  ASSERT_TRUE(typed.ok());
  EXPECT_FALSE(typed->passed);
  EXPECT_NE(typed->problem.find("categorical"), std::string::npos);
}

TEST(DqAvh, ProgramSurvivesAJsonRoundTrip) {
  Normal gen(5);
  std::vector<Column> runs;
  for (int i = 0; i < 20; ++i) runs.push_back(NormalRun(gen, 100));
  absl::StatusOr<ColumnProgram> program = LearnColumnProgram(runs, {});
  ASSERT_TRUE(program.ok()) << program.status();
  const std::string text = ToJson(*program).dump();
  absl::StatusOr<ColumnProgram> back = ColumnProgramFromJson(nlohmann::json::parse(text));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->column, program->column);
  EXPECT_EQ(back->type, program->type);
  EXPECT_EQ(back->history_runs, program->history_runs);
  EXPECT_EQ(back->issues_covered, program->issues_covered);
  ASSERT_EQ(back->constraints.size(), program->constraints.size());
  for (size_t i = 0; i < back->constraints.size(); ++i) {
    const Constraint& a = program->constraints[i];
    const Constraint& b = back->constraints[i];
    EXPECT_EQ(a.metric, b.metric);
    EXPECT_EQ(a.transform, b.transform);
    EXPECT_EQ(a.bound, b.bound);
    EXPECT_EQ(a.side, b.side);
    EXPECT_EQ(a.lo, b.lo);  // infinities included: null in JSON
    EXPECT_EQ(a.hi, b.hi);
    EXPECT_EQ(a.fpr, b.fpr);
    EXPECT_EQ(a.invariant, b.invariant);
  }
  nlohmann::json bad = ToJson(*program);
  bad["constraints"][0].erase("metric");
  absl::StatusOr<ColumnProgram> broken = ColumnProgramFromJson(bad);
  EXPECT_EQ(broken.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(broken.status().message()).find("metric"), std::string::npos);
}

TEST(DqAvhTable, SkipsColumnsWithoutFullHistoryAndFailsAMissingColumn) {
  Normal gen(9);
  std::vector<Table> runs;
  for (int i = 0; i < 12; ++i) {
    std::vector<Column> cols = {NormalRun(gen, 50, "a")};
    if (i > 0) cols.push_back(NormalRun(gen, 50, "late"));
    absl::StatusOr<Table> t = Table::Make(std::move(cols));
    ASSERT_TRUE(t.ok());
    runs.push_back(*t);
  }
  absl::StatusOr<TableProgram> program = LearnTableProgram(runs);
  ASSERT_TRUE(program.ok()) << program.status();
  ASSERT_EQ(program->columns.size(), 1u);
  EXPECT_EQ(program->columns[0].column, "a");
  ASSERT_EQ(program->notes.size(), 1u);
  EXPECT_NE(program->notes[0].find("'late'"), std::string::npos);

  absl::StatusOr<Table> without_a = Table::Make({NormalRun(gen, 50, "late")});
  ASSERT_TRUE(without_a.ok());
  absl::StatusOr<TableReport> report = Validate(*program, runs, *without_a);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->passed);
  EXPECT_NE(report->columns[0].problem.find("missing"), std::string::npos);

  absl::StatusOr<TableProgram> back = TableProgramFromJson(ToJson(*program));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->columns.size(), 1u);
  EXPECT_EQ(back->notes, program->notes);
}

// The Seattle / New York daily weather, one run per month: learn from 30 months, check the 31st.
TEST(DqAvhRealData, WeatherByMonthFlagsAUnitChange) {
  absl::StatusOr<Table> table = ReadCsvFile(VLC_SOURCE_DIR "/tests/data/avh/weather.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  absl::StatusOr<std::vector<PipelineRun>> runs = SplitIntoRuns(*table, "date", "month");
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_GE(runs->size(), 31u);
  std::vector<Table> history;
  for (int i = 0; i < 30; ++i) history.push_back((*runs)[i].table);
  absl::StatusOr<TableProgram> program = LearnTableProgram(history);
  ASSERT_TRUE(program.ok()) << program.status();
  EXPECT_EQ(program->columns.size(), table->num_columns());
  for (const ColumnProgram& cp : program->columns) {
    EXPECT_LE(cp.ExpectedFpr(), 0.01) << cp.column;
    std::cout << cp.column << ": " << cp.constraints.size() << " constraints, covers "
              << cp.issues_covered << "/" << cp.issues_total << " synthetic issues\n";
  }

  const Table& next = (*runs)[30].table;
  absl::StatusOr<TableReport> clean = Validate(*program, history, next);
  ASSERT_TRUE(clean.ok()) << clean.status();
  std::cout << "run " << (*runs)[30].key << " (clean): " << (clean->passed ? "passed" : "failed")
            << "\n";
  for (const ColumnReport& c : clean->columns) {
    for (const Violation& v : c.violations) std::cout << "  " << v.message << "\n";
  }

  // temp_max reported in tenths of a degree: x10 on every value.
  std::vector<Column> cols;
  for (const Column& c : next.columns()) {
    if (c.name() != "temp_max") {
      cols.push_back(c);
      continue;
    }
    absl::StatusOr<Column> broken =
        ApplyIssue(Spec(ColumnType::kNumeric, "unit_change x10 p=1"), c, {}, 1);
    ASSERT_TRUE(broken.ok());
    cols.push_back(*broken);
  }
  absl::StatusOr<Table> broken_run = Table::Make(std::move(cols));
  ASSERT_TRUE(broken_run.ok());
  absl::StatusOr<TableReport> report = Validate(*program, history, *broken_run);
  ASSERT_TRUE(report.ok()) << report.status();
  bool temp_max_flagged = false;
  for (const ColumnReport& c : report->columns) {
    if (c.column != "temp_max") continue;
    temp_max_flagged = !c.passed;
    for (const Violation& v : c.violations) std::cout << "  injected: " << v.message << "\n";
  }
  EXPECT_TRUE(temp_max_flagged);
}

// weather.csv holds two rows per calendar day: a month's row count swings from 56 to 62 with the
// calendar, its rows per day do not. A tenth of a month's rows deleted hides in the first and
// shows in the second, so runs that give their span (days) catch it.
TEST(DqAvhRealData, RowsPerDayCatchAMonthMissingATenthOfItsRows) {
  absl::StatusOr<Table> table = ReadCsvFile(VLC_SOURCE_DIR "/tests/data/avh/weather.csv");
  ASSERT_TRUE(table.ok()) << table.status();
  absl::StatusOr<std::vector<PipelineRun>> runs = SplitIntoRuns(*table, "date", "month");
  ASSERT_TRUE(runs.ok()) << runs.status();
  ASSERT_GE(runs->size(), 25u);
  EXPECT_EQ((*runs)[1].table.span(), 29.0);  // February 2012
  EXPECT_EQ((*runs)[2].table.span(), 31.0);
  std::vector<Column> with_span, without_span;
  for (int i = 0; i < 24; ++i) {
    const Column* c = (*runs)[i].table.Find("wind");
    ASSERT_NE(c, nullptr);
    with_span.push_back(*c);
    without_span.push_back(*c);
    without_span.back().set_span(std::nullopt);
  }
  absl::StatusOr<ColumnProgram> program = LearnColumnProgram(with_span, {});
  ASSERT_TRUE(program.ok()) << program.status();
  EXPECT_LE(program->ExpectedFpr(), 0.01);
  const Constraint* per_day = nullptr;
  for (const Constraint& c : program->constraints) {
    if (c.metric == Metric::kNumRowsPerSpan) per_day = &c;
  }
  ASSERT_NE(per_day, nullptr) << "no rows-per-span constraint learned";
  EXPECT_TRUE(per_day->invariant);
  EXPECT_DOUBLE_EQ(per_day->mean, 2.0);

  // The next month, clean, passes; with a tenth of its rows deleted it fails on rows per day.
  Column next = *(*runs)[24].table.Find("wind");
  absl::StatusOr<ColumnReport> clean = ValidateColumn(*program, with_span, next);
  ASSERT_TRUE(clean.ok()) << clean.status();
  EXPECT_TRUE(clean->passed);
  absl::StatusOr<Column> fewer =
      ApplyIssue(Spec(ColumnType::kNumeric, "deletion p=0.1"), next, {}, 7);
  ASSERT_TRUE(fewer.ok());
  ASSERT_EQ(fewer->span(), next.span());
  absl::StatusOr<ColumnReport> flagged = ValidateColumn(*program, with_span, *fewer);
  ASSERT_TRUE(flagged.ok()) << flagged.status();
  bool by_rows_per_day = false;
  for (const Violation& v : flagged->violations) {
    by_rows_per_day |= v.metric == Metric::kNumRowsPerSpan;
  }
  EXPECT_TRUE(by_rows_per_day);

  // A run that does not give its span fails that constraint with a message that says so.
  next.set_span(std::nullopt);
  absl::StatusOr<ColumnReport> no_span = ValidateColumn(*program, with_span, next);
  ASSERT_TRUE(no_span.ok()) << no_span.status();
  ASSERT_FALSE(no_span->passed);
  EXPECT_NE(no_span->violations.front().message.find("gives no span"), std::string::npos)
      << no_span->violations.front().message;

  // Without spans, and with the paper's metric library, there is no such constraint and no note.
  AvhOptions paper_metrics;
  paper_metrics.rows_per_span = false;
  for (const auto& [history, options] :
       {std::pair{without_span, AvhOptions{}}, std::pair{with_span, paper_metrics}}) {
    absl::StatusOr<ColumnProgram> p = LearnColumnProgram(history, {}, options);
    ASSERT_TRUE(p.ok()) << p.status();
    for (const Constraint& c : p->constraints) EXPECT_FALSE(IsRowsPerSpan(c.metric));
    for (const std::string& note : p->notes) {
      EXPECT_EQ(note.find("rows_per_span"), std::string::npos) << note;
    }
  }
}

}  // namespace
}  // namespace vlc::dq
