#include "dq/bounds.h"

#include <algorithm>
#include <boost/math/distributions/normal.hpp>
#include <boost/math/distributions/students_t.hpp>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"

namespace vlc::dq {
namespace {

absl::Status CheckK(double k) {
  if (!std::isfinite(k) || k < 0.0) {
    return absl::InvalidArgumentError(absl::StrCat("k must be a finite number >= 0, got ", k));
  }
  return absl::OkStatus();
}

absl::Status CheckPairing(BoundKind kind, Side side) {
  const bool one_sided = side != Side::kTwoSided;
  if (kind != BoundKind::kUnimodal && (kind == BoundKind::kCantelli) != one_sided) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the ", BoundKindName(kind), " bound does not hold for a ", SideName(side),
        " constraint: Cantelli bounds one side (upper or lower), Normal and Chebyshev both"));
  }
  return absl::OkStatus();
}

}  // namespace

const char* BoundKindName(BoundKind kind) {
  switch (kind) {
    case BoundKind::kCantelli:
      return "cantelli";
    case BoundKind::kNormal:
      return "normal";
    case BoundKind::kChebyshev:
      return "chebyshev";
    case BoundKind::kUnimodal:
      return "unimodal";
  }
  return "unknown";
}

const char* SideName(Side side) {
  switch (side) {
    case Side::kTwoSided:
      return "two-sided";
    case Side::kUpper:
      return "upper";
    case Side::kLower:
      return "lower";
  }
  return "unknown";
}

std::vector<double> KGrid() {
  // Computed from an integer index, not by accumulating 0.5, so every grid point is exact.
  std::vector<double> grid;
  for (int i = 0; i <= 18; ++i) grid.push_back(1.0 + 0.5 * i);
  return grid;
}

std::vector<double> WideKGrid() {
  std::vector<double> grid = KGrid();
  for (int k = 11; k <= 99; ++k) grid.push_back(k);
  return grid;
}

absl::StatusOr<std::vector<double>> ParseKGrid(const std::string& text) {
  if (text == "paper") return KGrid();
  if (text == "wide") return WideKGrid();
  std::vector<double> grid;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    double k = 0;
    if (!absl::SimpleAtod(absl::StripAsciiWhitespace(part), &k) || !std::isfinite(k) || k < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "k grid: '", part, "' is not a finite k >= 0 (give paper, wide or a list like 1,2,5)"));
    }
    grid.push_back(k);
  }
  std::sort(grid.begin(), grid.end());
  grid.erase(std::unique(grid.begin(), grid.end()), grid.end());
  return grid;
}

absl::StatusOr<double> FprBound(BoundKind kind, double k, Side side) {
  VLC_RETURN_IF_ERROR(CheckK(k));
  switch (kind) {
    case BoundKind::kCantelli:
      return 1.0 / (1.0 + k * k);
    case BoundKind::kNormal: {
      // 1 - cdf(k) would cancel to 0 beyond k ~ 8.3; complement() evaluates the upper tail
      // directly (via erfc), keeping full relative precision.
      const boost::math::normal_distribution<double> standard(0.0, 1.0);
      return 2.0 * boost::math::cdf(boost::math::complement(standard, k));
    }
    case BoundKind::kChebyshev:
      // The inequality is vacuous (> 1) for k < 1; a probability bound never exceeds 1.
      return k <= 1.0 ? 1.0 : 1.0 / (k * k);
    case BoundKind::kUnimodal: {
      // Both branches meet at the switch point (1/6 there); the lower one exceeds 1 near k = 0.
      if (side == Side::kTwoSided) {
        const double k2 = k * k;
        if (k2 >= 8.0 / 3.0) return 4.0 / (9.0 * k2);
        return k2 == 0.0 ? 1.0 : std::min(1.0, 4.0 / (3.0 * k2) - 1.0 / 3.0);
      }
      const double s2 = 1.0 + k * k;
      if (s2 - 1.0 >= 5.0 / 3.0) return 4.0 / (9.0 * s2);
      return std::min(1.0, 4.0 / (3.0 * s2) - 1.0 / 3.0);
    }
  }
  return absl::InvalidArgumentError("unknown bound kind");
}

