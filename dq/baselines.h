// The anchors AVH is compared with (docs/METHODS.md, "Anchors the evaluation compares with"),
// each a per-column validator learned from the same history as AVH and applied to a new run:
//
//   name                     checks                                           default threshold
//   batch_normal             every single-run metric of the column's type     |x - mean| <= 3 sd
//                            (metrics.h: Min, Max, Mean, Median, Count, ...)  (Deequ BatchNormal)
//   online_normal            the same metrics, mean and sd kept by Welford's  3 sd, first 10% of
//                            running update; history points found anomalous   the history never
//                            are left out of the update (Deequ's              flagged
//                            ignoreAnomalies)
//   relative_rate_of_change  row count and mean (numeric: num_count,          x_t / x_{t-1} in
//                            num_mean; categorical: cat_count,                [1/2, 2]
//                            cat_mean_length, as strings have no mean)
//   absolute_change          the same two metrics                             |x_t - x_{t-1}| <=
//   the
//                                                                             largest change seen
//                                                                             in the history
//   tfdv_drift               categorical: L-infinity distance of the value    L_inf > 0.01;
//                            frequencies vs the previous run; numeric:        JS > 0.1
//                            Jensen-Shannon divergence (num_js_div)
//   two_sample_test          numeric: two-sample KS; categorical: chi-square  p < alpha = 0.05
//                            contingency test, both vs the previous run
//
// Why these choices:
// - Deequ's strategies need the user to name the metrics; the metric library's single-run
//   metrics are what Deequ's analysers measure (Size, Completeness, Mean, Minimum, ...), so
//   the normal strategies watch all of them. Deequ computes the sample sd (n - 1); so does this.
// - TFDV ships 0.01 as its example L-infinity threshold and no default for Jensen-Shannon; 0.1 on
//   the divergence (in nats, at most ln 2 ~ 0.69) is a moderate drift.
// - alpha is not adjusted for multiple comparisons: a column is tested once per run, so each
//   column's false-positive rate is alpha already. A run of c columns then has a run-level rate
//   up to c * alpha; a caller wanting alpha per run passes alpha / c (Bonferroni) in the options.
// - The pairwise checks always compare with the previous actual run; the learned parts (means,
//   sds, largest change) stay as learned, so a baseline is as fixed as an AVH program.
//
// Every check returns a score normalised so that the default threshold is 1: the run is flagged
// when score > 1. Scaling the threshold (flag when score > t) sweeps each baseline along its
// false-positive rate, which the evaluation uses to compare methods at a matched FPR. An
// undefined metric on the new run (an all-null column has no mean) scores +infinity: the check
// cannot vouch for the run.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/metrics.h"
#include "dq/table.h"

namespace vlc::dq {

enum class BaselineKind {
  kBatchNormal,
  kOnlineNormal,
  kRelativeRateOfChange,
  kAbsoluteChange,
  kTfdvDrift,
  kTwoSampleTest,
};

// "batch_normal", "online_normal", "relative_rate_of_change", "absolute_change", "tfdv_drift",
// "two_sample_test".
const std::string& BaselineName(BaselineKind kind);
// Every kind, in the order above.
const std::vector<BaselineKind>& AllBaselines();

struct BaselineOptions {
  double deviation_factor = 3.0;       // batch_normal, online_normal: sds around the mean
  double ignore_start_fraction = 0.1;  // online_normal: history prefix never flagged
  double max_rate_increase = 2.0;      // relative_rate_of_change
  double max_rate_decrease = 0.5;
  double absolute_change_factor = 1.0;  // times the history's largest absolute change
  double linf_threshold = 0.01;         // tfdv_drift, categorical
  double js_threshold = 0.1;            // tfdv_drift, numeric
  double alpha = 0.05;                  // two_sample_test
};

// One metric's learned reference (what the normal and change strategies keep).
struct BaselineReference {
  Metric metric = Metric::kNumCount;
  double mean = 0.0;
  double sd = 0.0;
  double max_abs_change = 0.0;
};

struct BaselineVerdict {
  double score = 0.0;  // flagged at the default threshold when > 1
  // One sentence per check over its threshold (empty when the run passes).
  std::vector<std::string> reasons;
  bool flagged() const { return score > 1.0; }
};

class BaselineValidator {
 public:
  // Learns from the column's history, oldest run first. INVALID_ARGUMENT when the history is
  // empty, its runs differ in type, or an option is out of range. The normal and change
  // strategies need 2 runs; a metric undefined (NaN) somewhere in the history is left out, as
  // AVH leaves it out.
  static absl::StatusOr<BaselineValidator> Learn(BaselineKind kind,
                                                 const std::vector<Column>& history,
                                                 const BaselineOptions& options = {});

  // Scores `new_run`; `previous` is the run just before it (the pairwise checks and the change
  // strategies read it). INVALID_ARGUMENT when the types differ from the history's.
  absl::StatusOr<BaselineVerdict> Check(const Column& previous, const Column& new_run) const;

  BaselineKind kind() const { return kind_; }
  ColumnType type() const { return type_; }
  const std::vector<BaselineReference>& references() const { return references_; }

 private:
  BaselineValidator() = default;

  BaselineKind kind_ = BaselineKind::kBatchNormal;
  ColumnType type_ = ColumnType::kNumeric;
  BaselineOptions options_;
  std::vector<BaselineReference> references_;
};

}  // namespace vlc::dq
