// Chunked prefill: a prompt fed in chunks must compute what the whole prompt computes (logits,
// every policy's observation, keep plan and generated tokens), and a prompt being prefilled must
// not hold back the sequences already decoding.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <vector>

#include "engine/generator.h"
#include "engine/model.h"
#include "kvcache/attention.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"
#include "tests/engine/test_models.h"

namespace vlc::engine {
namespace {

LlavaConfig ThreeLayers() { return SmallConfig("llama", 0, 3); }

// 44 tokens, so that chunks of 7 split the text before the media, the media and the question
// after them.
SequenceSpec PromptSpec(const LlavaModel& m, const std::string& policy, int max_new) {
  SequenceSpec s = ImagePromptSpec(m, policy, 0.3);
  s.cache_policy.window = 6;  // snapkv and pyramidkv observe a window shorter than the question
  s.sampling.max_new_tokens = max_new;
  s.sampling.temperature = 0;
  return s;
}

kvcache::PromptShape ShapeOf(const LlavaModel& m, const SequenceSpec& s) {
  const auto& c = m.config();
  kvcache::PromptShape shape;
  shape.length = static_cast<int64_t>(s.prompt_ids.size());
  shape.layers = c.text.num_hidden_layers;
  shape.heads = c.text.num_attention_heads;
  shape.kv_heads = c.text.num_key_value_heads;
  for (int id : s.prompt_ids) shape.visual.push_back(id == c.image_token_index);
  return shape;
}

struct Prefilled {
  at::Tensor logits;
  std::vector<kvcache::LayerObservation> observations;
  kvcache::KeepPlan plan;
};

// Prefills the prompt of `spec` in chunks of `chunk` rows (0: whole) into a fresh cache and makes
// the policy's keep plan from the summed observations.
Prefilled PrefillInChunks(const LlavaModel& m, const SequenceSpec& spec, int64_t chunk) {
  Prefilled out;
  auto cache = m.NewContiguousCache();
  EXPECT_TRUE(cache->AddSequence(1).ok());
  auto embeds = m.EmbedPrompt(spec.prompt_ids, spec.visual);
  EXPECT_TRUE(embeds.ok()) << embeds.status();
  const kvcache::PromptShape shape = ShapeOf(m, spec);
  const kvcache::ObservationSpec observe = kvcache::ObservationFor(spec.cache_policy, shape);
  const int64_t n = embeds->size(0);
  const int64_t step = chunk > 0 ? chunk : n;
  if (observe.enabled) out.observations.resize(m.config().text.num_hidden_layers);
  for (int64_t i = 0; i < n; i += step) {
    const int64_t end = std::min(n, i + step);
    std::vector<kvcache::LayerObservation> part;
    auto logits = m.Prefill(1, embeds->slice(0, i, end), i, cache.get(), false,
                            observe.enabled ? &observe : nullptr,
                            observe.enabled ? &part : nullptr);
    EXPECT_TRUE(logits.ok()) << logits.status();
    for (size_t l = 0; l < part.size(); ++l) {
      kvcache::AddObservation(part[l], n, &out.observations[l]);
    }
    out.logits = *logits;
  }
  auto plan = kvcache::MakeKeepPlan(spec.cache_policy, shape, out.observations);
  EXPECT_TRUE(plan.ok()) << plan.status();
  if (plan.ok()) out.plan = *plan;
  return out;
}

TEST(ChunkedPrefill, ChunksGiveTheWholePromptsLogitsObservationsAndPlanForEveryPolicy) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  for (const auto& policy : kvcache::PolicyNames()) {
    SCOPED_TRACE(policy);
    const SequenceSpec spec = PromptSpec(*m, policy, 1);
    const Prefilled whole = PrefillInChunks(*m, spec, 0);
    for (int64_t chunk : {1, 7, 16}) {
      SCOPED_TRACE("chunk " + std::to_string(chunk));
      const Prefilled parts = PrefillInChunks(*m, spec, chunk);
      EXPECT_LT((parts.logits - whole.logits).abs().max().item<double>(), 1e-4);
      ASSERT_EQ(parts.observations.size(), whole.observations.size());
      for (size_t l = 0; l < whole.observations.size(); ++l) {
        const auto& a = parts.observations[l];
        const auto& b = whole.observations[l];
        ASSERT_TRUE(a.col_sums.defined() && b.col_sums.defined());
        EXPECT_EQ(a.col_sums.sizes(), b.col_sums.sizes());
        EXPECT_LT((a.col_sums - b.col_sums).abs().max().item<double>(), 1e-4) << "layer " << l;
        EXPECT_EQ(a.causal_entries, b.causal_entries) << "layer " << l;
        ASSERT_EQ(a.sparse_counts.defined(), b.sparse_counts.defined());
        if (b.sparse_counts.defined()) {
          EXPECT_TRUE(at::equal(a.sparse_counts, b.sparse_counts)) << "layer " << l;
        }
      }
      ASSERT_EQ(parts.plan.layers.size(), whole.plan.layers.size());
      for (size_t l = 0; l < whole.plan.layers.size(); ++l) {
        EXPECT_EQ(parts.plan.layers[l].keep, whole.plan.layers[l].keep) << "layer " << l;
        ASSERT_EQ(parts.plan.layers[l].positions.defined(),
                  whole.plan.layers[l].positions.defined());
        if (whole.plan.layers[l].positions.defined()) {
          EXPECT_TRUE(at::equal(parts.plan.layers[l].positions, whole.plan.layers[l].positions))
              << "layer " << l;
        }
      }
    }
  }
}

// A decode step's rows and a prompt chunk's rows in one forward pass compute what the two
// compute apart: the same logits for both, the same observation, the same cache contents.
TEST(ChunkedPrefill, OneForwardPassForADecodeStepAndAChunkEqualsTheTwoApart) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  const SequenceSpec spec = PromptSpec(*m, "vlcache", 1);
  auto embeds = m->EmbedPrompt(spec.prompt_ids, spec.visual);
  ASSERT_TRUE(embeds.ok()) << embeds.status();
  const kvcache::ObservationSpec observe =
      kvcache::ObservationFor(spec.cache_policy, ShapeOf(*m, spec));
  ASSERT_TRUE(observe.enabled);
  // Two caches in the same state: two decoding sequences, and the prompt's first 30 tokens.
  std::vector<std::unique_ptr<KvCache>> caches;
  for (int c = 0; c < 2; ++c) {
    caches.push_back(m->NewContiguousCache());
    for (SeqId s : {1, 2, 3}) ASSERT_TRUE(caches[c]->AddSequence(s).ok());
    ASSERT_TRUE(m->Prefill(1, embeds->slice(0, 0, 10), 0, caches[c].get()).ok());
    ASSERT_TRUE(m->Prefill(2, embeds->slice(0, 5, 12), 0, caches[c].get()).ok());
    std::vector<kvcache::LayerObservation> ignored;
    ASSERT_TRUE(m->Prefill(3, embeds->slice(0, 0, 30), 0, caches[c].get(), false, &observe,
                           &ignored).ok());
  }
  const std::vector<SeqId> seqs = {1, 2};
  const std::vector<int> tokens = {5, 9};
  const std::vector<int64_t> positions = {10, 7};
  const at::Tensor rest = embeds->slice(0, 30);
  std::vector<kvcache::LayerObservation> apart_obs, together_obs;
  auto apart_decode = m->DecodeStep(seqs, tokens, positions, caches[0].get());
  auto apart_chunk = m->Prefill(3, rest, 30, caches[0].get(), false, &observe, &apart_obs);
  ASSERT_TRUE(apart_decode.ok() && apart_chunk.ok());
  const LlavaModel::DecodeRows rows{seqs, tokens, positions};
  const LlavaModel::PromptChunk chunk{3, rest, 30, false, &observe, &together_obs};
  auto together = m->Step(&rows, &chunk, caches[1].get());
  ASSERT_TRUE(together.ok()) << together.status();
  EXPECT_LT((together->decode - *apart_decode).abs().max().item<double>(), 1e-5);
  EXPECT_LT((together->chunk - *apart_chunk).abs().max().item<double>(), 1e-5);
  ASSERT_EQ(together_obs.size(), apart_obs.size());
  for (size_t l = 0; l < apart_obs.size(); ++l) {
    EXPECT_LT((together_obs[l].col_sums - apart_obs[l].col_sums).abs().max().item<double>(), 1e-5);
    EXPECT_EQ(together_obs[l].causal_entries, apart_obs[l].causal_entries);
  }
  for (SeqId s : {1, 2, 3}) {
    for (int l = 0; l < m->config().text.num_hidden_layers; ++l) {
      auto a = caches[0]->Read(s, l);
      auto b = caches[1]->Read(s, l);
      ASSERT_TRUE(a.ok() && b.ok());
      EXPECT_LT((a->first - b->first).abs().max().item<double>(), 1e-5) << "seq " << s;
      EXPECT_LT((a->second - b->second).abs().max().item<double>(), 1e-5) << "seq " << s;
    }
  }
}

