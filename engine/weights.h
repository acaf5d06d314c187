// Loads a LLaVA checkpoint's weights from `model.safetensors` or the shards listed in
// `model.safetensors.index.json`, under canonical names that do not depend on which key layout
// transformers wrote:
//   vision.<...>        vision_tower.vision_model.<...>     | model.vision_tower.vision_model.<...>
//                       (transformers 5 saves vision_tower.<...>, without vision_model.)
//   projector.<...>     multi_modal_projector.<...>         | model.multi_modal_projector.<...>
//   lm.<...>            language_model.model.<...>          | model.language_model.<...>
//   lm_head.weight      language_model.lm_head.weight       | lm_head.weight
#pragma once

#include <string>
#include <unordered_map>

#include <ATen/core/Tensor.h>

#include "absl/status/statusor.h"

namespace vlc::engine {

// Canonical name of a Hugging Face key, or "" for keys the engine does not use.
std::string CanonicalWeightName(const std::string& hf_key);

using WeightMap = std::unordered_map<std::string, at::Tensor>;

// All tensors of the checkpoint in `dir`, converted to `dtype`. Errors name the file (and the
// tensor) at fault: missing files, a shard index pointing at a missing shard, corrupt headers,
// the same canonical name appearing twice.
absl::StatusOr<WeightMap> LoadCheckpointWeights(const std::string& dir,
                                                at::ScalarType dtype = at::kFloat);

// The same tensors in their stored dtypes, mapped in place (SafetensorsFile::View): nothing is
// read or copied until a tensor is, and a tensor's pages leave resident memory when it is
// destroyed. For loading a model one tensor at a time: copy each out in the dtype it is served
// in and drop the view, so that the process never holds the whole checkpoint twice.
absl::StatusOr<WeightMap> MapCheckpointWeights(const std::string& dir);

}  // namespace vlc::engine
