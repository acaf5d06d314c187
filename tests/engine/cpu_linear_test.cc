#include "engine/cpu_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

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
    for (at::ScalarType xt : {at::kFloat, at::kBFloat16}) {  // bfloat16 x: the dot path
      auto w = at::randn({301, 256}).to(wt);
      auto x = at::randn({7, 256}).to(xt);
      auto batch = DecodeLinear(x, w);
      for (int64_t r = 0; r < 7; ++r) {
        EXPECT_TRUE(at::equal(DecodeLinear(x.slice(0, r, r + 1), w)[0], batch[r]))
            << at::toString(wt) << " x " << at::toString(xt) << " row " << r;
      }
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

// The error DecodeLinear may make on int8 weights beyond float32 summation: none where it widens
// the weights; on the VNNI path x is quantized per block of 64 inputs, each element within half
// its block's scale (max |x| / 127), so |y - x w^T| <= sum_k |w_k| * scale_block(k) / 2.
at::Tensor XQuantizationBound(const at::Tensor& x, const at::Tensor& w_abs, LinearPath path) {
  if (path != LinearPath::kInt8Dot) return at::zeros({x.size(0), w_abs.size(0)}, at::kDouble);
  const int64_t in = x.size(1);
  const at::Tensor xs = x.to(at::kDouble).reshape({x.size(0), in / 64, 64});
  const at::Tensor half_scale = xs.abs().amax(2, /*keepdim=*/true) / 127.0 / 2;
  const at::Tensor per_input = half_scale.expand({x.size(0), in / 64, 64}).reshape({x.size(0), in});
  return at::matmul(per_input, w_abs.t());
}

// The one-pass widening equals the tensor expression it replaces, bit for bit.
TEST(QuantizeInt8, DequantizingEqualsScalingInFloat32ThenRounding) {
  at::manual_seed(8);
  const Int8Weight q = QuantizeInt8(at::randn({77, 136}) * 3);
  for (at::ScalarType dt : {at::kFloat, at::kBFloat16, at::kHalf, at::kDouble}) {
    const at::Tensor want = (q.q.to(at::kFloat) * q.scale.unsqueeze(1)).to(dt);
    const at::Tensor got = DequantizeInt8(q.q, q.scale, dt);
    EXPECT_EQ(got.scalar_type(), dt);
    EXPECT_TRUE(at::equal(got, want)) << at::toString(dt);
  }
}

TEST(DecodeLinear, Int8WeightsEqualTheDequantizedProductUpToXsQuantization) {
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
          const LinearPath path = CpuLinearPath(x, q.q);
          auto got = DecodeLinear(x, q.q, bias, q.scale);
          EXPECT_EQ(got.scalar_type(), xt);
          auto ref = at::linear(x.to(at::kDouble), w, bias.to(at::kDouble));
          const at::Tensor bound = XQuantizationBound(x, w.abs(), path);
          const double rel = xt == at::kFloat ? 1e-5 : 8e-3;
          const double tol = rel * (ref.abs().max().item<double>() + 1) + 1e-4 * std::sqrt(in);
          const at::Tensor excess = (got.to(at::kDouble) - ref).abs() - bound - tol;
          EXPECT_LE(excess.max().item<double>(), 0)
              << at::toString(xt) << " in " << in << " out " << out << " rows " << rows
              << " path " << static_cast<int>(path);
          if (path == LinearPath::kInt8Dot && in >= 200) {
            // The bound above is the worst case; the errors of independent roundings mostly
            // cancel, so the typical error is far smaller: under 2% of the product in RMS.
            const double err = (got.to(at::kDouble) - ref).pow(2).mean().sqrt().item<double>();
            EXPECT_LT(err, 0.02 * ref.pow(2).mean().sqrt().item<double>())
                << at::toString(xt) << " in " << in << " out " << out << " rows " << rows;
          }
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

// Blocks of x that are all zero, one huge outlier beside tiny values, and values at the rounding
// midpoints: the quantized product stays within the bound, and a zero block adds nothing.
TEST(DecodeLinear, Int8XBlocksOfZerosAndOutliersStayWithinTheBound) {
  at::manual_seed(7);
  const int64_t in = 256, out = 40;
  const Int8Weight q = QuantizeInt8(at::randn({out, in}));
  const at::Tensor w = DequantizeInt8(q.q, q.scale, at::kDouble);
  auto x = at::randn({3, in});
  x[0].slice(0, 0, 64).zero_();
  x[1][70] = 1e4;
  x[2].slice(0, 128, 192).copy_(at::arange(64) * (1.0 / 127) + 0.5 / 127);
  const LinearPath path = CpuLinearPath(x, q.q);
  auto got = DecodeLinear(x, q.q, {}, q.scale).to(at::kDouble);
  auto ref = at::linear(x.to(at::kDouble), w);
  const at::Tensor bound = XQuantizationBound(x, w.abs(), path);
  const double tol = 1e-5 * (ref.abs().max().item<double>() + 1);
  EXPECT_LE(((got - ref).abs() - bound - tol).max().item<double>(), 0);
  // The first row's zero block contributes exactly nothing: the same as its other blocks alone.
  auto x0 = x.slice(0, 0, 1).clone();
  auto alone = DecodeLinear(x0.slice(1, 64, in).contiguous(), q.q.slice(1, 64, in).contiguous(),
                            {}, q.scale);
  if (path == LinearPath::kInt8Dot) {
    EXPECT_TRUE(at::allclose(DecodeLinear(x0, q.q, {}, q.scale), alone, 1e-5, 1e-5));
  }
}

// The dot-product paths are taken exactly where the CPU has the instructions and the shapes fit.
// VLC_CPU_DOT=0 turns them off.
TEST(DecodeLinear, PathFollowsTheCpuAndTheShapes) {
  const char* env = std::getenv("VLC_CPU_DOT");
  const bool allowed = env == nullptr || std::string(env) != "0";
  const bool bf16_dot =
      allowed && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
  const bool int8_dot = allowed && __builtin_cpu_supports("avx512f") &&
                        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vnni");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const auto streaming = avx2 ? LinearPath::kWidening : LinearPath::kLibrary;
  auto w16 = at::randn({8, 128}).to(at::kBFloat16);
  EXPECT_EQ(CpuLinearPath(at::randn({1, 128}).to(at::kBFloat16), w16),
            avx2 && bf16_dot ? LinearPath::kBf16Dot : streaming);
  EXPECT_EQ(CpuLinearPath(at::randn({1, 128}), w16), streaming);  // float32 x: widened
  auto w16_odd = at::randn({8, 136}).to(at::kBFloat16);           // 136 % 32 != 0
  EXPECT_EQ(CpuLinearPath(at::randn({1, 136}).to(at::kBFloat16), w16_odd), streaming);
  auto w8 = QuantizeInt8(at::randn({8, 128})).q;
  EXPECT_EQ(CpuLinearPath(at::randn({1, 128}), w8),
            avx2 && int8_dot ? LinearPath::kInt8Dot : streaming);
  auto w8_odd = QuantizeInt8(at::randn({8, 96})).q;  // 96 % 64 != 0
  EXPECT_EQ(CpuLinearPath(at::randn({1, 96}), w8_odd), streaming);
  EXPECT_EQ(CpuLinearPath(at::randn({kStreamingLinearMaxRows + 1, 128}), w8),
            LinearPath::kLibrary);
}

}  // namespace
}  // namespace vlc::engine
