// The paged KV-cache kernels (paged_ops.h). All three are bound by memory bandwidth: decode
// attention reads every cached K and V element once per call and does ~2 * group flops with it;
// append and gather only move rows. So the kernels are shaped around the loads:
//  - a token's K (or V) row of one KV head is head_dim contiguous elements, so a group of threads
//    reads it with one coalesced, 16-byte-per-thread access;
//  - pages are chased through the page table once per row, never per element;
//  - enough independent loads are in flight per thread (unrolled rows in decode, a few 16-byte
//    units per thread in the copies) to cover HBM latency at moderate occupancy.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>

#include "kvcache/cuda/paged_ops.h"

namespace vlc::kvcache::cuda {
namespace {

constexpr Error kInvalid = cudaErrorInvalidValue;
constexpr int kMaxGridYZ = 65535;

bool ValidLayout(const PagedLayout& layout) {
  const int dtype = static_cast<int>(layout.dtype);
  return layout.kv_heads >= 1 && layout.page_tokens >= 1 && layout.head_dim >= 1 && dtype >= 0 &&
         dtype <= static_cast<int>(DType::kBF16);
}

int ElementBytes(DType dtype) { return dtype == DType::kF32 ? 4 : 2; }

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// log2(x) when x is a power of two, else -1.
int Log2IfPow2(int64_t x) {
  if (x <= 0 || (x & (x - 1)) != 0) return -1;
  int s = 0;
  while ((int64_t{1} << s) < x) ++s;
  return s;
}

// Where rows live in the storage, counted in elements or in copy units (all offsets are whole
// rows, so any unit that divides a row's bytes divides them all).
struct PageGeometry {
  int64_t row = 0;   // head_dim
  int64_t head = 0;  // page_tokens * row: from one KV head's rows to the next
  int64_t half = 0;  // kv_heads * head: from a page's K to its V
  int64_t page = 0;  // 2 * half
  int64_t page_tokens = 0;
  int page_shift = -1;  // log2(page_tokens) when it is a power of two: shifts instead of divides

