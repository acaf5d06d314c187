// Generation on the paged, compressed cache: exact where it must be (alpha = 1 equals full), and
// equal to the uncompressed model with the evicted positions masked out, which a wrong position
// (RoPE), a wrong gather or a wrong head could not fake.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <limits>

#include "engine/generator.h"
#include "engine/model.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"
#include "tests/engine/test_models.h"

namespace vlc::engine {
namespace {

LlavaConfig ThreeLayers() { return SmallConfig("llama", 0, 3); }


SequenceSpec Spec(const LlavaModel& m, int seed, int max_new, const std::string& policy,
                  double budget) {
  const auto& c = m.config();
  SequenceSpec s;
  s.prompt_ids = {1, 7, 9};
  for (int i = 0; i < 2 * c.visual_tokens_per_image(); ++i) s.prompt_ids.push_back(c.image_token_index);
  for (int i = 0; i < 9; ++i) s.prompt_ids.push_back(3 + (seed * 5 + i * 7) % 80);
  at::manual_seed(seed);
  s.visual = *m.EncodeImages(at::randn({2, 3, 32, 32}));
  s.sampling.max_new_tokens = max_new;
  s.cache_policy.name = policy;
  s.cache_policy.budget = budget;
  return s;
}

TEST(CompressedGeneration, BudgetOneEqualsFullTokenForToken) {
  auto m = RandomModel(ThreeLayers());
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(m->config().text.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);
  auto full = gen.Run({Spec(*m, 1, 20, "full", 1.0)});
  ASSERT_TRUE(full.ok()) << full.status();
  for (const char* policy :
       {"vlcache", "vlcache-guard", "snapkv", "pyramidkv", "h2o", "streamingllm", "random"}) {
    auto r = gen.Run({Spec(*m, 1, 20, policy, 1.0)});
    ASSERT_TRUE(r.ok()) << policy << ": " << r.status();
    EXPECT_EQ((*r)[0].tokens, (*full)[0].tokens) << policy;
  }
  EXPECT_EQ(pool->free_pages(), pool->num_pages());  // every finished sequence gave its pages back
}

TEST(CompressedGeneration, VlCacheKeepsAboutTheBudgetAndReportsIt) {
  auto m = RandomModel(ThreeLayers());
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(m->config().text.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);
  auto r = gen.Run({Spec(*m, 2, 1, "vlcache", 0.25)});
  ASSERT_TRUE(r.ok()) << r.status();
  const auto& res = (*r)[0];
  const int64_t prompt = res.prompt_tokens;
  int64_t total = 0;
  for (int64_t k : res.layer_budgets) total += k;
  EXPECT_EQ(total, std::llround(0.25 * prompt) * 3);  // renormalised: exact
  EXPECT_LT(res.kv_bytes, res.kv_bytes_full / 2);
}

TEST(CompressedGeneration, APromptBelowTheSizeRuleIsNotCompressed) {
  auto m = RandomModel(ThreeLayers());
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(m->config().text.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);
  auto full = gen.Run({Spec(*m, 4, 12, "full", 1.0)});
  ASSERT_TRUE(full.ok()) << full.status();
  const int64_t n = (*full)[0].prompt_tokens;
  SequenceSpec below = Spec(*m, 4, 12, "vlcache-guard", 0.1);
  below.cache_policy.min_layer_tokens = 1;
  below.cache_policy.min_prompt_tokens = static_cast<int>(n) + 1;
  auto r = gen.Run({below});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ((*r)[0].layer_budgets, std::vector<int64_t>(3, n));
  EXPECT_EQ((*r)[0].tokens, (*full)[0].tokens);
  // At the threshold the same request is compressed.
  SequenceSpec at = below;
  at.cache_policy.min_prompt_tokens = static_cast<int>(n);
  auto c = gen.Run({at});
  ASSERT_TRUE(c.ok()) << c.status();
  for (int64_t k : (*c)[0].layer_budgets) EXPECT_LT(k, n);
}

// The uncompressed cache with a keep mask: decode attends to every cached token except the
// prompt positions the plan evicted. The reference for what compaction must compute.
class MaskedCache final : public kvcache::KvCache {
 public:
  MaskedCache(int layers, int kv_heads, int head_dim)
      : inner_(layers, kv_heads, head_dim), masks_(layers) {}
  absl::Status AddSequence(SeqId s) override { return inner_.AddSequence(s); }
  void RemoveSequence(SeqId s) override { inner_.RemoveSequence(s); }
  bool HasSequence(SeqId s) const override { return inner_.HasSequence(s); }
  absl::Status Append(SeqId s, int l, const at::Tensor& k, const at::Tensor& v) override {
    return inner_.Append(s, l, k, v);
  }
  absl::StatusOr<std::pair<at::Tensor, at::Tensor>> Read(SeqId s, int l) const override {
    return inner_.Read(s, l);
  }
  absl::Status Compact(SeqId, const kvcache::KeepPlan& plan) override {
    for (size_t l = 0; l < plan.layers.size(); ++l) masks_[l] = plan.layers[l].positions;
    return absl::OkStatus();
  }
  absl::StatusOr<at::Tensor> DecodeAttention(int l, const std::vector<SeqId>& seqs,
                                             const at::Tensor& q, double scale,
                                             int64_t) const override {
    auto out = at::empty_like(q);
    for (size_t b = 0; b < seqs.size(); ++b) {
      auto [k, v] = *inner_.Read(seqs[b], l);
      const int64_t kv = k.size(0), t = k.size(1), group = q.size(1) / kv;
      auto visible = at::ones({kv, t}, at::kBool);
      if (masks_[l].defined()) {
        // Prompt positions not named by the plan are hidden; later tokens stay visible.
        const int64_t m = prompt_len_;
        visible.slice(1, 0, m).fill_(false);
        visible.slice(1, 0, m).scatter_(1, masks_[l], true);
      }
      for (int64_t h = 0; h < q.size(1); ++h) {
        auto s = at::mv(k[h / group], q[b][h]) * scale;
        s.masked_fill_(visible[h / group].logical_not(), -std::numeric_limits<float>::infinity());
        out[b][h] = at::mv(v[h / group].t(), at::softmax(s, 0));
      }
    }
    return out;
  }
  int64_t Length(SeqId s, int l) const override { return inner_.Length(s, l); }
  int64_t Bytes(SeqId s) const override { return inner_.Bytes(s); }
  int64_t BytesPerTokenPerLayer() const override { return inner_.BytesPerTokenPerLayer(); }
  int64_t prompt_len_ = 0;

