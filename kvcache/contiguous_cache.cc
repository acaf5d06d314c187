#include "kvcache/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kvcache/attention.h"
#include "common/status.h"

namespace vlc::kvcache {

absl::Status KvCache::AppendBatch(const std::vector<SeqId>& seqs, int layer, const at::Tensor& k,
                                  const at::Tensor& v) {
  if (k.dim() != 3 || k.size(0) != static_cast<int64_t>(seqs.size()) || v.sizes() != k.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a batched append needs k and v [", seqs.size(), ", kv_heads, head_dim], got ",
        c10::str(k.sizes()), " and ", c10::str(v.sizes())));
  }
  for (size_t i = 0; i < seqs.size(); ++i) {
    const auto b = static_cast<int64_t>(i);
    VLC_RETURN_IF_ERROR(Append(seqs[i], layer, k[b].unsqueeze(1), v[b].unsqueeze(1)));
  }
  return absl::OkStatus();
}

ContiguousKvCache::ContiguousKvCache(int num_layers, int kv_heads, int head_dim,
                                     at::ScalarType dtype, at::Device device)
    : num_layers_(num_layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      dtype_(dtype),
      device_(device) {}

absl::Status ContiguousKvCache::AddSequence(SeqId seq) {
  if (seqs_.count(seq)) return absl::AlreadyExistsError(absl::StrCat("sequence ", seq, " exists"));
  seqs_.emplace(seq, std::vector<Layer>(num_layers_));
  return absl::OkStatus();
}

void ContiguousKvCache::RemoveSequence(SeqId seq) { seqs_.erase(seq); }

bool ContiguousKvCache::HasSequence(SeqId seq) const { return seqs_.count(seq) > 0; }

const std::vector<ContiguousKvCache::Layer>* ContiguousKvCache::Find(SeqId seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? nullptr : &it->second;
}

absl::Status ContiguousKvCache::Append(SeqId seq, int layer, const at::Tensor& k,
                                       const at::Tensor& v) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no sequence ", seq));
  if (layer < 0 || layer >= num_layers_) {
    return absl::InvalidArgumentError(absl::StrCat("layer ", layer, " out of range"));
  }
  return CatchAll("kv cache append", [&] {
    Layer& l = it->second[layer];
    const int64_t t = k.size(1);
    const int64_t need = l.length + t;
    const int64_t cap = l.k.defined() ? l.k.size(1) : 0;
    if (need > cap) {
      // Doubling keeps appends amortised O(1) per token.
      const int64_t new_cap = std::max<int64_t>({need, 2 * cap, 16});
      auto nk = at::empty({kv_heads_, new_cap, head_dim_},
                          at::TensorOptions().dtype(dtype_).device(device_));
      auto nv = at::empty_like(nk);
      if (l.length > 0) {
        nk.slice(1, 0, l.length).copy_(l.k.slice(1, 0, l.length));
        nv.slice(1, 0, l.length).copy_(l.v.slice(1, 0, l.length));
      }
      l.k = nk;
      l.v = nv;
    }
    l.k.slice(1, l.length, need).copy_(k);
    l.v.slice(1, l.length, need).copy_(v);
    l.length = need;
  });
}

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> ContiguousKvCache::Read(SeqId seq,
                                                                          int layer) const {
  const auto* layers = Find(seq);
  if (!layers) return absl::NotFoundError(absl::StrCat("no sequence ", seq));
  const Layer& l = (*layers)[layer];
  if (l.length == 0) {
    auto e =
        at::empty({kv_heads_, 0, head_dim_}, at::TensorOptions().dtype(dtype_).device(device_));
    return std::make_pair(e, e);
  }
  return std::make_pair(l.k.slice(1, 0, l.length), l.v.slice(1, 0, l.length));
}

absl::StatusOr<at::Tensor> ContiguousKvCache::DecodeAttention(int layer,
                                                              const std::vector<SeqId>& seqs,
                                                              const at::Tensor& q, double scale,
                                                              int64_t window) const {
  at::Tensor out;
  for (SeqId s : seqs) {
    const auto* layers = Find(s);
    if (!layers) return absl::NotFoundError(absl::StrCat("no sequence ", s));
    if ((*layers)[layer].length == 0) {
      return absl::FailedPreconditionError(absl::StrCat("sequence ", s, " has an empty cache"));
    }
  }
  VLC_RETURN_IF_ERROR(CatchAll("decode attention", [&] {
    out = at::empty_like(q);
    for (size_t b = 0; b < seqs.size(); ++b) {
      const Layer& l = (*Find(seqs[b]))[layer];
      auto k = l.k.slice(1, 0, l.length);
      auto v = l.v.slice(1, 0, l.length);
      out[b].copy_(CausalAttention(q[b].unsqueeze(1), k, v, scale, window).squeeze(1));
    }
  }));
  return out;
}

int64_t ContiguousKvCache::Length(SeqId seq, int layer) const {
  const auto* layers = Find(seq);
  return layers ? (*layers)[layer].length : 0;
}

int64_t ContiguousKvCache::BytesPerTokenPerLayer() const {
  return 2 * kv_heads_ * head_dim_ * static_cast<int64_t>(c10::elementSize(dtype_));
}

int64_t ContiguousKvCache::Bytes(SeqId seq) const {
  const auto* layers = Find(seq);
  if (!layers) return 0;
  int64_t tokens = 0;
  for (const auto& l : *layers) tokens += l.length;
  return tokens * BytesPerTokenPerLayer();
}

absl::Status ContiguousKvCache::Compact(SeqId seq, const KeepPlan& plan) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return absl::NotFoundError(absl::StrCat("no sequence ", seq));
  if (static_cast<int>(plan.layers.size()) != num_layers_) {
    return absl::InvalidArgumentError(absl::StrCat("plan has ", plan.layers.size(),
                                                   " layers, the cache ", num_layers_));
  }
  return CatchAll("kv cache compact", [&] {
    for (int l = 0; l < num_layers_; ++l) {
      const LayerPlan& lp = plan.layers[l];
      Layer& layer = it->second[l];
      if (!lp.positions.defined() || layer.length == 0) continue;
      // Gather along the token axis, per head: index [kv_heads, keep, head_dim].
      auto idx = lp.positions.to(device_, at::kLong)
                     .unsqueeze(-1)
                     .expand({kv_heads_, lp.keep, head_dim_});
      layer.k = at::gather(layer.k.slice(1, 0, layer.length), 1, idx).contiguous();
      layer.v = at::gather(layer.v.slice(1, 0, layer.length), 1, idx).contiguous();
      layer.length = lp.keep;
    }
  });
}

}  // namespace vlc::kvcache