// Runs `spec` alone through a generator whose steps prefill at most `chunk` tokens.
SequenceResult GenerateWithChunks(const LlavaModel& m, SequenceSpec spec, int64_t chunk) {
  auto pool = Pool(m.config());
  kvcache::PagedKvCache cache(m.config().text.num_hidden_layers, pool.get());
  Generator gen(&m, &cache, -1, chunk);
  auto id = gen.Queue(std::move(spec));
  EXPECT_TRUE(id.ok()) << id.status();
  int steps = 0;
  while (gen.HasRunning()) {
    EXPECT_TRUE(gen.Step().ok());
    ++steps;
  }
  auto done = gen.TakeFinished();
  EXPECT_EQ(done.size(), 1u);
  EXPECT_EQ(pool->free_pages(), pool->num_pages());
  return done.empty() ? SequenceResult{} : done[0].second;
}

TEST(ChunkedPrefill, GeneratorTokensAndBudgetsDoNotDependOnTheChunkSize) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  for (const auto& policy : kvcache::PolicyNames()) {
    SCOPED_TRACE(policy);
    const SequenceResult whole = GenerateWithChunks(*m, PromptSpec(*m, policy, 12), 0);
    ASSERT_TRUE(whole.error.ok()) << whole.error;
    EXPECT_EQ(whole.tokens.size(), 12u);
    for (int64_t chunk : {5, 16}) {
      const SequenceResult parts = GenerateWithChunks(*m, PromptSpec(*m, policy, 12), chunk);
      ASSERT_TRUE(parts.error.ok()) << parts.error;
      EXPECT_EQ(parts.tokens, whole.tokens) << "chunk " << chunk;
      EXPECT_EQ(parts.layer_budgets, whole.layer_budgets) << "chunk " << chunk;
      EXPECT_EQ(parts.next_pos, whole.next_pos);
    }
  }
}

