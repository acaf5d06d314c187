// Random LLaVA weights for any config, under the engine's canonical names (weights.h), for tiny
// test checkpoints and for benchmarks of real-sized shapes that nothing here can download.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "engine/config.h"

namespace vlc::tools {

// Every tensor LlavaModel::FromWeights needs (plus the vision tower's post_layernorm, which real
// checkpoints carry and the model ignores), in a fixed order, drawn from N(0, init_std) with a
// generator seeded by `seed`; norm weights are 1 and norm biases 0. Each tensor is drawn in float32
// and stored as `dtype` at once, so a 7B-shaped model in bfloat16 never holds its float32 copy.
std::vector<std::pair<std::string, at::Tensor>> RandomLlavaWeights(
    const engine::LlavaConfig& c, uint64_t seed, float init_std = 0.02f,
    at::ScalarType dtype = at::kFloat);

// The Hugging Face key of a canonical name in the old (language_model.model.*) or new
// (model.language_model.*) layout: the inverse of engine::CanonicalWeightName.
std::string HfWeightName(const std::string& canonical, bool new_layout);

}  // namespace vlc::tools
