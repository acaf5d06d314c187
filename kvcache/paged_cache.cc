#include "kvcache/paged_cache.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "kvcache/cpu_ops.h"
#include "kvcache/cuda_ops.h"

namespace vlc::kvcache {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

absl::Status CheckLayer(int layer, int num_layers) {
  if (layer < 0 || layer >= num_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " out of range [0, ", num_layers, ")"));
  }
  return absl::OkStatus();
}

absl::Status NoSequence(SeqId seq) {
  return absl::NotFoundError(absl::StrCat("no sequence ", seq, " in the KV cache"));
}

// k or v must be floating point [kv_heads, tokens, head_dim] of the pool's geometry.
absl::Status CheckTokens(const at::Tensor& x, const char* name, const PagePoolOptions& options) {
  if (!x.defined() || x.dim() != 3 || x.size(0) != options.kv_heads ||
      x.size(2) != options.head_dim || !at::isFloatingType(x.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " must be a floating-point [", options.kv_heads, ", tokens, ", options.head_dim,
        "] tensor, got ",
        x.defined() ? absl::StrCat(c10::toString(x.scalar_type()), " ", c10::str(x.sizes()))
                    : std::string("an undefined tensor")));
  }
  return absl::OkStatus();
}

// positions [kv_heads, keep], integral, strictly ascending per head, all in [0, length).
absl::Status CheckPositions(const LayerPlan& plan, int layer, int64_t kv_heads, int64_t length) {
  const at::Tensor& p = plan.positions;
  const std::string where = absl::StrCat("keep plan, layer ", layer, ": ");
  if (p.dim() != 2 || p.size(0) != kv_heads || p.size(1) != plan.keep ||
      !at::isIntegralType(p.scalar_type(), /*includeBool=*/false)) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, "positions must be an integer [", kv_heads, ", ", plan.keep,
                     "] tensor, got ", c10::toString(p.scalar_type()), " ", c10::str(p.sizes())));
  }
  const at::Tensor pos = p.to(at::kCPU, at::kLong).contiguous();
  const int64_t* data = pos.data_ptr<int64_t>();
  const int64_t keep = plan.keep;
  for (int64_t h = 0; h < kv_heads; ++h) {
    for (int64_t i = 0; i < keep; ++i) {
      const int64_t x = data[h * keep + i];
      if (x < 0 || x >= length) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "position ", x, " of head ", h, " is outside [0, ", length, ")"));
      }
      if (i > 0 && x <= data[h * keep + i - 1]) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "positions of head ", h, " are not strictly ascending"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

PagedKvCache::PagedKvCache(int num_layers, PagePool* pool) : num_layers_(num_layers), pool_(pool) {}

PagedKvCache::~PagedKvCache() {
  for (auto& [seq, layers] : seqs_) {
    for (auto& layer : layers) pool_->Free(layer.pages);
  }
}

const std::vector<PagedKvCache::Layer>* PagedKvCache::Find(SeqId seq) const {
  auto it = seqs_.find(seq);
  return it == seqs_.end() ? nullptr : &it->second;
}

absl::Status PagedKvCache::AddSequence(SeqId seq) {
  if (seqs_.count(seq)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq, " is already in the KV cache"));
  }
  seqs_.emplace(seq, std::vector<Layer>(num_layers_));
  return absl::OkStatus();
}

void PagedKvCache::RemoveSequence(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  for (const Layer& l : it->second) pool_->Free(l.pages);
  seqs_.erase(it);
}

bool PagedKvCache::HasSequence(SeqId seq) const { return seqs_.count(seq) > 0; }

absl::Status PagedKvCache::Append(SeqId seq, int layer, const at::Tensor& k, const at::Tensor& v) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return NoSequence(seq);
  VLC_RETURN_IF_ERROR(CheckLayer(layer, num_layers_));
  VLC_RETURN_IF_ERROR(CheckTokens(k, "k", pool_->options()));
  VLC_RETURN_IF_ERROR(CheckTokens(v, "v", pool_->options()));
  if (k.sizes() != v.sizes()) {
    return absl::InvalidArgumentError(absl::StrCat("k ", c10::str(k.sizes()), " and v ",
                                                   c10::str(v.sizes()), " differ in shape"));
  }
  const int64_t t = k.size(1);
  if (t == 0) return absl::OkStatus();
  Layer& l = it->second[layer];
  const size_t held = l.pages.size();
  const int64_t need = CeilDiv(l.length + t, page_tokens()) - static_cast<int64_t>(held);
  // Pages first: when the pool is short nothing has been written or taken.
  if (need > 0) {
    VLC_ASSIGN_OR_RETURN(std::vector<int32_t> fresh, pool_->Allocate(need));
    l.pages.insert(l.pages.end(), fresh.begin(), fresh.end());
  }
  at::Tensor& storage = pool_->storage();
  absl::Status status = CatchAll("kv cache append", [&] {
    if (storage.is_cuda()) {
      CudaPagedWrite(storage, {{&l.pages, l.length}}, k.unsqueeze(0), v.unsqueeze(0));
      return;
    }
    PagedWrite(storage, l.pages.data(), l.length, k.to(storage.options()), v.to(storage.options()));
  });
  if (!status.ok()) {
    // Keep the all-or-nothing promise even if the copy fails: give the new pages back.
    pool_->Free(std::vector<int32_t>(l.pages.begin() + held, l.pages.end()));
    l.pages.resize(held);
    return status;
  }
  l.length += t;
  return absl::OkStatus();
}

