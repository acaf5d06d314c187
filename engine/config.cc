#include "engine/config.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace vlc::engine {
namespace {

using nlohmann::json;

// Readers of optional fields. A field that is absent or null keeps the caller's default, which
// matches transformers for the fields read this way (a null head_dim or num_key_value_heads means
// "derive it"); fields where null has its own meaning (sliding_window) are handled by the caller.
// `name` is the dotted path of the field, used in every error.

absl::Status ReadInt(const json& obj, const char* key, const std::string& name, int* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  double value;
  if (it->is_number_unsigned()) {
    value = static_cast<double>(it->get<uint64_t>());
  } else if (it->is_number_integer()) {
    value = static_cast<double>(it->get<int64_t>());
  } else if (it->is_number_float() && std::trunc(it->get<double>()) == it->get<double>()) {
    // Some tools serialize integral sizes as 4096.0; transformers accepts them.
    value = it->get<double>();
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected an integer, got ", it->dump()));
  }
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", it->dump(), " is out of range"));
  }
  *out = static_cast<int>(value);
  return absl::OkStatus();
}

absl::Status ReadDouble(const json& obj, const char* key, const std::string& name, double* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a number, got ", it->dump()));
  }
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status ReadBool(const json& obj, const char* key, const std::string& name, bool* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected true or false, got ", it->dump()));
  }
  *out = it->get<bool>();
  return absl::OkStatus();
}

absl::Status ReadString(const json& obj, const char* key, const std::string& name,
                        std::string* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": expected a string, got ", it->dump()));
  }
  *out = it->get<std::string>();
  return absl::OkStatus();
}

absl::Status RequireOneOf(const std::string& name, const std::string& value,
                          std::initializer_list<const char*> allowed) {
  for (const char* a : allowed) {
    if (value == a) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      name, ": unsupported value \"", value, "\" (supported: ", absl::StrJoin(allowed, ", "), ")"));
}

absl::Status RequirePositive(const std::string& name, double value) {
  if (value > 0) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(name, ": must be positive, got ", value));
}

// Reads an object-valued field; absent or null leaves `*out` null.
absl::Status ReadObject(const json& obj, const char* key, const std::string& name,
                        const json** out) {
  *out = nullptr;
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a JSON object, got ", it->dump()));
  }
  *out = &*it;
  return absl::OkStatus();
}

absl::StatusOr<VisionConfig> ParseVision(const json* j) {
  VisionConfig v;
  if (j == nullptr) {
    // transformers' LlavaConfig builds this CLIP (the ViT-L/14-336 of LLaVA-1.5) when the file
    // has no vision_config at all; per-field defaults below are CLIPVisionConfig's own.
    v.hidden_size = 1024;
    v.intermediate_size = 4096;
    v.num_hidden_layers = 24;
    v.num_attention_heads = 16;
    v.image_size = 336;
    v.patch_size = 14;
    return v;
  }
  std::string model_type = "clip_vision_model";
  VLC_RETURN_IF_ERROR(ReadString(*j, "model_type", "vision_config.model_type", &model_type));
  VLC_RETURN_IF_ERROR(RequireOneOf("vision_config.model_type", model_type, {"clip_vision_model"}));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "hidden_size", "vision_config.hidden_size", &v.hidden_size));
  VLC_RETURN_IF_ERROR(
      ReadInt(*j, "intermediate_size", "vision_config.intermediate_size", &v.intermediate_size));
  VLC_RETURN_IF_ERROR(
      ReadInt(*j, "num_hidden_layers", "vision_config.num_hidden_layers", &v.num_hidden_layers));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "num_attention_heads", "vision_config.num_attention_heads",
                              &v.num_attention_heads));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "num_channels", "vision_config.num_channels", &v.num_channels));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "image_size", "vision_config.image_size", &v.image_size));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "patch_size", "vision_config.patch_size", &v.patch_size));
  VLC_RETURN_IF_ERROR(
      ReadDouble(*j, "layer_norm_eps", "vision_config.layer_norm_eps", &v.layer_norm_eps));
  VLC_RETURN_IF_ERROR(ReadString(*j, "hidden_act", "vision_config.hidden_act", &v.hidden_act));
  return v;
}

