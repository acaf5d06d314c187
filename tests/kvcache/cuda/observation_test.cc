// The device observation (kvcache/cuda/observation.h) against the CPU reference, CausalAttention's
// LayerObservation: column sums to float rounding, sparse counts exactly except for entries whose
// logit lies within kBorderline of the threshold (counted in double, so a count may differ by at
// most that many: two float computations of one logit can fall on either side of it).
#include "kvcache/cuda/observation.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "kvcache/attention.h"
#include "kvcache/plan.h"
#include "tests/kvcache/cuda/cuda_test_util.h"

namespace vlc::kvcache::cuda {
namespace {

using testing::DeviceBuffer;

// Float logits of one entry differ by ~1e-6 between implementations; 1e-4 leaves a wide margin.
constexpr double kBorderline = 1e-4;
// Column sums: both sides are float32 with different summation orders.
constexpr double kRtol = 2e-5;
constexpr double kAtol = 1e-7;

struct Case {
  int64_t heads = 4, kv_heads = 2, m = 37, d = 16, query_begin = 20, window = 0;
  double threshold = 0.01;
  bool sparsity = true;
  at::ScalarType dtype = at::kFloat;
  double gain = 2.0;  // q scale: peaked rows, so that entries fall below the threshold

  std::string Name() const {
    return "heads " + std::to_string(heads) + " kv_heads " + std::to_string(kv_heads) + " m " +
           std::to_string(m) + " d " + std::to_string(d) + " query_begin " +
           std::to_string(query_begin) + " window " + std::to_string(window) + " p " +
           std::to_string(threshold) + " dtype " + std::string(at::toString(dtype));
  }
};

DType ToDType(at::ScalarType t) {
  return t == at::kHalf ? DType::kF16 : (t == at::kBFloat16 ? DType::kBF16 : DType::kF32);
}

ObservationArgs ArgsFor(const Case& c) {
  ObservationArgs a;
  a.heads = c.heads;
  a.kv_heads = c.kv_heads;
  a.m = c.m;
  a.head_dim = c.d;
  a.query_begin = c.query_begin;
  a.window = c.window;
  a.scale = 1.0 / std::sqrt(static_cast<double>(c.d));
  a.sparsity = c.sparsity;
  a.threshold = c.threshold;
  a.dtype = ToDType(c.dtype);
  return a;
}

struct Inputs {
  at::Tensor q, k;  // in the case's dtype, [heads, m, d] and [kv_heads, m, d]
};

Inputs MakeInputs(const Case& c, uint64_t seed) {
  at::manual_seed(seed);
  return {(at::randn({c.heads, c.m, c.d}) * c.gain).to(c.dtype),
          at::randn({c.kv_heads, c.m, c.d}).to(c.dtype)};
}

// The CPU reference on the same (rounded) inputs in float32: the device accumulates in float32
// too, so halves are held to the float tolerance. Long prompts pass only the scoring rows (query
// i of tq rows sits at m - tq + i), which CpuReference.ScoringRowsAloneGiveTheSameObservation
// shows to be the same observation at O(tau * m) cost.
LayerObservation Reference(const Inputs& in, const ObservationArgs& a, bool scoring_rows_only) {
  at::Tensor q = in.q.to(at::kFloat), k = in.k.to(at::kFloat);
  at::Tensor v = at::zeros_like(k);  // the output is not compared
  ObservationSpec spec{true, a.query_begin, a.sparsity, a.threshold};
  if (scoring_rows_only) {
    q = q.slice(1, a.query_begin);
    spec.query_begin = 0;
  }
  LayerObservation obs;
  CausalAttention(q, k, v, a.scale, a.window, &spec, &obs);
  return obs;
}

// Per head: causal entries of the scoring rows whose logit is within kBorderline of the sparsity
// threshold, computed in double.
at::Tensor Borderline(const Inputs& in, const ObservationArgs& a) {
  auto out = at::zeros({a.heads}, at::kLong);
  const int64_t tau = a.m - a.query_begin, group = a.heads / a.kv_heads;
  if (tau == 0) return out;
  auto q = in.q.to(at::kDouble), k = in.k.to(at::kDouble);
  auto qi = at::arange(a.query_begin, a.m, at::kLong).unsqueeze(1);
  auto kj = at::arange(0, a.m, at::kLong).unsqueeze(0);
  auto visible = kj <= qi;
  if (a.window > 0) visible = visible.logical_and(kj > qi - a.window);
  for (int64_t h = 0; h < a.heads; ++h) {
    auto s = at::matmul(q[h].slice(0, a.query_begin), k[h / group].t()) * a.scale;
    s.masked_fill_(visible.logical_not(), -INFINITY);
    auto thr = std::get<0>(s.max(1, true)) + std::log(a.threshold);
    out[h] = ((s - thr).abs().lt(kBorderline) & visible).sum();
  }
  return out;
}

struct DeviceObservation {
  at::Tensor col_sums;       // [heads, m] float
  at::Tensor sparse_counts;  // [heads] int64 (undefined without sparsity)
};

// Runs ObserveLayer on copies of the inputs; q and k may be given in another layout with the
// strides set in `a`.
void Observe(const at::Tensor& q, const at::Tensor& k, const ObservationArgs& a,
             DeviceObservation* out) {
  auto dq = DeviceBuffer::From(q), dk = DeviceBuffer::From(k);
  DeviceBuffer cols(static_cast<size_t>(a.heads * a.m) * sizeof(float));
  DeviceBuffer sparse(static_cast<size_t>(a.heads) * sizeof(int64_t));
  const size_t ws_bytes = ObservationWorkspaceBytes(a);
  DeviceBuffer ws(ws_bytes);
  ASSERT_NE(dq.get(), nullptr);
  ASSERT_NE(dk.get(), nullptr);
  ASSERT_NE(cols.get(), nullptr);
  // Poison the outputs: every column must be written, and the counts zeroed by the call.
  VLC_CUDA_OK(cudaMemset(cols.get(), 0xff, cols.bytes()));
  VLC_CUDA_OK(cudaMemset(sparse.get(), 0x7f, sparse.bytes()));
  const Error err =
      ObserveLayer(a, dq.get(), dk.get(), cols.as<float>(),
                   a.sparsity ? sparse.as<int64_t>() : nullptr, ws.get(), ws_bytes, nullptr);
  ASSERT_EQ(err, 0) << ErrorString(err);
  VLC_CUDA_OK(cudaDeviceSynchronize());
  out->col_sums = cols.ToCpu({a.heads, a.m}, at::kFloat);
  if (a.sparsity) out->sparse_counts = sparse.ToCpu({a.heads}, at::kLong);
}

void ExpectColumnSumsNear(const at::Tensor& got, const at::Tensor& want) {
  ASSERT_EQ(got.sizes(), want.sizes());
  auto g = got.to(at::kDouble), w = want.to(at::kDouble);
  auto bad = ((g - w).abs() > w.abs() * kRtol + kAtol).logical_or(g.isnan());
  const int64_t n_bad = bad.sum().item<int64_t>();
  if (n_bad > 0) {
    const int64_t first = bad.flatten().nonzero()[0][0].item<int64_t>();
    const int64_t h = first / got.size(1), j = first % got.size(1);
    ADD_FAILURE() << n_bad << " column sums out of tolerance; first at head " << h << " column "
                  << j << ": device " << g[h][j].item<double>() << ", cpu "
                  << w[h][j].item<double>();
  }
}

void ExpectSparseCountsMatch(const at::Tensor& got, const at::Tensor& want,
                             const at::Tensor& borderline) {
  for (int64_t h = 0; h < want.size(0); ++h) {
    const int64_t g = got[h].item<int64_t>(), w = want[h].item<int64_t>();
    const int64_t slack = borderline[h].item<int64_t>();
    EXPECT_LE(std::llabs(g - w), slack)
        << "head " << h << ": device counts " << g << " sparse entries, cpu " << w << " (" << slack
        << " entries lie within " << kBorderline << " of the threshold)";
  }
}

// The whole comparison for one case; returns the reference's total sparse count.
int64_t CheckCase(const Case& c, uint64_t seed) {
  SCOPED_TRACE(c.Name());
  const Inputs in = MakeInputs(c, seed);
  const ObservationArgs a = ArgsFor(c);
  DeviceObservation dev;
  Observe(in.q, in.k, a, &dev);
  if (::testing::Test::HasFatalFailure()) return 0;
  const LayerObservation ref = Reference(in, a, /*scoring_rows_only=*/c.m > 1024);
  ExpectColumnSumsNear(dev.col_sums, ref.col_sums);
  // Every scoring row's probabilities sum to 1.
  const double tau = static_cast<double>(c.m - c.query_begin);
  auto totals = dev.col_sums.to(at::kDouble).sum(1);
  EXPECT_LT((totals - tau).abs().max().item<double>(), 1e-5 * std::max(1.0, tau))
      << "row totals " << totals;
  if (!c.sparsity) return 0;
  ExpectSparseCountsMatch(dev.sparse_counts, ref.sparse_counts, Borderline(in, a));
  EXPECT_EQ(ObservationCausalEntries(c.m, c.query_begin, c.window), ref.causal_entries);
  return ref.sparse_counts.sum().item<int64_t>();
}

// ---- Host only: validation, sizes, the causal count.

TEST(ObservationCpuReference, ScoringRowsAloneGiveTheSameObservation) {
  Case c;
  c.m = 53;
  c.query_begin = 31;
  for (int64_t window : {0, 9}) {
    c.window = window;
    const Inputs in = MakeInputs(c, 3);
    const ObservationArgs a = ArgsFor(c);
    const LayerObservation whole = Reference(in, a, false), rows = Reference(in, a, true);
    EXPECT_LT((whole.col_sums - rows.col_sums).abs().max().item<double>(), 1e-6);
    EXPECT_TRUE(at::equal(whole.sparse_counts, rows.sparse_counts));
    EXPECT_EQ(whole.causal_entries, rows.causal_entries);
  }
}

TEST(ObservationCausalEntries, MatchesTheCpuReference) {
  for (int64_t m : {1, 2, 17, 64}) {
    for (int64_t query_begin : {int64_t{0}, m / 2, m - 1, m}) {
      for (int64_t window : {0, 1, 5, 100}) {
        Case c;
        c.heads = 1;
        c.kv_heads = 1;
        c.m = m;
        c.d = 4;
        c.query_begin = query_begin;
        c.window = window;
        const LayerObservation ref = Reference(MakeInputs(c, 1), ArgsFor(c), false);
        EXPECT_EQ(ObservationCausalEntries(m, query_begin, window), ref.causal_entries) << c.Name();
      }
    }
  }
}

TEST(ObservationWorkspace, IsZeroWithoutScoringRowsAndHoldsTwoFloatsPerRow) {
  Case c;
  c.m = 1000;
  ObservationArgs a = ArgsFor(c);
  a.query_begin = a.m;
  EXPECT_EQ(ObservationWorkspaceBytes(a), 0u);
  size_t last = 0;
  for (int64_t tau : {1, 50, 500, 1000}) {
    a.query_begin = a.m - tau;
    const size_t bytes = ObservationWorkspaceBytes(a);
    EXPECT_GE(bytes, static_cast<size_t>(2 * a.heads * tau) * sizeof(float)) << "tau " << tau;
    EXPECT_GT(bytes, 0u);
    last = bytes;
  }
  // Many rows and heads: no split partials, just the row statistics (256-byte aligned).
  a.heads = 32;
  a.kv_heads = 8;
  a.m = 4096;
  a.query_begin = 0;
  EXPECT_EQ(ObservationWorkspaceBytes(a), 2 * static_cast<size_t>(32 * 4096) * sizeof(float));
  EXPECT_GT(last, 0u);
}

TEST(ObserveLayerArguments, BadArgumentsAreRejectedBeforeAnyLaunch) {
  // Host addresses stand in for device pointers: nothing may touch them.
  std::vector<float> fake(1024);
  int64_t counts[8];
  const void* q = fake.data();
  const void* k = fake.data();
  std::vector<char> ws(1 << 20);
  Case good;
  const ObservationArgs base = ArgsFor(good);
  auto call = [&](const ObservationArgs& a) {
    return ObserveLayer(a, q, k, fake.data(), counts, ws.data(), ws.size(), nullptr);
  };
  struct Bad {
    const char* what;
    ObservationArgs args;
  };
  std::vector<Bad> bad;
  auto add = [&](const char* what, auto mutate) {
    ObservationArgs a = base;
    mutate(a);
    bad.push_back({what, a});
  };
  add("heads not a multiple of kv_heads", [](ObservationArgs& a) { a.kv_heads = 3; });
  add("no heads", [](ObservationArgs& a) { a.heads = 0; });
  add("no kv heads", [](ObservationArgs& a) { a.kv_heads = 0; });
  add("empty prompt", [](ObservationArgs& a) { a.m = 0; });
  add("no head dim", [](ObservationArgs& a) { a.head_dim = 0; });
  add("query_begin past m", [](ObservationArgs& a) { a.query_begin = a.m + 1; });
  add("negative query_begin", [](ObservationArgs& a) { a.query_begin = -1; });
  add("negative window", [](ObservationArgs& a) { a.window = -2; });
  add("threshold 0", [](ObservationArgs& a) { a.threshold = 0; });
  add("threshold 1", [](ObservationArgs& a) { a.threshold = 1; });
  add("threshold NaN", [](ObservationArgs& a) { a.threshold = std::nan(""); });
  add("scale NaN", [](ObservationArgs& a) { a.scale = std::nan(""); });
  add("unknown dtype", [](ObservationArgs& a) { a.dtype = static_cast<DType>(7); });
  add("negative stride", [](ObservationArgs& a) { a.q_row_stride = -1; });
  add("m too large", [](ObservationArgs& a) { a.m = int64_t{1} << 31; });
  for (const Bad& b : bad) EXPECT_EQ(call(b.args), cudaErrorInvalidValue) << b.what;

  EXPECT_EQ(ObserveLayer(base, nullptr, k, fake.data(), counts, ws.data(), ws.size(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(ObserveLayer(base, q, nullptr, fake.data(), counts, ws.data(), ws.size(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(ObserveLayer(base, q, k, nullptr, counts, ws.data(), ws.size(), nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(ObserveLayer(base, q, k, fake.data(), nullptr, ws.data(), ws.size(), nullptr),
            cudaErrorInvalidValue)
      << "sparsity needs the counts";
  const size_t need = ObservationWorkspaceBytes(base);
  ASSERT_GT(need, 0u);
  EXPECT_EQ(ObserveLayer(base, q, k, fake.data(), counts, ws.data(), need - 1, nullptr),
            cudaErrorInvalidValue);
  EXPECT_EQ(ObserveLayer(base, q, k, fake.data(), counts, nullptr, need, nullptr),
            cudaErrorInvalidValue);
}

TEST(ObserveLayerArguments, WithoutADeviceAValidCallReportsAnError) {
  if (DeviceCount() > 0) GTEST_SKIP() << "a device is present (the call would run)";
  Case c;
  c.sparsity = false;  // straight to the kernel launches
  std::vector<float> fake(4096);
  std::vector<char> ws(1 << 20);
  EXPECT_NE(ObserveLayer(ArgsFor(c), fake.data(), fake.data(), fake.data(), nullptr, ws.data(),
                         ws.size(), nullptr),
            cudaSuccess);
}

// ---- Device.

TEST(ObserveLayerDevice, MatchesTheCpuReferenceOnSmallShapes) {
  VLC_REQUIRE_CUDA_DEVICE();
  int64_t sparse_total = 0;
  uint64_t seed = 100;
  for (int64_t m : {1, 5, 17, 31, 33, 64, 65, 130}) {
    for (int64_t group : {1, 2, 4}) {
      for (int64_t window : {0, 1, 7, 40}) {
        for (int64_t tau : {int64_t{1}, (m + 1) / 2, m}) {
          Case c;
          c.kv_heads = 2;
          c.heads = 2 * group;
          c.m = m;
          c.d = (seed % 3 == 0) ? 33 : ((seed % 3 == 1) ? 16 : 64);  // 33: a partial chunk
          c.query_begin = m - tau;
          c.window = window;
          c.threshold = (seed % 2 == 0) ? 0.01 : 0.1;
          sparse_total += CheckCase(c, seed++);
          if (HasFatalFailure()) return;
        }
      }
    }
  }
  EXPECT_GT(sparse_total, 0) << "the cases exercise the sparse count";
}

TEST(ObserveLayerDevice, HalfAndBfloat16InputsAccumulateInFloat) {
  VLC_REQUIRE_CUDA_DEVICE();
  for (at::ScalarType dtype : {at::kHalf, at::kBFloat16}) {
    for (int64_t window : {0, 50}) {
      Case c;
      c.dtype = dtype;
      c.heads = 8;
      c.kv_heads = 2;
      c.m = 301;
      c.d = 64;
      c.query_begin = 250;
      c.window = window;
      CheckCase(c, 7);
      if (HasFatalFailure()) return;
    }
  }
}

TEST(ObserveLayerDevice, LongPromptsUseSplitKeysAndManyColumnBlocks) {
  VLC_REQUIRE_CUDA_DEVICE();
  // m = 8191: 128 column blocks; tau = 1 and 50 split the keys of pass 1 across blocks, tau = 700
  // has many row tiles; a window hides most keys.
  int64_t sparse_total = 0;
  for (int64_t tau : {1, 50, 700}) {
    for (int64_t window : {0, 1000}) {
      Case c;
      c.heads = 8;
      c.kv_heads = 2;
      c.m = 8191;
      c.d = 128;
      c.query_begin = c.m - tau;
      c.window = window;
      c.gain = 3.0;
      sparse_total += CheckCase(c, 11 + tau);
      if (HasFatalFailure()) return;
    }
  }
  EXPECT_GT(sparse_total, 0);
}

TEST(ObserveLayerDevice, AllRowsWithoutSplitsLikeH2o) {
  VLC_REQUIRE_CUDA_DEVICE();
  // 32 heads x 32 row tiles fill the grid: pass 1 runs unsplit (no partials in the workspace).
  Case c;
  c.heads = 32;
  c.kv_heads = 8;
  c.m = 2048;
  c.d = 32;
  c.query_begin = 0;
  c.threshold = 0.05;
  EXPECT_EQ(ObservationWorkspaceBytes(ArgsFor(c)), 2 * size_t{32 * 2048} * sizeof(float));
  CheckCase(c, 21);
}

TEST(ObserveLayerDevice, NoScoringRowsGiveZeroSums) {
  VLC_REQUIRE_CUDA_DEVICE();
  Case c;
  c.m = 100;
  c.query_begin = 100;
  const Inputs in = MakeInputs(c, 5);
  DeviceObservation dev;
  ASSERT_NO_FATAL_FAILURE(Observe(in.q, in.k, ArgsFor(c), &dev));
  EXPECT_TRUE(at::equal(dev.col_sums, at::zeros({c.heads, c.m})));
  EXPECT_TRUE(at::equal(dev.sparse_counts, at::zeros({c.heads}, at::kLong)));
}

TEST(ObserveLayerDevice, WithoutSparsityOnlyColumnSums) {
  VLC_REQUIRE_CUDA_DEVICE();
  Case c;
  c.sparsity = false;
  c.m = 200;
  c.query_begin = 150;
  CheckCase(c, 9);
}

TEST(ObserveLayerDevice, TokenMajorLayoutGivesTheSameBits) {
  VLC_REQUIRE_CUDA_DEVICE();
  // q [m, heads, d] and k [m, kv_heads, d], as a projection produces them.
  Case c;
  c.heads = 8;
  c.kv_heads = 4;
  c.m = 515;
  c.d = 64;
  c.query_begin = 400;
  const Inputs in = MakeInputs(c, 13);
  const ObservationArgs a = ArgsFor(c);
  DeviceObservation head_major, token_major;
  ASSERT_NO_FATAL_FAILURE(Observe(in.q, in.k, a, &head_major));
  ObservationArgs t = a;
  t.q_head_stride = c.d;
  t.q_row_stride = c.heads * c.d;
  t.k_head_stride = c.d;
  t.k_row_stride = c.kv_heads * c.d;
  ASSERT_NO_FATAL_FAILURE(Observe(in.q.permute({1, 0, 2}).contiguous(),
                                  in.k.permute({1, 0, 2}).contiguous(), t, &token_major));
  EXPECT_TRUE(at::equal(head_major.col_sums, token_major.col_sums));
  EXPECT_TRUE(at::equal(head_major.sparse_counts, token_major.sparse_counts));
}

TEST(ObserveLayerDevice, RepeatedRunsAreBitIdentical) {
  VLC_REQUIRE_CUDA_DEVICE();
  Case c;
  c.heads = 8;
  c.kv_heads = 2;
  c.m = 3001;
  c.d = 64;
  c.query_begin = 2990;
  const Inputs in = MakeInputs(c, 17);
  DeviceObservation a, b;
  ASSERT_NO_FATAL_FAILURE(Observe(in.q, in.k, ArgsFor(c), &a));
  ASSERT_NO_FATAL_FAILURE(Observe(in.q, in.k, ArgsFor(c), &b));
  EXPECT_TRUE(at::equal(a.col_sums, b.col_sums));
  EXPECT_TRUE(at::equal(a.sparse_counts, b.sparse_counts));
}

}  // namespace
}  // namespace vlc::kvcache::cuda
