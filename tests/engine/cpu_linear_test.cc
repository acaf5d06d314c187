#include "engine/cpu_linear.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace vlc::engine