absl::Status ValidateVision(const VisionConfig& v) {
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.hidden_size", v.hidden_size));
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.intermediate_size", v.intermediate_size));
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.num_hidden_layers", v.num_hidden_layers));
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.num_attention_heads", v.num_attention_heads));
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.num_channels", v.num_channels));
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.image_size", v.image_size));
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.patch_size", v.patch_size));
  VLC_RETURN_IF_ERROR(RequirePositive("vision_config.layer_norm_eps", v.layer_norm_eps));
  if (v.hidden_size % v.num_attention_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vision_config.num_attention_heads (", v.num_attention_heads,
                     ") must divide vision_config.hidden_size (", v.hidden_size, ")"));
  }
  if (v.image_size % v.patch_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("vision_config.image_size (", v.image_size,
                     ") must be a multiple of vision_config.patch_size (", v.patch_size, ")"));
  }
  return RequireOneOf("vision_config.hidden_act", v.hidden_act, {"quick_gelu", "gelu"});
}

absl::StatusOr<TextConfig> ParseText(const json* j) {
  TextConfig t;
  if (j == nullptr) {
    t.head_dim = t.hidden_size / t.num_attention_heads;
    return t;
  }
  VLC_RETURN_IF_ERROR(ReadString(*j, "model_type", "text_config.model_type", &t.model_type));
  VLC_RETURN_IF_ERROR(RequireOneOf("text_config.model_type", t.model_type, {"llama", "mistral"}));
  if (t.model_type == "mistral") {
    // MistralConfig's defaults (Mistral-7B-v0.1) differ from LlamaConfig's.
    t.intermediate_size = 14336;
    t.num_key_value_heads = 8;
    t.max_position_embeddings = 4096 * 32;
    t.sliding_window = 4096;
  }
  VLC_RETURN_IF_ERROR(ReadInt(*j, "vocab_size", "text_config.vocab_size", &t.vocab_size));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "hidden_size", "text_config.hidden_size", &t.hidden_size));
  VLC_RETURN_IF_ERROR(
      ReadInt(*j, "intermediate_size", "text_config.intermediate_size", &t.intermediate_size));
  VLC_RETURN_IF_ERROR(
      ReadInt(*j, "num_hidden_layers", "text_config.num_hidden_layers", &t.num_hidden_layers));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "num_attention_heads", "text_config.num_attention_heads",
                              &t.num_attention_heads));
  if (t.model_type == "llama") {
    // LlamaConfig: an absent num_key_value_heads means plain multi-head attention.
    t.num_key_value_heads = t.num_attention_heads;
  }
  VLC_RETURN_IF_ERROR(ReadInt(*j, "num_key_value_heads", "text_config.num_key_value_heads",
                              &t.num_key_value_heads));
  auto head_dim = j->find("head_dim");
  const bool head_dim_given = head_dim != j->end() && !head_dim->is_null();
  VLC_RETURN_IF_ERROR(ReadInt(*j, "head_dim", "text_config.head_dim", &t.head_dim));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "max_position_embeddings", "text_config.max_position_embeddings",
                              &t.max_position_embeddings));
  VLC_RETURN_IF_ERROR(ReadDouble(*j, "rope_theta", "text_config.rope_theta", &t.rope_theta));
  // Transformers 5 writes rope_theta inside rope_parameters (with the scaling type), not at the
  // top level; a missed theta would silently fall back to the model type's default.
  const json* rope_parameters = nullptr;
  VLC_RETURN_IF_ERROR(
      ReadObject(*j, "rope_parameters", "text_config.rope_parameters", &rope_parameters));
  if (rope_parameters != nullptr) {
    std::string rope_type = "default";
    VLC_RETURN_IF_ERROR(ReadString(*rope_parameters, "rope_type",
                                   "text_config.rope_parameters.rope_type", &rope_type));
    VLC_RETURN_IF_ERROR(
        RequireOneOf("text_config.rope_parameters.rope_type", rope_type, {"default"}));
    VLC_RETURN_IF_ERROR(ReadDouble(*rope_parameters, "rope_theta",
                                   "text_config.rope_parameters.rope_theta", &t.rope_theta));
  }
  VLC_RETURN_IF_ERROR(ReadDouble(*j, "rms_norm_eps", "text_config.rms_norm_eps", &t.rms_norm_eps));
  VLC_RETURN_IF_ERROR(ReadString(*j, "hidden_act", "text_config.hidden_act", &t.hidden_act));
  if (t.model_type == "mistral") {
    auto it = j->find("sliding_window");
    if (it != j->end() && it->is_null()) {
      t.sliding_window = 0;  // null disables the window (Mistral-7B-v0.2 and later)
    } else {
      VLC_RETURN_IF_ERROR(
          ReadInt(*j, "sliding_window", "text_config.sliding_window", &t.sliding_window));
    }
  }
  VLC_RETURN_IF_ERROR(ReadBool(*j, "tie_word_embeddings", "text_config.tie_word_embeddings",
                               &t.tie_word_embeddings));
  VLC_RETURN_IF_ERROR(ReadInt(*j, "bos_token_id", "text_config.bos_token_id", &t.bos_token_id));
  auto eos = j->find("eos_token_id");
  if (eos != j->end() && eos->is_array()) {
    // Generation configs list several stop ids; the first is the model's own end of sequence.
    if (eos->empty()) {
      return absl::InvalidArgumentError("text_config.eos_token_id: empty list");
    }
    json first = {{"eos_token_id", eos->front()}};
    VLC_RETURN_IF_ERROR(
        ReadInt(first, "eos_token_id", "text_config.eos_token_id[0]", &t.eos_token_id));
  } else {
    VLC_RETURN_IF_ERROR(ReadInt(*j, "eos_token_id", "text_config.eos_token_id", &t.eos_token_id));
  }
  auto rope_scaling = j->find("rope_scaling");
  if (rope_scaling != j->end() && !rope_scaling->is_null()) {
    return absl::InvalidArgumentError(
        absl::StrCat("text_config.rope_scaling is not supported (got ", rope_scaling->dump(), ")"));
  }
  if (!head_dim_given) {
    if (t.num_attention_heads > 0 && t.hidden_size % t.num_attention_heads != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("text_config.num_attention_heads (", t.num_attention_heads,
                       ") must divide text_config.hidden_size (", t.hidden_size,
                       ") when text_config.head_dim is not given"));
    }
    t.head_dim = t.num_attention_heads > 0 ? t.hidden_size / t.num_attention_heads : 0;
  }
  return t;
}