 private:
  kvcache::ContiguousKvCache inner_;
  std::vector<at::Tensor> masks_;
};

TEST(CompressedGeneration, DecodeEqualsFullCacheWithEvictedPositionsMasked) {
  const auto c = ThreeLayers();
  auto m = RandomModel(c);
  for (const char* policy :
       {"vlcache", "vlcache-guard", "snapkv", "pyramidkv", "h2o", "streamingllm", "random"}) {
    SCOPED_TRACE(policy);
    auto spec = Spec(*m, 3, 20, policy, 0.3);
    const int64_t n = static_cast<int64_t>(spec.prompt_ids.size());
    auto embeds = *m->EmbedPrompt(spec.prompt_ids, spec.visual);
    // Compressed: observe, plan, compact in the paged cache.
    auto pool = Pool(c);
    kvcache::PagedKvCache paged(c.text.num_hidden_layers, pool.get());
    ASSERT_TRUE(paged.AddSequence(1).ok());
    kvcache::PromptShape shape{n, c.text.num_hidden_layers, c.text.num_attention_heads,
                               c.text.num_key_value_heads, {}};
    for (int id : spec.prompt_ids) shape.visual.push_back(id == c.image_token_index);
    auto observe = kvcache::ObservationFor(spec.cache_policy, shape);
    std::vector<kvcache::LayerObservation> obs;
    auto logits = m->Prefill(1, embeds, 0, &paged, false, &observe, &obs);
    ASSERT_TRUE(logits.ok()) << logits.status();
    auto plan = kvcache::MakeKeepPlan(spec.cache_policy, shape, obs);
    ASSERT_TRUE(plan.ok()) << plan.status();
    ASSERT_TRUE(paged.Compact(1, *plan).ok());
    // Reference: everything cached, the same positions masked.
    MaskedCache masked(c.text.num_hidden_layers, c.text.num_key_value_heads, c.text.head_dim);
    masked.prompt_len_ = n;
    ASSERT_TRUE(masked.AddSequence(1).ok());
    auto ref_logits = m->Prefill(1, embeds, 0, &masked);
    ASSERT_TRUE(ref_logits.ok());
    ASSERT_TRUE(masked.Compact(1, *plan).ok());
    double worst = 0;
    for (int step = 0; step < 20; ++step) {
      const int tok = static_cast<int>(logits->argmax(-1).item<int64_t>());
      logits = m->DecodeStep({1}, {tok}, {n + step}, &paged);
      ref_logits = m->DecodeStep({1}, {tok}, {n + step}, &masked);
      ASSERT_TRUE(logits.ok() && ref_logits.ok());
      worst = std::max(worst, (*logits - *ref_logits).abs().max().item<double>());
    }
    EXPECT_LT(worst, 1e-4);
    // The plan really evicted something, in every layer.
    for (int l = 0; l < c.text.num_hidden_layers; ++l) EXPECT_LT(paged.Length(1, l), n + 20);
  }
}

TEST(CompressedGeneration, AnExhaustedPoolIsACleanErrorAndLeaksNothing) {
  auto m = RandomModel(ThreeLayers());
  // Room for a few pages only: the prompt cannot fit.
  const auto& t = m->config().text;
  auto pool = Pool(m->config(), 5 * 2 * t.num_key_value_heads * 4 * t.head_dim * 4);
  kvcache::PagedKvCache cache(t.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);
  auto r = gen.Run({Spec(*m, 1, 4, "vlcache", 0.1)});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_EQ(pool->free_pages(), pool->num_pages());
  EXPECT_EQ(cache.num_sequences(), 0);
}

// Decoding two sequences in a pool that cannot hold both at full length: the one admitted last is
// stopped with a clear RESOURCE_EXHAUSTED when the pages run out, and the first one finishes all
// its tokens, the same tokens it gives alone.
TEST(CompressedGeneration, AFullPoolMidDecodeStopsTheLastAdmittedOnly) {
  auto m = RandomModel(ThreeLayers());
  const auto& t = m->config().text;
  const int64_t page_bytes = 2 * t.num_key_value_heads * 4 * t.head_dim * 4;
  const int max_new = 24;
  auto a = Spec(*m, 1, max_new, "full", 1.0);
  auto b = Spec(*m, 2, max_new, "full", 1.0);
  const int64_t n = static_cast<int64_t>(a.prompt_ids.size());
  ASSERT_EQ(static_cast<int64_t>(b.prompt_ids.size()), n);
  const int64_t layers = t.num_hidden_layers;
  auto pages = [](int64_t tokens) { return (tokens + 3) / 4; };
  // Room for `a` at full length plus `b`'s prompt and one more page per layer: both start, but
  // both cannot reach max_new.
  const int64_t num_pages = layers * (pages(n + max_new) + pages(n) + 1);
  ASSERT_LT(num_pages, 2 * layers * pages(n + max_new));

  std::vector<int> alone;
  {
    auto big = Pool(m->config());
    kvcache::PagedKvCache cache(t.num_hidden_layers, big.get());
    Generator gen(m.get(), &cache, -1);
    auto r = gen.Run({a});
    ASSERT_TRUE(r.ok()) << r.status();
    alone = (*r)[0].tokens;
  }
  auto pool = Pool(m->config(), num_pages * page_bytes);
  ASSERT_EQ(pool->num_pages(), num_pages);
  kvcache::PagedKvCache cache(t.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);
  auto r = gen.Run({a, b});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE((*r)[0].error.ok()) << (*r)[0].error;
  EXPECT_EQ((*r)[0].finish, FinishReason::kLength);
  EXPECT_EQ((*r)[0].tokens, alone);
  EXPECT_EQ((*r)[1].finish, FinishReason::kError);
  EXPECT_EQ((*r)[1].error.code(), absl::StatusCode::kResourceExhausted) << (*r)[1].error;
  EXPECT_NE((*r)[1].error.message().find("ran out of pages"), std::string::npos);
  EXPECT_LT((*r)[1].tokens.size(), static_cast<size_t>(max_new));
  EXPECT_EQ(pool->free_pages(), pool->num_pages());
  EXPECT_EQ(cache.num_sequences(), 0);
}

}  // namespace
}  // namespace vlc::engine
