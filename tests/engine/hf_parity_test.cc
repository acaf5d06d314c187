// Checkpoint compatibility with Hugging Face transformers. Each fixture under
// tests/fixtures/hf-llava-tiny-*/ is a tiny random LLaVA checkpoint that transformers itself built
// and saved (tools/hf_reference/make_fixture.py: a Llama decoder with GQA or a Mistral one with a
// sliding window, in the weight-key layouts transformers has saved), together with the input ids,
// pixel values, logits and greedy ids transformers computed for a fixed prompt and image. The
// engine must load the directory unchanged and reproduce those numbers; its own preprocessing and
// tokenizer must reproduce the inputs.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "engine/config.h"
#include "engine/media.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

namespace vlc::engine {
namespace {

// fp32 on both sides; what remains is summation order (BLAS, fused projections).
constexpr double kLogitsTolerance = 1e-3;
// Pillow's bicubic resize is reproduced exactly (8-bit after each pass), so the pixels differ
// only by the float rounding of rescale and normalise.
constexpr double kPixelTolerance = 1e-5;

struct Reference {
  std::string dir;
  nlohmann::json manifest;
  std::vector<int> input_ids;
  std::vector<int> generated_ids;
  at::Tensor pixel_values;  // [1, 3, S, S]
  at::Tensor logits;        // [1 + decode steps, vocab]: prefill's last position, then each step
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A raw little-endian float32 file of the manifest entry `entry` ({"file", "shape"}).
at::Tensor ReadF32(const std::string& dir, const nlohmann::json& entry) {
  const std::string path = dir + "/" + entry.at("file").get<std::string>();
  const std::vector<int64_t> shape = entry.at("shape").get<std::vector<int64_t>>();
  const std::string raw = ReadAll(path);
  at::Tensor t = at::empty(shape, at::kFloat);
  EXPECT_EQ(raw.size(), static_cast<size_t>(t.numel()) * sizeof(float)) << path;
  if (raw.size() == static_cast<size_t>(t.numel()) * sizeof(float)) {
    std::memcpy(t.data_ptr<float>(), raw.data(), raw.size());  // this machine is little-endian
  }
  return t;
}

Reference LoadReference(const std::string& name) {
  Reference r;
  r.dir = absl::StrCat(VLC_SOURCE_DIR, "/tests/fixtures/", name);
  r.manifest = nlohmann::json::parse(ReadAll(r.dir + "/reference.json"));
  r.input_ids = r.manifest.at("input_ids").get<std::vector<int>>();
  r.generated_ids = r.manifest.at("generated_ids").get<std::vector<int>>();
  r.pixel_values = ReadF32(r.dir, r.manifest.at("pixel_values"));
  r.logits = ReadF32(r.dir, r.manifest.at("logits"));
  return r;
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

class HfParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    ref_ = LoadReference(GetParam());
    auto model = LlavaModel::Load(ref_.dir);
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = std::move(model).value();
  }
  // One line per measurement, key=value, so a run's numbers can be collected from the log.
  void Report(const std::string& what, double value) {
    RecordProperty(what, absl::StrCat(value));
    std::cout << "hf_parity fixture=" << GetParam() << " " << what << "=" << value << "\n";
  }