absl::Status ValidateText(const TextConfig& t) {
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.vocab_size", t.vocab_size));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.hidden_size", t.hidden_size));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.intermediate_size", t.intermediate_size));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.num_hidden_layers", t.num_hidden_layers));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.num_attention_heads", t.num_attention_heads));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.num_key_value_heads", t.num_key_value_heads));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.head_dim", t.head_dim));
  VLC_RETURN_IF_ERROR(
      RequirePositive("text_config.max_position_embeddings", t.max_position_embeddings));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.rope_theta", t.rope_theta));
  VLC_RETURN_IF_ERROR(RequirePositive("text_config.rms_norm_eps", t.rms_norm_eps));
  if (t.sliding_window < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text_config.sliding_window: must be non-negative or null, got ", t.sliding_window));
  }
  if (t.num_attention_heads % t.num_key_value_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "text_config.num_key_value_heads (", t.num_key_value_heads,
        ") must divide text_config.num_attention_heads (", t.num_attention_heads, ")"));
  }
  return RequireOneOf("text_config.hidden_act", t.hidden_act, {"silu"});
}

absl::StatusOr<json> ReadJsonFile(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    return absl::NotFoundError(absl::StrCat(path, ": no such file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot open: ", std::strerror(errno)));
  }
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not valid JSON: ", e.what()));
  }
}