absl::StatusOr<Moments> ComputeMoments(absl::Span<const double> values) {
  if (values.empty()) {
    return absl::InvalidArgumentError("cannot compute the moments of an empty history");
  }
  double lo = values[0];
  double hi = values[0];
  double max_abs = 0.0;
  double sum = 0.0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("history value ", i, " is not finite (", v, ")"));
    }
    lo = std::min(lo, v);
    hi = std::max(hi, v);
    max_abs = std::max(max_abs, std::fabs(v));
    sum += v;
  }
  Moments m;
  m.n = values.size();
  m.mean = sum / static_cast<double>(m.n);
  m.constant = (hi - lo) <= kConstantRelTolerance * max_abs;
  if (m.constant) {
    // The exact value beats a mean that lost its last bits in the sum.
    if (lo == hi) m.mean = lo;
    m.sd = 0.0;
    return m;
  }
  // Two passes: the sum of squared deviations does not cancel the way E[x^2] - E[x]^2 does when
  // the mean is large against the spread (row counts around 1e9 that move by a few rows).
  double ss = 0.0;
  for (double v : values) ss += (v - m.mean) * (v - m.mean);
  m.sd = std::sqrt(ss / static_cast<double>(m.n));
  return m;
}

absl::StatusOr<QConstraint> MakeQConstraint(absl::Span<const double> history, double k,
                                            BoundKind kind, Side side, bool predictive) {
  VLC_RETURN_IF_ERROR(CheckK(k));
  VLC_RETURN_IF_ERROR(CheckPairing(kind, side));
  VLC_ASSIGN_OR_RETURN(const Moments moments, ComputeMoments(history));

  QConstraint q;
  q.kind = kind;
  q.side = side;
  q.k = k;
  q.mean = moments.mean;
  q.sd = moments.sd;
  constexpr double kInf = std::numeric_limits<double>::infinity();
  if (moments.constant) {
    q.invariant = true;
    q.fpr = 0.0;
    q.lo = q.mean - kQSlack;
    q.hi = q.mean + kQSlack;
    return q;
  }
  VLC_ASSIGN_OR_RETURN(q.fpr, FprBound(kind, k, side));
  if (predictive && kind == BoundKind::kNormal && moments.n >= 2) {
    // A new value X of a normal metric, against the mean and the population sd of n earlier
    // ones: (X - mean) / (s sqrt(1 + 1/n)) is Student's t with n - 1 degrees of freedom (s the
    // sample sd, sd sqrt(n / (n - 1))), so |X - mean| > k sd has probability
    // 2 P(T > k sqrt((n - 1) / (n + 1))).
    const double n = static_cast<double>(moments.n);
    const boost::math::students_t_distribution<double> t(n - 1);
    q.fpr = std::min(
        1.0, 2.0 * boost::math::cdf(boost::math::complement(t, k * std::sqrt((n - 1) / (n + 1)))));
  }
  const double half_width = k * q.sd + kQSlack;
  q.lo = side == Side::kUpper ? -kInf : q.mean - half_width;
  q.hi = side == Side::kLower ? kInf : q.mean + half_width;
  return q;
}

namespace {

// c[0] + c[1] x + c[2] x^2 + ...
double Poly(std::initializer_list<double> c, double x) {
  double sum = 0.0, power = 1.0;
  for (double coefficient : c) {
    sum += coefficient * power;
    power *= x;
  }
  return sum;
}

}  // namespace

