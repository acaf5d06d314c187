#include <cuda_runtime.h>

#include "kvcache/cuda/cuda_common.h"

namespace vlc::kvcache::cuda {

const char* ErrorString(Error error) {
  return cudaGetErrorString(static_cast<cudaError_t>(error));
}

int DeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error for later calls
    return 0;
  }
  return n;
}

}  // namespace vlc::kvcache::cuda
