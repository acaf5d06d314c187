#include "dq/metrics.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "boost/math/distributions/chi_squared.hpp"
#include "common/status.h"
#include "dq/kolmogorov.h"

namespace vlc::dq {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct MetricInfo {
  Metric metric;
  std::string_view name;
  ColumnType type;
  bool pairwise;
};

constexpr ColumnType kNum = ColumnType::kNumeric;
constexpr ColumnType kCat = ColumnType::kCategorical;

// In enum order, so that Info(m) is an index (checked at compile time below).
constexpr std::array<MetricInfo, kMetricCount> kMetricInfo = {{
    {Metric::kNumEmd, "num_emd", kNum, true},
    {Metric::kNumJsDiv, "num_js_div", kNum, true},
    {Metric::kNumKlDiv, "num_kl_div", kNum, true},
    {Metric::kNumKsPValue, "num_ks_p_value", kNum, true},
    {Metric::kNumCohenD, "num_cohen_d", kNum, true},
    {Metric::kNumMin, "num_min", kNum, false},
    {Metric::kNumMax, "num_max", kNum, false},
    {Metric::kNumMean, "num_mean", kNum, false},
    {Metric::kNumMedian, "num_median", kNum, false},
    {Metric::kNumCount, "num_count", kNum, false},
    {Metric::kNumSum, "num_sum", kNum, false},
    {Metric::kNumRange, "num_range", kNum, false},
    {Metric::kNumUniqueRatio, "num_unique_ratio", kNum, false},
    {Metric::kNumCompleteRatio, "num_complete_ratio", kNum, false},
    {Metric::kCatL1, "cat_l1", kCat, true},
    {Metric::kCatLInf, "cat_l_inf", kCat, true},
    {Metric::kCatCosine, "cat_cosine", kCat, true},
    {Metric::kCatChi2PValue, "cat_chi2_p_value", kCat, true},
    {Metric::kCatJsDistance, "cat_js_distance", kCat, true},
    {Metric::kCatKlDiv, "cat_kl_div", kCat, true},
    {Metric::kCatPatternL1, "cat_pattern_l1", kCat, true},
    {Metric::kCatPatternLInf, "cat_pattern_l_inf", kCat, true},
    {Metric::kCatPatternCosine, "cat_pattern_cosine", kCat, true},
    {Metric::kCatPatternChi2PValue, "cat_pattern_chi2_p_value", kCat, true},
    {Metric::kCatPatternJsDistance, "cat_pattern_js_distance", kCat, true},
    {Metric::kCatPatternKlDiv, "cat_pattern_kl_div", kCat, true},
    {Metric::kCatCount, "cat_count", kCat, false},
    {Metric::kCatMeanLength, "cat_mean_length", kCat, false},
    {Metric::kCatMeanLetters, "cat_mean_letters", kCat, false},
    {Metric::kCatMeanDigits, "cat_mean_digits", kCat, false},
    {Metric::kCatMeanPunctuation, "cat_mean_punctuation", kCat, false},
    {Metric::kCatUniqueRatio, "cat_unique_ratio", kCat, false},
    {Metric::kCatCompleteRatio, "cat_complete_ratio", kCat, false},
    {Metric::kCatDistinctCount, "cat_distinct_count", kCat, false},
    {Metric::kNumRowsPerSpan, "num_rows_per_span", kNum, false},
    {Metric::kCatRowsPerSpan, "cat_rows_per_span", kCat, false},
}};

constexpr bool InfoInEnumOrder() {
  for (int i = 0; i < kMetricCount; ++i) {
    if (static_cast<int>(kMetricInfo[i].metric) != i) return false;
  }
  return true;
}
static_assert(InfoInEnumOrder(), "kMetricInfo must list the metrics in enum order");

const MetricInfo& Info(Metric m) { return kMetricInfo[static_cast<int>(m)]; }

// Neumaier's compensated sum: Sum and Mean of a run stay exact to the last bit or two however
// the magnitudes mix, so that a history of sums does not carry summation noise into its sigma.
class CompensatedSum {
 public:
  void Add(double x) {
    const double t = sum_ + x;
    comp_ += std::abs(sum_) >= std::abs(x) ? (sum_ - t) + x : (x - t) + sum_;
    sum_ = t;
  }
  double value() const { return sum_ + comp_; }

