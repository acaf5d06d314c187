#include "dq/baselines.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "dq/bounds.h"

namespace vlc::dq {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// A constant reference (sd or largest change of 0) still has to let the same value through:
// metrics of identical runs can differ in the last bits (sums in another order).
bool SameValue(double a, double b) {
  return std::fabs(a - b) <= 1e-9 * std::max(1.0, std::max(std::fabs(a), std::fabs(b)));
}

// score = deviation / allowed, where allowed = 0 means "no deviation allowed".
double Ratio(double deviation, double allowed, double value, double reference) {
  if (allowed > 0) return deviation / allowed;
  return SameValue(value, reference) ? 0.0 : kInf;
}

std::vector<Metric> WatchedMetrics(BaselineKind kind, ColumnType type) {
  const bool numeric = type == ColumnType::kNumeric;
  switch (kind) {
    case BaselineKind::kBatchNormal:
    case BaselineKind::kOnlineNormal: {
      std::vector<Metric> out;
      for (Metric m : MetricsFor(type)) {
        if (!IsPairwise(m)) out.push_back(m);
      }
      return out;
    }
    case BaselineKind::kRelativeRateOfChange:
    case BaselineKind::kAbsoluteChange:
      // Strings have no mean; their mean length is the closest single number.
      return numeric ? std::vector<Metric>{Metric::kNumCount, Metric::kNumMean}
                     : std::vector<Metric>{Metric::kCatCount, Metric::kCatMeanLength};
    case BaselineKind::kTfdvDrift:
      return {numeric ? Metric::kNumJsDiv : Metric::kCatLInf};
    case BaselineKind::kTwoSampleTest:
      return {numeric ? Metric::kNumKsPValue : Metric::kCatChi2PValue};
  }
  return {};
}

// A series equal up to rounding (a range of identical values summed in another order) is a
// constant, not a spread of 1e-15 that would make the next rounding difference 10 sds away; the
// same tolerance as AVH's invariants (bounds.h).
bool IsConstant(const std::vector<double>& xs) {
  double lo = xs.front(), hi = xs.front(), mag = 0;
  for (double x : xs) {
    lo = std::min(lo, x);
    hi = std::max(hi, x);
    mag = std::max(mag, std::fabs(x));
  }
  return hi - lo <= kConstantRelTolerance * mag;
}

void SampleMoments(const std::vector<double>& xs, double* mean, double* sd) {
  double sum = 0;
  for (double x : xs) sum += x;
  *mean = sum / static_cast<double>(xs.size());
  double ss = 0;
  for (double x : xs) ss += (x - *mean) * (x - *mean);
  *sd = xs.size() > 1 && !IsConstant(xs) ? std::sqrt(ss / static_cast<double>(xs.size() - 1)) : 0.0;
}

// Deequ's OnlineNormalStrategy: Welford's running mean and variance; after the ignored prefix,
// a point outside mean +- factor * sd of the points before it is an anomaly and does not update
// the statistics, so one bad run in the history does not widen the band for good.
void OnlineMoments(const std::vector<double>& xs, double factor, double ignore_fraction,
                   double* mean, double* sd) {
  const std::size_t start =
      static_cast<std::size_t>(std::ceil(ignore_fraction * static_cast<double>(xs.size())));
  double m = 0, s = 0;
  std::size_t n = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const double x = xs[i];
    if (i >= start && n >= 2) {
      const double cur_sd = std::sqrt(s / static_cast<double>(n - 1));
      if (Ratio(std::fabs(x - m), factor * cur_sd, x, m) > 1.0) continue;
    }
    ++n;
    const double d = x - m;
    m += d / static_cast<double>(n);
    s += d * (x - m);
  }
  *mean = m;
  *sd = n > 1 && !IsConstant(xs) ? std::sqrt(s / static_cast<double>(n - 1)) : 0.0;
}

}  // namespace

const std::string& BaselineName(BaselineKind kind) {
  static const std::string kNames[] = {
      "batch_normal",    "online_normal", "relative_rate_of_change",
      "absolute_change", "tfdv_drift",    "two_sample_test"};
  return kNames[static_cast<int>(kind)];
}

const std::vector<BaselineKind>& AllBaselines() {
  static const std::vector<BaselineKind> kAll = {BaselineKind::kBatchNormal,
                                                 BaselineKind::kOnlineNormal,
                                                 BaselineKind::kRelativeRateOfChange,
                                                 BaselineKind::kAbsoluteChange,
                                                 BaselineKind::kTfdvDrift,
                                                 BaselineKind::kTwoSampleTest};
  return kAll;
}

