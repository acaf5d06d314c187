#include "common/fs.h"
#include "engine/config.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

namespace vlc::engine {
namespace {

using nlohmann::json;

// llava-hf/llava-1.5-7b-hf's config.json: the text config lists only what differs from
// LlamaConfig's defaults.
const json& Llava15Config() {
  static const json j = json::parse(R"({
    "architectures": ["LlavaForConditionalGeneration"],
    "ignore_index": -100,
    "image_token_index": 32000,
    "model_type": "llava",
    "pad_token_id": 32001,
    "projector_hidden_act": "gelu",
    "text_config": {
      "_name_or_path": "lmsys/vicuna-7b-v1.5",
      "architectures": ["LlamaForCausalLM"],
      "max_position_embeddings": 4096,
      "model_type": "llama",
      "rms_norm_eps": 1e-05,
      "torch_dtype": "float16",
      "vocab_size": 32064
    },
    "tie_word_embeddings": false,
    "torch_dtype": "float16",
    "transformers_version": "4.36.0.dev0",
    "vision_config": {
      "hidden_size": 1024,
      "image_size": 336,
      "intermediate_size": 4096,
      "model_type": "clip_vision_model",
      "num_attention_heads": 16,
      "num_hidden_layers": 24,
      "patch_size": 14,
      "projection_dim": 768,
      "vocab_size": 32000
    },
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 32064
  })");
  return j;
}

// The text half of llava-hf/llava-v1.6-mistral-7b-hf (Mistral-7B-Instruct-v0.2).
const json& LlavaMistralConfig() {
  static const json j = [] {
    json c = Llava15Config();
    c["text_config"] = json::parse(R"({
      "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
      "architectures": ["MistralForCausalLM"],
      "intermediate_size": 14336,
      "max_position_embeddings": 32768,
      "model_type": "mistral",
      "num_key_value_heads": 8,
      "rms_norm_eps": 1e-05,
      "rope_theta": 1000000.0,
      "sliding_window": null,
      "torch_dtype": "bfloat16",
      "vocab_size": 32064
    })");
    return c;
  }();
  return j;
}

// Applies `patch` (a JSON merge patch, RFC 7386) to the LLaVA-1.5 config and expects
// INVALID_ARGUMENT whose message names `field`.
void ExpectInvalidField(const json& patch, const std::string& field) {
  json j = Llava15Config();
  j.merge_patch(patch);
  auto config = LlavaConfig::FromJson(j);
  ASSERT_FALSE(config.ok()) << "accepted " << patch.dump();
  EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << config.status();
  EXPECT_NE(config.status().message().find(field), std::string::npos)
      << "message does not name " << field << ": " << config.status();
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vlc_config_XXXXXX");
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    if (!path_.empty()) RemoveTree(path_);
  }
  std::string Write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ + "/" + name) << text;
    return path_ + "/" + name;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(LlavaConfig, ParsesLlava15AndFillsLlamaDefaults) {
  auto c = LlavaConfig::FromJson(Llava15Config());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.model_type, "llama");
  EXPECT_EQ(c->text.vocab_size, 32064);
  EXPECT_EQ(c->text.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c->text.rms_norm_eps, 1e-5);
  // Not in the file: LlamaConfig's defaults.
  EXPECT_EQ(c->text.hidden_size, 4096);
  EXPECT_EQ(c->text.intermediate_size, 11008);
  EXPECT_EQ(c->text.num_hidden_layers, 32);
  EXPECT_EQ(c->text.num_attention_heads, 32);
  EXPECT_EQ(c->text.num_key_value_heads, 32);
  EXPECT_EQ(c->text.head_dim, 128);
  EXPECT_DOUBLE_EQ(c->text.rope_theta, 10000.0);
  EXPECT_EQ(c->text.hidden_act, "silu");
  EXPECT_EQ(c->text.sliding_window, 0);
  EXPECT_FALSE(c->text.tie_word_embeddings);
  EXPECT_EQ(c->text.bos_token_id, 1);
  EXPECT_EQ(c->text.eos_token_id, 2);

  EXPECT_EQ(c->vision.hidden_size, 1024);
  EXPECT_EQ(c->vision.intermediate_size, 4096);
  EXPECT_EQ(c->vision.num_hidden_layers, 24);
  EXPECT_EQ(c->vision.num_attention_heads, 16);
  EXPECT_EQ(c->vision.image_size, 336);
  EXPECT_EQ(c->vision.patch_size, 14);
  // Not in the file: CLIPVisionConfig's defaults.
  EXPECT_EQ(c->vision.num_channels, 3);
  EXPECT_DOUBLE_EQ(c->vision.layer_norm_eps, 1e-5);
  EXPECT_EQ(c->vision.hidden_act, "quick_gelu");
  EXPECT_EQ(c->vision.head_dim(), 64);
  EXPECT_EQ(c->vision.num_patches(), 576);

  EXPECT_EQ(c->image_token_index, 32000);
  EXPECT_EQ(c->vision_feature_layer, -2);
  EXPECT_EQ(c->vision_feature_select_strategy, "default");
  EXPECT_EQ(c->projector_hidden_act, "gelu");
  EXPECT_TRUE(c->multimodal_projector_bias);
  EXPECT_EQ(c->visual_tokens_per_image(), 576);
}