absl::Status PagedKvCache::AppendBatch(const std::vector<SeqId>& seqs, int layer,
                                       const at::Tensor& k, const at::Tensor& v) {
  at::Tensor& storage = pool_->storage();
  // The CPU appends one sequence at a time (memcpy-bound, nothing to gain from batching).
  if (!storage.is_cuda()) return KvCache::AppendBatch(seqs, layer, k, v);
  VLC_RETURN_IF_ERROR(CheckLayer(layer, num_layers_));
  const PagePoolOptions& options = pool_->options();
  const int64_t batch = static_cast<int64_t>(seqs.size());
  if (!k.defined() || !v.defined() || k.dim() != 3 || k.size(0) != batch ||
      k.size(1) != options.kv_heads || k.size(2) != options.head_dim || k.sizes() != v.sizes() ||
      !at::isFloatingType(k.scalar_type()) || !at::isFloatingType(v.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a batched append needs floating-point k and v [", batch, ", ", options.kv_heads, ", ",
        options.head_dim, "], got ", k.defined() ? c10::str(k.sizes()) : "undefined", " and ",
        v.defined() ? c10::str(v.sizes()) : "undefined"));
  }
  std::vector<Layer*> layers;
  std::unordered_map<SeqId, int> seen;
  int64_t need = 0;
  for (SeqId s : seqs) {
    auto it = seqs_.find(s);
    if (it == seqs_.end()) return NoSequence(s);
    if (seen[s]++ > 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("sequence ", s, " appears twice in one batched append"));
    }
    Layer& l = it->second[layer];
    layers.push_back(&l);
    need += CeilDiv(l.length + 1, page_tokens()) - static_cast<int64_t>(l.pages.size());
  }
  // All-or-nothing: every page the batch needs is taken before anything is written.
  VLC_ASSIGN_OR_RETURN(std::vector<int32_t> fresh, pool_->Allocate(need));
  std::vector<size_t> held(layers.size());
  size_t next = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    Layer& l = *layers[i];
    held[i] = l.pages.size();
    const int64_t want = CeilDiv(l.length + 1, page_tokens()) - static_cast<int64_t>(held[i]);
    for (int64_t j = 0; j < want; ++j) l.pages.push_back(fresh[next++]);
  }
  absl::Status status = CatchAll("kv cache append", [&] {
    std::vector<CudaPagedSeq> views;
    views.reserve(layers.size());
    for (Layer* l : layers) views.push_back({&l->pages, l->length});
    CudaPagedWrite(storage, views, k.unsqueeze(2), v.unsqueeze(2));
  });
  if (!status.ok()) {
    for (size_t i = 0; i < layers.size(); ++i) layers[i]->pages.resize(held[i]);
    pool_->Free(fresh);
    return status;
  }
  for (Layer* l : layers) l->length += 1;
  return absl::OkStatus();
}

absl::StatusOr<std::pair<at::Tensor, at::Tensor>> PagedKvCache::Read(SeqId seq, int layer) const {
  const auto* layers = Find(seq);
  if (!layers) return NoSequence(seq);
  VLC_RETURN_IF_ERROR(CheckLayer(layer, num_layers_));
  const Layer& l = (*layers)[layer];
  at::Tensor k, v;
  VLC_RETURN_IF_ERROR(CatchAll("kv cache read", [&] {
    const at::Tensor& storage = pool_->storage();
    if (storage.is_cuda()) {
      CudaPagedRead(storage, l.pages, l.length, k, v);
    } else {
      PagedRead(storage, l.pages.data(), l.length, k, v);
    }
  }));
  return std::make_pair(std::move(k), std::move(v));
}

