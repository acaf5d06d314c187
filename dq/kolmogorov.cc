#include "dq/kolmogorov.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace vlc::dq {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Below this the alternating series needs many terms and loses digits to cancellation; above it
// the theta form's CDF is close to 1 and 1 - CDF would lose them instead. Numerical Recipes uses
// the same switch point; at 1.18 both series converge in under six terms.
constexpr double kSwitchLambda = 1.18;

// P(K <= lambda) by the Jacobi theta transformation of the alternating series.
double SmallLambdaCdf(double lambda) {
  const double t = kPi * kPi / (8 * lambda * lambda);
  double sum = 0;
  for (int j = 1; j <= 100; ++j) {
    const double odd = 2 * j - 1;
    const double term = std::exp(-odd * odd * t);
    sum += term;
    if (term <= 1e-17 * sum) break;  // also ends an underflowed (zero) sum at once
  }
  return std::sqrt(2 * kPi) / lambda * sum;
}

// 2 sum_{j>=1} (-1)^(j-1) exp(-2 j^2 lambda^2), for lambda >= kSwitchLambda.
double LargeLambdaSurvival(double lambda) {
  double sum = 0;
  double sign = 1;
  for (int j = 1; j <= 100; ++j) {
    const double term = std::exp(-2.0 * j * j * lambda * lambda);
    sum += sign * term;
    sign = -sign;
    if (term <= 1e-17 * sum) break;
  }
  return 2 * sum;
}

int64_t FloorDiv(int64_t a, int64_t b) {  // b > 0
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

}  // namespace

double KolmogorovSurvival(double lambda) {
  if (std::isnan(lambda)) return kNaN;
  if (lambda <= 0) return 1.0;
  if (lambda < kSwitchLambda) return 1.0 - SmallLambdaCdf(lambda);
  return LargeLambdaSurvival(lambda);
}

double KolmogorovCdf(double lambda) {
  if (std::isnan(lambda)) return kNaN;
  if (lambda <= 0) return 0.0;
  if (lambda < kSwitchLambda) return SmallLambdaCdf(lambda);
  return 1.0 - LargeLambdaSurvival(lambda);
}

