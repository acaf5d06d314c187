// A pool of KV pages sized in bytes. A page holds `page_tokens` tokens of one layer's K and V for
// all KV heads: storage [num_pages, 2, kv_heads, page_tokens, head_dim], page p's keys at
// [p][0], its values at [p][1]. Pages carry no owner; the per-sequence block tables of
// PagedKvCache do. Allocation is all-or-nothing and fails with RESOURCE_EXHAUSTED, never aborts.
// The storage lives on the CPU (float32: the CPU kernels' type) or on a CUDA device (float32,
// float16 or bfloat16: the CUDA kernels', kvcache/cuda_ops.h); only the storage moves, the free
// list and the block tables stay on the host.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace vlc::kvcache {

struct PagePoolOptions {
  int64_t capacity_bytes = int64_t{1} << 30;  // --kv-cache-bytes
  int page_tokens = 16;                       // B
  int kv_heads = 0;
  int head_dim = 0;
  at::ScalarType dtype = at::kFloat;
  at::Device device = at::kCPU;
};

class PagePool {
 public:
  // INVALID_ARGUMENT when the options are inconsistent or the capacity holds no page.
  static absl::StatusOr<std::unique_ptr<PagePool>> Create(const PagePoolOptions& options);

  // `n` pages, or RESOURCE_EXHAUSTED (saying how many were asked and are free) with none taken.
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t n);
  void Free(const std::vector<int32_t>& pages);

  int64_t num_pages() const;
  int64_t free_pages() const;
  int64_t bytes_per_page() const;
  int64_t capacity_bytes() const { return num_pages() * bytes_per_page(); }
  int64_t used_bytes() const { return (num_pages() - free_pages()) * bytes_per_page(); }
  const PagePoolOptions& options() const;

  // [num_pages, 2, kv_heads, page_tokens, head_dim]
  at::Tensor& storage();
  const at::Tensor& storage() const;

 private:
  // Not thread-safe: the one engine thread that owns the cache owns its pool.
  PagePool(const PagePoolOptions& options, int64_t num_pages, int64_t bytes_per_page,
           at::Tensor storage);

  PagePoolOptions options_;
  int64_t num_pages_;
  int64_t bytes_per_page_;
  at::Tensor storage_;
  std::vector<int32_t> free_;    // a stack: the most recently freed (cache-warm) page goes first
  std::vector<bool> allocated_;  // per page, so that a double free cannot hand a page out twice
};

}  // namespace vlc::kvcache
