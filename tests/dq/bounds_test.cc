// FPR bounds and Q(M, k) constraints of AVH (docs/METHODS.md, "Auto-Validate-by-History").
// Normal tail values: scipy 1.17.1, 2 * scipy.stats.norm.sf(k) (the upper tail computed directly,
// as boost's complement() does).
#include "dq/bounds.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace vlc::dq {
namespace {

double Fpr(BoundKind kind, double k) {
  absl::StatusOr<double> v = FprBound(kind, k);
  EXPECT_TRUE(v.ok()) << v.status();
  return v.ok() ? *v : std::nan("");
}

TEST(DqKGrid, RunsFromOneToTenInHalfSteps) {
  const std::vector<double> grid = KGrid();
  ASSERT_EQ(grid.size(), 19u);
  EXPECT_EQ(grid.front(), 1.0);
  EXPECT_EQ(grid[1], 1.5);
  EXPECT_EQ(grid[4], 3.0);
  EXPECT_EQ(grid.back(), 10.0);
  for (std::size_t i = 1; i < grid.size(); ++i) EXPECT_EQ(grid[i] - grid[i - 1], 0.5);
}

TEST(DqKGrid, TheWideGridAddsEveryIntegerFromElevenToNinetyNine) {
  const std::vector<double> wide = WideKGrid();
  ASSERT_EQ(wide.size(), 19u + 89u);
  EXPECT_EQ(std::vector<double>(wide.begin(), wide.begin() + 19), KGrid());
  EXPECT_EQ(wide[19], 11.0);
  EXPECT_EQ(wide.back(), 99.0);
  EXPECT_TRUE(std::is_sorted(wide.begin(), wide.end()));
}

TEST(DqKGrid, ParsesNamesAndListsAndRefusesTheRest) {
  EXPECT_EQ(*ParseKGrid("paper"), KGrid());
  EXPECT_EQ(*ParseKGrid("wide"), WideKGrid());
  EXPECT_EQ(*ParseKGrid("5, 1,2,5"), (std::vector<double>{1, 2, 5}));
  for (const char* bad : {"", "1,,2", "-1", "nan", "inf", "big"}) {
    absl::StatusOr<std::vector<double>> g = ParseKGrid(bad);
    EXPECT_EQ(g.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(g.status().message().find("k grid"), std::string::npos) << bad;
  }
}

TEST(DqFprBound, CantelliIsOneOverOnePlusKSquared) {
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kCantelli, 1.0), 0.5);
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kCantelli, 2.0), 0.2);
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kCantelli, 3.0), 0.1);
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kCantelli, 10.0), 1.0 / 101.0);
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kCantelli, 0.0), 1.0);
}

TEST(DqFprBound, NormalIsTheTwoSidedGaussianTail) {
  const double rel = 1e-13;
  const std::pair<double, double> cases[] = {
      {1.0, 0.31731050786291415},   {1.5, 0.13361440253771614},   {2.0, 0.04550026389635839},
      {3.0, 0.0026997960632601866}, {5.0, 5.733031437583866e-07},
  };
  for (const auto& [k, expected] : cases) {
    EXPECT_NEAR(Fpr(BoundKind::kNormal, k), expected, rel * expected) << "k=" << k;
  }
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kNormal, 0.0), 1.0);
}

TEST(DqFprBound, NormalKeepsRelativePrecisionFarInTheTail) {
  // 1 - Phi(10) cancels to exactly 0 in double precision; the complement does not.
  const double expected = 1.523970604832094e-23;
  EXPECT_NEAR(Fpr(BoundKind::kNormal, 10.0), expected, 1e-12 * expected);
  EXPECT_GT(Fpr(BoundKind::kNormal, 10.0), 0.0);
}

TEST(DqFprBound, ChebyshevIsOneOverKSquaredCappedAtOne) {
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kChebyshev, 2.0), 0.25);
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kChebyshev, 10.0), 0.01);
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kChebyshev, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kChebyshev, 0.5), 1.0);  // 4 without the cap
  EXPECT_DOUBLE_EQ(Fpr(BoundKind::kChebyshev, 0.0), 1.0);
}

TEST(DqFprBound, StrongerAssumptionsGiveSmallerBoundsOnTheGrid) {
  // normal (CLT) < Cantelli (one side, any distribution) < Chebyshev (two sides, any
  // distribution) at every grid point.
  for (double k : KGrid()) {
    EXPECT_LT(Fpr(BoundKind::kNormal, k), Fpr(BoundKind::kCantelli, k)) << k;
    EXPECT_LT(Fpr(BoundKind::kCantelli, k), Fpr(BoundKind::kChebyshev, k)) << k;
  }
}

