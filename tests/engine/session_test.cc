// Sessions in the generator: Open keeps a prefilled (and compressed) prompt, Resume continues it
// turn after turn, Close frees it. A session must compute what one long Add over the whole
// conversation computes; a compressed one must never evict after its one-shot compression.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/model.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "tests/engine/test_models.h"

namespace vlc::engine {
namespace {

LlavaConfig ThreeLayers() { return SmallConfig("llama", 0, 3); }


SequenceSpec PromptSpec(const LlavaModel& m, const std::string& policy, double budget) {
  return ImagePromptSpec(m, policy, budget);
}

// A turn's text: distinct per turn, never the image token.
std::vector<int> TurnText(int turn) {
  std::vector<int> ids;
  for (int i = 0; i < 5 + turn; ++i) ids.push_back(2 + (turn * 13 + i * 5) % 90);
  return ids;
}

SequenceSpec Greedy(int max_new) {
  SequenceSpec s;
  s.sampling.max_new_tokens = max_new;
  s.sampling.temperature = 0;
  return s;
}

// Runs one sequence already started (by Add or Resume) to its end; returns its result.
SequenceResult Finish(Generator& gen, SeqId id) {
  while (gen.HasRunning()) {
    const absl::Status st = gen.Step();
    EXPECT_TRUE(st.ok()) << st;
    if (!st.ok()) break;
  }
  for (auto& [sid, res] : gen.TakeFinished()) {
    if (sid == id) return res;
  }
  ADD_FAILURE() << "sequence " << id << " did not finish";
  return {};
}

// One turn: the previous turn's last sampled token (never fed) leads the new text.
struct Turn {
  std::vector<int> fed;  // what Resume appended
  SequenceResult result;
};

Turn Resume(Generator& gen, SeqId seq, int64_t start_pos, int last_token, int turn,
            int max_new) {
  Turn t;
  if (last_token >= 0) t.fed.push_back(last_token);
  const std::vector<int> text = TurnText(turn);
  t.fed.insert(t.fed.end(), text.begin(), text.end());
  auto id = gen.Resume(seq, start_pos, t.fed, Greedy(max_new));
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return t;
  EXPECT_EQ(*id, seq) << "a resumed session keeps its id";
  t.result = Finish(gen, seq);
  EXPECT_EQ(t.result.finish, FinishReason::kLength) << FinishReasonName(t.result.finish);
  return t;
}

TEST(GeneratorSession, FullPolicyTurnsEqualOneAddOverTheWholeConversation) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(m->config().text.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);

  SequenceSpec prompt = PromptSpec(*m, "full", 1.0);
  const at::Tensor visual = prompt.visual;
  // The whole conversation as one prompt would hold it: prompt, text, answer, text, answer...
  std::vector<int> conversation = prompt.prompt_ids;
  SequenceResult info;
  auto seq = gen.Open(prompt, &info);
  ASSERT_TRUE(seq.ok()) << seq.status();
  EXPECT_FALSE(gen.HasRunning()) << "Open generates nothing";
  EXPECT_EQ(info.next_pos, static_cast<int64_t>(conversation.size()));

  int64_t pos = info.next_pos;
  int last = -1;
  for (int turn = 1; turn <= 3; ++turn) {
    SCOPED_TRACE(turn);
    const int max_new = 4 + 3 * turn;
    const Turn t = Resume(gen, *seq, pos, last, turn, max_new);
    ASSERT_EQ(static_cast<int>(t.result.tokens.size()), max_new);
    const std::vector<int> text = TurnText(turn);
    conversation.insert(conversation.end(), text.begin(), text.end());

    // The reference: one fresh sequence whose prompt is the conversation up to this turn's text;
    // its first token, like the turn's, is sampled from the logits after that text.
    SequenceSpec whole = Greedy(max_new);
    whole.prompt_ids = conversation;
    whole.visual = visual;
    auto ref = gen.Run({whole});
    ASSERT_TRUE(ref.ok()) << ref.status();
    EXPECT_EQ(t.result.tokens, (*ref)[0].tokens);

    // Every generated token but the last was fed; the last leads the next turn.
    conversation.insert(conversation.end(), t.result.tokens.begin(), t.result.tokens.end());
    EXPECT_EQ(t.result.next_pos, static_cast<int64_t>(conversation.size()) - 1);
    for (int l = 0; l < m->config().text.num_hidden_layers; ++l) {
      EXPECT_EQ(cache.Length(*seq, l), t.result.next_pos) << "layer " << l;
    }
    pos = t.result.next_pos;
    last = t.result.tokens.back();
  }
  gen.Close(*seq);
}

TEST(GeneratorSession, CompressedSessionAppendsEveryTurnAndEvictsNothingMore) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  const int layers = m->config().text.num_hidden_layers;
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(layers, pool.get());
  Generator gen(m.get(), &cache, -1);

  SequenceSpec prompt = PromptSpec(*m, "vlcache", 0.3);
  const int64_t prompt_len = static_cast<int64_t>(prompt.prompt_ids.size());
  SequenceResult info;
  auto seq = gen.Open(prompt, &info);
  ASSERT_TRUE(seq.ok()) << seq.status();
  ASSERT_EQ(static_cast<int>(info.layer_budgets.size()), layers);
  int64_t kept = 0;
  for (int l = 0; l < layers; ++l) {
    EXPECT_EQ(cache.Length(*seq, l), info.layer_budgets[l]) << "layer " << l;
    kept += info.layer_budgets[l];
  }
  EXPECT_EQ(kept, std::llround(0.3 * prompt_len) * layers);  // the one-shot compression
  EXPECT_LT(info.kv_bytes, info.kv_bytes_full);