// Prefixes a FromJson error with the file it came from, keeping the code.
absl::Status WithPath(const std::string& path, const absl::Status& s) {
  return absl::Status(s.code(), absl::StrCat(path, ": ", s.message()));
}

absl::Status ReadEdge(const json& obj, const char* key, const std::string& name, int* height,
                      int* width) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (it->is_number()) {
    VLC_RETURN_IF_ERROR(ReadInt(obj, key, name, height));
    *width = *height;
    return absl::OkStatus();
  }
  if (!it->is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": expected an integer or an object with height and width, got ", it->dump()));
  }
  if (it->contains("height") || it->contains("width")) {
    if (!it->contains("height") || !it->contains("width")) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": needs both height and width, got ", it->dump()));
    }
    VLC_RETURN_IF_ERROR(ReadInt(*it, "height", name + ".height", height));
    VLC_RETURN_IF_ERROR(ReadInt(*it, "width", name + ".width", width));
    return absl::OkStatus();
  }
  if (it->contains("shortest_edge")) {
    VLC_RETURN_IF_ERROR(ReadInt(*it, "shortest_edge", name + ".shortest_edge", height));
    *width = *height;
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrCat(name, ": expected shortest_edge or height and width, got ", it->dump()));
}

absl::Status ReadTriple(const json& obj, const char* key, const std::string& name,
                        std::array<double, 3>* out) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_array() || it->size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a list of 3 numbers, got ", it->dump()));
  }
  for (size_t i = 0; i < 3; ++i) {
    if (!(*it)[i].is_number()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": expected a list of 3 numbers, got ", it->dump()));
    }
    (*out)[i] = (*it)[i].get<double>();
  }
  return absl::OkStatus();
}

absl::StatusOr<LlavaConfig> ParseLlava(const json& j) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError("config is not a JSON object");
  }
  LlavaConfig c;
  const json* vision_json = nullptr;
  const json* text_json = nullptr;
  VLC_RETURN_IF_ERROR(ReadObject(j, "vision_config", "vision_config", &vision_json));
  VLC_RETURN_IF_ERROR(ReadObject(j, "text_config", "text_config", &text_json));
  VLC_ASSIGN_OR_RETURN(c.vision, ParseVision(vision_json));
  VLC_ASSIGN_OR_RETURN(c.text, ParseText(text_json));

  // Older llava-hf configs call the image placeholder image_token_id.
  if (j.contains("image_token_index")) {
    VLC_RETURN_IF_ERROR(ReadInt(j, "image_token_index", "image_token_index", &c.image_token_index));
  } else {
    VLC_RETURN_IF_ERROR(ReadInt(j, "image_token_id", "image_token_id", &c.image_token_index));
  }
  auto layer = j.find("vision_feature_layer");
  if (layer != j.end() && layer->is_array()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision_feature_layer: a list of layers is not supported (got ", layer->dump(), ")"));
  }
  VLC_RETURN_IF_ERROR(
      ReadInt(j, "vision_feature_layer", "vision_feature_layer", &c.vision_feature_layer));
  VLC_RETURN_IF_ERROR(ReadString(j, "vision_feature_select_strategy",
                                 "vision_feature_select_strategy",
                                 &c.vision_feature_select_strategy));
  VLC_RETURN_IF_ERROR(
      ReadString(j, "projector_hidden_act", "projector_hidden_act", &c.projector_hidden_act));
  VLC_RETURN_IF_ERROR(ReadBool(j, "multimodal_projector_bias", "multimodal_projector_bias",
                               &c.multimodal_projector_bias));
  // transformers reads the flag from the top level of a LLaVA config, while text-only tooling
  // writes it into text_config; weights are tied if either says so.
  bool top_level_tie = false;
  VLC_RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", "tie_word_embeddings", &top_level_tie));
  c.text.tie_word_embeddings = c.text.tie_word_embeddings || top_level_tie;

  VLC_RETURN_IF_ERROR(ValidateVision(c.vision));
  VLC_RETURN_IF_ERROR(ValidateText(c.text));
  if (c.image_token_index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("image_token_index: must be non-negative, got ", c.image_token_index));
  }
  const int layers = c.vision.num_hidden_layers;
  if (c.vision_feature_layer < -(layers + 1) || c.vision_feature_layer > layers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "vision_feature_layer (", c.vision_feature_layer, ") is outside [", -(layers + 1), ", ",
        layers, "]: the vision tower has ", layers + 1, " hidden states"));
  }
  VLC_RETURN_IF_ERROR(RequireOneOf("vision_feature_select_strategy",
                                   c.vision_feature_select_strategy, {"default", "full"}));
  VLC_RETURN_IF_ERROR(RequireOneOf("projector_hidden_act", c.projector_hidden_act,
                                   {"gelu", "gelu_pytorch_tanh", "relu", "silu"}));
  return c;
}

