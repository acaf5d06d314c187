#include "dq/metrics.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>

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

SharedHistogram MakeSharedHistogram(const std::vector<double>& current,
                                    const std::vector<double>& previous) {
  constexpr int kBins = 10;
  double lo = *std::min_element(current.begin(), current.end());
  double hi = *std::max_element(current.begin(), current.end());
  if (lo == hi) {  // numpy widens a zero-width range to one unit
    lo -= 0.5;
    hi += 0.5;
  }
  // numpy.linspace: start + k * step, the last edge exactly `hi`.
  std::array<double, kBins + 1> edges;
  const double step = (hi - lo) / kBins;
  for (int k = 0; k < kBins; ++k) edges[k] = lo + k * step;
  edges[kBins] = hi;
  auto bin_of = [&](double x) -> int {
    if (x < lo || x > hi) return -1;
    // edges[k] <= x < edges[k + 1]; the top edge belongs to the last bin.
    int k = static_cast<int>(std::upper_bound(edges.begin(), edges.end(), x) - edges.begin()) - 1;
    return std::min(k, kBins - 1);
  };
  SharedHistogram h;
  for (double x : current) h.current[bin_of(x)] += 1;
  for (double x : previous) {
    if (int k = bin_of(x); k >= 0) h.previous[k] += 1;
  }
  for (int k = 0; k < kBins; ++k) {
    h.current[k] /= static_cast<double>(current.size());
    h.previous[k] /= static_cast<double>(previous.size());
  }
  return h;
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

// Frequencies of both runs over the union of their values, in key order.
struct AlignedCounts {
  std::vector<double> current;
  std::vector<double> previous;
  double current_total = 0;
  double previous_total = 0;
};

AlignedCounts Align(const ValueCounts& current, const ValueCounts& previous) {
  AlignedCounts out;
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
  return out;
}

// Frequencies (count / total); false when either run is empty.
bool Frequencies(const ValueCounts& current, const ValueCounts& previous, std::vector<double>* p,
                 std::vector<double>* q) {
  AlignedCounts c = Align(current, previous);
  if (c.current_total == 0 || c.previous_total == 0) return false;
  *p = std::move(c.current);
  *q = std::move(c.previous);
  for (double& x : *p) x /= c.current_total;
  for (double& x : *q) x /= c.previous_total;
  return true;
}

// x ln(x / y) with 0 ln 0 = 0, as scipy.special.rel_entr.
double RelEntr(double x, double y) { return x == 0 ? 0 : x * std::log(x / y); }

// ---- Prepared runs: what every metric of a column type needs, computed once per run.

struct NumericRun {
  size_t rows = 0;
  std::vector<double> sorted;  // non-null values
};

NumericRun PrepareNumeric(const Column& c) {
  NumericRun r;
  r.rows = c.size();
  r.sorted = c.NonNullNumbers();
  std::sort(r.sorted.begin(), r.sorted.end());
  return r;
}

struct CategoricalRun {
  size_t rows = 0;
  size_t non_null = 0;
  ValueCounts values;
  ValueCounts patterns;
  StringStats stats;
};

CategoricalRun PrepareCategorical(const Column& c) {
  CategoricalRun r;
  r.rows = c.size();
  std::vector<std::string_view> values = c.NonNullStrings();
  r.non_null = values.size();
  r.values = CountValues(values);
  r.patterns = CountPatterns(values);
  r.stats = ComputeStringStats(values);
  return r;
}

double Ratio(size_t num, size_t den) {
  return den == 0 ? kNaN : static_cast<double>(num) / static_cast<double>(den);
}

double NumericMetric(Metric m, const NumericRun& cur, const NumericRun* prev) {
  const std::vector<double>& s = cur.sorted;
  const bool pair_ok = prev != nullptr && !s.empty() && !prev->sorted.empty();
  switch (m) {
    case Metric::kNumEmd:
      return pair_ok ? EmdSorted(s, prev->sorted) : kNaN;
    case Metric::kNumJsDiv:
      return pair_ok ? HistogramJsDivergence(s, prev->sorted) : kNaN;
    case Metric::kNumKlDiv:
      return pair_ok ? HistogramKlDivergence(s, prev->sorted) : kNaN;
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
    default:
      return kNaN;
  }
}

double CategoricalMetric(Metric m, const CategoricalRun& cur, const CategoricalRun* prev) {
  const bool pair_ok = prev != nullptr && cur.non_null > 0 && prev->non_null > 0;
  const bool any = cur.non_null > 0;
  switch (m) {
    case Metric::kCatL1:
      return pair_ok ? L1Distance(cur.values, prev->values) : kNaN;
    case Metric::kCatLInf:
      return pair_ok ? LInfDistance(cur.values, prev->values) : kNaN;
    case Metric::kCatCosine:
      return pair_ok ? CosineDistance(cur.values, prev->values) : kNaN;
    case Metric::kCatChi2PValue:
      return pair_ok ? Chi2PValue(cur.values, prev->values) : kNaN;
    case Metric::kCatJsDistance:
      return pair_ok ? JsDistance(cur.values, prev->values) : kNaN;
    case Metric::kCatKlDiv:
      return pair_ok ? SmoothedKlDivergence(cur.values, prev->values) : kNaN;
    case Metric::kCatPatternL1:
      return pair_ok ? L1Distance(cur.patterns, prev->patterns) : kNaN;
    case Metric::kCatPatternLInf:
      return pair_ok ? LInfDistance(cur.patterns, prev->patterns) : kNaN;
    case Metric::kCatPatternCosine:
      return pair_ok ? CosineDistance(cur.patterns, prev->patterns) : kNaN;
    case Metric::kCatPatternChi2PValue:
      return pair_ok ? Chi2PValue(cur.patterns, prev->patterns) : kNaN;
    case Metric::kCatPatternJsDistance:
      return pair_ok ? JsDistance(cur.patterns, prev->patterns) : kNaN;
    case Metric::kCatPatternKlDiv:
      return pair_ok ? SmoothedKlDivergence(cur.patterns, prev->patterns) : kNaN;
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
    for (Metric m : MetricsFor(ColumnType::kNumeric)) {
      if (IsPairwise(m) && !prev) continue;
      out.push_back({m, NumericMetric(m, cur, prev ? &*prev : nullptr)});
    }
  } else {
    const CategoricalRun cur = PrepareCategorical(current);
    std::optional<CategoricalRun> prev;
    if (previous != nullptr) prev = PrepareCategorical(*previous);
    for (Metric m : MetricsFor(ColumnType::kCategorical)) {
      if (IsPairwise(m) && !prev) continue;
      out.push_back({m, CategoricalMetric(m, cur, prev ? &*prev : nullptr)});
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
  if (current.is_numeric()) {
    const NumericRun cur = PrepareNumeric(current);
    if (previous == nullptr) return NumericMetric(metric, cur, nullptr);
    const NumericRun prev = PrepareNumeric(*previous);
    return NumericMetric(metric, cur, &prev);
  }
  const CategoricalRun cur = PrepareCategorical(current);
  if (previous == nullptr) return CategoricalMetric(metric, cur, nullptr);
  const CategoricalRun prev = PrepareCategorical(*previous);
  return CategoricalMetric(metric, cur, &prev);
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
  const SharedHistogram h = MakeSharedHistogram(current, previous);
  double js = 0;
  for (size_t k = 0; k < h.current.size(); ++k) {
    const double p = h.current[k], q = h.previous[k];
    if (p == 0 || q == 0) continue;
    const double mid = (p + q) / 2;
    js += 0.5 * p * std::log(p / mid) + 0.5 * q * std::log(q / mid);
  }
  return js;
}

double HistogramKlDivergence(const std::vector<double>& current,
                             const std::vector<double>& previous) {
  if (current.empty() || previous.empty()) return kNaN;
  const SharedHistogram h = MakeSharedHistogram(current, previous);
  double kl = 0;
  for (size_t k = 0; k < h.current.size(); ++k) {
    const double p = h.current[k], q = h.previous[k];
    if (p == 0 || q == 0) continue;
    kl += p * std::log(p / q);
  }
  return kl;
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
  std::vector<double> p, q;
  if (!Frequencies(current, previous, &p, &q)) return kNaN;
  double sum = 0;
  for (size_t i = 0; i < p.size(); ++i) sum += std::abs(p[i] - q[i]);
  return sum;
}

double LInfDistance(const ValueCounts& current, const ValueCounts& previous) {
  std::vector<double> p, q;
  if (!Frequencies(current, previous, &p, &q)) return kNaN;
  double max = 0;
  for (size_t i = 0; i < p.size(); ++i) max = std::max(max, std::abs(p[i] - q[i]));
  return max;
}

double CosineDistance(const ValueCounts& current, const ValueCounts& previous) {
  std::vector<double> p, q;
  if (!Frequencies(current, previous, &p, &q)) return kNaN;
  double pq = 0, pp = 0, qq = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    pq += p[i] * q[i];
    pp += p[i] * p[i];
    qq += q[i] * q[i];
  }
  // Rounding can put identical distributions a hair below 0.
  return std::max(0.0, 1.0 - pq / std::sqrt(pp * qq));
}

double JsDistance(const ValueCounts& current, const ValueCounts& previous) {
  std::vector<double> p, q;
  if (!Frequencies(current, previous, &p, &q)) return kNaN;
  double js = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    const double mid = (p[i] + q[i]) / 2;
    js += RelEntr(p[i], mid) + RelEntr(q[i], mid);
  }
  return std::sqrt(std::max(0.0, js / 2));
}

double Chi2PValue(const ValueCounts& current, const ValueCounts& previous) {
  AlignedCounts c = Align(current, previous);
  if (c.current_total == 0 || c.previous_total == 0) return kNaN;
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

double SmoothedKlDivergence(const ValueCounts& current, const ValueCounts& previous) {
  AlignedCounts c = Align(current, previous);
  if (c.current_total == 0 || c.previous_total == 0) return kNaN;
  const double k = static_cast<double>(c.current.size());
  double kl = 0;
  for (size_t i = 0; i < c.current.size(); ++i) {
    const double p = (c.current[i] + 1) / (c.current_total + k);
    const double q = (c.previous[i] + 1) / (c.previous_total + k);
    kl += p * std::log(p / q);
  }
  return kl;
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