  int64_t pos = info.next_pos;
  EXPECT_EQ(pos, prompt_len) << "positions stay logical: compression frees none";
  int last = -1;
  for (int turn = 1; turn <= 3; ++turn) {
    SCOPED_TRACE(turn);
    const int max_new = 5;
    const Turn t = Resume(gen, *seq, pos, last, turn, max_new);
    ASSERT_EQ(static_cast<int>(t.result.tokens.size()), max_new);
    const int64_t after_text = pos + static_cast<int64_t>(t.fed.size());
    EXPECT_EQ(t.result.next_pos, after_text + max_new - 1);
    // Right after the turn's text and at the turn's end: the compressed prompt plus every token
    // fed since it, in every layer.
    ASSERT_EQ(static_cast<int>(t.result.layer_budgets.size()), layers);
    for (int l = 0; l < layers; ++l) {
      EXPECT_EQ(t.result.layer_budgets[l], info.layer_budgets[l] + after_text - prompt_len)
          << "layer " << l;
      EXPECT_EQ(cache.Length(*seq, l), info.layer_budgets[l] + t.result.next_pos - prompt_len)
          << "layer " << l;
    }
    EXPECT_LT(t.result.kv_bytes, t.result.kv_bytes_full);
    pos = t.result.next_pos;
    last = t.result.tokens.back();
  }
  gen.Close(*seq);
}

TEST(GeneratorSession, CloseReturnsEveryPageIdleOrMidTurn) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(m->config().text.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);
  const int64_t all = pool->num_pages();

  // Idle between turns: the kept cache holds pages until Close.
  for (const char* policy : {"full", "vlcache"}) {
    SCOPED_TRACE(policy);
    SequenceResult info;
    auto seq = gen.Open(PromptSpec(*m, policy, 0.3), &info);
    ASSERT_TRUE(seq.ok()) << seq.status();
    const Turn t = Resume(gen, *seq, info.next_pos, -1, 1, 6);
    EXPECT_EQ(t.result.tokens.size(), 6u);
    EXPECT_LT(pool->free_pages(), all) << "a finished turn keeps its session's cache";
    EXPECT_TRUE(cache.HasSequence(*seq));
    gen.Close(*seq);
    EXPECT_FALSE(cache.HasSequence(*seq));
    EXPECT_EQ(pool->free_pages(), all);
  }

  // Mid-turn: Close ends the running turn with an error and frees its pages too.
  SequenceResult info;
  auto seq = gen.Open(PromptSpec(*m, "vlcache", 0.3), &info);
  ASSERT_TRUE(seq.ok()) << seq.status();
  auto id = gen.Resume(*seq, info.next_pos, TurnText(1), Greedy(50));
  ASSERT_TRUE(id.ok()) << id.status();
  ASSERT_TRUE(gen.Step().ok());
  ASSERT_TRUE(gen.HasRunning());
  gen.Close(*seq);
  EXPECT_FALSE(gen.HasRunning());
  auto finished = gen.TakeFinished();
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0].first, *seq);
  EXPECT_EQ(finished[0].second.finish, FinishReason::kError);
  EXPECT_EQ(pool->free_pages(), all);
}

TEST(GeneratorSession, ResumeNeedsAKeptIdleSequence) {
  auto m = RandomModel(ThreeLayers());
  ASSERT_NE(m, nullptr);
  auto pool = Pool(m->config());
  kvcache::PagedKvCache cache(m->config().text.num_hidden_layers, pool.get());
  Generator gen(m.get(), &cache, -1);

  auto unknown = gen.Resume(12345, 0, TurnText(1), Greedy(4));
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << unknown.status();

  // A plain Add's sequence leaves the cache when it finishes: nothing to resume.
  SequenceSpec once = PromptSpec(*m, "full", 1.0);
  once.sampling = Greedy(3).sampling;
  auto added = gen.Add(once);
  ASSERT_TRUE(added.ok()) << added.status();
  Finish(gen, *added);
  auto after_add = gen.Resume(*added, 100, TurnText(1), Greedy(4));
  EXPECT_EQ(after_add.status().code(), absl::StatusCode::kNotFound) << after_add.status();

  SequenceResult info;
  auto seq = gen.Open(PromptSpec(*m, "full", 1.0), &info);
  ASSERT_TRUE(seq.ok()) << seq.status();
  auto first = gen.Resume(*seq, info.next_pos, TurnText(1), Greedy(30));
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(gen.HasRunning());
  auto busy = gen.Resume(*seq, info.next_pos + 6, TurnText(2), Greedy(4));
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kFailedPrecondition) << busy.status();
  EXPECT_TRUE(gen.HasRunning()) << "a refused Resume leaves the running turn alone";
  const SequenceResult done = Finish(gen, *seq);
  EXPECT_EQ(done.tokens.size(), 30u);

  gen.Close(*seq);
  auto closed = gen.Resume(*seq, done.next_pos, {done.tokens.back()}, Greedy(4));
  EXPECT_EQ(closed.status().code(), absl::StatusCode::kNotFound) << closed.status();
  EXPECT_EQ(pool->free_pages(), pool->num_pages());
}

}  // namespace
}  // namespace vlc::engine
