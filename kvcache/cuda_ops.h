// The paged cache's operations on CUDA storage, at the level of cpu_ops.h: at::Tensor wrappers of
// the kernels in kvcache/cuda/ (raw device pointers), which PagedKvCache calls when its pool lives
// on a GPU, and the prefill observation kernel for the model.
//
// Page tables live on the host (PagedKvCache's block tables); each call packs the tables and the
// kernels' descriptor arrays it needs into one buffer and uploads it (a synchronous copy), so the
// device always sees the tables as they are at the call. Kernels run on the legacy default stream
// (nullptr): that is LibTorch's current stream unless a caller installs a stream guard (none does
// here), so they are ordered with the LibTorch work before and after them without any sync.
//
// This file compiles with or without the kernels (VLC_HAVE_CUDA_KERNELS, set by cmake/cuda.cmake
// when nvcc builds kvcache/cuda/); without them every function but the checks throws "built
// without the CUDA kernels". Errors are thrown (c10::Error); the cache turns them into a Status.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/status.h"
#include "kvcache/plan.h"

namespace vlc::kvcache {

// Whether this build has the CUDA kernels.
bool CudaKernelsBuilt();

// OK when CUDA storage and the model can run here; otherwise FAILED_PRECONDITION saying why, in
// this order: this build's LibTorch has no CUDA, no GPU is visible, vlcache was built without the
// CUDA kernels. `what` starts the message ("--device cuda", "KV page pool on cuda").
absl::Status CheckCudaUsable(const std::string& what);

// One sequence's pages in one layer and the token index the call starts at (append) or its
// length (attention, read).
struct CudaPagedSeq {
  const std::vector<int32_t>* pages = nullptr;
  int64_t tokens = 0;  // append: index of the first new token; read, attention: the length
};

// Writes k, v [batch, kv_heads, t, head_dim] (any floating dtype; converted to the storage's):
// sequence b's t tokens at token indices [seqs[b].tokens, + t) of its pages, which must already
// cover them. One launch for the batch.
void CudaPagedWrite(at::Tensor& storage, const std::vector<CudaPagedSeq>& seqs,
                    const at::Tensor& k, const at::Tensor& v);

// Tokens [0, length) of one sequence as contiguous k, v [kv_heads, length, head_dim] in the
// storage's dtype, on its device.
void CudaPagedRead(const at::Tensor& storage, const std::vector<int32_t>& pages, int64_t length,
                   at::Tensor& k, at::Tensor& v);

// In place, for every listed layer: token i becomes the old token positions[h][i] of KV head h
// (the plan's positions, checked by the caller: ascending per head). One launch for all layers;
// positions already on the storage's device as contiguous int64 are read where they are.
struct CudaGatherLayer {
  const std::vector<int32_t>* pages = nullptr;
  const at::Tensor* positions = nullptr;  // [kv_heads, keep], integral, any device
  int64_t keep = 0;
};
void CudaPagedGatherInPlace(at::Tensor& storage, const std::vector<CudaGatherLayer>& layers);

// q [batch, heads, head_dim] -> out [batch, heads, head_dim] (q's dtype and device): sequence b
// attends to its seqs[b].tokens tokens (the last `window` when window > 0).
void CudaPagedDecodeAttention(const at::Tensor& storage, const std::vector<CudaPagedSeq>& seqs,
                              const at::Tensor& q, double scale, int64_t window, at::Tensor& out);

// kvcache::TopKWithRecent on scores [kv_heads, m] on a CUDA device (the radix-select kernel of
// kvcache/cuda/select.h): positions [kv_heads, keep], int64 on the device, exactly the CPU's.
at::Tensor CudaTopKWithRecent(const at::Tensor& scores, int64_t keep, int64_t recent);

// A prefill observation on the device (kvcache/cuda/observation.h): q [heads, m, head_dim] and
// k [kv_heads, m, head_dim] of a whole prompt on a CUDA device (head_dim contiguous; other
// strides any), the same dtype (float32, float16 or bfloat16). Fills obs like CausalAttention
// does, its tensors on the device.
void CudaObserveLayer(const at::Tensor& q, const at::Tensor& k, double scale, int64_t window,
                      const ObservationSpec& spec, LayerObservation* obs);

}  // namespace vlc::kvcache