  // Offset of token t's K row for KV head h, through the page table `pages`; add `half` for V.
  __device__ __forceinline__ int64_t KeyRow(const int32_t* pages, int64_t t, int64_t h) const {
    int64_t slot, off;
    if (page_shift >= 0) {
      slot = t >> page_shift;
      off = t & (page_tokens - 1);
    } else {
      slot = t / page_tokens;
      off = t - slot * page_tokens;
    }
    return static_cast<int64_t>(pages[slot]) * page + h * head + off * row;
  }
};

PageGeometry Geometry(const PagedLayout& layout, int64_t row) {
  PageGeometry g;
  g.row = row;
  g.head = layout.page_tokens * row;
  g.half = layout.kv_heads * g.head;
  g.page = 2 * g.half;
  g.page_tokens = layout.page_tokens;
  g.page_shift = Log2IfPow2(layout.page_tokens);
  return g;
}

// The widest copy unit (16, 8, 4 or 2 bytes) that divides a row and every given byte offset.
int CopyUnitBytes(int64_t row_bytes, std::initializer_list<int64_t> offsets) {
  for (int unit : {16, 8, 4, 2}) {
    bool ok = row_bytes % unit == 0;
    for (int64_t o : offsets) ok = ok && o % unit == 0;
    if (ok) return unit;
  }
  return 0;  // odd bytes: cannot happen with 2- and 4-byte elements
}

int64_t Address(const void* p) { return static_cast<int64_t>(reinterpret_cast<uintptr_t>(p)); }

// ---- Append ----------------------------------------------------------------------------------

constexpr int kCopyThreads = 256;

// Grid (x: a slice of the longest sequence's units, y: sequence). Element e of a sequence is unit
// `col` of token i of KV head h, e = (h * tokens + i) * row_units + col: consecutive threads copy
// consecutive units of a row and consecutive rows of a head, which are contiguous within a page
// and, for the [kv_heads, t, head_dim] source, in the source too.
template <typename Unit>
__global__ void __launch_bounds__(kCopyThreads)
    AppendKernel(Unit* __restrict__ storage, const PageGeometry geo,
                 const PagedAppendSeq* __restrict__ seqs, const Unit* __restrict__ k,
                 const Unit* __restrict__ v, int64_t token_stride, int64_t head_stride,
                 int kv_heads) {
  const PagedAppendSeq seq = seqs[blockIdx.y];
  const uint32_t row_units = static_cast<uint32_t>(geo.row);
  const uint32_t tokens = static_cast<uint32_t>(seq.tokens);
  const uint32_t total = tokens * kv_heads * row_units;  // < 2^31, checked by the host
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    const uint32_t col = e % row_units;
    const uint32_t r = e / row_units;
    const uint32_t i = r % tokens;
    const uint32_t h = r / tokens;
    const int64_t src = (seq.src + i) * token_stride + h * head_stride + col;
    const int64_t dst = geo.KeyRow(seq.pages, seq.start + i, h) + col;
    storage[dst] = k[src];
    storage[dst + geo.half] = v[src];
  }
}

template <typename Unit>
Error LaunchAppend(void* storage, const PagedLayout& layout, int unit_bytes,
                   const PagedAppendSeq* seqs, int batch, int64_t per_seq_units, const void* k,
                   const void* v, int64_t token_stride, int64_t head_stride, cudaStream_t stream) {
  const int64_t per_unit = unit_bytes / ElementBytes(layout.dtype);  // elements per unit
  const PageGeometry geo = Geometry(layout, layout.head_dim / per_unit);
  // A slice per block; a grid-stride loop covers the rest of a long prefill.
  const int64_t blocks = std::min<int64_t>(CeilDiv(per_seq_units, kCopyThreads), 1 << 16);
  AppendKernel<Unit><<<dim3(static_cast<unsigned>(blocks), batch), kCopyThreads, 0, stream>>>(
      static_cast<Unit*>(storage), geo, seqs, static_cast<const Unit*>(k),
      static_cast<const Unit*>(v), token_stride / per_unit, head_stride / per_unit,
      layout.kv_heads);
  return cudaGetLastError();
}

// ---- Gather ----------------------------------------------------------------------------------

constexpr int kGatherUnitsPerThread = 4;  // of K and of V: 8 x 16 bytes in flight per thread

// Grid (x: KV head, y: layer). The block walks the kept tokens of its head in order, a pass of
// rows at a time: every thread loads its units of K and V of the pass's source rows, the block
// synchronises, then they are stored to the destination rows. A pass writes rows [i0, i0 + R)
// and later passes read rows positions[i] >= i >= i0 + R, so in place no read ever sees a row
// that was already overwritten. A row wider than a pass is moved in column slices.
template <typename Unit>
__global__ void __launch_bounds__(kCopyThreads)
    GatherKernel(Unit* __restrict__ storage, const PageGeometry geo,
                 const PagedGatherLayer* __restrict__ layers) {
  const PagedGatherLayer layer = layers[blockIdx.y];
  const int64_t h = blockIdx.x;
  const int64_t* pos = layer.positions + h * layer.keep;
  const bool in_place = layer.dst_pages == layer.src_pages;
  constexpr int kSlots = kCopyThreads * kGatherUnitsPerThread;
  const int64_t cols = geo.row < kSlots ? geo.row : kSlots;  // units of a row per pass
  const int64_t rows = kSlots / cols;                        // rows per pass, >= 1
  for (int64_t i0 = 0; i0 < layer.keep; i0 += rows) {
    for (int64_t c0 = 0; c0 < geo.row; c0 += cols) {
      Unit kbuf[kGatherUnitsPerThread], vbuf[kGatherUnitsPerThread];
      int64_t dst[kGatherUnitsPerThread];
#pragma unroll
      for (int j = 0; j < kGatherUnitsPerThread; ++j) {
        const int64_t e = threadIdx.x + j * kCopyThreads;
        const int64_t i = i0 + e / cols, c = c0 + e % cols;
        dst[j] = -1;
        if (e / cols >= rows || i >= layer.keep || c >= geo.row) continue;
        const int64_t p = pos[i];
        if (in_place && p == i) continue;  // tokens before the first eviction stay where they are
        const int64_t src = geo.KeyRow(layer.src_pages, p, h) + c;
        kbuf[j] = storage[src];
        vbuf[j] = storage[src + geo.half];
        dst[j] = geo.KeyRow(layer.dst_pages, i, h) + c;
      }
      __syncthreads();  // every read of the pass precedes every write of it
#pragma unroll
      for (int j = 0; j < kGatherUnitsPerThread; ++j) {
        if (dst[j] < 0) continue;
        storage[dst[j]] = kbuf[j];
        storage[dst[j] + geo.half] = vbuf[j];
      }
      __syncthreads();  // and every write precedes the next pass's reads
    }
  }
}

template <typename Unit>
Error LaunchGather(void* storage, const PagedLayout& layout, int unit_bytes,
                   const PagedGatherLayer* layers, int num_layers, cudaStream_t stream) {
  const int64_t per_unit = unit_bytes / ElementBytes(layout.dtype);
  const PageGeometry geo = Geometry(layout, layout.head_dim / per_unit);
  GatherKernel<Unit><<<dim3(layout.kv_heads, num_layers), kCopyThreads, 0, stream>>>(
      static_cast<Unit*>(storage), geo, layers);
  return cudaGetLastError();
}

// ---- Decode attention ------------------------------------------------------------------------
//
// Block = (chunk of the sequence, KV head x group tile, sequence), 128 threads. A row (one
// token's K or V for the block's KV head) is read by `txp` threads, 8 elements each (one 16-byte
// load for f16/bf16, two for f32); txp = head_dim / 8 rounded up to a power of two (<= 32, so a
// row is inside a warp and dot products reduce with shuffles), and the block's 128 / txp row
// groups take consecutive tokens, so a warp reads contiguous rows of a page. Each row is loaded
// once and used for all GT query heads of the tile (GQA), whose q and accumulators sit in
// registers. Each row group keeps an online softmax (running max m, sum l, unnormalised acc) over
// its tokens, in the log2 domain (q is pre-scaled by scale * log2(e), so exp2f); at the end the
// row groups merge through shared memory. A single-chunk sequence writes its output directly;
// otherwise each chunk writes (m, l, acc) to the workspace and CombineKernel merges the chunks.

constexpr int kDecodeThreads = 128;
constexpr int kMaxHeadDim = 256;
constexpr int64_t kTargetBlocks = 1024;   // ~8 blocks per SM of an H100 (132 SMs)
constexpr int64_t kMinChunkTokens = 256;  // a chunk reads >= 128 KiB at head_dim 128, f16
constexpr int64_t kChunkAlign = 64;       // chunks are whole steps of the row groups
constexpr int kMaxChunks = 1024;          // bounds the combine's shared memory

// Query heads per block: GQA groups up to 8 share one block (one read of K/V); larger groups are
// split into tiles of 8, each its own block.
int GroupTile(int group) { return group <= 1 ? 1 : group <= 2 ? 2 : group <= 4 ? 4 : 8; }

// Rows each row group loads before using any: more loads in flight, bounded by registers.
template <int GT>
constexpr int Unroll() {
  return GT >= 8 ? 1 : GT >= 4 ? 2 : 4;
}

// The span a sequence attends to, [first, length), and how many chunks it is cut into. The last
// chunk runs to the end, so a sequence longer than the plan assumed is still covered.
struct Span {
  int64_t first = 0, length = 0;
  int chunks = 1;
};

__host__ __device__ inline Span AttendedSpan(int64_t length, int64_t window, int64_t chunk_tokens,
                                             int max_chunks) {
  Span s;
  if (length <= 0) return s;  // nothing to attend to: one empty chunk writes zeros
  const int64_t n = window > 0 && window < length ? window : length;
  s.first = length - n;
  s.length = length;
  const int64_t c = (n + chunk_tokens - 1) / chunk_tokens;
  s.chunks = c < max_chunks ? static_cast<int>(c) : max_chunks;
  return s;
}

struct DecodeParams {
  const void* storage;
  PageGeometry geo;  // in elements
  int kv_heads, head_dim, heads, group, tiles, txp;
  const PagedSeqView* seqs;
  const void* q;
  void* out;
  float scale_log2;  // scale * log2(e)
  int64_t window, chunk_tokens;
  int max_chunks;
  float* ws_acc;  // [batch, heads, max_chunks, head_dim]
  float* ws_ml;   // [batch, heads, max_chunks, 2]: (max, sum), log2 domain
};

__device__ __forceinline__ float ToFloat(float x) { return x; }
__device__ __forceinline__ float ToFloat(__half x) { return __half2float(x); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T FromFloat(float x);
template <>
__device__ __forceinline__ float FromFloat<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float x) {
  return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// Eight consecutive elements of a row, kept as raw 16-byte words until used (half the registers
// of floats for f16/bf16). Rows start 16-byte aligned: head_dim % 8 == 0 and aligned storage.
template <typename T>
struct Vec8 {
  static constexpr int kWords = sizeof(T) / 2;  // uint4's: 2 for f32, 1 for f16/bf16
  uint4 w[kWords];

  __device__ __forceinline__ void Load(const T* p) {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = __ldg(reinterpret_cast<const uint4*>(p) + i);
  }
  __device__ __forceinline__ void Zero() {
#pragma unroll
    for (int i = 0; i < kWords; ++i) w[i] = make_uint4(0, 0, 0, 0);
  }
  __device__ __forceinline__ void ToFloats(float (&x)[8]) const;
};

template <>
__device__ __forceinline__ void Vec8<float>::ToFloats(float (&x)[8]) const {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    x[4 * i + 0] = __uint_as_float(w[i].x);
    x[4 * i + 1] = __uint_as_float(w[i].y);
    x[4 * i + 2] = __uint_as_float(w[i].z);
    x[4 * i + 3] = __uint_as_float(w[i].w);
  }
}

__device__ __forceinline__ float2 Half2ToFloat2(uint32_t u) {
  __half2 h;
  static_assert(sizeof(h) == sizeof(u), "half2 is 4 bytes");
  memcpy(&h, &u, sizeof(u));
  return __half22float2(h);
}

template <>
__device__ __forceinline__ void Vec8<__half>::ToFloats(float (&x)[8]) const {
  const uint32_t u[4] = {w[0].x, w[0].y, w[0].z, w[0].w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = Half2ToFloat2(u[i]);
    x[2 * i] = f.x;
    x[2 * i + 1] = f.y;
  }
}

// bf16 is the top half of a float32: widening is a shift.
template <>
__device__ __forceinline__ void Vec8<__nv_bfloat16>::ToFloats(float (&x)[8]) const {
  const uint32_t u[4] = {w[0].x, w[0].y, w[0].z, w[0].w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    x[2 * i] = __uint_as_float(u[i] << 16);
    x[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}

// Sum over the txp lanes of a row group (aligned groups of a power of two lanes in one warp).
// Every lane of the warp must call it.
__device__ __forceinline__ float RowGroupSum(float x, int txp) {
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) {
    if (o < txp) x += __shfl_xor_sync(0xffffffffu, x, o);
  }
  return x;
}

template <typename T, int GT>
__global__ void __launch_bounds__(kDecodeThreads) DecodeChunkKernel(const DecodeParams p) {
  constexpr int U = Unroll<GT>();
  constexpr float kNegInf = -INFINITY;
  const int chunk = blockIdx.x;
  const int kvh = blockIdx.y / p.tiles, tile = blockIdx.y % p.tiles;
  const int b = blockIdx.z;
  const PagedSeqView seq = p.seqs[b];
  const Span span = AttendedSpan(seq.length, p.window, p.chunk_tokens, p.max_chunks);
  if (chunk >= span.chunks) return;  // a shorter sequence of the batch
  const int64_t t0 = span.first + chunk * p.chunk_tokens;
  const int64_t t1 = chunk == span.chunks - 1 ? span.length : t0 + p.chunk_tokens;

  const int d = p.head_dim, txp = p.txp;
  const int tx = threadIdx.x % txp, ty = threadIdx.x / txp, rows = kDecodeThreads / txp;
  const bool lane_active = tx * 8 < d;  // txp is rounded up: the extra lanes hold zeros
  const int g_count = min(GT, p.group - tile * GT);
  const int head0 = kvh * p.group + tile * GT;  // first query head of the tile

  float q[GT][8];
  {
    const T* qb = static_cast<const T*>(p.q) + (static_cast<int64_t>(b) * p.heads + head0) * d;
#pragma unroll
    for (int g = 0; g < GT; ++g) {
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        q[g][i] = g < g_count && lane_active ? ToFloat(qb[g * d + tx * 8 + i]) * p.scale_log2 : 0.f;
      }
    }
  }

  float m[GT], l[GT], acc[GT][8];
#pragma unroll
  for (int g = 0; g < GT; ++g) {
    m[g] = kNegInf;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }

  const T* base = static_cast<const T*>(p.storage) + tx * 8;
  for (int64_t step = t0; step < t1; step += rows * U) {
    // Issue all loads of the step first (K and V of U rows), then compute.
    Vec8<T> kr[U], vr[U];
    bool valid[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int64_t t = step + u * rows + ty;
      valid[u] = t < t1;
      if (valid[u] && lane_active) {
        const int64_t row = p.geo.KeyRow(seq.pages, t, kvh);
        kr[u].Load(base + row);
        vr[u].Load(base + row + p.geo.half);
      } else {
        kr[u].Zero();
        vr[u].Zero();
      }
    }
    float s[U][GT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      float k[8];
      kr[u].ToFloats(k);
#pragma unroll
      for (int g = 0; g < GT; ++g) {
        float dot = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) dot = fmaf(q[g][i], k[i], dot);
        dot = RowGroupSum(dot, txp);
        s[u][g] = valid[u] ? dot : kNegInf;
      }
    }
    float vf[U][8];
#pragma unroll
    for (int u = 0; u < U; ++u) vr[u].ToFloats(vf[u]);
#pragma unroll
    for (int g = 0; g < GT; ++g) {
      float mx = m[g];
#pragma unroll
      for (int u = 0; u < U; ++u) mx = fmaxf(mx, s[u][g]);
      if (mx == kNegInf) continue;           // this row group has had no token yet
      const float alpha = exp2f(m[g] - mx);  // 0 while m is still -inf
      l[g] *= alpha;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= alpha;
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const float pr = exp2f(s[u][g] - mx);  // 0 for a row past the chunk's end
        l[g] += pr;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(pr, vf[u][i], acc[g][i]);
      }
      m[g] = mx;
    }
  }

  // Merge the row groups: shared [rows][GT] maxima and sums, then [rows][GT][d] accumulators.
  extern __shared__ float smem[];
  float* sm_m = smem;
  float* sm_l = sm_m + rows * GT;
  float* sm_acc = sm_l + rows * GT;
