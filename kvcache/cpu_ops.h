// CPU kernels over the paged layout (page_pool.h), the reference the CUDA kernels are checked
// against: decode attention for a batch of sequences over per-layer-ragged paged caches
// (multi-threaded over sequences and KV heads), the append of new tokens, and the in-place
// gather that compaction uses.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace vlc::kvcache {

// One sequence's view of one layer: its pages and its length in tokens.
struct PagedSeqView {
  const int32_t* pages = nullptr;
  int64_t length = 0;
};

// q [batch, heads, head_dim] (heads = kv_heads * group) -> out [batch, heads, head_dim];
// sequence b attends to its `length` tokens (the last `window` only, when window > 0).
// storage: [num_pages, 2, kv_heads, page_tokens, head_dim] float32.
void PagedDecodeAttention(const at::Tensor& storage, const std::vector<PagedSeqView>& seqs,
                          const at::Tensor& q, double scale, int64_t window, at::Tensor& out);

// Writes k, v [kv_heads, t, head_dim] at token indices [start, start + t) of the pages.
void PagedWrite(at::Tensor& storage, const int32_t* pages, int64_t start, const at::Tensor& k,
                const at::Tensor& v);

// Reads tokens [0, length) into contiguous k, v [kv_heads, length, head_dim].
void PagedRead(const at::Tensor& storage, const int32_t* pages, int64_t length, at::Tensor& k,
               at::Tensor& v);

// In place, per KV head h: token i of the layer becomes the old token positions[h][i]
// (positions [kv_heads, keep], ascending per head, so every read precedes the write over it).
void PagedGatherInPlace(at::Tensor& storage, const int32_t* pages, const at::Tensor& positions);

}  // namespace vlc::kvcache
