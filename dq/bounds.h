// False-positive-rate bounds and the Q(M, k) constraint of Auto-Validate-by-History
// (docs/METHODS.md, "Constraints Q(M, k) and their false-positive bounds").
//
// A constraint Q(M, k) accepts a new value of metric M when it lies within mu +- k*sigma (+- a
// small slack) of M's history, where mu and sigma are the history's mean and population standard
// deviation. How often a clean run is rejected is bounded by an inequality whose choice depends on
// what is known about M's distribution:
//   Cantelli  (one-sided, any distribution):        FPR <= 1 / (1 + k^2)
//   Normal    (two-sided, CLT for sums and means):  FPR  = 2 (1 - Phi(k))
//   Chebyshev (two-sided, any distribution):        FPR <= 1 / k^2  (capped at 1)
//   Unimodal  (two-sided, Vysochanskij-Petunin):    FPR <= 4 / (9 k^2) for k^2 >= 8/3,
//                                                          4 / (3 k^2) - 1/3 below
//   Unimodal  (one-sided, Mercadier-Strobel):       FPR <= 4 / (9 (1 + k^2)) for k^2 >= 5/3,
//                                                          4 / (3 (1 + k^2)) - 1/3 below
// The unimodal bounds hold for any distribution with a single mode (a density that rises, then
// falls): 2.25 times tighter than Chebyshev and Cantelli in the tails.
// Pure math on doubles: no tables, no engine, no server.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vlc::dq {

enum class BoundKind {
  kCantelli,   // one-sided; distances (upper side) and p-values (lower side)
  kNormal,     // two-sided; counts, means, lengths, ratios whose CLT applies
  kChebyshev,  // two-sided; min, max, median, sum, range
  kUnimodal,   // two-sided (Vysochanskij-Petunin) or one-sided; a distribution with one mode
};

// Which side(s) of mu a constraint checks. Cantelli needs kUpper or kLower; Normal and Chebyshev
// need kTwoSided: the bounds above are only valid for those pairings. Unimodal takes either.
enum class Side { kTwoSided, kUpper, kLower };

const char* BoundKindName(BoundKind kind);
const char* SideName(Side side);

// Absolute slack added on each checked side, so that a value equal to an invariant's mean (or off
// by rounding) is accepted.
inline constexpr double kQSlack = 1e-5;

// Values whose range is at most this fraction of their largest magnitude count as constant: sums
// and means of identical doubles differ in the last bits, and such a metric is an invariant, not
// a metric with a tiny sd. Shared with the stationarity test, so both call the same series
// constant.
inline constexpr double kConstantRelTolerance = 1e-12;

// The paper's grid of k: 1, 1.5, ..., 10 (19 values).
std::vector<double> KGrid();

// The paper's grid, then every integer from 11 to 99: the range the authors' evaluation code
// searches. Very wide constraints cost almost no FPR and still catch gross errors.
std::vector<double> WideKGrid();

// "paper" (KGrid), "wide" (WideKGrid) or a comma-separated list of finite k >= 0, sorted and
// deduplicated; INVALID_ARGUMENT naming what is wrong otherwise.
absl::StatusOr<std::vector<double>> ParseKGrid(const std::string& text);

// The FPR bound of `kind` at k >= 0 (k = 0 gives 1 for every kind). INVALID_ARGUMENT for a
// negative or non-finite k. Normal uses the complement of Phi so that large k keeps its relative
// precision (2(1 - Phi(10)) ~ 1.5e-23 instead of 0).
absl::StatusOr<double> FprBound(BoundKind kind, double k, Side side = Side::kTwoSided);

// Mean and population sd (ddof 0) of a metric's history.
struct Moments {
  std::size_t n = 0;
  double mean = 0.0;
  double sd = 0.0;        // 0 exactly when `constant`
  bool constant = false;  // range <= kConstantRelTolerance * max |x| (every value equal, in effect)
};

// INVALID_ARGUMENT for an empty history or a non-finite value.
absl::StatusOr<Moments> ComputeMoments(absl::Span<const double> values);

// One Q(M, k) constraint, learned from a history.
struct QConstraint {
  BoundKind kind = BoundKind::kChebyshev;
  Side side = Side::kTwoSided;
  double k = 0.0;
  double mean = 0.0;
  double sd = 0.0;
  // Accepted interval, closed; -inf / +inf on an unchecked side.
  double lo = 0.0;
  double hi = 0.0;
  // Bound on the probability that a clean value falls outside [lo, hi]; 0 for an invariant.
  double fpr = 0.0;
  // The history is constant: the constraint is the equality mean +- kQSlack on both sides,
  // whatever `side` says (any change of an invariant is unexpected), and its FPR is 0.
  bool invariant = false;

  // Whether `value` satisfies the constraint; a NaN value never does.
  bool Accepts(double value) const { return value >= lo && value <= hi; }
};

// Q(M, k) from the history of M (already transformed, see stationarity.h):
//   lo = mean - k*sd - kQSlack, hi = mean + k*sd + kQSlack on the checked side(s).
// INVALID_ARGUMENT for an empty or non-finite history, a bad k, or a kind/side pairing the bound
// does not cover (Cantelli with kTwoSided, Normal or Chebyshev with one side).
// `predictive`: the Normal bound's FPR is that of a new value against the history's estimated
// mean and sd (Student's t with n - 1 degrees of freedom), not against the true ones; larger,
// and exact for a normal metric whatever the history's length.
absl::StatusOr<QConstraint> MakeQConstraint(absl::Span<const double> history, double k,
                                            BoundKind kind, Side side, bool predictive = false);

// Shapiro-Wilk test of normality (Royston's 1995 algorithm AS R94, as scipy.stats.shapiro):
// the W statistic and its p-value, small when the values are unlikely to come from a normal
// distribution. The Normal bound's FPR is only right for a metric whose history looks normal; AVH
// uses it where this test does not reject (AvhOptions::normality_alpha) and Chebyshev elsewhere.
// INVALID_ARGUMENT for fewer than 3 or more than 5000 values, a non-finite value, or values that
// are all equal (W is undefined).
struct ShapiroWilk {
  double w = 0.0;
  double p_value = 0.0;
};
absl::StatusOr<ShapiroWilk> ShapiroWilkTest(absl::Span<const double> values);

}  // namespace vlc::dq
