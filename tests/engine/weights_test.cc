#include "common/fs.h"
#include "engine/weights.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/safetensors.h"

namespace vlc::engine {
namespace {

using Named = std::vector<std::pair<std::string, at::Tensor>>;

TEST(CanonicalWeightName, MapsBothHfLayouts) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"vision_tower.vision_model.embeddings.patch_embedding.weight",
       "vision.embeddings.patch_embedding.weight"},
      {"model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias",
       "vision.encoder.layers.0.mlp.fc1.bias"},
      {"multi_modal_projector.linear_1.weight", "projector.linear_1.weight"},
      {"model.multi_modal_projector.linear_2.bias", "projector.linear_2.bias"},
      {"language_model.model.layers.31.self_attn.q_proj.weight",
       "lm.layers.31.self_attn.q_proj.weight"},
      {"model.language_model.embed_tokens.weight", "lm.embed_tokens.weight"},
      {"language_model.lm_head.weight", "lm_head.weight"},
      {"lm_head.weight", "lm_head.weight"},
      // Transformers 5 saves the vision tower without its vision_model level.
      {"vision_tower.embeddings.patch_embedding.weight",
       "vision.embeddings.patch_embedding.weight"},
      {"model.vision_tower.encoder.layers.2.self_attn.k_proj.bias",
       "vision.encoder.layers.2.self_attn.k_proj.bias"},
      {"model.vision_tower.pre_layrnorm.weight", "vision.pre_layrnorm.weight"},
  };
  for (const auto& [hf, canonical] : cases) EXPECT_EQ(CanonicalWeightName(hf), canonical) << hf;
}

TEST(CanonicalWeightName, IgnoresKeysTheEngineDoesNotUse) {
  for (const char* key :
       {"image_newline", "model.embed_tokens.weight", "vision_tower.vision_model.",
        "vision_tower.",
        "vision_model.encoder.layers.0.mlp.fc1.bias", "lm_head.bias", "language_model.lm_head.bias",
        "model.lm_head.weight", ""}) {
    EXPECT_EQ(CanonicalWeightName(key), "") << key;
  }
}

class CheckpointLoader : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "vlc_weights_XXXXXX");
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    at::manual_seed(0);
  }
  void TearDown() override { RemoveTree(dir_); }

  std::string PathOf(const std::string& name) const { return dir_ + "/" + name; }

  void Write(const std::string& name, const Named& tensors, at::ScalarType dtype = at::kFloat) {
    ASSERT_TRUE(WriteSafetensors(PathOf(name), tensors, dtype).ok());
  }

  void WriteIndex(const nlohmann::json& weight_map) {
    nlohmann::json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
    std::ofstream(PathOf("model.safetensors.index.json")) << index.dump(2);
  }

  std::string dir_;
};

TEST_F(CheckpointLoader, LoadsASingleFileInTheOldLayout) {
  const Named tensors = {
      {"vision_tower.vision_model.post_layernorm.weight", at::randn({4})},
      {"multi_modal_projector.linear_1.weight", at::randn({3, 4})},
      {"language_model.model.norm.weight", at::randn({3})},
      {"language_model.lm_head.weight", at::randn({5, 3})},
      {"image_newline", at::randn({3})},
  };
  Write("model.safetensors", tensors);
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->size(), 4u);  // image_newline has no canonical name
  EXPECT_TRUE(at::equal(weights->at("vision.post_layernorm.weight"), tensors[0].second));
  EXPECT_TRUE(at::equal(weights->at("projector.linear_1.weight"), tensors[1].second));
  EXPECT_TRUE(at::equal(weights->at("lm.norm.weight"), tensors[2].second));
  EXPECT_TRUE(at::equal(weights->at("lm_head.weight"), tensors[3].second));
}

TEST_F(CheckpointLoader, LoadsASingleFileInTheNewLayoutConverted) {
  const Named tensors = {
      {"model.vision_tower.vision_model.post_layernorm.weight", at::randn({4})},
      {"model.multi_modal_projector.linear_1.weight", at::randn({3, 4})},
      {"model.language_model.norm.weight", at::randn({3})},
      {"lm_head.weight", at::randn({5, 3})},
  };
  Write("model.safetensors", tensors, at::kBFloat16);
  auto weights = LoadCheckpointWeights(dir_, at::kHalf);
  ASSERT_TRUE(weights.ok()) << weights.status();
  ASSERT_EQ(weights->size(), 4u);
  const at::Tensor& norm = weights->at("lm.norm.weight");
  EXPECT_EQ(norm.scalar_type(), at::kHalf);
  EXPECT_TRUE(at::equal(norm, tensors[2].second.to(at::kBFloat16).to(at::kHalf)));
  EXPECT_TRUE(
      at::equal(weights->at("lm_head.weight"), tensors[3].second.to(at::kBFloat16).to(at::kHalf)));
}

