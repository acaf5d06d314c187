// The tiny checkpoint writer: the Hugging Face files it writes, that the engine's own readers load
// them back in every layout, shard count and dtype, and that a seed fixes every byte.
#include "common/fs.h"
#include "tools/make_tiny.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "engine/config.h"
#include "engine/safetensors.h"
#include "engine/tokenizer.h"
#include "engine/weights.h"

namespace vlc::tools {
namespace {

namespace fs = std::filesystem;
using Shapes = std::map<std::string, std::vector<int64_t>>;

// A fresh directory under /tmp, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/vlc_make_tiny_test_XXXXXX";
    if (mkdtemp(tmpl) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    if (!path_.empty()) RemoveTree(path_);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }

 private:
  std::string path_;
};

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::set<std::string> FileNames(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename());
  return names;
}

// Every weight of LlavaForConditionalGeneration for `c`, by canonical name (engine/weights.h),
// written out from the Hugging Face module shapes rather than from the generator under test.
Shapes ExpectedShapes(const engine::LlavaConfig& c) {
  const auto& v = c.vision;
  const auto& t = c.text;
  const int64_t hv = v.hidden_size;
  const int64_t ht = t.hidden_size;
  const int64_t q = static_cast<int64_t>(t.num_attention_heads) * t.head_dim;
  const int64_t kv = static_cast<int64_t>(t.num_key_value_heads) * t.head_dim;
  Shapes s;
  s["vision.embeddings.class_embedding"] = {hv};
  s["vision.embeddings.patch_embedding.weight"] = {hv, 3, v.patch_size, v.patch_size};
  s["vision.embeddings.position_embedding.weight"] = {v.num_patches() + 1, hv};
  for (const char* norm : {"pre_layrnorm", "post_layernorm"}) {
    s[absl::StrCat("vision.", norm, ".weight")] = {hv};
    s[absl::StrCat("vision.", norm, ".bias")] = {hv};
  }
  for (int i = 0; i < v.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("vision.encoder.layers.", i, ".");
    for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
      s[absl::StrCat(p, "self_attn.", proj, ".weight")] = {hv, hv};
      s[absl::StrCat(p, "self_attn.", proj, ".bias")] = {hv};
    }
    for (const char* norm : {"layer_norm1", "layer_norm2"}) {
      s[absl::StrCat(p, norm, ".weight")] = {hv};
      s[absl::StrCat(p, norm, ".bias")] = {hv};
    }
    s[p + "mlp.fc1.weight"] = {v.intermediate_size, hv};
    s[p + "mlp.fc1.bias"] = {v.intermediate_size};
    s[p + "mlp.fc2.weight"] = {hv, v.intermediate_size};
    s[p + "mlp.fc2.bias"] = {hv};
  }
  s["projector.linear_1.weight"] = {ht, hv};
  s["projector.linear_1.bias"] = {ht};
  s["projector.linear_2.weight"] = {ht, ht};
  s["projector.linear_2.bias"] = {ht};
  s["lm.embed_tokens.weight"] = {t.vocab_size, ht};
  for (int i = 0; i < t.num_hidden_layers; ++i) {
    const std::string p = absl::StrCat("lm.layers.", i, ".");
    s[p + "self_attn.q_proj.weight"] = {q, ht};
    s[p + "self_attn.k_proj.weight"] = {kv, ht};
    s[p + "self_attn.v_proj.weight"] = {kv, ht};
    s[p + "self_attn.o_proj.weight"] = {ht, q};
    s[p + "input_layernorm.weight"] = {ht};
    s[p + "post_attention_layernorm.weight"] = {ht};
    s[p + "mlp.gate_proj.weight"] = {t.intermediate_size, ht};
    s[p + "mlp.up_proj.weight"] = {t.intermediate_size, ht};
    s[p + "mlp.down_proj.weight"] = {ht, t.intermediate_size};
  }
  s["lm.norm.weight"] = {ht};
  s["lm_head.weight"] = {t.vocab_size, ht};
  return s;
}

