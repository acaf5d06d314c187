#include "kvcache/paged_cache.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "kvcache/attention.h"
#include "kvcache/kv_cache.h"

namespace vlc::kvcache {
namespace {

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::unique_ptr<PagePool> MakePool(int64_t num_pages, int page_tokens, int kv_heads, int head_dim) {
  PagePoolOptions o;
  o.page_tokens = page_tokens;
  o.kv_heads = kv_heads;
  o.head_dim = head_dim;
  o.capacity_bytes = num_pages * 2 * kv_heads * page_tokens * head_dim * 4;
  auto pool = PagePool::Create(o);
  EXPECT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ((*pool)->num_pages(), num_pages);
  return std::move(pool).value();
}

at::Tensor Tokens(int64_t kv_heads, int64_t t, int64_t head_dim) {
  return at::randn({kv_heads, t, head_dim});
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

// Plan for one layer: `keep` distinct positions in [0, length) per head, sorted, drawn from rng.
LayerPlan RandomLayerPlan(std::mt19937& rng, int64_t kv_heads, int64_t length, int64_t keep) {
  LayerPlan lp;
  lp.keep = keep;
  lp.positions = at::empty({kv_heads, keep}, at::kLong);
  std::vector<int64_t> all(length);
  for (int64_t h = 0; h < kv_heads; ++h) {
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    std::sort(all.begin(), all.begin() + keep);
    for (int64_t i = 0; i < keep; ++i) lp.positions[h][i] = all[i];
  }
  return lp;
}

// What a plan keeps of one layer's Read tensor: per head, the rows it names.
at::Tensor GatherRows(const at::Tensor& x, const at::Tensor& positions) {
  const int64_t d = x.size(2);
  auto idx = positions.unsqueeze(-1).expand({positions.size(0), positions.size(1), d});
  return at::gather(x, 1, idx);
}

// ---- Read after Append ---------------------------------------------------------------------

TEST(PagedKvCache, ReadReturnsEachAppendAcrossPageBoundaries) {
  at::manual_seed(1);
  constexpr int kB = 4;
  auto pool = MakePool(64, kB, 2, 8);
  PagedKvCache cache(2, pool.get());
  SeqId next = 0;
  for (int64_t len : {1, kB - 1, kB, kB + 1, 3 * kB + 5}) {
    const SeqId s = next++;
    ASSERT_TRUE(cache.AddSequence(s).ok());
    auto k = Tokens(2, len, 8), v = Tokens(2, len, 8);
    ASSERT_TRUE(cache.Append(s, 1, k, v).ok());
    auto kv = cache.Read(s, 1);
    ASSERT_TRUE(kv.ok()) << kv.status();
    EXPECT_TRUE(at::equal(kv->first, k)) << "length " << len;
    EXPECT_TRUE(at::equal(kv->second, v)) << "length " << len;
    EXPECT_EQ(cache.Length(s, 1), len);
    EXPECT_EQ(cache.Length(s, 0), 0) << "layers are independent";
    EXPECT_EQ(static_cast<int64_t>(cache.BlockTable(s, 1)->size()), CeilDiv(len, kB));
    EXPECT_TRUE(cache.BlockTable(s, 0)->empty());
    EXPECT_EQ(cache.Bytes(s), CeilDiv(len, kB) * pool->bytes_per_page());
  }
}

TEST(PagedKvCache, ReadReturnsTheConcatenationOfSuccessiveAppends) {
  at::manual_seed(2);
  constexpr int kB = 4;
  auto pool = MakePool(64, kB, 2, 8);
  PagedKvCache cache(1, pool.get());
  ASSERT_TRUE(cache.AddSequence(7).ok());
  ASSERT_TRUE(cache.AddSequence(8).ok());
  std::vector<at::Tensor> ks, vs;
  int64_t total = 0;
  // Appends that start and end at every offset within a page, interleaved with another
  // sequence's so that the block table is not a run of consecutive pages.
  for (int64_t len : {1, kB - 1, kB, kB + 1, 3 * kB + 5, 2, 0, 1}) {
    ks.push_back(Tokens(2, len, 8));
    vs.push_back(Tokens(2, len, 8));
    ASSERT_TRUE(cache.Append(7, 0, ks.back(), vs.back()).ok());
    ASSERT_TRUE(cache.Append(8, 0, Tokens(2, 1, 8), Tokens(2, 1, 8)).ok());
    total += len;
    auto kv = cache.Read(7, 0);
    ASSERT_TRUE(kv.ok());
    EXPECT_TRUE(at::equal(kv->first, at::cat(ks, 1))) << "after " << total << " tokens";
    EXPECT_TRUE(at::equal(kv->second, at::cat(vs, 1))) << "after " << total << " tokens";
    EXPECT_EQ(static_cast<int64_t>(cache.BlockTable(7, 0)->size()), CeilDiv(total, kB));
  }
}

TEST(PagedKvCache, ReadOfAnEmptyLayerIsEmpty) {
  auto pool = MakePool(4, 4, 2, 8);
  PagedKvCache cache(1, pool.get());
  ASSERT_TRUE(cache.AddSequence(1).ok());
  auto kv = cache.Read(1, 0);
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->first.sizes(), (std::vector<int64_t>{2, 0, 8}));
  EXPECT_EQ(kv->second.sizes(), (std::vector<int64_t>{2, 0, 8}));
}

TEST(PagedKvCache, AppendConvertsOtherFloatingTypes) {
  auto pool = MakePool(4, 4, 2, 8);
  PagedKvCache cache(1, pool.get());
  ASSERT_TRUE(cache.AddSequence(1).ok());
  auto k = at::randn({2, 3, 8}, at::kDouble);
  // A non-contiguous view, too.
  auto v = at::randn({2, 8, 3}).transpose(1, 2);
  ASSERT_TRUE(cache.Append(1, 0, k, v).ok());
  auto kv = cache.Read(1, 0);
  ASSERT_TRUE(kv.ok());
  EXPECT_TRUE(at::equal(kv->first, k.to(at::kFloat)));
  EXPECT_TRUE(at::equal(kv->second, v.contiguous()));
}

// ---- Accounting ----------------------------------------------------------------------------

TEST(PagedKvCache, BytesAndPagesNeededFollowThePages) {
  constexpr int kB = 4;
  auto pool = MakePool(32, kB, 2, 8);
  PagedKvCache cache(3, pool.get());
  EXPECT_EQ(cache.BytesPerTokenPerLayer(), 2 * 2 * 8 * 4);
  EXPECT_EQ(cache.PagesNeeded(5, 9), 3 * CeilDiv(9, kB)) << "an unknown sequence holds nothing";
  EXPECT_EQ(cache.Bytes(5), 0);
  ASSERT_TRUE(cache.AddSequence(5).ok());
  EXPECT_EQ(cache.PagesNeeded(5, 0), 0);
  ASSERT_TRUE(cache.Append(5, 0, Tokens(2, 5, 8), Tokens(2, 5, 8)).ok());  // 2 pages, 3 free slots
  ASSERT_TRUE(cache.Append(5, 2, Tokens(2, 4, 8), Tokens(2, 4, 8)).ok());  // 1 page, full
  EXPECT_EQ(cache.Bytes(5), 3 * pool->bytes_per_page());
  EXPECT_EQ(pool->free_pages(), 32 - 3);
  // 3 more tokens: layer 0 fits them, layer 1 needs 1 page, layer 2 needs 1 page.
  EXPECT_EQ(cache.PagesNeeded(5, 3), 2);
  // 4 more: layer 0 needs 1, layer 1 needs 1, layer 2 needs 1.
  EXPECT_EQ(cache.PagesNeeded(5, 4), 3);
  cache.RemoveSequence(5);
  EXPECT_EQ(pool->free_pages(), 32);
  EXPECT_FALSE(cache.HasSequence(5));
  cache.RemoveSequence(5);  // unknown ids are ignored
  EXPECT_EQ(pool->free_pages(), 32);
}

TEST(PagedKvCache, ExhaustedAppendChangesNothing) {
  at::manual_seed(3);
  constexpr int kB = 4;
  auto pool = MakePool(3, kB, 2, 8);
  PagedKvCache cache(1, pool.get());
  ASSERT_TRUE(cache.AddSequence(1).ok());
  auto k = Tokens(2, 6, 8), v = Tokens(2, 6, 8);
  ASSERT_TRUE(cache.Append(1, 0, k, v).ok());  // 2 pages
  const std::vector<int32_t> table = *cache.BlockTable(1, 0);
  // 6 + 7 = 13 tokens need 4 pages: 2 more, only 1 free.
  auto st = cache.Append(1, 0, Tokens(2, 7, 8), Tokens(2, 7, 8));
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(pool->free_pages(), 1);
  EXPECT_EQ(cache.Length(1, 0), 6);
  EXPECT_EQ(*cache.BlockTable(1, 0), table);
  auto kv = cache.Read(1, 0);
  ASSERT_TRUE(kv.ok());
  EXPECT_TRUE(at::equal(kv->first, k));
  EXPECT_TRUE(at::equal(kv->second, v));
  // What fits still goes in: 6 + 6 = 12 tokens = 3 pages.
  ASSERT_TRUE(cache.Append(1, 0, Tokens(2, 6, 8), Tokens(2, 6, 8)).ok());
  EXPECT_EQ(pool->free_pages(), 0);
}

// ---- Decode attention ----------------------------------------------------------------------

// Fills a paged and a contiguous cache with the same tokens, interleaving the sequences' appends
// so that their pages alternate in the pool.
void FillBoth(PagedKvCache& paged, ContiguousKvCache& ref, const std::vector<SeqId>& seqs,
              const std::vector<int64_t>& lengths, int layer, int64_t kv_heads, int64_t d) {
  std::vector<int64_t> done(seqs.size(), 0);
  for (bool more = true; more;) {
    more = false;
    for (size_t i = 0; i < seqs.size(); ++i) {
      const int64_t t = std::min<int64_t>(lengths[i] - done[i], 1 + (done[i] % 5));
      if (t <= 0) continue;
      auto k = Tokens(kv_heads, t, d), v = Tokens(kv_heads, t, d);
      ASSERT_TRUE(paged.Append(seqs[i], layer, k, v).ok());
      ASSERT_TRUE(ref.Append(seqs[i], layer, k, v).ok());
      done[i] += t;
      more = true;
    }
  }
}

TEST(PagedKvCache, DecodeAttentionMatchesTheReferenceForGqaGroupsAndWindows) {
  at::manual_seed(4);
  constexpr int kB = 4, kKvHeads = 2, kDim = 12, kLayers = 2;
  const std::vector<int64_t> lengths = {1, 3, kB, kB + 1, 17, 38, 101};
  std::vector<SeqId> seqs;
  for (size_t i = 0; i < lengths.size(); ++i) seqs.push_back(100 + static_cast<SeqId>(i));
  auto pool = MakePool(256, kB, kKvHeads, kDim);
  PagedKvCache paged(kLayers, pool.get());
  ContiguousKvCache ref(kLayers, kKvHeads, kDim);
  for (SeqId s : seqs) {
    ASSERT_TRUE(paged.AddSequence(s).ok());
    ASSERT_TRUE(ref.AddSequence(s).ok());
  }
  FillBoth(paged, ref, seqs, lengths, /*layer=*/1, kKvHeads, kDim);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kDim));
  for (int group : {1, 2, 4}) {
    for (int64_t window : {0, 1, 3, 7, 1000}) {
      auto q = at::randn({static_cast<int64_t>(seqs.size()), kKvHeads * group, kDim});
      auto got = paged.DecodeAttention(1, seqs, q, scale, window);
      ASSERT_TRUE(got.ok()) << got.status();
      auto want = ref.DecodeAttention(1, seqs, q, scale, window);
      ASSERT_TRUE(want.ok());
      EXPECT_LT(MaxAbsDiff(*got, *want), 1e-5) << "group " << group << " window " << window;
      // And against the attention the engine's prefill uses, on the paged cache's own Read.
      for (size_t b = 0; b < seqs.size(); ++b) {
        auto kv = paged.Read(seqs[b], 1);
        ASSERT_TRUE(kv.ok());
        auto one = CausalAttention(q[b].unsqueeze(1), kv->first, kv->second, scale, window);
        EXPECT_LT(MaxAbsDiff((*got)[b], one.squeeze(1)), 1e-5)
            << "sequence " << b << " group " << group << " window " << window;
      }
    }
  }
}