#pragma unroll
  for (int g = 0; g < GT; ++g) {
    if (tx == 0) {
      sm_m[ty * GT + g] = m[g];
      sm_l[ty * GT + g] = l[g];
    }
    if (lane_active) {
#pragma unroll
      for (int i = 0; i < 8; ++i) sm_acc[(ty * GT + g) * d + tx * 8 + i] = acc[g][i];
    }
  }
  __syncthreads();

  const int64_t out_row0 = static_cast<int64_t>(b) * p.heads + head0;  // [batch, heads] index
  for (int e = threadIdx.x; e < g_count * d; e += kDecodeThreads) {
    const int g = e / d, i = e % d;
    float mx = kNegInf;
    for (int y = 0; y < rows; ++y) mx = fmaxf(mx, sm_m[y * GT + g]);
    float sum = 0.f, a = 0.f;
    if (mx != kNegInf) {
      for (int y = 0; y < rows; ++y) {
        const float w = exp2f(sm_m[y * GT + g] - mx);
        sum += w * sm_l[y * GT + g];
        a += w * sm_acc[(y * GT + g) * d + i];
      }
    }
    if (span.chunks == 1) {
      static_cast<T*>(p.out)[(out_row0 + g) * d + i] = FromFloat<T>(sum > 0.f ? a / sum : 0.f);
    } else {
      const int64_t slot = (out_row0 + g) * p.max_chunks + chunk;
      p.ws_acc[slot * d + i] = a;
      if (i == 0) {
        p.ws_ml[2 * slot] = mx;
        p.ws_ml[2 * slot + 1] = sum;
      }
    }
  }
}