 private:
  double sum_ = 0;
  double comp_ = 0;
};

double SortedMedian(const std::vector<double>& s) {
  if (s.empty()) return kNaN;
  const size_t k = s.size() / 2;
  return s.size() % 2 == 1 ? s[k] : (s[k - 1] + s[k]) / 2;
}

double MeanOf(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  CompensatedSum sum;
  for (double x : v) sum.Add(x);
  return sum.value() / static_cast<double>(v.size());
}

// Sum of squared deviations from the mean, two-pass for accuracy.
double SquaredDeviations(const std::vector<double>& v, double mean) {
  CompensatedSum ss;
  for (double x : v) ss.Add((x - mean) * (x - mean));
  return ss.value();
}

double EmdSorted(const std::vector<double>& a, const std::vector<double>& b) {
  const int64_t n = static_cast<int64_t>(a.size());
  const int64_t m = static_cast<int64_t>(b.size());
  if (n == 0 || m == 0) return kNaN;
  // Integral of |F_a - F_b| over the line: from one distinct pooled value to the next both CDFs
  // are flat, at i/n and j/m, so the integral is a sum of |i m - j n| / (n m) times the gap.
  CompensatedSum total;
  double last_value = 0;
  int64_t last_diff = 0;  // |i m - j n| since last_value; 0 before the first value
  ForEachPooledValue(a, b, [&](double v, int64_t i, int64_t j) {
    total.Add(static_cast<double>(last_diff) * (v - last_value));
    const int64_t diff = i * m - j * n;
    last_diff = diff < 0 ? -diff : diff;
    last_value = v;
  });
  return total.value() / (static_cast<double>(n) * static_cast<double>(m));
}

// Bin masses of the current and previous runs on the current run's 10 bins (numpy.histogram's
// edges and bin rule), each divided by its run's size.
struct SharedHistogram {
  std::array<double, 10> current{};
  std::array<double, 10> previous{};
};

// numpy.histogram's 10 bins over [lo, hi] of the current run (edges by numpy.linspace, a
// zero-width range widened to one unit).
struct HistogramBins {
  static constexpr int kBins = 10;
  double lo = 0, hi = 0;
  std::array<double, kBins + 1> edges{};