TEST(PagedKvCache, DecodeAttentionHandlesAnyBatchOrder) {
  at::manual_seed(5);
  constexpr int kB = 16, kKvHeads = 4, kDim = 32;
  auto pool = MakePool(64, kB, kKvHeads, kDim);
  PagedKvCache paged(1, pool.get());
  ContiguousKvCache ref(1, kKvHeads, kDim);
  const std::vector<SeqId> seqs = {3, 1, 2};
  for (SeqId s : seqs) {
    ASSERT_TRUE(paged.AddSequence(s).ok());
    ASSERT_TRUE(ref.AddSequence(s).ok());
  }
  FillBoth(paged, ref, seqs, {33, 1, 200}, 0, kKvHeads, kDim);
  // The same sequence twice in one batch, in a different order from the appends.
  const std::vector<SeqId> batch = {2, 3, 2, 1};
  auto q = at::randn({4, kKvHeads * 2, kDim});
  q[2].copy_(q[0]);
  auto got = paged.DecodeAttention(0, batch, q, 0.2, 0);
  auto want = ref.DecodeAttention(0, batch, q, 0.2, 0);
  ASSERT_TRUE(got.ok() && want.ok());
  EXPECT_LT(MaxAbsDiff(*got, *want), 1e-5);
  EXPECT_TRUE(at::equal((*got)[0], (*got)[2])) << "same query, same cache, same answer";
  // A large scale makes the scores spread widely: the softmax must stay finite.
  auto sharp = paged.DecodeAttention(0, batch, q * 50, 1.0, 0);
  auto sharp_ref = ref.DecodeAttention(0, batch, q * 50, 1.0, 0);
  ASSERT_TRUE(sharp.ok() && sharp_ref.ok());
  EXPECT_TRUE(at::isfinite(*sharp).all().item<bool>());
  EXPECT_LT(MaxAbsDiff(*sharp, *sharp_ref), 1e-4);
}

