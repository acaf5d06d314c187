// The CUDA paged-cache kernels (kvcache/cuda/paged_ops.h) against their CPU twins
// (kvcache/cpu_ops.h) on the same storage and the same shuffled page tables. f16/bf16 cases give
// the CPU reference the same rounded inputs in float32, so the only differences left are the
// order of float32 sums and the final rounding of the output. The plan and the argument checks
// run everywhere; the kernel comparisons need a GPU and skip without one.
#include "kvcache/cuda/paged_ops.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "kvcache/cpu_ops.h"
#include "tests/kvcache/cuda/cuda_test_util.h"

namespace vlc::kvcache::cuda {
namespace {

using testing::DeviceBuffer;

constexpr Error kInvalid = cudaErrorInvalidValue;

at::ScalarType ScalarTypeOf(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return at::kHalf;
    case DType::kBF16:
      return at::kBFloat16;
    default:
      return at::kFloat;
  }
}

const char* Name(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return "f16";
    case DType::kBF16:
      return "bf16";
    default:
      return "f32";
  }
}

template <typename T>
std::string Join(const std::vector<T>& v) {
  std::ostringstream s;
  s << "{";
  for (size_t i = 0; i < v.size(); ++i) s << (i ? "," : "") << v[i];
  s << "}";
  return s.str();
}

std::string LayoutName(const PagedLayout& layout) {
  std::ostringstream s;
  s << Name(layout.dtype) << " kv_heads=" << layout.kv_heads << " head_dim=" << layout.head_dim
    << " page_tokens=" << layout.page_tokens;
  return s.str();
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

std::string IndexString(int64_t flat, at::IntArrayRef sizes) {
  std::vector<int64_t> idx(sizes.size());
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    idx[d] = flat % sizes[d];
    flat /= sizes[d];
  }
  return Join(idx);
}

// |got - want| <= atol + rtol * |want| everywhere; the message gives the worst element.
::testing::AssertionResult Close(const at::Tensor& got_in, const at::Tensor& want_in, double atol,
                                 double rtol) {
  const at::Tensor got = got_in.to(at::kFloat).contiguous();
  const at::Tensor want = want_in.to(at::kFloat).contiguous();
  if (got.sizes() != want.sizes()) {
    return ::testing::AssertionFailure()
           << "shape " << got.sizes() << " where " << want.sizes() << " was expected";
  }
  const at::Tensor diff = (got - want).abs();
  const at::Tensor bad = diff.gt(atol + rtol * want.abs()).logical_or(got.isnan());
  const int64_t n_bad = bad.sum().item<int64_t>();
  const int64_t worst = diff.numel() > 0 ? diff.nan_to_num(INFINITY).argmax().item<int64_t>() : 0;
  const double max_abs = diff.numel() > 0 ? diff.nan_to_num(INFINITY).max().item<double>() : 0.0;
  if (n_bad == 0) return ::testing::AssertionSuccess() << "max abs error " << max_abs;
  return ::testing::AssertionFailure()
         << n_bad << " of " << got.numel() << " elements beyond " << atol << " + " << rtol
         << " * |want|; max abs error " << max_abs << " at " << IndexString(worst, got.sizes())
         << " of " << got.sizes() << " (got " << got.view(-1)[worst].item<float>() << ", want "
         << want.view(-1)[worst].item<float>() << ")";
}

// Bit-for-bit equality of two storages (copies must not change a value).
::testing::AssertionResult SameStorage(const at::Tensor& got_in, const at::Tensor& want_in) {
  const at::Tensor got = got_in.to(at::kFloat).contiguous();
  const at::Tensor want = want_in.to(at::kFloat).contiguous();
  const at::Tensor ne = got.ne(want);
  const int64_t n_bad = ne.sum().item<int64_t>();
  if (n_bad == 0) return ::testing::AssertionSuccess();
  const int64_t first = ne.view(-1).to(at::kInt).argmax().item<int64_t>();
  const double max_abs = (got - want).abs().max().item<double>();
  return ::testing::AssertionFailure()
         << n_bad << " of " << got.numel() << " storage elements differ, max abs error " << max_abs
         << "; first at [page, k/v, kv_head, token, dim] = " << IndexString(first, got.sizes())
         << " (got " << got.view(-1)[first].item<float>() << ", want "
         << want.view(-1)[first].item<float>() << ")";
}

template <typename T>
DeviceBuffer Upload(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  if (b.get() != nullptr) cudaMemcpy(b.get(), v.data(), b.bytes(), cudaMemcpyHostToDevice);
  return b;
}