// Vysochanskij-Petunin (two-sided) and its one-sided form: 4/9 of Chebyshev's and Cantelli's
// bounds in the tails, a second branch near the mean, continuous where they meet.
TEST(DqFprBound, UnimodalIsFourNinthsOfTheDistributionFreeTail) {
  auto two = [](double k) { return *FprBound(BoundKind::kUnimodal, k, Side::kTwoSided); };
  auto one = [](double k) { return *FprBound(BoundKind::kUnimodal, k, Side::kUpper); };
  EXPECT_DOUBLE_EQ(two(3.0), 4.0 / 81.0);
  EXPECT_DOUBLE_EQ(two(10.0), 4.0 / 900.0);
  EXPECT_DOUBLE_EQ(two(1.5), 4.0 / (3.0 * 2.25) - 1.0 / 3.0);  // below sqrt(8/3)
  EXPECT_DOUBLE_EQ(two(0.0), 1.0);
  EXPECT_DOUBLE_EQ(two(0.5), 1.0);  // 5 - 1/3 without the cap
  EXPECT_NEAR(two(std::sqrt(8.0 / 3.0)), 1.0 / 6.0, 1e-12);
  EXPECT_NEAR(two(std::sqrt(8.0 / 3.0) - 1e-9), 1.0 / 6.0, 1e-8);
  EXPECT_DOUBLE_EQ(one(2.0), 4.0 / 45.0);
  EXPECT_DOUBLE_EQ(one(1.0), 4.0 / 6.0 - 1.0 / 3.0);  // below sqrt(5/3)
  EXPECT_EQ(*FprBound(BoundKind::kUnimodal, 2.0, Side::kLower), one(2.0));
  EXPECT_NEAR(one(std::sqrt(5.0 / 3.0) - 1e-9), 1.0 / 6.0, 1e-8);
  for (double k : WideKGrid()) {
    EXPECT_LE(two(k), Fpr(BoundKind::kChebyshev, k)) << k;
    EXPECT_LE(one(k), Fpr(BoundKind::kCantelli, k)) << k;
    if (k >= 2.0) EXPECT_NEAR(two(k), 4.0 / 9.0 * Fpr(BoundKind::kChebyshev, k), 1e-15) << k;
  }
  // The bound holds for a skewed single-moded distribution: Exp(1) (mean 1, sd 1), whose upper
  // tail P(X >= 1 + k) = exp(-(1 + k)) is its two-sided tail for k >= 1.
  for (double k = 1.0; k <= 20.0; k += 0.5) {
    EXPECT_LE(std::exp(-(1.0 + k)), one(k)) << k;
    EXPECT_LE(std::exp(-(1.0 + k)), two(k)) << k;
  }
}