absl::StatusOr<BaselineValidator> BaselineValidator::Learn(BaselineKind kind,
                                                           const std::vector<Column>& history,
                                                           const BaselineOptions& options) {
  const std::string& name = BaselineName(kind);
  if (history.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": the history has no runs"));
  }
  if (!(options.deviation_factor > 0) || !(options.max_rate_increase >= 1) ||
      !(options.max_rate_decrease > 0 && options.max_rate_decrease <= 1) ||
      !(options.absolute_change_factor > 0) || !(options.linf_threshold > 0) ||
      !(options.js_threshold > 0) || !(options.alpha > 0 && options.alpha < 1) ||
      !(options.ignore_start_fraction >= 0 && options.ignore_start_fraction < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": options out of range (factors and thresholds > 0, max rate increase >= 1, "
                     "max rate decrease in (0, 1], alpha in (0, 1), ignored fraction in [0, 1))"));
  }
  const ColumnType type = history.front().type();
  for (const Column& run : history) {
    if (run.type() != type) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": column '", run.name(), "' is ", ColumnTypeName(run.type()),
                       " in one history run and ", ColumnTypeName(type), " in another"));
    }
  }
  const bool learns_series = kind == BaselineKind::kBatchNormal ||
                             kind == BaselineKind::kOnlineNormal ||
                             kind == BaselineKind::kAbsoluteChange;
  if (learns_series && history.size() < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": needs at least 2 history runs for a spread, got 1"));
  }

  BaselineValidator v;
  v.kind_ = kind;
  v.type_ = type;
  v.options_ = options;
  for (Metric m : WatchedMetrics(kind, type)) {
    BaselineReference ref;
    ref.metric = m;
    if (learns_series) {
      std::vector<double> xs;
      bool defined = true;
      for (const Column& run : history) {
        VLC_ASSIGN_OR_RETURN(double x, ComputeMetric(m, run, nullptr));
        if (std::isnan(x)) defined = false;
        xs.push_back(x);
      }
      if (!defined) continue;  // no meaningful reference, as AVH drops such a metric
      if (kind == BaselineKind::kBatchNormal) {
        SampleMoments(xs, &ref.mean, &ref.sd);
      } else if (kind == BaselineKind::kOnlineNormal) {
        OnlineMoments(xs, options.deviation_factor, options.ignore_start_fraction, &ref.mean,
                      &ref.sd);
      } else if (!IsConstant(xs)) {
        for (std::size_t i = 1; i < xs.size(); ++i) {
          ref.max_abs_change = std::max(ref.max_abs_change, std::fabs(xs[i] - xs[i - 1]));
        }
      }
    }
    v.references_.push_back(ref);
  }
  return v;
}

absl::StatusOr<BaselineVerdict> BaselineValidator::Check(const Column& previous,
                                                         const Column& new_run) const {
  if (new_run.type() != type_ || previous.type() != type_) {
    return absl::InvalidArgumentError(
        absl::StrCat(BaselineName(kind_), ": column '", new_run.name(), "' was learned as ",
                     ColumnTypeName(type_), " but the previous or new run is ",
                     ColumnTypeName(previous.type() != type_ ? previous.type() : new_run.type())));
  }
  BaselineVerdict verdict;
  const double factor = options_.deviation_factor;
  for (const BaselineReference& ref : references_) {
    const std::string& mname = MetricName(ref.metric);
    const bool pairwise = IsPairwise(ref.metric);
    VLC_ASSIGN_OR_RETURN(double x,
                         ComputeMetric(ref.metric, new_run, pairwise ? &previous : nullptr));
    double score = kInf;
    std::string reason;
    if (std::isnan(x)) {
      reason = absl::StrCat(mname, " is undefined on the new run (no non-null values?)");
    } else {
      switch (kind_) {
        case BaselineKind::kBatchNormal:
        case BaselineKind::kOnlineNormal:
          score = Ratio(std::fabs(x - ref.mean), factor * ref.sd, x, ref.mean);
          reason = absl::StrCat(mname, " = ", x, " is outside the history's mean ", ref.mean,
                                " +- ", factor, " sd (sd ", ref.sd, ")");
          break;
        case BaselineKind::kRelativeRateOfChange: {
          VLC_ASSIGN_OR_RETURN(double px, ComputeMetric(ref.metric, previous, nullptr));
          if (std::isnan(px)) {
            score = 0;  // nothing to compare with: the previous run cannot vouch against it
          } else if (px == 0) {
            score = x == 0 ? 0.0 : kInf;
          } else {
            const double r = x / px;
            // A sign change is no rate of change at all: flag it.
            score = r <= 0
                        ? kInf
                        : std::max(r / options_.max_rate_increase, options_.max_rate_decrease / r);
          }
          reason = absl::StrCat(mname, " went from ", px, " to ", x, ", outside the allowed rate [",
                                options_.max_rate_decrease, ", ", options_.max_rate_increase, "]");
          break;
        }
        case BaselineKind::kAbsoluteChange: {
          VLC_ASSIGN_OR_RETURN(double px, ComputeMetric(ref.metric, previous, nullptr));
          score = std::isnan(px)
                      ? 0.0
                      : Ratio(std::fabs(x - px),
                              options_.absolute_change_factor * ref.max_abs_change, x, px);
          reason = absl::StrCat(mname, " changed by ", std::fabs(x - px),
                                " since the previous run; the history's largest change was ",
                                ref.max_abs_change);
          break;
        }
        case BaselineKind::kTfdvDrift: {
          const double t =
              type_ == ColumnType::kNumeric ? options_.js_threshold : options_.linf_threshold;
          score = x / t;
          reason = absl::StrCat(mname, " = ", x, " against the previous run exceeds ", t);
          break;
        }
        case BaselineKind::kTwoSampleTest:
          score = x > 0 ? options_.alpha / x : kInf;
          reason = absl::StrCat(mname, " = ", x,
                                " against the previous run is below alpha = ", options_.alpha);
          break;
      }
    }
    if (score > 1.0) verdict.reasons.push_back(std::move(reason));
    verdict.score = std::max(verdict.score, score);
  }
  return verdict;
}

}  // namespace vlc::dq
