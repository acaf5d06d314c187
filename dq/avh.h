// Auto-Validate-by-History (docs/METHODS.md): learning a program (a conjunction of Q(M, k)
// constraints) for each column from the column's past runs, and validating a new run with it.
//
// Learning one column from its history (oldest run first):
// 1. Every metric of the column's type (metrics.h) is computed on every run, pairwise metrics
//    against the run before (so their series is one shorter). A metric undefined (NaN) in any run
//    is dropped: its mu and sigma would be meaningless.
// 2. The series is made stationary (FindStationaryTransform); a metric with no stationary
//    transform is dropped. Each drop is recorded in ColumnProgram::notes.
// 3. Candidates Q(M, k) for k on the grid, with the bound kind and side docs/METHODS.md gives M
//    (BoundAndSideFor). A constant (transformed) history gives one candidate, an invariant, FPR 0.
// 4. The synthetic issues of issues.h are generated from the latest run; each broken column
//    stands in for the next run, so its pairwise metrics are taken against the latest run and its
//    value is transformed as a next value would be (Transform::ApplyToNew). A candidate covers an
//    issue when it rejects that value (a NaN or a value outside a log's domain is rejected).
// 5. SelectBudgetedMaxCoverage picks the constraints: total FPR <= delta, one k per metric.
//
// Approximation guarantee (what this implementation has): the selection covers at least
// (1 - 1/e) / 2 ~ 0.316 times the issues the best feasible program covers. Why: the selection runs
// the modified greedy of Khuller, Moss and Naor (1999) - candidates in order of newly covered /
// FPR, any that fits the remaining budget is taken, zero-cost ones first - over all candidates,
// compares it with the best single candidate that fits, and keeps the better; KMN prove the
// (1 - 1/e) / 2 bound for exactly that rule. The greedy may take two k of one metric; the one
// covering most is kept and the others dropped. For AVH's candidates this loses nothing: the
// intervals of one metric are nested (a smaller k rejects everything a larger k rejects), so the
// kept one covers the union, and the same nesting makes the best program with one k per metric
// as good as the best without that rule. For arbitrary (non-nested) groups the bound is not
// claimed. Zero-FPR candidates (invariants) are all kept, covering or not: they cost nothing and
// guard against changes the synthetic issues do not model. KMN assume positive costs; taking the
// free ones first and judging the greedy and the single candidate by what they add to them keeps
// the bound: with F the free coverage, the result covers >= F + a (OPT - F) >= a OPT.
//
// Validation needs the end of the history as well as the program: differenced transforms compare
// the new value with the value `lag` runs back, and pairwise metrics compare the new run with the
// one before (HistoryTailNeeded).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/bounds.h"
#include "dq/metrics.h"
#include "dq/stationarity.h"
#include "dq/table.h"
#include "nlohmann/json.hpp"

namespace vlc::dq {

struct AvhOptions {
  double delta = 0.01;  // FPR budget of each column's program
  std::vector<double> k_grid = WideKGrid();  // measured best (docs/BENCHMARKS.md)
  TransformSearchOptions transform;  // stationarity search
  uint64_t issue_seed = 0x5eedULL;   // synthetic issues
  std::size_t min_history_runs = 8;  // fewer runs is INVALID_ARGUMENT
  // A metric assigned the Normal bound keeps it only when the Shapiro-Wilk test does not reject
  // normality of its (transformed) history at this level; otherwise it gets Chebyshev's, which
  // holds for any distribution. 0 keeps the Normal bound wherever the method assigns it.
  double normality_alpha = 0.05;
  // Metrics the method gives Chebyshev's or Cantelli's bound (order statistics, sums, ratios,
  // distances, p-values), and those the normality check moves off the Normal bound, get the
  // unimodal bounds instead (BoundKind::kUnimodal), 2.25 times tighter in the tails. They assume
  // what AVH does not test: that the metric's distribution has a single mode, as order
  // statistics, sums and counts of many small effects have even where they are skewed or
  // discrete (a count of rows is rounded, a distance is skewed; neither is normal).
  bool unimodal = true;
  // Runs whose synthetic issues a constraint's coverage counts. 1 is the paper's: issues of the
  // latest run, each as the next run. n > 1 also injects the issues into each of the n - 1 runs
  // before the latest, each in that run's place (its pairwise metrics against the run before it,
  // its transform over the history before it; schema_change swaps with the latest run's other
  // columns). Coverage then weighs what a constraint catches across a run's natural spread, not on
  // one run, and the selection spends the budget on constraints that catch issues the latest
  // run's copies alone would call covered. The FPR bound is untouched: it is the chosen
  // constraints' sum, at most delta, whatever picked them. At most half the history.
  std::size_t issue_runs = 8;
  // The Normal bound's FPR for a new value against the history's estimated mean and sd
  // (Student's t, MakeQConstraint's `predictive`) instead of the paper's, which treats them as
  // the true ones and understates the FPR of short histories (k = 3 over 29 runs: 0.0072, not
  // 0.0027).
  bool predictive = true;
  // Candidates under every transform the stationarity search accepts (identity, differences at
  // each lag, logs), not only the first: a metric may be tighter under a difference or a log than
  // under the first transform that passes (a slow drift, a swing that scales with the level). The
  // selection may keep one constraint per metric and transform; an invariant is kept once.
  bool all_transforms = true;
  // Rows per unit of the run's span (num_rows_per_span, cat_rows_per_span) among the candidates
  // when the runs give their span (Column::span): a month's row count swings with its days, its
  // rows per day need not. Not in the paper's metric library.
  bool rows_per_span = true;
};

// The method exactly as the paper specifies it: k from 1 to 10, the Normal bound wherever the
// metric's kind says so, with the history's moments taken as the true ones, Chebyshev's and
// Cantelli's bounds, the first stationary transform, the latest run's synthetic issues, and its
// metric library (no rows per span).
AvhOptions PaperAvhOptions();

// The bound kind and side docs/METHODS.md assigns to a metric: Cantelli upper for distances,
// Cantelli lower for p-values, Normal two-sided for counts, means, lengths and categorical ratios,
// Chebyshev two-sided for min, max, median, sum, range and numeric ratios.
struct BoundAndSide {
  BoundKind kind;
  Side side;
};
BoundAndSide BoundAndSideFor(Metric metric);

// One learned constraint: the metric, transformed, must lie in [lo, hi].
struct Constraint {
  Metric metric = Metric::kNumCount;
  Transform transform;
  BoundKind bound = BoundKind::kChebyshev;
  Side side = Side::kTwoSided;
  double k = 0.0;     // not meaningful for an invariant
  double mean = 0.0;  // of the transformed history
  double sd = 0.0;
  double lo = 0.0;  // -inf / +inf on an unchecked side
  double hi = 0.0;
  double fpr = 0.0;  // expected (bounded) false-positive rate; 0 for an invariant
  bool invariant = false;
  std::size_t covered_issues = 0;  // synthetic issues it rejects, at learning time