// ---- Compaction ----------------------------------------------------------------------------

TEST(PagedKvCache, CompactKeepsThePlannedRowsFreesPagesAndGrowsAgain) {
  at::manual_seed(6);
  std::mt19937 rng(6);
  constexpr int kB = 4, kKvHeads = 2, kDim = 8, kLayers = 4;
  auto pool = MakePool(128, kB, kKvHeads, kDim);
  PagedKvCache paged(kLayers, pool.get());
  ContiguousKvCache ref(kLayers, kKvHeads, kDim);
  // Sequence 1 is compacted; sequence 2, interleaved with it in the pool, must not change.
  for (SeqId s : {1, 2}) {
    ASSERT_TRUE(paged.AddSequence(s).ok());
    ASSERT_TRUE(ref.AddSequence(s).ok());
  }
  const std::vector<int64_t> lengths = {37, 37, 21, 9};
  for (int l = 0; l < kLayers; ++l) {
    FillBoth(paged, ref, {1, 2}, {lengths[l], 11}, l, kKvHeads, kDim);
  }
  std::vector<std::pair<at::Tensor, at::Tensor>> before, other;
  for (int l = 0; l < kLayers; ++l) {
    before.push_back(*paged.Read(1, l));
    other.push_back(*paged.Read(2, l));
  }

  KeepPlan plan;
  plan.layers.resize(kLayers);
  plan.layers[0] = RandomLayerPlan(rng, kKvHeads, lengths[0], 10);  // heads keep different rows
  // layer 1: positions undefined, keeps everything
  plan.layers[2] = RandomLayerPlan(rng, kKvHeads, lengths[2], 0);  // keeps nothing
  plan.layers[3].keep = lengths[3];  // keeps all, explicitly: nothing moves, nothing is freed
  plan.layers[3].positions = at::arange(lengths[3], at::kLong).repeat({kKvHeads, 1});
  ASSERT_NE(plan.layers[0].positions[0].sum().item<int64_t>(), 45) << "not just a prefix";

  const int64_t free_before = pool->free_pages();
  ASSERT_TRUE(paged.Compact(1, plan).ok());
  ASSERT_TRUE(ref.Compact(1, plan).ok());
  const int64_t freed = (CeilDiv(37, kB) - CeilDiv(10, kB)) + (CeilDiv(21, kB) - 0);
  EXPECT_EQ(pool->free_pages() - free_before, freed);
  const std::vector<int64_t> kept = {10, 37, 0, 9};
  for (int l = 0; l < kLayers; ++l) {
    EXPECT_EQ(paged.Length(1, l), kept[l]);
    EXPECT_EQ(static_cast<int64_t>(paged.BlockTable(1, l)->size()), CeilDiv(kept[l], kB));
    auto kv = paged.Read(1, l);
    ASSERT_TRUE(kv.ok());
    at::Tensor want_k = before[l].first, want_v = before[l].second;
    if (plan.layers[l].positions.defined()) {
      want_k = GatherRows(want_k, plan.layers[l].positions);
      want_v = GatherRows(want_v, plan.layers[l].positions);
    }
    EXPECT_TRUE(at::equal(kv->first, want_k)) << "layer " << l;
    EXPECT_TRUE(at::equal(kv->second, want_v)) << "layer " << l;
    auto kv2 = paged.Read(2, l);
    EXPECT_TRUE(at::equal(kv2->first, other[l].first)) << "the other sequence, layer " << l;
    EXPECT_TRUE(at::equal(kv2->second, other[l].second)) << "the other sequence, layer " << l;
  }
  EXPECT_EQ(paged.Bytes(1),
            (CeilDiv(10, kB) + CeilDiv(37, kB) + 0 + CeilDiv(9, kB)) * pool->bytes_per_page());

  // Appends continue right after the kept tokens.
  for (int l = 0; l < kLayers; ++l) {
    auto k = Tokens(kKvHeads, 6, kDim), v = Tokens(kKvHeads, 6, kDim);
    auto old = *paged.Read(1, l);
    ASSERT_TRUE(paged.Append(1, l, k, v).ok());
    ASSERT_TRUE(ref.Append(1, l, k, v).ok());
    auto kv = paged.Read(1, l);
    EXPECT_TRUE(at::equal(kv->first, at::cat({old.first, k}, 1))) << "layer " << l;
    EXPECT_TRUE(at::equal(kv->second, at::cat({old.second, v}, 1))) << "layer " << l;
    EXPECT_EQ(static_cast<int64_t>(paged.BlockTable(1, l)->size()), CeilDiv(kept[l] + 6, kB));
  }
  for (int l = 0; l < kLayers; ++l) {
    for (int64_t window : {0, 4}) {
      auto q = at::randn({2, kKvHeads * 2, kDim});
      auto got = paged.DecodeAttention(l, {1, 2}, q, 0.35, window);
      auto want = ref.DecodeAttention(l, {1, 2}, q, 0.35, window);
      ASSERT_TRUE(got.ok() && want.ok());
      EXPECT_LT(MaxAbsDiff(*got, *want), 1e-5) << "layer " << l << " window " << window;
    }
  }
}