// Page tables drawn from a shuffled pool, so no sequence's pages are contiguous or in order.
struct Tables {
  std::vector<std::vector<int32_t>> host;
  std::vector<int32_t> spare;  // pages no table holds
};

Tables ShuffledTables(const std::vector<int64_t>& pages_per_table, int64_t num_pages,
                      std::mt19937& rng) {
  std::vector<int32_t> pool(num_pages);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  Tables t;
  size_t next = 0;
  for (int64_t n : pages_per_table) {
    t.host.emplace_back(pool.begin() + next, pool.begin() + next + n);
    next += n;
  }
  t.spare.assign(pool.begin() + next, pool.end());
  return t;
}

// All tables in one device buffer; ptrs[i] is table i's device address.
struct DeviceTables {
  DeviceBuffer buffer;
  std::vector<const int32_t*> ptrs;
};

DeviceTables UploadTables(const std::vector<std::vector<int32_t>>& tables) {
  std::vector<int32_t> flat;
  std::vector<size_t> offsets;
  for (const auto& t : tables) {
    offsets.push_back(flat.size());
    flat.insert(flat.end(), t.begin(), t.end());
  }
  flat.push_back(0);  // so that an all-empty set still has an address
  DeviceTables d;
  d.buffer = Upload(flat);
  for (size_t o : offsets) d.ptrs.push_back(d.buffer.as<int32_t>() + o);
  return d;
}

// A float32 copy that never aliases `x` (x.to(kFloat) is x itself when x is float32 already).
at::Tensor Float32Copy(const at::Tensor& x) {
  return x.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true);
}

at::Tensor RandomStorage(const PagedLayout& layout, int64_t num_pages) {
  return at::randn({num_pages, 2, layout.kv_heads, layout.page_tokens, layout.head_dim})
      .to(ScalarTypeOf(layout.dtype));
}

// ---- Plan and argument checks (no device needed) ---------------------------------------------

const PagedLayout kLlava7B{32, 16, 128, DType::kF16};  // 32 heads, no GQA

TEST(PagedDecodePlan, ShortSequencesRunInOneChunkWithoutWorkspace) {
  for (int64_t length : {1, 16, 200, 256}) {
    const PagedDecodePlan plan = PlanPagedDecode(kLlava7B, 1, 32, length, 0);
    EXPECT_EQ(plan.max_chunks, 1) << "length " << length;
    EXPECT_EQ(plan.workspace_bytes, 0u) << "length " << length;
    EXPECT_GE(plan.chunk_tokens, length) << "length " << length;
    EXPECT_EQ(PagedDecodeWorkspaceBytes(kLlava7B, 1, 32, length, 0), 0u);
  }
}

TEST(PagedDecodePlan, LongContextsSplitIntoAboutAThousandBlocksOfWholeSteps) {
  for (int64_t length : {8192, 20000, 32768, 131072}) {
    const PagedDecodePlan plan = PlanPagedDecode(kLlava7B, 1, 32, length, 0);
    SCOPED_TRACE(::testing::Message() << "length " << length << " chunk_tokens "
                                      << plan.chunk_tokens << " max_chunks " << plan.max_chunks);
    EXPECT_GT(plan.max_chunks, 1);
    EXPECT_EQ(plan.chunk_tokens % 64, 0);
    EXPECT_GE(plan.chunk_tokens, 256);
    EXPECT_GE(plan.max_chunks * plan.chunk_tokens, length);        // the chunks cover it
    EXPECT_LT((plan.max_chunks - 1) * plan.chunk_tokens, length);  // and none is empty
    EXPECT_GE(32 * plan.max_chunks, 512);                          // blocks for 132 SMs
    EXPECT_LE(32 * plan.max_chunks, 1024);
    EXPECT_EQ(plan.workspace_bytes, size_t{4} * 32 * plan.max_chunks * (128 + 2));
    EXPECT_EQ(PagedDecodeWorkspaceBytes(kLlava7B, 1, 32, length, 0), plan.workspace_bytes);
  }
}

TEST(PagedDecodePlan, LargeBatchesAlreadyFillTheGpuAndAreNotSplit) {
  const PagedDecodePlan plan = PlanPagedDecode(kLlava7B, 64, 32, 8192, 0);
  EXPECT_EQ(plan.max_chunks, 1);
  EXPECT_EQ(plan.workspace_bytes, 0u);
}