constexpr int kCombineThreads = 128;

// Block-wide max or sum over kCombineThreads threads; `red` holds one float per warp.
template <bool kMax>
__device__ float BlockReduce(float x, float* red) {
#pragma unroll
  for (int o = 16; o >= 1; o >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, x, o);
    x = kMax ? fmaxf(x, y) : x + y;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr int kWarps = kCombineThreads / 32;
  __syncthreads();  // `red` may still be read by a previous reduction
  if (lane == 0) red[warp] = x;
  __syncthreads();
  x = red[0];
#pragma unroll
  for (int w = 1; w < kWarps; ++w) x = kMax ? fmaxf(x, red[w]) : x + red[w];
  return x;
}

// One block per (sequence, query head) that was split: out = sum_c w_c acc_c / sum_c w_c l_c with
// w_c = exp2(m_c - max_c m_c). Every chunk holds at least one token, so the sum is >= 1.
template <typename T>
__global__ void __launch_bounds__(kCombineThreads) CombineKernel(const DecodeParams p) {
  const int64_t bh = blockIdx.x;
  const int b = static_cast<int>(bh / p.heads);
  const PagedSeqView seq = p.seqs[b];
  const int chunks = AttendedSpan(seq.length, p.window, p.chunk_tokens, p.max_chunks).chunks;
  if (chunks <= 1) return;            // written directly by DecodeChunkKernel
  extern __shared__ float weights[];  // [max_chunks]
  __shared__ float red[kCombineThreads / 32];
  const float* ml = p.ws_ml + bh * p.max_chunks * 2;
  float mx = -INFINITY;
  for (int c = threadIdx.x; c < chunks; c += kCombineThreads) mx = fmaxf(mx, ml[2 * c]);
  mx = BlockReduce<true>(mx, red);
  float sum = 0.f;
  for (int c = threadIdx.x; c < chunks; c += kCombineThreads) {
    const float w = exp2f(ml[2 * c] - mx);
    weights[c] = w;
    sum += w * ml[2 * c + 1];
  }
  sum = BlockReduce<false>(sum, red);  // its barriers also publish `weights`
  const float inv = 1.f / sum;
  const int d = p.head_dim;
  const float* acc = p.ws_acc + bh * p.max_chunks * d;
  for (int i = threadIdx.x; i < d; i += kCombineThreads) {
    float a = 0.f;
    for (int c = 0; c < chunks; ++c) a = fmaf(weights[c], acc[c * d + i], a);
    static_cast<T*>(p.out)[bh * d + i] = FromFloat<T>(a * inv);
  }
}

