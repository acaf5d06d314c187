#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kvcache/cuda/observation.h"

namespace vlc::kvcache::cuda {
namespace {

// A block is 16 x 16 threads over a tile of R = 16 * RT query rows and kCols = 64 key columns:
// thread (ty, tx) owns rows ty * RT .. + RT - 1 and columns tx * 4 .. + 3. head_dim is streamed
// through shared memory kChunk elements at a time, stored transposed ([kk][row]) so that the
// inner loop reads RT rows and 4 columns with one vector load each.
constexpr int kThreads = 256;
constexpr int kCols = 64;
constexpr int kChunk = 32;
constexpr int kPad = 4;  // keeps rows 16-byte aligned for float4, spreads the stores over banks
// Pass 1 splits a row tile's keys across blocks until the grid has about this many blocks (an
// H100 holds 132 SMs x several blocks), each split keeping at least kMinTilesPerSplit key tiles.
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMinTilesPerSplit = 4;
constexpr int64_t kMaxSplits = 256;
constexpr size_t kAlign = 256;
// Lengths up to 2^30 keep every row and column index (and sums of two) inside int.
constexpr int64_t kMaxLength = int64_t{1} << 30;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

// The shape as the kernels read it (validated on the host: every index fits its type).
struct Geometry {
  int group;  // query heads per KV head
  int m;
  int d;
  int row_begin;  // first scoring row
  int window;     // 0 = none
  long long q_hs, q_rs, k_hs, k_rs;
  float scale;
  float ln_p;
  bool sparsity;
};

__device__ __forceinline__ bool Visible(const Geometry& g, int row, int col) {
  return col <= row && (g.window <= 0 || col > row - g.window);
}

template <int R>
struct TileSmem {
  float q[kChunk][R + kPad];
  float k[kChunk][kCols + kPad];
};

// acc[i][j] = scale * q[row0 + ty * RT + i] . k[col0 + tx * 4 + j], rows >= row_end and columns
// >= col_end reading as zeros. Every logit is one fmaf chain over head_dim in index order, the
// same whichever tile, pass or RT computes it, so both passes see bit-identical logits. Called by
// every thread of the block (it synchronises).
template <typename T, int RT>
__device__ __forceinline__ void LogitTile(const Geometry& g, const T* __restrict__ q_head,
                                          const T* __restrict__ k_head, int row0, int row_end,
                                          int col0, int col_end, TileSmem<16 * RT>& s,
                                          float (&acc)[RT][4]) {
  constexpr int R = 16 * RT;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
  for (int i = 0; i < RT; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  }
  for (int d0 = 0; d0 < g.d; d0 += kChunk) {
    for (int e = threadIdx.x; e < R * kChunk; e += kThreads) {
      const int r = e / kChunk, kk = e % kChunk;
      const int row = row0 + r, dd = d0 + kk;
      s.q[kk][r] = (row < row_end && dd < g.d) ? ToFloat(q_head[row * g.q_rs + dd]) : 0.f;
    }
    for (int e = threadIdx.x; e < kCols * kChunk; e += kThreads) {
      const int c = e / kChunk, kk = e % kChunk;
      const int col = col0 + c, dd = d0 + kk;
      s.k[kk][c] = (col < col_end && dd < g.d) ? ToFloat(k_head[col * g.k_rs + dd]) : 0.f;
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kChunk; ++kk) {
      float a[RT];
      if constexpr (RT == 4) {
        const float4 v = *reinterpret_cast<const float4*>(&s.q[kk][ty * 4]);
        a[0] = v.x, a[1] = v.y, a[2] = v.z, a[3] = v.w;
      } else if constexpr (RT == 2) {
        const float2 v = *reinterpret_cast<const float2*>(&s.q[kk][ty * 2]);
        a[0] = v.x, a[1] = v.y;
      } else {
        a[0] = s.q[kk][ty];
      }
      const float4 bv = *reinterpret_cast<const float4*>(&s.k[kk][tx * 4]);
      const float b[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
      for (int i = 0; i < RT; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < RT; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) acc[i][j] *= g.scale;
  }
}

// Merges the softmax state (m2, s2) into (m1, s1): s = sum of exp(logit - m) over the entries seen.
__device__ __forceinline__ void MergeState(float& m1, float& s1, float m2, float s2) {
  const float mx = fmaxf(m1, m2);
  if (mx == kNegInf) return;  // neither has seen an entry
  s1 = (m1 == kNegInf ? 0.f : s1 * expf(m1 - mx)) + (m2 == kNegInf ? 0.f : s2 * expf(m2 - mx));
  m1 = mx;
}

// Pass 1. Block (row tile x, split y, head z): for each row of the tile, the max logit and the
// sum of exp(logit - max) over the keys of this split, written at [head][split][row - row_begin]
// of out_max / out_sum (the final statistics when there is one split).
template <typename T, int RT>
__global__ void __launch_bounds__(kThreads, 2)
    RowStatsKernel(Geometry g, const T* __restrict__ q, const T* __restrict__ k, int splits,
                   float* __restrict__ out_max, float* __restrict__ out_sum) {
  constexpr int R = 16 * RT;
  __shared__ __align__(16) TileSmem<R> s;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int h = blockIdx.z, split = blockIdx.y;
  const int tau = g.m - g.row_begin;
  const int row0 = g.row_begin + blockIdx.x * R;
  const int row_end = min(g.m, row0 + R);
  // Keys any row of the tile sees: [klo, khi).
  const int klo = g.window > 0 ? max(0, row0 - g.window + 1) : 0;
  const int khi = row_end;
  const int tiles = (khi - klo + kCols - 1) / kCols;
  const int t0 = static_cast<int>(static_cast<long long>(tiles) * split / splits);
  const int t1 = static_cast<int>(static_cast<long long>(tiles) * (split + 1) / splits);
  const T* q_head = q + h * g.q_hs;
  const T* k_head = k + (h / g.group) * g.k_hs;

  float run_max[RT], run_sum[RT];
#pragma unroll
  for (int i = 0; i < RT; ++i) run_max[i] = kNegInf, run_sum[i] = 0.f;
  for (int t = t0; t < t1; ++t) {
    const int col0 = klo + t * kCols;
    float acc[RT][4];
    LogitTile<T, RT>(g, q_head, k_head, row0, row_end, col0, khi, s, acc);
#pragma unroll
    for (int i = 0; i < RT; ++i) {
      const int row = row0 + ty * RT + i;
      bool vis[4];
      float tile_max = kNegInf;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = col0 + tx * 4 + j;
        vis[j] = row < row_end && col < khi && Visible(g, row, col);
        if (vis[j]) tile_max = fmaxf(tile_max, acc[i][j]);
      }
      if (tile_max > run_max[i]) {
        run_sum[i] = run_max[i] == kNegInf ? 0.f : run_sum[i] * expf(run_max[i] - tile_max);
        run_max[i] = tile_max;
      }
      const bool any = run_max[i] != kNegInf;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (any && vis[j]) run_sum[i] += expf(acc[i][j] - run_max[i]);
      }
    }
  }
  // The 16 threads of a row are one half warp.
#pragma unroll
  for (int i = 0; i < RT; ++i) {
#pragma unroll
    for (int off = 8; off > 0; off /= 2) {
      const float om = __shfl_xor_sync(0xffffffffu, run_max[i], off);
      const float os = __shfl_xor_sync(0xffffffffu, run_sum[i], off);
      MergeState(run_max[i], run_sum[i], om, os);
    }
  }
  if (tx == 0) {
#pragma unroll
    for (int i = 0; i < RT; ++i) {
      const int row = row0 + ty * RT + i;
      if (row < row_end) {
        const long long at =
            (static_cast<long long>(h) * splits + split) * tau + (row - g.row_begin);
        out_max[at] = run_max[i];
        out_sum[at] = run_sum[i];
      }
    }
  }
}

// Pass 1's combine: the splits' partial (max, sum) of each (head, row) into the final pair.
__global__ void CombineSplitsKernel(int heads, int tau, int splits, const float* __restrict__ pmax,
                                    const float* __restrict__ psum, float* __restrict__ row_max,
                                    float* __restrict__ row_sum) {
  const long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<long long>(heads) * tau) return;
  const long long h = idx / tau, r = idx % tau;
  float mx = kNegInf, sum = 0.f;
  for (int s = 0; s < splits; ++s) {
    const long long at = (h * splits + s) * tau + r;
    MergeState(mx, sum, pmax[at], psum[at]);
  }
  row_max[idx] = mx;
  row_sum[idx] = sum;
}

// Pass 2. Block (column tile x, head y): for each key column of the tile, the sum over the
// scoring rows that see it of exp(logit - max) / sum (written, never accumulated: 0 when no row
// sees it), and the block's count of sparse entries added to sparse[head].
template <typename T, int RT>
__global__ void __launch_bounds__(kThreads, 2)
    ColumnSumsKernel(Geometry g, const T* __restrict__ q, const T* __restrict__ k,
                     const float* __restrict__ row_max, const float* __restrict__ row_sum,
                     float* __restrict__ col_sums, unsigned long long* __restrict__ sparse) {
  constexpr int R = 16 * RT;
  __shared__ __align__(16) TileSmem<R> s;
  __shared__ float partial[16][kCols];
  __shared__ unsigned int warp_sparse[kThreads / 32];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int h = blockIdx.y;
  const int tau = g.m - g.row_begin;
  const int col0 = blockIdx.x * kCols;
  const int col_end = min(g.m, col0 + kCols);
  // Rows that see some column of the tile: [row_lo, row_hi).
  const int row_lo = max(g.row_begin, col0);
  const int row_hi = g.window > 0 ? min(g.m, col_end - 1 + g.window) : g.m;
  const T* q_head = q + h * g.q_hs;
  const T* k_head = k + (h / g.group) * g.k_hs;
  const long long stat0 = static_cast<long long>(h) * tau - g.row_begin;  // + row

  float csum[4] = {0.f, 0.f, 0.f, 0.f};
  unsigned int count = 0;
  for (int row0 = row_lo; row0 < row_hi; row0 += R) {
    const int row_end = min(row_hi, row0 + R);
    float acc[RT][4];
    LogitTile<T, RT>(g, q_head, k_head, row0, row_end, col0, col_end, s, acc);
#pragma unroll
    for (int i = 0; i < RT; ++i) {
      const int row = row0 + ty * RT + i;
      const bool live = row < row_end;
      const float mx = live ? row_max[stat0 + row] : kNegInf;
      const float sum = live ? row_sum[stat0 + row] : 0.f;
      const float inv = sum > 0.f ? 1.f / sum : 0.f;
      const float thr = mx + g.ln_p;  // A < p * rowmax  <=>  logit < rowmax_logit + ln p
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int col = col0 + tx * 4 + j;
        if (mx != kNegInf && col < col_end && Visible(g, row, col)) {
          csum[j] += expf(acc[i][j] - mx) * inv;
          count += (g.sparsity && acc[i][j] < thr) ? 1u : 0u;
        }
      }
    }
  }
#pragma unroll
  for (int j = 0; j < 4; ++j) partial[ty][tx * 4 + j] = csum[j];
  count = __reduce_add_sync(0xffffffffu, count);
  if (threadIdx.x % 32 == 0) warp_sparse[threadIdx.x / 32] = count;
  __syncthreads();
  if (threadIdx.x < kCols) {
    const int col = col0 + threadIdx.x;
    if (col < g.m) {
      float total = 0.f;
#pragma unroll
      for (int y = 0; y < 16; ++y) total += partial[y][threadIdx.x];
      col_sums[static_cast<long long>(h) * g.m + col] = total;
    }
  }
  if (g.sparsity && threadIdx.x == 0) {
    unsigned long long total = 0;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) total += warp_sparse[w];
    if (total > 0) atomicAdd(sparse + h, total);
  }
}