TEST(PagedDecodePlan, GqaCountsBlocksPerKvHead) {
  // Mistral-7B: 32 query heads on 8 KV heads, one block per KV head serves its 4 query heads.
  const PagedLayout mistral{8, 16, 128, DType::kBF16};
  const PagedDecodePlan plan = PlanPagedDecode(mistral, 1, 32, 32768, 0);
  EXPECT_EQ(8 * plan.max_chunks, 1024) << "chunk_tokens " << plan.chunk_tokens;
  EXPECT_EQ(plan.workspace_bytes, size_t{4} * 32 * plan.max_chunks * 130);
}

TEST(PagedDecodePlan, WindowBoundsTheSplit) {
  const PagedDecodePlan full = PlanPagedDecode(kLlava7B, 1, 32, 131072, 0);
  const PagedDecodePlan windowed = PlanPagedDecode(kLlava7B, 1, 32, 131072, 4096);
  EXPECT_LT(windowed.chunk_tokens, full.chunk_tokens);
  EXPECT_GE(windowed.max_chunks * windowed.chunk_tokens, 4096);
  EXPECT_LT((windowed.max_chunks - 1) * windowed.chunk_tokens, 4096);
  EXPECT_EQ(PlanPagedDecode(kLlava7B, 1, 32, 100, 4096).max_chunks, 1);
}

TEST(PagedDecodePlan, ForcedChunkSizeIsKeptAndChunksAreCapped) {
  const PagedDecodePlan plan = PlanPagedDecode(kLlava7B, 2, 32, 1000, 0, 16);
  EXPECT_EQ(plan.chunk_tokens, 16);
  EXPECT_EQ(plan.max_chunks, 63);
  EXPECT_EQ(plan.workspace_bytes, size_t{4} * 2 * 32 * 63 * 130);
  const PagedDecodePlan capped = PlanPagedDecode(kLlava7B, 1, 32, 20000, 0, 1);
  EXPECT_EQ(capped.chunk_tokens, 1);
  EXPECT_EQ(capped.max_chunks, 1024);  // the last chunk then runs to the end of the sequence
}

TEST(PagedOpsArgs, DecodeRejectsUnsupportedShapesWithoutLaunching) {
  // Fake but aligned, non-null addresses: a rejected call never touches them (or a device).
  void* const fake = reinterpret_cast<void*>(uintptr_t{1} << 20);
  const auto* seqs = static_cast<const PagedSeqView*>(fake);
  auto call = [&](PagedLayout layout, int batch, int heads, const void* storage, double scale,
                  size_t ws_bytes, int64_t chunk_tokens = 0) {
    return PagedDecodeAttention(storage, layout, seqs, batch, 4096, fake, heads, scale, 0, fake,
                                fake, ws_bytes, nullptr, chunk_tokens);
  };
  const PagedLayout ok{4, 16, 64, DType::kF16};
  const size_t ws = PagedDecodeWorkspaceBytes(ok, 2, 8, 4096, 0);
  ASSERT_GT(ws, 0u);
  for (int head_dim : {0, 4, 12, 100, 264, 512}) {
    PagedLayout bad = ok;
    bad.head_dim = head_dim;
    EXPECT_EQ(call(bad, 2, 8, fake, 0.1, ws), kInvalid) << "head_dim " << head_dim;
  }
  PagedLayout bad = ok;
  bad.kv_heads = 0;
  EXPECT_EQ(call(bad, 2, 8, fake, 0.1, ws), kInvalid) << "kv_heads 0";
  bad = ok;
  bad.page_tokens = 0;
  EXPECT_EQ(call(bad, 2, 8, fake, 0.1, ws), kInvalid) << "page_tokens 0";
  bad = ok;
  bad.dtype = static_cast<DType>(7);
  EXPECT_EQ(call(bad, 2, 8, fake, 0.1, ws), kInvalid) << "dtype 7";
  EXPECT_EQ(call(ok, 2, 6, fake, 0.1, ws), kInvalid) << "heads not a multiple of kv_heads";
  EXPECT_EQ(call(ok, 2, 0, fake, 0.1, ws), kInvalid) << "no heads";
  EXPECT_EQ(call(ok, -1, 8, fake, 0.1, ws), kInvalid) << "negative batch";
  EXPECT_EQ(call(ok, 70000, 8, fake, 0.1, ws), kInvalid) << "batch past the grid";
  EXPECT_EQ(call(ok, 2, 8, nullptr, 0.1, ws), kInvalid) << "null storage";
  EXPECT_EQ(call(ok, 2, 8, static_cast<char*>(fake) + 8, 0.1, ws), kInvalid)
      << "storage not 16-byte aligned";
  EXPECT_EQ(call(ok, 2, 8, fake, NAN, ws), kInvalid) << "NaN scale";
  EXPECT_EQ(call(ok, 2, 8, fake, 0.1, ws - 1), kInvalid) << "workspace one byte short";
  EXPECT_EQ(call(ok, 2, 8, fake, 0.1, ws, -1), kInvalid) << "negative chunk_tokens";
  EXPECT_EQ(
      PagedDecodeAttention(fake, ok, seqs, 2, 4096, fake, 8, 0.1, 0, fake, nullptr, ws, nullptr),
      kInvalid)
      << "null workspace";
}

