#include "kvcache/policy.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

namespace vlc::kvcache {
namespace {

// A[h][q][j]: one layer's attention probabilities, causal (only j <= q is read).
using Attention = std::vector<std::vector<std::vector<double>>>;

// The observation prefill makes of rows [begin, m), by the definition and a naive loop.
LayerObservation ObserveByHand(const Attention& attn, int64_t begin, double threshold) {
  const int64_t heads = static_cast<int64_t>(attn.size());
  const int64_t m = static_cast<int64_t>(attn[0].size());
  std::vector<double> sums(heads * m, 0.0);
  std::vector<int64_t> sparse(heads, 0);
  int64_t causal = 0;
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t q = begin; q < m; ++q) {
      double row_max = 0;
      for (int64_t j = 0; j <= q; ++j) row_max = std::max(row_max, attn[h][q][j]);
      for (int64_t j = 0; j <= q; ++j) {
        sums[h * m + j] += attn[h][q][j];
        if (attn[h][q][j] < threshold * row_max) ++sparse[h];
        if (h == 0) ++causal;
      }
    }
  }
  LayerObservation obs;
  obs.col_sums = at::tensor(sums, at::kDouble).to(at::kFloat).reshape({heads, m});
  obs.sparse_counts = at::tensor(sparse, at::kLong);
  obs.causal_entries = causal;
  return obs;
}

// Every query spreads its attention evenly over the keys it sees: no entry is sparse.
std::vector<std::vector<double>> UniformRows(int64_t m) {
  std::vector<std::vector<double>> a(m, std::vector<double>(m, 0.0));
  for (int64_t q = 0; q < m; ++q) {
    for (int64_t j = 0; j <= q; ++j) a[q][j] = 1.0 / static_cast<double>(q + 1);
  }
  return a;
}

// Every query puts almost all its attention on the first key: all other entries are sparse.
std::vector<std::vector<double>> PeakedRows(int64_t m) {
  const double eps = 1e-4;
  std::vector<std::vector<double>> a(m, std::vector<double>(m, 0.0));
  for (int64_t q = 0; q < m; ++q) {
    a[q][0] = 1.0 - eps * static_cast<double>(q);
    for (int64_t j = 1; j <= q; ++j) a[q][j] = eps;
  }
  return a;
}

PromptShape Shape(int64_t m, int layers, int heads, int kv_heads) {
  PromptShape s;
  s.length = m;
  s.layers = layers;
  s.heads = heads;
  s.kv_heads = kv_heads;
  s.visual.assign(m, 0);
  return s;
}

PolicyConfig Policy(const std::string& name, double budget) {
  PolicyConfig p;
  p.name = name;
  p.budget = budget;
  return p;
}

// Observations whose scores are random but fixed, for tests about budgets and kept windows.
std::vector<LayerObservation> RandomObservations(const PromptShape& shape, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  std::vector<LayerObservation> out(shape.layers);
  for (auto& obs : out) {
    obs.col_sums = at::rand({shape.heads, shape.length}, gen, at::kFloat);
    obs.sparse_counts = at::zeros({shape.heads}, at::kLong);
    obs.causal_entries = shape.length;
  }
  return out;
}

std::vector<int64_t> Row(const at::Tensor& positions, int64_t head) {
  auto r = positions[head].contiguous();
  return std::vector<int64_t>(r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel());
}

std::vector<int64_t> Range(int64_t begin, int64_t end) {
  std::vector<int64_t> v;
  for (int64_t i = begin; i < end; ++i) v.push_back(i);
  return v;
}

std::vector<int64_t> Concat(std::vector<int64_t> a, const std::vector<int64_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int64_t> Keeps(const KeepPlan& plan) {
  std::vector<int64_t> k;
  for (const auto& lp : plan.layers) k.push_back(lp.keep);
  return k;
}

std::vector<float> Values(const at::Tensor& t) {
  auto c = t.to(at::kFloat).contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// ---- PolicyConfig::Validate

TEST(PolicyConfig, EveryNamedPolicyIsValidWithDefaults) {
  for (const std::string& name : PolicyNames()) {
    EXPECT_TRUE(Policy(name, 0.1).Validate().ok()) << name;
  }
  EXPECT_EQ(PolicyNames().size(), 8u);
}

TEST(PolicyConfig, UnknownNameIsRejectedAndTheValidOnesListed) {
  absl::Status s = Policy("lru", 0.1).Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("lru"), std::string::npos) << s;
  for (const char* name :
       {"full", "vlcache", "vlcache-guard", "snapkv", "pyramidkv", "h2o", "streamingllm",
        "random"}) {
    EXPECT_NE(s.message().find(name), std::string::npos) << name << ": " << s;
  }
}

TEST(PolicyConfig, BudgetMustLieInZeroExclusiveToOneInclusive) {
  for (double bad : {0.0, 1.5, -0.1, std::nan("")}) {
    absl::Status s = Policy("vlcache", bad).Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("kv budget must be in (0, 1]"), std::string::npos) << s;
  }
  EXPECT_NE(Policy("vlcache", 1.5).Validate().message().find("got 1.5"), std::string::npos);
  EXPECT_TRUE(Policy("vlcache", 1.0).Validate().ok());
  EXPECT_TRUE(Policy("vlcache", 0.001).Validate().ok());
}

TEST(PolicyConfig, EachOutOfRangeFieldIsNamedInTheError) {
  struct Case {
    std::function<void(PolicyConfig&)> mutate;
    const char* field;
  };
  const std::vector<Case> cases = {
      {[](PolicyConfig& p) { p.sparsity_threshold = 0; }, "sparsity_threshold"},
      {[](PolicyConfig& p) { p.sparsity_threshold = 1; }, "sparsity_threshold"},
      {[](PolicyConfig& p) { p.clip_floor = 0; }, "clip_floor"},
      {[](PolicyConfig& p) { p.clip_floor = 1.01; }, "clip_floor"},
      {[](PolicyConfig& p) { p.recent_fraction = -0.1; }, "recent_fraction"},
      {[](PolicyConfig& p) { p.recent_fraction = 1; }, "recent_fraction"},
      {[](PolicyConfig& p) { p.window = 0; }, "window"},
      {[](PolicyConfig& p) { p.kernel = 4; }, "kernel"},
      {[](PolicyConfig& p) { p.kernel = 0; }, "kernel"},
      {[](PolicyConfig& p) { p.pyramid_beta = 0; }, "pyramid_beta"},
      {[](PolicyConfig& p) { p.sinks = -1; }, "sinks"},
      {[](PolicyConfig& p) { p.max_scoring_queries = -1; }, "max_scoring_queries"},
      {[](PolicyConfig& p) { p.guard_window = -1; }, "guard_window"},
      {[](PolicyConfig& p) { p.min_layer_tokens = 0; }, "min_layer_tokens"},
      {[](PolicyConfig& p) { p.guard_scoring_rows = -1; }, "guard_scoring_rows"},
      {[](PolicyConfig& p) { p.min_prompt_tokens = -1; }, "min_prompt_tokens"},
  };
  for (const Case& c : cases) {
    PolicyConfig p = Policy("vlcache", 0.1);
    c.mutate(p);
    absl::Status s = p.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(c.field), std::string::npos) << c.field << ": " << s;
  }
  PolicyConfig edge = Policy("vlcache", 0.1);
  edge.clip_floor = 1;
  edge.recent_fraction = 0;
  edge.kernel = 1;
  edge.sinks = 0;
  EXPECT_TRUE(edge.Validate().ok());
}

