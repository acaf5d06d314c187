// The model's configuration, read from a Hugging Face LLaVA `config.json` (and the image
// processor's `preprocessor_config.json`). Fields absent from the file take transformers' own
// defaults for that model type, so real checkpoints (whose configs list only non-default values)
// load unchanged.
#pragma once

#include <array>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "absl/status/statusor.h"

namespace vlc::engine {

// CLIPVisionConfig.
struct VisionConfig {
  int hidden_size = 768;
  int intermediate_size = 3072;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int num_channels = 3;
  int image_size = 224;
  int patch_size = 32;
  double layer_norm_eps = 1e-5;
  std::string hidden_act = "quick_gelu";  // "quick_gelu" or "gelu"

  int num_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int head_dim() const { return hidden_size / num_attention_heads; }
};

// LlamaConfig / MistralConfig.
struct TextConfig {
  std::string model_type = "llama";  // "llama" or "mistral"
  int vocab_size = 32000;
  int hidden_size = 4096;
  int intermediate_size = 11008;
  int num_hidden_layers = 32;
  int num_attention_heads = 32;
  int num_key_value_heads = 32;  // defaults to num_attention_heads when absent
  int head_dim = 128;            // defaults to hidden_size / num_attention_heads when absent
  int max_position_embeddings = 2048;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-6;
  std::string hidden_act = "silu";
  int sliding_window = 0;  // 0: none (Mistral's default is 4096; null in the file means none)
  bool tie_word_embeddings = false;
  int bos_token_id = 1;
  int eos_token_id = 2;
};

struct LlavaConfig {
  VisionConfig vision;
  TextConfig text;
  int image_token_index = 32000;
  int vision_feature_layer = -2;                          // index into hidden states (0 = embeddings)
  std::string vision_feature_select_strategy = "default";  // "default" drops CLS, "full" keeps it
  std::string projector_hidden_act = "gelu";
  bool multimodal_projector_bias = true;

  // Visual tokens one image (or one video frame) becomes in the language model's prompt.
  int visual_tokens_per_image() const {
    return vision.num_patches() + (vision_feature_select_strategy == "full" ? 1 : 0);
  }

  // INVALID_ARGUMENT naming the field for unsupported or inconsistent values (heads not dividing
  // the hidden size, GQA groups not integral, unknown activation or strategy, feature layer out of
  // range, image size not a multiple of the patch size, ...).
  static absl::StatusOr<LlavaConfig> FromJson(const nlohmann::json& j);
  static absl::StatusOr<LlavaConfig> FromFile(const std::string& path);
  // A config.json transformers' LlavaConfig reads back as this config.
  nlohmann::json ToJson() const;
};

// CLIPImageProcessor settings (preprocessor_config.json); CLIP's defaults when the file is absent.
struct PreprocessorConfig {
  int shortest_edge = 224;
  int crop_height = 224;
  int crop_width = 224;
  bool do_resize = true;
  bool do_center_crop = true;
  bool do_rescale = true;
  bool do_normalize = true;
  double rescale_factor = 1.0 / 255.0;
  std::array<double, 3> image_mean = {0.48145466, 0.4578275, 0.40821073};
  std::array<double, 3> image_std = {0.26862954, 0.26130258, 0.27577711};

  static absl::StatusOr<PreprocessorConfig> FromJson(const nlohmann::json& j);
  // Reads `path`; when the file does not exist, CLIP's defaults sized to `image_size`.
  static absl::StatusOr<PreprocessorConfig> FromFileOrDefault(const std::string& path,
                                                              int image_size);
  nlohmann::json ToJson() const;
};

}  // namespace vlc::engine
