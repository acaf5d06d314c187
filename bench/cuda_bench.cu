// The paged KV-cache kernels on the device, each beside a physical reference measured in
// the same run:
//  * copy: cudaMemcpy device to device of a large buffer (bytes read + written per second) and a
//    read-only pass over it (bytes read per second): what the card's memory can do.
//  * decode: PagedDecodeAttention on one layer shaped like LLaVA-1.6-7B's language model (32 query
//    heads, 8 KV heads as in Mistral-7B or 32 as in Vicuna-7B, head_dim 128, bf16, 16-token pages
//    scattered over the pool), the full cache against the compressed one VL-Cache leaves (the
//    same pages, `budget` of the tokens: in-place compaction keeps a layer's leading pages).
//    Every call is timed alone with CUDA events after a write that evicts L2, as a layer's decode
//    finds its KV in a real step; achieved bandwidth = K/V bytes read / time.
//  * compression: one layer's share of an m-token prefill: ObserveLayer (tau scoring rows),
//    GroupMean, TopKWithRecent at the budget and the in-place PagedGather of the kept tokens,
//    beside that layer's projection and MLP GEMMs (cuBLAS, bf16) as a scale.
//
//   build/bin/vlcache-bench-cuda [--quick] [--repeats N] [--json out.json]
//
// Exits 2 when no CUDA device is visible; `--probe` prints the device count and exits 0.
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#ifdef VLC_BENCH_CUBLAS
#include <cublas_v2.h>
#endif

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/timing.h"
#include "kvcache/cuda/cuda_common.h"
#include "kvcache/cuda/observation.h"
#include "kvcache/cuda/paged_ops.h"
#include "kvcache/cuda/select.h"

namespace {

namespace kc = vlc::kvcache::cuda;
using nlohmann::json;
using vlc::bench::Median;

constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kGiB = 1024.0 * kMiB;
constexpr int kHeadDim = 128;
constexpr int kPageTokens = 16;
constexpr int kElementBytes = 2;  // bf16

[[noreturn]] void Fail(const char* what, cudaError_t e, int line) {
  std::fprintf(stderr, "vlcache-bench-cuda: line %d: %s: %s (%s)\n", line, what,
               cudaGetErrorString(e), cudaGetErrorName(e));
  std::exit(1);
}

#define BENCH_CUDA(expr)                                              \
  do {                                                                \
    const cudaError_t bench_err_ = static_cast<cudaError_t>(expr);    \
    if (bench_err_ != cudaSuccess) Fail(#expr, bench_err_, __LINE__); \
  } while (0)

#ifdef VLC_BENCH_CUBLAS
#define BENCH_CUBLAS(expr)                                                                         \
  do {                                                                                             \
    const cublasStatus_t bench_st_ = (expr);                                                       \
    if (bench_st_ != CUBLAS_STATUS_SUCCESS) {                                                      \
      std::fprintf(stderr, "vlcache-bench-cuda: line %d: %s: cuBLAS status %d\n", __LINE__, #expr, \
                   static_cast<int>(bench_st_));                                                   \
      std::exit(1);                                                                                \
    }                                                                                              \
  } while (0)
#endif

// A device allocation, freed on scope exit.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes_ > 0) BENCH_CUDA(cudaMalloc(&ptr_, bytes_));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  // An empty buffer when the allocation fails (the error is cleared): a large case that does
  // not fit after all is skipped, not the end of the run.
  static DeviceBuffer TryCreate(size_t bytes) {
    DeviceBuffer b;
    if (cudaMalloc(&b.ptr_, bytes) != cudaSuccess) {
      cudaGetLastError();
      b.ptr_ = nullptr;
      return b;
    }
    b.bytes_ = bytes;
    return b;
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename T>
DeviceBuffer ToDevice(const std::vector<T>& v) {
  DeviceBuffer b(v.size() * sizeof(T));
  BENCH_CUDA(cudaMemcpy(b.get(), v.data(), b.bytes(), cudaMemcpyHostToDevice));
  return b;
}

// ---- Kernels of the benchmark itself --------------------------------------------------------

__device__ __forceinline__ uint32_t Mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return static_cast<uint32_t>((x ^ (x >> 31)) >> 32);
}

// Uniform values in [-scale, scale): decode time does not depend on them, but NaNs would make the
// observation's and the selection's work unrepresentative.
__global__ void FillBf16Kernel(uint4* p, size_t units, uint64_t seed, float scale) {
  for (size_t u = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t halves = 0;
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const float x =
            (Mix(seed ^ (u * 8 + i * 2 + j)) * (1.f / 4294967296.f) * 2.f - 1.f) * scale;
        const __nv_bfloat16 b = __float2bfloat16_rn(x);
        uint16_t bits;
        memcpy(&bits, &b, sizeof(bits));
        halves |= static_cast<uint32_t>(bits) << (16 * j);
      }
      w[i] = halves;
    }
    p[u] = make_uint4(w[0], w[1], w[2], w[3]);
  }
}