absl::StatusOr<PreprocessorConfig> ParsePreprocessor(const json& j) {
  if (!j.is_object()) {
    return absl::InvalidArgumentError("preprocessor config is not a JSON object");
  }
  PreprocessorConfig p;
  int size_height = p.shortest_edge;
  int size_width = p.shortest_edge;
  VLC_RETURN_IF_ERROR(ReadEdge(j, "size", "size", &size_height, &size_width));
  // A fixed {height, width} resize has no single shortest edge; the smaller side is the one a
  // shortest-edge resize followed by the center crop would preserve.
  p.shortest_edge = std::min(size_height, size_width);
  VLC_RETURN_IF_ERROR(ReadEdge(j, "crop_size", "crop_size", &p.crop_height, &p.crop_width));
  VLC_RETURN_IF_ERROR(ReadBool(j, "do_resize", "do_resize", &p.do_resize));
  VLC_RETURN_IF_ERROR(ReadBool(j, "do_center_crop", "do_center_crop", &p.do_center_crop));
  VLC_RETURN_IF_ERROR(ReadBool(j, "do_rescale", "do_rescale", &p.do_rescale));
  VLC_RETURN_IF_ERROR(ReadBool(j, "do_normalize", "do_normalize", &p.do_normalize));
  VLC_RETURN_IF_ERROR(ReadDouble(j, "rescale_factor", "rescale_factor", &p.rescale_factor));
  VLC_RETURN_IF_ERROR(ReadTriple(j, "image_mean", "image_mean", &p.image_mean));
  VLC_RETURN_IF_ERROR(ReadTriple(j, "image_std", "image_std", &p.image_std));

  VLC_RETURN_IF_ERROR(RequirePositive("size.shortest_edge", p.shortest_edge));
  VLC_RETURN_IF_ERROR(RequirePositive("crop_size.height", p.crop_height));
  VLC_RETURN_IF_ERROR(RequirePositive("crop_size.width", p.crop_width));
  for (double s : p.image_std) {
    if (s == 0) return absl::InvalidArgumentError("image_std: entries must be non-zero");
  }
  return p;
}

}  // namespace

absl::StatusOr<LlavaConfig> LlavaConfig::FromJson(const json& j) {
  // The readers check every type before converting, so nlohmann should never throw here; the
  // catch keeps a missed case a Status rather than a crash.
  try {
    return ParseLlava(j);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed config: ", e.what()));
  }
}

