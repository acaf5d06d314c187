#include "kvcache/cuda_ops.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"

#if VLC_HAVE_CUDA_KERNELS
#include "kvcache/cuda/cuda_common.h"
#include "kvcache/cuda/observation.h"
#include "kvcache/cuda/paged_ops.h"
#include "kvcache/cuda/select.h"
#endif

namespace vlc::kvcache {
namespace {

constexpr const char* kNoKernels =
    "vlcache was built without the CUDA kernels (no nvcc at configure time, or VLC_WITH_CUDA=OFF)";

// Storage [num_pages, 2, kv_heads, page_tokens, head_dim], contiguous, on a CUDA device.
void CheckCudaStorage(const at::Tensor& storage) {
  TORCH_CHECK(storage.dim() == 5 && storage.size(1) == 2,
              "KV storage must be [num_pages, 2, kv_heads, page_tokens, head_dim], got ",
              storage.sizes());
  TORCH_CHECK(storage.is_cuda(), "KV storage must be on a CUDA device for the CUDA kernels");
  TORCH_CHECK(storage.is_contiguous(), "KV storage must be contiguous");
}

#if VLC_HAVE_CUDA_KERNELS

cuda::DType KernelDType(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::kF32;
    case at::kHalf: return cuda::DType::kF16;
    case at::kBFloat16: return cuda::DType::kBF16;
    default: break;
  }
  TORCH_CHECK(false, "the CUDA kernels take float32, float16 or bfloat16, not ", t);
  return cuda::DType::kF32;
}

cuda::PagedLayout Layout(const at::Tensor& storage) {
  CheckCudaStorage(storage);
  cuda::PagedLayout layout;
  layout.kv_heads = static_cast<int>(storage.size(2));
  layout.page_tokens = static_cast<int>(storage.size(3));
  layout.head_dim = static_cast<int>(storage.size(4));
  layout.dtype = KernelDType(storage.scalar_type());
  return layout;
}

void Check(cuda::Error error, const char* what) {
  TORCH_CHECK(error == 0, what, ": ", cuda::ErrorString(error));
}

// The tables and descriptors one launch reads, packed into one host buffer and copied to the
// device in one go: Reserve everything, Allocate, fill Host() with Device() addresses, Copy().
// The device buffer may be released right after the launch: LibTorch's caching allocator hands
// it out again only to work queued behind the launch on the same stream.
class Upload {
 public:
  size_t Reserve(size_t bytes) {
    const size_t offset = (size_ + 15) / 16 * 16;
    size_ = offset + bytes;
    return offset;
  }
  void Allocate(const at::Device& device) {
    const int64_t n = static_cast<int64_t>(std::max<size_t>(size_, 16));
    host_ = at::empty({n}, at::TensorOptions().dtype(at::kByte));
    device_ = at::empty({n}, at::TensorOptions().dtype(at::kByte).device(device));
  }
  template <typename T>
  T* Host(size_t offset) {
    return reinterpret_cast<T*>(host_.data_ptr<uint8_t>() + offset);
  }
  template <typename T>
  const T* Device(size_t offset) const {
    return reinterpret_cast<const T*>(static_cast<const uint8_t*>(device_.data_ptr()) + offset);
  }
  // Synchronous for the host (pageable memory): the host buffer may change right after.
  void Copy() { device_.copy_(host_); }

 private:
  size_t size_ = 0;
  at::Tensor host_, device_;
};

// Reserves and later writes one page table.
size_t ReserveTable(Upload& up, const std::vector<int32_t>& pages) {
  return up.Reserve(pages.size() * sizeof(int32_t));
}
const int32_t* WriteTable(Upload& up, size_t offset, const std::vector<int32_t>& pages) {
  if (!pages.empty()) {
    std::memcpy(up.Host<int32_t>(offset), pages.data(), pages.size() * sizeof(int32_t));
  }
  return up.Device<int32_t>(offset);
}

#endif  // VLC_HAVE_CUDA_KERNELS

}  // namespace

bool CudaKernelsBuilt() {
#if VLC_HAVE_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

absl::Status CheckCudaUsable(const std::string& what) {
  if (!at::hasCUDA()) {
    if (!at::globalContext().hasCUDART()) {
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": this build's LibTorch has no CUDA (a CPU-only LibTorch, such as Debian's); "
                "build against a CUDA LibTorch (PyTorch's) or use --device cpu"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        what, ": no GPU visible (LibTorch has CUDA but sees no device: check the driver and "
              "CUDA_VISIBLE_DEVICES); use --device cpu or auto"));
  }
  if (!CudaKernelsBuilt()) {
    return absl::FailedPreconditionError(
        absl::StrCat(what, ": ", kNoKernels, "; rebuild with the CUDA toolkit"));
  }
  return absl::OkStatus();
}

