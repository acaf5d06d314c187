// CUDA twins of kvcache/cpu_ops.h on the same paged layout: storage
// [num_pages, 2, kv_heads, page_tokens, head_dim] (a page's K at [p][0], its V at [p][1]), shared
// by every layer, with per-sequence, per-layer page tables of int32 page ids.
//
//   PagedAppend           PagedWrite for a batch of sequences in one launch (decode: 1 token each).
//   PagedGather           PagedGatherInPlace for all layers of a session in one launch, in place
//                         or into fresh pages.
//   PagedDecodeAttention  PagedDecodeAttention (GQA, sliding window), split along the sequence for
//                         long contexts (flash-decoding) with a caller-allocated workspace.
//
// Everything the kernels read through a pointer lives in device memory: storage, page tables,
// the per-sequence / per-layer descriptor arrays, tokens, positions, q, out and the workspace.
// The host functions check shapes before launching and return cudaErrorInvalidValue (1) for
// what they do not support, so a bad call never runs wrong; otherwise they return the launch's
// error (cuda_common.h). They never synchronise. Storage, tokens, q and out share one DType;
// arithmetic is float32.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvcache/cuda/cuda_common.h"

namespace vlc::kvcache::cuda {

// The shape of the page storage (PagePoolOptions without the capacity).
struct PagedLayout {
  int kv_heads = 0;
  int page_tokens = 0;  // B
  int head_dim = 0;
  DType dtype = DType::kF32;
};

// ---- Append ----------------------------------------------------------------------------------

// One sequence's new tokens (an element of a device array).
struct PagedAppendSeq {
  const int32_t* pages = nullptr;  // device page table covering tokens [0, start + tokens)
  int64_t start = 0;               // index of the first new token (the layer's length before)
  int64_t tokens = 0;              // t, may be 0
  int64_t src = 0;                 // index of the sequence's first token in k and v
};

// Writes, for each sequence s and KV head h, its tokens i < seqs[s].tokens at token index
// seqs[s].start + i of its pages. Token j of k (and v) for head h is the head_dim contiguous
// elements at k + j * token_stride + h * head_stride, so both the CPU twin's [kv_heads, t,
// head_dim] (token_stride = head_dim, head_stride = t * head_dim) and a projection's token-major
// [tokens, kv_heads, head_dim] (token_stride = kv_heads * head_dim, head_stride = head_dim) work.
// `max_tokens` >= every seqs[s].tokens (it sizes the grid). Any head_dim >= 1.
Error PagedAppend(void* storage, const PagedLayout& layout, const PagedAppendSeq* seqs, int batch,
                  int64_t max_tokens, const void* k, const void* v, int64_t token_stride,
                  int64_t head_stride, Stream stream);

// ---- Gather (compaction) ---------------------------------------------------------------------

// One layer's compaction (an element of a device array).
struct PagedGatherLayer {
  const int32_t* src_pages = nullptr;  // the layer's current page table
  const int32_t* dst_pages = nullptr;  // ceil(keep / page_tokens) pages; == src_pages: in place
  const int64_t* positions = nullptr;  // [kv_heads, keep], strictly ascending per head (a
                                       // KeepPlan's int64 positions, as they are)
  int64_t keep = 0;
};

// For every layer l and KV head h: token i < keep of dst_pages becomes the old token
// positions[h][i] of src_pages, for K and V. dst_pages either is src_pages (the CPU twin's in-place
// gather: pages are reused and the caller frees the tail) or shares no page with any layer's
// src_pages (fresh pages: the caller frees all the old ones). One block per (layer, KV head) walks
// its tokens in order, reading a whole chunk of rows before writing it; since positions[h][i] >= i,
// a row is always read before any write over it, so in place is safe. Positions are trusted (the
// caller checks them as PagedKvCache::Compact does). Any head_dim >= 1.
Error PagedGather(void* storage, const PagedLayout& layout, const PagedGatherLayer* layers,
                  int num_layers, Stream stream);

// ---- Decode attention ------------------------------------------------------------------------

// One sequence's view of one layer (an element of a device array), as in cpu_ops.h.
struct PagedSeqView {
  const int32_t* pages = nullptr;  // device page table
  int64_t length = 0;
};

// How a decode call is split along the sequence. Each thread block handles one (sequence, KV head,
// group tile, chunk of `chunk_tokens` tokens); with max_chunks > 1 the blocks write partial
// softmax states to the workspace and a second kernel combines them.
struct PagedDecodePlan {
  int64_t chunk_tokens = 0;    // tokens per block along the sequence
  int max_chunks = 1;          // chunks of the longest attended span; 1: no split, no workspace
  size_t workspace_bytes = 0;  // float32 [batch, heads, max_chunks, head_dim + 2]
};

// The split for a call (a pure host function: no device is asked). `max_length` is the longest
// sequence of the batch and `window` the call's window (it shortens the attended span).
// chunk_tokens > 0 forces that chunk size (tests, benchmarks); otherwise enough chunks to give
// about a thousand blocks (8 per SM of an H100), never under 256 tokens a chunk.
PagedDecodePlan PlanPagedDecode(const PagedLayout& layout, int batch, int heads, int64_t max_length,
                                int64_t window, int64_t chunk_tokens = 0);

// The workspace PagedDecodeAttention needs for these arguments (0 when it needs none).
size_t PagedDecodeWorkspaceBytes(const PagedLayout& layout, int batch, int heads,
                                 int64_t max_length, int64_t window, int64_t chunk_tokens = 0);

// q [batch, heads, head_dim] (heads = kv_heads * group; query head h uses KV head h / group) ->
// out [batch, heads, head_dim], both contiguous in the storage's dtype: sequence b attends to its
// seqs[b].length tokens, the last `window` only when window > 0; a sequence with no tokens gets
// zeros. `max_length` and chunk_tokens pick the split (PlanPagedDecode); the workspace must hold
// PagedDecodeWorkspaceBytes of the same arguments (it may be null when that is 0). A sequence
// longer than max_length is still attended to in full (its last chunk is longer), only slower.
//
// Limits (cudaErrorInvalidValue otherwise): head_dim a multiple of 8 in [8, 256], storage 16-byte
// aligned, 1 <= batch <= 65535 (0 is a no-op), heads a positive multiple of kv_heads.
Error PagedDecodeAttention(const void* storage, const PagedLayout& layout, const PagedSeqView* seqs,
                           int batch, int64_t max_length, const void* q, int heads, double scale,
                           int64_t window, void* out, void* workspace, size_t workspace_bytes,
                           Stream stream, int64_t chunk_tokens = 0);

}  // namespace vlc::kvcache::cuda
