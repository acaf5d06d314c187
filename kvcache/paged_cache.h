// The serving cache: every sequence's K and V live in pages of a shared PagePool, one block table
// and one length per sequence and layer, so layers can hold different numbers of tokens after a
// policy compacts them. Appends allocate pages as they fill; compaction gathers the kept tokens
// to the front of the layer's pages in place and returns the emptied pages to the pool.
// Block tables live on the host; the operations run where the pool's storage lives: the CPU
// kernels (cpu_ops.h) or, for a pool on a GPU, the CUDA kernels (cuda_ops.h), which are handed
// the tables they need at each call.
#pragma once

#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kvcache/kv_cache.h"
#include "kvcache/page_pool.h"

namespace vlc::kvcache {

class PagedKvCache final : public KvCache {
 public:
  PagedKvCache(int num_layers, PagePool* pool);
  // Returns every page its sequences hold to the pool, which outlives the cache.
  ~PagedKvCache() override;
  PagedKvCache(const PagedKvCache&) = delete;
  PagedKvCache& operator=(const PagedKvCache&) = delete;

  absl::Status AddSequence(SeqId seq) override;
  void RemoveSequence(SeqId seq) override;
  bool HasSequence(SeqId seq) const override;
  // All-or-nothing: the pages the append needs are allocated before anything is written.
  absl::Status Append(SeqId seq, int layer, const at::Tensor& k, const at::Tensor& v) override;
  // On a GPU pool one launch for the batch, all-or-nothing; on the CPU the default loop.
  absl::Status AppendBatch(const std::vector<SeqId>& seqs, int layer, const at::Tensor& k,
                           const at::Tensor& v) override;
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> Read(SeqId seq, int layer) const override;
  // Paged decode attention (kvcache/cpu_ops.h, or the CUDA kernel), over the batch in parallel.
  absl::StatusOr<at::Tensor> DecodeAttention(int layer, const std::vector<SeqId>& seqs,
                                             const at::Tensor& q, double scale,
                                             int64_t window) const override;
  absl::Status Compact(SeqId seq, const KeepPlan& plan) override;
  int64_t Length(SeqId seq, int layer) const override;
  int64_t Bytes(SeqId seq) const override;  // bytes of the pages the sequence holds
  int64_t BytesPerTokenPerLayer() const override;

  // Pages the sequence holds in `layer`, in order.
  const std::vector<int32_t>* BlockTable(SeqId seq, int layer) const;
  // Pages an append of `tokens` tokens to every layer of `seq` would need (0 for a new sequence
  // means nothing is held yet); admission control asks this before prefill.
  int64_t PagesNeeded(SeqId seq, int64_t tokens) const override;
  int64_t FreePages() const override;
  int64_t num_sequences() const { return static_cast<int64_t>(seqs_.size()); }
  PagePool* pool() const { return pool_; }

 private:
  struct Layer {
    std::vector<int32_t> pages;
    int64_t length = 0;
  };
  const std::vector<Layer>* Find(SeqId seq) const;
  int64_t page_tokens() const { return pool_->options().page_tokens; }

  int num_layers_;
  PagePool* pool_;  // not owned; outlives the cache
  std::unordered_map<SeqId, std::vector<Layer>> seqs_;
};

}  // namespace vlc::kvcache
