// Test helpers for the CUDA kernels: skip where no GPU is visible, and move CPU tensors (the
// reference's inputs and outputs) to and from device buffers without LibTorch's CUDA.
#pragma once

#include <ATen/ATen.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>

#include "kvcache/cuda/cuda_common.h"

// The only skip these suites have: the GPU half of each test needs a device.
#define VLC_REQUIRE_CUDA_DEVICE()                                                      \
  do {                                                                                 \
    if (::vlc::kvcache::cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device here"; \
  } while (0)

#define VLC_CUDA_OK(expr)                                                      \
  do {                                                                         \
    const cudaError_t vlc_err_ = (expr);                                       \
    ASSERT_EQ(vlc_err_, cudaSuccess) << #expr << ": " << cudaGetErrorString(vlc_err_); \
  } while (0)

namespace vlc::kvcache::cuda::testing {

// A device allocation holding a copy of a contiguous CPU tensor (any dtype), freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0 && cudaMalloc(&ptr_, bytes_) != cudaSuccess) ptr_ = nullptr;
  }
  static DeviceBuffer From(const at::Tensor& cpu) {
    at::Tensor c = cpu.contiguous();
    DeviceBuffer b(static_cast<size_t>(c.nbytes()));
    if (b.ptr_ != nullptr) cudaMemcpy(b.ptr_, c.data_ptr(), b.bytes_, cudaMemcpyHostToDevice);
    return b;
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }

  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

  // Copies the buffer back into a new CPU tensor of `sizes` and `dtype` (after a synchronize).
  at::Tensor ToCpu(at::IntArrayRef sizes, at::ScalarType dtype) const {
    cudaDeviceSynchronize();
    at::Tensor out = at::empty(sizes, at::TensorOptions().dtype(dtype));
    cudaMemcpy(out.data_ptr(), ptr_, static_cast<size_t>(out.nbytes()), cudaMemcpyDeviceToHost);
    return out;
  }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace vlc::kvcache::cuda::testing
