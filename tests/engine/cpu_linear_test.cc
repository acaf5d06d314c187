#include "engine/cpu_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace vlc::engine {
namespace {

TEST(DecodeLinear, MatchesLinearForEveryBatchWidthAndOddShapes) {
  at::manual_seed(1);
  for (int64_t in : {8, 64, 200, 13}) {  // 13: not a multiple of 8, takes the library path
    for (int64_t out : {1, 7, 37, 130}) {
      auto w = at::randn({out, in});
      auto bias = at::randn({out});
      for (int64_t rows = 1; rows <= kStreamingLinearMaxRows + 1; ++rows) {
        auto x = at::randn({rows, in});
        auto ref = at::linear(x.to(at::kDouble), w.to(at::kDouble), bias.to(at::kDouble));
        auto got = DecodeLinear(x, w, bias);
        ASSERT_EQ(got.sizes(), ref.sizes());
        EXPECT_LT((got.to(at::kDouble) - ref).abs().max().item<double>(), 1e-4 * std::sqrt(in))
            << "in " << in << " out " << out << " rows " << rows;
      }
    }
  }
}

TEST(DecodeLinear, ASequencesResultDoesNotDependOnItsBatch) {
  at::manual_seed(2);
  auto w = at::randn({301, 256});
  auto x = at::randn({7, 256});
  auto batch = DecodeLinear(x, w);
  for (int64_t r = 0; r < 7; ++r) {
    auto single = DecodeLinear(x.slice(0, r, r + 1), w);
    EXPECT_TRUE(at::equal(single[0], batch[r])) << "row " << r;
  }
}

// Half-precision weights are widened exactly (every bfloat16 and half is a float32), so the
// kernel must equal a float64 product of the same rounded weights up to float32 summation.
TEST(DecodeLinear, HalfPrecisionWeightsAreWidenedExactly) {
  at::manual_seed(3);
  for (at::ScalarType wt : {at::kBFloat16, at::kHalf}) {
    for (at::ScalarType xt : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (int64_t in : {8, 64, 200, 4096}) {
        for (int64_t out : {1, 37, 130}) {
          auto w = at::randn({out, in}).to(wt);
          auto bias = at::randn({out}).to(xt);
          for (int64_t rows : {int64_t{1}, int64_t{3}, int64_t{8}, kStreamingLinearMaxRows}) {
            auto x = at::randn({rows, in}).to(xt);
            ASSERT_TRUE(DecodeLinearStreams(x, w));
            auto got = DecodeLinear(x, w, bias);
            EXPECT_EQ(got.scalar_type(), xt);
            auto ref = at::linear(x.to(at::kDouble), w.to(at::kDouble), bias.to(at::kDouble));
            // float32 sums, then rounding to x's dtype (8 bits of mantissa for bfloat16).
            const double rel = xt == at::kFloat ? 1e-5 : xt == at::kHalf ? 1e-3 : 8e-3;
            const double tol = rel * (ref.abs().max().item<double>() + 1) + 1e-4 * std::sqrt(in);
            EXPECT_LT((got.to(at::kDouble) - ref).abs().max().item<double>(), tol)
                << at::toString(wt) << " x " << at::toString(xt) << " in " << in << " out " << out
                << " rows " << rows;
          }
        }
      }
    }
  }
}

TEST(DecodeLinear, HalfPrecisionResultsDoNotDependOnTheBatch) {
  at::manual_seed(4);
  for (at::ScalarType wt : {at::kBFloat16, at::kHalf}) {
    auto w = at::randn({301, 256}).to(wt);
    auto x = at::randn({7, 256});
    auto batch = DecodeLinear(x, w);
    for (int64_t r = 0; r < 7; ++r) {
      EXPECT_TRUE(at::equal(DecodeLinear(x.slice(0, r, r + 1), w)[0], batch[r]))
          << at::toString(wt) << " row " << r;
    }
  }
}

TEST(QuantizeInt8, EachWeightIsWithinHalfAScaleAndZeroRowsStayZero) {
  at::manual_seed(5);
  auto w = at::randn({33, 96}) * at::rand({33, 1}) * 10;
  w[7].zero_();
  const Int8Weight q = QuantizeInt8(w);
  ASSERT_EQ(q.q.scalar_type(), at::kChar);
  ASSERT_EQ(q.scale.sizes(), (at::IntArrayRef{33}));
  EXPECT_LE(q.q.abs().max().item<int>(), 127);
  // The largest magnitude of every row maps to +-127 exactly.
  EXPECT_TRUE(at::equal(q.q.abs().amax(1).index({at::arange(33) != 7}).to(at::kInt),
                        at::full({32}, 127, at::kInt)));
  EXPECT_EQ(q.scale[7].item<float>(), 0.0f);
  const auto back = DequantizeInt8(q.q, q.scale, at::kFloat);
  const auto err = (back - w).abs();
  const auto bound = q.scale.unsqueeze(1) / 2 * (1 + 1e-6) + 1e-12;
  EXPECT_TRUE((err <= bound).all().item<bool>()) << (err - bound).max().item<double>();
}

TEST(DecodeLinear, Int8WeightsEqualTheDequantizedProduct) {
  at::manual_seed(6);
  for (at::ScalarType xt : {at::kFloat, at::kBFloat16}) {
    for (int64_t in : {16, 200, 4096}) {
      for (int64_t out : {1, 37, 130}) {
        const Int8Weight q = QuantizeInt8(at::randn({out, in}));
        auto bias = at::randn({out});
        const at::Tensor w = DequantizeInt8(q.q, q.scale, at::kDouble);
        for (int64_t rows : {int64_t{1}, int64_t{5}, kStreamingLinearMaxRows,
                             kStreamingLinearMaxRows + 1}) {  // the last: dequantized + at::linear
          auto x = at::randn({rows, in}).to(xt);
          auto got = DecodeLinear(x, q.q, bias, q.scale);
          EXPECT_EQ(got.scalar_type(), xt);
          auto ref = at::linear(x.to(at::kDouble), w, bias.to(at::kDouble));
          const double rel = xt == at::kFloat ? 1e-5 : 8e-3;
          const double tol = rel * (ref.abs().max().item<double>() + 1) + 1e-4 * std::sqrt(in);
          EXPECT_LT((got.to(at::kDouble) - ref).abs().max().item<double>(), tol)
              << at::toString(xt) << " in " << in << " out " << out << " rows " << rows;
        }
      }
    }
  }
  // Batch independence, as for the other dtypes.
  const Int8Weight q = QuantizeInt8(at::randn({301, 256}));
  auto x = at::randn({7, 256});
  auto batch = DecodeLinear(x, q.q, {}, q.scale);
  for (int64_t r = 0; r < 7; ++r) {
    EXPECT_TRUE(at::equal(DecodeLinear(x.slice(0, r, r + 1), q.q, {}, q.scale)[0], batch[r]));
  }
}

}  // namespace
}  // namespace vlc::engine
