// The engine's contract with a KV cache. The model writes each layer's rotated keys and values
// through it and asks it for decode attention, so a cache decides its own layout: this file's
// ContiguousKvCache (one growing tensor per sequence and layer) is the reference; PagedKvCache
// (paged_cache.h) is the one that serves, with a page pool and compression.
//
// A cache stores tokens in cache order, which need not be position order's full range: once a
// policy evicts tokens, a layer holds fewer entries than the sequence's logical length, and
// layers may differ. The model therefore tracks positions itself (RoPE is applied before keys
// enter the cache) and never infers them from a cache length.
#pragma once

#include <cstdint>
#include <limits>
#include <unordered_map>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"
#include "kvcache/plan.h"

namespace vlc::kvcache {

using SeqId = int64_t;

class KvCache {
 public:
  virtual ~KvCache() = default;

  virtual absl::Status AddSequence(SeqId seq) = 0;
  // Frees everything the sequence holds; unknown ids are ignored.
  virtual void RemoveSequence(SeqId seq) = 0;
  virtual bool HasSequence(SeqId seq) const = 0;

  // Appends `k`, `v` ([kv_heads, tokens, head_dim], keys already rotated) to layer `layer`.
  // RESOURCE_EXHAUSTED when the cache has no room.
  virtual absl::Status Append(SeqId seq, int layer, const at::Tensor& k, const at::Tensor& v) = 0;

  // A decode step's append: one token per sequence, k and v [batch, kv_heads, head_dim] (row b
  // for seqs[b]). By default one Append per sequence, in order, stopping at the first error; a
  // cache that can do better (one launch on a GPU) overrides it.
  virtual absl::Status AppendBatch(const std::vector<SeqId>& seqs, int layer, const at::Tensor& k,
                                   const at::Tensor& v);

  // Everything layer `layer` holds for `seq`, as contiguous [kv_heads, length, head_dim] tensors.
  virtual absl::StatusOr<std::pair<at::Tensor, at::Tensor>> Read(SeqId seq, int layer) const = 0;

  // One query token per sequence, q: [batch, heads, head_dim] (heads a multiple of kv_heads,
  // grouped as in GQA), attending to everything the layer holds for that sequence (the new
  // token's own K/V already appended). `window` > 0 limits each query to the last `window`
  // entries (Mistral's sliding window). Returns [batch, heads, head_dim].
  virtual absl::StatusOr<at::Tensor> DecodeAttention(int layer, const std::vector<SeqId>& seqs,
                                                     const at::Tensor& q, double scale,
                                                     int64_t window) const = 0;

  // Keeps, in every layer and KV head, only the entries the plan names (cache indices, which
  // equal prompt positions right after prefill) and frees the rest. Layers may end with different
  // lengths; all heads of a layer keep the same number.
  virtual absl::Status Compact(SeqId seq, const KeepPlan& plan) = 0;

  virtual int64_t Length(SeqId seq, int layer) const = 0;
  // Bytes of K and V the cache holds for `seq` (all layers).
  virtual int64_t Bytes(SeqId seq) const = 0;
  // Bytes one token takes in one layer (K and V of every KV head).
  virtual int64_t BytesPerTokenPerLayer() const = 0;

  // Capacity accounting for caches that draw from a fixed pool (paged_cache.h): the pages an
  // append of `tokens` tokens to every layer of `seq` would take, and the pages free now. A cache
  // that grows on demand needs none and never runs out.
  virtual int64_t PagesNeeded(SeqId seq, int64_t tokens) const { return 0; }
  virtual int64_t FreePages() const { return std::numeric_limits<int64_t>::max(); }
};

// Reference cache: per sequence and layer, K and V in one tensor each, grown by doubling, on any
// device (plain ATen ops).
class ContiguousKvCache final : public KvCache {
 public:
  ContiguousKvCache(int num_layers, int kv_heads, int head_dim, at::ScalarType dtype = at::kFloat,
                    at::Device device = at::kCPU);

  absl::Status AddSequence(SeqId seq) override;
  void RemoveSequence(SeqId seq) override;
  bool HasSequence(SeqId seq) const override;
  absl::Status Append(SeqId seq, int layer, const at::Tensor& k, const at::Tensor& v) override;
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> Read(SeqId seq, int layer) const override;
  absl::StatusOr<at::Tensor> DecodeAttention(int layer, const std::vector<SeqId>& seqs,
                                             const at::Tensor& q, double scale,
                                             int64_t window) const override;
  absl::Status Compact(SeqId seq, const KeepPlan& plan) override;
  int64_t Length(SeqId seq, int layer) const override;
  int64_t Bytes(SeqId seq) const override;
  int64_t BytesPerTokenPerLayer() const override;

 private:
  struct Layer {
    at::Tensor k, v;  // [kv_heads, capacity, head_dim]
    int64_t length = 0;
  };
  const std::vector<Layer>* Find(SeqId seq) const;
  int num_layers_, kv_heads_, head_dim_;
  at::ScalarType dtype_;
  at::Device device_;
  std::unordered_map<SeqId, std::vector<Layer>> seqs_;
};

}  // namespace vlc::kvcache
