// The shipped demo model (models/demo): it loads with the serving engine and answers a fixed
// handful of held-out test items right, with the full cache and with VL-Cache keeping 10% of the
// prompt's KV cache; and vlcache-eval's JSON carries the fields docs/BENCHMARKS.md documents.
//
// The expected answers are not written here: they are the VQA generator's, re-derived from each
// item's scene. The item indices are ones the shipped model answered right when it was shipped
// (its model card has the command); a retrained model must keep them right or say why.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/fs.h"
#include "engine/pipeline.h"
#include "tools/vqa/second_renderer.h"
#include "tools/vqa/vqa.h"

namespace vlc {
namespace {

const std::string kModel = std::string(VLC_SOURCE_DIR) + "/models/demo";

// Test-split items (vlcache-vqa --split test) the shipped model answered right when it shipped.
const std::vector<int64_t> kSingleItems = {0, 1, 3, 4, 7, 27};
const std::vector<int64_t> kClipItems = {0, 2, 3, 5};
// Drawn by the second renderer (tools/vqa/second_renderer.h), which the model never trained on.
const std::vector<int64_t> kSecondSingleItems = {0, 1, 2, 3, 4, 5};
const std::vector<int64_t> kSecondClipItems = {0, 2, 3, 4};


std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\n')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && s[i] == ' ') ++i;
  return s.substr(i);
}

class DemoModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    engine::PipelineOptions popts;
    popts.kv_page_tokens = 1;
    popts.kv_cache_bytes = int64_t{64} << 20;
    auto p = engine::Pipeline::Load(kModel, popts);
    ASSERT_TRUE(p.ok()) << "models/demo must load: " << p.status();
    pipeline_ = p->release();
  }
  static void TearDownTestSuite() {
    delete pipeline_;
    pipeline_ = nullptr;
  }

  // The model's answer to test item `index` of `frames` frames under `policy` at `budget`.
  // `second`: the frames drawn by the second renderer in the item's own style.
  static std::string Answer(int frames, int64_t index, const std::string& policy, double budget,
                            vqa::Item* item_out, bool second = false) {
    vqa::Options vo;
    vo.image_size = pipeline_->model().config().vision.image_size;
    vqa::Item item = vqa::MakeItem(vqa::Split::kTest, index, frames, vo);
    engine::GenerateRequest req;
    const vqa::SecondStyle style = vqa::SecondStyleFor(vqa::Split::kTest, index);
    for (size_t f = 0; f < item.clip.frames.size(); ++f) {
      req.media.images.push_back(
          second ? vqa::EncodePngSecond(item.clip.frames[f], vo.grid, style, static_cast<int>(f))
                 : vqa::EncodePng(item.clip.frames[f], vo));
    }
    req.prompt = vqa::Prompt(item);
    req.sampling.max_new_tokens = 8;
    req.sampling.temperature = 0;
    kvcache::PolicyConfig pc;
    pc.name = policy;
    pc.budget = budget;
    req.cache_policy = pc;
    auto res = pipeline_->Generate(req);
    EXPECT_TRUE(res.ok()) << res.status();
    *item_out = item;
    return res.ok() ? Trim(res->text) : std::string("<error>");
  }

  static engine::Pipeline* pipeline_;
};

engine::Pipeline* DemoModelTest::pipeline_ = nullptr;

TEST_F(DemoModelTest, ConfigIsTheShippedLlavaLayout) {
  const auto& c = pipeline_->model().config();
  EXPECT_EQ(c.vision.image_size, 96);
  EXPECT_GT(c.text.num_hidden_layers, 1);
  // Grouped-query attention, which the demo's Llama decoder is meant to have.
  EXPECT_LT(c.text.num_key_value_heads, c.text.num_attention_heads);
  int64_t bytes = 0;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model",
                        "preprocessor_config.json", "README.md"}) {
    std::ifstream in(kModel + "/" + f, std::ios::binary | std::ios::ate);
    ASSERT_TRUE(in.good()) << "models/demo/" << f << " is missing";
    bytes += static_cast<int64_t>(in.tellg());
  }
  EXPECT_LE(bytes, int64_t{25} << 20) << "the shipped model must stay within 25 MB";
}

