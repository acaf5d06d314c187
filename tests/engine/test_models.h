// Small random LLaVA models built in memory, for the suites that test the model and generation.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/generator.h"
#include "engine/model.h"
#include "kvcache/page_pool.h"
#include "tools/random_weights.h"

namespace vlc::engine {

// 2 vision layers (16 patches), a GQA decoder (4 query, 2 KV heads) of `text_layers` layers.
inline LlavaConfig SmallConfig(const std::string& text_type = "llama", int sliding_window = 0,
                               int text_layers = 2) {
  LlavaConfig c;
  c.vision.hidden_size = 32;
  c.vision.intermediate_size = 64;
  c.vision.num_hidden_layers = 2;
  c.vision.num_attention_heads = 2;
  c.vision.image_size = 32;
  c.vision.patch_size = 8;
  c.text.model_type = text_type;
  c.text.vocab_size = 96;
  c.text.hidden_size = 64;
  c.text.intermediate_size = 128;
  c.text.num_hidden_layers = text_layers;
  c.text.num_attention_heads = 4;
  c.text.num_key_value_heads = 2;
  c.text.head_dim = 16;
  c.text.sliding_window = sliding_window;
  c.image_token_index = 95;
  return c;
}

// The same weights for the same seed whatever the target (drawn in float32, then converted).
inline std::unique_ptr<LlavaModel> RandomModel(const LlavaConfig& c, uint64_t seed = 7,
                                               float std = 0.2f, const ComputeTarget& target = {}) {
  WeightMap w;
  for (auto& [name, t] : tools::RandomLlavaWeights(c, seed, std)) w[name] = t;
  auto m = LlavaModel::FromWeights(c, std::move(w), target);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(m).value() : nullptr;
}

// A page pool shaped for `c`, with small pages so that short prompts cross page boundaries.
// On a GPU target the pool holds the target's dtype there, as Pipeline::Load makes it.
inline std::unique_ptr<kvcache::PagePool> Pool(const LlavaConfig& c,
                                               int64_t bytes = int64_t{64} << 20,
                                               const ComputeTarget& target = {}) {
  kvcache::PagePoolOptions o;
  o.capacity_bytes = bytes;
  o.page_tokens = 4;
  o.kv_heads = c.text.num_key_value_heads;
  o.head_dim = c.text.head_dim;
  o.device = target.device;
  o.dtype = target.device.is_cuda() ? target.dtype : at::kFloat;
  return std::move(kvcache::PagePool::Create(o)).value();
}

// An image prompt: text, two images' tokens (random pictures, the same for every call), text; 44
// tokens with SmallConfig, compressed by `policy` at `budget`.
inline SequenceSpec ImagePromptSpec(const LlavaModel& m, const std::string& policy, double budget) {
  const auto& c = m.config();
  SequenceSpec s;
  s.prompt_ids = {1, 7, 9};
  for (int i = 0; i < 2 * c.visual_tokens_per_image(); ++i) {
    s.prompt_ids.push_back(c.image_token_index);
  }
  for (int i = 0; i < 9; ++i) s.prompt_ids.push_back(3 + (i * 7) % 80);
  at::manual_seed(11);
  s.visual = *m.EncodeImages(at::randn({2, 3, 32, 32}));
  s.cache_policy.name = policy;
  s.cache_policy.budget = budget;
  return s;
}

}  // namespace vlc::engine