TEST(DqFprBound, RejectsNegativeAndNonFiniteK) {
  EXPECT_EQ(FprBound(BoundKind::kNormal, -1.0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(FprBound(BoundKind::kCantelli, std::nan("")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      FprBound(BoundKind::kChebyshev, std::numeric_limits<double>::infinity()).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(DqMoments, UsesThePopulationStandardDeviation) {
  // mean 5, squared deviations 4+0+1+1+4 = 10, population variance 10/5 = 2 (sample: 2.5).
  absl::StatusOr<Moments> m = ComputeMoments(std::vector<double>{3.0, 5.0, 4.0, 6.0, 7.0});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->n, 5u);
  EXPECT_DOUBLE_EQ(m->mean, 5.0);
  EXPECT_DOUBLE_EQ(m->sd, std::sqrt(2.0));
  EXPECT_FALSE(m->constant);
}

TEST(DqMoments, LargeMeanSmallSpreadKeepsItsSd) {
  // E[x^2] - E[x]^2 would lose every digit here.
  absl::StatusOr<Moments> m =
      ComputeMoments(std::vector<double>{1e9 + 3.0, 1e9 + 5.0, 1e9 + 4.0, 1e9 + 6.0, 1e9 + 7.0});
  ASSERT_TRUE(m.ok());
  EXPECT_NEAR(m->sd, std::sqrt(2.0), 1e-6);
}

TEST(DqMoments, EqualValuesAreConstantWithTheirExactMean) {
  absl::StatusOr<Moments> m = ComputeMoments(std::vector<double>(10, 0.1));
  ASSERT_TRUE(m.ok());
  EXPECT_TRUE(m->constant);
  EXPECT_EQ(m->sd, 0.0);
  EXPECT_EQ(m->mean, 0.1);  // the sum of ten 0.1s, divided by 10, is not 0.1
  EXPECT_TRUE(ComputeMoments(std::vector<double>(3, 0.0))->constant);
}

TEST(DqMoments, RejectsEmptyAndNonFinite) {
  EXPECT_EQ(ComputeMoments({}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ComputeMoments(std::vector<double>{1.0, std::nan("")}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

const std::vector<double> kHistory = {3.0, 5.0, 4.0, 6.0, 7.0};  // mean 5, sd sqrt(2)

TEST(DqQConstraint, TwoSidedIntervalIsMeanPlusMinusKSigmaAndSlack) {
  absl::StatusOr<QConstraint> q =
      MakeQConstraint(kHistory, 3.0, BoundKind::kNormal, Side::kTwoSided);
  ASSERT_TRUE(q.ok()) << q.status();
  const double half = 3.0 * std::sqrt(2.0) + 1e-5;
  EXPECT_DOUBLE_EQ(q->lo, 5.0 - half);
  EXPECT_DOUBLE_EQ(q->hi, 5.0 + half);
  EXPECT_NEAR(q->fpr, 0.0026997960632601866, 1e-15);
  EXPECT_FALSE(q->invariant);
  EXPECT_TRUE(q->Accepts(5.0 + 3.0 * std::sqrt(2.0)));  // the slack covers the edge
  EXPECT_FALSE(q->Accepts(5.0 + half + 1e-6));
  EXPECT_FALSE(q->Accepts(5.0 - half - 1e-6));
  EXPECT_FALSE(q->Accepts(std::nan("")));

  q = MakeQConstraint(kHistory, 2.0, BoundKind::kChebyshev, Side::kTwoSided);
  ASSERT_TRUE(q.ok());
  EXPECT_DOUBLE_EQ(q->fpr, 0.25);
}

TEST(DqQConstraint, UpperSideBoundsDistancesOnlyFromAbove) {
  absl::StatusOr<QConstraint> q =
      MakeQConstraint(kHistory, 2.0, BoundKind::kCantelli, Side::kUpper);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_EQ(q->lo, -std::numeric_limits<double>::infinity());
  EXPECT_DOUBLE_EQ(q->hi, 5.0 + 2.0 * std::sqrt(2.0) + 1e-5);
  EXPECT_DOUBLE_EQ(q->fpr, 0.2);
  EXPECT_TRUE(q->Accepts(-1e300));  // a distance far below its history is no drift
  EXPECT_FALSE(q->Accepts(8.0));
}

TEST(DqQConstraint, LowerSideBoundsPValuesOnlyFromBelow) {
  absl::StatusOr<QConstraint> q =
      MakeQConstraint(kHistory, 2.0, BoundKind::kCantelli, Side::kLower);
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_DOUBLE_EQ(q->lo, 5.0 - 2.0 * std::sqrt(2.0) - 1e-5);
  EXPECT_EQ(q->hi, std::numeric_limits<double>::infinity());
  EXPECT_TRUE(q->Accepts(1e300));
  EXPECT_FALSE(q->Accepts(2.0));
}

TEST(DqQConstraint, ConstantHistoryIsAnInvariantWithZeroFpr) {
  for (Side side : {Side::kUpper, Side::kLower}) {
    absl::StatusOr<QConstraint> q =
        MakeQConstraint(std::vector<double>(8, 1.0), 3.0, BoundKind::kCantelli, side);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_TRUE(q->invariant);
    EXPECT_EQ(q->fpr, 0.0);
    EXPECT_EQ(q->sd, 0.0);
    // Both sides are checked whatever side was asked for: an invariant is an equality.
    EXPECT_DOUBLE_EQ(q->lo, 1.0 - 1e-5);
    EXPECT_DOUBLE_EQ(q->hi, 1.0 + 1e-5);
    EXPECT_TRUE(q->Accepts(1.0 + 5e-6));
    EXPECT_FALSE(q->Accepts(1.0 + 2e-5));
    EXPECT_FALSE(q->Accepts(1.0 - 2e-5));
  }
}

// The Normal bound against the history's estimated mean and sd: Student's t with n - 1 degrees
// of freedom (scipy 1.17.1: 2 * t.sf(k * sqrt((n - 1) / (n + 1)), n - 1)), and what a simulation
// of normal histories and next values measures.
TEST(DqQConstraint, PredictiveNormalBoundIsTheStudentTTail) {
  struct Case {
    int n;
    double k, expected;
  };
  for (const Case& c : {Case{29, 3.0, 0.007213298183566647}, Case{10, 2.0, 0.10388813106210176},
                        Case{24, 4.5, 0.0002559900036545517}}) {
    std::vector<double> history;
    for (int i = 0; i < c.n; ++i) history.push_back(std::sin(i * 1.7) + 0.1 * (i % 3));
    absl::StatusOr<QConstraint> q =
        MakeQConstraint(history, c.k, BoundKind::kNormal, Side::kTwoSided, /*predictive=*/true);
    ASSERT_TRUE(q.ok()) << q.status();
    EXPECT_NEAR(q->fpr, c.expected, 1e-12 * c.expected) << c.n << " " << c.k;
    absl::StatusOr<QConstraint> plugin =
        MakeQConstraint(history, c.k, BoundKind::kNormal, Side::kTwoSided);
    EXPECT_LT(plugin->fpr, q->fpr);
    EXPECT_EQ(plugin->lo, q->lo);  // the same interval; only its stated FPR differs
    EXPECT_EQ(plugin->hi, q->hi);
  }
  // Simulated: 10 normal values, then an 11th; how often is it outside mean +- 2 sd?
  uint64_t state = 12345;
  auto uniform = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((state >> 11) + 0.5) / 9007199254740992.0;
  };
  auto gauss = [&] {
    return std::sqrt(-2.0 * std::log(uniform())) * std::cos(2.0 * M_PI * uniform());
  };
  const int trials = 200000;
  int outside = 0;
  double stated = 0.0;
  for (int t = 0; t < trials; ++t) {
    std::vector<double> h(10);
    for (double& v : h) v = gauss();
    const QConstraint q = *MakeQConstraint(h, 2.0, BoundKind::kNormal, Side::kTwoSided, true);
    stated = q.fpr;
    outside += !q.Accepts(gauss());
  }
  const double measured = static_cast<double>(outside) / trials;
  // 0.1039 expected; the binomial sd over 200,000 trials is 0.0007.
  EXPECT_NEAR(measured, stated, 0.004);
  EXPECT_GT(measured, *FprBound(BoundKind::kNormal, 2.0) + 0.03);  // the plug-in says 0.0455
}

TEST(DqQConstraint, RejectsPairingsTheBoundDoesNotCover) {
  EXPECT_EQ(MakeQConstraint(kHistory, 2.0, BoundKind::kCantelli, Side::kTwoSided).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeQConstraint(kHistory, 2.0, BoundKind::kNormal, Side::kUpper).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeQConstraint(kHistory, 2.0, BoundKind::kChebyshev, Side::kLower).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeQConstraint({}, 2.0, BoundKind::kNormal, Side::kTwoSided).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeQConstraint(kHistory, -1.0, BoundKind::kNormal, Side::kTwoSided).status().code(),
            absl::StatusCode::kInvalidArgument);
}


// ---- Shapiro-Wilk. Expected values: scipy 1.17.1, scipy.stats.shapiro on the same vectors
// (scipy's AS R94 runs in single precision, hence the tolerances).

TEST(DqShapiroWilk, AgreesWithScipyFromThreeToTwentyFourValues) {
  struct Case {
    const char* name;
    std::vector<double> x;
    double w, p;
  };
  const std::vector<Case> cases = {
      {"three", {1.0, 2.0, 4.0}, 0.9642857142857142, 0.6368868450289689},
      {"five", {2.1, 3.4, 1.9, 5.6, 4.4}, 0.9320849391953863, 0.6106559022604845},
      {"eight", {10.2, 9.8, 10.5, 11.1, 9.3, 10.0, 10.7, 9.9}, 0.9874514432473237,
       0.990126834422618},
      {"eleven, skewed", {1, 1, 1, 2, 2, 3, 4, 6, 9, 15, 30}, 0.7019861475182378,
       0.0004960940722380928},
      {"twelve", {5.1, 4.9, 5.3, 5.0, 5.2, 4.8, 5.5, 4.7, 5.05, 5.15, 4.95, 5.4},
       0.988505214757368, 0.9993474966404975},
      // Rows per month of the weather table's first 24 months: 28/29-day Februaries.
      {"monthly row counts",
       {62, 58, 62, 60, 62, 60, 62, 62, 60, 62, 60, 62, 62, 56, 62, 60, 62, 60, 62, 62, 60, 62, 60,
        62},
       0.6992429827229477, 9.842729459948473e-06},
  };
  for (const Case& c : cases) {
    absl::StatusOr<ShapiroWilk> got = ShapiroWilkTest(c.x);
    ASSERT_TRUE(got.ok()) << c.name << ": " << got.status();
    EXPECT_NEAR(got->w, c.w, 2e-6) << c.name;
    EXPECT_NEAR(got->p_value, c.p, 1e-4 * c.p + 1e-9) << c.name;
  }
}

TEST(DqShapiroWilk, RefusesWhatItCannotTest) {
  EXPECT_FALSE(ShapiroWilkTest(std::vector<double>{1.0, 2.0}).ok());
  EXPECT_FALSE(ShapiroWilkTest(std::vector<double>{3.0, 3.0, 3.0, 3.0}).ok());
  EXPECT_FALSE(ShapiroWilkTest(std::vector<double>{1.0, std::nan(""), 2.0}).ok());
}

}  // namespace
}  // namespace vlc::dq