void CudaPagedRead(const at::Tensor& storage, const std::vector<int32_t>& pages, int64_t length,
                   at::Tensor& k, at::Tensor& v) {
  CheckCudaStorage(storage);
  const int64_t heads = storage.size(2), page_tokens = storage.size(3), d = storage.size(4);
  TORCH_CHECK(length >= 0 && static_cast<int64_t>(pages.size()) * page_tokens >= length,
              "the page table does not cover ", length, " tokens");
  // Rows of the storage seen as [num_pages * 2 * kv_heads * page_tokens, head_dim]: K of token t
  // of head h is row ((page * 2 + 0) * kv_heads + h) * page_tokens + offset, its V at + 1 half.
  std::vector<int64_t> rows(2 * heads * length);
  for (int64_t kv = 0; kv < 2; ++kv) {
    for (int64_t h = 0; h < heads; ++h) {
      int64_t* out = rows.data() + (kv * heads + h) * length;
      for (int64_t t = 0; t < length; ++t) {
        const int64_t page = pages[t / page_tokens];
        out[t] = ((page * 2 + kv) * heads + h) * page_tokens + t % page_tokens;
      }
    }
  }
  const at::Tensor index =
      at::from_blob(rows.data(), {static_cast<int64_t>(rows.size())}, at::kLong)
          .to(storage.device());
  const at::Tensor kv = storage.view({-1, d}).index_select(0, index).view({2, heads, length, d});
  k = kv[0];
  v = kv[1];
}

void CudaPagedWrite(at::Tensor& storage, const std::vector<CudaPagedSeq>& seqs,
                    const at::Tensor& k, const at::Tensor& v) {
#if VLC_HAVE_CUDA_KERNELS
  const cuda::PagedLayout layout = Layout(storage);
  const int64_t batch = static_cast<int64_t>(seqs.size());
  TORCH_CHECK(k.dim() == 4 && k.size(0) == batch && k.size(1) == layout.kv_heads &&
                  k.size(3) == layout.head_dim && k.sizes() == v.sizes(),
              "k and v must be [", batch, ", ", layout.kv_heads, ", tokens, ", layout.head_dim,
              "], got ", k.sizes(), " and ", v.sizes());
  const int64_t t = k.size(2);
  if (batch == 0 || t == 0) return;
  const at::Tensor kc = k.to(storage.options()).contiguous();
  const at::Tensor vc = v.to(storage.options()).contiguous();
  Upload up;
  const size_t descs = up.Reserve(batch * sizeof(cuda::PagedAppendSeq));
  std::vector<size_t> tables(batch);
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(seqs[b].pages && static_cast<int64_t>(seqs[b].pages->size()) * layout.page_tokens >=
                                     seqs[b].tokens + t,
                "the page table of sequence ", b, " does not cover the appended tokens");
    tables[b] = ReserveTable(up, *seqs[b].pages);
  }
  up.Allocate(storage.device());
  auto* d = up.Host<cuda::PagedAppendSeq>(descs);
  for (int64_t b = 0; b < batch; ++b) {
    d[b].pages = WriteTable(up, tables[b], *seqs[b].pages);
    d[b].start = seqs[b].tokens;
    d[b].tokens = t;
    d[b].src = b * layout.kv_heads * t;  // [batch, kv_heads, t, d]: token index of (b, 0, 0)
  }
  up.Copy();
  Check(cuda::PagedAppend(storage.data_ptr(), layout, up.Device<cuda::PagedAppendSeq>(descs),
                          static_cast<int>(batch), t, kc.data_ptr(), vc.data_ptr(),
                          /*token_stride=*/layout.head_dim, /*head_stride=*/t * layout.head_dim,
                          /*stream=*/nullptr),
        "paged append");
#else
  TORCH_CHECK(false, kNoKernels);
#endif
}

