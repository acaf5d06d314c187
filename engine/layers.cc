#include "engine/layers.h"

#include <ATen/ATen.h>

namespace vlc::engine {

at::Tensor RmsNorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  if (x.scalar_type() != at::kFloat) {
    // Half precision: normalised in float32, then scaled in x's dtype, as transformers does.
    auto xf = x.to(at::kFloat);
    auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
    return (xf * at::rsqrt(var + eps)).to(x.scalar_type()) * w;
  }
  auto var = x.pow(2).mean(-1, /*keepdim=*/true);
  return x * at::rsqrt(var + eps) * w;
}

at::Tensor Activation(const at::Tensor& x, const std::string& act) {
  if (act == "quick_gelu") return x * at::sigmoid(x * 1.702);
  if (act == "gelu") return at::gelu(x);
  if (act == "gelu_pytorch_tanh") return at::gelu(x, "tanh");
  if (act == "relu") return at::relu(x);
  return at::silu(x);  // "silu": the config parser admits nothing else
}

at::Tensor ApplyRope(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.slice(-1, 0, half);
  auto x2 = x.slice(-1, half);
  return x * cos + at::cat({-x2, x1}, -1) * sin;
}

}  // namespace vlc::engine
