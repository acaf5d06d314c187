// The evaluation harness (docs/METHODS.md, "Evaluation"): AVH against the baselines of
// baselines.h on one recurring pipeline, on the same runs.
//
// Protocol (runs in time order, r_0 .. r_{T-1}; N = history_runs):
// - Learning: every method learns each column from r_0 .. r_{N-1} once, and keeps what it learned
//   for every later run. The protocol is "learn from the first N, validate every later run":
//   a fixed program is what a deployment validates with between re-learns, and it makes every
//   later run an independent test of the same program. Pairwise metrics and the differenced
//   transforms still read the actual previous runs (r_{t-1}, r_{t-lag}), as a deployment would.
// - Test runs: r_N .. r_{T-1}. The unit of evaluation is one column of one test run, as in the
//   paper (each column is validated on its own):
//   * a clean case: the column of r_t as it is; flagged = false positive, else true negative;
//   * an injected case: for each variant of issues.h (27 numeric, 33 categorical, schema change
//     only where the run has another column), the column of r_t broken by it, counted once per
//     (run, column, variant); the method's validator OF THAT COLUMN decides: flagged = true
//     positive, else false negative. Other columns are left out because they are unchanged: they
//     would only add the clean cases' false positives, which are measured already.
//   precision = TP / (TP + FP) over all cases, recall = TP / injected, fpr = FP / clean. Note that
//   precision depends on the mix: there are 27-33 injected cases per clean one, so it is also
//   given as balanced_precision = recall / (recall + fpr), the precision of a 1:1 mix.
//   run_fpr is the run-level rate: clean test runs in which ANY column is flagged.
// - Matched FPR: each baseline's threshold is also moved (score > t, see baselines.h) to the
//   loosest one whose measured FPR is <= AVH's measured FPR on the same clean cases, and its
//   recall and F1 are reported there. The threshold is fitted on the test runs themselves, which
//   favours the baselines: a fair comparison cannot favour AVH.
// - Realistic issues, reported apart, one case per (test run, issue, target): a day in other
//   units (a numeric column x1000), codes lower-cased (a categorical column; skipped where that
//   changes no value), a partial load (the run's first 10% of rows, at least 1), two columns of
//   the same type swapped (one case per pair), a column all null, every row loaded twice. A case
//   is detected when the method flags ANY column the issue touched (all columns for the partial
//   load and the duplicated rows).
// - A column AVH learned no program for (LearnTableProgram's notes) or a baseline could not learn
//   is never flagged by that method; a validation that fails with an error counts as flagged (a
//   validator that cannot check a run alerts) and is counted in `errors`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/avh.h"
#include "dq/baselines.h"
#include "dq/table.h"
#include "nlohmann/json.hpp"

namespace vlc::dq {

struct EvalOptions {
  std::size_t history_runs = 29;  // N: learn from the first N runs
  double delta = 0.01;            // AVH's FPR budget per column
  BaselineOptions baselines;
  AvhOptions avh;                    // avh.delta is replaced by `delta`
  // AVH re-learned before every test run from the `relearn_window` runs just before it (0: the
  // history length), as the method's authors evaluate it, instead of once from the first runs.
  // The baselines learn once either way.
  bool relearn_every_run = false;
  std::size_t relearn_window = 0;
  uint64_t issue_seed = 0x6e7a1ULL;  // injected issues of the test runs (mixed with the run index)
};

// The confusion counts behind each figure.
struct EvalCounts {
  std::size_t tp = 0, fn = 0, fp = 0, tn = 0;
  double Precision() const;          // TP / (TP + FP); 1 when nothing was flagged
  double Recall() const;             // TP / (TP + FN); 0 without injected cases
  double Fpr() const;                // FP / (FP + TN); 0 without clean cases
  double F1() const;                 // of Precision() and Recall()
  double BalancedPrecision() const;  // recall / (recall + fpr)
};

struct MethodResult {
  std::string name;       // "avh" or a BaselineName
  std::string threshold;  // the rule it was run with, in words
  EvalCounts counts;
  // Injected cases by synthetic variant (IssueSpec::name: "unit_change x100 p=0.1", ...), so a
  // recall short of the target can be traced to the issues the method lets through.
  std::map<std::string, EvalCounts> by_issue;
  std::size_t clean_runs = 0, flagged_clean_runs = 0;  // run_fpr = flagged / clean runs
  std::size_t errors = 0;                              // validations that failed (counted flagged)
  // Baselines only: at the loosest threshold whose measured FPR <= AVH's.
  bool has_matched = false;
  double matched_threshold = 1.0;  // flag when score > this (1 = the default threshold)
  EvalCounts matched;
};

struct RealisticResult {
  std::string method;
  std::string issue;  // units_x1000, codes_lowercased, partial_load_10pct, columns_swapped, ...
  std::size_t cases = 0, detected = 0;
  double Recall() const { return cases ? static_cast<double>(detected) / cases : 0.0; }
};

struct EvalResult {
  std::size_t runs = 0, history_runs = 0, test_runs = 0;
  std::vector<std::string> columns;
  double delta = 0.0;
  std::vector<MethodResult> methods;  // avh first, then AllBaselines() in order
  std::vector<RealisticResult> realistic;
  std::vector<std::string> notes;  // columns a method could not learn, and why
  // One line per column: AVH's program (constraints, expected FPR, synthetic coverage), so that a
  // miss can be traced to what was (not) learned.
  std::vector<std::string> avh_programs;
};

// Runs the protocol on `runs` (time order; every run should have the same columns).
// INVALID_ARGUMENT when there are not more runs than history_runs, or history_runs is below
// what AVH needs (options.avh.min_history_runs).
absl::StatusOr<EvalResult> EvaluatePipeline(const std::vector<Table>& runs,
                                            const EvalOptions& options = {});

// The smallest threshold t (one of `clean_scores`, or -inf) such that at most
// floor(target_fpr * n) of the n clean scores are > t: the loosest setting of a
// score-thresholded method whose measured FPR does not exceed target_fpr.
double MatchThreshold(std::vector<double> clean_scores, double target_fpr);

// The rule each anchor of baselines.h is run with, in words ("|x - mean| <= 3 sd, ...").
std::string DescribeBaseline(BaselineKind kind, const BaselineOptions& options);

nlohmann::json ToJson(const EvalResult& result);
// A fixed-width table of the methods and one of the realistic issues, for a terminal.
std::string FormatEvalTable(const EvalResult& result);

}  // namespace vlc::dq