template <typename T, int GT>
Error LaunchDecodeTile(const DecodeParams& p, int batch, cudaStream_t stream) {
  const int rows = kDecodeThreads / p.txp;
  const size_t smem = sizeof(float) * rows * GT * (p.head_dim + 2);  // <= 40 KiB: no opt-in
  const dim3 grid(p.max_chunks, p.kv_heads * p.tiles, batch);
  DecodeChunkKernel<T, GT><<<grid, kDecodeThreads, smem, stream>>>(p);
  Error err = cudaGetLastError();
  if (err != cudaSuccess || p.max_chunks == 1) return err;
  CombineKernel<T><<<static_cast<unsigned>(static_cast<int64_t>(batch) * p.heads), kCombineThreads,
                     sizeof(float) * p.max_chunks, stream>>>(p);
  return cudaGetLastError();
}

template <typename T>
Error LaunchDecode(const DecodeParams& p, int batch, cudaStream_t stream) {
  switch (GroupTile(p.group)) {
    case 1:
      return LaunchDecodeTile<T, 1>(p, batch, stream);
    case 2:
      return LaunchDecodeTile<T, 2>(p, batch, stream);
    case 4:
      return LaunchDecodeTile<T, 4>(p, batch, stream);
    default:
      return LaunchDecodeTile<T, 8>(p, batch, stream);
  }
}

}  // namespace

