#include "engine/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "engine/status.h"

namespace vlc::engine {

at::Tensor CausalAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           double scale, int64_t window) {
  const int64_t heads = q.size(0), tq = q.size(1), d = q.size(2);
  const int64_t kv_heads = k.size(0), tk = k.size(1);
  const int64_t group = heads / kv_heads;
  const int64_t offset = tk - tq;  // cache index of query 0
  // Rows of scores per chunk, sized to keep one chunk's score matrix near 32 MB.
  const int64_t budget = (int64_t{32} << 20) / 4;
  const int64_t chunk =
      std::max<int64_t>(1, std::min<int64_t>(tq, budget / std::max<int64_t>(1, heads * tk)));
  auto q4 = q.reshape({kv_heads, group, tq, d});
  auto out = at::empty({kv_heads, group, tq, d}, q.options());
  for (int64_t i0 = 0; i0 < tq; i0 += chunk) {
    const int64_t i1 = std::min(tq, i0 + chunk), c = i1 - i0;
    const int64_t end = offset + i1;  // keys [start, end) can be seen by some query of the chunk
    const int64_t start = window > 0 ? std::max<int64_t>(0, offset + i0 - window + 1) : 0;
    auto qc = q4.slice(2, i0, i1).reshape({kv_heads, group * c, d});
    auto kc = k.slice(1, start, end);
    auto vc = v.slice(1, start, end);
    auto s = at::bmm(qc, kc.transpose(1, 2)).mul_(scale);  // [kv_heads, group*c, n]
    const int64_t n = end - start;
    const bool needs_mask = c > 1 || (window > 0 && n > window);
    if (needs_mask) {
      auto qi = at::arange(offset + i0, offset + i1, at::kLong).unsqueeze(1);  // [c, 1]
      auto kj = at::arange(start, end, at::kLong).unsqueeze(0);               // [1, n]
      auto hidden = kj > qi;
      if (window > 0) hidden = hidden.logical_or(kj <= qi - window);
      s.view({kv_heads, group, c, n})
          .masked_fill_(hidden.view({1, 1, c, n}), -std::numeric_limits<float>::infinity());
    }
    auto p = at::softmax(s, -1);
    out.slice(2, i0, i1).copy_(at::bmm(p, vc).view({kv_heads, group, c, d}));
  }
  return out.view({heads, tq, d});
}

ContiguousKvCache::ContiguousKvCache(int num_layers, int kv_heads, int head_dim,
                                     at::ScalarType dtype)
    : num_layers_(num_layers), kv_heads_(kv_heads), head_dim_(head_dim), dtype_(dtype) {}

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
      auto nk = at::empty({kv_heads_, new_cap, head_dim_}, at::TensorOptions().dtype(dtype_));
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
    auto e = at::empty({kv_heads_, 0, head_dim_}, at::TensorOptions().dtype(dtype_));
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

int64_t ContiguousKvCache::Bytes(SeqId seq) const {
  const auto* layers = Find(seq);
  if (!layers) return 0;
  int64_t tokens = 0;
  for (const auto& l : *layers) tokens += l.length;
  return tokens * 2 * kv_heads_ * head_dim_ * static_cast<int64_t>(c10::elementSize(dtype_));
}

}  // namespace vlc::engine
