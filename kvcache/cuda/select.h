// A keep plan's selection on the device: the CUDA twins of GroupMean, AvgPool1d and
// TopKWithRecent (kvcache/policy.h), with the same results (positions exactly; pooled and
// averaged scores to float rounding).
//
// TopKWithRecent runs one 512-thread block per KV head: a radix select on the scores' bits
// (4 passes of 8 bits, each a shared-memory histogram over the positions still in the running)
// finds the (keep - recent)-th largest score T, then one ordered pass writes, in position order,
// every position above T and the lowest-position ties at T. Cost per KV head: 5 reads of the
// m - recent scores (from L2 after the first), no sort; about 20-60 us for m = 128k (not yet
// measured); KV heads run in parallel.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/cuda/cuda_common.h"

namespace vlc::kvcache::cuda {

// out [kv_heads, m] = the mean of each GQA group of head_scores [heads, m] (query head h reads KV
// head h / (heads / kv_heads)); float32, contiguous.
Error GroupMean(const float* head_scores, int64_t heads, int64_t kv_heads, int64_t m, float* out,
                Stream stream);

// out [rows, m] = 1-D average pooling of scores [rows, m] along m: kernel `kernel` (odd), padding
// kernel / 2 with zeros that count (PyTorch's avg_pool1d default), stride 1. out must not overlap
// scores.
Error AvgPool1d(const float* scores, int64_t rows, int64_t m, int kernel, float* out,
                Stream stream);

// Device workspace TopKWithRecent needs: 0 today (shared memory only); callers size buffers
// through it so that a multi-block version can ask for some.
size_t TopKWithRecentWorkspaceBytes(int64_t kv_heads, int64_t m, int64_t keep);

// positions [kv_heads, keep] (int64, ascending per head) = the last `recent` positions of [0, m)
// and the `keep - recent` highest scores among the others, ties to the lower position, NaN ranked
// as -inf and -0 equal to +0: exactly kvcache::TopKWithRecent. scores [kv_heads, m] float32 with
// rows `score_stride` elements apart (0 = m). Needs 0 <= recent <= keep <= m <= 2^30; keep == 0
// writes nothing. Bad arguments return cudaErrorInvalidValue before anything is launched.
Error TopKWithRecent(const float* scores, int64_t kv_heads, int64_t m, int64_t score_stride,
                     int64_t keep, int64_t recent, int64_t* positions, void* workspace,
                     size_t workspace_bytes, Stream stream);

}  // namespace vlc::kvcache::cuda
