// A policy's observation of one layer's prefill attention on the device: for the scoring rows
// [query_begin, m) of the prompt, the per-head column sums of the attention probabilities and the
// VL-Cache sparsity counts, exactly what LayerObservation (kvcache/plan.h) holds and what the CPU
// reference (CausalAttention in kvcache/attention.h) computes, without materialising m x m.
//
// Two passes over K, both on the same register-tiled logit tiles (so a logit is bit-identical in
// both): pass 1 gives each scoring row its max logit and softmax denominator (online softmax, the
// keys split across blocks when there are few rows, then combined); pass 2 gives each block of key
// columns the sum over the scoring rows of exp(logit - max) / denominator and counts the entries
// with logit < max + ln(threshold). Cost per head: 2 * tau * m_visible * head_dim FMAs on the
// CUDA cores in float32 (no tensor cores; tau rows padded to 16, 32 or 64 per tile); pass 1 reads
// the visible K once per row tile, pass 2 the scoring rows of Q once per 64-key block (mostly L2
// hits); no atomics on the column sums, so results are deterministic. Always causal, like the CPU
// reference.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/cuda/cuda_common.h"

namespace vlc::kvcache::cuda {

// One layer of one prompt (prefill: query row i sits at position i and sees keys j <= i, and only
// j > i - window when window > 0). Strides are in elements; head_dim is contiguous. A stride of 0
// means the contiguous layout: q [heads, m, head_dim], k [kv_heads, m, head_dim].
struct ObservationArgs {
  int64_t heads = 0;
  int64_t kv_heads = 0;  // query head h reads KV head h / (heads / kv_heads)
  int64_t m = 0;         // prompt length (keys and query rows), at most 2^30
  int64_t head_dim = 0;
  int64_t query_begin = 0;  // scoring rows [query_begin, m); 0 <= query_begin <= m
  int64_t window = 0;       // sliding window, 0 = none
  double scale = 1.0;       // logit = scale * q . k
  bool sparsity = false;    // count sparse entries (VL-Cache)
  double threshold = 0.01;  // p in (0, 1): sparse when A[q, j] < p * rowmax
  DType dtype = DType::kF32;
  int64_t q_head_stride = 0, q_row_stride = 0;
  int64_t k_head_stride = 0, k_row_stride = 0;
};

// Device workspace ObserveLayer needs for `args` (row statistics, 8 bytes per head and scoring
// row, plus the split partials when there are few rows); 0 when there is no scoring row. Depends
// only on the shape, so a caller can size one buffer for its largest layer.
size_t ObservationWorkspaceBytes(const ObservationArgs& args);

// The causal entries of the scoring rows (the same for every head): LayerObservation's
// causal_entries, a function of the shape alone, so it is computed on the host.
int64_t ObservationCausalEntries(int64_t m, int64_t query_begin, int64_t window);

// Fills col_sums [heads, m] (float32; 0 for columns no scoring row sees) and, when
// args.sparsity, sparse_counts [heads] (int64, set to zero first with cudaMemsetAsync on
// `stream`). q and k hold args.dtype; accumulation is float32. `workspace` holds at least
// ObservationWorkspaceBytes(args) bytes (may be null when that is 0). Asynchronous on `stream`;
// no allocation. Bad arguments (shapes, null pointers, a small workspace) return
// cudaErrorInvalidValue before anything is launched.
Error ObserveLayer(const ObservationArgs& args, const void* q, const void* k, float* col_sums,
                   int64_t* sparse_counts, void* workspace, size_t workspace_bytes, Stream stream);

}  // namespace vlc::kvcache::cuda
