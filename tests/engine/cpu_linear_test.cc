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

// The vector widening equals LibTorch's conversions bit for bit, tails and int8 scales included.
TEST(WidenToFloat, EqualsTheLibraryConversion) {
  at::manual_seed(21);
  for (int64_t in : {64, 37, 8, 3}) {
    const at::Tensor w = at::randn({45, in}) * 4;
    for (at::ScalarType dt : {at::kBFloat16, at::kHalf}) {
      const at::Tensor stored = w.to(dt);
      const at::Tensor got = WidenToFloat(stored);
      ASSERT_EQ(got.scalar_type(), at::kFloat);
      EXPECT_TRUE(at::equal(got, stored.to(at::kFloat))) << at::toString(dt) << " in " << in;
    }
    const Int8Weight q = QuantizeInt8(w);
    EXPECT_TRUE(at::equal(WidenToFloat(q.q, q.scale), q.q.to(at::kFloat) * q.scale.unsqueeze(1)))
        << "int8, in " << in;
  }
  // A transposed view takes the library's way and still gives the same numbers.
  const at::Tensor t = at::randn({16, 24}).to(at::kBFloat16).t();
  EXPECT_TRUE(at::equal(WidenToFloat(t), t.to(at::kFloat)));
  EXPECT_THROW(WidenToFloat(QuantizeInt8(at::randn({4, 8})).q), c10::Error);
}

// Many rows (a prefill) of bfloat16 activations: either GEMM gives the product of the stored
// values summed in float32, rounded once to bfloat16; the first such product decides which.
TEST(DecodeLinear, Bfloat16PrefillEitherGemmGivesTheFloat32ProductRounded) {
  at::manual_seed(22);
  const int64_t rows = kStreamingLinearMaxRows + 20, in = 96, out = 40;
  const at::Tensor x = at::randn({rows, in}).to(at::kBFloat16);
  const at::Tensor w = (at::randn({out, in}) * 0.1).to(at::kBFloat16);
  const at::Tensor b = at::randn({out}).to(at::kBFloat16);
  const Int8Weight q = QuantizeInt8(w.to(at::kFloat));
  const at::Tensor xd = x.to(at::kDouble);
  const at::Tensor want = at::linear(xd, w.to(at::kDouble), b.to(at::kDouble));
  const at::Tensor want_q =
      at::linear(xd, DequantizeInt8(q.q, q.scale, at::kDouble), b.to(at::kDouble));
  const at::Tensor abs_product = at::linear(xd.abs(), w.to(at::kDouble).abs());
  for (Bf16PrefillGemm choice : {Bf16PrefillGemm::kFloat32, Bf16PrefillGemm::kBFloat16}) {
    SetBFloat16PrefillGemm(choice);
    const at::Tensor got = DecodeLinear(x, w, b);
    ASSERT_EQ(got.scalar_type(), at::kBFloat16);
    // bfloat16 keeps 8 significant bits; float32 sums add at most in * 2^-24 of sum |x w|.
    const at::Tensor err = (got.to(at::kDouble) - want).abs();
    EXPECT_TRUE((err <= want.abs() * (1.0 / 256) + abs_product * 1e-5).all().item<bool>())
        << static_cast<int>(choice) << " " << err.max().item<double>();
    // Int8 weights under bfloat16: oneDNN's side multiplies the dequantized weights rounded to
    // bfloat16, one more rounding of each weight (within 2^-8 of it).
    const at::Tensor got_q = DecodeLinear(x, q.q, b, q.scale).to(at::kDouble);
    const at::Tensor bound_q = want_q.abs() * (1.0 / 256) + abs_product * (1.0 / 128);
    EXPECT_TRUE(((got_q - want_q).abs() <= bound_q).all().item<bool>()) << static_cast<int>(choice);
  }
  SetBFloat16PrefillGemm(Bf16PrefillGemm::kUndecided);
  const at::Tensor first = DecodeLinear(x, w, b);
  EXPECT_NE(BFloat16PrefillGemm(), Bf16PrefillGemm::kUndecided);
  EXPECT_TRUE(at::equal(DecodeLinear(x, w, b), first));  // decided once: the same numbers after
}

// Float16 and int8 weights under float32 activations, many rows: the widened matrix through the
// same float32 GEMM as before, so the numbers are those of the library's own conversion (up to
// the GEMM's order of sums where the matrix is taken in blocks of rows).
TEST(DecodeLinear, Float32PrefillOfHalfAndInt8WeightsUsesTheExactWidening) {
  at::manual_seed(23);
  const int64_t rows = kStreamingLinearMaxRows + 5, in = 64, out = 30;
  const at::Tensor x = at::randn({rows, in});
  const at::Tensor w = at::randn({out, in}).to(at::kHalf);
  const at::Tensor b = at::randn({out});
  EXPECT_TRUE(at::equal(DecodeLinear(x, w, b), at::linear(x, w.to(at::kFloat), b)));
  const Int8Weight q = QuantizeInt8(at::randn({out, in}));
  EXPECT_TRUE(at::equal(DecodeLinear(x, q.q, b, q.scale),
                        at::linear(x, DequantizeInt8(q.q, q.scale, at::kFloat), b)));
  // Wide inputs: the matrix is widened and multiplied 512 rows at a time (16 MiB of float32).
  const int64_t wide_in = 8192, wide_out = 1100;
  const at::Tensor xw = at::randn({rows, wide_in});
  const at::Tensor ww = at::randn({wide_out, wide_in}).to(at::kHalf);
  const at::Tensor bw = at::randn({wide_out});
  EXPECT_TRUE(
      at::allclose(DecodeLinear(xw, ww, bw), at::linear(xw, ww.to(at::kFloat), bw), 1e-5, 1e-4));
  const Int8Weight qw = QuantizeInt8(at::randn({wide_out, wide_in}));
  EXPECT_TRUE(at::allclose(DecodeLinear(xw, qw.q, bw, qw.scale),
                           at::linear(xw, DequantizeInt8(qw.q, qw.scale, at::kFloat), bw), 1e-5,
                           1e-4));
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
