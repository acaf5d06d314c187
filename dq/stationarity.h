// Stationarity of a metric's history for Auto-Validate-by-History (docs/METHODS.md,
// "Stationarity and differencing"): the augmented Dickey-Fuller (ADF) test, MacKinnon's critical
// values and p-value, and the search for a transform (differencing, log, log-differencing) under
// which the history is stationary, so that the mu +- k*sigma constraints of bounds.h apply to it.
//
// The test matches statsmodels' `adfuller(x, regression="c", autolag="AIC")` (the function the
// AVH authors used): the same regression, lag search, sample and critical values, checked to
// 1e-9 in tests/dq/stationarity_test.cc. Pure math on doubles: no tables, no engine, no server.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vlc::dq {

// The shortest series the test accepts: statsmodels' rule (maxlag = n/2 - 2 >= 0 for a regression
// with a constant), which leaves 3 observations and 1 residual degree of freedom at lag 0. Such a
// short test has almost no power (it rarely calls anything stationary); it is allowed so that a
// short history is judged rather than refused.
inline constexpr std::size_t kAdfMinLength = 4;

enum class AdfLagSelection {
  kAic,    // statsmodels' autolag="AIC": minimise AIC over lags 0..max_lag on a common sample
  kFixed,  // statsmodels' autolag=None: use exactly max_lag lags
};

struct AdfOptions {
  AdfLagSelection lag_selection = AdfLagSelection::kAic;
  // kAic: the largest lag tried; kFixed: the lag used. Negative means the default,
  // AdfDefaultMaxLag(n). An explicit value must be <= n/2 - 2, as statsmodels requires, so that
  // every regression keeps residual degrees of freedom.
  int max_lag = -1;
};

// statsmodels' default largest lag: ceil(12 * (n/100)^(1/4)) (Schwert's rule), capped at n/2 - 2.
// Note ceil, not floor: floor would pick 8 instead of 9 lags at n = 30 and change results.
// Negative when n < kAdfMinLength.
int AdfDefaultMaxLag(std::size_t n);

struct AdfCriticalValues {
  double pct1 = 0.0;
  double pct5 = 0.0;
  double pct10 = 0.0;
};

// MacKinnon (2010) finite-sample critical values of the ADF t-statistic, regression with a
// constant and no trend, one series (N = 1): c(T) = b0 + b1/T + b2/T^2 + b3/T^3, with T the
// number of observations in the test regression. `nobs` must be >= 1; +infinity gives the
// asymptotic values b0.
AdfCriticalValues MacKinnonCriticalValues(double nobs);

// MacKinnon's (1994) approximate p-value of an ADF t-statistic (constant, N = 1): the standard
// normal cdf of a polynomial in the statistic, 1 above 2.74 and 0 below -18.83.
double MacKinnonPValue(double statistic);

struct AdfResult {
  // t-ratio of the coefficient on x_{t-1}; NaN for a constant series (undefined).
  double statistic = 0.0;
  double p_value = 0.0;        // MacKinnonPValue(statistic); NaN for a constant series
  int used_lag = 0;            // p, the number of lagged differences in the final regression
  int max_lag = 0;             // the largest lag that was considered
  int nobs = 0;                // observations in the final regression: n - 1 - used_lag
  AdfCriticalValues critical;  // at T = nobs
  // AIC of the selected lag on the common sample (statsmodels' `icbest`); NaN for kFixed.
  double aic = 0.0;
  // The series is constant (see kConstantRelTolerance in bounds.h): the regression is singular
  // and the test is not run. Such a metric is an invariant in AVH, so it counts as stationary.
  bool constant = false;
  // statistic <= critical.pct5, or `constant`.
  bool stationary = false;
};