TEST(PagedKvCache, CompactAcceptsAnyIntegerPositions) {
  auto pool = MakePool(16, 4, 1, 4);
  PagedKvCache cache(1, pool.get());
  ASSERT_TRUE(cache.AddSequence(1).ok());
  auto k = at::arange(40, at::kFloat).view({1, 10, 4});
  ASSERT_TRUE(cache.Append(1, 0, k, -k).ok());
  KeepPlan plan{{LayerPlan{3, at::tensor({2, 5, 9}, at::kInt).view({1, 3})}}};
  ASSERT_TRUE(cache.Compact(1, plan).ok());
  auto kv = cache.Read(1, 0);
  ASSERT_TRUE(kv.ok());
  EXPECT_TRUE(at::equal(kv->first, k.index_select(1, at::tensor({2, 5, 9}, at::kLong))));
  EXPECT_TRUE(at::equal(kv->second, -kv->first));
}

// ---- Random sessions -----------------------------------------------------------------------

// Thousands of operations over a small pool, against the contiguous reference, with exact page
// accounting checked after every step.
TEST(PagedKvCache, RandomSessionsKeepExactAccountingAndMatchTheReference) {
  at::manual_seed(7);
  std::mt19937 rng(7);
  constexpr int kB = 4, kKvHeads = 2, kDim = 4, kLayers = 3, kPages = 120, kOps = 3000;
  auto pool = MakePool(kPages, kB, kKvHeads, kDim);
  PagedKvCache paged(kLayers, pool.get());
  ContiguousKvCache ref(kLayers, kKvHeads, kDim);
  std::vector<SeqId> live;
  SeqId next_id = 0;
  int exhausted = 0, appended = 0, compacted = 0, decoded = 0, removed = 0;
  auto uniform = [&](int64_t lo, int64_t hi) {  // [lo, hi]
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };

  auto expect_same_as_ref = [&](SeqId s) {
    for (int l = 0; l < kLayers; ++l) {
      auto got = paged.Read(s, l);
      auto want = ref.Read(s, l);
      ASSERT_TRUE(got.ok() && want.ok());
      ASSERT_EQ(paged.Length(s, l), ref.Length(s, l));
      ASSERT_TRUE(at::equal(got->first, want->first)) << "seq " << s << " layer " << l;
      ASSERT_TRUE(at::equal(got->second, want->second)) << "seq " << s << " layer " << l;
    }
  };

  for (int op = 0; op < kOps; ++op) {
    const int64_t r = uniform(0, 99);
    if (live.empty() || (r < 12 && live.size() < 10)) {
      const SeqId s = next_id++;
      ASSERT_TRUE(paged.AddSequence(s).ok());
      ASSERT_TRUE(ref.AddSequence(s).ok());
      live.push_back(s);
    } else if (r < 60) {
      // Append the same number of tokens to every layer, as a forward pass does.
      const SeqId s = live[uniform(0, live.size() - 1)];
      const int64_t t = uniform(0, 9) == 0 ? uniform(20, 60) : uniform(1, 9);
      const int64_t needed = paged.PagesNeeded(s, t);
      const int64_t free_before = pool->free_pages();
      bool all_ok = true;
      for (int l = 0; l < kLayers; ++l) {
        const std::vector<int32_t> table = *paged.BlockTable(s, l);
        const int64_t length = paged.Length(s, l);
        const int64_t free_now = pool->free_pages();
        auto k = Tokens(kKvHeads, t, kDim), v = Tokens(kKvHeads, t, kDim);
        auto st = paged.Append(s, l, k, v);
        if (!st.ok()) {
          ASSERT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
          // All-or-nothing: the layer and the pool are as they were.
          ASSERT_EQ(*paged.BlockTable(s, l), table);
          ASSERT_EQ(paged.Length(s, l), length);
          ASSERT_EQ(pool->free_pages(), free_now);
          ++exhausted;
          all_ok = false;
          break;
        }
        ASSERT_TRUE(ref.Append(s, l, k, v).ok());
      }
      if (all_ok) {
        ASSERT_EQ(free_before - pool->free_pages(), needed) << "PagesNeeded was exact";
        ++appended;
      }
      expect_same_as_ref(s);
    } else if (r < 75) {
      const SeqId s = live[uniform(0, live.size() - 1)];
      KeepPlan plan;
      int64_t expect_freed = 0;
      for (int l = 0; l < kLayers; ++l) {
        const int64_t length = paged.Length(s, l);
        if (uniform(0, 3) == 0) {
          plan.layers.emplace_back();  // this layer keeps everything
          continue;
        }
        const int64_t keep = uniform(0, length);
        plan.layers.push_back(RandomLayerPlan(rng, kKvHeads, length, keep));
        expect_freed += static_cast<int64_t>(paged.BlockTable(s, l)->size()) - CeilDiv(keep, kB);
      }
      const int64_t free_before = pool->free_pages();
      ASSERT_TRUE(paged.Compact(s, plan).ok());
      // ContiguousKvCache cannot gather from a layer it never allocated; keeping nothing of an
      // empty layer is keeping everything, so the reference gets an undefined plan for it.
      KeepPlan ref_plan = plan;
      for (int l = 0; l < kLayers; ++l) {
        if (ref.Length(s, l) == 0) ref_plan.layers[l] = LayerPlan();
      }
      ASSERT_TRUE(ref.Compact(s, ref_plan).ok());
      ASSERT_EQ(pool->free_pages() - free_before, expect_freed);
      ++compacted;
      expect_same_as_ref(s);
    } else if (r < 88) {
      // Decode over the live sequences whose chosen layer is not empty.
      const int layer = static_cast<int>(uniform(0, kLayers - 1));
      std::vector<SeqId> batch;
      for (SeqId s : live) {
        if (paged.Length(s, layer) > 0) batch.push_back(s);
      }
      if (batch.empty()) continue;
      const int64_t window = uniform(0, 2) == 0 ? uniform(1, 12) : 0;
      auto q = at::randn({static_cast<int64_t>(batch.size()), kKvHeads * 2, kDim});
      auto got = paged.DecodeAttention(layer, batch, q, 0.5, window);
      auto want = ref.DecodeAttention(layer, batch, q, 0.5, window);
      ASSERT_TRUE(got.ok() && want.ok()) << got.status();
      ASSERT_LT(MaxAbsDiff(*got, *want), 1e-5) << "op " << op;
      ++decoded;
    } else {
      const size_t i = uniform(0, live.size() - 1);
      const SeqId s = live[i];
      const int64_t free_before = pool->free_pages();
      const int64_t held = paged.Bytes(s) / pool->bytes_per_page();
      paged.RemoveSequence(s);
      ref.RemoveSequence(s);
      ASSERT_EQ(pool->free_pages() - free_before, held);
      ASSERT_FALSE(paged.HasSequence(s));
      live.erase(live.begin() + i);
      ++removed;
    }

    // Exact accounting: held + free == total, no page held twice, every block table as short
    // as its length allows.
    int64_t held = 0;
    std::set<int32_t> ids;
    for (SeqId s : live) {
      int64_t seq_pages = 0;
      for (int l = 0; l < kLayers; ++l) {
        const auto* table = paged.BlockTable(s, l);
        ASSERT_NE(table, nullptr);
        ASSERT_EQ(static_cast<int64_t>(table->size()), CeilDiv(paged.Length(s, l), kB));
        ids.insert(table->begin(), table->end());
        seq_pages += static_cast<int64_t>(table->size());
      }
      ASSERT_EQ(paged.Bytes(s), seq_pages * pool->bytes_per_page());
      held += seq_pages;
    }
    ASSERT_EQ(static_cast<int64_t>(ids.size()), held) << "a page is shared, op " << op;
    ASSERT_EQ(held + pool->free_pages(), pool->num_pages()) << "op " << op;
    ASSERT_EQ(paged.num_sequences(), static_cast<int64_t>(live.size()));
  }

  // Every kind of step happened, exhaustion included.
  EXPECT_GT(exhausted, 50);
  EXPECT_GT(appended, 800);
  EXPECT_GT(compacted, 300);
  EXPECT_GT(decoded, 250);
  EXPECT_GT(removed, 250);

  for (SeqId s : live) paged.RemoveSequence(s);
  EXPECT_EQ(paged.num_sequences(), 0);
  EXPECT_EQ(pool->free_pages(), pool->num_pages());
  auto all = pool->Allocate(pool->num_pages());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(std::set<int32_t>(all->begin(), all->end()).size(),
            static_cast<size_t>(pool->num_pages()));
}