  HistogramBins(double min, double max) : lo(min), hi(max) {
    if (lo == hi) {  // numpy widens a zero-width range to one unit
      lo -= 0.5;
      hi += 0.5;
    }
    // numpy.linspace: start + k * step, the last edge exactly `hi`.
    const double step = (hi - lo) / kBins;
    for (int k = 0; k < kBins; ++k) edges[k] = lo + k * step;
    edges[kBins] = hi;
  }
  // edges[k] <= x < edges[k + 1], the top edge in the last bin; -1 outside [lo, hi].
  int BinOf(double x) const {
    if (x < lo || x > hi) return -1;
    int k = static_cast<int>(std::upper_bound(edges.begin(), edges.end(), x) - edges.begin()) - 1;
    return std::min(k, kBins - 1);
  }
};

SharedHistogram Normalised(SharedHistogram h, size_t current_size, size_t previous_size) {
  for (int k = 0; k < HistogramBins::kBins; ++k) {
    h.current[k] /= static_cast<double>(current_size);
    h.previous[k] /= static_cast<double>(previous_size);
  }
  return h;
}

SharedHistogram MakeSharedHistogram(const std::vector<double>& current,
                                    const std::vector<double>& previous) {
  const HistogramBins bins(*std::min_element(current.begin(), current.end()),
                           *std::max_element(current.begin(), current.end()));
  SharedHistogram h;
  for (double x : current) h.current[bins.BinOf(x)] += 1;
  for (double x : previous) {
    if (int k = bins.BinOf(x); k >= 0) h.previous[k] += 1;
  }
  return Normalised(h, current.size(), previous.size());
}

// The same histogram of two sorted runs, from 11 binary searches per run instead of one per value:
// BinOf does not decrease with x inside [lo, hi] (the edges do not decrease), so each bin is one
// contiguous stretch of a sorted run. The counts, and so the masses, are the ones above exactly.
SharedHistogram SortedSharedHistogram(const std::vector<double>& current,
                                      const std::vector<double>& previous) {
  const HistogramBins bins(current.front(), current.back());
  auto count_bins = [&](const std::vector<double>& s, std::array<double, 10>* out) {
    auto first = std::lower_bound(s.begin(), s.end(), bins.lo);
    auto last = std::upper_bound(first, s.end(), bins.hi);
    for (int k = 0; k < HistogramBins::kBins; ++k) {
      auto next = std::partition_point(first, last, [&](double x) { return bins.BinOf(x) <= k; });
      (*out)[k] = static_cast<double>(next - first);
      first = next;
    }
  };
  SharedHistogram h;
  count_bins(current, &h.current);
  count_bins(previous, &h.previous);
  return Normalised(h, current.size(), previous.size());
}

double JsOfHistogram(const SharedHistogram& h) {
  double js = 0;
  for (size_t k = 0; k < h.current.size(); ++k) {
    const double p = h.current[k], q = h.previous[k];
    if (p == 0 || q == 0) continue;
    const double mid = (p + q) / 2;
    js += 0.5 * p * std::log(p / mid) + 0.5 * q * std::log(q / mid);
  }
  return js;
}

double KlOfHistogram(const SharedHistogram& h) {
  double kl = 0;
  for (size_t k = 0; k < h.current.size(); ++k) {
    const double p = h.current[k], q = h.previous[k];
    if (p == 0 || q == 0) continue;
    kl += p * std::log(p / q);
  }
  return kl;
}

// ---- Categorical helpers.

enum class CharClass { kLetter, kDigit, kOther };

CharClass ClassOf(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return CharClass::kLetter;
  if (c >= '0' && c <= '9') return CharClass::kDigit;
  return CharClass::kOther;
}

// Calls fn(class) once per code point of UTF-8 text: a byte 10xxxxxx continues the code point
// before it. Malformed UTF-8 is counted byte by byte rather than rejected; metrics must not fail
// on dirty data, which is what they exist to describe.
template <typename Fn>
void ForEachCodePoint(std::string_view s, Fn&& fn) {
  for (unsigned char c : s) {
    if ((c & 0xC0) == 0x80) continue;
    fn(ClassOf(c));
  }
}

// Counts of both runs over the union of their values, in key order, and their frequencies
// (count / total) when neither run is empty.
struct AlignedCounts {
  std::vector<double> current;
  std::vector<double> previous;
  double current_total = 0;
  double previous_total = 0;
  std::vector<double> p;  // current / current_total; empty when either run is
  std::vector<double> q;  // previous / previous_total
  bool either_empty() const { return current_total == 0 || previous_total == 0; }
};

// `A` and `B`: ValueCounts, or vectors of (key, count) pairs sorted by key with unique keys.
template <typename A, typename B>
AlignedCounts Align(const A& current, const B& previous) {
  AlignedCounts out;
  out.current.reserve(std::max(current.size(), previous.size()));
  out.previous.reserve(std::max(current.size(), previous.size()));
  auto a = current.begin();
  auto b = previous.begin();
  while (a != current.end() || b != previous.end()) {
    double ca = 0, cb = 0;
    if (b == previous.end() || (a != current.end() && a->first < b->first)) {
      ca = static_cast<double>((a++)->second);
    } else if (a == current.end() || b->first < a->first) {
      cb = static_cast<double>((b++)->second);
    } else {
      ca = static_cast<double>((a++)->second);
      cb = static_cast<double>((b++)->second);
    }
    out.current.push_back(ca);
    out.previous.push_back(cb);
    out.current_total += ca;
    out.previous_total += cb;
  }
  if (!out.either_empty()) {
    out.p = out.current;
    out.q = out.previous;
    for (double& x : out.p) x /= out.current_total;
    for (double& x : out.q) x /= out.previous_total;
  }
  return out;
}

// x ln(x / y) with 0 ln 0 = 0, as scipy.special.rel_entr.
double RelEntr(double x, double y) { return x == 0 ? 0 : x * std::log(x / y); }

// The six distances on aligned counts; NaN when either run is empty.
double L1Of(const AlignedCounts& c) {
  if (c.either_empty()) return kNaN;
  double sum = 0;
  for (size_t i = 0; i < c.p.size(); ++i) sum += std::abs(c.p[i] - c.q[i]);
  return sum;
}

double LInfOf(const AlignedCounts& c) {
  if (c.either_empty()) return kNaN;
  double max = 0;
  for (size_t i = 0; i < c.p.size(); ++i) max = std::max(max, std::abs(c.p[i] - c.q[i]));
  return max;
}

double CosineOf(const AlignedCounts& c) {
  if (c.either_empty()) return kNaN;
  double pq = 0, pp = 0, qq = 0;
  for (size_t i = 0; i < c.p.size(); ++i) {
    pq += c.p[i] * c.q[i];
    pp += c.p[i] * c.p[i];
    qq += c.q[i] * c.q[i];
  }
  // Rounding can put identical distributions a hair below 0.
  return std::max(0.0, 1.0 - pq / std::sqrt(pp * qq));
}

double JsDistanceOf(const AlignedCounts& c) {
  if (c.either_empty()) return kNaN;
  double js = 0;
  for (size_t i = 0; i < c.p.size(); ++i) {
    const double mid = (c.p[i] + c.q[i]) / 2;
    js += RelEntr(c.p[i], mid) + RelEntr(c.q[i], mid);
  }
  return std::sqrt(std::max(0.0, js / 2));
}

double Chi2PValueOf(const AlignedCounts& c) {
  if (c.either_empty()) return kNaN;
  const size_t k = c.current.size();
  if (k < 2) return 1.0;  // one category: observed equals expected, chi2 = 0
  // 2 x k table of counts + 1; expected = row total * column total / grand total.
  const double row_c = c.current_total + static_cast<double>(k);
  const double row_p = c.previous_total + static_cast<double>(k);
  const double total = row_c + row_p;
  const bool yates = k == 2;  // dof = 1: scipy's default continuity correction
  double stat = 0;
  for (size_t i = 0; i < k; ++i) {
    const double col = c.current[i] + c.previous[i] + 2;
    for (auto [observed, row] :
         {std::pair{c.current[i] + 1, row_c}, std::pair{c.previous[i] + 1, row_p}}) {
      const double expected = row * col / total;
      double diff = std::abs(observed - expected);
      if (yates) diff = std::max(0.0, diff - 0.5);
      stat += diff * diff / expected;
    }
  }
  using namespace boost::math::policies;
  using Policy = policy<domain_error<ignore_error>, overflow_error<ignore_error>,
                        evaluation_error<ignore_error>>;
  const boost::math::chi_squared_distribution<double, Policy> dist(static_cast<double>(k - 1));
  return boost::math::cdf(boost::math::complement(dist, stat));
}

double SmoothedKlOf(const AlignedCounts& c) {
  if (c.either_empty()) return kNaN;
  const double k = static_cast<double>(c.current.size());
  double kl = 0;
  for (size_t i = 0; i < c.current.size(); ++i) {
    const double p = (c.current[i] + 1) / (c.current_total + k);
    const double q = (c.previous[i] + 1) / (c.previous_total + k);
    kl += p * std::log(p / q);
  }
  return kl;
}

// ---- Prepared runs: what every metric of a column type needs, computed once per run.

// Rows over the run's span; NaN without one.
double RowsPerSpan(size_t rows, const std::optional<double>& span) {
  return span ? static_cast<double>(rows) / *span : kNaN;
}

struct NumericRun {
  size_t rows = 0;
  std::optional<double> span;
  std::vector<double> sorted;  // non-null values
};

NumericRun PrepareNumeric(const Column& c) {
  NumericRun r;
  r.rows = c.size();
  r.span = c.span();
  r.sorted = c.NonNullNumbers();
  SortNumbers(&r.sorted);
  return r;
}

// Value -> count, sorted by value. The keys of `values` view the column's own strings.
template <typename Key>
using SortedCounts = std::vector<std::pair<Key, int64_t>>;

template <typename Key>
SortedCounts<Key> SortedFrom(absl::flat_hash_map<Key, int64_t>&& counts) {
  SortedCounts<Key> out;
  out.reserve(counts.size());
  for (auto& [key, n] : counts) out.emplace_back(std::move(key), n);
  std::sort(out.begin(), out.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
  return out;
}

struct CategoricalRun {
  size_t rows = 0;
  std::optional<double> span;
  size_t non_null = 0;
  SortedCounts<std::string_view> values;
  SortedCounts<std::string> patterns;
  StringStats stats;
};

// One pass over the rows counts the values in a hash map; the pattern and the character counts
// are functions of the value, so they are taken once per distinct value and weighted by its count.
// Sorting the distinct values afterwards gives the distances one summation order on every machine,
// the order CountValues' ordered map gives, so the results are the same to the last bit.
CategoricalRun PrepareCategorical(const Column& c) {
  CategoricalRun r;
  r.rows = c.size();
  r.span = c.span();
  absl::flat_hash_map<std::string_view, int64_t> counts;
  for (const auto& v : c.strings()) {
    if (!v.has_value()) continue;
    ++counts[std::string_view(*v)];
    ++r.non_null;
  }
  r.values = SortedFrom(std::move(counts));

  absl::flat_hash_map<std::string, int64_t> patterns;
  int64_t length = 0, letters = 0, digits = 0, other = 0;
  for (const auto& [value, n] : r.values) {
    ForEachCodePoint(value, [&, n = n](CharClass cls) {
      length += n;
      letters += cls == CharClass::kLetter ? n : 0;
      digits += cls == CharClass::kDigit ? n : 0;
      other += cls == CharClass::kOther ? n : 0;
    });
    patterns[ValuePattern(value)] += n;
  }
  r.patterns = SortedFrom(std::move(patterns));
  if (r.non_null > 0) {
    const double n = static_cast<double>(r.non_null);
    r.stats.mean_length = static_cast<double>(length) / n;
    r.stats.mean_letters = static_cast<double>(letters) / n;
    r.stats.mean_digits = static_cast<double>(digits) / n;
    r.stats.mean_punctuation = static_cast<double>(other) / n;
  }
  return r;
}

// What the pairwise metrics of two prepared runs share, computed once for all of them.
struct NumericPair {
  SharedHistogram histogram;  // JS_div and KL_div
};

std::optional<NumericPair> PairNumeric(const NumericRun& cur, const NumericRun* prev) {
  if (prev == nullptr || cur.sorted.empty() || prev->sorted.empty()) return std::nullopt;
  return NumericPair{SortedSharedHistogram(cur.sorted, prev->sorted)};
}

struct CategoricalPair {
  AlignedCounts values;
  AlignedCounts patterns;
};

std::optional<CategoricalPair> PairCategorical(const CategoricalRun& cur,
                                               const CategoricalRun* prev) {
  if (prev == nullptr || cur.non_null == 0 || prev->non_null == 0) return std::nullopt;
  return CategoricalPair{Align(cur.values, prev->values), Align(cur.patterns, prev->patterns)};
}

double Ratio(size_t num, size_t den) {
  return den == 0 ? kNaN : static_cast<double>(num) / static_cast<double>(den);
}

// `pair` is set when both runs have values and the metric is pairwise.
double NumericMetric(Metric m, const NumericRun& cur, const NumericRun* prev,
                     const NumericPair* pair) {
  const std::vector<double>& s = cur.sorted;
  const bool pair_ok = pair != nullptr;
  switch (m) {
    case Metric::kNumEmd:
      return pair_ok ? EmdSorted(s, prev->sorted) : kNaN;
    case Metric::kNumJsDiv:
      return pair_ok ? JsOfHistogram(pair->histogram) : kNaN;
    case Metric::kNumKlDiv:
      return pair_ok ? KlOfHistogram(pair->histogram) : kNaN;
    case Metric::kNumKsPValue:
      return pair_ok ? KsTwoSampleSorted(s, prev->sorted).p_value : kNaN;
    case Metric::kNumCohenD:
      return pair_ok ? std::abs(CohenD(s, prev->sorted)) : kNaN;
    case Metric::kNumMin:
      return s.empty() ? kNaN : s.front();
    case Metric::kNumMax:
      return s.empty() ? kNaN : s.back();
    case Metric::kNumMean:
      return MeanOf(s);
    case Metric::kNumMedian:
      return SortedMedian(s);
    case Metric::kNumCount:
      return static_cast<double>(cur.rows);
    case Metric::kNumSum: {
      CompensatedSum sum;
      for (double x : s) sum.Add(x);
      return sum.value();
    }
    case Metric::kNumRange:
      return s.empty() ? kNaN : s.back() - s.front();
    case Metric::kNumUniqueRatio: {
      size_t distinct = 0;  // sorted: a new value starts wherever it differs from the one before
      for (size_t i = 0; i < s.size(); ++i) distinct += (i == 0 || s[i] != s[i - 1]) ? 1 : 0;
      return Ratio(distinct, s.size());
    }
    case Metric::kNumCompleteRatio:
      return Ratio(s.size(), cur.rows);
    case Metric::kNumRowsPerSpan:
      return RowsPerSpan(cur.rows, cur.span);
    default:
      return kNaN;
  }
}

double CategoricalMetric(Metric m, const CategoricalRun& cur, const CategoricalPair* pair) {
  const bool pair_ok = pair != nullptr;
  const bool any = cur.non_null > 0;
  switch (m) {
    case Metric::kCatL1:
      return pair_ok ? L1Of(pair->values) : kNaN;
    case Metric::kCatLInf:
      return pair_ok ? LInfOf(pair->values) : kNaN;
    case Metric::kCatCosine:
      return pair_ok ? CosineOf(pair->values) : kNaN;
    case Metric::kCatChi2PValue:
      return pair_ok ? Chi2PValueOf(pair->values) : kNaN;
    case Metric::kCatJsDistance:
      return pair_ok ? JsDistanceOf(pair->values) : kNaN;
    case Metric::kCatKlDiv:
      return pair_ok ? SmoothedKlOf(pair->values) : kNaN;
    case Metric::kCatPatternL1:
      return pair_ok ? L1Of(pair->patterns) : kNaN;
    case Metric::kCatPatternLInf:
      return pair_ok ? LInfOf(pair->patterns) : kNaN;
    case Metric::kCatPatternCosine:
      return pair_ok ? CosineOf(pair->patterns) : kNaN;
    case Metric::kCatPatternChi2PValue:
      return pair_ok ? Chi2PValueOf(pair->patterns) : kNaN;
    case Metric::kCatPatternJsDistance:
      return pair_ok ? JsDistanceOf(pair->patterns) : kNaN;
    case Metric::kCatPatternKlDiv:
      return pair_ok ? SmoothedKlOf(pair->patterns) : kNaN;
    case Metric::kCatCount:
      return static_cast<double>(cur.rows);
    case Metric::kCatMeanLength:
      return any ? cur.stats.mean_length : kNaN;
    case Metric::kCatMeanLetters:
      return any ? cur.stats.mean_letters : kNaN;
    case Metric::kCatMeanDigits:
      return any ? cur.stats.mean_digits : kNaN;
    case Metric::kCatMeanPunctuation:
      return any ? cur.stats.mean_punctuation : kNaN;
    case Metric::kCatUniqueRatio:
      return Ratio(cur.values.size(), cur.non_null);
    case Metric::kCatCompleteRatio:
      return Ratio(cur.non_null, cur.rows);
    case Metric::kCatDistinctCount:
      return static_cast<double>(cur.values.size());
    case Metric::kCatRowsPerSpan:
      return RowsPerSpan(cur.rows, cur.span);
    default:
      return kNaN;
  }
}

absl::Status CheckSameType(const Column& current, const Column* previous) {
  if (previous == nullptr || previous->type() == current.type()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "column '", current.name(), "' is ", ColumnTypeName(current.type()),
      " in the current run but ", ColumnTypeName(previous->type()),
      " in the previous one; give it one type in every run (a type override when reading)"));
}

}  // namespace