// The ADF test with a constant (the "c" regression):
//   dx_t = alpha + beta * x_{t-1} + sum_{i=1..p} gamma_i * dx_{t-i} + e_t,
// statistic = beta_hat / se(beta_hat), solved by column-pivoting Householder QR. The series is
// standardised first (the statistic is invariant to x -> a + b*x), which keeps the regression well
// conditioned for metrics such as row counts near 1e9.
// Errors: INVALID_ARGUMENT for fewer than kAdfMinLength values, a non-finite value or a max_lag
// above n/2 - 2; FAILED_PRECONDITION when the regression is degenerate though the series is not
// constant (rank-deficient regressors or an exact fit, e.g. a straight line, whose differences are
// constant: difference it first).
absl::StatusOr<AdfResult> AdfTest(absl::Span<const double> x, const AdfOptions& options = {});

// A transform applied to a metric's history before its constraint is learned, and to each new
// value before it is checked.
struct Transform {
  enum class Kind {
    kIdentity,  // x_t
    kDiff,      // x_t - x_{t-lag}
    kLog,       // log x_t
    kLogDiff,   // log x_t - log x_{t-lag}
  };
  Kind kind = Kind::kIdentity;
  int lag = 0;  // 0 for kIdentity and kLog; >= 1 for kDiff and kLogDiff

  // The transformed history: n values for kIdentity/kLog, n - lag for the differences.
  // INVALID_ARGUMENT for a malformed transform, a history of at most `lag` values, a non-finite
  // value, or a value <= 0 under a log.
  absl::StatusOr<std::vector<double>> Apply(absl::Span<const double> history) const;

  // The new run's value, transformed as Apply would transform it if it were appended to
  // `history`: for kDiff, new - history[n - lag]; for kLogDiff, log(new) - log(history[n - lag]).
  // OUT_OF_RANGE when `new_value` <= 0 under a log: the history was all positive, so the caller
  // should treat this as a violation (the metric left its domain) rather than as bad input.
  // INVALID_ARGUMENT for a non-finite new value, a malformed transform or a history too short or
  // non-positive (under a log) at the value the difference needs.
  absl::StatusOr<double> ApplyToNew(absl::Span<const double> history, double new_value) const;

  // "identity", "diff(3)", "log", "log-diff(1)".
  std::string ToString() const;

  bool operator==(const Transform& other) const { return kind == other.kind && lag == other.lag; }
  bool operator!=(const Transform& other) const { return !(*this == other); }
};

// The transforms the search tries, in order: identity, diff(1..max_lag), then (when `with_log`)
// log, log-diff(1..max_lag). This is the order of the AVH authors' evaluation code: plain
// differencing before any log, the smallest lag first, the untransformed series before either.
std::vector<Transform> CandidateTransforms(int max_lag, bool with_log);

struct TransformSearchOptions {
  // Applied to every candidate; an explicit max_lag is lowered to what a shorter (differenced)
  // series allows, n/2 - 2, rather than failing the search.
  AdfOptions adf;
  int max_diff_lag = 10;  // differencing lags tried: 1..max_diff_lag (docs/METHODS.md: 10)
  bool all = false;       // go on after the first stationary candidate (TransformSearchResult::all)
};

struct TransformSearchResult {
  // The first candidate under which the history is stationary; nullopt when there is none, in
  // which case the metric is dropped for the column.
  std::optional<Transform> transform;
  AdfResult adf;   // the test that accepted `transform` (default-constructed when none)
  int tested = 0;  // candidates whose ADF test ran
  // With TransformSearchOptions::all, every stationary candidate in search order (`transform` is
  // the first); otherwise just `transform`.
  std::vector<Transform> all;
};

// Searches CandidateTransforms(options.max_diff_lag, all values > 0) for the first stationary
// one. A candidate that leaves fewer than kAdfMinLength values is skipped, and so is one whose
// regression is degenerate (FAILED_PRECONDITION from AdfTest): neither says anything about
// stationarity, and a later candidate may. A constant transformed series is accepted (an
// invariant), so a straight line is taken by diff(1), whose differences are constant.
// INVALID_ARGUMENT for an empty history, a non-finite value or bad options.
absl::StatusOr<TransformSearchResult> FindStationaryTransform(
    absl::Span<const double> history, const TransformSearchOptions& options = {});

}  // namespace vlc::dq
