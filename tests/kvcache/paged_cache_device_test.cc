// PagedKvCache wherever its pool lives. Everywhere: a pool asked for on cuda says why it cannot be
// there, the CPU pool stays float32, and the batched append (a decode step's) equals one append
// per sequence. Where a GPU is visible: a cache on the GPU (the CUDA kernels, tables uploaded per
// call) holds, reads, attends and compacts exactly as the CPU cache does on the same operations,
// in float32, float16 and bfloat16, and a keep plan made from observations on the GPU (selected
// there by the CUDA top-k) equals the CPU's. Only the GPU cases skip, and only without a GPU.
#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <vector>

#include "kvcache/cuda_ops.h"
#include "kvcache/page_pool.h"
#include "kvcache/paged_cache.h"
#include "kvcache/policy.h"

namespace vlc::kvcache {
namespace {

::testing::AssertionResult Mentions(absl::string_view text, absl::string_view part) {
  if (text.find(part) != absl::string_view::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << part << "\" not in: " << text;
}

constexpr int kLayers = 2, kKvHeads = 2, kHeadDim = 16, kPageTokens = 4, kPages = 64;

PagePoolOptions Options(at::Device device, at::ScalarType dtype, int pages = kPages) {
  PagePoolOptions o;
  o.page_tokens = kPageTokens;
  o.kv_heads = kKvHeads;
  o.head_dim = kHeadDim;
  o.dtype = dtype;
  o.device = device;
  o.capacity_bytes = int64_t{pages} * 2 * kKvHeads * kPageTokens * kHeadDim *
                     static_cast<int64_t>(c10::elementSize(dtype));
  return o;
}

TEST(PagedCacheDevice, APoolOnCudaSaysWhyItCannotBeThere) {
  auto pool = PagePool::Create(Options(at::Device(at::kCUDA, 0), at::kBFloat16));
  if (at::hasCUDA() && CudaKernelsBuilt()) {
    ASSERT_TRUE(pool.ok()) << pool.status();
    EXPECT_TRUE((*pool)->storage().is_cuda());
    EXPECT_EQ((*pool)->storage().scalar_type(), at::kBFloat16);
    auto ints = PagePool::Create(Options(at::Device(at::kCUDA, 0), at::kInt));
    EXPECT_EQ(ints.status().code(), absl::StatusCode::kInvalidArgument);
    return;
  }
  ASSERT_EQ(pool.status().code(), absl::StatusCode::kFailedPrecondition) << pool.status();
  EXPECT_TRUE(Mentions(pool.status().message(), "KV page pool on cuda: "));
  EXPECT_TRUE(Mentions(pool.status().message(), !at::globalContext().hasCUDART()
                                                    ? "this build's LibTorch has no CUDA"
                                                : !at::hasCUDA() ? "no GPU visible"
                                                                 : "without the CUDA kernels"));
}

TEST(PagedCacheDevice, TheCpuPoolHoldsFloat32Only) {
  auto pool = PagePool::Create(Options(at::kCPU, at::kBFloat16));
  ASSERT_EQ(pool.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Mentions(pool.status().message(), "not supported on the CPU, only float32"));
}

// Values exactly representable in `dtype`, as float32.
at::Tensor Rounded(at::IntArrayRef sizes, at::ScalarType dtype) {
  return at::randn(sizes).to(dtype).to(at::kFloat);
}

TEST(PagedCacheDevice, BatchedAppendEqualsOneAppendPerSequence) {
  auto pa = PagePool::Create(Options(at::kCPU, at::kFloat)).value();
  auto pb = PagePool::Create(Options(at::kCPU, at::kFloat)).value();
  PagedKvCache a(kLayers, pa.get()), b(kLayers, pb.get());
  at::manual_seed(1);
  const std::vector<SeqId> seqs = {4, 9, 2};
  for (SeqId s : seqs) {
    ASSERT_TRUE(a.AddSequence(s).ok());
    ASSERT_TRUE(b.AddSequence(s).ok());
    auto k = at::randn({kKvHeads, 3 + s, kHeadDim}), v = at::randn({kKvHeads, 3 + s, kHeadDim});
    ASSERT_TRUE(a.Append(s, 1, k, v).ok());
    ASSERT_TRUE(b.Append(s, 1, k, v).ok());
  }
  for (int step = 0; step < 5; ++step) {
    auto k = at::randn({3, kKvHeads, kHeadDim}), v = at::randn({3, kKvHeads, kHeadDim});
    ASSERT_TRUE(a.AppendBatch(seqs, 1, k, v).ok());
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(b.Append(seqs[i], 1, k[i].unsqueeze(1), v[i].unsqueeze(1)).ok());
    }
  }
  for (SeqId s : seqs) {
    auto ra = a.Read(s, 1).value(), rb = b.Read(s, 1).value();
    EXPECT_TRUE(at::equal(ra.first, rb.first));
    EXPECT_TRUE(at::equal(ra.second, rb.second));
    EXPECT_EQ(a.Length(s, 1), 3 + s + 5);
  }
  auto wrong = a.AppendBatch(seqs, 1, at::randn({2, kKvHeads, kHeadDim}),
                             at::randn({2, kKvHeads, kHeadDim}));
  EXPECT_EQ(wrong.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.AppendBatch({77}, 1, at::randn({1, kKvHeads, kHeadDim}),
                          at::randn({1, kKvHeads, kHeadDim}))
                .code(),
            absl::StatusCode::kNotFound);
}

// ---- The GPU ----------------------------------------------------------------------------------

#define VLC_REQUIRE_GPU()                                              \
  do {                                                                 \
    if (!at::hasCUDA()) GTEST_SKIP() << "no GPU visible to LibTorch";  \
  } while (0)

// The same operations on a CPU cache and a GPU cache of `dtype`; every read must agree.
class Twin {
 public:
  explicit Twin(at::ScalarType dtype, int pages = kPages)
      : dtype_(dtype),
        cpu_pool_(PagePool::Create(Options(at::kCPU, at::kFloat, pages)).value()),
        gpu_pool_(PagePool::Create(Options(at::Device(at::kCUDA, 0), dtype, pages)).value()),
        cpu_(kLayers, cpu_pool_.get()),
        gpu_(kLayers, gpu_pool_.get()) {}