const std::string& MetricName(Metric metric) {
  // std::string rather than the table's string_view: callers put names into absl::StrCat, which
  // with Debian's Abseil does not take a std::string_view.
  static const auto* const kNames = [] {
    auto* names = new std::array<std::string, kMetricCount>();
    for (int i = 0; i < kMetricCount; ++i) (*names)[i] = std::string(kMetricInfo[i].name);
    return names;
  }();
  return (*kNames)[static_cast<int>(metric)];
}

absl::StatusOr<Metric> MetricFromName(std::string_view name) {
  for (const auto& info : kMetricInfo) {
    if (info.name == name) return info.metric;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown metric '", std::string(name),
                   "': names look like num_emd, num_mean, cat_l1, cat_count"));
}

ColumnType MetricColumnType(Metric metric) { return Info(metric).type; }

bool IsPairwise(Metric metric) { return Info(metric).pairwise; }

const std::vector<Metric>& MetricsFor(ColumnType type) {
  static const auto* const kByType = [] {
    auto* lists = new std::array<std::vector<Metric>, 2>();
    for (const auto& info : kMetricInfo) {
      (*lists)[info.type == ColumnType::kNumeric ? 0 : 1].push_back(info.metric);
    }
    return lists;
  }();
  return (*kByType)[type == ColumnType::kNumeric ? 0 : 1];
}