TEST_F(CheckpointLoader, LoadsShardsListedInTheIndex) {
  const at::Tensor patch = at::randn({8, 3, 2, 2});
  const at::Tensor proj = at::randn({6, 8});
  const at::Tensor embed = at::randn({10, 6});
  const at::Tensor head = at::randn({10, 6});
  Write("model-00001-of-00002.safetensors",
        {{"model.vision_tower.vision_model.embeddings.patch_embedding.weight", patch},
         {"model.multi_modal_projector.linear_1.weight", proj},
         // In the shard but not in the index: the index decides what the checkpoint holds.
         {"model.language_model.stale.weight", at::zeros({1})}});
  Write("model-00002-of-00002.safetensors",
        {{"model.language_model.embed_tokens.weight", embed}, {"lm_head.weight", head}}, at::kHalf);
  WriteIndex({
      {"model.vision_tower.vision_model.embeddings.patch_embedding.weight",
       "model-00001-of-00002.safetensors"},
      {"model.multi_modal_projector.linear_1.weight", "model-00001-of-00002.safetensors"},
      {"model.language_model.embed_tokens.weight", "model-00002-of-00002.safetensors"},
      {"lm_head.weight", "model-00002-of-00002.safetensors"},
  });
  // A stale single file beside the index must not be read.
  Write("model.safetensors", {{"lm_head.weight", at::zeros({10, 6})}});

  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->size(), 4u);
  EXPECT_EQ(weights->count("lm.stale.weight"), 0u);
  EXPECT_TRUE(at::equal(weights->at("vision.embeddings.patch_embedding.weight"), patch));
  EXPECT_TRUE(at::equal(weights->at("projector.linear_1.weight"), proj));
  EXPECT_TRUE(at::equal(weights->at("lm.embed_tokens.weight"), embed.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(at::equal(weights->at("lm_head.weight"), head.to(at::kHalf).to(at::kFloat)));
  EXPECT_EQ(weights->at("lm_head.weight").scalar_type(), at::kFloat);
}

TEST_F(CheckpointLoader, MissingShardNamesTheIndexAndTheShard) {
  Write("model-00001-of-00002.safetensors", {{"lm_head.weight", at::randn({2, 2})}});
  WriteIndex({{"lm_head.weight", "model-00001-of-00002.safetensors"},
              {"model.language_model.norm.weight", "model-00002-of-00002.safetensors"}});
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kNotFound) << weights.status();
  const std::string msg(weights.status().message());
  EXPECT_NE(msg.find(PathOf("model.safetensors.index.json")), std::string::npos) << msg;
  EXPECT_NE(msg.find("model-00002-of-00002.safetensors"), std::string::npos) << msg;
}

TEST_F(CheckpointLoader, KeyMissingFromItsShardNamesBoth) {
  Write("model-00001-of-00001.safetensors", {{"lm_head.weight", at::randn({2, 2})}});
  WriteIndex({{"lm_head.weight", "model-00001-of-00001.safetensors"},
              {"model.language_model.norm.weight", "model-00001-of-00001.safetensors"}});
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument) << weights.status();
  const std::string msg(weights.status().message());
  EXPECT_NE(msg.find("'model.language_model.norm.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("model-00001-of-00001.safetensors"), std::string::npos) << msg;
}

TEST_F(CheckpointLoader, RejectsTwoKeysWithOneCanonicalName) {
  Write("model.safetensors", {{"language_model.model.norm.weight", at::ones({3})},
                              {"model.language_model.norm.weight", at::zeros({3})}});
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument) << weights.status();
  const std::string msg(weights.status().message());
  EXPECT_NE(msg.find("'language_model.model.norm.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'model.language_model.norm.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("lm.norm.weight"), std::string::npos) << msg;
}

TEST_F(CheckpointLoader, RejectsOneCanonicalNameAcrossShards) {
  Write("a.safetensors", {{"language_model.lm_head.weight", at::ones({2})}});
  Write("b.safetensors", {{"lm_head.weight", at::ones({2})}});
  WriteIndex(
      {{"language_model.lm_head.weight", "a.safetensors"}, {"lm_head.weight", "b.safetensors"}});
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument) << weights.status();
  const std::string msg(weights.status().message());
  EXPECT_NE(msg.find("'language_model.lm_head.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'lm_head.weight'"), std::string::npos) << msg;
}

TEST_F(CheckpointLoader, EmptyDirectoryIsNotFound) {
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kNotFound);
  const std::string msg(weights.status().message());
  EXPECT_NE(msg.find(PathOf("model.safetensors")), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors.index.json"), std::string::npos) << msg;
}

TEST_F(CheckpointLoader, CorruptShardNamesTheShard) {
  Write("good.safetensors", {{"lm_head.weight", at::ones({4})}});
  std::ofstream(PathOf("bad.safetensors"), std::ios::binary) << "nope";
  WriteIndex({{"lm_head.weight", "good.safetensors"},
              {"model.language_model.norm.weight", "bad.safetensors"}});
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(weights.status().message().find(PathOf("bad.safetensors")), std::string::npos)
      << weights.status();
}

TEST_F(CheckpointLoader, RejectsAnIndexWithoutAWeightMap) {
  std::ofstream(PathOf("model.safetensors.index.json")) << R"({"metadata": {}})";
  auto weights = LoadCheckpointWeights(dir_);
  ASSERT_FALSE(weights.ok());
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(weights.status().message().find("weight_map"), std::string::npos);
}

}  // namespace
}  // namespace vlc::engine