TEST(LlavaConfig, ParsesLlavaMistralWithMistralDefaults) {
  auto c = LlavaConfig::FromJson(LlavaMistralConfig());
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.model_type, "mistral");
  EXPECT_EQ(c->text.vocab_size, 32064);
  EXPECT_EQ(c->text.intermediate_size, 14336);
  EXPECT_EQ(c->text.num_key_value_heads, 8);
  EXPECT_EQ(c->text.max_position_embeddings, 32768);
  EXPECT_DOUBLE_EQ(c->text.rope_theta, 1e6);
  EXPECT_EQ(c->text.sliding_window, 0);  // null: no window
  EXPECT_EQ(c->text.head_dim, 128);
  EXPECT_EQ(c->text.hidden_size, 4096);
  EXPECT_EQ(c->text.num_attention_heads, 32);
}

TEST(LlavaConfig, MistralFieldsAbsentTakeMistralConfigDefaults) {
  json j = Llava15Config();
  j["text_config"] = {{"model_type", "mistral"}};
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.intermediate_size, 14336);
  EXPECT_EQ(c->text.num_key_value_heads, 8);
  EXPECT_EQ(c->text.max_position_embeddings, 131072);
  EXPECT_EQ(c->text.sliding_window, 4096);
  EXPECT_DOUBLE_EQ(c->text.rms_norm_eps, 1e-6);
  EXPECT_DOUBLE_EQ(c->text.rope_theta, 10000.0);
}

TEST(LlavaConfig, AbsentTextConfigIsLlamaDefaults) {
  json j = Llava15Config();
  j.erase("text_config");
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.model_type, "llama");
  EXPECT_EQ(c->text.vocab_size, 32000);
  EXPECT_EQ(c->text.max_position_embeddings, 2048);
  EXPECT_EQ(c->text.num_key_value_heads, 32);
  EXPECT_EQ(c->text.head_dim, 128);
  EXPECT_DOUBLE_EQ(c->text.rms_norm_eps, 1e-6);
}

TEST(LlavaConfig, AbsentVisionConfigIsLlavasClipL336) {
  // transformers' LlavaConfig substitutes the LLaVA-1.5 tower, not CLIPVisionConfig's ViT-B/32.
  json j = Llava15Config();
  j.erase("vision_config");
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vision.hidden_size, 1024);
  EXPECT_EQ(c->vision.image_size, 336);
  EXPECT_EQ(c->vision.patch_size, 14);
  EXPECT_EQ(c->vision.num_hidden_layers, 24);
}

TEST(LlavaConfig, VisionFieldsAbsentTakeClipVisionConfigDefaults) {
  json j = Llava15Config();
  j["vision_config"] = json::object();
  j["vision_feature_layer"] = -1;
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vision.hidden_size, 768);
  EXPECT_EQ(c->vision.intermediate_size, 3072);
  EXPECT_EQ(c->vision.num_hidden_layers, 12);
  EXPECT_EQ(c->vision.num_attention_heads, 12);
  EXPECT_EQ(c->vision.image_size, 224);
  EXPECT_EQ(c->vision.patch_size, 32);
}

TEST(LlavaConfig, HeadDimAndKvHeadsWhenGiven) {
  json j = Llava15Config();
  j["text_config"]["num_key_value_heads"] = 8;
  j["text_config"]["head_dim"] = 256;
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.num_key_value_heads, 8);
  EXPECT_EQ(c->text.head_dim, 256);

  j["text_config"]["head_dim"] = nullptr;
  j["text_config"]["num_key_value_heads"] = nullptr;
  c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.head_dim, 128);
  EXPECT_EQ(c->text.num_key_value_heads, 32);
}