void CudaPagedGatherInPlace(at::Tensor& storage, const std::vector<CudaGatherLayer>& layers) {
#if VLC_HAVE_CUDA_KERNELS
  const cuda::PagedLayout layout = Layout(storage);
  std::vector<const CudaGatherLayer*> work;
  // int64 [kv_heads, keep]: on the device as they are (a plan selected there), else on the host
  // to be uploaded.
  std::vector<at::Tensor> positions;
  for (const CudaGatherLayer& l : layers) {
    if (l.keep == 0) continue;  // nothing kept: nothing to move
    TORCH_CHECK(l.pages && l.positions && l.positions->dim() == 2 &&
                    l.positions->size(0) == layout.kv_heads && l.positions->size(1) == l.keep,
                "positions must be [", layout.kv_heads, ", ", l.keep, "]");
    work.push_back(&l);
    const at::Tensor& p = *l.positions;
    const bool usable = p.device() == storage.device() && p.scalar_type() == at::kLong &&
                        p.is_contiguous();
    positions.push_back(usable ? p : p.to(at::kCPU, at::kLong).contiguous());
  }
  if (work.empty()) return;
  const int64_t n = static_cast<int64_t>(work.size());
  Upload up;
  const size_t descs = up.Reserve(n * sizeof(cuda::PagedGatherLayer));
  std::vector<size_t> tables(n), pos(n);
  for (int64_t i = 0; i < n; ++i) {
    tables[i] = ReserveTable(up, *work[i]->pages);
    if (!positions[i].is_cuda()) pos[i] = up.Reserve(positions[i].numel() * sizeof(int64_t));
  }
  up.Allocate(storage.device());
  auto* d = up.Host<cuda::PagedGatherLayer>(descs);
  for (int64_t i = 0; i < n; ++i) {
    if (positions[i].is_cuda()) {
      d[i].positions = positions[i].data_ptr<int64_t>();
    } else {
      std::memcpy(up.Host<int64_t>(pos[i]), positions[i].data_ptr<int64_t>(),
                  positions[i].numel() * sizeof(int64_t));
      d[i].positions = up.Device<int64_t>(pos[i]);
    }
    d[i].src_pages = WriteTable(up, tables[i], *work[i]->pages);
    d[i].dst_pages = d[i].src_pages;  // in place: the caller frees the tail pages
    d[i].keep = work[i]->keep;
  }
  up.Copy();
  Check(cuda::PagedGather(storage.data_ptr(), layout, up.Device<cuda::PagedGatherLayer>(descs),
                          static_cast<int>(n), /*stream=*/nullptr),
        "paged gather");
#else
  TORCH_CHECK(false, kNoKernels);
#endif
}

void CudaPagedDecodeAttention(const at::Tensor& storage, const std::vector<CudaPagedSeq>& seqs,
                              const at::Tensor& q, double scale, int64_t window, at::Tensor& out) {
#if VLC_HAVE_CUDA_KERNELS
  const cuda::PagedLayout layout = Layout(storage);
  const int64_t batch = static_cast<int64_t>(seqs.size());
  TORCH_CHECK(q.dim() == 3 && q.size(0) == batch && q.size(2) == layout.head_dim &&
                  q.size(1) > 0 && q.size(1) % layout.kv_heads == 0,
              "q must be [", batch, ", a multiple of ", layout.kv_heads, ", ", layout.head_dim,
              "], got ", q.sizes());
  const at::Tensor qc = q.to(storage.options()).contiguous();
  at::Tensor o = at::empty_like(qc);
  const int heads = static_cast<int>(qc.size(1));
  int64_t max_length = 0;
  Upload up;
  const size_t descs = up.Reserve(batch * sizeof(cuda::PagedSeqView));
  std::vector<size_t> tables(batch);
  for (int64_t b = 0; b < batch; ++b) {
    TORCH_CHECK(seqs[b].pages && static_cast<int64_t>(seqs[b].pages->size()) * layout.page_tokens >=
                                     seqs[b].tokens,
                "the page table of sequence ", b, " does not cover its length");
    tables[b] = ReserveTable(up, *seqs[b].pages);
    max_length = std::max(max_length, seqs[b].tokens);
  }
  up.Allocate(storage.device());
  auto* d = up.Host<cuda::PagedSeqView>(descs);
  for (int64_t b = 0; b < batch; ++b) {
    d[b].pages = WriteTable(up, tables[b], *seqs[b].pages);
    d[b].length = seqs[b].tokens;
  }
  up.Copy();
  const size_t ws = cuda::PagedDecodeWorkspaceBytes(layout, static_cast<int>(batch), heads,
                                                    max_length, window);
  at::Tensor workspace;
  if (ws > 0) {
    workspace = at::empty({static_cast<int64_t>(ws)}, storage.options().dtype(at::kByte));
  }
  Check(cuda::PagedDecodeAttention(storage.data_ptr(), layout,
                                   up.Device<cuda::PagedSeqView>(descs), static_cast<int>(batch),
                                   max_length, qc.data_ptr(), heads, scale, window, o.data_ptr(),
                                   ws > 0 ? workspace.data_ptr() : nullptr, ws,
                                   /*stream=*/nullptr),
        "paged decode attention");
  out = o.to(q.scalar_type());
#else
  TORCH_CHECK(false, kNoKernels);
#endif
}