// ---- Errors --------------------------------------------------------------------------------

class PagedKvCacheErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    pool_ = MakePool(16, 4, 2, 8);
    cache_ = std::make_unique<PagedKvCache>(2, pool_.get());
    ASSERT_TRUE(cache_->AddSequence(1).ok());
    ASSERT_TRUE(cache_->Append(1, 0, Tokens(2, 6, 8), Tokens(2, 6, 8)).ok());
    ASSERT_TRUE(cache_->Append(1, 1, Tokens(2, 5, 8), Tokens(2, 5, 8)).ok());
  }
  absl::StatusCode AppendCode(int layer, const at::Tensor& k, const at::Tensor& v) {
    return cache_->Append(1, layer, k, v).code();
  }
  KeepPlan PlanFor(at::Tensor positions0) {
    KeepPlan plan;
    plan.layers.resize(2);
    plan.layers[0].keep = positions0.dim() == 2 ? positions0.size(1) : 0;
    plan.layers[0].positions = positions0;
    return plan;
  }
  std::unique_ptr<PagePool> pool_;
  std::unique_ptr<PagedKvCache> cache_;
};

TEST_F(PagedKvCacheErrors, UnknownSequenceIsNotFound) {
  const auto kNotFound = absl::StatusCode::kNotFound;
  EXPECT_EQ(cache_->Append(9, 0, Tokens(2, 1, 8), Tokens(2, 1, 8)).code(), kNotFound);
  EXPECT_EQ(cache_->Read(9, 0).status().code(), kNotFound);
  EXPECT_EQ(cache_->DecodeAttention(0, {1, 9}, at::randn({2, 2, 8}), 1.0, 0).status().code(),
            kNotFound);
  EXPECT_EQ(cache_->Compact(9, PlanFor(at::Tensor())).code(), kNotFound);
  EXPECT_EQ(cache_->Length(9, 0), 0);
  EXPECT_EQ(cache_->Bytes(9), 0);
  EXPECT_EQ(cache_->BlockTable(9, 0), nullptr);
}

