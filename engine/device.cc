#include "engine/device.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/process_env.h"
#include "kvcache/cuda_ops.h"

namespace vlc::engine {
namespace {

absl::Status Unknown(const char* option, const std::string& value,
                     const std::vector<std::string>& allowed) {
  return absl::InvalidArgumentError(absl::StrCat(option, " must be one of ",
                                                 absl::StrJoin(allowed, ", "), ", got \"", value,
                                                 "\""));
}

const char* DTypeName(at::ScalarType t) {
  switch (t) {
    case at::kBFloat16: return "bfloat16";
    case at::kHalf: return "float16";
    default: return "float32";
  }
}

}  // namespace

const std::vector<std::string>& DeviceNames() {
  static const std::vector<std::string> names = {"cpu", "cuda", "auto"};
  return names;
}

const std::vector<std::string>& DTypeNames() {
  static const std::vector<std::string> names = {"auto", "float32", "bfloat16", "float16"};
  return names;
}

const std::vector<std::string>& QuantizeNames() {
  static const std::vector<std::string> names = {"none", "int8"};
  return names;
}

absl::StatusOr<ComputeTarget> ResolveComputeTarget(const std::string& device,
                                                   const std::string& dtype,
                                                   const std::string& quantize) {
  ComputeTarget target;
  if (device == "cuda") {
    if (absl::Status s = kvcache::CheckCudaUsable("--device cuda"); !s.ok()) return s;
    target.device = at::Device(at::kCUDA, 0);
  } else if (device == "auto") {
    if (kvcache::CheckCudaUsable("--device auto").ok()) target.device = at::Device(at::kCUDA, 0);
  } else if (device != "cpu") {
    return Unknown("--device", device, DeviceNames());
  }
  if (dtype == "auto") {
    target.dtype = target.device.is_cuda() ? at::kBFloat16 : at::kFloat;
  } else if (dtype == "float32") {
    target.dtype = at::kFloat;
  } else if (dtype == "bfloat16") {
    target.dtype = at::kBFloat16;
  } else if (dtype == "float16") {
    if (target.device.is_cuda()) {
      target.dtype = at::kHalf;
    } else {
      // LibTorch's CPU arithmetic lacks float16: the weights are stored in it and widened as
      // they are read; everything else computes in float32.
      target.dtype = at::kFloat;
      target.quantize = WeightQuantization::kFloat16;
    }
  } else {
    return Unknown("--dtype", dtype, DTypeNames());
  }
  if (quantize == "int8") {
    if (target.device.is_cuda()) {
      return absl::InvalidArgumentError(
          "--quantize int8 runs on the CPU only (its kernel is the CPU decode kernel); use "
          "--device cpu, or --quantize none on cuda");
    }
    if (target.quantize == WeightQuantization::kFloat16) {
      return absl::InvalidArgumentError(
          "--quantize int8 with --dtype float16 on the CPU asks for two weight formats; use "
          "--dtype float32 or bfloat16 with --quantize int8, or --dtype float16 alone");
    }
    target.quantize = WeightQuantization::kInt8;
  } else if (quantize != "none") {
    return Unknown("--quantize", quantize, QuantizeNames());
  }
  return target;
}

std::string ComputeTargetName(const ComputeTarget& target) {
  return absl::StrCat(target.device.str(), " ", DTypeName(target.dtype),
                      target.quantize == WeightQuantization::kInt8      ? " int8-weights"
                      : target.quantize == WeightQuantization::kFloat16 ? " float16-weights"
                                                                        : "");
}

void SetCpuThreads(int n) {
  at::set_num_threads(n);
  SetOpenBlasThreads(n);
}

}  // namespace vlc::engine