TEST(PagedOpsArgs, EmptyBatchesAreNoOps) {
  const PagedLayout ok{4, 16, 64, DType::kBF16};
  EXPECT_EQ(PagedDecodeAttention(nullptr, ok, nullptr, 0, 0, nullptr, 8, 0.1, 0, nullptr, nullptr,
                                 0, nullptr),
            cudaSuccess);
  EXPECT_EQ(PagedAppend(nullptr, ok, nullptr, 0, 5, nullptr, nullptr, 64, 256, nullptr),
            cudaSuccess);
  EXPECT_EQ(PagedAppend(nullptr, ok, nullptr, 3, 0, nullptr, nullptr, 64, 256, nullptr),
            cudaSuccess);
  EXPECT_EQ(PagedGather(nullptr, ok, nullptr, 0, nullptr), cudaSuccess);
}

TEST(PagedOpsArgs, CopiesRejectInvalidArguments) {
  void* const fake = reinterpret_cast<void*>(uintptr_t{1} << 20);
  const auto* seqs = static_cast<const PagedAppendSeq*>(fake);
  const auto* layers = static_cast<const PagedGatherLayer*>(fake);
  const PagedLayout ok{4, 16, 6, DType::kF16};  // any head_dim is fine for copies
  PagedLayout bad = ok;
  bad.head_dim = 0;
  EXPECT_EQ(PagedAppend(fake, bad, seqs, 1, 1, fake, fake, 24, 6, nullptr), kInvalid);
  EXPECT_EQ(PagedGather(fake, bad, layers, 1, nullptr), kInvalid);
  EXPECT_EQ(PagedAppend(fake, ok, seqs, 1, 1, nullptr, fake, 24, 6, nullptr), kInvalid);
  EXPECT_EQ(PagedAppend(fake, ok, seqs, 1, 1, fake, fake, -24, 6, nullptr), kInvalid);
  EXPECT_EQ(PagedAppend(fake, ok, seqs, 70000, 1, fake, fake, 24, 6, nullptr), kInvalid);
  EXPECT_EQ(PagedAppend(fake, ok, seqs, 1, int64_t{1} << 30, fake, fake, 24, 6, nullptr), kInvalid)
      << "a sequence past 32-bit indexing";
  EXPECT_EQ(PagedGather(nullptr, ok, layers, 1, nullptr), kInvalid);
  EXPECT_EQ(PagedGather(fake, ok, nullptr, 1, nullptr), kInvalid);
  EXPECT_EQ(PagedGather(fake, ok, layers, 70000, nullptr), kInvalid);
}

// ---- Append ----------------------------------------------------------------------------------

struct AppendSeq {
  int64_t start = 0, tokens = 0;
};

