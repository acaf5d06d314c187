#include "kvcache/page_pool.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cassert>
#include <exception>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "kvcache/huge_pages.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kvcache/cuda_ops.h"

namespace vlc::kvcache {

// The pool is deliberately not thread-safe: one engine thread owns a cache and its pool and is the
// only caller of Allocate and Free, so a lock would only cost. The CPU kernels that run in
// parallel read and write page memory but never touch the free list.

absl::StatusOr<std::unique_ptr<PagePool>> PagePool::Create(const PagePoolOptions& options) {
  if (options.page_tokens < 1 || options.kv_heads < 1 || options.head_dim < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV page pool: page_tokens, kv_heads and head_dim must be >= 1, got page_tokens=",
        options.page_tokens, " kv_heads=", options.kv_heads, " head_dim=", options.head_dim));
  }
  if (options.device.is_cuda()) {
    VLC_RETURN_IF_ERROR(CheckCudaUsable("KV page pool on cuda"));
    if (options.dtype != at::kFloat && options.dtype != at::kHalf &&
        options.dtype != at::kBFloat16) {
      return absl::InvalidArgumentError(
          absl::StrCat("KV page pool on cuda: dtype ", c10::toString(options.dtype),
                       " is not supported, only float32, float16 and bfloat16"));
    }
  } else if (!options.device.is_cpu()) {
    return absl::InvalidArgumentError(absl::StrCat("KV page pool: device ", options.device.str(),
                                                   " is not supported, only cpu and cuda"));
  } else if (options.dtype != at::kFloat) {
    // The CPU kernels read and write raw float rows; other dtypes need kernels of their own.
    return absl::InvalidArgumentError(absl::StrCat(
        "KV page pool: dtype ", c10::toString(options.dtype),
        " is not supported on the CPU, only float32"));
  }
  const int64_t element = static_cast<int64_t>(c10::elementSize(options.dtype));
  const int64_t bytes_per_page =
      int64_t{2} * options.kv_heads * options.page_tokens * options.head_dim * element;
  if (options.capacity_bytes < bytes_per_page) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache capacity of ", options.capacity_bytes, " bytes holds no page: at least ",
        bytes_per_page, " bytes are needed (one page = ", options.page_tokens, " tokens x ",
        options.kv_heads, " KV heads x ", options.head_dim, " dims x K and V x ", element,
        " bytes); raise --kv-cache-bytes"));
  }
  const int64_t num_pages = options.capacity_bytes / bytes_per_page;
  // Block tables hold int32 page ids.
  if (num_pages > std::numeric_limits<int32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "KV cache capacity of ", options.capacity_bytes, " bytes makes ", num_pages,
        " pages, more than a page id can name; raise page_tokens or lower --kv-cache-bytes"));
  }
  at::Tensor storage;
  try {
    // Not zeroed: every page is written before any token of it is read.
    // On the CPU in huge-page memory (huge_pages.h): decode attention reads every page of a
    // sequence on every step, a few KiB from each.
    const std::vector<int64_t> shape = {num_pages, 2, options.kv_heads, options.page_tokens,
                                        options.head_dim};
    storage = options.device.is_cpu()
                  ? HugePageEmpty(shape, options.dtype)
                  : at::empty(shape, at::TensorOptions().dtype(options.dtype).device(options.device));
  } catch (const std::exception& e) {
    std::string msg = e.what();
    msg.resize(std::min(msg.size(), msg.find('\n')));
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate the KV cache pool of ",
                                                     num_pages * bytes_per_page, " bytes: ", msg,
                                                     "; lower --kv-cache-bytes"));
  }
  return std::unique_ptr<PagePool>(
      new PagePool(options, num_pages, bytes_per_page, std::move(storage)));
}

PagePool::PagePool(const PagePoolOptions& options, int64_t num_pages, int64_t bytes_per_page,
                   at::Tensor storage)
    : options_(options),
      num_pages_(num_pages),
      bytes_per_page_(bytes_per_page),
      storage_(std::move(storage)),
      allocated_(num_pages, false) {
  // Pushed in reverse so that a fresh pool hands out pages 0, 1, 2, ... in address order.
  free_.reserve(num_pages);
  for (int64_t p = num_pages - 1; p >= 0; --p) free_.push_back(static_cast<int32_t>(p));
}

absl::StatusOr<std::vector<int32_t>> PagePool::Allocate(int64_t n) {
  if (n < 0) {
    return absl::InvalidArgumentError(absl::StrCat("cannot allocate ", n, " KV pages"));
  }
  if (n > free_pages()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache pool exhausted: ", n, " pages needed, ", free_pages(), " of ",
                     num_pages_, " free (page = ", options_.page_tokens, " tokens, ",
                     bytes_per_page_, " bytes); raise --kv-cache-bytes or lower concurrency"));
  }
  std::vector<int32_t> pages(free_.end() - n, free_.end());
  // The stack's top is its back; hand it out first.
  std::reverse(pages.begin(), pages.end());
  free_.resize(free_.size() - n);
  for (int32_t p : pages) allocated_[p] = true;
  return pages;
}

void PagePool::Free(const std::vector<int32_t>& pages) {
  for (int32_t p : pages) {
    const bool known = p >= 0 && p < num_pages_;
    assert(known && "freeing a page id outside the pool");
    assert((!known || allocated_[p]) && "double free of a KV page");
    // In release builds a bad or repeated id is dropped rather than pushed: a page on the free
    // list twice would later be handed to two sequences at once.
    if (!known || !allocated_[p]) continue;
    allocated_[p] = false;
    free_.push_back(p);
  }
}

int64_t PagePool::num_pages() const { return num_pages_; }

int64_t PagePool::free_pages() const { return static_cast<int64_t>(free_.size()); }

int64_t PagePool::bytes_per_page() const { return bytes_per_page_; }

const PagePoolOptions& PagePool::options() const { return options_; }

at::Tensor& PagePool::storage() { return storage_; }

const at::Tensor& PagePool::storage() const { return storage_; }

}  // namespace vlc::kvcache