Error PagedAppend(void* storage, const PagedLayout& layout, const PagedAppendSeq* seqs, int batch,
                  int64_t max_tokens, const void* k, const void* v, int64_t token_stride,
                  int64_t head_stride, Stream stream) {
  if (!ValidLayout(layout) || batch < 0 || batch > kMaxGridYZ || max_tokens < 0 ||
      token_stride < 0 || head_stride < 0) {
    return kInvalid;
  }
  if (batch == 0 || max_tokens == 0) return cudaSuccess;
  if (storage == nullptr || seqs == nullptr || k == nullptr || v == nullptr) return kInvalid;
  const int es = ElementBytes(layout.dtype);
  const int64_t row_bytes = int64_t{layout.head_dim} * es;
  const int unit = CopyUnitBytes(
      row_bytes, {Address(storage), Address(k), Address(v), token_stride * es, head_stride * es});
  if (unit == 0) return kInvalid;  // misaligned pointers
  const int64_t per_seq_units = max_tokens * layout.kv_heads * (row_bytes / unit);
  if (per_seq_units >= (int64_t{1} << 31)) return kInvalid;  // 32-bit indexing in the kernel
  const auto s = static_cast<cudaStream_t>(stream);
  switch (unit) {
    case 16:
      return LaunchAppend<uint4>(storage, layout, unit, seqs, batch, per_seq_units, k, v,
                                 token_stride, head_stride, s);
    case 8:
      return LaunchAppend<uint2>(storage, layout, unit, seqs, batch, per_seq_units, k, v,
                                 token_stride, head_stride, s);
    case 4:
      return LaunchAppend<uint32_t>(storage, layout, unit, seqs, batch, per_seq_units, k, v,
                                    token_stride, head_stride, s);
    default:
      return LaunchAppend<uint16_t>(storage, layout, unit, seqs, batch, per_seq_units, k, v,
                                    token_stride, head_stride, s);
  }
}

