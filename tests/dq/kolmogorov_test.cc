// The Kolmogorov distribution and the two-sample KS test against independent values: a 50-digit
// evaluation of both series (mpmath), published critical values, scipy, and a brute-force count
// of every ordering of small samples.
#include "dq/kolmogorov.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gtest/gtest.h"

namespace vlc::dq {
namespace {

// |actual - expected| <= rel * |expected|.
void ExpectRelNear(double actual, double expected, double rel) {
  EXPECT_NEAR(actual, expected, rel * std::abs(expected)) << "expected " << expected;
}

// Q_KS(lambda) to 20 significant digits, from mpmath 1.3 at 50 digits, summing both the
// alternating series and 1 - (theta form) with mp.nsum; the two agree to all 20 digits, and
// scipy.special.kolmogorov (scipy 1.17.1) agrees to within 7e-16 relative:
//   mp.mp.dps = 50
//   Q = lambda l: 2*mp.nsum(lambda j: (-1)**(j-1)*mp.exp(-2*j*j*l*l), [1, mp.inf])
TEST(DqKolmogorov, SurvivalMatchesAHighPrecisionSeries) {
  struct Case {
    double lambda, q;
  };
  const Case cases[] = {
      {0.2, 0.99999999999949495927},    {0.5, 0.96394524366487509439},
      {0.8, 0.544142411574198149},      {1.0, 0.2699996716773545212},
      {1.17, 0.12939004218561878712},   {1.18, 0.12345380942976567771},
      {1.19, 0.11774229287977164657},   {1.36, 0.049485876755377909939},
      {1.63, 0.0098463648884865244086}, {2.0, 0.00067092525577969534654},
      {3.0, 3.0459959489425256872e-8},  {5.0, 3.857499695927835566e-22},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.lambda);
    ExpectRelNear(KolmogorovSurvival(c.lambda), c.q, 2e-15);
    EXPECT_NEAR(KolmogorovCdf(c.lambda), 1 - c.q, 5e-16);  // 1 - q itself rounds
  }
}

// Smirnov's table of the limiting distribution (as reprinted in most statistics texts): the 5%
// and 1% critical values of sqrt(n) D are 1.36 and 1.63; Q_KS(1.36) = 0.0495, Q_KS(1.63) = 0.0098,
// Q_KS(0.5) = 0.9639, Q_KS(1.0) = 0.2700.
TEST(DqKolmogorov, SurvivalMatchesPublishedCriticalValues) {
  EXPECT_NEAR(KolmogorovSurvival(1.36), 0.0495, 5e-5);
  EXPECT_NEAR(KolmogorovSurvival(1.63), 0.0098, 5e-5);
  EXPECT_NEAR(KolmogorovSurvival(0.5), 0.9639, 5e-5);
  EXPECT_NEAR(KolmogorovSurvival(1.0), 0.2700, 5e-5);
}

TEST(DqKolmogorov, BothSeriesMeetSmoothlyAtTheSwitchPoint) {
  // Just below 1.18 the theta form answers, just above the alternating series; the derivative of
  // Q there is about -0.55, so a step of 2e-12 moves Q by about 1.1e-12.
  const double below = KolmogorovSurvival(1.18 - 1e-12);
  const double above = KolmogorovSurvival(1.18 + 1e-12);
  EXPECT_GT(below, above);
  EXPECT_LT(below - above, 5e-12);
}

TEST(DqKolmogorov, EdgeValues) {
  EXPECT_EQ(KolmogorovSurvival(0.0), 1.0);
  EXPECT_EQ(KolmogorovSurvival(-1.0), 1.0);
  EXPECT_EQ(KolmogorovCdf(0.0), 0.0);
  EXPECT_EQ(KolmogorovSurvival(0.01), 1.0);  // the CDF underflows to 0 here
  EXPECT_EQ(KolmogorovSurvival(40.0), 0.0);
  EXPECT_TRUE(std::isnan(KolmogorovSurvival(std::nan(""))));
  // Decreasing everywhere.
  double last = 1.0;
  for (double l = 0.05; l < 6; l += 0.01) {
    const double q = KolmogorovSurvival(l);
    EXPECT_LE(q, last) << l;
    last = q;
  }
}

// P(D >= d) by listing every ordering of the pooled sample (C(n+m, n) of them, all equally
// likely): an independent check of the lattice-path computation.
double BruteForcePValue(int n, int m, int64_t d_lattice) {
  std::vector<int> order(n + m, 0);
  std::fill(order.begin() + n, order.end(), 1);  // 0: from a, 1: from b; sorted for permutations
  int64_t total = 0, at_least = 0;
  do {
    int64_t i = 0, j = 0, d = 0;
    for (int who : order) {
      (who == 0 ? i : j) += 1;
      d = std::max<int64_t>(d, std::abs(i * m - j * n));
    }
    ++total;
    at_least += d >= d_lattice ? 1 : 0;
  } while (std::next_permutation(order.begin(), order.end()));
  return static_cast<double>(at_least) / static_cast<double>(total);
}

TEST(DqKsTwoSample, ExactPValueEqualsCountingEveryOrdering) {
  for (auto [n, m] : {std::pair{4, 3}, std::pair{5, 5}, std::pair{6, 4}, std::pair{2, 7}}) {
    for (int64_t d = 1; d <= int64_t{n} * m; ++d) {
      SCOPED_TRACE(testing::Message() << "n=" << n << " m=" << m << " d=" << d);
      EXPECT_NEAR(KsExactPValue(n, m, d), BruteForcePValue(n, m, d), 1e-14);
    }
  }
}

// Fixed samples; expected values from scipy 1.17.1:
//   r = scipy.stats.ks_2samp(a, b, method='exact')   # statistic, pvalue
//   scipy.stats.ks_2samp(a, b, method='asymp').pvalue
//   scipy.stats.kstwobign.sf((sqrt(en) + 0.12 + 0.11/sqrt(en)) * r.statistic), en = n*m/(n+m)
const std::vector<double> kS1a = {0.61, 0.29, 0.06, 0.59,  -1.73, -0.74, 0.51, -0.56,
                                  0.39, 1.64, 0.05, -0.06, 0.64,  -0.82, 0.37};
const std::vector<double> kS1b = {1.77, 1.09, -1.28, 2.36, 1.31, 1.05, -0.32, -0.4, 1.06, -2.47};
const std::vector<double> kS2a = {1, 2, 2, 3, 4, 5, 5, 6};  // ties within and across samples
const std::vector<double> kS2b = {2, 3, 3, 4, 6, 7, 8, 9};

// a_i = ((37 i) mod 1009) / 1009, b_j = ((53 j + 11) mod 997) / 997 * scale + shift: the same
// doubles in C++ and numpy.
std::vector<double> GenA(int n) {
  std::vector<double> a;
  for (int i = 0; i < n; ++i) a.push_back(((i * 37) % 1009) / 1009.0);
  return a;
}
std::vector<double> GenB(int m, double scale, double shift) {
  std::vector<double> b;
  for (int j = 0; j < m; ++j) b.push_back(((j * 53 + 11) % 997) / 997.0 * scale + shift);
  return b;
}

TEST(DqKsTwoSample, ExactMatchesScipyOnFixedSamples) {
  KsResult r = KsTwoSample(kS1a, kS1b);
  EXPECT_TRUE(r.exact);
  EXPECT_NEAR(r.statistic, 0.5333333333333333, 1e-15);
  ExpectRelNear(r.p_value, 0.0498354115933871, 1e-12);

  r = KsTwoSample(kS2a, kS2b);
  EXPECT_NEAR(r.statistic, 0.375, 1e-15);
  ExpectRelNear(r.p_value, 0.6601398601398599, 1e-12);

  // 200 against 150 values (scipy 'asymp' would say 0.37371909432803563).
  r = KsTwoSample(GenA(200), GenB(150, 1.1, 0.0));
  EXPECT_NEAR(r.statistic, 0.09666666666666666, 1e-15);
  ExpectRelNear(r.p_value, 0.37897306785339374, 1e-12);

  // 3000 against 2000: a p-value far in the tail keeps its relative precision.
  r = KsTwoSample(GenA(3000), GenB(2000, 1.1, 0.02));
  EXPECT_TRUE(r.exact);
  EXPECT_NEAR(r.statistic, 0.109, 1e-15);
  ExpectRelNear(r.p_value, 7.45996520311413e-13, 1e-9);
}

TEST(DqKsTwoSample, SeparatedSamplesHaveTheExactTinyPValue) {
  // All of a below all of b: only the two extreme orderings reach D = 1, p = 2 / C(100, 50).
  std::vector<double> a, b;
  for (int i = 1; i <= 50; ++i) {
    a.push_back(i);
    b.push_back(100 + i);
  }
  const KsResult r = KsTwoSample(a, b);
  EXPECT_EQ(r.statistic, 1.0);
  ExpectRelNear(r.p_value, 1.9823306042836678e-29, 1e-12);
}

TEST(DqKsTwoSample, TinyPValuesKeepTheirPrecisionWhereNegligiblePathsAreDropped) {
  // The exact walk drops points whose probability is below 1e-300; what reaches D = 1 is still
  // exact far below 1e-200: p = 2 / C(800, 400) = 1.06358967695185672559813096786e-239 (Python's
  // integer comb). And a band as wide as the square (D = 1, as for a broken run) is walked as the
  // live span near the diagonal, not the whole band, with the same answer as counting: 0 here,
  // 2 / C(20000, 10000) being ~1e-6020.
  std::vector<double> a, b;
  for (int i = 1; i <= 400; ++i) {
    a.push_back(i);
    b.push_back(1000 + i);
  }
  const KsResult r = KsTwoSample(a, b);
  EXPECT_EQ(r.statistic, 1.0);
  ExpectRelNear(r.p_value, 1.06358967695185672559813096786e-239, 1e-12);
  EXPECT_EQ(KsExactPValue(10000, 10000, int64_t{10000} * 10000), 0.0);
  // D >= 49/50 for n = m = 50: the paths touching i - j = +-49, 2 C(100, 1) of them by the
  // reflection principle (no path touches both), so p = 200 / C(100, 50).
  ExpectRelNear(KsExactPValue(50, 50, 50 * 50 - 50), 1.982330604283667813475350e-27, 1e-12);
}

TEST(DqKsTwoSample, AsymptoticIsStephensApproximation) {
  // The same statistic through Q_KS with the effective-n correction, as scipy's kstwobign.sf.
  EXPECT_TRUE(std::isnan(KsAsymptoticPValue(0, 3, 0.5)));
  ExpectRelNear(KsTwoSample(kS1a, kS1b, KsMethod::kAsymptotic).p_value, 0.04095596148047199, 1e-12);
  ExpectRelNear(KsTwoSample(kS2a, kS2b, KsMethod::kAsymptotic).p_value, 0.5189424992880709, 1e-12);
  const KsResult r = KsTwoSample(GenA(200), GenB(150, 1.1, 0.0), KsMethod::kAsymptotic);
  EXPECT_FALSE(r.exact);
  ExpectRelNear(r.p_value, 0.3821764710172448, 1e-12);
}

TEST(DqKsTwoSample, AutoIsAsymptoticPastTenThousandValuesAndAgreesWithScipy) {
  // 20000 against 15000 values. scipy 1.17.1, ks_2samp(a, b, method='asymp'), which uses the
  // one-sample distribution at round(en) rather than Stephens' correction: 0.24435392333500539
  // (shift 0.01) and 0.023908674965653832 (shift 0.015); kstwobign.sf of the corrected lambda:
  // 0.24478688500668605 and 0.023885923147087644.
  const std::vector<double> a = GenA(20000);
  KsResult r = KsTwoSample(a, GenB(15000, 1.0, 0.01));
  EXPECT_FALSE(r.exact);
  EXPECT_NEAR(r.statistic, 0.011050000000000004, 1e-14);
  ExpectRelNear(r.p_value, 0.24478688500668605, 1e-9);
  ExpectRelNear(r.p_value, 0.24435392333500539, 3e-3);

  r = KsTwoSample(a, GenB(15000, 1.0, 0.015));
  ExpectRelNear(r.p_value, 0.023885923147087644, 1e-9);
  ExpectRelNear(r.p_value, 0.023908674965653832, 3e-3);
}

TEST(DqKsTwoSample, IdenticalAndEmptySamples) {
  const KsResult same = KsTwoSample(kS1a, kS1a);
  EXPECT_EQ(same.statistic, 0.0);
  EXPECT_EQ(same.p_value, 1.0);
  const KsResult empty = KsTwoSample({}, kS1a);
  EXPECT_TRUE(std::isnan(empty.statistic));
  EXPECT_TRUE(std::isnan(empty.p_value));
}

TEST(DqKsTwoSample, OrderOfTheSamplesDoesNotMatter) {
  const KsResult ab = KsTwoSample(kS1a, kS1b);
  const KsResult ba = KsTwoSample(kS1b, kS1a);
  EXPECT_EQ(ab.statistic, ba.statistic);
  EXPECT_NEAR(ab.p_value, ba.p_value, 1e-15);
}

}  // namespace
}  // namespace vlc::dq