engine::LlavaConfig LoadConfig(const TempDir& dir) {
  auto cfg = engine::LlavaConfig::FromFile(dir / "config.json");
  EXPECT_TRUE(cfg.ok()) << cfg.status();
  return cfg.ok() ? *cfg : engine::LlavaConfig{};
}

engine::WeightMap LoadWeights(const TempDir& dir) {
  auto weights = engine::LoadCheckpointWeights(dir.path());
  EXPECT_TRUE(weights.ok()) << weights.status();
  return weights.ok() ? *weights : engine::WeightMap{};
}

// The checkpoint holds exactly the weights of `cfg`, with their shapes.
void ExpectAllWeights(const engine::WeightMap& weights, const engine::LlavaConfig& cfg) {
  const Shapes expected = ExpectedShapes(cfg);
  EXPECT_EQ(weights.size(), expected.size());
  for (const auto& [name, shape] : expected) {
    const auto it = weights.find(name);
    ASSERT_NE(it, weights.end()) << "missing " << name;
    EXPECT_EQ(it->second.sizes().vec(), shape) << name;
    EXPECT_EQ(it->second.scalar_type(), at::kFloat) << name;
  }
}

std::set<std::string> HfKeys(const std::string& safetensors_path) {
  auto file = engine::SafetensorsFile::Open(safetensors_path);
  EXPECT_TRUE(file.ok()) << file.status();
  std::set<std::string> keys;
  if (file.ok()) {
    for (const auto& info : (*file)->tensors()) keys.insert(info.name);
  }
  return keys;
}

TEST(MakeTiny, WritesTheHuggingFaceCheckpointFiles) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), TinyOptions{}).ok());
  EXPECT_EQ(FileNames(dir.path()),
            (std::set<std::string>{"config.json", "model.safetensors", "preprocessor_config.json",
                                   "tokenizer.model"}));
}

TEST(MakeTiny, CreatesMissingParentDirectories) {
  TempDir dir;
  const std::string nested = dir / "a/b/tiny";
  ASSERT_TRUE(MakeTinyCheckpoint(nested, TinyOptions{}).ok());
  EXPECT_TRUE(fs::exists(fs::path(nested) / "config.json"));
}

TEST(MakeTiny, ConfigIsTheTinyLlamaConfig) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), TinyOptions{}).ok());
  const engine::LlavaConfig cfg = LoadConfig(dir);
  auto tok = engine::Tokenizer::Load(dir.path(), cfg.image_token_index);
  ASSERT_TRUE(tok.ok()) << tok.status();

  EXPECT_EQ(cfg.vision.hidden_size, 32);
  EXPECT_EQ(cfg.vision.intermediate_size, 64);
  EXPECT_EQ(cfg.vision.num_hidden_layers, 2);
  EXPECT_EQ(cfg.vision.num_attention_heads, 2);
  EXPECT_EQ(cfg.vision.image_size, 32);
  EXPECT_EQ(cfg.vision.patch_size, 8);
  EXPECT_EQ(cfg.vision.hidden_act, "quick_gelu");
  EXPECT_EQ(cfg.visual_tokens_per_image(), 16);

  EXPECT_EQ(cfg.text.model_type, "llama");
  EXPECT_EQ(cfg.text.hidden_size, 64);
  EXPECT_EQ(cfg.text.intermediate_size, 128);
  EXPECT_EQ(cfg.text.num_hidden_layers, 2);
  EXPECT_EQ(cfg.text.num_attention_heads, 4);
  EXPECT_EQ(cfg.text.num_key_value_heads, 2);
  EXPECT_EQ(cfg.text.head_dim, 16);
  EXPECT_DOUBLE_EQ(cfg.text.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(cfg.text.rms_norm_eps, 1e-5);
  EXPECT_EQ(cfg.text.max_position_embeddings, 4096);
  EXPECT_EQ(cfg.text.bos_token_id, (*tok)->bos_id());
  EXPECT_EQ(cfg.text.eos_token_id, (*tok)->eos_id());
  EXPECT_FALSE(cfg.text.tie_word_embeddings);

  // The image token follows the tokenizer's vocabulary; the table is padded to a multiple of 8.
  EXPECT_EQ(cfg.image_token_index, (*tok)->vocab_size());
  EXPECT_GT(cfg.text.vocab_size, cfg.image_token_index);
  EXPECT_EQ(cfg.text.vocab_size % 8, 0);
  EXPECT_LT(cfg.text.vocab_size - cfg.image_token_index, 9);
  EXPECT_EQ(cfg.vision_feature_layer, -2);
  EXPECT_EQ(cfg.vision_feature_select_strategy, "default");
  EXPECT_EQ(cfg.projector_hidden_act, "gelu");

  auto pre = engine::PreprocessorConfig::FromFileOrDefault(dir / "preprocessor_config.json", 224);
  ASSERT_TRUE(pre.ok()) << pre.status();
  EXPECT_EQ(pre->shortest_edge, 32);
  EXPECT_EQ(pre->crop_height, 32);
  EXPECT_EQ(pre->crop_width, 32);
}

