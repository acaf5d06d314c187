// The elementwise pieces of the LLaVA forward that the engine and the trainer share, so that a
// trained checkpoint computes in the engine exactly what it computed in training.
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

namespace vlc::engine {

// x * rsqrt(mean(x^2) + eps) * w over the last dimension (Llama's RMSNorm); float16/bfloat16
// inputs are normalised in float32.
at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps);

// A Hugging Face activation by name: quick_gelu, gelu, gelu_pytorch_tanh, relu, silu.
at::Tensor Activation(const at::Tensor& x, const std::string& act);

// HF's rotate_half RoPE: x [..., d] rotated by the angles of `cos`/`sin` ([..., d], broadcast).
at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace vlc::engine