TEST_F(PagedKvCacheErrors, AddingAnExistingSequenceFails) {
  EXPECT_EQ(cache_->AddSequence(1).code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(cache_->Length(1, 0), 6) << "the existing sequence is untouched";
}

TEST_F(PagedKvCacheErrors, BadLayersAndShapesAreInvalid) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const int64_t free_before = pool_->free_pages();
  auto ok = Tokens(2, 3, 8);
  EXPECT_EQ(AppendCode(2, ok, ok), kInvalid);
  EXPECT_EQ(AppendCode(-1, ok, ok), kInvalid);
  EXPECT_EQ(AppendCode(0, Tokens(3, 3, 8), Tokens(3, 3, 8)), kInvalid) << "kv heads";
  EXPECT_EQ(AppendCode(0, Tokens(2, 3, 7), Tokens(2, 3, 7)), kInvalid) << "head dim";
  EXPECT_EQ(AppendCode(0, ok, Tokens(2, 4, 8)), kInvalid) << "k and v differ";
  EXPECT_EQ(AppendCode(0, at::randn({3, 8}), at::randn({3, 8})), kInvalid) << "rank";
  EXPECT_EQ(AppendCode(0, at::Tensor(), ok), kInvalid) << "undefined";
  EXPECT_EQ(AppendCode(0, ok.to(at::kLong), ok.to(at::kLong)), kInvalid) << "integers";
  EXPECT_EQ(cache_->Read(1, 2).status().code(), kInvalid);
  EXPECT_EQ(cache_->Length(1, 0), 6);
  EXPECT_EQ(pool_->free_pages(), free_before) << "no failed call takes a page";

  EXPECT_EQ(cache_->DecodeAttention(2, {1}, at::randn({1, 2, 8}), 1.0, 0).status().code(),
            kInvalid);
  EXPECT_EQ(cache_->DecodeAttention(0, {1}, at::randn({1, 3, 8}), 1.0, 0).status().code(), kInvalid)
      << "heads not a multiple of kv heads";
  EXPECT_EQ(cache_->DecodeAttention(0, {1}, at::randn({2, 2, 8}), 1.0, 0).status().code(), kInvalid)
      << "batch";
  EXPECT_EQ(cache_->DecodeAttention(0, {1}, at::randn({1, 2, 4}), 1.0, 0).status().code(), kInvalid)
      << "head dim";
}

