// Attention over one sequence's keys and values, shared by prefill (all prompt rows) and by the
// caches' decode attention, so both compute exactly the same thing. Prefill can also produce a
// policy's observation from the same scores, without materialising the m x m matrix. Plain ATen
// ops, so it runs on any device: the CPU's prefill, and the GPU's where no fused attention
// applies (kvcache/cuda_ops.h has the GPU's observation). Float16/bfloat16 scores are normalised
// in float32.
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "kvcache/plan.h"

namespace vlc::kvcache {

// softmax(q k^T * scale) v with GQA grouping: q [heads, tq, d], k/v [kv_heads, tk, d]. Query i
// sits at cache index `tk - tq + i` and sees keys up to its own index (causal) and, when
// `window` > 0, only the last `window` of them. Queries are processed in chunks, so memory stays
// O(chunk * tk) per head, never O(tk^2).
//
// With `spec` enabled and `obs` given (a prompt's prefill, or one chunk of it: tq <= tk), also
// fills `obs` for the query rows [spec.query_begin, tq): per-head column sums over all tk keys of
// the attention probabilities and, with
// spec.sparsity, the count of causal entries with A[q, j] < threshold * max_j A[q, j], i.e.
// logit < rowmax_logit + ln(threshold). `max_chunk_rows` > 0 caps the rows per chunk (tests use it
// to cross chunk boundaries on small inputs).
at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, int64_t window, const ObservationSpec* spec = nullptr,
                           LayerObservation* obs = nullptr, int64_t max_chunk_rows = 0);

// Adds one prefill chunk's observation `part` (column sums over its first keys, undefined when the
// chunk observed no row) to `total`, the observation of a whole prompt of `m` tokens: column sums
// and sparse counts add, and so do the causal entries. An empty `total` starts at zero.
void AddObservation(const LayerObservation& part, int64_t m, LayerObservation* total);

}  // namespace vlc::kvcache