Error PagedGather(void* storage, const PagedLayout& layout, const PagedGatherLayer* layers,
                  int num_layers, Stream stream) {
  if (!ValidLayout(layout) || num_layers < 0 || num_layers > kMaxGridYZ) return kInvalid;
  if (num_layers == 0) return cudaSuccess;
  if (storage == nullptr || layers == nullptr) return kInvalid;
  const int64_t row_bytes = int64_t{layout.head_dim} * ElementBytes(layout.dtype);
  const int unit = CopyUnitBytes(row_bytes, {Address(storage)});
  if (unit == 0) return kInvalid;
  const auto s = static_cast<cudaStream_t>(stream);
  switch (unit) {
    case 16:
      return LaunchGather<uint4>(storage, layout, unit, layers, num_layers, s);
    case 8:
      return LaunchGather<uint2>(storage, layout, unit, layers, num_layers, s);
    case 4:
      return LaunchGather<uint32_t>(storage, layout, unit, layers, num_layers, s);
    default:
      return LaunchGather<uint16_t>(storage, layout, unit, layers, num_layers, s);
  }
}

PagedDecodePlan PlanPagedDecode(const PagedLayout& layout, int batch, int heads, int64_t max_length,
                                int64_t window, int64_t chunk_tokens) {
  PagedDecodePlan plan;
  int64_t n = window > 0 ? std::min(max_length, window) : max_length;
  n = std::max<int64_t>(n, 1);
  if (chunk_tokens > 0) {
    plan.chunk_tokens = chunk_tokens;
  } else {
    const int group = layout.kv_heads > 0 && heads > 0 ? std::max(heads / layout.kv_heads, 1) : 1;
    const int64_t tiles = CeilDiv(group, GroupTile(group));
    const int64_t units =
        std::max<int64_t>(int64_t{batch} * std::max(layout.kv_heads, 1) * tiles, 1);
    const int64_t wanted = CeilDiv(kTargetBlocks, units);
    const int64_t by_length = CeilDiv(n, kMinChunkTokens);
    const int64_t chunks = std::clamp<int64_t>(std::min(wanted, by_length), 1, kMaxChunks);
    plan.chunk_tokens = CeilDiv(CeilDiv(n, chunks), kChunkAlign) * kChunkAlign;
  }
  plan.max_chunks = static_cast<int>(std::min<int64_t>(CeilDiv(n, plan.chunk_tokens), kMaxChunks));
  if (plan.max_chunks > 1) {
    plan.workspace_bytes = sizeof(float) * static_cast<size_t>(std::max(batch, 0)) *
                           static_cast<size_t>(std::max(heads, 0)) * plan.max_chunks *
                           (static_cast<size_t>(std::max(layout.head_dim, 0)) + 2);
  }
  return plan;
}