  void Add(SeqId s) {
    ASSERT_TRUE(cpu_.AddSequence(s).ok());
    ASSERT_TRUE(gpu_.AddSequence(s).ok());
  }
  void Append(SeqId s, int layer, int64_t tokens) {
    auto k = Rounded({kKvHeads, tokens, kHeadDim}, dtype_);
    auto v = Rounded({kKvHeads, tokens, kHeadDim}, dtype_);
    ASSERT_TRUE(cpu_.Append(s, layer, k, v).ok());
    ASSERT_TRUE(gpu_.Append(s, layer, k.cuda().to(dtype_), v.cuda().to(dtype_)).ok());
  }
  void Step(const std::vector<SeqId>& seqs, int layer) {
    const int64_t b = static_cast<int64_t>(seqs.size());
    auto k = Rounded({b, kKvHeads, kHeadDim}, dtype_), v = Rounded({b, kKvHeads, kHeadDim}, dtype_);
    ASSERT_TRUE(cpu_.AppendBatch(seqs, layer, k, v).ok());
    ASSERT_TRUE(gpu_.AppendBatch(seqs, layer, k.cuda().to(dtype_), v.cuda().to(dtype_)).ok());
  }
  void ExpectSame(const std::vector<SeqId>& seqs) {
    for (SeqId s : seqs) {
      EXPECT_EQ(gpu_.Bytes(s) * 4, cpu_.Bytes(s) * static_cast<int64_t>(c10::elementSize(dtype_)));
      for (int l = 0; l < kLayers; ++l) {
        ASSERT_EQ(gpu_.Length(s, l), cpu_.Length(s, l)) << "seq " << s << " layer " << l;
        auto c = cpu_.Read(s, l).value();
        auto g = gpu_.Read(s, l);
        ASSERT_TRUE(g.ok()) << g.status();
        EXPECT_TRUE(g->first.is_cuda());
        EXPECT_TRUE(at::equal(g->first.cpu().to(at::kFloat), c.first))
            << "K seq " << s << " layer " << l;
        EXPECT_TRUE(at::equal(g->second.cpu().to(at::kFloat), c.second))
            << "V seq " << s << " layer " << l;
      }
    }
    EXPECT_EQ(gpu_pool_->free_pages(), cpu_pool_->free_pages());
  }
  void ExpectSameAttention(const std::vector<SeqId>& seqs, int layer, int64_t window) {
    const int64_t b = static_cast<int64_t>(seqs.size());
    auto q = Rounded({b, 2 * kKvHeads, kHeadDim}, dtype_);  // GQA: 2 query heads per KV head
    auto c = cpu_.DecodeAttention(layer, seqs, q, 0.25, window);
    auto g = gpu_.DecodeAttention(layer, seqs, q.cuda().to(dtype_), 0.25, window);
    ASSERT_TRUE(c.ok() && g.ok()) << g.status();
    EXPECT_EQ(g->scalar_type(), dtype_);
    const double tol = dtype_ == at::kFloat ? 1e-5 : 1e-2;
    EXPECT_TRUE(at::allclose(g->cpu().to(at::kFloat), *c, tol, tol))
        << "max diff " << (g->cpu().to(at::kFloat) - *c).abs().max().item<double>();
  }
  // Keeps `keep[l]` random ascending positions per KV head in every layer.
  void Compact(SeqId s, const std::vector<int64_t>& keep, std::mt19937* rng) {
    KeepPlan plan;
    for (int l = 0; l < kLayers; ++l) {
      const int64_t len = cpu_.Length(s, l);
      LayerPlan lp;
      lp.keep = std::min(keep[l], len);
      auto pos = at::empty({kKvHeads, lp.keep}, at::kLong);
      for (int h = 0; h < kKvHeads; ++h) {
        std::vector<int64_t> all(len);
        for (int64_t i = 0; i < len; ++i) all[i] = i;
        std::shuffle(all.begin(), all.end(), *rng);
        all.resize(lp.keep);
        std::sort(all.begin(), all.end());
        for (int64_t i = 0; i < lp.keep; ++i) pos[h][i] = all[i];
      }
      lp.positions = pos;
      plan.layers.push_back(lp);
    }
    ASSERT_TRUE(cpu_.Compact(s, plan).ok());
    ASSERT_TRUE(gpu_.Compact(s, plan).ok());
  }

