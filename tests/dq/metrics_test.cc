// The metric library of docs/METHODS.md ("Metrics"), metric by metric: small vectors whose
// values are worked out by hand in the comments, then real runs against the AVH authors'
// definitions evaluated with numpy/scipy.
#include "dq/metrics.h"

#include <cmath>
#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "dq/io.h"
#include "gtest/gtest.h"

namespace vlc::dq {
namespace {

using Nums = Column::NumericValues;
using Strs = Column::StringValues;

double Get(Metric m, const Column& cur, const Column* prev = nullptr) {
  absl::StatusOr<double> v = ComputeMetric(m, cur, prev);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::nan("");
}

Column Num(Nums v) { return Column::Numeric("x", std::move(v)); }
Column Cat(Strs v) { return Column::Categorical("s", std::move(v)); }

// ---- Names and catalogue.

TEST(DqMetricCatalogue, FifteenNumericAndTwentyOneCategoricalWithUniqueStableNames) {
  // The paper's 14 and 20, and rows per span of each type.
  EXPECT_EQ(MetricsFor(ColumnType::kNumeric).size(), 15u);
  EXPECT_EQ(MetricsFor(ColumnType::kCategorical).size(), 21u);
  std::set<std::string> names;
  int pairwise_num = 0, pairwise_cat = 0;
  for (int i = 0; i < kMetricCount; ++i) {
    const Metric m = static_cast<Metric>(i);
    names.insert(MetricName(m));
    absl::StatusOr<Metric> back = MetricFromName(MetricName(m));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, m);
    if (IsPairwise(m))
      (MetricColumnType(m) == ColumnType::kNumeric ? pairwise_num : pairwise_cat)++;
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(kMetricCount));
  EXPECT_EQ(pairwise_num, 5);   // EMD, JS_div, KL_div, KS, Cohen_d
  EXPECT_EQ(pairwise_cat, 12);  // six on values, six on patterns
  // Stored programs refer to these strings: they must not change.
  EXPECT_EQ(MetricName(Metric::kNumEmd), "num_emd");
  EXPECT_EQ(MetricName(Metric::kNumKsPValue), "num_ks_p_value");
  EXPECT_EQ(MetricName(Metric::kCatJsDistance), "cat_js_distance");
  EXPECT_EQ(MetricName(Metric::kCatPatternChi2PValue), "cat_pattern_chi2_p_value");
  EXPECT_EQ(MetricName(Metric::kCatDistinctCount), "cat_distinct_count");
  EXPECT_EQ(MetricName(Metric::kNumRowsPerSpan), "num_rows_per_span");
  EXPECT_EQ(MetricName(Metric::kCatRowsPerSpan), "cat_rows_per_span");
  EXPECT_EQ(MetricFromName("EMD").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DqComputeMetrics, PairwiseMetricsOnlyWithAPreviousRun) {
  Column cur = Num({1.0, 2.0, std::nullopt});
  cur.set_span(2.0);
  const Column prev = Num({2.0, 3.0, 4.0});
  absl::StatusOr<std::vector<MetricValue>> single = ComputeMetrics(cur, nullptr);
  ASSERT_TRUE(single.ok()) << single.status();
  EXPECT_EQ(single->size(), 10u);
  for (const MetricValue& v : *single) EXPECT_FALSE(IsPairwise(v.metric));
  absl::StatusOr<std::vector<MetricValue>> both = ComputeMetrics(cur, &prev);
  ASSERT_TRUE(both.ok()) << both.status();
  ASSERT_EQ(both->size(), 15u);
  for (size_t i = 0; i < both->size(); ++i) {
    EXPECT_EQ((*both)[i].metric, MetricsFor(ColumnType::kNumeric)[i]);
    // The batch agrees with the one-at-a-time function.
    EXPECT_EQ((*both)[i].value, Get((*both)[i].metric, cur, &prev))
        << MetricName((*both)[i].metric);
  }
  const Column s = Cat({"a", std::nullopt});
  absl::StatusOr<std::vector<MetricValue>> cat = ComputeMetrics(s, &s);
  ASSERT_TRUE(cat.ok());
  EXPECT_EQ(cat->size(), 21u);
  EXPECT_EQ(ComputeMetrics(s, nullptr)->size(), 9u);
}

TEST(DqComputeMetrics, RowsPerSpanCountsRowsOverTheRunsSpan) {
  // Three rows, a null among them: rows count as Count counts them.
  Column num = Num({1.0, std::nullopt, 4.0});
  Column cat = Cat({"a", "b", std::nullopt, "d"});
  // No span: undefined, not 0 or the bare count.
  EXPECT_TRUE(std::isnan(Get(Metric::kNumRowsPerSpan, num)));
  EXPECT_TRUE(std::isnan(Get(Metric::kCatRowsPerSpan, cat)));
  num.set_span(2.0);
  cat.set_span(0.5);
  EXPECT_EQ(Get(Metric::kNumRowsPerSpan, num), 1.5);
  EXPECT_EQ(Get(Metric::kCatRowsPerSpan, cat), 8.0);
  EXPECT_FALSE(IsPairwise(Metric::kNumRowsPerSpan));
  // The span travels with selected rows: a month with rows deleted has fewer rows per day.
  const Column fewer = num.Select({0, 2});
  ASSERT_TRUE(fewer.span().has_value());
  EXPECT_EQ(Get(Metric::kNumRowsPerSpan, fewer), 1.0);
  // The wrong type is refused like any other metric.
  EXPECT_EQ(ComputeMetric(Metric::kCatRowsPerSpan, num, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DqComputeMetrics, MisusedArgumentsAreClearErrors) {
  const Column num = Num({1.0});
  const Column cat = Cat({"a"});
  absl::StatusOr<std::vector<MetricValue>> mixed = ComputeMetrics(num, &cat);
  EXPECT_EQ(mixed.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(mixed.status().message()).find("numeric in the current run"),
            std::string::npos)
      << mixed.status();
  absl::StatusOr<double> wrong_type = ComputeMetric(Metric::kCatL1, num, nullptr);
  EXPECT_EQ(wrong_type.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(wrong_type.status().message()).find("cat_l1 applies to categorical"),
            std::string::npos)
      << wrong_type.status();
  absl::StatusOr<double> no_prev = ComputeMetric(Metric::kNumEmd, num, nullptr);
  EXPECT_EQ(no_prev.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(std::string(no_prev.status().message()).find("pass the previous run"),
            std::string::npos)
      << no_prev.status();
}

// ---- Numeric, single run.

TEST(DqNumericMetrics, SingleRunMetricsCountNullsThenDropThem) {
  // 6 rows, 4 values {3, 1, 2, 2}: sorted {1, 2, 2, 3}.
  const Column c = Num({3.0, std::nullopt, 1.0, 2.0, 2.0, std::nullopt});
  EXPECT_EQ(Get(Metric::kNumMin, c), 1.0);
  EXPECT_EQ(Get(Metric::kNumMax, c), 3.0);
  EXPECT_EQ(Get(Metric::kNumMean, c), 2.0);    // 8 / 4
  EXPECT_EQ(Get(Metric::kNumMedian, c), 2.0);  // (2 + 2) / 2
  EXPECT_EQ(Get(Metric::kNumCount, c), 6.0);   // rows, nulls included
  EXPECT_EQ(Get(Metric::kNumSum, c), 8.0);
  EXPECT_EQ(Get(Metric::kNumRange, c), 2.0);         // 3 - 1
  EXPECT_EQ(Get(Metric::kNumUniqueRatio, c), 0.75);  // {1, 2, 3} / 4 values
  EXPECT_DOUBLE_EQ(Get(Metric::kNumCompleteRatio, c), 4.0 / 6.0);
}

TEST(DqNumericMetrics, MedianOfAnEvenCountIsTheMeanOfTheMiddleTwo) {
  EXPECT_EQ(Median({4, 1, 3, 2}), 2.5);
  EXPECT_EQ(Median({5, -1, 7}), 5.0);
}

TEST(DqNumericMetrics, SumAndMeanAreCompensated) {
  // Left to right in doubles, 1e16 + 1 rounds to 1e16 and the sum comes out 0.
  const Column c = Num({1e16, 1.0, -1e16});
  EXPECT_EQ(Get(Metric::kNumSum, c), 1.0);
  EXPECT_DOUBLE_EQ(Get(Metric::kNumMean, c), 1.0 / 3.0);
}

TEST(DqNumericMetrics, NonFiniteValuesAreNulls) {
  const Column c = Num({1.0, std::nan(""), INFINITY, 3.0});
  EXPECT_EQ(c.null_count(), 2u);
  EXPECT_EQ(Get(Metric::kNumMax, c), 3.0);
  EXPECT_EQ(Get(Metric::kNumCompleteRatio, c), 0.5);
}

TEST(DqNumericMetrics, AnEmptyRunHasOnlyCountAndSum) {
  const Column none = Num({std::nullopt, std::nullopt});
  const Column some = Num({1.0, 2.0});
  EXPECT_EQ(Get(Metric::kNumCount, none), 2.0);
  EXPECT_EQ(Get(Metric::kNumSum, none), 0.0);
  EXPECT_EQ(Get(Metric::kNumCompleteRatio, none), 0.0);
  for (Metric m : {Metric::kNumMin, Metric::kNumMax, Metric::kNumMean, Metric::kNumMedian,
                   Metric::kNumRange, Metric::kNumUniqueRatio}) {
    EXPECT_TRUE(std::isnan(Get(m, none))) << MetricName(m);
  }
  for (Metric m : {Metric::kNumEmd, Metric::kNumJsDiv, Metric::kNumKlDiv, Metric::kNumKsPValue,
                   Metric::kNumCohenD}) {
    EXPECT_TRUE(std::isnan(Get(m, none, &some))) << MetricName(m);
    EXPECT_TRUE(std::isnan(Get(m, some, &none))) << MetricName(m);
  }
  EXPECT_TRUE(std::isnan(Get(Metric::kNumCompleteRatio, Num({}))));  // no rows at all
}

// ---- Numeric, pairwise.

TEST(DqNumericMetrics, EmdIsTheAreaBetweenTheTwoCdfs) {
  // A shift by 5 moves all the mass 5 units.
  EXPECT_DOUBLE_EQ(Emd({0, 1, 3}, {5, 6, 8}), 5.0);
  // F_a = 1/2 on [0, 1) and 1 after; F_b = 1/2 on [0, 2): |F_a - F_b| = 1/2 on [1, 2).
  EXPECT_DOUBLE_EQ(Emd({0, 1}, {0, 2}), 0.5);
  // Unequal sizes: a = {0}, b = {0, 0, 3}: F_a = 1, F_b = 2/3 on [0, 3): 1/3 * 3 = 1.
  EXPECT_DOUBLE_EQ(Emd({0}, {3, 0, 0}), 1.0);
  EXPECT_EQ(Emd({1, 2, 3}, {3, 2, 1}), 0.0);
}

TEST(DqNumericMetrics, HistogramDivergencesOnTheCurrentRunsBins) {
  // Current {0, 10}: bins of width 1 on [0, 10], p = 1/2 in bin 0 and 1/2 in bin 9 (the top edge
  // belongs to the last bin). Previous {0, 0, 0, 10, 20}: 20 is outside and dropped, but q still
  // divides by all 5 values: q = 3/5 in bin 0, 1/5 in bin 9.
  const std::vector<double> cur = {0, 10}, prev = {0, 0, 0, 10, 20};
  // KL = 1/2 ln((1/2)/(3/5)) + 1/2 ln((1/2)/(1/5)) = 1/2 ln(25/12)
  EXPECT_NEAR(HistogramKlDivergence(cur, prev), 0.5 * std::log(25.0 / 12.0), 1e-15);
  // JS = 1/2 sum p ln(p/m) + 1/2 sum q ln(q/m), m = (p + q)/2 = 0.55 and 0.35
  const double js = 0.5 * (0.5 * std::log(0.5 / 0.55) + 0.5 * std::log(0.5 / 0.35)) +
                    0.5 * (0.6 * std::log(0.6 / 0.55) + 0.2 * std::log(0.2 / 0.35));
  EXPECT_NEAR(HistogramJsDivergence(cur, prev), js, 1e-15);
  // The library's metrics are these functions.
  const Column cur_col = Num({0.0, 10.0}), prev_col = Num({0.0, 0.0, 0.0, 10.0, 20.0});
  EXPECT_EQ(Get(Metric::kNumKlDiv, cur_col, &prev_col), HistogramKlDivergence(cur, prev));
  EXPECT_EQ(Get(Metric::kNumJsDiv, cur_col, &prev_col), HistogramJsDivergence(cur, prev));
}

TEST(DqNumericMetrics, HistogramDivergencesKeepOnlySharedBinsAsPublished) {
  // Current {0, 10, 10, 10}: p = 1/4 (bin 0), 3/4 (bin 9). Previous {0, 100}: q = 1/2 in bin 0,
  // 100 dropped. Only bin 0 is shared, and the masses are not renormalised:
  // KL = 1/4 ln((1/4)/(1/2)) = -ln(2)/4 < 0, which the published definition allows.
  EXPECT_NEAR(HistogramKlDivergence({0, 10, 10, 10}, {0, 100}), -std::log(2.0) / 4, 1e-15);
  // No shared bin: an empty sum.
  EXPECT_EQ(HistogramKlDivergence({0, 1}, {5, 6}), 0.0);
  EXPECT_EQ(HistogramJsDivergence({0, 1}, {5, 6}), 0.0);
}

TEST(DqNumericMetrics, HistogramOfAConstantRunSpansOneUnit) {
  // Current {3, 3}: numpy widens the range to [2.5, 3.5], bins of width 0.1, 3 in bin 5 (p = 1).
  // Previous {3, 4}: 4 is outside, q = 1/2 in bin 5. KL = ln 2; JS with m = 3/4.
  EXPECT_NEAR(HistogramKlDivergence({3, 3}, {3, 4}), std::log(2.0), 1e-15);
  EXPECT_NEAR(HistogramJsDivergence({3, 3}, {3, 4}),
              0.5 * std::log(1 / 0.75) + 0.25 * std::log(0.5 / 0.75), 1e-15);
}

TEST(DqNumericMetrics, CohenDUsesThePooledSampleSd) {
  // Means 2 and 5; squared deviations 2 and 2; pooled sd sqrt(4 / (3 + 3 - 2)) = 1.
  EXPECT_DOUBLE_EQ(CohenD({1, 2, 3}, {4, 5, 6}), -3.0 / (1.0 + 1e-10));
  // The metric is the size of the effect, either way.
  const Column a = Num({1.0, 2.0, 3.0}), b = Num({4.0, 5.0, 6.0});
  EXPECT_DOUBLE_EQ(Get(Metric::kNumCohenD, a, &b), 3.0 / (1.0 + 1e-10));
  EXPECT_DOUBLE_EQ(Get(Metric::kNumCohenD, b, &a), 3.0 / (1.0 + 1e-10));
  // A one-value run has no variance of its own but pools: {7} vs {4, 6}: means 7 and 5,
  // squared deviations 0 and 2, pooled sd sqrt(2 / 1).
  EXPECT_DOUBLE_EQ(CohenD({7}, {4, 6}), 2.0 / (std::sqrt(2.0) + 1e-10));
  // Two single values have no degrees of freedom.
  EXPECT_TRUE(std::isnan(CohenD({1}, {2})));
  // Constant runs: the +1e-10 keeps a shift finite (and large).
  EXPECT_DOUBLE_EQ(CohenD({2, 2}, {1, 1}), 1e10);
}

TEST(DqNumericMetrics, KsMetricIsTheTwoSampleTestsPValue) {
  // scipy 1.17.1: ks_2samp([1,2,2,3,4,5,5,6], [2,3,3,4,6,7,8,9]).pvalue = 0.6601398601398599
  const Column a = Num({1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0, std::nullopt});
  const Column b = Num({9.0, 8.0, 7.0, 6.0, 4.0, 3.0, 3.0, 2.0});
  EXPECT_NEAR(Get(Metric::kNumKsPValue, a, &b), 0.6601398601398599, 1e-12);
}

// ---- Categorical.

TEST(DqCategoricalMetrics, PatternsCollapseRunsOfLettersDigitsAndTheRest) {
  EXPECT_EQ(ValuePattern("AB-12 x"), "\\l-\\d-\\l");
  EXPECT_EQ(ValuePattern("2001/01/13 06:05"), "\\d-\\d-\\d-\\d-\\d");
  EXPECT_EQ(ValuePattern("SEA"), "\\l");
  EXPECT_EQ(ValuePattern("..."), "-");
  EXPECT_EQ(ValuePattern(" a"), "-\\l");  // a leading space is a run of its own
  EXPECT_EQ(ValuePattern(""), "");
  EXPECT_EQ(ValuePattern("\xC3\xA9t\xC3\xA9"
                         "1"),
            "-\\l-\\d");  // "été1": é is not ASCII
}

TEST(DqCategoricalMetrics, StringStatsCountCodePoints) {
  // "ab1": 3 chars, 2 letters, 1 digit; "x-9 9": 5 chars, 1 letter, 2 digits, 2 others.
  StringStats s = ComputeStringStats({"ab1", "x-9 9"});
  EXPECT_EQ(s.mean_length, 4.0);
  EXPECT_EQ(s.mean_letters, 1.5);
  EXPECT_EQ(s.mean_digits, 1.5);
  EXPECT_EQ(s.mean_punctuation, 1.0);
  // "é" is two bytes but one character.
  s = ComputeStringStats({"\xC3\xA9"});
  EXPECT_EQ(s.mean_length, 1.0);
  EXPECT_EQ(s.mean_punctuation, 1.0);
}

TEST(DqCategoricalMetrics, SingleRunMetrics) {
  // 5 rows, 4 values {a, a, b1, ""}: distinct 3.
  const Column c = Cat({"a", "a", std::nullopt, "b1", ""});
  EXPECT_EQ(Get(Metric::kCatCount, c), 5.0);
  EXPECT_EQ(Get(Metric::kCatCompleteRatio, c), 0.8);
  EXPECT_EQ(Get(Metric::kCatDistinctCount, c), 3.0);
  EXPECT_EQ(Get(Metric::kCatUniqueRatio, c), 0.75);
  EXPECT_EQ(Get(Metric::kCatMeanLength, c), 1.0);  // (1 + 1 + 2 + 0) / 4
  EXPECT_EQ(Get(Metric::kCatMeanLetters, c), 0.75);
  EXPECT_EQ(Get(Metric::kCatMeanDigits, c), 0.25);
  EXPECT_EQ(Get(Metric::kCatMeanPunctuation, c), 0.0);
  const Column none = Cat({std::nullopt});
  EXPECT_EQ(Get(Metric::kCatDistinctCount, none), 0.0);
  EXPECT_EQ(Get(Metric::kCatCompleteRatio, none), 0.0);
  EXPECT_TRUE(std::isnan(Get(Metric::kCatMeanLength, none)));
  EXPECT_TRUE(std::isnan(Get(Metric::kCatUniqueRatio, none)));
  EXPECT_TRUE(std::isnan(Get(Metric::kCatL1, none, &c)));
}

// Current {a, a, b} (and a null), previous {a, c, c, c}. Over the union {a, b, c}:
// p = (2/3, 1/3, 0), q = (1/4, 0, 3/4).
class DqFrequencyMetrics : public testing::Test {
 protected:
  const Column cur_ = Cat({"a", "a", std::nullopt, "b"});
  const Column prev_ = Cat({"a", "c", "c", "c"});
};

TEST_F(DqFrequencyMetrics, L1AndLInf) {
  // |2/3 - 1/4| + |1/3 - 0| + |0 - 3/4| = 5/12 + 4/12 + 9/12
  EXPECT_DOUBLE_EQ(Get(Metric::kCatL1, cur_, &prev_), 1.5);
  EXPECT_DOUBLE_EQ(Get(Metric::kCatLInf, cur_, &prev_), 0.75);
}

TEST_F(DqFrequencyMetrics, Cosine) {
  // p.q = 1/6, |p|^2 = 5/9, |q|^2 = 5/8: cos = (1/6) / sqrt(25/72) = sqrt(2)/5
  EXPECT_NEAR(Get(Metric::kCatCosine, cur_, &prev_), 1 - std::sqrt(2.0) / 5, 1e-15);
}

TEST_F(DqFrequencyMetrics, JensenShannonDistanceIsTheRootOfTheDivergence) {
  // m = (11/24, 1/6, 3/8)
  const double js =
      0.5 *
      (2.0 / 3 * std::log((2.0 / 3) / (11.0 / 24)) + 1.0 / 3 * std::log((1.0 / 3) / (1.0 / 6)) +
       1.0 / 4 * std::log((1.0 / 4) / (11.0 / 24)) + 3.0 / 4 * std::log((3.0 / 4) / (3.0 / 8)));
  EXPECT_NEAR(Get(Metric::kCatJsDistance, cur_, &prev_), std::sqrt(js), 1e-15);
  EXPECT_EQ(Get(Metric::kCatJsDistance, cur_, &cur_), 0.0);
}

TEST_F(DqFrequencyMetrics, KlWithAddOneSmoothing) {
  // counts + 1: current (3, 2, 1) / 6, previous (2, 1, 4) / 7
  const double kl =
      0.5 * std::log(7.0 / 4) + 1.0 / 3 * std::log(7.0 / 3) + 1.0 / 6 * std::log(7.0 / 24);
  EXPECT_NEAR(Get(Metric::kCatKlDiv, cur_, &prev_), kl, 1e-15);
}

TEST_F(DqFrequencyMetrics, ChiSquarePValueOfTheSmoothedContingencyTable) {
  // Table [[3, 2, 1], [2, 1, 4]], row totals 6 and 7, column totals 5, 3, 5, N = 13.
  // Expected 30/13, 18/13, 30/13 and 35/13, 21/13, 35/13; sum of (O - E)^2 / E:
  const double stat = 81.0 / 390 + 64.0 / 234 + 289.0 / 390 + 81.0 / 455 + 64.0 / 273 + 289.0 / 455;
  // Two degrees of freedom: the chi-square survival function is exp(-x / 2).
  EXPECT_NEAR(Get(Metric::kCatChi2PValue, cur_, &prev_), std::exp(-stat / 2), 1e-14);
}

TEST(DqCategoricalMetrics, ChiSquareUsesYatesCorrectionForTwoCategories) {
  // Current {x, x, x}, previous {y}: table [[4, 1], [1, 2]], rows 5 and 3, columns 5 and 3,
  // N = 8; expected 25/8, 15/8, 15/8, 9/8; every |O - E| = 7/8, less 1/2 by Yates = 3/8.
  const Column cur = Cat({"x", "x", "x"}), prev = Cat({"y"});
  const double stat = 9.0 / 64 * (8.0 / 25 + 8.0 / 15 + 8.0 / 15 + 8.0 / 9);
  // One degree of freedom: survival = erfc(sqrt(x / 2)).
  EXPECT_NEAR(Get(Metric::kCatChi2PValue, cur, &prev), std::erfc(std::sqrt(stat / 2)), 1e-14);
  // One category: observed equals expected.
  const Column same = Cat({"x"});
  EXPECT_EQ(Get(Metric::kCatChi2PValue, cur, &same), 1.0);
}

TEST(DqCategoricalMetrics, PatternMetricsCompareThePatternFrequencies) {
  // Current {A1, B2, CC}: patterns {\l\d: 2, \l: 1}; previous {11, X9}: {\d: 1, \l\d: 1}.
  // Over {\d, \l, \l\d}: p = (0, 1/3, 2/3), q = (1/2, 0, 1/2); L1 = 1/2 + 1/3 + 1/6 = 1.
  const Column cur = Cat({"A1", "B2", "CC"}), prev = Cat({"11", "X9"});
  EXPECT_DOUBLE_EQ(Get(Metric::kCatPatternL1, cur, &prev), 1.0);
  EXPECT_DOUBLE_EQ(Get(Metric::kCatPatternLInf, cur, &prev), 0.5);
  // Pattern and value metrics are the same functions on different counts.
  EXPECT_EQ(Get(Metric::kCatPatternJsDistance, cur, &prev),
            JsDistance(CountPatterns({"A1", "B2", "CC"}), CountPatterns({"11", "X9"})));
  EXPECT_EQ(Get(Metric::kCatPatternChi2PValue, cur, &prev),
            Chi2PValue(CountPatterns({"A1", "B2", "CC"}), CountPatterns({"11", "X9"})));
  EXPECT_EQ(Get(Metric::kCatPatternKlDiv, cur, &prev),
            SmoothedKlDivergence(CountPatterns({"A1", "B2", "CC"}), CountPatterns({"11", "X9"})));
  EXPECT_EQ(Get(Metric::kCatPatternCosine, cur, &prev),
            CosineDistance(CountPatterns({"A1", "B2", "CC"}), CountPatterns({"11", "X9"})));
}

// ---- Real runs against the authors' definitions. Expected values: numpy 2.4.6 / scipy 1.17.1
// on the same runs, as dists.py computes them (np.histogram with 10 bins on the current run and
// its edges for the previous one, support intersection; scipy.stats.wasserstein_distance,
// ks_2samp (default method: exact here), chi2_contingency on counts + 1, spatial.distance.cosine,
// jensenshannon, stats.entropy; Cohen's d as in dists.cohen_d, absolute).

std::string DataPath(const char* file) {
  return std::string(VLC_SOURCE_DIR) + "/tests/data/avh/" + file;
}

const PipelineRun& FindRun(const std::vector<PipelineRun>& runs, const std::string& key) {
  for (const PipelineRun& r : runs) {
    if (r.key == key) return r;
  }
  ADD_FAILURE() << "no run " << key;
  return runs.front();
}

void ExpectMetric(Metric m, const Column& cur, const Column& prev, double expected) {
  const double got = Get(m, cur, &prev);
  EXPECT_NEAR(got, expected, 1e-12 * std::max(1.0, std::abs(expected)))
      << MetricName(m) << " of " << cur.name();
}

TEST(DqRealDataMetrics, WeatherFebruaryAgainstJanuary2012) {
  absl::StatusOr<Table> table = ReadCsvFile(DataPath("weather.csv"));
  ASSERT_TRUE(table.ok()) << table.status();
  absl::StatusOr<std::vector<PipelineRun>> runs = SplitIntoRuns(*table, "date", "month");
  ASSERT_TRUE(runs.ok()) << runs.status();
  const Table& jan = FindRun(*runs, "2012-01").table;
  const Table& feb = FindRun(*runs, "2012-02").table;
  const Column& cur = *feb.Find("temp_max");
  const Column& prev = *jan.Find("temp_max");
  ExpectMetric(Metric::kNumEmd, cur, prev, 1.927864293659622);
  ExpectMetric(Metric::kNumJsDiv, cur, prev, 0.06028544037069951);
  ExpectMetric(Metric::kNumKlDiv, cur, prev, 0.3928536623263077);
  ExpectMetric(Metric::kNumKsPValue, cur, prev, 0.02119294447064363);
  ExpectMetric(Metric::kNumCohenD, cur, prev, 0.4985043301770359);
  ExpectMetric(Metric::kNumMin, cur, prev, 1.7);
  ExpectMetric(Metric::kNumMax, cur, prev, 17.8);
  ExpectMetric(Metric::kNumMean, cur, prev, 8.932758620689656);
  ExpectMetric(Metric::kNumMedian, cur, prev, 8.3);
  ExpectMetric(Metric::kNumSum, cur, prev, 518.1);
  ExpectMetric(Metric::kNumRange, cur, prev, 16.1);
  ExpectMetric(Metric::kNumUniqueRatio, cur, prev, 0.3275862068965517);
  ExpectMetric(Metric::kNumCount, cur, prev, 58);
  ExpectMetric(Metric::kNumCompleteRatio, cur, prev, 1.0);

  const Column& pc = *feb.Find("precipitation");
  const Column& pp = *jan.Find("precipitation");
  ExpectMetric(Metric::kNumEmd, pc, pp, 1.5585094549499443);
  ExpectMetric(Metric::kNumJsDiv, pc, pp, 0.03906448574001465);
  ExpectMetric(Metric::kNumKlDiv, pc, pp, 0.1850275568296981);
  ExpectMetric(Metric::kNumKsPValue, pc, pp, 0.22078954607072213);
  ExpectMetric(Metric::kNumCohenD, pc, pp, 0.29572966659375416);
  ExpectMetric(Metric::kNumMedian, pc, pp, 0.15);

  const Column& wc = *feb.Find("weather");
  const Column& wp = *jan.Find("weather");
  ExpectMetric(Metric::kCatL1, wc, wp, 0.2380422691879866);
  ExpectMetric(Metric::kCatLInf, wc, wp, 0.09454949944382646);
  ExpectMetric(Metric::kCatCosine, wc, wp, 0.01968202716006129);
  ExpectMetric(Metric::kCatChi2PValue, wc, wp, 0.4649249888741528);
  ExpectMetric(Metric::kCatJsDistance, wc, wp, 0.11784568334163283);
  ExpectMetric(Metric::kCatKlDiv, wc, wp, 0.03844201506042377);
  // Every weather word is one run of letters: one pattern, no pattern drift.
  ExpectMetric(Metric::kCatPatternL1, wc, wp, 0.0);
  ExpectMetric(Metric::kCatPatternChi2PValue, wc, wp, 1.0);

  // Dates never repeat across months: disjoint supports.
  const Column& dc = *feb.Find("date");
  const Column& dp = *jan.Find("date");
  ExpectMetric(Metric::kCatL1, dc, dp, 2.0);
  ExpectMetric(Metric::kCatCosine, dc, dp, 1.0);
  ExpectMetric(Metric::kCatChi2PValue, dc, dp, 0.44104212463717196);
  ExpectMetric(Metric::kCatJsDistance, dc, dp, 0.8325546111576977);
  ExpectMetric(Metric::kCatKlDiv, dc, dp, 0.5547117437033044);
}

TEST(DqRealDataMetrics, FlightsSecondDayAgainstTheFirst) {
  absl::StatusOr<Table> table = ReadJsonRecordsFile(DataPath("flights-20k.json"));
  ASSERT_TRUE(table.ok()) << table.status();
  absl::StatusOr<std::vector<PipelineRun>> runs = SplitIntoRuns(*table, "date", "day");
  ASSERT_TRUE(runs.ok()) << runs.status();
  const Table& d1 = FindRun(*runs, "2001-01-01").table;
  const Table& d2 = FindRun(*runs, "2001-01-02").table;
  const Column& cur = *d2.Find("delay");
  const Column& prev = *d1.Find("delay");
  ExpectMetric(Metric::kNumEmd, cur, prev, 5.570282611378509);
  ExpectMetric(Metric::kNumJsDiv, cur, prev, 0.006958055786298178);
  ExpectMetric(Metric::kNumKlDiv, cur, prev, 0.04452405973349515);
  ExpectMetric(Metric::kNumKsPValue, cur, prev, 0.08691917528463507);
  ExpectMetric(Metric::kNumCohenD, cur, prev, 0.001913075509665962);
  ExpectMetric(Metric::kNumMean, cur, prev, 15.703196347031964);
  ExpectMetric(Metric::kNumSum, cur, prev, 3439.0);
  ExpectMetric(Metric::kNumUniqueRatio, cur, prev, 0.410958904109589);
  ExpectMetric(Metric::kNumCount, cur, prev, 219);

  const Column& oc = *d2.Find("origin");
  const Column& op = *d1.Find("origin");
  ExpectMetric(Metric::kCatL1, oc, op, 0.6244600765148707);
  ExpectMetric(Metric::kCatLInf, oc, op, 0.040232012834752556);
  ExpectMetric(Metric::kCatCosine, oc, op, 0.16316099648711924);
  ExpectMetric(Metric::kCatChi2PValue, oc, op, 0.9999906479540609);
  ExpectMetric(Metric::kCatJsDistance, oc, op, 0.33413882358153185);
  ExpectMetric(Metric::kCatKlDiv, oc, op, 0.15393084433448442);
  ExpectMetric(Metric::kCatMeanLength, oc, op, 3.0);
  ExpectMetric(Metric::kCatMeanLetters, oc, op, 3.0);
}


// ---- The prepared-run path of ComputeMetrics against the public building blocks, on runs long
// enough to take the radix sort and the hash-map counts: the same values to the last bit.

std::vector<double> RandomNumbers(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> kind(0, 9);
  std::normal_distribution<double> normal(0, 1);
  std::vector<double> v;
  for (size_t i = 0; i < n; ++i) {
    switch (kind(rng)) {
      case 0: v.push_back(0.0); break;
      case 1: v.push_back(-0.0); break;
      case 2: v.push_back(std::round(normal(rng) * 1000) / 100); break;  // cents, repeats
      case 3: v.push_back(normal(rng) * 1e-300); break;                  // tiny, both signs
      case 4: v.push_back(normal(rng) * 1e300); break;                   // huge, both signs
      default: v.push_back(normal(rng) * 50 + 100); break;
    }
  }
  return v;
}

TEST(DqNumericMetrics, SortNumbersOrdersAsStdSortAtEverySize) {
  for (size_t n : {0, 1, 2, 100, 4095, 4096, 5000, 100000}) {
    std::vector<double> got = RandomNumbers(n, n + 7);
    std::vector<double> want = got;
    std::sort(want.begin(), want.end());
    SortNumbers(&got);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(got[i], want[i]) << "n " << n << " at " << i;
  }
  // -0 before +0 on the radix path, so the sorted bits are one sequence on every machine.
  std::vector<double> zeros(5000);
  for (size_t i = 0; i < zeros.size(); ++i) zeros[i] = i % 2 == 0 ? 0.0 : -0.0;
  SortNumbers(&zeros);
  EXPECT_TRUE(std::signbit(zeros[2499]));
  EXPECT_FALSE(std::signbit(zeros[2500]));
}

TEST(DqNumericMetrics, PreparedRunsGiveTheBuildingBlocksValues) {
  // The previous run reaches past the current run's range on both sides.
  std::vector<double> cur = RandomNumbers(20000, 1), prev = RandomNumbers(15000, 2);
  for (double& x : cur) x = std::clamp(x, -500.0, 500.0);
  Nums cn(cur.begin(), cur.end()), pn(prev.begin(), prev.end());
  cn.push_back(std::nullopt);
  const Column c = Num(cn), p = Num(pn);
  EXPECT_EQ(Get(Metric::kNumJsDiv, c, &p), HistogramJsDivergence(cur, prev));
  EXPECT_EQ(Get(Metric::kNumKlDiv, c, &p), HistogramKlDivergence(cur, prev));
  EXPECT_EQ(Get(Metric::kNumEmd, c, &p), Emd(cur, prev));
  EXPECT_EQ(Get(Metric::kNumMedian, c), Median(cur));
  // A constant current run: the widened one-unit range.
  std::vector<double> flat(6000, 3.25);
  const Column f = Num(Nums(flat.begin(), flat.end()));
  EXPECT_EQ(Get(Metric::kNumJsDiv, f, &p), HistogramJsDivergence(flat, prev));
  EXPECT_EQ(Get(Metric::kNumKlDiv, f, &p), HistogramKlDivergence(flat, prev));
}

Strs RandomStrings(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const std::vector<std::string> shapes = {"Seattle", "AB-1234", "New Lorem", "USA", "Zürich",
                                           "x", "", "42", "1,000.5", "ID-0099"};
  std::uniform_int_distribution<size_t> pick(0, shapes.size() - 1);
  std::uniform_int_distribution<int> suffix(0, 300);
  Strs v;
  for (size_t i = 0; i < n; ++i) {
    if (i % 50 == 0) {
      v.push_back(std::nullopt);
      continue;
    }
    std::string s = shapes[pick(rng)];
    if (i % 3 == 0) s += std::to_string(suffix(rng));
    v.push_back(std::move(s));
  }
  return v;
}

std::vector<std::string_view> Views(const Column& c) { return c.NonNullStrings(); }

TEST(DqCategoricalMetrics, PreparedRunsGiveTheBuildingBlocksValues) {
  Column c = Cat(RandomStrings(30000, 3)), p = Cat(RandomStrings(20000, 4));
  c.set_span(31);
  p.set_span(30);
  const ValueCounts cv = CountValues(Views(c)), pv = CountValues(Views(p));
  const ValueCounts cp = CountPatterns(Views(c)), pp = CountPatterns(Views(p));
  ASSERT_GT(cv.size(), 1000u);  // many distinct values, a few patterns
  ASSERT_GT(cp.size(), 5u);
  EXPECT_EQ(Get(Metric::kCatL1, c, &p), L1Distance(cv, pv));
  EXPECT_EQ(Get(Metric::kCatLInf, c, &p), LInfDistance(cv, pv));
  EXPECT_EQ(Get(Metric::kCatCosine, c, &p), CosineDistance(cv, pv));
  EXPECT_EQ(Get(Metric::kCatChi2PValue, c, &p), Chi2PValue(cv, pv));
  EXPECT_EQ(Get(Metric::kCatJsDistance, c, &p), JsDistance(cv, pv));
  EXPECT_EQ(Get(Metric::kCatKlDiv, c, &p), SmoothedKlDivergence(cv, pv));
  EXPECT_EQ(Get(Metric::kCatPatternL1, c, &p), L1Distance(cp, pp));
  EXPECT_EQ(Get(Metric::kCatPatternLInf, c, &p), LInfDistance(cp, pp));
  EXPECT_EQ(Get(Metric::kCatPatternCosine, c, &p), CosineDistance(cp, pp));
  EXPECT_EQ(Get(Metric::kCatPatternChi2PValue, c, &p), Chi2PValue(cp, pp));
  EXPECT_EQ(Get(Metric::kCatPatternJsDistance, c, &p), JsDistance(cp, pp));
  EXPECT_EQ(Get(Metric::kCatPatternKlDiv, c, &p), SmoothedKlDivergence(cp, pp));
  const StringStats stats = ComputeStringStats(Views(c));
  EXPECT_EQ(Get(Metric::kCatMeanLength, c), stats.mean_length);
  EXPECT_EQ(Get(Metric::kCatMeanLetters, c), stats.mean_letters);
  EXPECT_EQ(Get(Metric::kCatMeanDigits, c), stats.mean_digits);
  EXPECT_EQ(Get(Metric::kCatMeanPunctuation, c), stats.mean_punctuation);
  EXPECT_EQ(Get(Metric::kCatDistinctCount, c), static_cast<double>(cv.size()));
  EXPECT_EQ(Get(Metric::kCatRowsPerSpan, c), 30000.0 / 31);
  // ComputeMetrics (all at once, shared alignment) agrees with ComputeMetric one by one.
  absl::StatusOr<std::vector<MetricValue>> all = ComputeMetrics(c, &p);
  ASSERT_TRUE(all.ok()) << all.status();
  for (const MetricValue& v : *all) EXPECT_EQ(v.value, Get(v.metric, c, &p)) << MetricName(v.metric);
}

}  // namespace
}  // namespace vlc::dq