size_t AlignUp(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

int64_t ScoringRows(const ObservationArgs& a) { return a.m - a.query_begin; }

// Rows per tile: the smallest of 16, 32, 64 that holds all scoring rows, else 64.
int RowsPerThread(int64_t tau) { return tau <= 16 ? 1 : (tau <= 32 ? 2 : 4); }

// Splits of pass 1 (a function of the shape alone, so the workspace size can be computed first).
int64_t Splits(const ObservationArgs& a) {
  const int64_t tau = ScoringRows(a);
  if (tau <= 0) return 1;
  const int64_t rows = 16 * RowsPerThread(tau);
  const int64_t row_tiles = (tau + rows - 1) / rows;
  const int64_t keys = a.window > 0 ? std::min<int64_t>(a.m, a.window + rows - 1) : a.m;
  const int64_t key_tiles = (keys + kCols - 1) / kCols;
  const int64_t base = a.heads * row_tiles;
  if (base >= kTargetBlocks) return 1;
  const int64_t wanted = (kTargetBlocks + base - 1) / base;
  return std::clamp<int64_t>(std::min(wanted, key_tiles / kMinTilesPerSplit), 1, kMaxSplits);
}

bool Valid(const ObservationArgs& a) {
  if (a.heads < 1 || a.kv_heads < 1 || a.heads % a.kv_heads != 0) return false;
  if (a.heads > 65535) return false;  // a grid dimension
  if (a.m < 1 || a.m > kMaxLength || a.head_dim < 1 || a.head_dim > kMaxLength) return false;
  if (a.query_begin < 0 || a.query_begin > a.m) return false;
  if (a.window < 0) return false;
  if (!std::isfinite(a.scale)) return false;
  if (a.sparsity && !(a.threshold > 0 && a.threshold < 1)) return false;
  if (a.dtype != DType::kF32 && a.dtype != DType::kF16 && a.dtype != DType::kBF16) return false;
  if (a.q_head_stride < 0 || a.q_row_stride < 0 || a.k_head_stride < 0 || a.k_row_stride < 0) {
    return false;
  }
  return true;
}

template <typename T, int RT>
Error Launch(const Geometry& g, int64_t heads, int64_t splits, const void* q_raw, const void* k_raw,
             float* col_sums, unsigned long long* sparse, float* row_max, float* row_sum,
             float* part_max, float* part_sum, cudaStream_t stream) {
  const T* q = static_cast<const T*>(q_raw);
  const T* k = static_cast<const T*>(k_raw);
  const int64_t tau = g.m - g.row_begin;
  constexpr int R = 16 * RT;
  if (tau > 0) {
    const dim3 grid(static_cast<unsigned>((tau + R - 1) / R), static_cast<unsigned>(splits),
                    static_cast<unsigned>(heads));
    if (splits == 1) {
      RowStatsKernel<T, RT><<<grid, kThreads, 0, stream>>>(g, q, k, 1, row_max, row_sum);
    } else {
      RowStatsKernel<T, RT>
          <<<grid, kThreads, 0, stream>>>(g, q, k, static_cast<int>(splits), part_max, part_sum);
    }
    if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    if (splits > 1) {
      const int64_t n = heads * tau;
      CombineSplitsKernel<<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(
          static_cast<int>(heads), static_cast<int>(tau), static_cast<int>(splits), part_max,
          part_sum, row_max, row_sum);
      if (cudaError_t e = cudaGetLastError(); e != cudaSuccess) return e;
    }
  }
  const dim3 grid(static_cast<unsigned>((g.m + kCols - 1) / kCols), static_cast<unsigned>(heads));
  ColumnSumsKernel<T, RT>
      <<<grid, kThreads, 0, stream>>>(g, q, k, row_max, row_sum, col_sums, sparse);
  return cudaGetLastError();
}

template <typename T>
Error LaunchRows(int rt, const Geometry& g, int64_t heads, int64_t splits, const void* q,
                 const void* k, float* col_sums, unsigned long long* sparse, float* row_max,
                 float* row_sum, float* part_max, float* part_sum, cudaStream_t stream) {
  switch (rt) {
    case 1:
      return Launch<T, 1>(g, heads, splits, q, k, col_sums, sparse, row_max, row_sum, part_max,
                          part_sum, stream);
    case 2:
      return Launch<T, 2>(g, heads, splits, q, k, col_sums, sparse, row_max, row_sum, part_max,
                          part_sum, stream);
    default:
      return Launch<T, 4>(g, heads, splits, q, k, col_sums, sparse, row_max, row_sum, part_max,
                          part_sum, stream);
  }
}

}  // namespace