absl::StatusOr<std::vector<MetricValue>> ComputeMetrics(const Column& current,
                                                        const Column* previous) {
  VLC_RETURN_IF_ERROR(CheckSameType(current, previous));
  std::vector<MetricValue> out;
  if (current.is_numeric()) {
    const NumericRun cur = PrepareNumeric(current);
    std::optional<NumericRun> prev;
    if (previous != nullptr) prev = PrepareNumeric(*previous);
    const NumericRun* prev_run = prev ? &*prev : nullptr;
    const std::optional<NumericPair> pair = PairNumeric(cur, prev_run);
    for (Metric m : MetricsFor(ColumnType::kNumeric)) {
      if (IsPairwise(m) && !prev) continue;
      out.push_back({m, NumericMetric(m, cur, prev_run, pair ? &*pair : nullptr)});
    }
  } else {
    const CategoricalRun cur = PrepareCategorical(current);
    std::optional<CategoricalRun> prev;
    if (previous != nullptr) prev = PrepareCategorical(*previous);
    const std::optional<CategoricalPair> pair = PairCategorical(cur, prev ? &*prev : nullptr);
    for (Metric m : MetricsFor(ColumnType::kCategorical)) {
      if (IsPairwise(m) && !prev) continue;
      out.push_back({m, CategoricalMetric(m, cur, pair ? &*pair : nullptr)});
    }
  }
  return out;
}