// Writes each sequence's tokens with PagedAppend and with PagedWrite (per sequence, on the float32
// copy) and compares the whole storage. head_major: k, v are [kv_heads, total, head_dim] (the CPU
// twin's order); else token-major [total, kv_heads, head_dim] (a projection's).
void CheckAppend(const PagedLayout& layout, const std::vector<AppendSeq>& seqs, bool head_major,
                 uint32_t seed) {
  std::ostringstream name;
  name << LayoutName(layout) << (head_major ? " head-major" : " token-major") << " seqs(start,t)=";
  for (const auto& s : seqs) name << "(" << s.start << "," << s.tokens << ")";
  SCOPED_TRACE(name.str());
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  const int64_t kvh = layout.kv_heads, d = layout.head_dim, B = layout.page_tokens;
  std::vector<int64_t> pages;
  int64_t total = 0, max_tokens = 0, num_pages = 2;
  for (const auto& s : seqs) {
    pages.push_back(CeilDiv(s.start + s.tokens, B));
    num_pages += pages.back();
    total += s.tokens;
    max_tokens = std::max(max_tokens, s.tokens);
  }
  const Tables tables = ShuffledTables(pages, num_pages, rng);
  const at::Tensor storage = RandomStorage(layout, num_pages);
  const at::ScalarType st = ScalarTypeOf(layout.dtype);
  const at::Tensor k =
      head_major ? at::randn({kvh, total, d}).to(st) : at::randn({total, kvh, d}).to(st);
  const at::Tensor v = at::randn(k.sizes()).to(st);

  at::Tensor want = Float32Copy(storage);
  std::vector<PagedAppendSeq> descs;
  int64_t src = 0;
  for (size_t i = 0; i < seqs.size(); ++i) {
    auto slice = [&](const at::Tensor& x) {
      return head_major ? x.slice(1, src, src + seqs[i].tokens)
                        : x.slice(0, src, src + seqs[i].tokens).permute({1, 0, 2});
    };
    PagedWrite(want, tables.host[i].data(), seqs[i].start, slice(k).to(at::kFloat),
               slice(v).to(at::kFloat));
    descs.push_back({nullptr, seqs[i].start, seqs[i].tokens, src});
    src += seqs[i].tokens;
  }

  DeviceBuffer storage_d = DeviceBuffer::From(storage);
  DeviceBuffer k_d = DeviceBuffer::From(k), v_d = DeviceBuffer::From(v);
  DeviceTables tables_d = UploadTables(tables.host);
  for (size_t i = 0; i < descs.size(); ++i) descs[i].pages = tables_d.ptrs[i];
  DeviceBuffer descs_d = Upload(descs);
  ASSERT_NE(storage_d.get(), nullptr);
  const int64_t token_stride = head_major ? d : kvh * d;
  const int64_t head_stride = head_major ? total * d : d;
  VLC_CUDA_OK(static_cast<cudaError_t>(PagedAppend(
      storage_d.get(), layout, descs_d.as<PagedAppendSeq>(), static_cast<int>(descs.size()),
      max_tokens, k_d.get(), v_d.get(), token_stride, head_stride, nullptr)));
  VLC_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(SameStorage(storage_d.ToCpu(storage.sizes(), st), want)) << name.str();
}

const std::vector<AppendSeq> kDecodeStep = {{0, 1}, {15, 1}, {16, 1}, {17, 1}, {100, 1}};
const std::vector<AppendSeq> kMixed = {{0, 37}, {16, 16}, {5, 0}, {31, 1}, {3, 50}};

TEST(PagedAppendCuda, MatchesPagedWriteForDecodeAndPrefillBatches) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 1;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int head_dim : {128, 64, 16}) {
      const PagedLayout layout{4, 16, head_dim, dtype};
      CheckAppend(layout, kDecodeStep, /*head_major=*/false, seed++);
      CheckAppend(layout, kMixed, /*head_major=*/false, seed++);
      CheckAppend(layout, kMixed, /*head_major=*/true, seed++);
      CheckAppend(layout, {{0, 300}}, /*head_major=*/true, seed++);
    }
  }
}

TEST(PagedAppendCuda, AnyHeadDimPageSizeAndCopyUnit) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 100;
  // Rows of 12 and 6 bytes (f16 head_dim 6 and 3) take 4- and 2-byte units; 7 tokens a page
  // exercises the division path; 1 token a page puts every token on its own page.
  for (DType dtype : {DType::kF32, DType::kF16}) {
    for (int head_dim : {3, 6, 8, 12, 200}) {
      for (int page_tokens : {1, 7, 16}) {
        const PagedLayout layout{3, page_tokens, head_dim, dtype};
        CheckAppend(layout, kMixed, /*head_major=*/false, seed++);
        CheckAppend(layout, kDecodeStep, /*head_major=*/true, seed++);
      }
    }
  }
}

// ---- Gather ----------------------------------------------------------------------------------

struct GatherLayer {
  int64_t length = 0, keep = 0;
};