TEST(LlavaConfig, TieWordEmbeddingsFromEitherLevel) {
  json j = Llava15Config();
  j["text_config"]["tie_word_embeddings"] = true;
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->text.tie_word_embeddings);

  j = Llava15Config();
  j["tie_word_embeddings"] = true;
  c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->text.tie_word_embeddings);
}

TEST(LlavaConfig, TokenIdsFromTextConfigAndFirstOfAnEosList) {
  json j = Llava15Config();
  j["text_config"]["bos_token_id"] = 128000;
  j["text_config"]["eos_token_id"] = {128009, 128001};
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.bos_token_id, 128000);
  EXPECT_EQ(c->text.eos_token_id, 128009);

  ExpectInvalidField(json{{"text_config", {{"eos_token_id", json::array()}}}},
                     "text_config.eos_token_id");
}

TEST(LlavaConfig, AcceptsLegacyImageTokenId) {
  json j = Llava15Config();
  j.erase("image_token_index");
  j["image_token_id"] = 32001;
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->image_token_index, 32001);
}

TEST(LlavaConfig, FullStrategyKeepsTheClsToken) {
  json j = Llava15Config();
  j["vision_feature_select_strategy"] = "full";
  auto c = LlavaConfig::FromJson(j);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->visual_tokens_per_image(), 577);
}

TEST(LlavaConfig, VisionFeatureLayerRangeIncludesEmbeddingsAndLastLayer) {
  // 24 layers give 25 hidden states: indices -25..24.
  for (int layer : {-25, -1, 0, 24}) {
    json j = Llava15Config();
    j["vision_feature_layer"] = layer;
    EXPECT_TRUE(LlavaConfig::FromJson(j).ok()) << layer;
  }
  ExpectInvalidField({{"vision_feature_layer", 25}}, "vision_feature_layer");
  ExpectInvalidField({{"vision_feature_layer", -26}}, "vision_feature_layer");
}

TEST(LlavaConfig, RejectsAListOfVisionFeatureLayers) {
  ExpectInvalidField({{"vision_feature_layer", {-2, -5}}}, "vision_feature_layer");
}

TEST(LlavaConfig, RejectsVisionHeadsNotDividingHidden) {
  ExpectInvalidField({{"vision_config", {{"hidden_size", 1000}}}},
                     "vision_config.num_attention_heads");
}

TEST(LlavaConfig, RejectsKvHeadsNotDividingHeads) {
  ExpectInvalidField({{"text_config", {{"num_key_value_heads", 5}}}},
                     "text_config.num_key_value_heads");
}

TEST(LlavaConfig, RejectsTextHeadsNotDividingHiddenWithoutHeadDim) {
  ExpectInvalidField({{"text_config", {{"hidden_size", 4100}}}}, "text_config.num_attention_heads");
}

TEST(LlavaConfig, RejectsNonPositiveSizes) {
  ExpectInvalidField({{"text_config", {{"hidden_size", 0}}}}, "text_config.hidden_size");
  ExpectInvalidField({{"text_config", {{"head_dim", 0}}}}, "text_config.head_dim");
  ExpectInvalidField({{"text_config", {{"num_attention_heads", 0}}}},
                     "text_config.num_attention_heads");
  ExpectInvalidField({{"text_config", {{"num_hidden_layers", -1}}}},
                     "text_config.num_hidden_layers");
  ExpectInvalidField({{"text_config", {{"vocab_size", 0}}}}, "text_config.vocab_size");
  ExpectInvalidField({{"text_config", {{"rms_norm_eps", 0.0}}}}, "text_config.rms_norm_eps");
  ExpectInvalidField({{"vision_config", {{"patch_size", 0}}}}, "vision_config.patch_size");
  ExpectInvalidField({{"vision_config", {{"num_channels", 0}}}}, "vision_config.num_channels");
}

TEST(LlavaConfig, RejectsImageSizeNotAMultipleOfPatchSize) {
  ExpectInvalidField({{"vision_config", {{"patch_size", 15}}}}, "vision_config.image_size");
}