  Reference ref_;
  std::unique_ptr<LlavaModel> model_;
};

TEST_P(HfParity, LoadsTheCheckpointAsTransformersConfiguredIt) {
  const LlavaConfig& c = model_->config();
  const auto& m = ref_.manifest;
  EXPECT_EQ(c.image_token_index, m.at("image_token_index").get<int>());
  EXPECT_EQ(c.text.model_type, m.at("args").at("model").get<std::string>());
  // transformers >= 5 nests rope_theta in rope_parameters; Mistral's 1e6 must not fall back to
  // Llama's default of 1e4.
  EXPECT_DOUBLE_EQ(c.text.rope_theta, m.at("rope_theta").get<double>());
  const int window = m.at("sliding_window").is_null() ? 0 : m.at("sliding_window").get<int>();
  EXPECT_EQ(c.text.sliding_window, window);
  if (c.text.model_type == "mistral") {
    // The window must be shorter than the prompt, else the fixture would not test it.
    EXPECT_GT(window, 0);
    EXPECT_LT(window, static_cast<int>(ref_.input_ids.size()));
  }
  EXPECT_LT(c.text.num_key_value_heads, c.text.num_attention_heads);  // GQA
  EXPECT_EQ(ref_.logits.size(1), c.text.vocab_size);
}

TEST_P(HfParity, PrefillAndGreedyDecodeMatchTransformers) {
  auto visual = model_->EncodeImages(ref_.pixel_values);
  ASSERT_TRUE(visual.ok()) << visual.status();
  auto embeds = model_->EmbedPrompt(ref_.input_ids, *visual);
  ASSERT_TRUE(embeds.ok()) << embeds.status();
  auto cache = model_->NewContiguousCache();
  ASSERT_TRUE(cache->AddSequence(0).ok());
  auto logits = model_->Prefill(0, *embeds, 0, cache.get());
  ASSERT_TRUE(logits.ok()) << logits.status();

  const int steps = ref_.manifest.at("decode_steps").get<int>();
  ASSERT_EQ(ref_.logits.size(0), steps + 1);
  ASSERT_EQ(static_cast<int>(ref_.generated_ids.size()), steps + 1);
  std::vector<int> generated;
  int64_t pos = static_cast<int64_t>(ref_.input_ids.size());
  for (int row = 0; row <= steps; ++row) {
    const double diff = MaxAbsDiff(*logits, ref_.logits[row].unsqueeze(0));
    Report(row == 0 ? "prefill_max_abs_diff" : absl::StrCat("decode_step_", row, "_max_abs_diff"),
           diff);
    EXPECT_LT(diff, kLogitsTolerance) << "logits row " << row;
    const int tok = static_cast<int>(logits->argmax(-1).item<int64_t>());
    generated.push_back(tok);
    if (row == steps) break;
    // Feed transformers' id, so that one differing id does not hide the later steps' numbers.
    logits = model_->DecodeStep({0}, {ref_.generated_ids[row]}, {pos++}, cache.get());
    ASSERT_TRUE(logits.ok()) << logits.status();
  }
  EXPECT_EQ(generated, ref_.generated_ids);
}

TEST_P(HfParity, ForwardFullMatchesTheCachedPath) {
  // The cache-free reference path over prompt + generated ids gives the same rows.
  auto visual = model_->EncodeImages(ref_.pixel_values);
  ASSERT_TRUE(visual.ok()) << visual.status();
  std::vector<int> ids = ref_.input_ids;
  ids.insert(ids.end(), ref_.generated_ids.begin(), ref_.generated_ids.end() - 1);
  auto embeds = model_->EmbedPrompt(ids, *visual);
  ASSERT_TRUE(embeds.ok()) << embeds.status();
  auto full = model_->ForwardFull(*embeds);
  ASSERT_TRUE(full.ok()) << full.status();
  const int64_t n = static_cast<int64_t>(ref_.input_ids.size());
  const double diff = MaxAbsDiff(full->slice(0, n - 1), ref_.logits);
  Report("forward_full_max_abs_diff", diff);
  EXPECT_LT(diff, kLogitsTolerance);
}

TEST_P(HfParity, PreprocessingMatchesClipImageProcessor) {
  auto bytes =
      ReadFileBytes(ref_.dir + "/" + ref_.manifest.at("image").get<std::string>(), 1 << 20);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto image = DecodeImage(*bytes);
  ASSERT_TRUE(image.ok()) << image.status();
  // The fixture's image is larger than the crop and not square: both edges shrink, so the
  // antialiasing filter and the centre crop both matter.
  const int size = model_->config().vision.image_size;
  EXPECT_GT(image->width, size);
  EXPECT_GT(image->height, size);
  EXPECT_NE(image->width, image->height);
  auto cfg = PreprocessorConfig::FromFileOrDefault(ref_.dir + "/preprocessor_config.json", size);
  ASSERT_TRUE(cfg.ok()) << cfg.status();
  auto pixels = PreprocessImages({*image}, *cfg);
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  ASSERT_EQ(pixels->sizes(), ref_.pixel_values.sizes());
  const double diff = MaxAbsDiff(*pixels, ref_.pixel_values);
  Report("pixel_values_max_abs_diff", diff);
  EXPECT_LT(diff, kPixelTolerance);
}

TEST_P(HfParity, TokenizerEncodesTheSamePromptIds) {
  const LlavaConfig& c = model_->config();
  auto tok = Tokenizer::Load(ref_.dir, c.image_token_index);
  ASSERT_TRUE(tok.ok()) << tok.status();
  auto ids = (*tok)->EncodePrompt(ref_.manifest.at("prompt").get<std::string>(),
                                  c.visual_tokens_per_image(),
                                  ref_.manifest.at("chat_template").get<std::string>());
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, ref_.input_ids) << "engine: " << absl::StrJoin(*ids, " ")
                                  << "\ntransformers: " << absl::StrJoin(ref_.input_ids, " ");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, HfParity,
                         ::testing::Values("hf-llava-tiny-llama-new", "hf-llava-tiny-llama-old",
                                           "hf-llava-tiny-llama-native",
                                           "hf-llava-tiny-mistral-new",
                                           "hf-llava-tiny-mistral-old"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return absl::StrReplaceAll(info.param, {{"-", "_"}});
                         });

}  // namespace
}  // namespace vlc::engine
