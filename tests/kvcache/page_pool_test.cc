#include "kvcache/page_pool.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

namespace vlc::kvcache {
namespace {

// page = 2 (K, V) * 2 heads * 4 tokens * 8 dims * 4 bytes = 512 bytes
PagePoolOptions SmallOptions(int64_t capacity_bytes) {
  PagePoolOptions o;
  o.capacity_bytes = capacity_bytes;
  o.page_tokens = 4;
  o.kv_heads = 2;
  o.head_dim = 8;
  return o;
}

std::unique_ptr<PagePool> MakePool(int64_t capacity_bytes) {
  auto pool = PagePool::Create(SmallOptions(capacity_bytes));
  EXPECT_TRUE(pool.ok()) << pool.status();
  return std::move(pool).value();
}

TEST(PagePool, PageArithmeticFollowsTheOptions) {
  // 10.5 pages of capacity: the half page is not usable.
  auto pool = MakePool(10 * 512 + 256);
  EXPECT_EQ(pool->bytes_per_page(), 512);
  EXPECT_EQ(pool->num_pages(), 10);
  EXPECT_EQ(pool->free_pages(), 10);
  EXPECT_EQ(pool->capacity_bytes(), 10 * 512);
  EXPECT_EQ(pool->used_bytes(), 0);
  const at::Tensor& s = pool->storage();
  EXPECT_EQ(s.sizes(), (std::vector<int64_t>{10, 2, 2, 4, 8}));
  EXPECT_EQ(s.scalar_type(), at::kFloat);
  EXPECT_TRUE(s.is_contiguous());
  EXPECT_EQ(s.numel() * 4, pool->capacity_bytes());
}

TEST(PagePool, AllocationAndFreeAreCountedExactly) {
  auto pool = MakePool(10 * 512);
  auto a = pool->Allocate(3);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->size(), 3u);
  EXPECT_EQ(pool->free_pages(), 7);
  EXPECT_EQ(pool->used_bytes(), 3 * 512);
  auto b = pool->Allocate(7);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(pool->free_pages(), 0);
  EXPECT_EQ(pool->used_bytes(), pool->capacity_bytes());

  std::set<int32_t> ids(a->begin(), a->end());
  ids.insert(b->begin(), b->end());
  EXPECT_EQ(ids.size(), 10u) << "every page is handed out exactly once";
  EXPECT_EQ(*ids.begin(), 0);
  EXPECT_EQ(*ids.rbegin(), 9);

  pool->Free(*a);
  EXPECT_EQ(pool->free_pages(), 3);
  pool->Free(*b);
  EXPECT_EQ(pool->free_pages(), 10);
  EXPECT_EQ(pool->used_bytes(), 0);
}

TEST(PagePool, ZeroPagesIsAnEmptyAllocation) {
  auto pool = MakePool(4 * 512);
  auto a = pool->Allocate(0);
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->empty());
  EXPECT_EQ(pool->free_pages(), 4);
}