TEST(LlavaConfig, RejectsUnsupportedActivations) {
  ExpectInvalidField({{"text_config", {{"hidden_act", "gelu"}}}}, "text_config.hidden_act");
  ExpectInvalidField({{"vision_config", {{"hidden_act", "relu"}}}}, "vision_config.hidden_act");
  ExpectInvalidField({{"projector_hidden_act", "tanh"}}, "projector_hidden_act");
  for (const char* act : {"gelu", "gelu_pytorch_tanh", "relu", "silu"}) {
    json j = Llava15Config();
    j["projector_hidden_act"] = act;
    EXPECT_TRUE(LlavaConfig::FromJson(j).ok()) << act;
  }
  json j = Llava15Config();
  j["vision_config"]["hidden_act"] = "gelu";
  EXPECT_TRUE(LlavaConfig::FromJson(j).ok());
}

TEST(LlavaConfig, RejectsUnknownStrategyAndModelTypes) {
  ExpectInvalidField({{"vision_feature_select_strategy", "cls"}}, "vision_feature_select_strategy");
  ExpectInvalidField({{"text_config", {{"model_type", "qwen2"}}}}, "text_config.model_type");
  ExpectInvalidField({{"vision_config", {{"model_type", "siglip_vision_model"}}}},
                     "vision_config.model_type");
}

