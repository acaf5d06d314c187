#include "dq/stationarity.h"

#include <Eigen/Dense>
#include <algorithm>
#include <boost/math/distributions/normal.hpp>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "dq/bounds.h"

namespace vlc::dq {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kTwoPi = 6.283185307179586;

// MacKinnon (2010), "Critical Values for Cointegration Tests", Queen's Economics Department
// Working Paper 1227, Table 2, N = 1, tau_c: coefficients b0, b1, b2, b3 of the response surface
// in 1/T for the 1%, 5% and 10% levels. Checked against statsmodels 0.15.0
// (statsmodels/tsa/adfvalues.py, tau_c_2010), which cites the same table.
constexpr double kTauC2010[3][4] = {
    {-3.43035, -6.5393, -16.786, -79.433},  // 1%
    {-2.86154, -2.8903, -4.234, -40.040},   // 5%
    {-2.56677, -1.5384, -2.809, 0.0},       // 10%
};

// MacKinnon (1994), "Approximate Asymptotic Distribution Functions for Unit-Root and
// Cointegration Tests", JBES 12(2): the p-value surface for tau_c, N = 1. Below kTauStar the
// quadratic fitted to the lower tail applies, above it the cubic fitted to the body; outside
// [kTauMin, kTauMax] the p-value is 0 or 1. The same values appear in statsmodels' adfvalues.py
// (with its scaling applied here) and in R's unit-root packages.
constexpr double kTauStar = -1.61;
constexpr double kTauMin = -18.83;
constexpr double kTauMax = 2.74;
constexpr double kSmallP[3] = {2.1659, 1.4412, 3.8269e-2};
constexpr double kLargeP[4] = {1.7339, 9.3202e-1, -1.2745e-1, -1.0368e-2};

// Residual sum of squares below this fraction of sum(y^2) is an exact fit up to rounding: the
// standard error is then noise and the t-ratio meaningless.
constexpr double kExactFitRelSsr = 1e-20;

double Polynomial(const double* coef, int count, double x) {
  double v = 0.0;
  for (int i = count - 1; i >= 0; --i) v = v * x + coef[i];
  return v;
}

// The ADF regression for `lag` lagged differences on the rows whose dependent index runs from
// `first` to the end. Column 0 is the level x_{t-1} (the coefficient the test is about), column 1
// the constant, then dx_{t-1} .. dx_{t-lag}. With `d[i] = x[i+1] - x[i]`, row i has
// y = d[i], level x[i] and lags d[i-1] .. d[i-lag]: the sample statsmodels builds with lagmat.
struct Design {
  Eigen::MatrixXd X;
  Eigen::VectorXd y;
};

Design BuildDesign(const std::vector<double>& x, const std::vector<double>& d, int lag, int first) {
  const int m = static_cast<int>(d.size());
  const int rows = m - first;
  Design design{Eigen::MatrixXd(rows, lag + 2), Eigen::VectorXd(rows)};
  for (int r = 0; r < rows; ++r) {
    const int i = first + r;
    design.y(r) = d[i];
    design.X(r, 0) = x[i];
    design.X(r, 1) = 1.0;
    for (int j = 1; j <= lag; ++j) design.X(r, 1 + j) = d[i - j];
  }
  return design;
}

struct OlsFit {
  double ssr = 0.0;
  double t_level = 0.0;  // t-ratio of column 0
};

// Least squares by column-pivoting QR. The standard error of column 0 is
// sqrt(s^2 * [(X'X)^-1]_00) with s^2 = ssr / (rows - cols); X P = Q R gives
// (X'X)^-1 = P R^-1 R^-T P', whose diagonal entry for a column is the squared norm of the matching
// row of R^-1, so X'X is never formed (it would square the condition number).
absl::StatusOr<OlsFit> FitOls(const Design& design) {
  const Eigen::Index rows = design.X.rows();
  const Eigen::Index cols = design.X.cols();
  const Eigen::ColPivHouseholderQR<Eigen::MatrixXd> qr(design.X);
  if (qr.rank() < cols) {
    return absl::FailedPreconditionError(absl::StrCat(
        "ADF regression is rank deficient (rank ", qr.rank(), " of ", cols,
        " regressors): the lagged differences are collinear with the constant or the level"));
  }
  const Eigen::VectorXd beta = qr.solve(design.y);
  OlsFit fit;
  fit.ssr = (design.y - design.X * beta).squaredNorm();
  if (fit.ssr <= kExactFitRelSsr * design.y.squaredNorm()) {
    return absl::FailedPreconditionError(
        "ADF regression fits exactly (zero residuals): the series follows a deterministic "
        "linear recursion, such as a straight line; difference it");
  }
  const Eigen::MatrixXd r = qr.matrixR().topLeftCorner(cols, cols);
  const Eigen::MatrixXd r_inv =
      r.triangularView<Eigen::Upper>().solve(Eigen::MatrixXd::Identity(cols, cols));
  // Position of original column 0 among the pivoted columns.
  Eigen::Index pos = 0;
  while (qr.colsPermutation().indices()(pos) != 0) ++pos;
  const double s2 = fit.ssr / static_cast<double>(rows - cols);
  const double se = std::sqrt(s2 * r_inv.row(pos).squaredNorm());
  fit.t_level = beta(0) / se;
  return fit;
}

// Gaussian log-likelihood AIC as statsmodels' OLS reports it: -2 llf + 2 k with
// llf = -n/2 (log(2 pi) + log(ssr/n) + 1).
double Aic(double ssr, int nobs, int params) {
  const double n = nobs;
  return n * (std::log(kTwoPi) + std::log(ssr / n) + 1.0) + 2.0 * params;
}

absl::Status CheckFinite(absl::Span<const double> x, const char* what) {
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " value ", i, " is not finite (", x[i], ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckTransform(const Transform& t) {
  const bool diff = t.kind == Transform::Kind::kDiff || t.kind == Transform::Kind::kLogDiff;
  if (diff ? t.lag < 1 : t.lag != 0) {
    return absl::InvalidArgumentError(absl::StrCat("malformed transform ", t.ToString(),
                                                   ": differences need lag >= 1, others lag 0"));
  }
  return absl::OkStatus();
}

bool UsesLog(const Transform& t) {
  return t.kind == Transform::Kind::kLog || t.kind == Transform::Kind::kLogDiff;
}

}  // namespace

int AdfDefaultMaxLag(std::size_t n) {
  if (n < kAdfMinLength) return -1;
  const int schwert =
      static_cast<int>(std::ceil(12.0 * std::pow(static_cast<double>(n) / 100.0, 0.25)));
  // One regressor for the constant, one for the level: statsmodels' nobs // 2 - ntrend - 1.
  const int cap = static_cast<int>(n / 2) - 2;
  return std::min(schwert, cap);
}

AdfCriticalValues MacKinnonCriticalValues(double nobs) {
  const double inv = std::isinf(nobs) ? 0.0 : 1.0 / nobs;
  return {Polynomial(kTauC2010[0], 4, inv), Polynomial(kTauC2010[1], 4, inv),
          Polynomial(kTauC2010[2], 4, inv)};
}

double MacKinnonPValue(double statistic) {
  if (std::isnan(statistic)) return kNaN;
  if (statistic > kTauMax) return 1.0;
  if (statistic < kTauMin) return 0.0;
  const double z =
      statistic <= kTauStar ? Polynomial(kSmallP, 3, statistic) : Polynomial(kLargeP, 4, statistic);
  return boost::math::cdf(boost::math::normal_distribution<double>(0.0, 1.0), z);
}

absl::StatusOr<AdfResult> AdfTest(absl::Span<const double> x, const AdfOptions& options) {
  const std::size_t n = x.size();
  if (n < kAdfMinLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("the ADF test needs at least ", kAdfMinLength, " values, got ", n));
  }
  VLC_RETURN_IF_ERROR(CheckFinite(x, "series"));
  const int cap = static_cast<int>(n / 2) - 2;
  int max_lag = options.max_lag;
  if (max_lag < 0) {
    max_lag = AdfDefaultMaxLag(n);
  } else if (max_lag > cap) {
    return absl::InvalidArgumentError(absl::StrCat("ADF max_lag ", max_lag, " is too large for ", n,
                                                   " values: at most n/2 - 2 = ", cap));
  }