  bool Accepts(double value) const { return value >= lo && value <= hi; }
};

struct ColumnProgram {
  std::string column;
  ColumnType type = ColumnType::kNumeric;
  std::size_t history_runs = 0;  // runs it was learned from
  double delta = 0.0;            // the budget it was learned under
  std::vector<Constraint> constraints;
  std::size_t issues_total = 0;    // synthetic issues generated
  std::size_t issues_covered = 0;  // rejected by at least one constraint
  std::vector<std::string> notes;  // metrics dropped and why

  double ExpectedFpr() const;  // sum of the constraints' FPRs (union bound), <= delta
};

// Learns the program of one column. `history` holds the column's runs, oldest first, all of one
// type; `other_columns` are the latest run's other columns (the schema-change issues take values
// from them; may be empty). INVALID_ARGUMENT for fewer than options.min_history_runs runs, runs
// of different types, or a bad delta / k grid.
absl::StatusOr<ColumnProgram> LearnColumnProgram(const std::vector<Column>& history,
                                                 const std::vector<Column>& other_columns,
                                                 const AvhOptions& options = {});

struct TableProgram {
  std::vector<ColumnProgram> columns;
  // Columns of the latest run that were not learned, and why (absent from an older run, or of
  // another type there): a column needs its full history.
  std::vector<std::string> notes;
};

// Every column of the latest run, learned independently. A column missing from some run, or of a
// different type in some run, is skipped with a note rather than failing the table (one odd
// column should not leave the others unvalidated); so is, with a note, a column of an older run
// that the latest run no longer has.
absl::StatusOr<TableProgram> LearnTableProgram(const std::vector<Table>& history,
                                               const AvhOptions& options = {});

// ---- Selection: budgeted maximum coverage, exposed for tests and other selectors.

struct CoverageCandidate {
  int group = 0;                    // at most one candidate per group (AVH: per metric)
  double fpr = 0.0;                 // cost, >= 0
  std::vector<std::size_t> covers;  // indices of the issues it covers
};

struct CoverageSelection {
  std::vector<std::size_t> chosen;  // indices into the candidates, increasing
  std::size_t covered = 0;
  double fpr = 0.0;
  bool single_won = false;  // the best single candidate beat the greedy
};

// See the header comment for the rule and its guarantee (groups must be nested for it).
CoverageSelection SelectBudgetedMaxCoverage(const std::vector<CoverageCandidate>& candidates,
                                            std::size_t num_issues, double delta);

// ---- Validation.

struct Violation {
  Metric metric = Metric::kNumCount;
  Constraint constraint;
  double raw_value = 0.0;  // the metric on the new run (NaN when undefined)
  double value = 0.0;      // after the transform (NaN when undefined or outside its domain)
  std::string message;     // a sentence for a data engineer
};

struct ColumnReport {
  std::string column;
  bool passed = true;
  std::vector<Violation> violations;
  std::string problem;  // set when the column could not be checked (missing, type changed)
};

struct TableReport {
  bool passed = true;
  std::vector<ColumnReport> columns;
};

// Runs of history a program needs before the new run: the largest lag of its differenced
// transforms, plus one when it has a pairwise metric (at least 1 then).
std::size_t HistoryTailNeeded(const ColumnProgram& program);

// Checks `new_run` against the program. `history_tail` holds the column's last runs, oldest
// first, at least HistoryTailNeeded(program) of them (more is fine; only the end is read).
// INVALID_ARGUMENT when the tail is too short, or a tail value a transform needs is undefined.
absl::StatusOr<ColumnReport> ValidateColumn(const ColumnProgram& program,
                                            const std::vector<Column>& history_tail,
                                            const Column& new_run);

// Every column of the program. A column missing from the new run, or of another type, fails with
// `problem` set; one missing from the tail is INVALID_ARGUMENT. Columns of the new run that the
// program does not know are not checked (learn a new program once they have a history).
absl::StatusOr<TableReport> Validate(const TableProgram& program,
                                     const std::vector<Table>& history_tail, const Table& new_run);

// ---- JSON.

nlohmann::json ToJson(const ColumnProgram& program);
nlohmann::json ToJson(const TableProgram& program);
// INVALID_ARGUMENT naming the field that is missing or malformed.
absl::StatusOr<ColumnProgram> ColumnProgramFromJson(const nlohmann::json& json);
absl::StatusOr<TableProgram> TableProgramFromJson(const nlohmann::json& json);

}  // namespace vlc::dq