TEST(MakeTiny, TinyConfigFollowsTheOptions) {
  TinyOptions opts;
  opts.text_model_type = "mistral";
  opts.vision_feature_select_strategy = "full";
  const engine::LlavaConfig cfg = TinyConfig(opts, 500);
  EXPECT_EQ(cfg.text.model_type, "mistral");
  EXPECT_DOUBLE_EQ(cfg.text.rope_theta, 1000000.0);
  EXPECT_EQ(cfg.text.sliding_window, 0);
  EXPECT_EQ(cfg.image_token_index, 500);
  EXPECT_EQ(cfg.text.vocab_size, 504);
  EXPECT_EQ(cfg.visual_tokens_per_image(), 17);  // the CLS token is kept
  EXPECT_EQ(TinyConfig(TinyOptions{}, 504).text.vocab_size, 512);
}

// Real-sized shapes for benchmarks: the vocabulary grows with unused control pieces (the image
// token last, every id decodable), and the vision tower takes the sizes asked for.
TEST(MakeTiny, VocabularyAndVisionSizesFollowTheOptions) {
  TempDir dir;
  TinyOptions opts;
  opts.text_vocab_size = 1000;
  opts.vision_hidden_size = 48;
  opts.vision_intermediate_size = 96;
  opts.vision_layers = 3;
  opts.vision_heads = 4;
  opts.image_size = 56;
  opts.patch_size = 14;
  opts.dtype = "BF16";
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), opts).ok());
  const engine::LlavaConfig cfg = LoadConfig(dir);
  EXPECT_EQ(cfg.text.vocab_size, 1000);
  EXPECT_EQ(cfg.image_token_index, 999);
  EXPECT_EQ(cfg.vision.hidden_size, 48);
  EXPECT_EQ(cfg.vision.num_hidden_layers, 3);
  EXPECT_EQ(cfg.vision.num_patches(), 16);
  auto tok = engine::Tokenizer::Load(dir.path(), cfg.image_token_index);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->vocab_size(), 999);
  // Ordinary text never encodes to a padding piece, and one decodes to nothing.
  auto ids = (*tok)->Encode("the red square is left of the blue circle", false);
  for (int id : ids) EXPECT_LT(id, 512) << id;
  EXPECT_EQ((*tok)->Decode({998}), "");
  auto weights = engine::LoadCheckpointWeights(dir.path());
  ASSERT_TRUE(weights.ok()) << weights.status();
  EXPECT_EQ(weights->at("lm.embed_tokens.weight").sizes().vec(), (std::vector<int64_t>{1000, 64}));
  EXPECT_EQ(weights->at("vision.encoder.layers.2.mlp.fc1.weight").sizes().vec(),
            (std::vector<int64_t>{96, 48}));
  EXPECT_EQ(weights->at("vision.embeddings.patch_embedding.weight").sizes().vec(),
            (std::vector<int64_t>{48, 3, 14, 14}));
}

