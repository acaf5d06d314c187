#include "tools/random_weights.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"

namespace vlc::tools {

std::vector<std::pair<std::string, at::Tensor>> RandomLlavaWeights(const engine::LlavaConfig& c,
                                                                   uint64_t seed, float init_std,
                                                                   at::ScalarType dtype) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  std::vector<std::pair<std::string, at::Tensor>> w;
  auto randn = [&](const std::string& name, std::vector<int64_t> shape) {
    w.emplace_back(name, at::normal(0.0, init_std, shape, gen).to(dtype));
  };
  auto ones = [&](const std::string& name, int64_t n) {
    w.emplace_back(name, at::ones({n}, at::TensorOptions().dtype(dtype)));
  };
  auto zeros = [&](const std::string& name, int64_t n) {
    w.emplace_back(name, at::zeros({n}, at::TensorOptions().dtype(dtype)));
  };

  const auto& v = c.vision;
  const int64_t hv = v.hidden_size, iv = v.intermediate_size;
  randn("vision.embeddings.class_embedding", {hv});
  randn("vision.embeddings.patch_embedding.weight", {hv, v.num_channels, v.patch_size, v.patch_size});
  randn("vision.embeddings.position_embedding.weight", {v.num_patches() + 1, hv});
  ones("vision.pre_layrnorm.weight", hv);
  zeros("vision.pre_layrnorm.bias", hv);
  for (int i = 0; i < v.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("vision.encoder.layers.", i, ".");
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      randn(absl::StrCat(p, "self_attn.", proj, ".weight"), {hv, hv});
      randn(absl::StrCat(p, "self_attn.", proj, ".bias"), {hv});
    }
    ones(p + "layer_norm1.weight", hv);
    zeros(p + "layer_norm1.bias", hv);
    randn(p + "mlp.fc1.weight", {iv, hv});
    randn(p + "mlp.fc1.bias", {iv});
    randn(p + "mlp.fc2.weight", {hv, iv});
    randn(p + "mlp.fc2.bias", {hv});
    ones(p + "layer_norm2.weight", hv);
    zeros(p + "layer_norm2.bias", hv);
  }
  ones("vision.post_layernorm.weight", hv);
  zeros("vision.post_layernorm.bias", hv);

  const auto& t = c.text;
  const int64_t ht = t.hidden_size, hd = t.head_dim;
  randn("projector.linear_1.weight", {ht, hv});
  if (c.multimodal_projector_bias) randn("projector.linear_1.bias", {ht});
  randn("projector.linear_2.weight", {ht, ht});
  if (c.multimodal_projector_bias) randn("projector.linear_2.bias", {ht});
  randn("lm.embed_tokens.weight", {t.vocab_size, ht});
  for (int i = 0; i < t.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("lm.layers.", i, ".");
    randn(p + "self_attn.q_proj.weight", {t.num_attention_heads * hd, ht});
    randn(p + "self_attn.k_proj.weight", {t.num_key_value_heads * hd, ht});
    randn(p + "self_attn.v_proj.weight", {t.num_key_value_heads * hd, ht});
    randn(p + "self_attn.o_proj.weight", {ht, t.num_attention_heads * hd});
    randn(p + "mlp.gate_proj.weight", {t.intermediate_size, ht});
    randn(p + "mlp.up_proj.weight", {t.intermediate_size, ht});
    randn(p + "mlp.down_proj.weight", {ht, t.intermediate_size});
    ones(p + "input_layernorm.weight", ht);
    ones(p + "post_attention_layernorm.weight", ht);
  }
  ones("lm.norm.weight", ht);
  if (!t.tie_word_embeddings) randn("lm_head.weight", {t.vocab_size, ht});
  return w;
}

std::string HfWeightName(const std::string& canonical, bool new_layout) {
  auto rest = [&](size_t n) { return canonical.substr(n); };
  if (absl::StartsWith(canonical, "vision.")) {
    return (new_layout ? "model.vision_tower.vision_model." : "vision_tower.vision_model.") +
           rest(7);
  }
  if (absl::StartsWith(canonical, "projector.")) {
    return (new_layout ? "model.multi_modal_projector." : "multi_modal_projector.") + rest(10);
  }
  if (absl::StartsWith(canonical, "lm.")) {
    return (new_layout ? "model.language_model." : "language_model.model.") + rest(3);
  }
  if (canonical == "lm_head.weight") {
    return new_layout ? "lm_head.weight" : "language_model.lm_head.weight";
  }
  return canonical;
}

}  // namespace vlc::tools