  PagedKvCache& gpu() { return gpu_; }
  PagePool& gpu_pool() { return *gpu_pool_; }

 private:
  at::ScalarType dtype_;
  std::unique_ptr<PagePool> cpu_pool_, gpu_pool_;
  PagedKvCache cpu_, gpu_;
};

TEST(PagedCacheDevice, GpuCacheHoldsReadsAttendsAndCompactsLikeTheCpuCache) {
  VLC_REQUIRE_GPU();
  for (at::ScalarType dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    SCOPED_TRACE(c10::toString(dtype));
    at::manual_seed(5);
    std::mt19937 rng(5);
    Twin t(dtype);
    const std::vector<SeqId> seqs = {3, 1, 8};
    for (SeqId s : seqs) t.Add(s);
    // Prompts of different lengths, crossing pages; layers of different lengths.
    for (SeqId s : seqs) {
      t.Append(s, 0, 5 + 3 * s);
      t.Append(s, 1, 2 + s);
    }
    t.ExpectSame(seqs);
    for (int step = 0; step < 6; ++step) {
      for (int l = 0; l < kLayers; ++l) t.Step(seqs, l);
    }
    t.ExpectSame(seqs);
    for (int l = 0; l < kLayers; ++l) {
      t.ExpectSameAttention(seqs, l, 0);
      t.ExpectSameAttention(seqs, l, 3);  // a sliding window shorter than every sequence
    }
    t.Compact(8, {9, 4}, &rng);
    t.Compact(3, {1, 6}, &rng);
    t.ExpectSame(seqs);
    for (int step = 0; step < 3; ++step) {
      for (int l = 0; l < kLayers; ++l) t.Step(seqs, l);
    }
    t.ExpectSame(seqs);
    for (int l = 0; l < kLayers; ++l) t.ExpectSameAttention(seqs, l, 0);
    t.Append(1, 0, 7);  // a continued prefill after decode steps
    t.ExpectSame(seqs);
  }
}

TEST(PagedCacheDevice, GpuBatchedAppendIsAllOrNothing) {
  VLC_REQUIRE_GPU();
  at::manual_seed(2);
  Twin t(at::kBFloat16, /*pages=*/3);
  t.Add(1);
  t.Add(2);
  t.Append(1, 0, kPageTokens);      // 1 page, full
  t.Append(2, 0, 2 * kPageTokens);  // 2 pages, full: the pool is empty
  const int64_t free = t.gpu_pool().free_pages();
  ASSERT_EQ(free, 0);
  auto k = at::randn({2, kKvHeads, kHeadDim}).cuda().to(at::kBFloat16);
  auto st = t.gpu().AppendBatch({1, 2}, 0, k, k);
  EXPECT_EQ(st.code(), absl::StatusCode::kResourceExhausted) << st;
  EXPECT_EQ(t.gpu().Length(1, 0), kPageTokens);
  EXPECT_EQ(t.gpu().Length(2, 0), 2 * kPageTokens);
  EXPECT_EQ(t.gpu_pool().free_pages(), free);
  EXPECT_EQ(t.gpu().AppendBatch({1, 1}, 0, k, k).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagedCacheDevice, KeepPlanFromGpuObservationsEqualsTheCpuPlan) {
  VLC_REQUIRE_GPU();
  PromptShape shape;
  shape.length = 300;
  shape.layers = 3;
  shape.heads = 4;
  shape.kv_heads = 2;
  shape.visual.assign(shape.length, 0);
  for (int i = 10; i < 250; ++i) shape.visual[i] = 1;
  at::manual_seed(9);
  std::vector<LayerObservation> cpu(shape.layers), gpu(shape.layers);
  for (int l = 0; l < shape.layers; ++l) {
    // Integer sums: the group means are exact on both devices, so the plans must be identical
    // (ties included: both break them towards the lower position).
    cpu[l].col_sums = at::randint(0, 50, {shape.heads, shape.length}).to(at::kFloat);
    cpu[l].sparse_counts = at::randint(0, 400, {shape.heads}, at::kLong);
    cpu[l].causal_entries = 1000;
    gpu[l] = cpu[l];
    gpu[l].col_sums = cpu[l].col_sums.cuda();
    gpu[l].sparse_counts = cpu[l].sparse_counts.cuda();
  }
  for (const char* name : {"vlcache", "h2o"}) {
    PolicyConfig policy;
    policy.name = name;
    policy.budget = 0.3;
    auto a = MakeKeepPlan(policy, shape, cpu);
    auto b = MakeKeepPlan(policy, shape, gpu);
    ASSERT_TRUE(a.ok() && b.ok()) << b.status();
    for (int l = 0; l < shape.layers; ++l) {
      EXPECT_EQ(b->layers[l].keep, a->layers[l].keep) << name << " layer " << l;
      EXPECT_TRUE(b->layers[l].positions.is_cuda());
      EXPECT_TRUE(at::equal(b->layers[l].positions.cpu(), a->layers[l].positions))
          << name << " layer " << l;
    }
  }
}

}  // namespace
}  // namespace vlc::kvcache