TEST(MakeTiny, MistralCheckpointReadsBackAsMistral) {
  TempDir dir;
  TinyOptions opts;
  opts.text_model_type = "mistral";
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), opts).ok());
  const engine::LlavaConfig cfg = LoadConfig(dir);
  EXPECT_EQ(cfg.text.model_type, "mistral");
  EXPECT_DOUBLE_EQ(cfg.text.rope_theta, 1000000.0);
  EXPECT_EQ(cfg.text.sliding_window, 0);
  ExpectAllWeights(LoadWeights(dir), cfg);
}

TEST(MakeTiny, OldLayoutUsesLanguageModelModelKeys) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), TinyOptions{}).ok());
  const std::set<std::string> keys = HfKeys(dir / "model.safetensors");
  for (const char* key :
       {"language_model.model.embed_tokens.weight", "language_model.lm_head.weight",
        "language_model.model.layers.1.self_attn.k_proj.weight", "language_model.model.norm.weight",
        "vision_tower.vision_model.pre_layrnorm.weight",
        "vision_tower.vision_model.encoder.layers.0.mlp.fc1.bias",
        "vision_tower.vision_model.embeddings.class_embedding",
        "multi_modal_projector.linear_2.weight"}) {
    EXPECT_EQ(keys.count(key), 1u) << key;
  }
  for (const std::string& key : keys) {
    EXPECT_FALSE(key.rfind("model.", 0) == 0 || key == "lm_head.weight") << key;
  }
  ExpectAllWeights(LoadWeights(dir), LoadConfig(dir));
}

TEST(MakeTiny, NewLayoutUsesModelLanguageModelKeys) {
  TempDir dir;
  TinyOptions opts;
  opts.new_key_layout = true;
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), opts).ok());
  const std::set<std::string> keys = HfKeys(dir / "model.safetensors");
  for (const char* key : {"model.language_model.embed_tokens.weight", "lm_head.weight",
                          "model.language_model.layers.0.mlp.down_proj.weight",
                          "model.vision_tower.vision_model.post_layernorm.bias",
                          "model.multi_modal_projector.linear_1.weight"}) {
    EXPECT_EQ(keys.count(key), 1u) << key;
  }
  for (const std::string& key : keys) {
    EXPECT_TRUE(key.rfind("model.", 0) == 0 || key == "lm_head.weight") << key;
    EXPECT_EQ(key.find("language_model.model."), std::string::npos) << key;
  }
  ExpectAllWeights(LoadWeights(dir), LoadConfig(dir));
}

TEST(MakeTiny, SafetensorsCarryFormatMetadata) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), TinyOptions{}).ok());
  auto file = engine::SafetensorsFile::Open(dir / "model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata(), (std::map<std::string, std::string>{{"format", "pt"}}));
  for (const auto& info : (*file)->tensors()) EXPECT_EQ(info.dtype, "F32") << info.name;
}

TEST(MakeTiny, WeightsLookLikeAFreshInitialization) {
  TempDir dir;
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), TinyOptions{}).ok());
  const engine::WeightMap w = LoadWeights(dir);
  ASSERT_FALSE(w.empty());
  EXPECT_TRUE(at::equal(w.at("lm.norm.weight"), at::ones({64})));
  EXPECT_TRUE(at::equal(w.at("vision.pre_layrnorm.bias"), at::zeros({32})));
  const double std = w.at("lm.embed_tokens.weight").std().item<double>();
  EXPECT_NEAR(std, 0.02, 0.004);
}