  VLC_ASSIGN_OR_RETURN(const Moments moments, ComputeMoments(x));
  AdfResult result;
  result.max_lag = max_lag;
  if (moments.constant) {
    result.constant = true;
    result.stationary = true;
    result.statistic = kNaN;
    result.p_value = kNaN;
    result.aic = kNaN;
    result.used_lag = 0;
    result.nobs = static_cast<int>(n) - 1;
    result.critical = MacKinnonCriticalValues(result.nobs);
    return result;
  }

  std::vector<double> z(n);
  for (std::size_t i = 0; i < n; ++i) z[i] = (x[i] - moments.mean) / moments.sd;
  std::vector<double> d(n - 1);
  for (std::size_t i = 0; i + 1 < n; ++i) d[i] = z[i + 1] - z[i];
  const int m = static_cast<int>(d.size());

  int lag = max_lag;
  result.aic = kNaN;
  if (options.lag_selection == AdfLagSelection::kAic) {
    // Every candidate is fitted on the same rows (those that lag max_lag leaves), so that their
    // AICs compare likelihoods of the same data; ties go to the smaller lag, as in statsmodels.
    const int common = m - max_lag;
    double best = std::numeric_limits<double>::infinity();
    int best_lag = -1;
    absl::Status last_error;
    for (int p = 0; p <= max_lag; ++p) {
      absl::StatusOr<OlsFit> fit = FitOls(BuildDesign(z, d, p, max_lag));
      if (!fit.ok()) {
        last_error = fit.status();  // a degenerate candidate cannot be the best model
        continue;
      }
      const double aic = Aic(fit->ssr, common, p + 2);
      if (aic < best) {
        best = aic;
        best_lag = p;
      }
    }
    if (best_lag < 0) return last_error;
    lag = best_lag;
    // AIC in the units of x: standardising divided every ssr by sd^2.
    result.aic = best + 2.0 * common * std::log(moments.sd);
  }
  // The final regression uses every row the chosen lag allows, not just the common sample.
  VLC_ASSIGN_OR_RETURN(const OlsFit fit, FitOls(BuildDesign(z, d, lag, lag)));
  result.used_lag = lag;
  result.nobs = m - lag;
  result.statistic = fit.t_level;
  result.p_value = MacKinnonPValue(result.statistic);
  result.critical = MacKinnonCriticalValues(result.nobs);
  result.stationary = result.statistic <= result.critical.pct5;
  return result;
}

