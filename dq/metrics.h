// AVH's metric library (docs/METHODS.md, "Metrics"): the paper's 14 metrics of a numeric column
// and 20 of a categorical one, and one more of each, rows per unit of the run's span, each a single
// number per run. Pairwise metrics compare the current run with
// the previous one; single-run metrics describe the current run alone. Nulls count towards Count
// and complete_ratio and are then dropped.
//
// Where the description leaves room, this is what the code does (the AVH authors' evaluation code,
// github.com/microsoft/Auto-Validate-by-History dists.py, is the tie-breaker unless noted):
// - Logarithms are natural (nats), as scipy's entropy and jensenshannon default to.
// - Numeric JS_div is the Jensen–Shannon *divergence* (no square root); categorical JS is the
//   Jensen–Shannon *distance*, the square root of the divergence (scipy's jensenshannon), as
//   docs/METHODS.md names them; the two are kept apart by name (num_js_div, cat_js_distance).
// - Numeric JS_div and KL_div: 10 equal-width bins spanning the current run's [min, max] (the
//   last bin closed on the right, like numpy.histogram; a run whose values are all equal gets
//   [v - 0.5, v + 0.5]). The previous run is counted in the same bins, values outside them
//   dropped. Bin masses are counts over each run's non-null size and are not renormalised after
//   keeping "only bins non-empty in both", so with partly disjoint supports KL_div can be
//   negative, and with no shared bin both are 0 (an empty sum). That is the published
//   definition; distances such as EMD and KS catch a run that moved entirely out of range.
//   KL_div is KL(current || previous).
// - KS is the two-sided two-sample test's p-value, exact up to 10000 values per run and
//   asymptotic beyond (see kolmogorov.h), as scipy.stats.ks_2samp's default.
// - Cohen_d is |mean_cur - mean_prev| / (s_pooled + 1e-10), s_pooled^2 = (SS_cur + SS_prev) /
//   (n_cur + n_prev - 2). The absolute value because AVH bounds it from above only, as a distance:
//   a signed d would miss a fall in the mean. CohenD() below gives the signed value.
// - Categorical frequencies are over the union of both runs' values. chi2 is the p-value of the
//   2 x k contingency test on counts + 1 (scipy.stats.chi2_contingency, Yates' correction when
//   k = 2, p = 1 when k = 1). KL is KL(current || previous) on (count + 1) / (n + k).
// - Characters: lengths count Unicode code points of UTF-8 text; letters are ASCII A-Z a-z,
//   digits 0-9, and "punctuation" is every other character (spaces and non-ASCII characters
//   included), as the authors' punctuation count does. A pattern maps each maximal run of letters
//   to "\l", of digits to "\d" and of other characters to "-" ("AB-12 x" -> "\l-\d-\l"). The
//   mean lengths are exact means (the authors' code truncates them to integers).
// - rows_per_span is Count divided by the run's span (Column::span): a month's rows over its days
//   compares months of 28 and 31 days, where Count swings with the calendar.
// - Undefined values are NaN: rows_per_span on a run without a span; every metric but Count,
//   rows_per_span, Sum (0) and distinct count (0) on a run without non-null values, complete_ratio
//   on a run without rows, and every pairwise metric when either run has no non-null value, or
//   Cohen_d with fewer than 3 values in the two runs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "dq/table.h"