absl::StatusOr<double> ComputeMetric(Metric metric, const Column& current, const Column* previous) {
  VLC_RETURN_IF_ERROR(CheckSameType(current, previous));
  if (MetricColumnType(metric) != current.type()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metric ", MetricName(metric), " applies to ", ColumnTypeName(MetricColumnType(metric)),
        " columns, but column '", current.name(), "' is ", ColumnTypeName(current.type())));
  }
  if (IsPairwise(metric) && previous == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("metric ", MetricName(metric),
                                                   " compares two runs: pass the previous run "
                                                   "of column '",
                                                   current.name(), "'"));
  }
  // A single-run metric reads the current run only, even when a previous one is given.
  const Column* compared = IsPairwise(metric) ? previous : nullptr;
  if (current.is_numeric()) {
    const NumericRun cur = PrepareNumeric(current);
    if (compared == nullptr) return NumericMetric(metric, cur, nullptr, nullptr);
    const NumericRun prev = PrepareNumeric(*compared);
    const std::optional<NumericPair> pair = PairNumeric(cur, &prev);
    return NumericMetric(metric, cur, &prev, pair ? &*pair : nullptr);
  }
  const CategoricalRun cur = PrepareCategorical(current);
  if (compared == nullptr) return CategoricalMetric(metric, cur, nullptr);
  const CategoricalRun prev = PrepareCategorical(*compared);
  const std::optional<CategoricalPair> pair = PairCategorical(cur, &prev);
  return CategoricalMetric(metric, cur, pair ? &*pair : nullptr);
}