absl::StatusOr<at::Tensor> PagedKvCache::DecodeAttention(int layer, const std::vector<SeqId>& seqs,
                                                         const at::Tensor& q, double scale,
                                                         int64_t window) const {
  VLC_RETURN_IF_ERROR(CheckLayer(layer, num_layers_));
  const PagePoolOptions& options = pool_->options();
  const int64_t batch = static_cast<int64_t>(seqs.size());
  if (!q.defined() || q.dim() != 3 || q.size(0) != batch || q.size(1) == 0 ||
      q.size(1) % options.kv_heads != 0 || q.size(2) != options.head_dim ||
      !at::isFloatingType(q.scalar_type())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q must be a floating-point [", batch, ", heads (a multiple of ", options.kv_heads, "), ",
        options.head_dim, "] tensor, got ", q.defined() ? c10::str(q.sizes()) : "undefined"));
  }
  std::vector<PagedSeqView> views;
  std::vector<CudaPagedSeq> cuda_views;
  views.reserve(seqs.size());
  for (SeqId s : seqs) {
    const auto* layers = Find(s);
    if (!layers) return NoSequence(s);
    const Layer& l = (*layers)[layer];
    if (l.length == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("sequence ", s, " has nothing cached in layer ", layer));
    }
    views.push_back({l.pages.data(), l.length});
    cuda_views.push_back({&l.pages, l.length});
  }
  at::Tensor out;
  VLC_RETURN_IF_ERROR(CatchAll("paged decode attention", [&] {
    const at::Tensor& storage = pool_->storage();
    if (storage.is_cuda()) {
      CudaPagedDecodeAttention(storage, cuda_views, q, scale, window, out);
      return;
    }
    PagedDecodeAttention(storage, views, q.to(storage.options()), scale, window, out);
    out = out.to(q.options());
  }));
  return out;
}

absl::Status PagedKvCache::Compact(SeqId seq, const KeepPlan& plan) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return NoSequence(seq);
  if (static_cast<int>(plan.layers.size()) != num_layers_) {
    return absl::InvalidArgumentError(
        absl::StrCat("keep plan has ", plan.layers.size(), " layers, the cache ", num_layers_));
  }
  std::vector<Layer>& layers = it->second;
  // Every layer is checked before any is touched, so a bad plan changes nothing.
  for (int l = 0; l < num_layers_; ++l) {
    const LayerPlan& lp = plan.layers[l];
    if (!lp.positions.defined()) continue;
    VLC_RETURN_IF_ERROR(CheckPositions(lp, l, pool_->options().kv_heads, layers[l].length));
  }
  if (pool_->storage().is_cuda()) {
    // All layers in one launch, then the same bookkeeping as below.
    std::vector<CudaGatherLayer> gather;
    for (int l = 0; l < num_layers_; ++l) {
      const LayerPlan& lp = plan.layers[l];
      if (lp.positions.defined()) gather.push_back({&layers[l].pages, &lp.positions, lp.keep});
    }
    VLC_RETURN_IF_ERROR(
        CatchAll("kv cache compact", [&] { CudaPagedGatherInPlace(pool_->storage(), gather); }));
  }
  for (int l = 0; l < num_layers_; ++l) {
    const LayerPlan& lp = plan.layers[l];
    if (!lp.positions.defined()) continue;
    Layer& layer = layers[l];
    if (!pool_->storage().is_cuda()) {
      VLC_RETURN_IF_ERROR(CatchAll("kv cache compact", [&] {
        PagedGatherInPlace(pool_->storage(), layer.pages.data(), lp.positions);
      }));
    }
    layer.length = lp.keep;
    const size_t kept_pages = static_cast<size_t>(CeilDiv(lp.keep, page_tokens()));
    pool_->Free(std::vector<int32_t>(layer.pages.begin() + kept_pages, layer.pages.end()));
    layer.pages.resize(kept_pages);
  }
  return absl::OkStatus();
}

int64_t PagedKvCache::Length(SeqId seq, int layer) const {
  const auto* layers = Find(seq);
  if (!layers || layer < 0 || layer >= num_layers_) return 0;
  return (*layers)[layer].length;
}

int64_t PagedKvCache::Bytes(SeqId seq) const {
  const auto* layers = Find(seq);
  if (!layers) return 0;
  int64_t pages = 0;
  for (const Layer& l : *layers) pages += static_cast<int64_t>(l.pages.size());
  return pages * pool_->bytes_per_page();
}

int64_t PagedKvCache::BytesPerTokenPerLayer() const {
  const PagePoolOptions& o = pool_->options();
  return int64_t{2} * o.kv_heads * o.head_dim * static_cast<int64_t>(c10::elementSize(o.dtype));
}

const std::vector<int32_t>* PagedKvCache::BlockTable(SeqId seq, int layer) const {
  const auto* layers = Find(seq);
  if (!layers || layer < 0 || layer >= num_layers_) return nullptr;
  return &(*layers)[layer].pages;
}

int64_t PagedKvCache::FreePages() const { return pool_->free_pages(); }

int64_t PagedKvCache::PagesNeeded(SeqId seq, int64_t tokens) const {
  const auto* layers = Find(seq);
  int64_t total = 0;
  for (int l = 0; l < num_layers_; ++l) {
    const int64_t length = layers ? (*layers)[l].length : 0;
    const int64_t held = layers ? static_cast<int64_t>((*layers)[l].pages.size()) : 0;
    total += std::max<int64_t>(0, CeilDiv(length + tokens, page_tokens()) - held);
  }
  return total;
}

}  // namespace vlc::kvcache
