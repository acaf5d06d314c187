// The prefill attention and its observation against a naive full-matrix reference.
#include "kvcache/attention.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace vlc::kvcache {
namespace {

struct Naive {
  at::Tensor out;        // [heads, m, d]
  at::Tensor col_sums;   // [heads, m]
  at::Tensor sparse;     // [heads]
  int64_t causal = 0;
};

// Materialises the whole m x m matrix per head, in double, entry by entry.
Naive Reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale,
                int64_t window, int64_t q_begin, double p) {
  const int64_t heads = q.size(0), m = q.size(1), d = q.size(2), group = heads / k.size(0);
  Naive r;
  r.out = at::zeros({heads, m, d}, at::kDouble);
  r.col_sums = at::zeros({heads, m}, at::kDouble);
  r.sparse = at::zeros({heads}, at::kLong);
  auto qd = q.to(at::kDouble), kd = k.to(at::kDouble), vd = v.to(at::kDouble);
  for (int64_t h = 0; h < heads; ++h) {
    auto s = at::matmul(qd[h], kd[h / group].t()) * scale;  // [m, m]
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < m; ++j) {
        const bool visible = j <= i && (window == 0 || j > i - window);
        if (!visible) s[i][j] = -INFINITY;
      }
    }
    auto a = at::softmax(s, -1);
    r.out[h] = at::matmul(a, vd[h / group]);
    for (int64_t i = q_begin; i < m; ++i) {
      const double rowmax = a[i].max().item<double>();
      for (int64_t j = 0; j < m; ++j) {
        const bool visible = j <= i && (window == 0 || j > i - window);
        if (!visible) continue;
        const double aij = a[i][j].item<double>();
        r.col_sums[h][j] += aij;
        if (aij < p * rowmax) r.sparse[h] += 1;
        if (h == 0) r.causal += 1;
      }
    }
  }
  return r;
}

TEST(CausalAttention, ObservationMatchesTheFullMatrixReference) {
  at::manual_seed(11);
  for (int64_t kv_heads : {1, 2}) {
    for (int64_t window : {0, 7}) {
      for (int64_t chunk : {0, 3}) {  // one chunk, and chunks that split the observed rows
        const int64_t heads = 4, m = 23, d = 8, q_begin = 15;
        // Peaked scores so that some entries fall below p * rowmax.
        auto q = at::randn({heads, m, d}) * 2, k = at::randn({kv_heads, m, d}) * 2;
        auto v = at::randn({kv_heads, m, d});
        ObservationSpec spec{true, q_begin, true, 0.05};
        LayerObservation obs;
        auto out = CausalAttention(q, k, v, 1.0 / std::sqrt(d), window, &spec, &obs, chunk);
        auto ref = Reference(q, k, v, 1.0 / std::sqrt(d), window, q_begin, 0.05);
        SCOPED_TRACE("kv_heads " + std::to_string(kv_heads) + " window " +
                     std::to_string(window) + " chunk " + std::to_string(chunk));
        EXPECT_LT((out.to(at::kDouble) - ref.out).abs().max().item<double>(), 1e-5);
        ASSERT_EQ(obs.col_sums.sizes(), (std::vector<int64_t>{heads, m}));
        EXPECT_LT((obs.col_sums.to(at::kDouble) - ref.col_sums).abs().max().item<double>(), 1e-5);
        EXPECT_TRUE(at::equal(obs.sparse_counts, ref.sparse)) << obs.sparse_counts << ref.sparse;
        EXPECT_EQ(obs.causal_entries, ref.causal);
        EXPECT_GT(ref.sparse.sum().item<int64_t>(), 0);  // the test exercises the count
      }
    }
  }
}

TEST(CausalAttention, ObservedColumnSumsAddUpToTheObservedRows) {
  // Each observed row's probabilities sum to 1, so the column sums total the row count.
  at::manual_seed(5);
  auto q = at::randn({2, 40, 16}), k = at::randn({2, 40, 16}), v = at::randn({2, 40, 16});
  ObservationSpec spec{true, 8, false, 0.01};
  LayerObservation obs;
  CausalAttention(q, k, v, 0.25, 0, &spec, &obs, 5);
  EXPECT_NEAR(obs.col_sums[0].sum().item<double>(), 32.0, 1e-4);
  EXPECT_NEAR(obs.col_sums[1].sum().item<double>(), 32.0, 1e-4);
  EXPECT_FALSE(obs.sparse_counts.defined());
  EXPECT_EQ(obs.causal_entries, (9 + 40) * 32 / 2);  // rows 8..39 see 9..40 keys
}

TEST(CausalAttention, DisabledSpecLeavesTheObservationEmpty) {
  auto q = at::randn({2, 5, 4}), k = at::randn({1, 5, 4}), v = at::randn({1, 5, 4});
  ObservationSpec off;
  LayerObservation obs;
  auto a = CausalAttention(q, k, v, 0.5, 0, &off, &obs);
  auto b = CausalAttention(q, k, v, 0.5, 0);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_FALSE(obs.col_sums.defined());
}

}  // namespace
}  // namespace vlc::kvcache