namespace vlc::dq {

enum class Metric : int {
  // Numeric, pairwise.
  kNumEmd,
  kNumJsDiv,
  kNumKlDiv,
  kNumKsPValue,
  kNumCohenD,
  // Numeric, single run.
  kNumMin,
  kNumMax,
  kNumMean,
  kNumMedian,
  kNumCount,
  kNumSum,
  kNumRange,
  kNumUniqueRatio,
  kNumCompleteRatio,
  // Categorical, pairwise on value frequencies.
  kCatL1,
  kCatLInf,
  kCatCosine,
  kCatChi2PValue,
  kCatJsDistance,
  kCatKlDiv,
  // Categorical, pairwise on pattern frequencies.
  kCatPatternL1,
  kCatPatternLInf,
  kCatPatternCosine,
  kCatPatternChi2PValue,
  kCatPatternJsDistance,
  kCatPatternKlDiv,
  // Categorical, single run.
  kCatCount,
  kCatMeanLength,
  kCatMeanLetters,
  kCatMeanDigits,
  kCatMeanPunctuation,
  kCatUniqueRatio,
  kCatCompleteRatio,
  kCatDistinctCount,
  // Single run, after the paper's: rows per unit of the run's span (Column::span), NaN when the
  // run has no span. Last in the enum so that the paper's metrics keep their order.
  kNumRowsPerSpan,
  kCatRowsPerSpan,
};
inline constexpr int kMetricCount = 36;

// Stable names, safe to store: "num_emd", "num_js_div", ..., "cat_l1", ..., "cat_distinct_count"
// (the enum's names in snake_case). The prefix keeps numeric and categorical metrics of the same
// idea (count, unique_ratio, ...) apart.
const std::string& MetricName(Metric metric);
// INVALID_ARGUMENT for an unknown name.
absl::StatusOr<Metric> MetricFromName(std::string_view name);
ColumnType MetricColumnType(Metric metric);
// True when the metric compares the current run with the previous one.
bool IsPairwise(Metric metric);
// num_rows_per_span and cat_rows_per_span: defined only for runs that give their span.
inline bool IsRowsPerSpan(Metric metric) {
  return metric == Metric::kNumRowsPerSpan || metric == Metric::kCatRowsPerSpan;
}
// All metrics of a column type, in enum order (15 numeric, 21 categorical).
const std::vector<Metric>& MetricsFor(ColumnType type);

struct MetricValue {
  Metric metric;
  double value;  // NaN when undefined (see above)
};

// Every metric of the column's type, in enum order; the pairwise ones only when `previous` is
// given. INVALID_ARGUMENT when `previous` has another type than `current`.
absl::StatusOr<std::vector<MetricValue>> ComputeMetrics(const Column& current,
                                                        const Column* previous);
// One metric. INVALID_ARGUMENT when it does not apply to the column's type, or is pairwise and
// `previous` is null.
absl::StatusOr<double> ComputeMetric(Metric metric, const Column& current, const Column* previous);

// ---- The numeric metrics that are more than a one-liner, on non-null values in any order.

// 1-D Wasserstein distance between the two empirical distributions (scipy.stats
// .wasserstein_distance with equal weights).
double Emd(const std::vector<double>& current, const std::vector<double>& previous);
// JS_div and KL_div on the shared 10-bin histogram described above.
double HistogramJsDivergence(const std::vector<double>& current,
                             const std::vector<double>& previous);
double HistogramKlDivergence(const std::vector<double>& current,
                             const std::vector<double>& previous);
// Signed Cohen's d, (mean_cur - mean_prev) / (s_pooled + 1e-10).
double CohenD(const std::vector<double>& current, const std::vector<double>& previous);
double Median(std::vector<double> values);
// Sorts finite numbers ascending (as std::sort; -0 before +0), in a few linear passes for long
// runs: a least-significant-digit radix sort of the numbers' bits mapped to unsigned integers
// that order as the numbers do. Every order-based metric of a run reads its values sorted once.
void SortNumbers(std::vector<double>* values);

// ---- Categorical building blocks.

// Value -> number of occurrences; ordered, so that sums run in one order on every machine.
using ValueCounts = std::map<std::string, int64_t, std::less<>>;

ValueCounts CountValues(const std::vector<std::string_view>& values);
// "\l" per run of letters, "\d" per run of digits, "-" per run of anything else.
std::string ValuePattern(std::string_view value);
ValueCounts CountPatterns(const std::vector<std::string_view>& values);

// Distances between the frequency vectors (count / total) over the union of values.
double L1Distance(const ValueCounts& current, const ValueCounts& previous);
double LInfDistance(const ValueCounts& current, const ValueCounts& previous);
double CosineDistance(const ValueCounts& current, const ValueCounts& previous);
double JsDistance(const ValueCounts& current, const ValueCounts& previous);
// chi-square contingency test on counts + 1, and KL(current || previous) with add-one smoothing.
double Chi2PValue(const ValueCounts& current, const ValueCounts& previous);
double SmoothedKlDivergence(const ValueCounts& current, const ValueCounts& previous);

// Per-value means of the character counts.
struct StringStats {
  double mean_length = 0;
  double mean_letters = 0;
  double mean_digits = 0;
  double mean_punctuation = 0;
};
StringStats ComputeStringStats(const std::vector<std::string_view>& values);

}  // namespace vlc::dq