size_t ObservationWorkspaceBytes(const ObservationArgs& args) {
  if (!Valid(args)) return 0;
  const int64_t tau = ScoringRows(args);
  if (tau <= 0) return 0;
  const size_t stats = AlignUp(static_cast<size_t>(args.heads * tau) * sizeof(float));
  const int64_t splits = Splits(args);
  const size_t partials =
      splits > 1 ? AlignUp(static_cast<size_t>(args.heads * splits * tau) * sizeof(float)) : 0;
  return 2 * stats + 2 * partials;
}

int64_t ObservationCausalEntries(int64_t m, int64_t query_begin, int64_t window) {
  const int64_t begin = std::clamp<int64_t>(query_begin, 0, std::max<int64_t>(0, m));
  if (begin >= m) return 0;
  // Row i sees i + 1 keys, at most `window` of them when window > 0.
  auto triangle = [](int64_t a, int64_t b) {  // sum of (i + 1) for i in [a, b)
    return b <= a ? 0 : (b * (b + 1) - a * (a + 1)) / 2;
  };
  if (window <= 0) return triangle(begin, m);
  const int64_t split = std::clamp<int64_t>(window, begin, m);  // rows >= window see `window`
  return triangle(begin, split) + (m - split) * window;
}

Error ObserveLayer(const ObservationArgs& args, const void* q, const void* k, float* col_sums,
                   int64_t* sparse_counts, void* workspace, size_t workspace_bytes, Stream stream) {
  if (!Valid(args) || q == nullptr || k == nullptr || col_sums == nullptr ||
      (args.sparsity && sparse_counts == nullptr)) {
    return cudaErrorInvalidValue;
  }
  const size_t need = ObservationWorkspaceBytes(args);
  if (need > 0 && (workspace == nullptr || workspace_bytes < need)) return cudaErrorInvalidValue;
  auto* s = static_cast<cudaStream_t>(stream);

  const int64_t tau = ScoringRows(args);
  const int64_t splits = Splits(args);
  Geometry g;
  g.group = static_cast<int>(args.heads / args.kv_heads);
  g.m = static_cast<int>(args.m);
  g.d = static_cast<int>(args.head_dim);
  g.row_begin = static_cast<int>(args.query_begin);
  // A window of m or more hides nothing.
  g.window = args.window >= args.m ? 0 : static_cast<int>(args.window);
  g.q_rs = args.q_row_stride > 0 ? args.q_row_stride : args.head_dim;
  g.q_hs = args.q_head_stride > 0 ? args.q_head_stride : args.m * args.head_dim;
  g.k_rs = args.k_row_stride > 0 ? args.k_row_stride : args.head_dim;
  g.k_hs = args.k_head_stride > 0 ? args.k_head_stride : args.m * args.head_dim;
  g.scale = static_cast<float>(args.scale);
  g.sparsity = args.sparsity;
  // The CPU reference adds ln p to the float row max in float.
  g.ln_p = args.sparsity ? static_cast<float>(std::log(args.threshold)) : 0.f;

  float *row_max = nullptr, *row_sum = nullptr, *part_max = nullptr, *part_sum = nullptr;
  if (tau > 0) {
    auto* base = static_cast<char*>(workspace);
    const size_t stats = AlignUp(static_cast<size_t>(args.heads * tau) * sizeof(float));
    row_max = reinterpret_cast<float*>(base);
    row_sum = reinterpret_cast<float*>(base + stats);
    if (splits > 1) {
      const size_t partials =
          AlignUp(static_cast<size_t>(args.heads * splits * tau) * sizeof(float));
      part_max = reinterpret_cast<float*>(base + 2 * stats);
      part_sum = reinterpret_cast<float*>(base + 2 * stats + partials);
    }
  }
  auto* sparse = reinterpret_cast<unsigned long long*>(sparse_counts);
  if (args.sparsity) {
    if (cudaError_t e = cudaMemsetAsync(sparse, 0, args.heads * sizeof(int64_t), s);
        e != cudaSuccess) {
      return e;
    }
  }
  const int rt = RowsPerThread(tau);
  switch (args.dtype) {
    case DType::kF32:
      return LaunchRows<float>(rt, g, args.heads, splits, q, k, col_sums, sparse, row_max, row_sum,
                               part_max, part_sum, s);
    case DType::kF16:
      return LaunchRows<__half>(rt, g, args.heads, splits, q, k, col_sums, sparse, row_max, row_sum,
                                part_max, part_sum, s);
    case DType::kBF16:
      return LaunchRows<__nv_bfloat16>(rt, g, args.heads, splits, q, k, col_sums, sparse, row_max,
                                       row_sum, part_max, part_sum, s);
  }
  return cudaErrorInvalidValue;
}

}  // namespace vlc::kvcache::cuda