// Single images, one item of each question kind and then some, with the full cache.
TEST_F(DemoModelTest, AnswersHeldOutSingleImagesWithTheFullCache) {
  for (int64_t index : kSingleItems) {
    vqa::Item item;
    const std::string got = Answer(1, index, "full", 1.0, &item);
    EXPECT_EQ(got, item.answer) << "test item " << index << ": " << vqa::Prompt(item);
  }
}

// 8-frame clips ("in frame f, ..."), with the full cache, VL-Cache at 10% and the server's
// default compression (vlcache-guard at 10%).
TEST_F(DemoModelTest, AnswersHeldOutClipsWithFullAndVlCache) {
  for (const char* policy : {"full", "vlcache", "vlcache-guard"}) {
    for (int64_t index : kClipItems) {
      vqa::Item item;
      const std::string got = Answer(8, index, policy, 0.1, &item);
      EXPECT_EQ(got, item.answer)
          << policy << ", 8-frame test item " << index << ": " << vqa::Prompt(item);
    }
  }
}

// Pictures drawn by other code (other sizes, proportions, strokes, digit forms), single images and
// 8-frame clips, with the full cache and the server's default compression.
TEST_F(DemoModelTest, AnswersTheSecondRenderersPicturesFullAndCompressed) {
  for (const char* policy : {"full", "vlcache-guard"}) {
    for (int64_t index : kSecondSingleItems) {
      vqa::Item item;
      const std::string got = Answer(1, index, policy, 0.1, &item, /*second=*/true);
      EXPECT_EQ(got, item.answer) << policy << ", second renderer, test item " << index << ": "
                                  << vqa::Prompt(item);
    }
    for (int64_t index : kSecondClipItems) {
      vqa::Item item;
      const std::string got = Answer(8, index, policy, 0.1, &item, /*second=*/true);
      EXPECT_EQ(got, item.answer) << policy << ", second renderer, 8-frame test item " << index
                                  << ": " << vqa::Prompt(item);
    }
  }
}

TEST(DemoEvalToolTest, JsonHasTheDocumentedFields) {
  const std::string dir = MakeTempDir("vlcache-demo-eval-");
  const std::string json_path = dir + "/eval.json";
  const std::string cmd = std::string(VLC_BIN_DIR) + "/vlcache-eval --model " + kModel +
                          " --split test --n 3 --policies full,vlcache,streamingllm "
                          "--budgets 0.1,0.4 --threads 1 --json " +
                          json_path + " > " + dir + "/out.txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(json_path);
  ASSERT_TRUE(in.good());
  const auto j = nlohmann::json::parse(in);
  ASSERT_TRUE(j.contains("results"));
  const auto& results = j["results"];
  // full once, then each other policy at each budget.
  ASSERT_EQ(results.size(), 5u);
  for (const auto& r : results) {
    for (const char* field : {"policy", "budget", "accuracy", "kv_ratio",
                              "prefill_overhead_ratio", "decode_ms_per_token"}) {
      EXPECT_TRUE(r.contains(field)) << field << " missing in " << r.dump();
    }
    EXPECT_GE(r["accuracy"].get<double>(), 0.0);
    EXPECT_LE(r["accuracy"].get<double>(), 1.0);
    // Every item is either listed as answered right or listed with what came out instead.
    ASSERT_TRUE(r.contains("correct_items") && r.contains("wrong")) << r.dump();
    EXPECT_EQ(r["correct_items"].size() + r["wrong"].size(), 3u) << r.dump();
    EXPECT_DOUBLE_EQ(r["accuracy"].get<double>(), r["correct_items"].size() / 3.0);
    for (const auto& w : r["wrong"]) {
      for (const char* field : {"index", "kind", "question", "expected", "got"}) {
        EXPECT_TRUE(w.contains(field)) << field << " missing in " << w.dump();
      }
      EXPECT_NE(w["expected"], w["got"]) << w.dump();
    }
    if (r["policy"] == "full") {
      EXPECT_DOUBLE_EQ(r["kv_ratio"].get<double>(), 1.0);
    } else {
      // The kept share follows the budget (one-token pages: exact up to rounding per layer).
      EXPECT_NEAR(r["kv_ratio"].get<double>(), r["budget"].get<double>(), 0.06) << r.dump();
    }
  }
  RemoveTree(dir);
}

}  // namespace
}  // namespace vlc