TEST(PagePool, NegativeCountIsInvalid) {
  auto pool = MakePool(4 * 512);
  EXPECT_EQ(pool->Allocate(-1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(pool->free_pages(), 4);
}

TEST(PagePool, ExhaustionNamesTheNumbersAndTakesNothing) {
  auto pool = MakePool(5 * 512);
  auto a = pool->Allocate(2);
  ASSERT_TRUE(a.ok());
  auto b = pool->Allocate(4);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  const std::string msg(b.status().message());
  EXPECT_NE(msg.find("4 pages needed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("3 of 5 free"), std::string::npos) << msg;
  EXPECT_NE(msg.find("4 tokens"), std::string::npos) << msg;
  EXPECT_NE(msg.find("512 bytes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--kv-cache-bytes"), std::string::npos) << msg;
  EXPECT_EQ(pool->free_pages(), 3) << "a failed allocation takes no page";
  // What is left can still be taken in full.
  auto c = pool->Allocate(3);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(pool->free_pages(), 0);
}

TEST(PagePool, FreshPoolHandsOutPagesInAddressOrder) {
  auto pool = MakePool(6 * 512);
  auto a = pool->Allocate(4);
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(*a, (std::vector<int32_t>{0, 1, 2, 3}));
}

TEST(PagePool, MostRecentlyFreedPagesAreReusedFirst) {
  auto pool = MakePool(6 * 512);
  auto a = pool->Allocate(6);
  ASSERT_TRUE(a.ok());
  pool->Free({1});
  pool->Free({4, 2});
  auto b = pool->Allocate(2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(*b, (std::vector<int32_t>{2, 4})) << "LIFO: the last page freed comes back first";
  auto c = pool->Allocate(1);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, (std::vector<int32_t>{1}));
  EXPECT_EQ(pool->free_pages(), 0);
}

TEST(PagePool, ManyRoundsOfAllocAndFreeKeepEveryPageUnique) {
  auto pool = MakePool(32 * 512);
  std::vector<std::vector<int32_t>> held;
  uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  for (int round = 0; round < 2000; ++round) {
    if (!held.empty() && next() % 2) {
      const size_t i = next() % held.size();
      pool->Free(held[i]);
      held.erase(held.begin() + i);
    } else {
      auto a = pool->Allocate(next() % 6);
      if (a.ok()) held.push_back(*a);
    }
    std::set<int32_t> ids;
    size_t total = 0;
    for (const auto& h : held) {
      ids.insert(h.begin(), h.end());
      total += h.size();
    }
    ASSERT_EQ(ids.size(), total) << "a page is held twice at round " << round;
    ASSERT_EQ(static_cast<int64_t>(total) + pool->free_pages(), pool->num_pages());
  }
  for (const auto& h : held) pool->Free(h);
  EXPECT_EQ(pool->free_pages(), pool->num_pages());
}

#ifdef NDEBUG
TEST(PagePool, DoubleFreeCannotHandOutAPageTwice) {
  auto pool = MakePool(4 * 512);
  auto a = pool->Allocate(2);
  ASSERT_TRUE(a.ok());
  pool->Free(*a);
  pool->Free(*a);
  pool->Free({-1, 99});
  EXPECT_EQ(pool->free_pages(), 4);
  auto b = pool->Allocate(4);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(std::set<int32_t>(b->begin(), b->end()).size(), 4u);
}
#else
TEST(PagePoolDeathTest, DoubleFreeAssertsInDebugBuilds) {
  // LibTorch may have started threads; re-executing the binary is the fork-safe style.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto pool = MakePool(4 * 512);
  auto a = pool->Allocate(2);
  ASSERT_TRUE(a.ok());
  pool->Free(*a);
  EXPECT_DEATH(pool->Free(*a), "double free");
}
#endif

TEST(PagePool, InvalidOptionsAreRejected) {
  for (auto mutate : std::vector<void (*)(PagePoolOptions&)>{
           [](PagePoolOptions& o) { o.page_tokens = 0; },
           [](PagePoolOptions& o) { o.kv_heads = 0; },
           [](PagePoolOptions& o) { o.head_dim = -1; },
           [](PagePoolOptions& o) { o.dtype = at::kHalf; },
           [](PagePoolOptions& o) { o.dtype = at::kDouble; },
       }) {
    PagePoolOptions o = SmallOptions(1 << 20);
    mutate(o);
    EXPECT_EQ(PagePool::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(PagePool, CapacityBelowOnePageSaysTheMinimum) {
  for (int64_t capacity : {int64_t{0}, int64_t{-5}, int64_t{511}}) {
    auto pool = PagePool::Create(SmallOptions(capacity));
    ASSERT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument) << capacity;
    EXPECT_NE(pool.status().message().find("at least 512 bytes"), std::string::npos)
        << pool.status();
  }
  auto one = PagePool::Create(SmallOptions(512));
  ASSERT_TRUE(one.ok());
  EXPECT_EQ((*one)->num_pages(), 1);
}

TEST(PagePool, TooManyPagesForInt32IdsIsRejected) {
  // 8-byte pages: 2^34 bytes would make 2^31 pages. Rejected before any memory is asked for.
  PagePoolOptions o;
  o.capacity_bytes = int64_t{1} << 34;
  o.page_tokens = 1;
  o.kv_heads = 1;
  o.head_dim = 1;
  EXPECT_EQ(PagePool::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace vlc::kvcache