std::string Transform::ToString() const {
  switch (kind) {
    case Kind::kIdentity:
      return lag == 0 ? "identity" : absl::StrCat("identity(", lag, ")");
    case Kind::kDiff:
      return absl::StrCat("diff(", lag, ")");
    case Kind::kLog:
      return lag == 0 ? "log" : absl::StrCat("log(", lag, ")");
    case Kind::kLogDiff:
      return absl::StrCat("log-diff(", lag, ")");
  }
  return "unknown";
}

absl::StatusOr<std::vector<double>> Transform::Apply(absl::Span<const double> history) const {
  VLC_RETURN_IF_ERROR(CheckTransform(*this));
  VLC_RETURN_IF_ERROR(CheckFinite(history, "history"));
  const std::size_t n = history.size();
  if (n <= static_cast<std::size_t>(lag)) {
    return absl::InvalidArgumentError(
        absl::StrCat("transform ", ToString(), " needs more than ", lag, " values, got ", n));
  }
  std::vector<double> base(history.begin(), history.end());
  if (UsesLog(*this)) {
    for (std::size_t i = 0; i < n; ++i) {
      if (base[i] <= 0.0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "transform ", ToString(), " needs positive values; value ", i, " is ", base[i]));
      }
      base[i] = std::log(base[i]);
    }
  }
  if (lag == 0) return base;
  std::vector<double> out(n - lag);
  for (std::size_t i = lag; i < n; ++i) out[i - lag] = base[i] - base[i - lag];
  return out;
}