at::Tensor CudaTopKWithRecent(const at::Tensor& scores_in, int64_t keep, int64_t recent) {
#if VLC_HAVE_CUDA_KERNELS
  TORCH_CHECK(scores_in.is_cuda() && scores_in.dim() == 2,
              "top-k selection: scores must be [kv_heads, m] on a CUDA device, got ",
              scores_in.sizes());
  const at::Tensor scores = scores_in.to(at::kFloat).contiguous();
  const int64_t kv_heads = scores.size(0), m = scores.size(1);
  at::Tensor out = at::empty({kv_heads, keep}, scores.options().dtype(at::kLong));
  if (keep == 0 || kv_heads == 0) return out;
  const size_t ws = cuda::TopKWithRecentWorkspaceBytes(kv_heads, m, keep);
  at::Tensor workspace;
  if (ws > 0) workspace = at::empty({static_cast<int64_t>(ws)}, scores.options().dtype(at::kByte));
  Check(cuda::TopKWithRecent(scores.data_ptr<float>(), kv_heads, m, /*score_stride=*/0, keep,
                             recent, out.data_ptr<int64_t>(),
                             ws > 0 ? workspace.data_ptr() : nullptr, ws, /*stream=*/nullptr),
        "top-k selection");
  return out;
#else
  TORCH_CHECK(false, kNoKernels);
  return {};
#endif
}

void CudaObserveLayer(const at::Tensor& q_in, const at::Tensor& k_in, double scale,
                      int64_t window, const ObservationSpec& spec, LayerObservation* obs) {
#if VLC_HAVE_CUDA_KERNELS
  TORCH_CHECK(q_in.is_cuda() && k_in.device() == q_in.device() &&
                  q_in.scalar_type() == k_in.scalar_type(),
              "observation: q and k must be on one CUDA device in one dtype");
  TORCH_CHECK(q_in.dim() == 3 && k_in.dim() == 3 && q_in.size(1) == k_in.size(1) &&
                  q_in.size(2) == k_in.size(2) && k_in.size(0) > 0 &&
                  q_in.size(0) % k_in.size(0) == 0,
              "observation: q [heads, m, d] and k [kv_heads, m, d], got ", q_in.sizes(), " and ",
              k_in.sizes());
  const at::Tensor q = q_in.stride(2) == 1 ? q_in : q_in.contiguous();
  const at::Tensor k = k_in.stride(2) == 1 ? k_in : k_in.contiguous();
  cuda::ObservationArgs a;
  a.heads = q.size(0);
  a.kv_heads = k.size(0);
  a.m = q.size(1);
  a.head_dim = q.size(2);
  a.query_begin = std::clamp<int64_t>(spec.query_begin, 0, a.m);
  a.window = window;
  a.scale = scale;
  a.sparsity = spec.sparsity;
  a.threshold = spec.threshold;
  a.dtype = KernelDType(q.scalar_type());
  a.q_head_stride = q.stride(0);
  a.q_row_stride = q.stride(1);
  a.k_head_stride = k.stride(0);
  a.k_row_stride = k.stride(1);
  const auto on = q.options();
  at::Tensor col_sums = at::empty({a.heads, a.m}, on.dtype(at::kFloat));
  at::Tensor sparse = at::empty({a.heads}, on.dtype(at::kLong));
  const size_t ws = cuda::ObservationWorkspaceBytes(a);
  at::Tensor workspace;
  if (ws > 0) workspace = at::empty({static_cast<int64_t>(ws)}, on.dtype(at::kByte));
  Check(cuda::ObserveLayer(a, q.data_ptr(), k.data_ptr(), col_sums.data_ptr<float>(),
                           spec.sparsity ? sparse.data_ptr<int64_t>() : nullptr,
                           ws > 0 ? workspace.data_ptr() : nullptr, ws, /*stream=*/nullptr),
        "prefill observation");
  obs->col_sums = col_sums;
  obs->sparse_counts = spec.sparsity ? sparse : at::Tensor();
  obs->causal_entries = cuda::ObservationCausalEntries(a.m, a.query_begin, a.window);
#else
  TORCH_CHECK(false, kNoKernels);
#endif
}

}  // namespace vlc::kvcache