TEST_F(PagedKvCacheErrors, DecodeOverAnEmptyLayerIsAFailedPrecondition) {
  ASSERT_TRUE(cache_->AddSequence(2).ok());
  EXPECT_EQ(cache_->DecodeAttention(0, {1, 2}, at::randn({2, 2, 8}), 1.0, 0).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(PagedKvCacheErrors, BadPlansAreInvalidAndChangeNothing) {
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  const auto before = *cache_->Read(1, 0);
  const int64_t free_before = pool_->free_pages();
  KeepPlan one_layer;
  one_layer.layers.resize(1);
  EXPECT_EQ(cache_->Compact(1, one_layer).code(), kInvalid) << "layer count";
  KeepPlan three_layers;
  three_layers.layers.resize(3);
  EXPECT_EQ(cache_->Compact(1, three_layers).code(), kInvalid) << "layer count";

  auto pos = [](std::vector<int64_t> h0, std::vector<int64_t> h1) {
    return at::stack({at::tensor(h0, at::kLong), at::tensor(h1, at::kLong)});
  };
  EXPECT_EQ(cache_->Compact(1, PlanFor(pos({0, 6}, {1, 2}))).code(), kInvalid) << "past length";
  EXPECT_EQ(cache_->Compact(1, PlanFor(pos({-1, 2}, {1, 2}))).code(), kInvalid) << "negative";
  EXPECT_EQ(cache_->Compact(1, PlanFor(pos({3, 2}, {1, 2}))).code(), kInvalid) << "descending";
  EXPECT_EQ(cache_->Compact(1, PlanFor(pos({2, 2}, {1, 2}))).code(), kInvalid) << "repeated";
  EXPECT_EQ(cache_->Compact(1, PlanFor(at::tensor({0, 1}, at::kLong).view({1, 2}))).code(),
            kInvalid)
      << "one row for two kv heads";
  EXPECT_EQ(cache_->Compact(1, PlanFor(at::zeros({2, 1}, at::kFloat))).code(), kInvalid)
      << "float positions";
  KeepPlan wrong_keep = PlanFor(pos({0, 1}, {1, 2}));
  wrong_keep.layers[0].keep = 3;
  EXPECT_EQ(cache_->Compact(1, wrong_keep).code(), kInvalid) << "keep disagrees with positions";
  // A valid layer 0 with an invalid layer 1: checked up front, so layer 0 is not compacted.
  KeepPlan second_bad = PlanFor(pos({0, 1}, {1, 2}));
  second_bad.layers[1].keep = 1;
  second_bad.layers[1].positions = at::full({2, 1}, 5, at::kLong);  // layer 1 holds 5 tokens
  EXPECT_EQ(cache_->Compact(1, second_bad).code(), kInvalid);

  EXPECT_EQ(cache_->Length(1, 0), 6);
  EXPECT_EQ(cache_->Length(1, 1), 5);
  EXPECT_EQ(pool_->free_pages(), free_before);
  auto after = cache_->Read(1, 0);
  EXPECT_TRUE(at::equal(after->first, before.first));
  EXPECT_TRUE(at::equal(after->second, before.second));
}

}  // namespace
}  // namespace vlc::kvcache