absl::StatusOr<PreprocessorConfig> PreprocessorConfig::FromJson(const json& j) {
  try {
    return ParsePreprocessor(j);
  } catch (const json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("malformed preprocessor config: ", e.what()));
  }
}

absl::StatusOr<LlavaConfig> LlavaConfig::FromFile(const std::string& path) {
  VLC_ASSIGN_OR_RETURN(json j, ReadJsonFile(path));
  absl::StatusOr<LlavaConfig> config = FromJson(j);
  if (!config.ok()) return WithPath(path, config.status());
  return config;
}

json LlavaConfig::ToJson() const {
  json text_json = {
      {"model_type", text.model_type},
      {"vocab_size", text.vocab_size},
      {"hidden_size", text.hidden_size},
      {"intermediate_size", text.intermediate_size},
      {"num_hidden_layers", text.num_hidden_layers},
      {"num_attention_heads", text.num_attention_heads},
      {"num_key_value_heads", text.num_key_value_heads},
      {"head_dim", text.head_dim},
      {"max_position_embeddings", text.max_position_embeddings},
      {"rope_theta", text.rope_theta},
      {"rms_norm_eps", text.rms_norm_eps},
      {"hidden_act", text.hidden_act},
      {"tie_word_embeddings", text.tie_word_embeddings},
      {"bos_token_id", text.bos_token_id},
      {"eos_token_id", text.eos_token_id},
  };
  if (text.model_type == "mistral") {
    text_json["sliding_window"] = text.sliding_window > 0 ? json(text.sliding_window) : json();
  }
  json vision_json = {
      {"model_type", "clip_vision_model"},
      {"hidden_size", vision.hidden_size},
      {"intermediate_size", vision.intermediate_size},
      {"num_hidden_layers", vision.num_hidden_layers},
      {"num_attention_heads", vision.num_attention_heads},
      {"num_channels", vision.num_channels},
      {"image_size", vision.image_size},
      {"patch_size", vision.patch_size},
      {"layer_norm_eps", vision.layer_norm_eps},
      {"hidden_act", vision.hidden_act},
  };
  return json{
      {"architectures", json::array({"LlavaForConditionalGeneration"})},
      {"model_type", "llava"},
      {"image_token_index", image_token_index},
      {"vision_feature_layer", vision_feature_layer},
      {"vision_feature_select_strategy", vision_feature_select_strategy},
      {"projector_hidden_act", projector_hidden_act},
      {"multimodal_projector_bias", multimodal_projector_bias},
      {"tie_word_embeddings", text.tie_word_embeddings},
      {"text_config", std::move(text_json)},
      {"vision_config", std::move(vision_json)},
      {"torch_dtype", "float32"},
  };
}

absl::StatusOr<PreprocessorConfig> PreprocessorConfig::FromFileOrDefault(const std::string& path,
                                                                         int image_size) {
  absl::StatusOr<json> j = ReadJsonFile(path);
  if (absl::IsNotFound(j.status())) {
    PreprocessorConfig p;
    p.shortest_edge = p.crop_height = p.crop_width = image_size;
    return p;
  }
  if (!j.ok()) return j.status();
  absl::StatusOr<PreprocessorConfig> p = FromJson(*j);
  if (!p.ok()) return WithPath(path, p.status());
  return p;
}

json PreprocessorConfig::ToJson() const {
  return json{
      {"image_processor_type", "CLIPImageProcessor"},
      {"size", {{"shortest_edge", shortest_edge}}},
      {"crop_size", {{"height", crop_height}, {"width", crop_width}}},
      {"do_resize", do_resize},
      {"do_center_crop", do_center_crop},
      {"do_rescale", do_rescale},
      {"rescale_factor", rescale_factor},
      {"do_normalize", do_normalize},
      {"image_mean", image_mean},
      {"image_std", image_std},
      {"do_convert_rgb", true},
      {"resample", 3},  // PIL bicubic, CLIP's resampling filter
  };
}

}  // namespace vlc::engine
