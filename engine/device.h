// Where the engine computes and in which element type: the --device and --dtype options, resolved
// once at load against what this build and machine offer. The CPU in float32 is the default and
// the reference; "cuda" puts the weights, the activations and the KV page pool on the GPU (GEMMs
// through LibTorch, i.e. cuBLAS; the cache through the kernels of kvcache/cuda/).
#pragma once

#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace vlc::engine {

// How the decoder's matrices are stored. kInt8: weight-only int8, symmetric per output channel
// (engine/cpu_linear.h), quantized once at load from the float checkpoint; activations, the
// vision tower, norms and embeddings keep `dtype`. kFloat16: the matrices (and the LM head) in
// IEEE half precision, widened to float32 in registers by the decode kernel (F16C) and per call
// for a prefill; what `--dtype float16` means on the CPU, whose LibTorch lacks half-precision
// arithmetic, so `dtype` (activations, the rest of the model, the KV cache) is float32. CPU only.
enum class WeightQuantization { kNone, kInt8, kFloat16 };

struct ComputeTarget {
  at::Device device = at::kCPU;
  at::ScalarType dtype = at::kFloat;
  WeightQuantization quantize = WeightQuantization::kNone;
};

// `device`: "cpu", "cuda" (the current GPU) or "auto" (cuda when LibTorch sees a GPU and this
// build has the CUDA kernels, else cpu). `dtype`: "float32", "bfloat16", "float16" or "auto"
// (float32 on the CPU, bfloat16 on a GPU); float16 on the CPU is float16 weights with float32
// activations (WeightQuantization::kFloat16). INVALID_ARGUMENT for an unknown name;
// FAILED_PRECONDITION, saying why, when cuda is asked for
// and cannot run here (this build's LibTorch has no CUDA, no GPU visible, no CUDA kernels).
// `quantize`: "none" or "int8"; int8 with a cuda device, or with float16 on the CPU (two weight
// formats), is INVALID_ARGUMENT.
absl::StatusOr<ComputeTarget> ResolveComputeTarget(const std::string& device,
                                                   const std::string& dtype,
                                                   const std::string& quantize = "none");

// The names the options accept, for help texts and config checks.
const std::vector<std::string>& DeviceNames();  // cpu, cuda, auto
const std::vector<std::string>& DTypeNames();   // auto, float32, bfloat16, float16
const std::vector<std::string>& QuantizeNames();  // none, int8

// "cpu float32", "cuda:0 bfloat16", "cpu float32 int8-weights": for logs and answers.
std::string ComputeTargetName(const ComputeTarget& target);

// Threads for the CPU's work: LibTorch's (OpenMP) and, where it is the BLAS, OpenBLAS's, which
// otherwise keeps one per core whatever LibTorch is told. n >= 1.
void SetCpuThreads(int n);

}  // namespace vlc::engine