// Compacts all `layers` of a session in one PagedGather launch (in place or into fresh pages) and
// compares the whole storage with PagedGatherInPlace (+ PagedRead/PagedWrite into the fresh pages)
// on the float32 copy.
void CheckGather(const PagedLayout& layout, const std::vector<GatherLayer>& layers, bool in_place,
                 uint32_t seed) {
  std::ostringstream name;
  name << LayoutName(layout) << (in_place ? " in place" : " fresh pages")
       << " layers(length,keep)=";
  for (const auto& l : layers) name << "(" << l.length << "," << l.keep << ")";
  SCOPED_TRACE(name.str());
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  const int64_t kvh = layout.kv_heads, B = layout.page_tokens;
  std::vector<int64_t> pages;
  for (const auto& l : layers) pages.push_back(CeilDiv(l.length, B));
  for (const auto& l : layers) pages.push_back(in_place ? 0 : CeilDiv(l.keep, B));
  const int64_t num_pages = std::accumulate(pages.begin(), pages.end(), int64_t{3});
  const Tables tables = ShuffledTables(pages, num_pages, rng);
  const size_t n = layers.size();
  const at::Tensor storage = RandomStorage(layout, num_pages);

  at::Tensor want = Float32Copy(storage);
  std::vector<at::Tensor> positions;
  for (size_t l = 0; l < n; ++l) {
    at::Tensor pos = at::empty({kvh, layers[l].keep}, at::kLong);
    for (int64_t h = 0; h < kvh; ++h) {
      std::vector<int64_t> all(layers[l].length);
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      all.resize(layers[l].keep);
      std::sort(all.begin(), all.end());
      std::copy(all.begin(), all.end(), pos[h].data_ptr<int64_t>());
    }
    positions.push_back(pos);
    if (in_place) {
      PagedGatherInPlace(want, tables.host[l].data(), pos);
    } else {
      at::Tensor scratch = Float32Copy(storage), k, v;
      PagedGatherInPlace(scratch, tables.host[l].data(), pos);
      PagedRead(scratch, tables.host[l].data(), layers[l].keep, k, v);
      PagedWrite(want, tables.host[n + l].data(), 0, k, v);
    }
  }

  DeviceBuffer storage_d = DeviceBuffer::From(storage);
  ASSERT_NE(storage_d.get(), nullptr);
  DeviceTables tables_d = UploadTables(tables.host);
  std::vector<DeviceBuffer> positions_d;
  std::vector<PagedGatherLayer> descs;
  for (size_t l = 0; l < n; ++l) {
    positions_d.push_back(DeviceBuffer::From(positions[l]));
    descs.push_back({tables_d.ptrs[l], in_place ? tables_d.ptrs[l] : tables_d.ptrs[n + l],
                     positions_d.back().as<int64_t>(), layers[l].keep});
  }
  DeviceBuffer descs_d = Upload(descs);
  VLC_CUDA_OK(static_cast<cudaError_t>(PagedGather(
      storage_d.get(), layout, descs_d.as<PagedGatherLayer>(), static_cast<int>(n), nullptr)));
  VLC_CUDA_OK(cudaDeviceSynchronize());
  EXPECT_TRUE(SameStorage(storage_d.ToCpu(storage.sizes(), ScalarTypeOf(layout.dtype)), want))
      << name.str();
}

// Keep counts from 1 token to all, ending on and just after page boundaries.
const std::vector<GatherLayer> kSession = {{1, 1},    {17, 1},  {16, 16},   {33, 17},
                                           {100, 37}, {64, 64}, {300, 299}, {257, 33}};

TEST(PagedGatherCuda, InPlaceMatchesPagedGatherInPlaceForAllLayersInOneLaunch) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 200;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int head_dim : {128, 16}) {
      CheckGather({4, 16, head_dim, dtype}, kSession, /*in_place=*/true, seed++);
    }
  }
}

TEST(PagedGatherCuda, IntoFreshPagesLeavesTheSourcesIntact) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 300;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int head_dim : {128, 16}) {
      CheckGather({4, 16, head_dim, dtype}, kSession, /*in_place=*/false, seed++);
    }
  }
}

TEST(PagedGatherCuda, AnyHeadDimPageSizeAndWideRows) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 400;
  for (bool in_place : {true, false}) {
    for (int page_tokens : {1, 7, 32}) {
      for (int head_dim : {3, 6, 8, 200}) {
        CheckGather({3, page_tokens, head_dim, DType::kF16}, kSession, in_place, seed++);
      }
    }
    // 4100 f16 elements = 1025 8-byte units: wider than a pass, moved in column slices.
    CheckGather({2, 4, 4100, DType::kF16}, {{9, 5}, {3, 3}, {12, 1}}, in_place, seed++);
  }
}

// ---- Decode attention ------------------------------------------------------------------------

struct DecodeCase {
  DType dtype = DType::kF32;
  int kv_heads = 2, group = 1, head_dim = 64, page_tokens = 16;
  std::vector<int64_t> lengths;
  int64_t window = 0;
  int64_t chunk_tokens = 0;  // 0: the plan's own
  int64_t max_length = -1;   // what the call claims; -1: the true longest
  std::string Name() const {
    std::ostringstream s;
    s << ::vlc::kvcache::cuda::Name(dtype) << " kv_heads=" << kv_heads << " group=" << group
      << " head_dim=" << head_dim << " page_tokens=" << page_tokens << " lengths=" << Join(lengths)
      << " window=" << window << " chunk_tokens=" << chunk_tokens << " max_length=" << max_length;
    return s.str();
  }
};