// ---- ObservationFor

TEST(ObservationFor, FullStreamingLlmAndRandomObserveNothing) {
  PromptShape shape = Shape(100, 2, 4, 2);
  for (const char* name : {"full", "streamingllm", "random"}) {
    EXPECT_FALSE(ObservationFor(Policy(name, 0.1), shape).enabled) << name;
  }
}

TEST(ObservationFor, H2OObservesEveryRowWithoutSparsity) {
  ObservationSpec spec = ObservationFor(Policy("h2o", 0.1), Shape(100, 2, 4, 2));
  EXPECT_TRUE(spec.enabled);
  EXPECT_EQ(spec.query_begin, 0);
  EXPECT_FALSE(spec.sparsity);
}

TEST(ObservationFor, SnapKvAndPyramidKvObserveTheLastWindowRows) {
  for (const char* name : {"snapkv", "pyramidkv"}) {
    PolicyConfig p = Policy(name, 0.1);
    ObservationSpec spec = ObservationFor(p, Shape(100, 2, 4, 2));
    EXPECT_TRUE(spec.enabled) << name;
    EXPECT_EQ(spec.query_begin, 68) << name;
    EXPECT_FALSE(spec.sparsity) << name;
    // A prompt shorter than the window is observed whole.
    EXPECT_EQ(ObservationFor(p, Shape(20, 2, 4, 2)).query_begin, 0) << name;
    p.window = 8;
    EXPECT_EQ(ObservationFor(p, Shape(100, 2, 4, 2)).query_begin, 92) << name;
  }
}

TEST(ObservationFor, VlCacheObservesThePostVisionRowsWithSparsity) {
  PromptShape shape = Shape(100, 2, 4, 2);
  // Two media spans: the rows after the last one are the post-vision queries.
  for (int i = 5; i < 15; ++i) shape.visual[i] = 1;
  for (int i = 20; i < 60; ++i) shape.visual[i] = 1;
  PolicyConfig p = Policy("vlcache", 0.1);
  p.sparsity_threshold = 0.05;
  ObservationSpec spec = ObservationFor(p, shape);
  EXPECT_TRUE(spec.enabled);
  EXPECT_EQ(spec.query_begin, 60);
  EXPECT_TRUE(spec.sparsity);
  EXPECT_DOUBLE_EQ(spec.threshold, 0.05);
}

TEST(ObservationFor, VlCacheWithNoTextAfterTheMediaUsesTheLast32Rows) {
  PromptShape shape = Shape(100, 2, 4, 2);
  for (int i = 10; i < 100; ++i) shape.visual[i] = 1;  // tau == 0
  EXPECT_EQ(ObservationFor(Policy("vlcache", 0.1), shape).query_begin, 68);
  PromptShape short_shape = Shape(10, 2, 4, 2);
  short_shape.visual.assign(10, 1);
  EXPECT_EQ(ObservationFor(Policy("vlcache", 0.1), short_shape).query_begin, 0);
}

TEST(ObservationFor, VlCacheWithoutVisualTokensUsesTheLast32Rows) {
  EXPECT_EQ(ObservationFor(Policy("vlcache", 0.1), Shape(100, 2, 4, 2)).query_begin, 68);
}

TEST(ObservationFor, VlCacheMaxScoringQueriesCapsTheRows) {
  PromptShape shape = Shape(100, 2, 4, 2);
  for (int i = 0; i < 15; ++i) shape.visual[i] = 1;  // v = 15: 85 post-vision rows
  PolicyConfig p = Policy("vlcache", 0.1);
  p.max_scoring_queries = 50;
  EXPECT_EQ(ObservationFor(p, shape).query_begin, 50);
  // A cap above tau changes nothing.
  p.max_scoring_queries = 90;
  EXPECT_EQ(ObservationFor(p, shape).query_begin, 15);
  // The cap also applies to the tau == 0 fallback.
  for (int i = 0; i < 100; ++i) shape.visual[i] = 1;
  p.max_scoring_queries = 10;
  EXPECT_EQ(ObservationFor(p, shape).query_begin, 90);
}

TEST(ObservationFor, VlCacheGuardObservesTheTailRowsOrWhatVlCacheObserves) {
  PromptShape shape = Shape(100, 2, 4, 2);
  for (int i = 20; i < 60; ++i) shape.visual[i] = 1;
  for (int cap : {0, 10}) {
    PolicyConfig a = Policy("vlcache", 0.1), b = Policy("vlcache-guard", 0.1);
    a.max_scoring_queries = b.max_scoring_queries = cap;
    ObservationSpec sa = ObservationFor(a, shape), sb = ObservationFor(b, shape);
    EXPECT_TRUE(sb.enabled && sb.sparsity);
    // By default the last 4 rows, whatever vlcache's cap.
    EXPECT_EQ(sb.query_begin, 96) << cap;
    EXPECT_DOUBLE_EQ(sb.threshold, sa.threshold);
    // With guard_scoring_rows 0, what vlcache observes (after the media, or its cap).
    b.guard_scoring_rows = 0;
    sb = ObservationFor(b, shape);
    EXPECT_EQ(sb.query_begin, sa.query_begin) << cap;
    EXPECT_EQ(sa.query_begin, cap == 0 ? 60 : 90);
  }
}

// ---- GroupMean

TEST(GroupMean, GroupsOfTwoAverageConsecutiveQueryHeads) {
  auto scores = at::tensor({1.f, 2.f, 3.f, 4.f, 10.f, 20.f, 30.f, 40.f}).reshape({4, 2});
  at::Tensor g = GroupMean(scores, 2);
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(Values(g), (std::vector<float>{2.f, 3.f, 20.f, 30.f}));
}

