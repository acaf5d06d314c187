// The model's cached paths against full recomputation, batching, and its input checks.
#include "engine/model.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include "engine/generator.h"
#include "kvcache/attention.h"
#include "tests/engine/test_models.h"
#include "tools/random_weights.h"

namespace vlc::engine {
namespace {

// A prompt of text ids around one image's visual tokens.
std::vector<int> PromptIds(const LlavaConfig& c, int text_before, int text_after, int seed) {
  std::vector<int> ids = {1};
  for (int i = 0; i < text_before; ++i) ids.push_back(3 + (seed * 7 + i * 13) % 80);
  for (int i = 0; i < c.visual_tokens_per_image(); ++i) ids.push_back(c.image_token_index);
  for (int i = 0; i < text_after; ++i) ids.push_back(3 + (seed * 11 + i * 5) % 80);
  return ids;
}

at::Tensor Visual(const LlavaModel& m, int seed) {
  at::manual_seed(seed);
  auto pixels = at::randn({1, 3, 32, 32});
  auto v = m.EncodeImages(pixels);
  EXPECT_TRUE(v.ok()) << v.status();
  return *v;
}

void ExpectCachedDecodeMatchesFull(const LlavaConfig& c) {
  auto m = RandomModel(c);
  auto ids = PromptIds(c, 3, 5, 1);
  auto visual = Visual(*m, 1);
  auto embeds = m->EmbedPrompt(ids, visual);
  ASSERT_TRUE(embeds.ok()) << embeds.status();
  auto cache = m->NewContiguousCache();
  ASSERT_TRUE(cache->AddSequence(1).ok());
  auto logits = m->Prefill(1, *embeds, 0, cache.get());
  ASSERT_TRUE(logits.ok()) << logits.status();
  at::Tensor all = *embeds;
  double worst = 0;
  for (int step = 0; step < 20; ++step) {
    auto full = m->ForwardFull(all);
    ASSERT_TRUE(full.ok()) << full.status();
    auto ref = full->slice(0, full->size(0) - 1);
    worst = std::max(worst, (ref - *logits).abs().max().item<double>());
    const int tok = static_cast<int>(logits->argmax(-1).item<int64_t>());
    const int64_t pos = all.size(0);
    auto next = m->DecodeStep({1}, {tok}, {pos}, cache.get());
    ASSERT_TRUE(next.ok()) << next.status();
    logits = next;
    auto e = m->EmbedPrompt({tok}, at::Tensor());
    ASSERT_TRUE(e.ok());
    all = at::cat({all, *e}, 0);
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_EQ(cache->Length(1, 0), all.size(0));  // every fed token is cached
}

TEST(LlavaModel, CachedDecodeEqualsFullRecomputationOver20Steps) {
  ExpectCachedDecodeMatchesFull(SmallConfig());
}

TEST(LlavaModel, SlidingWindowDecodeEqualsFullRecomputation) {
  // A window shorter than the prompt: decode must hide exactly the keys prefill hides.
  ExpectCachedDecodeMatchesFull(SmallConfig("mistral", 9));
}

TEST(LlavaModel, ContinuedPrefillEqualsFullForward) {
  auto c = SmallConfig();
  auto m = RandomModel(c);
  auto ids = PromptIds(c, 4, 9, 2);
  auto embeds = *m->EmbedPrompt(ids, Visual(*m, 2));
  const int64_t n = embeds.size(0), split = n - 6;
  auto cache = m->NewContiguousCache();
  ASSERT_TRUE(cache->AddSequence(5).ok());
  ASSERT_TRUE(m->Prefill(5, embeds.slice(0, 0, split), 0, cache.get()).ok());
  auto tail = m->Prefill(5, embeds.slice(0, split), split, cache.get(), /*all_logits=*/true);
  ASSERT_TRUE(tail.ok()) << tail.status();
  auto full = *m->ForwardFull(embeds);
  EXPECT_LT((full.slice(0, split) - *tail).abs().max().item<double>(), 1e-4);
}

TEST(LlavaModel, CausalAttentionMatchesNaiveSoftmax) {
  at::manual_seed(3);
  auto q = at::randn({4, 5, 8}), k = at::randn({2, 7, 8}), v = at::randn({2, 7, 8});
  for (int64_t window : {0, 3}) {
    auto out = kvcache::CausalAttention(q, k, v, 0.5, window);
    for (int h = 0; h < 4; ++h) {
      for (int i = 0; i < 5; ++i) {
        const int64_t self = 7 - 5 + i;  // the query's own cache index
        std::vector<double> w;
        double total = 0;
        for (int64_t j = 0; j <= self; ++j) {
          if (window > 0 && j <= self - window) {
            w.push_back(0);
            continue;
          }
          double s = std::exp((q[h][i] * k[h / 2][j]).sum().item<double>() * 0.5);
          w.push_back(s);
          total += s;
        }
        auto expect = at::zeros({8}, at::kDouble);
        for (int64_t j = 0; j <= self; ++j) expect += v[h / 2][j].to(at::kDouble) * (w[j] / total);
        EXPECT_LT((out[h][i].to(at::kDouble) - expect).abs().max().item<double>(), 1e-5)
            << "head " << h << " query " << i << " window " << window;
      }
    }
  }
}

TEST(LlavaModel, FeatureSelectStrategyFullKeepsClassToken) {
  auto c = SmallConfig();
  c.vision_feature_select_strategy = "full";
  auto m = RandomModel(c);
  EXPECT_EQ(Visual(*m, 0).size(0), 17);
  auto d = RandomModel(SmallConfig());
  EXPECT_EQ(Visual(*d, 0).size(0), 16);
}

TEST(LlavaModel, RejectsPixelValuesOfTheWrongSize) {
  auto m = RandomModel(SmallConfig());
  auto r = m->EncodeImages(at::zeros({1, 3, 16, 16}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("32"), std::string::npos) << r.status();
}

TEST(LlavaModel, ImageTokenCountMustMatchVisualRows) {
  auto c = SmallConfig();
  auto m = RandomModel(c);
  auto ids = PromptIds(c, 2, 2, 0);
  ids.push_back(c.image_token_index);  // one image token too many
  auto r = m->EmbedPrompt(ids, Visual(*m, 0));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("17 image tokens"), std::string::npos) << r.status();
  auto bad = m->EmbedPrompt({1, 500}, at::Tensor());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LlavaModel, MissingOrMisshapenWeightIsNamed) {
  auto c = SmallConfig();
  WeightMap w;
  for (auto& [name, t] : tools::RandomLlavaWeights(c, 1)) w[name] = t;
  WeightMap missing = w;
  missing.erase("lm.layers.1.mlp.up_proj.weight");
  auto r = LlavaModel::FromWeights(c, missing);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("lm.layers.1.mlp.up_proj.weight"), std::string::npos);
  w["lm.norm.weight"] = at::ones({63});
  r = LlavaModel::FromWeights(c, w);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("lm.norm.weight"), std::string::npos);
  EXPECT_NE(r.status().message().find("[64]"), std::string::npos) << r.status();
}

// ---- Generator

SequenceSpec Spec(const LlavaModel& m, int seed, int max_new, float temperature = 0) {
  SequenceSpec s;
  s.prompt_ids = PromptIds(m.config(), 2 + seed, 3 + 2 * seed, seed);
  s.visual = Visual(m, seed);
  s.sampling.max_new_tokens = max_new;
  s.sampling.temperature = temperature;
  s.sampling.seed = 100 + seed;
  return s;
}

TEST(Generator, BatchOfTwoEqualsTwoSingles) {
  auto m = RandomModel(SmallConfig());
  auto cache = m->NewContiguousCache();
  Generator gen(m.get(), cache.get(), /*eos_id=*/-1);
  std::vector<std::vector<int>> singles;
  for (int s : {0, 1}) {
    auto r = gen.Run({Spec(*m, s, 12)});
    ASSERT_TRUE(r.ok()) << r.status();
    singles.push_back((*r)[0].tokens);
  }
  auto batch = gen.Run({Spec(*m, 0, 12), Spec(*m, 1, 12)});
  ASSERT_TRUE(batch.ok()) << batch.status();
  EXPECT_EQ((*batch)[0].tokens, singles[0]);
  EXPECT_EQ((*batch)[1].tokens, singles[1]);
  EXPECT_EQ((*batch)[0].tokens.size(), 12u);
  EXPECT_NE(singles[0], singles[1]);  // different prompts, so the comparison means something
}

TEST(Generator, SamplingIsDeterministicForASeed) {
  auto m = RandomModel(SmallConfig(), 7, 0.05f);
  auto cache = m->NewContiguousCache();
  Generator gen(m.get(), cache.get(), -1);
  auto a = gen.Run({Spec(*m, 0, 16, 1.0f)});
  auto b = gen.Run({Spec(*m, 0, 16, 1.0f)});
  auto other = Spec(*m, 0, 16, 1.0f);
  other.sampling.seed = 999;
  auto c = gen.Run({other});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ((*a)[0].tokens, (*b)[0].tokens);
  EXPECT_NE((*a)[0].tokens, (*c)[0].tokens);
}

TEST(Generator, StopsOnEosMaxTokensAndCallback) {
  auto m = RandomModel(SmallConfig());
  auto cache = m->NewContiguousCache();
  {
    Generator free_run(m.get(), cache.get(), -1);
    auto r = free_run.Run({Spec(*m, 0, 6)});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ((*r)[0].tokens.size(), 6u);
    EXPECT_EQ((*r)[0].finish, FinishReason::kLength);
    // Declaring the third greedy token EOS ends the same run there, EOS included.
    const int eos = (*r)[0].tokens[2];
    const auto first = std::find((*r)[0].tokens.begin(), (*r)[0].tokens.end(), eos);
    Generator with_eos(m.get(), cache.get(), eos);
    auto e = with_eos.Run({Spec(*m, 0, 6)});
    ASSERT_TRUE(e.ok());
    EXPECT_EQ((*e)[0].finish, FinishReason::kEos);
    EXPECT_EQ((*e)[0].tokens.size(),
              static_cast<size_t>(first - (*r)[0].tokens.begin()) + 1);
  }
  Generator gen(m.get(), cache.get(), -1);
  int seen = 0;
  auto spec = Spec(*m, 1, 50);
  spec.on_token = [&](int) { return ++seen < 4; };
  auto r = gen.Run({spec});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ((*r)[0].finish, FinishReason::kStopped);
  EXPECT_EQ((*r)[0].tokens.size(), 4u);
  EXPECT_FALSE(cache->HasSequence(1));  // finished sequences leave the cache
}

TEST(Generator, RejectsBadSamplingParameters) {
  auto m = RandomModel(SmallConfig());
  auto cache = m->NewContiguousCache();
  Generator gen(m.get(), cache.get(), -1);
  auto spec = Spec(*m, 0, 4);
  spec.sampling.top_p = 1.5f;
  auto r = gen.Add(spec);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("top_p"), std::string::npos);
}

}  // namespace
}  // namespace vlc::engine