TEST(LlavaConfig, RejectsRopeScaling) {
  ExpectInvalidField({{"text_config", {{"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}}}}},
                     "rope_scaling is not supported");
  json j = Llava15Config();
  j["text_config"]["rope_scaling"] = nullptr;
  EXPECT_TRUE(LlavaConfig::FromJson(j).ok());
}

TEST(LlavaConfig, ReadsRopeThetaFromTransformers5RopeParameters) {
  // Transformers 5 writes theta inside rope_parameters; the top-level default must not win.
  json j = Llava15Config();
  j["text_config"].erase("rope_theta");
  j["text_config"]["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1000000.0}};
  auto config = LlavaConfig::FromJson(j);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->text.rope_theta, 1000000.0);
  ExpectInvalidField(
      {{"text_config", {{"rope_parameters", {{"rope_type", "yarn"}, {"factor", 4.0}}}}}},
      "text_config.rope_parameters.rope_type");
  ExpectInvalidField({{"text_config", {{"rope_parameters", 7}}}}, "text_config.rope_parameters");
}

TEST(LlavaConfig, RejectsWrongJsonTypesNamingTheField) {
  ExpectInvalidField({{"text_config", {{"hidden_size", "4096"}}}}, "text_config.hidden_size");
  ExpectInvalidField({{"text_config", {{"rope_theta", "1e6"}}}}, "text_config.rope_theta");
  ExpectInvalidField({{"text_config", {{"hidden_size", 4096.5}}}}, "text_config.hidden_size");
  ExpectInvalidField({{"vision_config", {{"image_size", {336, 336}}}}}, "vision_config.image_size");
  ExpectInvalidField({{"multimodal_projector_bias", "yes"}}, "multimodal_projector_bias");
  ExpectInvalidField({{"vision_feature_select_strategy", 1}}, "vision_feature_select_strategy");
  ExpectInvalidField({{"text_config", 7}}, "text_config");
  ExpectInvalidField({{"vision_config", "clip"}}, "vision_config");
  ExpectInvalidField({{"text_config", {{"num_hidden_layers", 1e12}}}},
                     "text_config.num_hidden_layers");
  EXPECT_EQ(LlavaConfig::FromJson(json::array()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(LlavaConfig, ToJsonIsAFullHfConfig) {
  auto c = LlavaConfig::FromJson(Llava15Config());
  ASSERT_TRUE(c.ok());
  json j = c->ToJson();
  EXPECT_EQ(j["architectures"], json::array({"LlavaForConditionalGeneration"}));
  EXPECT_EQ(j["model_type"], "llava");
  EXPECT_EQ(j["torch_dtype"], "float32");
  EXPECT_EQ(j["image_token_index"], 32000);
  EXPECT_EQ(j["text_config"]["num_key_value_heads"], 32);
  EXPECT_EQ(j["text_config"]["head_dim"], 128);
  EXPECT_EQ(j["text_config"]["vocab_size"], 32064);
  EXPECT_FALSE(j["text_config"].contains("sliding_window"));  // Llama has none
  EXPECT_EQ(j["vision_config"]["model_type"], "clip_vision_model");
  EXPECT_EQ(j["vision_config"]["hidden_act"], "quick_gelu");
  EXPECT_EQ(j["multimodal_projector_bias"], true);

  auto mistral = LlavaConfig::FromJson(LlavaMistralConfig());
  ASSERT_TRUE(mistral.ok());
  EXPECT_TRUE(mistral->ToJson()["text_config"]["sliding_window"].is_null());
  mistral->text.sliding_window = 4096;
  EXPECT_EQ(mistral->ToJson()["text_config"]["sliding_window"], 4096);
}

TEST(LlavaConfig, ToJsonRoundTrips) {
  for (const json& source : {Llava15Config(), LlavaMistralConfig()}) {
    auto c = LlavaConfig::FromJson(source);
    ASSERT_TRUE(c.ok()) << c.status();
    // Move every field off its default so that a field ToJson forgets shows up.
    c->text.hidden_size = 256;
    c->text.intermediate_size = 512;
    c->text.num_hidden_layers = 3;
    c->text.num_attention_heads = 8;
    c->text.num_key_value_heads = 2;
    c->text.head_dim = 48;
    c->text.rope_theta = 500000.0;
    c->text.rms_norm_eps = 1e-5;
    c->text.tie_word_embeddings = true;
    c->text.bos_token_id = 5;
    c->text.eos_token_id = 6;
    if (c->text.model_type == "mistral") c->text.sliding_window = 1024;
    c->vision.hidden_size = 64;
    c->vision.intermediate_size = 128;
    c->vision.num_hidden_layers = 2;
    c->vision.num_attention_heads = 4;
    c->vision.num_channels = 1;
    c->vision.image_size = 32;
    c->vision.patch_size = 8;
    c->vision.layer_norm_eps = 1e-6;
    c->vision.hidden_act = "gelu";
    c->image_token_index = 7;
    c->vision_feature_layer = -1;
    c->vision_feature_select_strategy = "full";
    c->projector_hidden_act = "silu";
    c->multimodal_projector_bias = false;

    auto back = LlavaConfig::FromJson(c->ToJson());
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->ToJson(), c->ToJson());
    EXPECT_EQ(back->text.head_dim, 48);
    EXPECT_EQ(back->text.sliding_window, c->text.sliding_window);
    EXPECT_EQ(back->vision.num_channels, 1);
    EXPECT_FALSE(back->multimodal_projector_bias);
    EXPECT_EQ(back->vision_feature_select_strategy, "full");
  }
}

TEST(LlavaConfig, FromFileReportsThePath) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string good = dir.Write("config.json", Llava15Config().dump(2));
  auto c = LlavaConfig::FromFile(good);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->text.vocab_size, 32064);

  const std::string missing = dir.path() + "/absent.json";
  auto absent = LlavaConfig::FromFile(missing);
  EXPECT_EQ(absent.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(absent.status().message().find(missing), std::string::npos) << absent.status();

  const std::string bad = dir.Write("bad.json", "{\"text_config\": ");
  auto parse_error = LlavaConfig::FromFile(bad);
  EXPECT_EQ(parse_error.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(parse_error.status().message().find(bad), std::string::npos);

  json invalid = Llava15Config();
  invalid["text_config"]["hidden_act"] = "relu";
  const std::string wrong = dir.Write("wrong.json", invalid.dump());
  auto validation_error = LlavaConfig::FromFile(wrong);
  EXPECT_EQ(validation_error.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(validation_error.status().message().find(wrong), std::string::npos);
  EXPECT_NE(validation_error.status().message().find("text_config.hidden_act"), std::string::npos);
}

// llava-hf/llava-1.5-7b-hf's preprocessor_config.json.
const char kLlava15Preprocessor[] = R"({
  "crop_size": {"height": 336, "width": 336},
  "do_center_crop": true,
  "do_convert_rgb": true,
  "do_normalize": true,
  "do_rescale": true,
  "do_resize": true,
  "image_mean": [0.48145466, 0.4578275, 0.40821073],
  "image_processor_type": "CLIPImageProcessor",
  "image_std": [0.26862954, 0.26130258, 0.27577711],
  "processor_class": "LlavaProcessor",
  "resample": 3,
  "rescale_factor": 0.00392156862745098,
  "size": {"shortest_edge": 336}
})";

TEST(PreprocessorConfig, ParsesLlava15) {
  auto p = PreprocessorConfig::FromJson(json::parse(kLlava15Preprocessor));
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->shortest_edge, 336);
  EXPECT_EQ(p->crop_height, 336);
  EXPECT_EQ(p->crop_width, 336);
  EXPECT_TRUE(p->do_resize && p->do_center_crop && p->do_rescale && p->do_normalize);
  EXPECT_DOUBLE_EQ(p->rescale_factor, 1.0 / 255.0);
  EXPECT_DOUBLE_EQ(p->image_mean[1], 0.4578275);
  EXPECT_DOUBLE_EQ(p->image_std[2], 0.27577711);
}

TEST(PreprocessorConfig, AcceptsIntAndHeightWidthSizes) {
  auto p = PreprocessorConfig::FromJson({{"size", 300}, {"crop_size", 288}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->shortest_edge, 300);
  EXPECT_EQ(p->crop_height, 288);
  EXPECT_EQ(p->crop_width, 288);

  p = PreprocessorConfig::FromJson({{"size", {{"height", 400}, {"width", 320}}},
                                    {"crop_size", {{"height", 320}, {"width", 256}}},
                                    {"do_center_crop", false},
                                    {"image_mean", {0.5, 0.5, 0.5}}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->shortest_edge, 320);
  EXPECT_EQ(p->crop_height, 320);
  EXPECT_EQ(p->crop_width, 256);
  EXPECT_FALSE(p->do_center_crop);
  EXPECT_DOUBLE_EQ(p->image_mean[0], 0.5);
}

TEST(PreprocessorConfig, RejectsMalformedFieldsNamingThem) {
  struct Case {
    json j;
    const char* field;
  };
  for (const Case& c : std::vector<Case>{
           {{{"image_mean", {0.5, 0.5}}}, "image_mean"},
           {{{"image_std", {0.5, "a", 0.5}}}, "image_std"},
           {{{"image_std", {0.5, 0.0, 0.5}}}, "image_std"},
           {{{"size", "big"}}, "size"},
           {{{"size", {{"longest_edge", 3}}}}, "size"},
           {{{"crop_size", {{"height", 3}}}}, "crop_size"},
           {{{"crop_size", 0}}, "crop_size"},
           {{{"do_resize", 1}}, "do_resize"},
           {{{"rescale_factor", "1/255"}}, "rescale_factor"},
       }) {
    auto p = PreprocessorConfig::FromJson(c.j);
    ASSERT_FALSE(p.ok()) << c.j.dump();
    EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(c.field), std::string::npos) << p.status();
  }
}

TEST(PreprocessorConfig, FromFileOrDefaultSizesDefaultsToTheImage) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  auto p = PreprocessorConfig::FromFileOrDefault(dir.path() + "/absent.json", 448);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->shortest_edge, 448);
  EXPECT_EQ(p->crop_height, 448);
  EXPECT_EQ(p->crop_width, 448);
  EXPECT_DOUBLE_EQ(p->image_mean[0], 0.48145466);

  const std::string path = dir.Write("preprocessor_config.json", kLlava15Preprocessor);
  p = PreprocessorConfig::FromFileOrDefault(path, 448);
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ(p->shortest_edge, 336);

  const std::string bad = dir.Write("bad.json", R"({"image_mean": [1]})");
  p = PreprocessorConfig::FromFileOrDefault(bad, 448);
  EXPECT_EQ(p.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find(bad), std::string::npos) << p.status();
}

TEST(PreprocessorConfig, ToJsonRoundTrips) {
  PreprocessorConfig p;
  p.shortest_edge = 384;
  p.crop_height = 320;
  p.crop_width = 352;
  p.do_center_crop = false;
  p.do_normalize = false;
  p.rescale_factor = 0.5;
  p.image_mean = {0.1, 0.2, 0.3};
  p.image_std = {0.4, 0.5, 0.6};
  json j = p.ToJson();
  EXPECT_EQ(j["image_processor_type"], "CLIPImageProcessor");
  EXPECT_EQ(j["size"], json({{"shortest_edge", 384}}));
  EXPECT_EQ(j["crop_size"], json({{"height", 320}, {"width", 352}}));
  EXPECT_EQ(j["do_convert_rgb"], true);
  EXPECT_EQ(j["resample"], 3);
  auto back = PreprocessorConfig::FromJson(j);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), j);
  EXPECT_EQ(back->crop_width, 352);
  EXPECT_FALSE(back->do_center_crop);
  EXPECT_DOUBLE_EQ(back->image_std[2], 0.6);
}

}  // namespace
}  // namespace vlc::engine