// ---- Numeric metrics.

double Emd(const std::vector<double>& current, const std::vector<double>& previous) {
  std::vector<double> a = current, b = previous;
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return EmdSorted(a, b);
}

double HistogramJsDivergence(const std::vector<double>& current,
                             const std::vector<double>& previous) {
  if (current.empty() || previous.empty()) return kNaN;
  return JsOfHistogram(MakeSharedHistogram(current, previous));
}

double HistogramKlDivergence(const std::vector<double>& current,
                             const std::vector<double>& previous) {
  if (current.empty() || previous.empty()) return kNaN;
  return KlOfHistogram(MakeSharedHistogram(current, previous));
}

double CohenD(const std::vector<double>& current, const std::vector<double>& previous) {
  const size_t n = current.size(), m = previous.size();
  if (n == 0 || m == 0 || n + m < 3) return kNaN;
  const double mean_c = MeanOf(current), mean_p = MeanOf(previous);
  // (n - 1) var is the sum of squared deviations, which is also right (0) for a run of one value,
  // where the sample variance itself is undefined.
  const double pooled =
      std::sqrt((SquaredDeviations(current, mean_c) + SquaredDeviations(previous, mean_p)) /
                static_cast<double>(n + m - 2));
  return (mean_c - mean_p) / (pooled + 1e-10);
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return SortedMedian(values);
}