double KsExactPValue(int64_t n, int64_t m, int64_t d_lattice) {
  if (n <= 0 || m <= 0) return kNaN;
  if (d_lattice <= 0) return 1.0;
  // A uniformly random order of the pooled sample is a lattice path from (0, 0) to (n, m): at
  // (i, j) the next value comes from `a` with probability (n - i) / (n - i + m - j). The path
  // has |F_a - F_b| = |i m - j n| / (n m) there, so D >= d exactly when it reaches a point with
  // |i m - j n| >= d_lattice. Carrying probabilities (not path counts, which overflow a double
  // past n + m ~ 1000) forward through the band of points inside, and adding up what steps out,
  // gives the p-value as a sum of positive terms.
  //
  // Row i's points inside the band are band_lo(i) <= j <= band_hi(i): i m - d < j n < i m + d.
  auto band_lo = [&](int64_t i) {
    return std::max<int64_t>(0, FloorDiv(i * m - d_lattice, n) + 1);
  };
  auto band_hi = [&](int64_t i) {
    return std::min<int64_t>(m, FloorDiv(i * m + d_lattice - 1, n));
  };
  // Cost. Along a row each point feeds the next, so the step probabilities are taken from a
  // table of 1 / k (no division on that chain) and the rightward flow stays in a register. And
  // points whose probability is below kNegligible are dropped: a random path keeps within a few
  // sqrt(n) of the diagonal, so where the band is wide (D near 1, as for a broken run) most of it
  // holds probabilities that only round towards zero, and the row's span of live points is what
  // is walked. What is dropped is below (n + 1)(m + 1) 1e-300 in all, so the p-value is exact
  // to an absolute 1e-280 (n, m < 1e10): relative precision is kept down to p ~ 1e-270.
  constexpr double kNegligible = 1e-300;
  std::vector<double> inv(static_cast<size_t>(n + m + 1), 0.0);
  for (int64_t k = 1; k <= n + m; ++k) inv[k] = 1.0 / static_cast<double>(k);
  std::vector<double> cur(m + 2, 0.0), next(m + 2, 0.0);
  cur[0] = 1.0;
  int64_t cur_lo = 0, cur_hi = 0;  // cur is 0 outside [cur_lo, cur_hi]
  int64_t hi = band_hi(0);
  double out = 0;
  for (int64_t i = 0; i <= n && cur_lo <= cur_hi; ++i) {
    const int64_t below_lo = band_lo(i + 1), below_hi = band_hi(i + 1);
    int64_t next_lo = 0, next_hi = -1;
    double carry = 0;  // what flowed right from (i, j - 1) into (i, j)
    for (int64_t j = cur_lo; j <= hi && (j <= cur_hi || carry != 0); ++j) {
      const double p = cur[j] + carry;
      carry = 0;
      if (p < kNegligible) continue;
      const int64_t left = (n - i) + (m - j);
      if (left == 0) continue;  // (n, m): the path ended inside
      const double right = static_cast<double>(m - j) * inv[left];
      const double down = static_cast<double>(n - i) * inv[left];
      if (j < m) {
        if (j + 1 <= hi) {
          carry = p * right;
        } else {
          out += p * right;
        }
      }
      if (i < n) {
        if (j >= below_lo && j <= below_hi) {
          next[j] = p * down;  // (i + 1, j) is reached from (i, j) alone; right flow comes later
          if (next_hi < 0) next_lo = j;
          next_hi = j;
        } else {
          out += p * down;
        }
      }
    }
    std::fill(cur.begin() + cur_lo, cur.begin() + cur_hi + 1, 0.0);
    std::swap(cur, next);
    cur_lo = next_lo;
    cur_hi = next_hi;
    hi = below_hi;
  }
  return std::min(1.0, std::max(0.0, out));
}

double KsAsymptoticPValue(int64_t n, int64_t m, double d) {
  if (n <= 0 || m <= 0 || std::isnan(d)) return kNaN;
  const double ne = static_cast<double>(n) * static_cast<double>(m) / static_cast<double>(n + m);
  const double root = std::sqrt(ne);
  return KolmogorovSurvival((root + 0.12 + 0.11 / root) * d);
}

KsResult KsTwoSampleSorted(const std::vector<double>& a_sorted, const std::vector<double>& b_sorted,
                           KsMethod method) {
  const int64_t n = static_cast<int64_t>(a_sorted.size());
  const int64_t m = static_cast<int64_t>(b_sorted.size());
  if (n == 0 || m == 0) return KsResult{kNaN, kNaN, false};
  // D on the lattice: after each distinct value (all tied copies in both samples consumed),
  // |i m - j n| = n m |F_a - F_b|, in integers so that ties with the band are decided exactly.
  int64_t d_lattice = 0;
  ForEachPooledValue(a_sorted, b_sorted, [&](double, int64_t i, int64_t j) {
    const int64_t diff = i * m - j * n;
    d_lattice = std::max(d_lattice, diff < 0 ? -diff : diff);
  });
  KsResult result;
  result.statistic = static_cast<double>(d_lattice) / (static_cast<double>(n) * m);
  result.exact = method == KsMethod::kExact ||
                 (method == KsMethod::kAuto && std::max(n, m) <= kKsExactMaxSize);
  result.p_value =
      result.exact ? KsExactPValue(n, m, d_lattice) : KsAsymptoticPValue(n, m, result.statistic);
  return result;
}

KsResult KsTwoSample(const std::vector<double>& a, const std::vector<double>& b, KsMethod method) {
  std::vector<double> a_sorted = a, b_sorted = b;
  std::sort(a_sorted.begin(), a_sorted.end());
  std::sort(b_sorted.begin(), b_sorted.end());
  return KsTwoSampleSorted(a_sorted, b_sorted, method);
}

}  // namespace vlc::dq