size_t PagedDecodeWorkspaceBytes(const PagedLayout& layout, int batch, int heads,
                                 int64_t max_length, int64_t window, int64_t chunk_tokens) {
  return PlanPagedDecode(layout, batch, heads, max_length, window, chunk_tokens).workspace_bytes;
}

Error PagedDecodeAttention(const void* storage, const PagedLayout& layout, const PagedSeqView* seqs,
                           int batch, int64_t max_length, const void* q, int heads, double scale,
                           int64_t window, void* out, void* workspace, size_t workspace_bytes,
                           Stream stream, int64_t chunk_tokens) {
  const int d = layout.head_dim;
  if (!ValidLayout(layout) || d % 8 != 0 || d > kMaxHeadDim || batch < 0 || batch > kMaxGridYZ ||
      heads <= 0 || heads % layout.kv_heads != 0 || !std::isfinite(scale) || chunk_tokens < 0) {
    return kInvalid;
  }
  if (batch == 0) return cudaSuccess;
  if (storage == nullptr || seqs == nullptr || q == nullptr || out == nullptr ||
      Address(storage) % 16 != 0) {
    return kInvalid;
  }
  const PagedDecodePlan plan =
      PlanPagedDecode(layout, batch, heads, max_length, window, chunk_tokens);
  if (plan.workspace_bytes > 0 &&
      (workspace == nullptr || workspace_bytes < plan.workspace_bytes)) {
    return kInvalid;
  }
  DecodeParams p{};
  p.storage = storage;
  p.geo = Geometry(layout, d);
  p.kv_heads = layout.kv_heads;
  p.head_dim = d;
  p.heads = heads;
  p.group = heads / layout.kv_heads;
  p.tiles = static_cast<int>(CeilDiv(p.group, GroupTile(p.group)));
  if (int64_t{p.kv_heads} * p.tiles > kMaxGridYZ) return kInvalid;
  p.txp = 1;
  while (p.txp * 8 < d) p.txp *= 2;
  p.seqs = seqs;
  p.q = q;
  p.out = out;
  p.scale_log2 = static_cast<float>(scale * 1.4426950408889634);
  p.window = window;
  p.chunk_tokens = plan.chunk_tokens;
  p.max_chunks = plan.max_chunks;
  if (plan.max_chunks > 1) {
    p.ws_acc = static_cast<float*>(workspace);
    p.ws_ml = p.ws_acc + static_cast<size_t>(batch) * heads * plan.max_chunks * d;
  }
  const auto s = static_cast<cudaStream_t>(stream);
  switch (layout.dtype) {
    case DType::kF32:
      return LaunchDecode<float>(p, batch, s);
    case DType::kF16:
      return LaunchDecode<__half>(p, batch, s);
    default:
      return LaunchDecode<__nv_bfloat16>(p, batch, s);
  }
}

}  // namespace vlc::kvcache::cuda
