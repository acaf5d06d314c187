// Shared by the CUDA kernels of the paged KV cache (kvcache/cuda/*.cu) and their callers: the
// element types the cache stores, and how launch errors come back.
//
// The kernels' host functions take raw device pointers, sizes and a cudaStream_t and return the
// cudaError_t of their launch (cudaSuccess, or the first error met: an invalid configuration, a
// missing device). They never synchronise the stream; a caller that needs the result on the host
// synchronises itself. This header is plain C++ (no CUDA headers): callers compiled by the host
// compiler include it, and cudaStream_t is passed as an opaque pointer.
#pragma once

#include <cstdint>

namespace vlc::kvcache::cuda {

// The element type of K/V storage, queries and outputs; accumulation is always float32.
enum class DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

// cudaStream_t without the CUDA headers (it is a pointer to an opaque struct); nullptr is the
// legacy default stream.
using Stream = void*;

// cudaError_t as an int (0 = cudaSuccess), so that host-only code can hold it.
using Error = int;

// A readable name for an Error ("cudaErrorNoDevice: no CUDA-capable device is detected").
const char* ErrorString(Error error);

// Devices visible to this process; 0 when there is no driver or no device (never an error).
int DeviceCount();

}  // namespace vlc::kvcache::cuda