TEST(MakeTiny, ShardsSplitTheKeysAndIndexThem) {
  TempDir sharded;
  TinyOptions opts;
  opts.num_shards = 3;
  ASSERT_TRUE(MakeTinyCheckpoint(sharded.path(), opts).ok());
  const std::set<std::string> names = FileNames(sharded.path());
  EXPECT_EQ(names.count("model.safetensors"), 0u);
  const std::vector<std::string> shards = {"model-00001-of-00003.safetensors",
                                           "model-00002-of-00003.safetensors",
                                           "model-00003-of-00003.safetensors"};
  for (const std::string& shard : shards) EXPECT_EQ(names.count(shard), 1u) << shard;

  const auto index = nlohmann::json::parse(ReadBytes(sharded / "model.safetensors.index.json"));
  std::map<std::string, std::string> expected_map;
  int64_t total_bytes = 0;
  for (const std::string& shard : shards) {
    auto file = engine::SafetensorsFile::Open(sharded / shard);
    ASSERT_TRUE(file.ok()) << file.status();
    EXPECT_FALSE((*file)->tensors().empty()) << shard;
    for (const auto& info : (*file)->tensors()) {
      expected_map[info.name] = shard;
      total_bytes += static_cast<int64_t>(info.end - info.begin);
    }
  }
  using KeyToFile = std::map<std::string, std::string>;
  EXPECT_EQ(index["weight_map"].get<KeyToFile>(), expected_map);
  EXPECT_EQ(index["metadata"]["total_size"].get<int64_t>(), total_bytes);

  // The same seed gives the same weights however they are split.
  TempDir single;
  ASSERT_TRUE(MakeTinyCheckpoint(single.path(), TinyOptions{}).ok());
  const engine::WeightMap a = LoadWeights(sharded);
  const engine::WeightMap b = LoadWeights(single);
  ExpectAllWeights(a, LoadConfig(sharded));
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, tensor] : a) {
    ASSERT_EQ(b.count(name), 1u) << name;
    EXPECT_TRUE(at::equal(tensor, b.at(name))) << name;
  }
}

TEST(MakeTiny, RewritingADirectoryLeavesOneCheckpoint) {
  TempDir dir;
  TinyOptions opts;
  opts.num_shards = 2;
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), opts).ok());
  ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), TinyOptions{}).ok());
  EXPECT_EQ(FileNames(dir.path()),
            (std::set<std::string>{"config.json", "model.safetensors", "preprocessor_config.json",
                                   "tokenizer.model"}));
  ExpectAllWeights(LoadWeights(dir), LoadConfig(dir));
}

TEST(MakeTiny, HalfPrecisionStoresRoundedWeights) {
  TempDir f32;
  ASSERT_TRUE(MakeTinyCheckpoint(f32.path(), TinyOptions{}).ok());
  const engine::WeightMap reference = LoadWeights(f32);
  for (const auto& [name, dtype] : std::vector<std::pair<std::string, at::ScalarType>>{
           {"F16", at::kHalf}, {"BF16", at::kBFloat16}}) {
    TempDir dir;
    TinyOptions opts;
    opts.dtype = name;
    ASSERT_TRUE(MakeTinyCheckpoint(dir.path(), opts).ok()) << name;
    auto file = engine::SafetensorsFile::Open(dir / "model.safetensors");
    ASSERT_TRUE(file.ok()) << file.status();
    for (const auto& info : (*file)->tensors()) EXPECT_EQ(info.dtype, name) << info.name;
    const engine::WeightMap w = LoadWeights(dir);
    ExpectAllWeights(w, LoadConfig(dir));
    for (const auto& [key, tensor] : reference) {
      ASSERT_EQ(w.count(key), 1u) << key;
      EXPECT_TRUE(at::equal(w.at(key), tensor.to(dtype).to(at::kFloat))) << name << " " << key;
    }
  }
}

TEST(MakeTiny, SameSeedWritesIdenticalBytes) {
  TinyOptions opts;
  opts.seed = 7;
  opts.num_shards = 2;
  TempDir a;
  TempDir b;
  ASSERT_TRUE(MakeTinyCheckpoint(a.path(), opts).ok());
  ASSERT_TRUE(MakeTinyCheckpoint(b.path(), opts).ok());
  const std::set<std::string> names = FileNames(a.path());
  ASSERT_EQ(names, FileNames(b.path()));
  for (const std::string& name : names) {
    EXPECT_EQ(ReadBytes(a / name), ReadBytes(b / name)) << name;
  }
}