absl::StatusOr<ShapiroWilk> ShapiroWilkTest(absl::Span<const double> values) {
  const std::size_t n = values.size();
  if (n < 3 || n > 5000) {
    return absl::InvalidArgumentError(
        absl::StrCat("the Shapiro-Wilk test needs 3 to 5000 values, got ", n));
  }
  std::vector<double> x(values.begin(), values.end());
  for (double v : x) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError("the Shapiro-Wilk test got a non-finite value");
    }
  }
  std::sort(x.begin(), x.end());
  if (x.front() == x.back()) {
    return absl::InvalidArgumentError("the Shapiro-Wilk test is undefined for equal values");
  }
  const double an = static_cast<double>(n);
  const boost::math::normal_distribution<double> normal;
  // Coefficients a[i] of the lower half, i = 0 .. n/2 - 1 (the upper half is antisymmetric).
  const std::size_t half = n / 2;
  std::vector<double> a(half);
  if (n == 3) {
    a[0] = std::sqrt(0.5);
  } else {
    std::vector<double> m(half);
    double summ2 = 0.0;
    for (std::size_t i = 0; i < half; ++i) {
      m[i] = boost::math::quantile(normal, (static_cast<double>(i + 1) - 0.375) / (an + 0.25));
      summ2 += m[i] * m[i];
    }
    summ2 *= 2.0;
    const double ssumm2 = std::sqrt(summ2);
    const double rsn = 1.0 / std::sqrt(an);
    const double a1 =
        Poly({0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056}, rsn) - m[0] / ssumm2;
    std::size_t first_plain;
    double fac;
    if (n > 5) {
      const double a2 =
          -m[1] / ssumm2 + Poly({0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633}, rsn);
      fac = std::sqrt((summ2 - 2.0 * m[0] * m[0] - 2.0 * m[1] * m[1]) /
                      (1.0 - 2.0 * a1 * a1 - 2.0 * a2 * a2));
      a[1] = a2;
      first_plain = 2;
    } else {
      fac = std::sqrt((summ2 - 2.0 * m[0] * m[0]) / (1.0 - 2.0 * a1 * a1));
      first_plain = 1;
    }
    a[0] = a1;
    for (std::size_t i = first_plain; i < half; ++i) a[i] = -m[i] / fac;
  }
  // W = (sum a_i (x_(n+1-i) - x_(i)))^2 / sum (x - mean)^2, on values centred for accuracy.
  double mean = 0.0;
  for (double v : x) mean += v;
  mean /= an;
  double ss = 0.0;
  for (double v : x) ss += (v - mean) * (v - mean);
  double numerator = 0.0;
  for (std::size_t i = 0; i < half; ++i) numerator += a[i] * (x[n - 1 - i] - x[i]);
  ShapiroWilk out;
  out.w = std::min(1.0, numerator * numerator / ss);
  if (n == 3) {
    constexpr double kSixOverPi = 1.90985931710274;
    constexpr double kAsinSqrtThreeQuarters = 1.04719755119660;
    out.p_value =
        std::max(0.0, kSixOverPi * (std::asin(std::sqrt(out.w)) - kAsinSqrtThreeQuarters));
    return out;
  }
  // ln(1 - W), normalised by Royston's approximations of its mean and sd.
  double y = std::log1p(-out.w);
  double mu, sigma;
  if (n <= 11) {
    const double gamma = Poly({-2.273, 0.459}, an);
    if (y >= gamma) {
      out.p_value = 1e-99;  // as AS R94: W so small the approximation does not reach it
      return out;
    }
    y = -std::log(gamma - y);
    mu = Poly({0.5440, -0.39978, 0.025054, -6.714e-4}, an);
    sigma = std::exp(Poly({1.3822, -0.77857, 0.062767, -0.0020322}, an));
  } else {
    const double ln_n = std::log(an);
    mu = Poly({-1.5861, -0.31082, -0.083751, 0.0038915}, ln_n);
    sigma = std::exp(Poly({-0.4803, -0.082676, 0.0030302}, ln_n));
  }
  out.p_value = boost::math::cdf(boost::math::complement(normal, (y - mu) / sigma));
  return out;
}

}  // namespace vlc::dq