absl::StatusOr<double> Transform::ApplyToNew(absl::Span<const double> history,
                                             double new_value) const {
  VLC_RETURN_IF_ERROR(CheckTransform(*this));
  if (!std::isfinite(new_value)) {
    return absl::InvalidArgumentError(absl::StrCat("new value is not finite (", new_value, ")"));
  }
  const std::size_t n = history.size();
  if (n < static_cast<std::size_t>(lag)) {
    return absl::InvalidArgumentError(absl::StrCat("transform ", ToString(), " needs at least ",
                                                   lag, " history values, got ", n));
  }
  const bool log = UsesLog(*this);
  if (log && new_value <= 0.0) {
    return absl::OutOfRangeError(absl::StrCat(
        "new value ", new_value, " is not positive, but the metric's history was transformed by ",
        ToString(), ", so it cannot be compared with it: the metric left its domain"));
  }
  const double v = log ? std::log(new_value) : new_value;
  if (lag == 0) return v;
  const double ref = history[n - lag];
  if (!std::isfinite(ref) || (log && ref <= 0.0)) {
    return absl::InvalidArgumentError(absl::StrCat("history value ", n - lag, " (", ref,
                                                   ") cannot be used by transform ", ToString()));
  }
  return v - (log ? std::log(ref) : ref);
}

std::vector<Transform> CandidateTransforms(int max_lag, bool with_log) {
  std::vector<Transform> out;
  auto append = [&](Transform::Kind level, Transform::Kind diff) {
    out.push_back({level, 0});
    for (int lag = 1; lag <= max_lag; ++lag) out.push_back({diff, lag});
  };
  append(Transform::Kind::kIdentity, Transform::Kind::kDiff);
  if (with_log) append(Transform::Kind::kLog, Transform::Kind::kLogDiff);
  return out;
}

absl::StatusOr<TransformSearchResult> FindStationaryTransform(
    absl::Span<const double> history, const TransformSearchOptions& options) {
  if (history.size() < kAdfMinLength) {
    return absl::InvalidArgumentError(absl::StrCat("a stationarity search needs at least ",
                                                   kAdfMinLength, " history values, got ",
                                                   history.size()));
  }
  if (options.max_diff_lag < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_diff_lag must be >= 0, got ", options.max_diff_lag));
  }
  VLC_RETURN_IF_ERROR(CheckFinite(history, "history"));
  bool all_positive = true;
  for (double v : history) all_positive = all_positive && v > 0.0;

  TransformSearchResult result;
  for (const Transform& t : CandidateTransforms(options.max_diff_lag, all_positive)) {
    if (history.size() < kAdfMinLength + static_cast<std::size_t>(t.lag)) continue;
    VLC_ASSIGN_OR_RETURN(const std::vector<double> series, t.Apply(history));
    AdfOptions adf = options.adf;
    // An explicit max_lag may suit the raw history but not a shorter differenced one; clamp it
    // to what the shorter series allows rather than fail the whole search.
    if (adf.max_lag >= 0) {
      adf.max_lag = std::min(adf.max_lag, static_cast<int>(series.size() / 2) - 2);
    }
    absl::StatusOr<AdfResult> test = AdfTest(series, adf);
    if (!test.ok()) {
      if (test.status().code() == absl::StatusCode::kFailedPrecondition) continue;
      return test.status();
    }
    ++result.tested;
    if (test->stationary) {
      result.all.push_back(t);
      if (!result.transform) {
        result.transform = t;
        result.adf = *std::move(test);
      }
      if (!options.all) return result;
    }
  }
  return result;
}

}  // namespace vlc::dq
