// The data that flows from prefill to compression: what each layer's attention observed, and the
// keep plan a policy makes of it. Plain values; nothing here touches cache memory.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace vlc::kvcache {

// Which prefill rows a layer's attention must observe. Rows [query_begin, m) of the prompt's
// attention matrix; when `sparsity`, also count the entries below `threshold` times their row max.
struct ObservationSpec {
  bool enabled = false;
  int64_t query_begin = 0;
  bool sparsity = false;
  double threshold = 0.01;
};

// One layer's observation, computed without materialising the m x m matrix.
struct LayerObservation {
  at::Tensor col_sums;       // [heads, m] float32: sum over observed rows q of A[q, j]
  at::Tensor sparse_counts;  // [heads] int64: observed causal entries with A < threshold * rowmax
  int64_t causal_entries = 0;  // causal entries in the observed rows (the same for every head)
};

// What one layer keeps: `keep` tokens for every KV head, at `positions` [kv_heads, keep] (int64,
// ascending per head). Undefined positions mean the layer keeps everything it holds.
struct LayerPlan {
  int64_t keep = 0;
  at::Tensor positions;
};

struct KeepPlan {
  std::vector<LayerPlan> layers;
};

}  // namespace vlc::kvcache