// Output tolerances: f32 is the CPU's arithmetic in another order; f16/bf16 add the rounding of
// the output (2^-11 and 2^-8 relative).
void Tolerance(DType dtype, double* atol, double* rtol) {
  switch (dtype) {
    case DType::kF16:
      *atol = 1e-4, *rtol = 2e-3;
      return;
    case DType::kBF16:
      *atol = 1e-3, *rtol = 1e-2;
      return;
    default:
      *atol = 2e-5, *rtol = 1e-4;
  }
}

// Runs PagedDecodeAttention and the CPU twin on the same rounded inputs and compares; `plan_out`
// receives the split the call used.
void CheckDecode(const DecodeCase& c, uint32_t seed, PagedDecodePlan* plan_out = nullptr) {
  const std::string name = c.Name();
  SCOPED_TRACE(name);
  std::mt19937 rng(seed);
  at::manual_seed(seed);
  const PagedLayout layout{c.kv_heads, c.page_tokens, c.head_dim, c.dtype};
  const int batch = static_cast<int>(c.lengths.size());
  const int heads = c.kv_heads * c.group;
  const int64_t d = c.head_dim;
  std::vector<int64_t> pages;
  int64_t num_pages = 3, longest = 0;
  for (int64_t len : c.lengths) {
    pages.push_back(CeilDiv(len, c.page_tokens));
    num_pages += pages.back();
    longest = std::max(longest, len);
  }
  const Tables tables = ShuffledTables(pages, num_pages, rng);
  const at::Tensor storage = RandomStorage(layout, num_pages);
  // Logits with a spread of ~2 nats: softmaxes neither flat nor one-hot.
  const at::Tensor q = (2 * at::randn({batch, heads, d})).to(ScalarTypeOf(c.dtype));
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));

  std::vector<::vlc::kvcache::PagedSeqView> ref_views;  // the CPU twin's: host page tables
  for (int b = 0; b < batch; ++b) ref_views.push_back({tables.host[b].data(), c.lengths[b]});
  at::Tensor want;
  ::vlc::kvcache::PagedDecodeAttention(storage.to(at::kFloat), ref_views, q.to(at::kFloat), scale,
                                       c.window, want);

  const int64_t max_length = c.max_length >= 0 ? c.max_length : longest;
  const PagedDecodePlan plan =
      PlanPagedDecode(layout, batch, heads, max_length, c.window, c.chunk_tokens);
  if (plan_out != nullptr) *plan_out = plan;
  DeviceBuffer storage_d = DeviceBuffer::From(storage);
  DeviceBuffer q_d = DeviceBuffer::From(q);
  DeviceBuffer out_d(static_cast<size_t>(q.nbytes()));
  DeviceBuffer ws_d(plan.workspace_bytes);
  ASSERT_NE(storage_d.get(), nullptr);
  ASSERT_NE(out_d.get(), nullptr);
  VLC_CUDA_OK(cudaMemset(out_d.get(), 0xff, out_d.bytes()));  // NaNs where nothing is written
  DeviceTables tables_d = UploadTables(tables.host);
  std::vector<PagedSeqView> views;
  for (int b = 0; b < batch; ++b) views.push_back({tables_d.ptrs[b], c.lengths[b]});
  DeviceBuffer views_d = Upload(views);
  VLC_CUDA_OK(static_cast<cudaError_t>(PagedDecodeAttention(
      storage_d.get(), layout, views_d.as<PagedSeqView>(), batch, max_length, q_d.get(), heads,
      scale, c.window, out_d.get(), ws_d.get(), ws_d.bytes(), nullptr, c.chunk_tokens)));
  VLC_CUDA_OK(cudaDeviceSynchronize());
  double atol, rtol;
  Tolerance(c.dtype, &atol, &rtol);
  const at::Tensor got = out_d.ToCpu(q.sizes(), q.scalar_type());
  EXPECT_TRUE(Close(got, want, atol, rtol)) << name << " (plan: chunk_tokens=" << plan.chunk_tokens
                                            << " max_chunks=" << plan.max_chunks << ")";
}

TEST(PagedDecodeAttentionCuda, MatchesCpuAcrossDtypesGroupsAndHeadDims) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 1000;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int group : {1, 2, 4, 8}) {
      for (int head_dim : {16, 64, 128}) {
        DecodeCase c;
        c.dtype = dtype, c.group = group, c.head_dim = head_dim;
        c.lengths = {1, 15, 16, 17, 33, 100};
        CheckDecode(c, seed++);
      }
    }
  }
}

