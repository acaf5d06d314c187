#include "kvcache/attention.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace vlc::kvcache {

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, int64_t window, const ObservationSpec* spec,
                           LayerObservation* obs, int64_t max_chunk_rows) {
  const int64_t heads = q.size(0), tq = q.size(1), d = q.size(2);
  const int64_t kv_heads = k.size(0), tk = k.size(1);
  const int64_t group = heads / kv_heads;
  const int64_t offset = tk - tq;  // cache index of query 0
  const bool observe = spec && spec->enabled && obs;
  const int64_t obs_begin = observe ? std::clamp<int64_t>(spec->query_begin, 0, tq) : tq;
  at::Tensor col_sums, sparse;  // [kv_heads, group, tk], [kv_heads, group]
  int64_t causal = 0;
  if (observe) {
    col_sums = at::zeros({kv_heads, group, tk}, q.options().dtype(at::kFloat));
    sparse = at::zeros({kv_heads, group}, q.options().dtype(at::kLong));
  }
  // Rows of scores per chunk, sized to keep one chunk's score matrix near 32 MB.
  const int64_t budget = (int64_t{32} << 20) / 4;
  int64_t chunk =
      std::max<int64_t>(1, std::min<int64_t>(tq, budget / std::max<int64_t>(1, heads * tk)));
  if (max_chunk_rows > 0) chunk = std::min(chunk, max_chunk_rows);
  auto q4 = q.reshape({kv_heads, group, tq, d});
  auto out = at::empty({kv_heads, group, tq, d}, q.options());
  const float neg_inf = -std::numeric_limits<float>::infinity();
  const bool low_precision = q.scalar_type() != at::kFloat;
  for (int64_t i0 = 0; i0 < tq; i0 += chunk) {
    const int64_t i1 = std::min(tq, i0 + chunk), c = i1 - i0;
    const int64_t end = offset + i1;  // keys [start, end) can be seen by some query of the chunk
    const int64_t start = window > 0 ? std::max<int64_t>(0, offset + i0 - window + 1) : 0;
    auto qc = q4.slice(2, i0, i1).reshape({kv_heads, group * c, d});
    auto kc = k.slice(1, start, end);
    auto vc = v.slice(1, start, end);
    auto s = at::bmm(qc, kc.transpose(1, 2)).mul_(scale);  // [kv_heads, group*c, n]
    const int64_t n = end - start;
    const bool needs_mask = c > 1 || (window > 0 && n > window);
    if (needs_mask) {
      const auto index = at::TensorOptions().dtype(at::kLong).device(q.device());
      auto qi = at::arange(offset + i0, offset + i1, index).unsqueeze(1);  // [c, 1]
      auto kj = at::arange(start, end, index).unsqueeze(0);               // [1, n]
      auto hidden = kj > qi;
      if (window > 0) hidden = hidden.logical_or(kj <= qi - window);
      s.view({kv_heads, group, c, n}).masked_fill_(hidden.view({1, 1, c, n}), neg_inf);
    }
    // Half-precision scores are normalised in float32 (as transformers does), then weigh V in
    // V's dtype; float32 takes the plain path.
    auto p = low_precision ? at::softmax(s, -1, at::kFloat) : at::softmax(s, -1);
    auto pv = low_precision ? p.to(vc.scalar_type()) : p;
    out.slice(2, i0, i1).copy_(at::bmm(pv, vc).view({kv_heads, group, c, d}));
    if (observe && i1 > obs_begin) {
      // The chunk's observed rows, from the scores already computed: no second pass over K.
      const int64_t r0 = std::max(i0, obs_begin) - i0;
      auto p_obs = p.view({kv_heads, group, c, n}).slice(2, r0, c);
      col_sums.slice(2, start, end).add_(p_obs.sum(2));
      auto s_obs = s.view({kv_heads, group, c, n}).slice(2, r0, c);
      auto visible = s_obs > neg_inf;
      causal += visible[0][0].sum().item<int64_t>();
      if (spec->sparsity) {
        // A < p * rowmax  <=>  logit < rowmax_logit + ln p (softmax is monotone, same row).
        auto thr = std::get<0>(s_obs.max(-1, /*keepdim=*/true)) + std::log(spec->threshold);
        sparse.add_(((s_obs < thr) & visible).sum({2, 3}));
      }
    }
  }
  if (observe) {
    obs->col_sums = col_sums.view({heads, tk});
    obs->sparse_counts = spec->sparsity ? sparse.view({heads}) : at::Tensor();
    obs->causal_entries = causal;
  }
  return out.view({heads, tq, d});
}

void AddObservation(const LayerObservation& part, int64_t m, LayerObservation* total) {
  if (!part.col_sums.defined()) return;
  if (!total->col_sums.defined()) {
    total->col_sums = at::zeros({part.col_sums.size(0), m}, part.col_sums.options());
    if (part.sparse_counts.defined()) total->sparse_counts = at::zeros_like(part.sparse_counts);
    total->causal_entries = 0;
  }
  total->col_sums.slice(1, 0, part.col_sums.size(1)).add_(part.col_sums);
  if (part.sparse_counts.defined()) total->sparse_counts.add_(part.sparse_counts);
  total->causal_entries += part.causal_entries;
}

}  // namespace vlc::kvcache