TEST(GroupMean, GroupsOfFourAverageConsecutiveQueryHeads) {
  // Heads 0..3 read KV head 0 and heads 4..7 KV head 1 (HF's repeat_kv); an interleaved grouping
  // would mix the two ranges and give 13.75 for both.
  std::vector<float> v;
  for (float h : {1.f, 2.f, 3.f, 4.f, 10.f, 20.f, 30.f, 40.f}) v.insert(v.end(), {h, h, 2 * h});
  at::Tensor g = GroupMean(at::tensor(v).reshape({8, 3}), 2);
  ASSERT_EQ(g.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(Values(g), (std::vector<float>{2.5f, 2.5f, 5.f, 25.f, 25.f, 50.f}));
}

TEST(GroupMean, OneQueryHeadPerKvHeadIsTheIdentity) {
  auto scores = at::tensor({1.f, 2.f, 3.f, 4.f}).reshape({2, 2});
  EXPECT_EQ(Values(GroupMean(scores, 2)), (std::vector<float>{1.f, 2.f, 3.f, 4.f}));
}

// ---- AvgPool1d

TEST(AvgPool1d, EdgesArePaddedWithZerosAndDividedByTheWholeKernel) {
  at::Tensor out = AvgPool1d(at::tensor({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}).reshape({1, 6}), 5);
  ASSERT_EQ(out.sizes(), (std::vector<int64_t>{1, 6}));
  // (0+0+1+2+3)/5, (0+1+2+3+4)/5, (1..5)/5, (2..6)/5, (3+4+5+6+0)/5, (4+5+6+0+0)/5
  const std::vector<float> want = {1.2f, 2.f, 3.f, 4.f, 3.6f, 3.f};
  const std::vector<float> got = Values(out);
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
}

TEST(AvgPool1d, EachRowIsPooledOnItsOwn) {
  auto scores = at::tensor({3.f, 0.f, 0.f, 0.f, 6.f, 1.f, 1.f, 1.f, 1.f, 1.f}).reshape({2, 5});
  const std::vector<float> got = Values(AvgPool1d(scores, 3));
  const std::vector<float> want = {1.f, 1.f, 0.f, 2.f, 2.f, 2.f / 3, 1.f, 1.f, 1.f, 2.f / 3};
  for (size_t i = 0; i < want.size(); ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
}

TEST(AvgPool1d, KernelOneIsTheIdentityAndShortRowsStillPool) {
  auto scores = at::tensor({0.5f, 2.f, 7.f}).reshape({1, 3});
  EXPECT_EQ(Values(AvgPool1d(scores, 1)), (std::vector<float>{0.5f, 2.f, 7.f}));
  const std::vector<float> got = Values(AvgPool1d(at::tensor({1.f, 2.f}).reshape({1, 2}), 5));
  EXPECT_FLOAT_EQ(got[0], 0.6f);  // (0+0+1+2+0)/5
  EXPECT_FLOAT_EQ(got[1], 0.6f);  // (0+1+2+0+0)/5
}

// ---- TopKWithRecent

TEST(TopKWithRecent, TiesGoToTheLowerPosition) {
  auto alternating = at::tensor({5.f, 1.f, 5.f, 1.f, 5.f}).reshape({1, 5});
  EXPECT_EQ(Row(TopKWithRecent(alternating, 2, 0), 0), (std::vector<int64_t>{0, 2}));
  auto flat = at::ones({1, 6});
  EXPECT_EQ(Row(TopKWithRecent(flat, 3, 0), 0), (std::vector<int64_t>{0, 1, 2}));
}

TEST(TopKWithRecent, TheRecentPositionsAreKeptWhateverTheirScore) {
  auto scores = at::tensor({9.f, 8.f, 7.f, 6.f, 0.f, 0.f}).reshape({1, 6});
  EXPECT_EQ(Row(TopKWithRecent(scores, 3, 2), 0), (std::vector<int64_t>{0, 4, 5}));
  // keep == recent: only the tail.
  EXPECT_EQ(Row(TopKWithRecent(scores, 2, 2), 0), (std::vector<int64_t>{4, 5}));
}

TEST(TopKWithRecent, EachKvHeadChoosesOnItsOwnAndPositionsAscend) {
  auto scores = at::tensor({0.1f, 0.9f, 0.3f, 0.8f, 0.2f, 0.0f,  //
                            0.7f, 0.1f, 0.6f, 0.2f, 0.9f, 0.0f})
                    .reshape({2, 6});
  at::Tensor pos = TopKWithRecent(scores, 3, 1);
  ASSERT_EQ(pos.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(pos.scalar_type(), at::kLong);
  EXPECT_EQ(Row(pos, 0), (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(Row(pos, 1), (std::vector<int64_t>{0, 4, 5}));
}

TEST(TopKWithRecent, KeepingTheWholeLengthKeepsEveryPosition) {
  auto scores = at::rand({2, 7});
  at::Tensor pos = TopKWithRecent(scores, 7, 0);
  EXPECT_EQ(Row(pos, 0), Range(0, 7));
  EXPECT_EQ(Row(pos, 1), Range(0, 7));
}

// ---- VlCacheBudgets

TEST(VlCacheBudgets, PaperModeClipsEachLayerAndLetsTheTotalDrift) {
  // d = {0.9, 0.1, 0.5, 0.5}: sum 2, beta~ = d / 2 * 0.1 * 4 = {0.18, 0.02, 0.1, 0.1}; with a
  // floor of 0.05 the second layer is raised to 0.05, so 430 tokens instead of 400.
  EXPECT_EQ(VlCacheBudgets({0.9, 0.1, 0.5, 0.5}, 1000, 0.1, 0.05, false),
            (std::vector<int64_t>{180, 50, 100, 100}));
  // d = {1, .01, .01, .01}, alpha 0.5, m 100: beta~ = d / 1.03 * 2 = {1.94, 0.0194 x3}; the first
  // is clipped to 1 (100 tokens), the others round to 2: 106 tokens instead of 200.
  EXPECT_EQ(VlCacheBudgets({1, 0.01, 0.01, 0.01}, 100, 0.5, 0.01, false),
            (std::vector<int64_t>{100, 2, 2, 2}));
}

TEST(VlCacheBudgets, BothModesAgreeWhenNothingIsClipped) {
  const std::vector<int64_t> want = {180, 20, 100, 100};
  EXPECT_EQ(VlCacheBudgets({0.9, 0.1, 0.5, 0.5}, 1000, 0.1, 0.01, false), want);
  EXPECT_EQ(VlCacheBudgets({0.9, 0.1, 0.5, 0.5}, 1000, 0.1, 0.01, true), want);
}

TEST(VlCacheBudgets, RenormalisingGivesTheFloorsExcessBackToTheOtherLayers) {
  // Total 400, floor 50: layer 1 (0.1 * lambda < 50) is fixed at 50, and the other 350 tokens are
  // shared 0.9 : 0.5 : 0.5, i.e. 165.79, 92.11, 92.11; largest remainder adds the last token to
  // layer 0.
  EXPECT_EQ(VlCacheBudgets({0.9, 0.1, 0.5, 0.5}, 1000, 0.1, 0.05, true),
            (std::vector<int64_t>{166, 50, 92, 92}));
}

TEST(VlCacheBudgets, AFullLayerIsCappedAtTheLengthAndTiesInTheRemainderGoToTheLowerLayer) {
  // Total 200: layer 0 wants 194 > 100 and is capped; the other 100 tokens split three ways,
  // 33.33 each, and the one left over goes to the lowest of the tied layers.
  EXPECT_EQ(VlCacheBudgets({1, 0.01, 0.01, 0.01}, 100, 0.5, 0.01, true),
            (std::vector<int64_t>{100, 34, 33, 33}));
}

TEST(VlCacheBudgets, ATotalBelowTheFloorsIsSharedEvenly) {
  // 10 tokens a layer cannot give every layer the floor of 50: the exact total wins.
  EXPECT_EQ(VlCacheBudgets({0.9, 0.1, 0.5}, 1000, 0.01, 0.05, true),
            (std::vector<int64_t>{10, 10, 10}));
  // round(0.1 * 3) == 0: still one token a layer.
  EXPECT_EQ(VlCacheBudgets({0.9, 0.1}, 3, 0.1, 0.01, true), (std::vector<int64_t>{1, 1}));
}

TEST(VlCacheBudgets, ZeroDensityEverywhereIsTreatedAsUniform) {
  EXPECT_EQ(VlCacheBudgets({0, 0, 0}, 100, 0.3, 0.01, true), (std::vector<int64_t>{30, 30, 30}));
  EXPECT_EQ(VlCacheBudgets({0, 0, 0}, 100, 0.3, 0.01, false), (std::vector<int64_t>{30, 30, 30}));
}

TEST(VlCacheBudgets, LayersWithoutDensityTakeWhatTheDenseOnesCannotHold) {
  // Total 27 for m = 10: the only dense layer is capped at 10, so the two layers of density 0
  // share the other 17 (8.5 each) and the tie gives the odd token to the lower one.
  EXPECT_EQ(VlCacheBudgets({1, 0, 0}, 10, 0.9, 0.1, true), (std::vector<int64_t>{10, 9, 8}));
}

TEST(VlCacheBudgets, AlphaOneKeepsEveryTokenInEveryLayer) {
  EXPECT_EQ(VlCacheBudgets({0.9, 0.01, 0.3}, 57, 1.0, 0.01, true),
            (std::vector<int64_t>{57, 57, 57}));
  // The paper's formula reaches m everywhere only when the layers are equally dense.
  EXPECT_EQ(VlCacheBudgets({0.4, 0.4, 0.4}, 57, 1.0, 0.01, false),
            (std::vector<int64_t>{57, 57, 57}));
}

TEST(VlCacheBudgets, RenormalisedBudgetsSumToAlphaTimesLayersExactly) {
  std::mt19937_64 rng(20250101);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const double floors[] = {0.001, 0.01, 0.05, 0.2, 1.0};
  for (int trial = 0; trial < 3000; ++trial) {
    const int layers = 1 + static_cast<int>(rng() % 48);
    const int64_t m = 1 + static_cast<int64_t>(rng() % 4096);
    double alpha = unit(rng);
    if (trial % 10 == 0) alpha = 1.0;
    if (trial % 10 == 1) alpha = 1e-4 + 1e-3 * unit(rng);
    alpha = std::max(alpha, 1e-6);
    const double floor = floors[rng() % 5];
    std::vector<double> d(layers);
    for (double& x : d) x = (rng() % 7 == 0) ? 0.0 : unit(rng);
    if (trial % 13 == 0) d.assign(layers, 0.0);

    const std::vector<int64_t> k = VlCacheBudgets(d, m, alpha, floor, true);
    const int64_t per_layer = std::max<int64_t>(1, std::llround(alpha * static_cast<double>(m)));
    const double lo = std::max(1.0, floor * static_cast<double>(m));
    ASSERT_EQ(static_cast<int>(k.size()), layers);
    int64_t sum = 0;
    for (int l = 0; l < layers; ++l) {
      sum += k[l];
      ASSERT_GE(k[l], 1) << "trial " << trial;
      ASSERT_LE(k[l], m) << "trial " << trial;
      if (static_cast<double>(per_layer) > lo) {
        ASSERT_GE(k[l], static_cast<int64_t>(std::floor(lo))) << "trial " << trial;
      } else {
        ASSERT_EQ(k[l], per_layer) << "trial " << trial;
      }
      // A denser layer never gets fewer tokens, except where both sit on a fractional floor and
      // the last remainder token goes, as a tie, to the lower layer.
      for (int o = 0; o < layers; ++o) {
        if (d[l] <= d[o] || k[l] >= k[o]) continue;
        ASSERT_EQ(k[o] - k[l], 1) << "trial " << trial;
        ASSERT_EQ(k[l], static_cast<int64_t>(std::floor(lo))) << "trial " << trial;
        ASSERT_LT(o, l) << "trial " << trial;
      }
    }
    ASSERT_EQ(sum, per_layer * layers) << "trial " << trial << " m " << m << " alpha " << alpha;
  }
}

TEST(VlCacheBudgets, PaperModeStaysWithinTheLengthAndTheFloor) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int trial = 0; trial < 500; ++trial) {
    const int layers = 1 + static_cast<int>(rng() % 32);
    const int64_t m = 1 + static_cast<int64_t>(rng() % 2000);
    const double alpha = std::max(1e-3, unit(rng)), floor = 0.02;
    std::vector<double> d(layers);
    for (double& x : d) x = unit(rng);
    for (int64_t x : VlCacheBudgets(d, m, alpha, floor, false)) {
      ASSERT_GE(x, std::max<int64_t>(1, std::llround(floor * static_cast<double>(m))));
      ASSERT_LE(x, m);
    }
  }
}

// ---- PyramidBudgets

TEST(PyramidBudgets, MatchesTheHandComputedSchedule) {
  // C - w = 68: min = 68 / 20 = 3.4, max = 136 - 3.4 = 132.6, step = 129.2 / 3 = 43.067;
  // layer l keeps 32 + 132.6 - l * 43.067 = 164.6, 121.53, 78.47, 35.4.
  EXPECT_EQ(PyramidBudgets(1000, 100, 4, 32, 20), (std::vector<int64_t>{165, 122, 78, 35}));
}

TEST(PyramidBudgets, TheTopLayerIsClippedAtTheNonWindowLength) {
  // max = 2 * 118 - 5.9 = 230.1 >= m - w = 168: max = 168, min = 236 - 168 = 68, step = 50.
  EXPECT_EQ(PyramidBudgets(200, 150, 3, 32, 20), (std::vector<int64_t>{200, 150, 100}));
}

TEST(PyramidBudgets, ABudgetWithinTheWindowOrASingleLayerIsUniform) {
  EXPECT_EQ(PyramidBudgets(1000, 32, 3, 32, 20), (std::vector<int64_t>{32, 32, 32}));
  EXPECT_EQ(PyramidBudgets(1000, 10, 2, 32, 20), (std::vector<int64_t>{10, 10}));
  EXPECT_EQ(PyramidBudgets(1000, 100, 1, 32, 20), (std::vector<int64_t>{100}));
}

TEST(PyramidBudgets, LowerLayersKeepMoreAndTheTotalStaysNearTheBudget) {
  for (int64_t m : {100, 500, 4000}) {
    for (int64_t c : {40, 64, 90}) {
      for (int layers : {2, 5, 32}) {
        const std::vector<int64_t> k = PyramidBudgets(m, c, layers, 32, 20);
        int64_t sum = 0;
        for (int l = 0; l < layers; ++l) {
          sum += k[l];
          EXPECT_GE(k[l], 1);
          EXPECT_LE(k[l], m);
          if (l > 0) EXPECT_LE(k[l], k[l - 1]);
        }
        EXPECT_GT(k.front(), k.back()) << m << " " << c << " " << layers;
        EXPECT_LE(std::abs(sum - c * layers), layers) << m << " " << c << " " << layers;
      }
    }
  }
}

// ---- MakeKeepPlan: VL-Cache

TEST(VlCachePolicy, SparseLayersGetFewerTokensThanDenseOnes) {
  // m = 8, visual 0..3, post-vision rows 4..7 (26 causal entries). Layer 0: both heads attend
  // uniformly (gamma 0, d 1). Layer 1: head 0 puts its mass on key 0 (22 of 26 entries sparse),
  // head 1 is uniform: gamma = (22/26 + 0) / 2, d = 15/26.
  const int64_t m = 8;
  PromptShape shape = Shape(m, 2, 2, 1);
  for (int i = 0; i < 4; ++i) shape.visual[i] = 1;
  PolicyConfig policy = Policy("vlcache", 0.5);
  ObservationSpec spec = ObservationFor(policy, shape);
  ASSERT_EQ(spec.query_begin, 4);
  std::vector<LayerObservation> obs = {
      ObserveByHand({UniformRows(m), UniformRows(m)}, spec.query_begin, spec.threshold),
      ObserveByHand({PeakedRows(m), UniformRows(m)}, spec.query_begin, spec.threshold)};
  ASSERT_EQ(obs[1].sparse_counts[0].item<int64_t>(), 22);
  ASSERT_EQ(obs[1].causal_entries, 26);

  auto plan = MakeKeepPlan(policy, shape, obs);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // Total 4 * 2 = 8 shared 1 : 15/26, i.e. 5.07 and 2.93: largest remainder gives {5, 3}.
  EXPECT_EQ(Keeps(*plan), (std::vector<int64_t>{5, 3}));
  // Uniform rows score keys 0..4 equally (each seen by all four rows): the ties keep the lowest.
  EXPECT_EQ(Row(plan->layers[0].positions, 0), Range(0, 5));
  // In layer 1 key 0 dominates, then keys 1..4 tie: 0, 1, 2.
  EXPECT_EQ(Row(plan->layers[1].positions, 0), Range(0, 3));
}

TEST(VlCachePolicy, BudgetsSumToAlphaTimesLayers) {
  PromptShape shape = Shape(300, 6, 4, 2);
  std::vector<LayerObservation> obs = RandomObservations(shape, 3);
  const int64_t sparse[] = {10, 900, 4000, 0, 2500, 7000};
  for (int l = 0; l < 6; ++l) {
    obs[l].sparse_counts = at::full({4}, sparse[l], at::kLong);
    obs[l].causal_entries = 8000;
  }
  auto plan = MakeKeepPlan(Policy("vlcache", 0.1), shape, obs);
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t sum = 0;
  for (const LayerPlan& lp : plan->layers) {
    sum += lp.keep;
    ASSERT_EQ(lp.positions.sizes(), (std::vector<int64_t>{2, lp.keep}));
    // The recent window floor(0.1 * k) is always kept.
    const int64_t recent = lp.keep / 10;
    for (int h = 0; h < 2; ++h) {
      std::vector<int64_t> row = Row(lp.positions, h);
      EXPECT_TRUE(std::is_sorted(row.begin(), row.end()));
      EXPECT_EQ(std::vector<int64_t>(row.end() - recent, row.end()), Range(300 - recent, 300));
    }
  }
  EXPECT_EQ(sum, 30 * 6);
  // Layer 3 (no sparse entries) is the densest, layer 5 the sparsest.
  EXPECT_GT(plan->layers[3].keep, plan->layers[5].keep);
}

TEST(VlCachePolicy, PaperModeKeepsTheClippedBudgets) {
  PromptShape shape = Shape(1000, 4, 2, 2);
  std::vector<LayerObservation> obs = RandomObservations(shape, 5);
  // gamma = 1 - d for d = {0.9, 0.1, 0.5, 0.5}, as in the paper-mode budget test.
  const int64_t sparse[] = {100, 900, 500, 500};
  for (int l = 0; l < 4; ++l) {
    obs[l].sparse_counts = at::full({2}, sparse[l], at::kLong);
    obs[l].causal_entries = 1000;
  }
  PolicyConfig policy = Policy("vlcache", 0.1);
  policy.renormalize = false;
  policy.clip_floor = 0.05;
  auto plan = MakeKeepPlan(policy, shape, obs);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(Keeps(*plan), (std::vector<int64_t>{180, 50, 100, 100}));
}

TEST(VlCachePolicy, UniformAblationKeepsTheBaselinesBudgetWithVlCacheScores) {
  // The same observations as the sparse-layer test: by density {5, 3}; evenly {4, 4}.
  const int64_t m = 8;
  PromptShape shape = Shape(m, 2, 2, 1);
  for (int i = 0; i < 4; ++i) shape.visual[i] = 1;
  PolicyConfig policy = Policy("vlcache", 0.5);
  policy.sparsity_budgets = false;
  ObservationSpec spec = ObservationFor(policy, shape);
  std::vector<LayerObservation> obs = {
      ObserveByHand({UniformRows(m), UniformRows(m)}, spec.query_begin, spec.threshold),
      ObserveByHand({PeakedRows(m), UniformRows(m)}, spec.query_begin, spec.threshold)};
  auto plan = MakeKeepPlan(policy, shape, obs);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(Keeps(*plan), (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(Row(plan->layers[0].positions, 0), Range(0, 4));
  EXPECT_EQ(Row(plan->layers[1].positions, 0), Range(0, 4));
}

// ---- vlcache-guard

TEST(GuardedPositions, TheSinksAndTheTextAfterTheLastMediaUpToTheGuardWindow) {
  PromptShape shape = Shape(100, 2, 4, 2);
  for (int i = 5; i < 80; ++i) shape.visual[i] = 1;  // 20 text tokens after the media
  PolicyConfig p = Policy("vlcache-guard", 0.1);
  // By default the prompt's last 4 tokens.
  EXPECT_EQ(GuardedPositions(p, shape).guard_begin, 96);
  p.guard_window = 64;
  GuardedSpan g = GuardedPositions(p, shape);
  EXPECT_EQ(g.sinks, 4);
  EXPECT_EQ(g.guard_begin, 80);
  EXPECT_EQ(g.count(100), 24);
  // A guard window shorter than the text guards its last tokens only.
  p.guard_window = 8;
  EXPECT_EQ(GuardedPositions(p, shape).guard_begin, 92);
  p.guard_window = 0;
  EXPECT_EQ(GuardedPositions(p, shape).guard_begin, 100);
  p.sinks = 0;
  EXPECT_EQ(GuardedPositions(p, shape).count(100), 0);
  // No text after the media, or no media: the last min(32, m) tokens stand for the question.
  p = Policy("vlcache-guard", 0.1);
  p.guard_window = 64;
  EXPECT_EQ(GuardedPositions(p, Shape(100, 2, 4, 2)).guard_begin, 68);
  for (int i = 80; i < 100; ++i) shape.visual[i] = 1;
  EXPECT_EQ(GuardedPositions(p, shape).guard_begin, 68);
  // The sinks never reach into the guarded text.
  PromptShape tiny = Shape(3, 2, 4, 2);
  EXPECT_EQ(GuardedPositions(p, tiny).guard_begin, 0);
  EXPECT_EQ(GuardedPositions(p, tiny).sinks, 0);
}

// vlcache-guard scores with the attention of the prompt's last rows: a position that the
// question's earlier rows attend to, but the tail does not, loses to one the tail attends to.
TEST(VlCacheGuardPolicy, ScoresWithTheTailRowsByDefault) {
  // m = 12: media 0..5, question 6..11 (the last 4 rows are the tail). alpha 0.1, floor 1 and no
  // sinks or guard: one position per layer, the best scored.
  const int64_t m = 12;
  PromptShape shape = Shape(m, 1, 1, 1);
  for (int i = 0; i < 6; ++i) shape.visual[i] = 1;
  // Rows 6 and 7 put nearly all their weight on media position 1; rows 8..11 a third on
  // position 4 and the rest spread evenly. Summed over rows 6..11, position 1 wins (2 x 0.9);
  // over the tail, position 4 (4 x 0.34).
  std::vector<std::vector<double>> rows(m, std::vector<double>(m, 0.0));
  for (int64_t q = 0; q < m; ++q) {
    for (int64_t j = 0; j <= q; ++j) rows[q][j] = 1.0 / static_cast<double>(q + 1);
  }
  for (int64_t q : {6, 7}) {
    for (int64_t j = 0; j <= q; ++j) rows[q][j] = 0.1 / static_cast<double>(q);
    rows[q][1] = 0.9;
  }
  for (int64_t q = 8; q < m; ++q) {
    for (int64_t j = 0; j <= q; ++j) rows[q][j] = 0.66 / static_cast<double>(q);
    rows[q][4] = 0.34;
  }
  auto kept = [&](int scoring_rows) {
    PolicyConfig policy = Policy("vlcache-guard", 0.1);
    policy.sinks = 0;
    policy.guard_window = 0;
    policy.min_layer_tokens = 1;
    policy.guard_scoring_rows = scoring_rows;
    const ObservationSpec spec = ObservationFor(policy, shape);
    EXPECT_EQ(spec.query_begin, scoring_rows > 0 ? m - scoring_rows : 6);
    auto plan =
        MakeKeepPlan(policy, shape, {ObserveByHand({rows}, spec.query_begin, spec.threshold)});
    EXPECT_TRUE(plan.ok()) << plan.status();
    return plan.ok() ? Row(plan->layers[0].positions, 0) : std::vector<int64_t>{};
  };
  EXPECT_EQ(kept(4), (std::vector<int64_t>{4}));  // the default
  EXPECT_EQ(kept(0), (std::vector<int64_t>{1}));  // every row after the media, as vlcache
  // vlcache itself is unchanged by the setting.
  PolicyConfig vl = Policy("vlcache", 0.1);
  vl.guard_scoring_rows = 2;
  EXPECT_EQ(ObservationFor(vl, shape).query_begin, 6);
}

TEST(GuardBudgets, EveryLayerKeepsTheFloorAndTheRestFollowsDensity) {
  // m = 1000, alpha 0.1: b = 100, total 400 over 4 layers; floor 30 (clip floor 0.01: 10).
  const std::vector<double> d = {0.9, 0.1, 0.5, 0.5};
  std::vector<int64_t> k = GuardBudgets(d, 1000, 0.1, 30, 0.01, true);
  EXPECT_EQ(std::accumulate(k.begin(), k.end(), int64_t{0}), 400);
  for (int64_t x : k) EXPECT_GE(x, 30);
  // Layer 1 sits on the floor; the other 370 follow 0.9 : 0.5 : 0.5.
  EXPECT_EQ(k, (std::vector<int64_t>{175, 30, 98, 97}));
  // Evenly, for the ablation.
  EXPECT_EQ(GuardBudgets(d, 1000, 0.1, 30, 0.01, false), std::vector<int64_t>(4, 100));
}

TEST(GuardBudgets, AFloorAboveTheBudgetIsKeptInEveryLayerAndTheTotalGrows) {
  // m = 30, alpha 0.1: b = 3, but every layer must keep 17.
  const std::vector<double> d = {0.9, 0.1, 0.5, 0.5};
  EXPECT_EQ(GuardBudgets(d, 30, 0.1, 17, 0.01, true), std::vector<int64_t>(4, 17));
  EXPECT_EQ(GuardBudgets(d, 30, 0.1, 17, 0.01, false), std::vector<int64_t>(4, 17));
  // A floor above the prompt keeps the prompt.
  EXPECT_EQ(GuardBudgets(d, 30, 0.1, 64, 0.01, true), std::vector<int64_t>(4, 30));
  EXPECT_TRUE(GuardBudgets({}, 30, 0.1, 4, 0.01, true).empty());
}

TEST(VlCacheGuardPolicy, GuardedTokensAreKeptInEveryLayerWhateverTheirScores) {
  // m = 60: sinks 0..3, media 4..49, question 50..59. alpha 0.5: b = 30 per layer.
  const int64_t m = 60;
  PromptShape shape = Shape(m, 3, 4, 2);
  for (int i = 4; i < 50; ++i) shape.visual[i] = 1;
  std::vector<LayerObservation> obs = RandomObservations(shape, 11);
  const int64_t sparse[] = {0, 300, 150};
  for (int l = 0; l < 3; ++l) {
    // The guarded positions score lowest of all, so nothing but the guard can keep them.
    obs[l].col_sums.slice(1, 0, 4).fill_(-1.0f);
    obs[l].col_sums.slice(1, 50, m).fill_(-1.0f);
    obs[l].sparse_counts = at::full({4}, sparse[l], at::kLong);
    obs[l].causal_entries = 600;
  }
  PolicyConfig policy = Policy("vlcache-guard", 0.5);
  policy.guard_window = 10;
  auto plan = MakeKeepPlan(policy, shape, obs);
  ASSERT_TRUE(plan.ok()) << plan.status();
  int64_t total = 0;
  for (int l = 0; l < 3; ++l) {
    const LayerPlan& lp = plan->layers[l];
    total += lp.keep;
    ASSERT_EQ(lp.positions.sizes(), (std::vector<int64_t>{2, lp.keep}));
    at::Tensor scores = GroupMean(obs[l].col_sums, 2);
    for (int h = 0; h < 2; ++h) {
      std::vector<int64_t> row = Row(lp.positions, h);
      ASSERT_TRUE(std::is_sorted(row.begin(), row.end()));
      EXPECT_EQ(std::vector<int64_t>(row.begin(), row.begin() + 4), Range(0, 4)) << l;
      EXPECT_EQ(std::vector<int64_t>(row.end() - 10, row.end()), Range(50, m)) << l;
      // The rest are the highest-scoring media positions of this KV head.
      std::vector<int64_t> picked(row.begin() + 4, row.end() - 10);
      std::vector<std::pair<float, int64_t>> ranked;
      for (int64_t j = 4; j < 50; ++j) ranked.push_back({-scores[h][j].item<float>(), j});
      std::sort(ranked.begin(), ranked.end());
      std::vector<int64_t> want;
      for (size_t i = 0; i < picked.size(); ++i) want.push_back(ranked[i].second);
      std::sort(want.begin(), want.end());
      EXPECT_EQ(picked, want) << "layer " << l << " head " << h;
    }
  }
  // Above the floor (14 guarded, 16 by default) the total is the baselines' 30 * 3, shared by
  // density: the densest layer 0 keeps the most, the sparsest layer 1 the least.
  EXPECT_EQ(total, 90);
  EXPECT_GT(plan->layers[0].keep, plan->layers[2].keep);
  EXPECT_GT(plan->layers[2].keep, plan->layers[1].keep);
}

TEST(VlCacheGuardPolicy, ASmallBudgetStillKeepsTheQuestionAndTheFloor) {
  // m = 30 (a single image's shape): alpha 0.1 would keep 3 tokens; the guard keeps the 4 sinks
  // and the 10-token question, and the floor of 16 adds the 2 best media tokens.
  const int64_t m = 30;
  PromptShape shape = Shape(m, 2, 2, 2);
  for (int i = 4; i < 20; ++i) shape.visual[i] = 1;
  std::vector<LayerObservation> obs = RandomObservations(shape, 12);
  obs[0].col_sums[0][7] = 5.0f;
  obs[0].col_sums[0][13] = 4.0f;
  PolicyConfig guard_question = Policy("vlcache-guard", 0.1);
  guard_question.guard_window = 64;
  auto plan = MakeKeepPlan(guard_question, shape, obs);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(Keeps(*plan), (std::vector<int64_t>{16, 16}));
  // KV head 0 of layer 0 reads query head 0 only: its two best media tokens are 7 and 13.
  EXPECT_EQ(Row(plan->layers[0].positions, 0),
            Concat(Concat(Range(0, 4), {7, 13}), Range(20, 30)));
  // With the floor at 1 the guard alone decides.
  PolicyConfig p = guard_question;
  p.min_layer_tokens = 1;
  auto bare = MakeKeepPlan(p, shape, obs);
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(Keeps(*bare), (std::vector<int64_t>{14, 14}));
  EXPECT_EQ(Row(bare->layers[1].positions, 1), Concat(Range(0, 4), Range(20, 30)));
  // The defaults guard the prompt's last 4 tokens only: the floor's other 8 go to the best
  // scores among the media and the rest of the question.
  auto def = MakeKeepPlan(Policy("vlcache-guard", 0.1), shape, obs);
  ASSERT_TRUE(def.ok()) << def.status();
  EXPECT_EQ(Keeps(*def), (std::vector<int64_t>{16, 16}));
  for (int h = 0; h < 2; ++h) {
    std::vector<int64_t> row = Row(def->layers[0].positions, h);
    EXPECT_EQ(std::vector<int64_t>(row.begin(), row.begin() + 4), Range(0, 4));
    EXPECT_EQ(std::vector<int64_t>(row.end() - 4, row.end()), Range(26, 30));
    std::vector<std::pair<float, int64_t>> ranked;
    for (int64_t j = 4; j < 26; ++j) ranked.push_back({-obs[0].col_sums[h][j].item<float>(), j});
    std::sort(ranked.begin(), ranked.end());
    std::vector<int64_t> want;
    for (int i = 0; i < 8; ++i) want.push_back(ranked[i].second);
    std::sort(want.begin(), want.end());
    EXPECT_EQ(std::vector<int64_t>(row.begin() + 4, row.end() - 4), want) << h;
  }
}

TEST(VlCacheGuardPolicy, MissingSparsityCountsAreRejectedAsForVlCache) {
  PromptShape shape = Shape(30, 2, 4, 2);
  std::vector<LayerObservation> obs = RandomObservations(shape, 1);
  obs[1].sparse_counts = at::Tensor();
  auto plan = MakeKeepPlan(Policy("vlcache-guard", 0.2), shape, obs);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(plan.status().message().find("layer 1 sparse_counts"), std::string::npos)
      << plan.status();
}

TEST(SizeRule, PromptsShorterThanTheMinimumAreNotCompressed) {
  PolicyConfig p = Policy("vlcache-guard", 0.1);
  EXPECT_TRUE(Compresses(p, 1));
  p.min_prompt_tokens = 64;
  EXPECT_FALSE(Compresses(p, 63));
  EXPECT_TRUE(Compresses(p, 64));
  EXPECT_FALSE(Compresses(Policy("full", 0.1), 1000));
}

// ---- MakeKeepPlan: baselines

TEST(H2OPolicy, KeepsTheRecentWindowAndTheHeaviestHittersPerKvHead) {
  // m = 20, alpha 0.5: k = 10, recent window floor(0.1 * 10) = 1.
  const int64_t m = 20;
  PromptShape shape = Shape(m, 1, 4, 2);
  std::vector<float> cs(4 * m);
  for (int64_t j = 0; j < m; ++j) {
    // KV head 0 (query heads 0, 1): odd keys score 1, even keys 0.25, the last key 0.
    cs[0 * m + j] = j % 2 ? 2.f : 0.f;
    cs[1 * m + j] = j % 2 ? 0.f : 0.5f;
    // KV head 1 (query heads 2, 3): keys 0, 4, 8, 12 are heavy hitters, the rest tie.
    const bool heavy = j == 0 || j == 4 || j == 8 || j == 12;
    cs[2 * m + j] = cs[3 * m + j] = heavy ? 5.f : 0.1f;
  }
  cs[0 * m + 19] = cs[1 * m + 19] = 0.f;
  LayerObservation obs;
  obs.col_sums = at::tensor(cs).reshape({4, m});
  auto plan = MakeKeepPlan(Policy("h2o", 0.5), shape, {obs});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->layers[0].keep, 10);
  EXPECT_EQ(Row(plan->layers[0].positions, 0),
            (std::vector<int64_t>{1, 3, 5, 7, 9, 11, 13, 15, 17, 19}));
  EXPECT_EQ(Row(plan->layers[0].positions, 1),
            (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 8, 12, 19}));
}

TEST(SnapKvPolicy, KeepsTheObservationWindowAndThePooledTopOfThePrefix) {
  // m = 40, window 8, alpha 0.5: k = 20 = the window + 12 of the prefix. One spike at key 10
  // pools into keys 8..12; the remaining 7 picks are zero ties, taken lowest first. Without the
  // pooling the plan would keep 0..11 instead.
  const int64_t m = 40;
  PromptShape shape = Shape(m, 1, 2, 1);
  PolicyConfig policy = Policy("snapkv", 0.5);
  policy.window = 8;
  LayerObservation obs;
  obs.col_sums = at::zeros({2, m});
  obs.col_sums[0][10] = 20.f;
  auto plan = MakeKeepPlan(policy, shape, {obs});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(Row(plan->layers[0].positions, 0),
            Concat(Concat(Range(0, 7), Range(8, 13)), Range(32, 40)));
}

TEST(SnapKvPolicy, ABudgetBelowTheWindowKeepsTheLastTokens) {
  PromptShape shape = Shape(40, 2, 2, 2);
  auto plan = MakeKeepPlan(Policy("snapkv", 0.25), shape, RandomObservations(shape, 1));
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const LayerPlan& lp : plan->layers) {
    ASSERT_EQ(lp.keep, 10);
    EXPECT_EQ(Row(lp.positions, 0), Range(30, 40));
    EXPECT_EQ(Row(lp.positions, 1), Range(30, 40));
  }
}

TEST(PyramidKvPolicy, LowerLayersKeepMoreAndEveryLayerKeepsTheWindow) {
  PromptShape shape = Shape(1000, 4, 2, 1);
  auto plan = MakeKeepPlan(Policy("pyramidkv", 0.1), shape, RandomObservations(shape, 2));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(Keeps(*plan), (std::vector<int64_t>{165, 122, 78, 35}));
  for (const LayerPlan& lp : plan->layers) {
    std::vector<int64_t> row = Row(lp.positions, 0);
    ASSERT_EQ(static_cast<int64_t>(row.size()), lp.keep);
    EXPECT_TRUE(std::is_sorted(row.begin(), row.end()));
    EXPECT_EQ(std::vector<int64_t>(row.end() - 32, row.end()), Range(968, 1000));
  }
}

TEST(StreamingLlmPolicy, KeepsTheSinksAndTheMostRecentTokens) {
  PromptShape shape = Shape(20, 2, 4, 2);
  auto plan = MakeKeepPlan(Policy("streamingllm", 0.5), shape, {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  for (const LayerPlan& lp : plan->layers) {
    ASSERT_EQ(lp.keep, 10);
    EXPECT_EQ(Row(lp.positions, 0), Concat(Range(0, 4), Range(14, 20)));
    EXPECT_EQ(Row(lp.positions, 1), Concat(Range(0, 4), Range(14, 20)));
  }
  // A budget below the sinks keeps only sinks; no sinks keeps only the most recent.
  auto tiny = MakeKeepPlan(Policy("streamingllm", 0.1), shape, {});
  ASSERT_TRUE(tiny.ok());
  EXPECT_EQ(Row(tiny->layers[0].positions, 0), Range(0, 2));
  PolicyConfig no_sinks = Policy("streamingllm", 0.25);
  no_sinks.sinks = 0;
  auto recent = MakeKeepPlan(no_sinks, shape, {});
  ASSERT_TRUE(recent.ok());
  EXPECT_EQ(Row(recent->layers[1].positions, 1), Range(15, 20));
}

TEST(UniformBudget, RoundsHalfAwayFromZeroAndKeepsAtLeastOneToken) {
  // Seen through streamingllm, whose plan is the uniform budget per layer.
  auto keep = [](int64_t m, double alpha) {
    auto plan = MakeKeepPlan(Policy("streamingllm", alpha), Shape(m, 1, 1, 1), {});
    return plan.ok() ? plan->layers[0].keep : -1;
  };
  EXPECT_EQ(keep(5, 0.5), 3);    // 2.5
  EXPECT_EQ(keep(7, 0.5), 4);    // 3.5
  EXPECT_EQ(keep(10, 0.14), 1);  // 1.4
  EXPECT_EQ(keep(3, 0.1), 1);    // 0.3
  EXPECT_EQ(keep(9, 1.0), 9);
}

TEST(RandomPolicy, IsDeterministicForASeedAndDiffersAcrossSeeds) {
  PromptShape shape = Shape(200, 3, 4, 2);
  PolicyConfig a = Policy("random", 0.25);
  a.seed = 1;
  PolicyConfig b = a;
  b.seed = 2;
  auto p1 = MakeKeepPlan(a, shape, {});
  auto p2 = MakeKeepPlan(a, shape, {});
  auto p3 = MakeKeepPlan(b, shape, {});
  ASSERT_TRUE(p1.ok() && p2.ok() && p3.ok());
  bool any_difference = false;
  for (int l = 0; l < 3; ++l) {
    const LayerPlan& lp = p1->layers[l];
    ASSERT_EQ(lp.keep, 50);
    EXPECT_TRUE(at::equal(lp.positions, p2->layers[l].positions)) << l;
    any_difference |= !at::equal(lp.positions, p3->layers[l].positions);
    for (int h = 0; h < 2; ++h) {
      std::vector<int64_t> row = Row(lp.positions, h);
      // Strictly ascending: no position twice. The recent window floor(0.1 * 50) = 5 is kept.
      EXPECT_TRUE(std::adjacent_find(row.begin(), row.end(), std::greater_equal<int64_t>()) ==
                  row.end());
      EXPECT_EQ(std::vector<int64_t>(row.end() - 5, row.end()), Range(195, 200));
      EXPECT_GE(row.front(), 0);
    }
  }
  EXPECT_TRUE(any_difference);
  EXPECT_FALSE(at::equal(p1->layers[0].positions[0], p1->layers[0].positions[1]));
}

TEST(RandomPolicy, PicksEveryPrefixPositionAboutEquallyOften) {
  // m = 20, k = 10, recent 1: 9 of the 19 prefix positions per head, 2000 seeds x 2 heads.
  PromptShape shape = Shape(20, 1, 2, 2);
  std::vector<int> count(20, 0);
  const int seeds = 2000;
  for (int s = 0; s < seeds; ++s) {
    PolicyConfig p = Policy("random", 0.5);
    p.seed = static_cast<uint64_t>(s);
    auto plan = MakeKeepPlan(p, shape, {});
    ASSERT_TRUE(plan.ok());
    for (int h = 0; h < 2; ++h) {
      for (int64_t j : Row(plan->layers[0].positions, h)) ++count[j];
    }
  }
  EXPECT_EQ(count[19], 2 * seeds);
  const double expected = 2.0 * seeds * 9 / 19;  // 1894.7; sd about 31
  for (int j = 0; j < 19; ++j) EXPECT_NEAR(count[j], expected, 150) << j;
}

TEST(FullPolicy, KeepsEverythingWithoutPositions) {
  auto plan = MakeKeepPlan(Policy("full", 1.0), Shape(37, 3, 4, 2), {});
  ASSERT_TRUE(plan.ok()) << plan.status();
  ASSERT_EQ(plan->layers.size(), 3u);
  for (const LayerPlan& lp : plan->layers) {
    EXPECT_EQ(lp.keep, 37);
    EXPECT_FALSE(lp.positions.defined());
  }
}

TEST(AllPolicies, BudgetOneKeepsEveryPositionInEveryLayer) {
  PromptShape shape = Shape(50, 3, 4, 2);
  for (int i = 0; i < 20; ++i) shape.visual[i] = 1;
  for (const std::string& name : PolicyNames()) {
    std::vector<LayerObservation> obs;
    if (ObservationFor(Policy(name, 1.0), shape).enabled) obs = RandomObservations(shape, 9);
    auto plan = MakeKeepPlan(Policy(name, 1.0), shape, obs);
    ASSERT_TRUE(plan.ok()) << name << ": " << plan.status();
    for (const LayerPlan& lp : plan->layers) {
      EXPECT_EQ(lp.keep, 50) << name;
      if (lp.positions.defined()) {
        EXPECT_EQ(Row(lp.positions, 0), Range(0, 50)) << name;
        EXPECT_EQ(Row(lp.positions, 1), Range(0, 50)) << name;
      }
    }
  }
}

TEST(AllPolicies, UniformBaselinesKeepTheSameTotal) {
  PromptShape shape = Shape(333, 5, 4, 2);
  for (const char* name : {"h2o", "snapkv", "streamingllm", "random"}) {
    auto plan = MakeKeepPlan(Policy(name, 0.2), shape, RandomObservations(shape, 4));
    ASSERT_TRUE(plan.ok()) << name << ": " << plan.status();
    EXPECT_EQ(Keeps(*plan), std::vector<int64_t>(5, 67)) << name;  // round(66.6)
    for (const LayerPlan& lp : plan->layers) {
      EXPECT_EQ(lp.positions.sizes(), (std::vector<int64_t>{2, 67})) << name;
    }
  }
}

// ---- MakeKeepPlan: errors

TEST(MakeKeepPlan, MissingOrMisshapedObservationsAreRejected) {
  PromptShape shape = Shape(30, 2, 4, 2);
  const PolicyConfig policy = Policy("vlcache", 0.2);
  auto code = [&](const std::vector<LayerObservation>& obs) {
    return MakeKeepPlan(policy, shape, obs).status().code();
  };
  EXPECT_EQ(code({}), absl::StatusCode::kInvalidArgument);
  std::vector<LayerObservation> good = RandomObservations(shape, 1);
  EXPECT_EQ(code(good), absl::StatusCode::kOk);
  EXPECT_EQ(code({good[0]}), absl::StatusCode::kInvalidArgument);

  std::vector<LayerObservation> bad = good;
  bad[1].col_sums = at::rand({4, 29});
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad[1].col_sums = at::rand({2, 30});  // per KV head instead of per query head
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad[0].col_sums = at::Tensor();
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad[0].sparse_counts = at::Tensor();
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = good;
  bad[0].causal_entries = 0;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);

  // h2o needs column sums but no sparsity.
  std::vector<LayerObservation> sums_only = good;
  for (auto& o : sums_only) o.sparse_counts = at::Tensor();
  EXPECT_TRUE(MakeKeepPlan(Policy("h2o", 0.2), shape, sums_only).ok());
  EXPECT_EQ(MakeKeepPlan(Policy("snapkv", 0.2), shape, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(MakeKeepPlan, InconsistentShapesAndInvalidPoliciesAreRejected) {
  auto code = [](const PolicyConfig& p, const PromptShape& s) {
    return MakeKeepPlan(p, s, {}).status().code();
  };
  const PolicyConfig full = Policy("full", 1.0);
  EXPECT_EQ(code(full, Shape(0, 2, 4, 2)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(full, Shape(10, 2, 6, 4)), absl::StatusCode::kInvalidArgument);
  PromptShape wrong_mask = Shape(10, 2, 4, 2);
  wrong_mask.visual.resize(9);
  EXPECT_EQ(code(full, wrong_mask), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Policy("streamingllm", 0.0), Shape(10, 2, 4, 2)),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Policy("lru", 0.5), Shape(10, 2, 4, 2)), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vlc::kvcache
