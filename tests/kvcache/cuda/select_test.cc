// The device keep-plan selection (kvcache/cuda/select.h) against the CPU policy functions
// (kvcache/policy.h): TopKWithRecent's positions exactly, ties included; GroupMean and AvgPool1d
// to float rounding.
#include "kvcache/cuda/select.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "kvcache/policy.h"
#include "tests/kvcache/cuda/cuda_test_util.h"

namespace vlc::kvcache::cuda {
namespace {

using testing::DeviceBuffer;

// scores [kv_heads, m] float on the CPU; `stride` > m places the rows in a wider buffer.
void DeviceTopK(const at::Tensor& scores, int64_t keep, int64_t recent, at::Tensor* out,
                int64_t stride = 0) {
  const int64_t kv_heads = scores.size(0), m = scores.size(1);
  at::Tensor host = scores;
  if (stride > m) {
    host = at::full({kv_heads, stride}, 12345.f);  // padding that must never be read
    host.slice(1, 0, m).copy_(scores);
  }
  auto d_scores = DeviceBuffer::From(host);
  DeviceBuffer d_pos(static_cast<size_t>(kv_heads * keep) * sizeof(int64_t));
  ASSERT_NE(d_scores.get(), nullptr);
  if (keep > 0) {
    ASSERT_NE(d_pos.get(), nullptr);
    VLC_CUDA_OK(cudaMemset(d_pos.get(), 0xff, d_pos.bytes()));  // -1: slots never written
  }
  const size_t ws_bytes = TopKWithRecentWorkspaceBytes(kv_heads, m, keep);
  DeviceBuffer ws(ws_bytes);
  const Error err = TopKWithRecent(d_scores.as<float>(), kv_heads, m, stride, keep, recent,
                                   d_pos.as<int64_t>(), ws.get(), ws_bytes, nullptr);
  ASSERT_EQ(err, 0) << ErrorString(err);
  VLC_CUDA_OK(cudaDeviceSynchronize());
  *out = keep > 0 ? d_pos.ToCpu({kv_heads, keep}, at::kLong) : at::empty({kv_heads, 0}, at::kLong);
}

void ExpectSamePositions(const at::Tensor& got, const at::Tensor& want) {
  ASSERT_EQ(got.sizes(), want.sizes());
  if (at::equal(got, want)) return;
  auto diff = (got != want).nonzero();
  const int64_t h = diff[0][0].item<int64_t>(), i = diff[0][1].item<int64_t>();
  ADD_FAILURE() << diff.size(0) << " positions differ; first at head " << h << " slot " << i
                << ": device " << got[h][i].item<int64_t>() << ", cpu "
                << want[h][i].item<int64_t>();
}

void CheckTopK(const at::Tensor& scores, int64_t keep, int64_t recent, int64_t stride = 0) {
  SCOPED_TRACE("kv_heads " + std::to_string(scores.size(0)) + " m " +
               std::to_string(scores.size(1)) + " keep " + std::to_string(keep) + " recent " +
               std::to_string(recent) + " stride " + std::to_string(stride));
  at::Tensor got;
  ASSERT_NO_FATAL_FAILURE(DeviceTopK(scores, keep, recent, &got, stride));
  ExpectSamePositions(got, kvcache::TopKWithRecent(scores, keep, recent));
}

// keep and recent values worth trying for a prompt of m: k = 1, k = m, w = 0, w = k, and between.
std::vector<std::pair<int64_t, int64_t>> KeepRecentPairs(int64_t m) {
  std::vector<std::pair<int64_t, int64_t>> out;
  for (int64_t keep : {int64_t{1}, int64_t{2}, m / 3, m / 2 + 1, m - 1, m}) {
    if (keep < 1 || keep > m) continue;
    for (int64_t recent : {int64_t{0}, keep / 10, keep / 2, keep - 1, keep}) {
      if (recent < 0) continue;
      out.emplace_back(keep, recent);
    }
  }
  return out;
}

// ---- Host only.

TEST(TopKWithRecentArguments, BadArgumentsAreRejectedBeforeAnyLaunch) {
  std::vector<float> scores(100);
  std::vector<int64_t> pos(100);
  auto call = [&](int64_t kv, int64_t m, int64_t stride, int64_t keep, int64_t recent) {
    return TopKWithRecent(scores.data(), kv, m, stride, keep, recent, pos.data(), nullptr, 0,
                          nullptr);
  };
  EXPECT_EQ(call(1, 10, 0, 11, 0), cudaErrorInvalidValue) << "keep > m";
  EXPECT_EQ(call(1, 10, 0, 5, 6), cudaErrorInvalidValue) << "recent > keep";
  EXPECT_EQ(call(1, 10, 0, 5, -1), cudaErrorInvalidValue) << "negative recent";
  EXPECT_EQ(call(1, 10, 0, -1, 0), cudaErrorInvalidValue) << "negative keep";
  EXPECT_EQ(call(0, 10, 0, 5, 0), cudaErrorInvalidValue) << "no kv heads";
  EXPECT_EQ(call(1, 0, 0, 0, 0), cudaErrorInvalidValue) << "empty prompt";
  EXPECT_EQ(call(1, 10, 9, 5, 0), cudaErrorInvalidValue) << "stride < m";
  EXPECT_EQ(call(1, int64_t{1} << 31, 0, 5, 0), cudaErrorInvalidValue) << "m too large";
  EXPECT_EQ(TopKWithRecent(nullptr, 1, 10, 0, 5, 0, pos.data(), nullptr, 0, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(TopKWithRecent(scores.data(), 1, 10, 0, 5, 0, nullptr, nullptr, 0, nullptr),
            cudaErrorInvalidValue);
  // Nothing to keep: success without a launch, so even without a device.
  EXPECT_EQ(call(2, 10, 0, 0, 0), cudaSuccess);
  EXPECT_EQ(TopKWithRecentWorkspaceBytes(8, 131072, 13107), 0u);
}

TEST(GroupMeanAndAvgPoolArguments, BadArgumentsAreRejectedBeforeAnyLaunch) {
  std::vector<float> in(100), out(100);
  EXPECT_EQ(GroupMean(in.data(), 6, 4, 10, out.data(), nullptr), cudaErrorInvalidValue)
      << "heads not a multiple of kv_heads";
  EXPECT_EQ(GroupMean(in.data(), 4, 0, 10, out.data(), nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(GroupMean(in.data(), 4, 2, 0, out.data(), nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(GroupMean(nullptr, 4, 2, 10, out.data(), nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(GroupMean(in.data(), 4, 2, 10, nullptr, nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(AvgPool1d(in.data(), 2, 10, 4, out.data(), nullptr), cudaErrorInvalidValue)
      << "even kernel";
  EXPECT_EQ(AvgPool1d(in.data(), 2, 10, 0, out.data(), nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(AvgPool1d(in.data(), 0, 10, 5, out.data(), nullptr), cudaErrorInvalidValue);
  EXPECT_EQ(AvgPool1d(in.data(), 2, 10, 5, in.data(), nullptr), cudaErrorInvalidValue)
      << "in place";
  EXPECT_EQ(AvgPool1d(in.data(), 2, 10, 5, in.data() + 19, nullptr), cudaErrorInvalidValue)
      << "overlapping";
}

// ---- Device.

TEST(TopKWithRecentDevice, MatchesTheCpuOnRandomScores) {
  VLC_REQUIRE_CUDA_DEVICE();
  at::manual_seed(1);
  for (int64_t m : {1, 2, 5, 31, 32, 33, 100, 1000, 4097}) {
    for (int64_t kv_heads : {1, 3}) {
      at::Tensor scores = at::rand({kv_heads, m});
      for (auto [keep, recent] : KeepRecentPairs(m)) {
        CheckTopK(scores, keep, recent);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(TopKWithRecentDevice, TiesGoToTheLowerPosition) {
  VLC_REQUIRE_CUDA_DEVICE();
  at::manual_seed(2);
  const int64_t m = 777;
  std::vector<at::Tensor> cases = {
      at::randint(0, 3, {4, m}).to(at::kFloat),  // three values: ties at every threshold
      at::zeros({2, m}),                         // all equal
      at::full({2, m}, 0.25f),
  };
  // -0 equals +0; NaN ranks with -inf; +inf above everything.
  at::Tensor special = at::randint(0, 6, {3, m}).to(at::kFloat);
  special.masked_fill_(special == 1, -0.0f);
  special.masked_fill_(special == 2, std::numeric_limits<float>::quiet_NaN());
  special.masked_fill_(special == 3, -std::numeric_limits<float>::infinity());
  special.masked_fill_(special == 4, std::numeric_limits<float>::infinity());
  cases.push_back(special);
  // Values one ulp apart: the radix select must reach the last digit.
  at::Tensor ulps = at::full({2, m}, 1.0f);
  auto acc = ulps.accessor<float, 2>();
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t j = 0; j < m; ++j) {
      acc[h][j] = std::nextafter(1.0f, 2.0f);
      for (int64_t s = 0; s < (j * 7 + h) % 4; ++s) acc[h][j] = std::nextafter(acc[h][j], 2.0f);
    }
  }
  cases.push_back(ulps);
  for (const at::Tensor& scores : cases) {
    for (auto [keep, recent] : KeepRecentPairs(m)) {
      CheckTopK(scores, keep, recent);
      if (HasFatalFailure()) return;
    }
  }
  // A hand-checked case: scores 5 5 1 5 1 | recent 2; keep 4 takes two of the three 5s (0 and 1).
  at::Tensor tiny = at::tensor({5.f, 5.f, 1.f, 5.f, 1.f, 0.f, 0.f}).reshape({1, 7});
  at::Tensor got;
  ASSERT_NO_FATAL_FAILURE(DeviceTopK(tiny, 4, 2, &got));
  EXPECT_TRUE(at::equal(got, at::tensor(std::vector<int64_t>{0, 1, 5, 6}).reshape({1, 4}))) << got;
}

TEST(TopKWithRecentDevice, LongPromptsOfFortyAndOneHundredTwentyEightThousand) {
  VLC_REQUIRE_CUDA_DEVICE();
  at::manual_seed(3);
  for (int64_t m : {40000, 131072}) {
    // Column sums look like this: heavy-tailed, positive.
    at::Tensor scores = at::randn({8, m}).mul_(2).exp_();
    // Quantised: thousands of ties at the threshold.
    at::Tensor ties = at::round(at::randn({8, m}) * 4) / 4;
    for (const at::Tensor& s : {scores, ties}) {
      for (auto [keep, recent] : std::vector<std::pair<int64_t, int64_t>>{
               {1, 0}, {m / 10, m / 100}, {m / 2, 0}, {m, m / 10}, {m - 1, 0}, {500, 500}}) {
        CheckTopK(s, keep, recent);
        if (HasFatalFailure()) return;
      }
    }
  }
}

TEST(TopKWithRecentDevice, RowsMayBeStridedAndEveryKvHeadChoosesItsOwn) {
  VLC_REQUIRE_CUDA_DEVICE();
  at::manual_seed(4);
  at::Tensor scores = at::rand({5, 1001});
  CheckTopK(scores, 100, 10, /*stride=*/1013);
  at::Tensor got;
  ASSERT_NO_FATAL_FAILURE(DeviceTopK(scores, 100, 10, &got));
  EXPECT_FALSE(at::equal(got[0], got[1])) << "different scores, different positions";
}

TEST(GroupMeanDevice, MatchesTheCpu) {
  VLC_REQUIRE_CUDA_DEVICE();
  at::manual_seed(5);
  for (int64_t group : {1, 2, 4, 7}) {
    for (int64_t m : {1, 33, 40000}) {
      const int64_t kv_heads = 3, heads = kv_heads * group;
      at::Tensor scores = at::rand({heads, m}) * 10;
      auto d_in = DeviceBuffer::From(scores);
      DeviceBuffer d_out(static_cast<size_t>(kv_heads * m) * sizeof(float));
      const Error err = GroupMean(d_in.as<float>(), heads, kv_heads, m, d_out.as<float>(), nullptr);
      ASSERT_EQ(err, 0) << ErrorString(err);
      at::Tensor got = d_out.ToCpu({kv_heads, m}, at::kFloat);
      at::Tensor want = kvcache::GroupMean(scores, static_cast<int>(kv_heads));
      EXPECT_TRUE(at::allclose(got, want, 1e-6, 1e-7))
          << "group " << group << " m " << m << " max diff "
          << (got - want).abs().max().item<float>();
    }
  }
}

TEST(AvgPool1dDevice, MatchesTheCpuAtTheEdgesAndInside) {
  VLC_REQUIRE_CUDA_DEVICE();
  at::manual_seed(6);
  for (int kernel : {1, 3, 5, 7}) {
    for (int64_t m : {1, 2, 3, 4, 10, 40000}) {
      const int64_t rows = 3;
      at::Tensor scores = at::rand({rows, m});
      auto d_in = DeviceBuffer::From(scores);
      DeviceBuffer d_out(static_cast<size_t>(rows * m) * sizeof(float));
      const Error err = AvgPool1d(d_in.as<float>(), rows, m, kernel, d_out.as<float>(), nullptr);
      ASSERT_EQ(err, 0) << ErrorString(err);
      at::Tensor got = d_out.ToCpu({rows, m}, at::kFloat);
      at::Tensor want = kvcache::AvgPool1d(scores, kernel);
      EXPECT_TRUE(at::allclose(got, want, 1e-6, 1e-7))
          << "kernel " << kernel << " m " << m << " max diff "
          << (got - want).abs().max().item<float>();
    }
  }
}

}  // namespace
}  // namespace vlc::kvcache::cuda
