// Helpers the model benchmarks share: timing and medians (bench/timing.h), and random-weight
// models whose text layers have the shape under test (the vision tower is the smallest valid one;
// decode never runs it).
#pragma once

#include <cstdlib>
#include <iostream>
#include <memory>
#include <vector>

#include "bench/timing.h"
#include "engine/model.h"
#include "tools/random_weights.h"

namespace vlc::bench {

inline engine::LlavaConfig TextModelConfig(int hidden, int intermediate, int layers, int heads,
                                           int kv_heads, int vocab) {
  engine::LlavaConfig c;
  c.vision.hidden_size = 64;
  c.vision.intermediate_size = 128;
  c.vision.num_hidden_layers = 1;
  c.vision.num_attention_heads = 2;
  c.vision.image_size = 32;
  c.vision.patch_size = 16;
  c.vision_feature_layer = -1;
  c.text.hidden_size = hidden;
  c.text.intermediate_size = intermediate;
  c.text.num_hidden_layers = layers;
  c.text.num_attention_heads = heads;
  c.text.num_key_value_heads = kv_heads;
  c.text.head_dim = hidden / heads;
  c.text.vocab_size = vocab;
  c.image_token_index = vocab - 1;
  return c;
}

// Exits with the error when the config is invalid: a benchmark has nothing to fall back on.
inline std::unique_ptr<engine::LlavaModel> RandomModel(const engine::LlavaConfig& c,
                                                       const engine::ComputeTarget& target = {}) {
  engine::WeightMap w;
  for (auto& [name, t] : tools::RandomLlavaWeights(c, 1)) w[name] = std::move(t);
  auto m = engine::LlavaModel::FromWeights(c, std::move(w), target);
  if (!m.ok()) {
    std::cerr << m.status() << "\n";
    std::exit(1);
  }
  return std::move(m).value();
}

}  // namespace vlc::bench