void SortNumbers(std::vector<double>* values) {
  std::vector<double>& v = *values;
  const size_t n = v.size();
  // Below a few thousand values the comparison sort is as fast and needs no extra memory.
  if (n < 4096) {
    std::sort(v.begin(), v.end());
    return;
  }
  // Flip every bit of a negative number and the sign bit of a positive one: the unsigned integers
  // then order as the numbers (larger magnitude negatives first).
  constexpr uint64_t kSign = uint64_t{1} << 63;
  auto to_key = [](double x) {
    uint64_t u;
    std::memcpy(&u, &x, sizeof u);
    return (u & kSign) != 0 ? ~u : u | kSign;
  };
  auto from_key = [](uint64_t u) {
    u = (u & kSign) != 0 ? u & ~kSign : ~u;
    double x;
    std::memcpy(&x, &u, sizeof x);
    return x;
  };
  constexpr int kDigitBits = 11;  // 2048 counters per pass stay in the first-level cache
  constexpr int kPasses = (64 + kDigitBits - 1) / kDigitBits;
  constexpr size_t kBuckets = size_t{1} << kDigitBits;
  std::vector<uint64_t> keys(n), scratch(n);
  std::vector<size_t> counts(kPasses * kBuckets, 0);
  for (size_t i = 0; i < n; ++i) {
    const uint64_t key = to_key(v[i]);
    keys[i] = key;
    for (int p = 0; p < kPasses; ++p) ++counts[p * kBuckets + ((key >> (p * kDigitBits)) & (kBuckets - 1))];
  }
  for (int p = 0; p < kPasses; ++p) {
    size_t* c = &counts[p * kBuckets];
    // A digit that every number shares (the top bits of numbers of one sign and scale) moves
    // nothing: skip its pass.
    if (c[(keys[0] >> (p * kDigitBits)) & (kBuckets - 1)] == n) continue;
    size_t offset = 0;
    for (size_t b = 0; b < kBuckets; ++b) {
      const size_t count = c[b];
      c[b] = offset;
      offset += count;
    }
    for (size_t i = 0; i < n; ++i) {
      const uint64_t key = keys[i];
      scratch[c[(key >> (p * kDigitBits)) & (kBuckets - 1)]++] = key;
    }
    keys.swap(scratch);
  }
  for (size_t i = 0; i < n; ++i) v[i] = from_key(keys[i]);
}

// ---- Categorical metrics.

ValueCounts CountValues(const std::vector<std::string_view>& values) {
  ValueCounts counts;
  for (std::string_view v : values) {
    auto it = counts.find(v);
    if (it == counts.end()) {
      counts.emplace(std::string(v), 1);
    } else {
      ++it->second;
    }
  }
  return counts;
}

std::string ValuePattern(std::string_view value) {
  std::string pattern;
  std::optional<CharClass> last;
  ForEachCodePoint(value, [&](CharClass c) {
    if (last == c) return;
    last = c;
    pattern += c == CharClass::kLetter ? "\\l" : c == CharClass::kDigit ? "\\d" : "-";
  });
  return pattern;
}

ValueCounts CountPatterns(const std::vector<std::string_view>& values) {
  ValueCounts counts;
  for (std::string_view v : values) ++counts[ValuePattern(v)];
  return counts;
}

double L1Distance(const ValueCounts& current, const ValueCounts& previous) {
  return L1Of(Align(current, previous));
}

double LInfDistance(const ValueCounts& current, const ValueCounts& previous) {
  return LInfOf(Align(current, previous));
}

double CosineDistance(const ValueCounts& current, const ValueCounts& previous) {
  return CosineOf(Align(current, previous));
}

double JsDistance(const ValueCounts& current, const ValueCounts& previous) {
  return JsDistanceOf(Align(current, previous));
}

double Chi2PValue(const ValueCounts& current, const ValueCounts& previous) {
  return Chi2PValueOf(Align(current, previous));
}

double SmoothedKlDivergence(const ValueCounts& current, const ValueCounts& previous) {
  return SmoothedKlOf(Align(current, previous));
}

StringStats ComputeStringStats(const std::vector<std::string_view>& values) {
  StringStats stats;
  if (values.empty()) return stats;
  int64_t length = 0, letters = 0, digits = 0, other = 0;
  for (std::string_view v : values) {
    ForEachCodePoint(v, [&](CharClass c) {
      ++length;
      letters += c == CharClass::kLetter;
      digits += c == CharClass::kDigit;
      other += c == CharClass::kOther;
    });
  }
  const double n = static_cast<double>(values.size());
  stats.mean_length = static_cast<double>(length) / n;
  stats.mean_letters = static_cast<double>(letters) / n;
  stats.mean_digits = static_cast<double>(digits) / n;
  stats.mean_punctuation = static_cast<double>(other) / n;
  return stats;
}

}  // namespace vlc::dq