TEST(PagedDecodeAttentionCuda, EveryHeadDimUpTo256AndOddGroups) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 2000;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (int group : {3, 5, 12, 16}) {  // padded tiles, and groups over 8 in several tiles
      for (int head_dim : {8, 24, 40, 80, 96, 136, 256}) {
        DecodeCase c;
        c.dtype = dtype, c.kv_heads = 2, c.group = group, c.head_dim = head_dim;
        c.lengths = {7, 48, 1};
        CheckDecode(c, seed++);
      }
    }
  }
}

TEST(PagedDecodeAttentionCuda, LengthsOnAndAroundPageBoundariesForAnyPageSize) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 3000;
  for (DType dtype : {DType::kF32, DType::kF16}) {
    for (int page_tokens : {1, 7, 16, 32}) {
      DecodeCase c;
      c.dtype = dtype, c.group = 2, c.page_tokens = page_tokens, c.head_dim = 64;
      const int64_t B = page_tokens;
      c.lengths = {1, B - 1 > 0 ? B - 1 : 2, B, B + 1, 2 * B, 2 * B + 1, 5 * B + 3};
      CheckDecode(c, seed++);
    }
  }
}

TEST(PagedDecodeAttentionCuda, SlidingWindowsAttendToTheLastTokensOnly) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 4000;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t window : {1, 5, 16, 17, 260, 1000}) {
      DecodeCase c;
      c.dtype = dtype, c.group = 4, c.head_dim = 64, c.window = window;
      c.lengths = {1, 50, 300, 999};
      CheckDecode(c, seed++);
    }
  }
}

TEST(PagedDecodeAttentionCuda, SplitChunksCombineToTheSameResult) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 5000;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    for (int64_t chunk : {1, 5, 16, 64, 100}) {
      for (int64_t window : {0, 77}) {
        DecodeCase c;
        c.dtype = dtype, c.group = 2, c.head_dim = 128, c.chunk_tokens = chunk, c.window = window;
        c.lengths = {1, 17, 200, 513, 2000};  // 2000 tokens in chunks of 1: capped, long last one
        PagedDecodePlan plan;
        CheckDecode(c, seed++, &plan);
        if (window == 0 || chunk < window) EXPECT_GT(plan.max_chunks, 1) << c.Name();
      }
    }
  }
}

TEST(PagedDecodeAttentionCuda, LongContextsTakeTheSplitPath) {
  VLC_REQUIRE_CUDA_DEVICE();
  uint32_t seed = 6000;
  for (DType dtype : {DType::kF32, DType::kF16, DType::kBF16}) {
    DecodeCase c;
    c.dtype = dtype, c.kv_heads = 4, c.group = 4, c.head_dim = 128;
    c.lengths = {20000, 3, 20001, 4097};
    PagedDecodePlan plan;
    CheckDecode(c, seed++, &plan);
    EXPECT_GT(plan.max_chunks, 1) << c.Name();
  }
  DecodeCase windowed;  // a long sequence whose window still splits
  windowed.dtype = DType::kF16, windowed.kv_heads = 2, windowed.group = 1, windowed.head_dim = 64;
  windowed.lengths = {20000};
  windowed.window = 4000;
  PagedDecodePlan plan;
  CheckDecode(windowed, seed++, &plan);
  EXPECT_GT(plan.max_chunks, 1) << windowed.Name();
}

TEST(PagedDecodeAttentionCuda, LlavaSevenBShape) {
  VLC_REQUIRE_CUDA_DEVICE();
  DecodeCase c;
  c.dtype = DType::kF16, c.kv_heads = 32, c.group = 1, c.head_dim = 128;
  c.lengths = {8192, 5000};
  CheckDecode(c, 7000);
  c.dtype = DType::kBF16;
  CheckDecode(c, 7001);
}

TEST(PagedDecodeAttentionCuda, EmptySequencesGiveZeros) {
  VLC_REQUIRE_CUDA_DEVICE();
  DecodeCase c;
  c.dtype = DType::kF16, c.group = 2, c.head_dim = 32;
  c.lengths = {0, 5, 0, 700};  // 700 splits, the empty ones do not
  CheckDecode(c, 8000);
  c.lengths = {0};
  CheckDecode(c, 8001);
}

TEST(PagedDecodeAttentionCuda, UnderestimatedMaxLengthIsSlowerButExact) {
  VLC_REQUIRE_CUDA_DEVICE();
  DecodeCase c;
  c.dtype = DType::kF32, c.group = 4, c.head_dim = 64;
  c.lengths = {3000, 40};
  for (int64_t claimed : {0, 1, 300, 1000}) {
    c.max_length = claimed;
    CheckDecode(c, 9000 + static_cast<uint32_t>(claimed));
  }
}

}  // namespace
}  // namespace vlc::kvcache::cuda