TEST(MakeTiny, DifferentSeedsGiveDifferentWeightsAndTheSameTokenizer) {
  TinyOptions one;
  one.seed = 1;
  TinyOptions two;
  two.seed = 2;
  TempDir a;
  TempDir b;
  ASSERT_TRUE(MakeTinyCheckpoint(a.path(), one).ok());
  ASSERT_TRUE(MakeTinyCheckpoint(b.path(), two).ok());
  EXPECT_EQ(ReadBytes(a / "tokenizer.model"), ReadBytes(b / "tokenizer.model"));
  EXPECT_EQ(ReadBytes(a / "config.json"), ReadBytes(b / "config.json"));
  const engine::WeightMap wa = LoadWeights(a);
  const engine::WeightMap wb = LoadWeights(b);
  for (const char* name : {"lm.embed_tokens.weight", "vision.embeddings.patch_embedding.weight",
                           "projector.linear_1.bias", "lm_head.weight"}) {
    ASSERT_EQ(wa.count(name) + wb.count(name), 2u) << name;
    EXPECT_FALSE(at::equal(wa.at(name), wb.at(name))) << name;
  }
}

TEST(MakeTiny, RejectsInvalidOptions) {
  TempDir dir;
  TinyOptions bad_dtype;
  bad_dtype.dtype = "F64";
  TinyOptions bad_model;
  bad_model.text_model_type = "gpt2";
  TinyOptions bad_strategy;
  bad_strategy.vision_feature_select_strategy = "cls";
  TinyOptions no_shards;
  no_shards.num_shards = 0;
  TinyOptions too_many_shards;
  too_many_shards.num_shards = 100000;
  TinyOptions small_vocab;  // below the tokenizer's pieces plus the image token
  small_vocab.text_vocab_size = 100;
  TinyOptions bad_patch;
  bad_patch.image_size = 30;  // not a multiple of the patch size 8
  TinyOptions bad_vision_heads;
  bad_vision_heads.vision_heads = 5;  // does not divide 32
  for (const TinyOptions& opts : {bad_dtype, bad_model, bad_strategy, no_shards, too_many_shards,
                                  small_vocab, bad_patch, bad_vision_heads}) {
    EXPECT_EQ(MakeTinyCheckpoint(dir.path(), opts).code(), absl::StatusCode::kInvalidArgument);
  }
  // Options are checked before anything is written.
  EXPECT_TRUE(FileNames(dir.path()).empty());
}

TEST(MakeTiny, CommandLineWritesACheckpointAndReportsErrors) {
  const std::string tool = std::string(VLC_BIN_DIR) + "/vlcache-make-tiny";
  ASSERT_TRUE(fs::exists(tool)) << tool << " is not built";
  TempDir dir;
  const std::string out = dir / "cli";
  const std::string ok_cmd =
      absl::StrCat(tool, " --out ", out, " --seed 3 --text-model mistral --new-layout --dtype BF16",
                   " --shards 2 --strategy full > ", dir / "stdout.txt");
  ASSERT_EQ(std::system(ok_cmd.c_str()), 0) << ok_cmd;
  EXPECT_TRUE(fs::exists(fs::path(out) / "model-00002-of-00002.safetensors"));
  EXPECT_NE(ReadBytes(dir / "stdout.txt").find(out), std::string::npos);
  auto cfg = engine::LlavaConfig::FromFile((fs::path(out) / "config.json").string());
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  EXPECT_EQ(cfg->text.model_type, "mistral");
  EXPECT_EQ(cfg->vision_feature_select_strategy, "full");

  // A failing run exits 1 and says why on stderr.
  const std::string bad_cmd =
      absl::StrCat(tool, " --out ", out, " --seed 3 --shards 100000 2> ", dir / "stderr.txt");
  const int status = std::system(bad_cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_NE(ReadBytes(dir / "stderr.txt").find("num_shards"), std::string::npos);
}

}  // namespace
}  // namespace vlc::tools