TEST(ChunkedPrefill, ALongPromptDoesNotHoldBackTheSequencesAlreadyDecoding) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(m->config().text.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1, /*prefill_chunk_tokens=*/8);
  SequenceSpec short_one;
  short_one.prompt_ids = {1, 5, 6};
  short_one.sampling.max_new_tokens = 40;
  short_one.sampling.temperature = 0;
  int decoded = 0;
  short_one.on_token = [&decoded](int) {
    ++decoded;
    return true;
  };
  auto first = gen.Add(short_one);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(decoded, 1);  // sampled from its prefill
  auto second = gen.Queue(PromptSpec(*m, "vlcache", 4));
  ASSERT_TRUE(second.ok()) << second.status();
  // 44 prompt tokens in chunks of 8: six steps prefill them, and every one of those steps also
  // decodes a token of the first sequence.
  int steps = 0;
  while (gen.NumPrefilling() > 0) {
    const int before = decoded;
    ASSERT_TRUE(gen.Step().ok());
    ++steps;
    EXPECT_EQ(decoded, before + 1) << "step " << steps;
  }
  EXPECT_EQ(steps, 6);
  while (gen.HasRunning()) ASSERT_TRUE(gen.Step().ok());
  auto done = gen.TakeFinished();
  ASSERT_EQ(done.size(), 2u);
  for (const auto& [id, res] : done) EXPECT_TRUE(res.error.ok()) << res.error;

  // The first sequence's tokens are the ones it gives alone.
  Generator alone(m.get(), &cache, -1);
  SequenceSpec again = short_one;
  again.on_token = nullptr;
  auto r = alone.Run({again});
  ASSERT_TRUE(r.ok()) << r.status();
  for (const auto& [id, res] : done) {
    if (id == *first) EXPECT_EQ(res.tokens, (*r)[0].tokens);
  }
  EXPECT_EQ(pool->free_pages(), pool->num_pages());
}

}  // namespace
}  // namespace vlc::engine