void FillBf16(void* p, size_t bytes, uint64_t seed, float scale = 1.f) {
  if (bytes % 16 != 0) {
    std::fprintf(stderr, "vlcache-bench-cuda: fill of %zu bytes is not whole 16-byte units\n",
                 bytes);
    std::exit(1);
  }
  FillBf16Kernel<<<4096, 256>>>(static_cast<uint4*>(p), bytes / 16, seed, scale);
  BENCH_CUDA(cudaGetLastError());
}

// Reads every 16-byte unit once (four loads in flight per thread) and folds them into one word per
// block, written only if impossible, so that the loads cannot be dropped.
__global__ void ReadKernel(const uint4* __restrict__ p, size_t units, uint32_t* sink) {
  uint32_t acc = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t u = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  for (; u + 3 * stride < units; u += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = __ldg(p + u + i * stride);
#pragma unroll
    for (int i = 0; i < 4; ++i) acc ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
  }
  for (; u < units; u += stride) {
    const uint4 v = __ldg(p + u);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;
}

// ---- Timing -----------------------------------------------------------------------------------

// Evicts L2 by reading a buffer twice its size, so that a timed call reads its data from memory.
// A read, not a write: dirty lines left in L2 would be written back during the timed call.
class L2Flusher {
 public:
  L2Flusher(size_t l2_bytes, int sms)
      : buf_(std::max<size_t>(2 * l2_bytes, size_t{64} << 20)),
        sink_(sizeof(uint32_t) * 65536),
        blocks_(std::min(65535, sms * 8)) {
    BENCH_CUDA(cudaMemset(buf_.get(), 1, buf_.bytes()));
  }
  void Flush() {
    ReadKernel<<<blocks_, 256>>>(buf_.as<uint4>(), buf_.bytes() / 16, sink_.as<uint32_t>());
    BENCH_CUDA(cudaGetLastError());
  }

 private:
  DeviceBuffer buf_, sink_;
  int blocks_;
};

class EventPair {
 public:
  EventPair() {
    BENCH_CUDA(cudaEventCreate(&start_));
    BENCH_CUDA(cudaEventCreate(&stop_));
  }
  ~EventPair() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventPair(const EventPair&) = delete;
  EventPair& operator=(const EventPair&) = delete;

  // Milliseconds `launch` takes on the default stream, L2 evicted first when `flush` is given.
  template <typename F>
  double Time(L2Flusher* flush, F&& launch) {
    if (flush != nullptr) flush->Flush();
    BENCH_CUDA(cudaEventRecord(start_));
    launch();
    BENCH_CUDA(cudaEventRecord(stop_));
    BENCH_CUDA(cudaEventSynchronize(stop_));
    float ms = 0;
    BENCH_CUDA(cudaEventElapsedTime(&ms, start_, stop_));
    return ms;
  }

 private:
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

// A kernel host function's result (cuda_common.h): any error ends the benchmark.
void Check(kc::Error e, const char* what) {
  if (e != 0) Fail(what, static_cast<cudaError_t>(e), __LINE__);
}

// Median milliseconds of `repeats` timed calls after one untimed warm-up call.
template <typename F>
double MedianMs(EventPair& ev, int repeats, L2Flusher* flush, F&& launch,
                std::vector<double>* all = nullptr) {
  launch();
  BENCH_CUDA(cudaDeviceSynchronize());
  std::vector<double> ms;
  for (int r = 0; r < repeats; ++r) ms.push_back(ev.Time(flush, launch));
  if (all != nullptr) *all = ms;
  return Median(ms);
}

size_t FreeBytes() {
  size_t free = 0, total = 0;
  BENCH_CUDA(cudaMemGetInfo(&free, &total));
  return free;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Kept tokens of one layer at budget alpha (at least one), and the recent window VL-Cache always
// keeps (PolicyConfig::recent_fraction of them).
int64_t KeptTokens(int64_t m, double budget) {
  return std::clamp<int64_t>(static_cast<int64_t>(std::ceil(budget * static_cast<double>(m))), 1,
                             m);
}

struct Options {
  int repeats = 20;
  int heads = 32;
  std::vector<int> kv_heads = {8, 32};
  std::vector<int64_t> contexts = {4096, 16384, 65536, 131072};
  std::vector<int> batches = {1, 8, 32};
  std::vector<int64_t> prefills = {4096, 16384, 65536};
  std::vector<int64_t> scoring_rows = {50, 64};
  double budget = 0.1;
  double recent_fraction = 0.1;
  int64_t copy_mib = 2048;
  int hidden = 4096;
  int intermediate = 14336;
  bool gemm = true;
};

// Bytes left free beside an allocation: the L2 flusher and the driver's own needs.
constexpr size_t kReserveBytes = size_t{512} << 20;

// ---- Copy bandwidth ---------------------------------------------------------------------------

json RunCopy(const Options& o, EventPair& ev, int sms) {
  const size_t bytes = static_cast<size_t>(o.copy_mib) << 20;
  DeviceBuffer src(bytes), dst(bytes), sink(sizeof(uint32_t) * 65536);
  FillBf16(src.get(), bytes, 1);
  BENCH_CUDA(cudaMemset(dst.get(), 0, bytes));
  std::vector<double> copy_ms, read_ms;
  const double copy = MedianMs(
      ev, o.repeats, nullptr,
      [&] { BENCH_CUDA(cudaMemcpyAsync(dst.get(), src.get(), bytes, cudaMemcpyDeviceToDevice)); },
      &copy_ms);
  const int blocks = std::min(65535, sms * 8);
  const double read = MedianMs(
      ev, o.repeats, nullptr,
      [&] {
        ReadKernel<<<blocks, 256>>>(src.as<uint4>(), bytes / 16, sink.as<uint32_t>());
        BENCH_CUDA(cudaGetLastError());
      },
      &read_ms);
  const double copy_gbps = 2.0 * bytes / (copy * 1e-3) / 1e9;
  const double read_gbps = bytes / (read * 1e-3) / 1e9;
  std::printf(
      "copy %.0f MiB: %.3f ms, %.0f GB/s read + written; read-only pass %.3f ms, "
      "%.0f GB/s\n",
      bytes / kMiB, copy, copy_gbps, read, read_gbps);
  return {{"bytes", bytes},
          {"copy_ms", copy},
          {"copy_gbps", copy_gbps},
          {"copy_ms_per_repeat", copy_ms},
          {"read_ms", read},
          {"read_gbps", read_gbps},
          {"read_ms_per_repeat", read_ms}};
}

// ---- Decode attention -------------------------------------------------------------------------

json RunDecode(const Options& o, int kv_heads, int64_t context, int batch, double copy_gbps,
               double read_gbps, EventPair& ev, L2Flusher& flush) {
  kc::PagedLayout layout;
  layout.kv_heads = kv_heads;
  layout.page_tokens = kPageTokens;
  layout.head_dim = kHeadDim;
  layout.dtype = kc::DType::kBF16;
  const int64_t keep = KeptTokens(context, o.budget);
  const int64_t pages_per_seq = CeilDiv(context, kPageTokens);
  const int64_t pages = pages_per_seq * batch;
  const size_t page_bytes = size_t{2} * kv_heads * kPageTokens * kHeadDim * kElementBytes;
  const size_t ws_bytes =
      std::max(kc::PagedDecodeWorkspaceBytes(layout, batch, o.heads, context, 0),
               kc::PagedDecodeWorkspaceBytes(layout, batch, o.heads, keep, 0));
  const size_t qo_bytes = size_t{2} * batch * o.heads * kHeadDim * kElementBytes;
  const size_t need = pages * page_bytes + pages * sizeof(int32_t) + qo_bytes + ws_bytes +
                      2 * batch * sizeof(kc::PagedSeqView);
  json r = {{"kv_heads", kv_heads}, {"context", context}, {"batch", batch}};
  const size_t free = FreeBytes();
  if (need + kReserveBytes > free) {
    char why[160];
    std::snprintf(why, sizeof why, "needs %.1f GiB of device memory, %.1f GiB free", need / kGiB,
                  free / kGiB);
    std::printf("%-4d %-8lld %-6d skipped: %s\n", kv_heads, static_cast<long long>(context), batch,
                why);
    r["skipped"] = why;
    return r;
  }

  DeviceBuffer storage = DeviceBuffer::TryCreate(pages * page_bytes);
  if (storage.get() == nullptr) {
    std::printf("%-4d %-8lld %-6d skipped: cudaMalloc of %.1f GiB failed\n", kv_heads,
                static_cast<long long>(context), batch, pages * page_bytes / kGiB);
    r["skipped"] = "cudaMalloc of the page storage failed";
    return r;
  }
  FillBf16(storage.get(), storage.bytes(), 2);
  // Pages scattered over the pool, as a pool that has served other sequences leaves them.
  std::vector<int32_t> table(pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(7));
  DeviceBuffer d_table = ToDevice(table);
  std::vector<kc::PagedSeqView> full(batch), comp(batch);
  for (int b = 0; b < batch; ++b) {
    full[b] = {d_table.as<int32_t>() + b * pages_per_seq, context};
    comp[b] = {d_table.as<int32_t>() + b * pages_per_seq, keep};
  }
  DeviceBuffer d_full = ToDevice(full), d_comp = ToDevice(comp);
  DeviceBuffer q(qo_bytes / 2), out(qo_bytes / 2), ws(ws_bytes);
  FillBf16(q.get(), q.bytes(), 3);
  const double scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
  auto decode = [&](const DeviceBuffer& seqs, int64_t length) {
    Check(kc::PagedDecodeAttention(storage.get(), layout, seqs.as<kc::PagedSeqView>(), batch,
                                   length, q.get(), o.heads, scale, 0, out.get(), ws.get(),
                                   ws.bytes(), nullptr),
          "PagedDecodeAttention");
  };
  // Warm-up of both, then each repeat times the full call and the compressed one back to back;
  // the ratio is taken per repeat.
  decode(d_full, context);
  decode(d_comp, keep);
  BENCH_CUDA(cudaDeviceSynchronize());
  std::vector<double> t_full, t_comp, ratios;
  for (int rep = 0; rep < o.repeats; ++rep) {
    t_full.push_back(ev.Time(&flush, [&] { decode(d_full, context); }));
    t_comp.push_back(ev.Time(&flush, [&] { decode(d_comp, keep); }));
    ratios.push_back(t_full.back() / t_comp.back());
  }
  const double bytes_full =
      static_cast<double>(batch) * context * kv_heads * kHeadDim * 2 * kElementBytes;
  const double bytes_comp =
      static_cast<double>(batch) * keep * kv_heads * kHeadDim * 2 * kElementBytes;
  const double ms_full = Median(t_full), ms_comp = Median(t_comp);
  const double gbps_full = bytes_full / (ms_full * 1e-3) / 1e9;
  const double gbps_comp = bytes_comp / (ms_comp * 1e-3) / 1e9;
  const kc::PagedDecodePlan plan_full = kc::PlanPagedDecode(layout, batch, o.heads, context, 0);
  const kc::PagedDecodePlan plan_comp = kc::PlanPagedDecode(layout, batch, o.heads, keep, 0);
  std::printf("%-4d %-8lld %-6d %10.4f %10.4f %8.2f %8.2f %9.0f %9.0f %8.2f %8.2f\n", kv_heads,
              static_cast<long long>(context), batch, ms_full, ms_comp, Median(ratios),
              bytes_full / bytes_comp, gbps_full, gbps_comp, gbps_full / copy_gbps,
              gbps_comp / copy_gbps);
  r.update({{"compressed_tokens", keep},
            {"full_ms", ms_full},
            {"compressed_ms", ms_comp},
            {"ratio", Median(ratios)},
            {"ideal_ratio", bytes_full / bytes_comp},
            {"full_kv_bytes", bytes_full},
            {"compressed_kv_bytes", bytes_comp},
            {"full_gbps", gbps_full},
            {"compressed_gbps", gbps_comp},
            {"full_fraction_of_copy", gbps_full / copy_gbps},
            {"compressed_fraction_of_copy", gbps_comp / copy_gbps},
            {"full_fraction_of_read", gbps_full / read_gbps},
            {"compressed_fraction_of_read", gbps_comp / read_gbps},
            {"full_chunk_tokens", plan_full.chunk_tokens},
            {"full_chunks", plan_full.max_chunks},
            {"compressed_chunk_tokens", plan_comp.chunk_tokens},
            {"compressed_chunks", plan_comp.max_chunks},
            {"full_ms_per_repeat", t_full},
            {"compressed_ms_per_repeat", t_comp}});
  return r;
}

// ---- A layer's prefill GEMMs (the scale for the compression's cost) ---------------------------

#ifdef VLC_BENCH_CUBLAS
// The projections and the MLP of one layer for m tokens: q and o hidden x hidden, k and v
// hidden x kv_heads * head_dim, gate and up hidden x intermediate, down intermediate x hidden.
struct GemmResult {
  double ms = 0, flops = 0;
};

GemmResult TimeLayerGemms(const Options& o, int kv_heads, int64_t m, EventPair& ev,
                          cublasHandle_t handle) {
  struct Shape {
    int64_t in, out;
  };
  const int64_t kv = int64_t{kv_heads} * kHeadDim;
  const std::vector<Shape> shapes = {{o.hidden, o.hidden},
                                     {o.hidden, kv},
                                     {o.hidden, kv},
                                     {o.hidden, o.hidden},
                                     {o.hidden, o.intermediate},
                                     {o.hidden, o.intermediate},
                                     {o.intermediate, o.hidden}};
  const int64_t widest = std::max<int64_t>(o.hidden, o.intermediate);
  DeviceBuffer x(m * widest * kElementBytes), y(m * widest * kElementBytes),
      w(int64_t{o.hidden} * o.intermediate * kElementBytes);
  FillBf16(x.get(), x.bytes(), 4, 0.5f);
  FillBf16(w.get(), w.bytes(), 5, 0.02f);
  const float alpha = 1.f, beta = 0.f;
  GemmResult g;
  for (const Shape& s : shapes) g.flops += 2.0 * m * s.in * s.out;
  // Row-major activations [m, in] times weights [out, in]^T = [m, out]; in cuBLAS's column-major
  // view: y (out x m) = W^T (out x in) * x (in x m).
  g.ms = MedianMs(ev, o.repeats, nullptr, [&] {
    for (const Shape& s : shapes) {
      BENCH_CUBLAS(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(s.out),
                                static_cast<int>(m), static_cast<int>(s.in), &alpha, w.get(),
                                CUDA_R_16BF, static_cast<int>(s.in), x.get(), CUDA_R_16BF,
                                static_cast<int>(s.in), &beta, y.get(), CUDA_R_16BF,
                                static_cast<int>(s.out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    }
  });
  return g;
}
#endif

// ---- Compression of one layer after its prefill -----------------------------------------------

json RunCompression(const Options& o, int kv_heads, int64_t m, EventPair& ev, L2Flusher& flush,
                    void* cublas) {
  json rows = json::array();
  const int64_t keep = KeptTokens(m, o.budget);
  const int64_t recent = static_cast<int64_t>(std::floor(o.recent_fraction * keep));
  const int64_t pages = CeilDiv(m, kPageTokens);
  const size_t page_bytes = size_t{2} * kv_heads * kPageTokens * kHeadDim * kElementBytes;
  // q [m, heads, head_dim] and k [m, kv_heads, head_dim]: token-major, as a projection writes them.
  const size_t q_bytes = static_cast<size_t>(m) * o.heads * kHeadDim * kElementBytes;
  const size_t k_bytes = static_cast<size_t>(m) * kv_heads * kHeadDim * kElementBytes;
  const size_t need = q_bytes + k_bytes + sizeof(float) * m * (o.heads + kv_heads) +
                      sizeof(int64_t) * kv_heads * keep + pages * page_bytes;
  const size_t free = FreeBytes();
  if (need + kReserveBytes > free) {
    char why[160];
    std::snprintf(why, sizeof why, "needs %.1f GiB of device memory, %.1f GiB free", need / kGiB,
                  free / kGiB);
    std::printf("%-4d %-7lld skipped: %s\n", kv_heads, static_cast<long long>(m), why);
    rows.push_back({{"kv_heads", kv_heads}, {"m", m}, {"skipped", why}});
    return rows;
  }
  DeviceBuffer q(q_bytes), k(k_bytes), col_sums(sizeof(float) * o.heads * m),
      sparse(sizeof(int64_t) * o.heads), scores(sizeof(float) * kv_heads * m),
      positions(sizeof(int64_t) * kv_heads * keep), storage(pages * page_bytes);
  FillBf16(q.get(), q_bytes, 6);
  FillBf16(k.get(), k_bytes, 7);
  FillBf16(storage.get(), storage.bytes(), 8);

  // Observation, once per number of scoring rows.
  std::vector<std::pair<int64_t, double>> observe_ms;
  for (int64_t tau : o.scoring_rows) {
    kc::ObservationArgs a;
    a.heads = o.heads;
    a.kv_heads = kv_heads;
    a.m = m;
    a.head_dim = kHeadDim;
    a.query_begin = std::max<int64_t>(0, m - tau);
    a.scale = 1.0 / std::sqrt(static_cast<double>(kHeadDim));
    a.sparsity = true;
    a.threshold = 0.01;
    a.dtype = kc::DType::kBF16;
    a.q_head_stride = kHeadDim;
    a.q_row_stride = int64_t{o.heads} * kHeadDim;
    a.k_head_stride = kHeadDim;
    a.k_row_stride = int64_t{kv_heads} * kHeadDim;
    DeviceBuffer ws(kc::ObservationWorkspaceBytes(a));
    const double ms = MedianMs(ev, o.repeats, &flush, [&] {
      Check(kc::ObserveLayer(a, q.get(), k.get(), col_sums.as<float>(), sparse.as<int64_t>(),
                             ws.get(), ws.bytes(), nullptr),
            "ObserveLayer");
    });
    observe_ms.emplace_back(tau, ms);
  }
  // The selection works on the last observation's column sums, as the engine's would.
  const double group_ms = MedianMs(ev, o.repeats, &flush, [&] {
    Check(kc::GroupMean(col_sums.as<float>(), o.heads, kv_heads, m, scores.as<float>(), nullptr),
          "GroupMean");
  });
  DeviceBuffer topk_ws(kc::TopKWithRecentWorkspaceBytes(kv_heads, m, keep));
  const double topk_ms = MedianMs(ev, o.repeats, &flush, [&] {
    Check(kc::TopKWithRecent(scores.as<float>(), kv_heads, m, 0, keep, recent,
                             positions.as<int64_t>(), topk_ws.get(), topk_ws.bytes(), nullptr),
          "TopKWithRecent");
  });
  // In-place compaction of the layer's pages (scattered over the pool) to the kept tokens; every
  // repeat moves the same rows again, which costs what the first move did.
  kc::PagedLayout layout;
  layout.kv_heads = kv_heads;
  layout.page_tokens = kPageTokens;
  layout.head_dim = kHeadDim;
  layout.dtype = kc::DType::kBF16;
  std::vector<int32_t> table(pages);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(11));
  DeviceBuffer d_table = ToDevice(table);
  kc::PagedGatherLayer gl;
  gl.src_pages = d_table.as<int32_t>();
  gl.dst_pages = d_table.as<int32_t>();
  gl.positions = positions.as<int64_t>();
  gl.keep = keep;
  DeviceBuffer d_gl = ToDevice(std::vector<kc::PagedGatherLayer>{gl});
  const double gather_ms = MedianMs(ev, o.repeats, &flush, [&] {
    Check(kc::PagedGather(storage.get(), layout, d_gl.as<kc::PagedGatherLayer>(), 1, nullptr),
          "PagedGather");
  });

  double gemm_ms = 0, gemm_tflops = 0;
#ifdef VLC_BENCH_CUBLAS
  if (cublas != nullptr) {
    q = DeviceBuffer();  // room for the GEMMs' activations
    k = DeviceBuffer();
    storage = DeviceBuffer();
    const size_t widest = static_cast<size_t>(std::max(o.hidden, o.intermediate));
    const size_t gemm_need =
        (2 * static_cast<size_t>(m) * widest + static_cast<size_t>(o.hidden) * o.intermediate) *
        kElementBytes;
    if (gemm_need + kReserveBytes <= FreeBytes()) {
      const GemmResult g = TimeLayerGemms(o, kv_heads, m, ev, static_cast<cublasHandle_t>(cublas));
      gemm_ms = g.ms;
      gemm_tflops = g.flops / (g.ms * 1e-3) / 1e12;
    }
  }
#endif
  const double gather_bytes = 2.0 * keep * kv_heads * kHeadDim * 2 * kElementBytes;  // read+write
  for (const auto& [tau, obs_ms] : observe_ms) {
    const double total = obs_ms + group_ms + topk_ms + gather_ms;
    std::printf("%-4d %-7lld %-5lld %9.4f %9.4f %9.4f %9.4f %9.4f %10.3f %8.1f %9.4f\n", kv_heads,
                static_cast<long long>(m), static_cast<long long>(tau), obs_ms, group_ms, topk_ms,
                gather_ms, total, gemm_ms, gemm_tflops, gemm_ms > 0 ? total / gemm_ms : 0.0);
    json row = {
        {"kv_heads", kv_heads},      {"m", m},
        {"scoring_rows", tau},       {"keep", keep},
        {"recent", recent},          {"observe_ms", obs_ms},
        {"group_mean_ms", group_ms}, {"topk_ms", topk_ms},
        {"gather_ms", gather_ms},    {"gather_gbps", gather_bytes / (gather_ms * 1e-3) / 1e9},
        {"total_ms", total}};
    if (gemm_ms > 0) {
      row["layer_gemm_ms"] = gemm_ms;
      row["layer_gemm_tflops"] = gemm_tflops;
      row["total_over_layer_gemm"] = total / gemm_ms;
    }
    rows.push_back(row);
  }
  return rows;
}

json DeviceJson(int device, const cudaDeviceProp& p) {
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  json d = {{"index", device},
            {"name", p.name},
            {"compute_capability", std::to_string(p.major) + "." + std::to_string(p.minor)},
            {"multiprocessors", p.multiProcessorCount},
            {"memory_bytes", p.totalGlobalMem},
            {"l2_bytes", p.l2CacheSize},
            {"driver_version", driver},
            {"runtime_version", runtime}};
  int mem_khz = 0, bus_bits = 0;
  if (cudaDeviceGetAttribute(&mem_khz, cudaDevAttrMemoryClockRate, device) == cudaSuccess &&
      cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, device) == cudaSuccess &&
      mem_khz > 0 && bus_bits > 0) {
    // Double data rate: two transfers per clock.
    d["spec_peak_gbps"] = 2.0 * mem_khz * 1e3 * (bus_bits / 8.0) / 1e9;
  }
  cudaGetLastError();
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "CUDA kernel benchmarks: paged decode attention against the copy bandwidth, and "
      "the cost of VL-Cache's compression in one layer's prefill"};
  Options o;
  bool quick = false, probe = false;
  int device = 0;
  std::string json_path;
  app.add_flag("--probe", probe, "Print the number of CUDA devices and exit 0");
  app.add_flag("--quick", quick, "Small sizes and 3 repeats (seconds; the smoke test)");
  app.add_option("--repeats", o.repeats, "Timed calls per figure (median reported)")
      ->capture_default_str();
  app.add_option("--device", device)->capture_default_str();
  app.add_option("--kv-heads", o.kv_heads, "KV heads (8: Mistral-7B, 32: Vicuna-7B)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--heads", o.heads, "Query heads")->capture_default_str();
  app.add_option("--contexts", o.contexts, "Decode context lengths")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--batches", o.batches, "Decode batch sizes")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--prefills", o.prefills, "Prefill lengths m for the compression's cost")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--scoring-rows", o.scoring_rows,
                 "Observation rows tau (50: the paper's speed mode; 64: every post-vision row of "
                 "a 64-token text prompt)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--budget", o.budget, "Fraction of the tokens the compressed cache keeps")
      ->capture_default_str();
  app.add_option("--copy-mib", o.copy_mib, "Size of the copy-bandwidth buffer")
      ->capture_default_str();
  app.add_option("--hidden", o.hidden, "Hidden size of the GEMM reference")->capture_default_str();
  app.add_option("--intermediate", o.intermediate, "MLP size of the GEMM reference")
      ->capture_default_str();
  app.add_flag("!--no-gemm", o.gemm, "Skip the cuBLAS GEMM reference");
  app.add_option("--json", json_path, "Write every figure here");
  CLI11_PARSE(app, argc, argv);
  // Line by line, so that a run stopped by a time limit leaves what it had printed.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  int count = 0;
  const cudaError_t count_err = cudaGetDeviceCount(&count);
  if (count_err != cudaSuccess) count = 0;
  if (probe) {
    std::printf("cuda devices: %d\n", count);
    return 0;
  }
  if (count == 0) {
    std::fprintf(stderr, "vlcache-bench-cuda: no CUDA device: cudaGetDeviceCount: %s (%s)\n",
                 cudaGetErrorString(count_err), cudaGetErrorName(count_err));
    return 2;
  }
  if (device < 0 || device >= count) {
    std::fprintf(stderr, "vlcache-bench-cuda: --device %d, but %d device(s) are visible\n", device,
                 count);
    return 2;
  }
  if (quick) {
    o.repeats = std::min(o.repeats, 3);
    o.contexts = {1024, 4096};
    o.batches = {1, 4};
    o.prefills = {1024, 4096};
    o.copy_mib = 64;
  }
  if (o.repeats < 1 || o.heads < 1 || !(o.budget > 0 && o.budget <= 1) || o.copy_mib < 1) {
    std::fprintf(stderr,
                 "vlcache-bench-cuda: --repeats, --heads, --copy-mib must be positive and "
                 "--budget in (0, 1]\n");
    return 2;
  }
  for (int kv : o.kv_heads) {
    if (kv < 1 || o.heads % kv != 0) {
      std::fprintf(stderr, "vlcache-bench-cuda: --kv-heads %d does not divide --heads %d\n", kv,
                   o.heads);
      return 2;
    }
  }
  BENCH_CUDA(cudaSetDevice(device));
  cudaDeviceProp prop{};
  BENCH_CUDA(cudaGetDeviceProperties(&prop, device));
  json out = {{"device", DeviceJson(device, prop)},
              {"config",
               {{"quick", quick},
                {"repeats", o.repeats},
                {"heads", o.heads},
                {"kv_heads", o.kv_heads},
                {"head_dim", kHeadDim},
                {"page_tokens", kPageTokens},
                {"dtype", "bf16"},
                {"budget", o.budget},
                {"recent_fraction", o.recent_fraction},
                {"contexts", o.contexts},
                {"batches", o.batches},
                {"prefills", o.prefills},
                {"scoring_rows", o.scoring_rows},
                {"hidden", o.hidden},
                {"intermediate", o.intermediate}}}};
  std::printf("device %d: %s, compute %d.%d, %d SMs, %.1f GiB, L2 %.0f MiB\n", device, prop.name,
              prop.major, prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / kGiB,
              prop.l2CacheSize / kMiB);

  // The JSON is rewritten after every case, so that a run that fails or is stopped part of the
  // way keeps the figures it had (with "complete": false).
  out["complete"] = false;
  auto save = [&] {
    if (json_path.empty()) return;
    std::ofstream f(json_path);
    f << out.dump(2) << "\n";
    if (!f) {
      std::fprintf(stderr, "vlcache-bench-cuda: cannot write %s\n", json_path.c_str());
      std::exit(1);
    }
  };
  save();

  EventPair ev;
  const json copy = RunCopy(o, ev, prop.multiProcessorCount);
  out["copy"] = copy;
  save();
  const double copy_gbps = copy["copy_gbps"].get<double>();
  const double read_gbps = copy["read_gbps"].get<double>();

  L2Flusher flush(static_cast<size_t>(prop.l2CacheSize), prop.multiProcessorCount);
  std::printf(
      "\ndecode attention, %d query heads, head_dim %d, bf16, %d-token pages, compressed = "
      "%.0f%% of the tokens; ms per call (median of %d, L2 evicted before each)\n",
      o.heads, kHeadDim, kPageTokens, o.budget * 100, o.repeats);
  std::printf("%-4s %-8s %-6s %10s %10s %8s %8s %9s %9s %8s %8s\n", "kv", "context", "batch",
              "full ms", "compr ms", "ratio", "ideal", "full GB/s", "comp GB/s", "full/cp",
              "comp/cp");
  out["decode"] = json::array();
  for (int kv : o.kv_heads) {
    for (int64_t context : o.contexts) {
      for (int batch : o.batches) {
        out["decode"].push_back(RunDecode(o, kv, context, batch, copy_gbps, read_gbps, ev, flush));
        save();
      }
    }
  }

  void* cublas = nullptr;
#ifdef VLC_BENCH_CUBLAS
  cublasHandle_t handle = nullptr;
  if (o.gemm) {
    BENCH_CUBLAS(cublasCreate(&handle));
    cublas = handle;
  }
#endif
  out["gemm_reference"] = cublas != nullptr;
  std::printf(
      "\ncompression of one layer after an m-token prefill (keep %.0f%%); ms, median of %d, "
      "L2 evicted before each%s\n",
      o.budget * 100, o.repeats,
      cublas != nullptr ? "; gemm = the layer's q/k/v/o and MLP GEMMs (cuBLAS bf16)"
                        : "; no cuBLAS GEMM reference in this build");
  std::printf("%-4s %-7s %-5s %9s %9s %9s %9s %9s %10s %8s %9s\n", "kv", "m", "tau", "observe",
              "groupmean", "topk", "gather", "total", "gemm ms", "TFLOP/s", "tot/gemm");
  out["compression"] = json::array();
  for (int kv : o.kv_heads) {
    for (int64_t m : o.prefills) {
      for (auto& row : RunCompression(o, kv, m, ev, flush, cublas)) {
        out["compression"].push_back(row);
      }
      save();
    }
  }
#ifdef VLC_BENCH_CUBLAS
  if (handle != nullptr) cublasDestroy(handle);
#endif
  out["complete"] = true;
  save();
  return 0;
}
