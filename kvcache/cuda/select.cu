#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cub/block/block_scan.cuh>
#include <limits>

#include "kvcache/cuda/select.h"

namespace vlc::kvcache::cuda {
namespace {

constexpr int64_t kIntMax = std::numeric_limits<int32_t>::max();
// Lengths up to 2^30 keep every position (and a step past the end) inside int.
constexpr int64_t kMaxLength = int64_t{1} << 30;
constexpr int kElementwiseThreads = 256;
constexpr int64_t kMaxElementwiseBlocks = 65535;

constexpr int kSelectThreads = 512;
constexpr int kLoads = 4;  // positions per thread per step: loads in flight
constexpr int kDigitBits = 8;
constexpr int kBins = 1 << kDigitBits;
constexpr unsigned kNoBin = 0xffffffffu;

unsigned ElementwiseBlocks(int64_t n) {
  return static_cast<unsigned>(std::clamp<int64_t>(
      (n + kElementwiseThreads - 1) / kElementwiseThreads, 1, kMaxElementwiseBlocks));
}

__global__ void GroupMeanKernel(const float* __restrict__ in, int group, long long m, long long n,
                                float* __restrict__ out) {
  for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long kv = idx / m, j = idx % m;
    const float* first = in + kv * group * m + j;
    float sum = 0.f;  // in head order, then divided: what the CPU's sum(1) / G does
    for (int g = 0; g < group; ++g) sum += first[g * m];
    out[idx] = sum / static_cast<float>(group);
  }
}

__global__ void AvgPoolKernel(const float* __restrict__ in, long long m, int kernel, long long n,
                              float* __restrict__ out) {
  const int pad = kernel / 2;
  for (long long idx = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<long long>(gridDim.x) * blockDim.x) {
    const long long row = idx / m, j = idx % m;
    const float* x = in + row * m;
    const long long lo = j - pad < 0 ? 0 : j - pad;
    const long long hi = j + pad + 1 > m ? m : j + pad + 1;
    float sum = 0.f;  // left to right; padded zeros add nothing but count in the divisor
    for (long long i = lo; i < hi; ++i) sum += x[i];
    out[idx] = sum / static_cast<float>(kernel);
  }
}

// Scores as unsigned keys in the CPU's order: NaN reads as -inf, -0 as +0, and then the float
// order is the unsigned order of the bits (negatives flipped, positives above them).
__device__ __forceinline__ unsigned OrderedKey(float x) {
  constexpr unsigned kNegInfKey = ~0xff800000u, kZeroKey = 0x80000000u;
  if (isnan(x)) return kNegInfKey;
  if (x == 0.f) return kZeroKey;
  const unsigned u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// One block per KV head (blockIdx.x). See select.h for the algorithm.
__global__ void __launch_bounds__(kSelectThreads)
    TopKWithRecentKernel(const float* __restrict__ scores, int m, long long stride, int keep,
                         int recent, long long* __restrict__ positions) {
  using Scan32 = cub::BlockScan<unsigned, kSelectThreads>;
  using Scan64 = cub::BlockScan<unsigned long long, kSelectThreads>;
  __shared__ union {
    typename Scan32::TempStorage s32;
    typename Scan64::TempStorage s64;
  } temp;
  __shared__ unsigned hist[kBins];
  __shared__ unsigned chosen_digit, chosen_need;
  const int tid = threadIdx.x, lane = tid % 32;
  const float* row = scores + blockIdx.x * stride;
  long long* out = positions + static_cast<long long>(blockIdx.x) * keep;
  const int prefix = m - recent, picks = keep - recent;
  for (int i = tid; i < recent; i += kSelectThreads) out[picks + i] = prefix + i;
  if (picks == 0) return;  // uniform over the block

  // Radix select, most significant digit first. Invariant: the positions whose key agrees with
  // `want` on the bits of `mask` (the candidates) hold at least `need` keys, and every key above
  // the candidates is taken.
  unsigned want = 0, mask = 0, need = static_cast<unsigned>(picks);
  for (int shift = 32 - kDigitBits; shift >= 0; shift -= kDigitBits) {
    for (int b = tid; b < kBins; b += kSelectThreads) hist[b] = 0;
    __syncthreads();
    for (int base = 0; base < prefix; base += kSelectThreads * kLoads) {
      unsigned key[kLoads];
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        const int p = base + u * kSelectThreads + tid;
        key[u] = p < prefix ? OrderedKey(row[p]) : 0u;
      }
#pragma unroll
      for (int u = 0; u < kLoads; ++u) {
        const int p = base + u * kSelectThreads + tid;
        const unsigned bin =
            (p < prefix && (key[u] & mask) == want) ? (key[u] >> shift) & (kBins - 1) : kNoBin;
        // One shared atomic per distinct bin in the warp: equal scores do not serialise.
        const unsigned peers = __match_any_sync(0xffffffffu, bin);
        if (bin != kNoBin && lane == __ffs(peers) - 1) atomicAdd(&hist[bin], __popc(peers));
      }
    }
    __syncthreads();
    // Thread t holds bin kBins - 1 - t: the inclusive sum counts the candidates at or above it.
    const unsigned count = tid < kBins ? hist[kBins - 1 - tid] : 0u;
    unsigned at_or_above = 0;
    Scan32(temp.s32).InclusiveSum(count, at_or_above);
    if (tid < kBins && at_or_above >= need && at_or_above - count < need) {
      chosen_digit = static_cast<unsigned>(kBins - 1 - tid);
      chosen_need = need - (at_or_above - count);
    }
    __syncthreads();
    want |= chosen_digit << shift;
    mask |= static_cast<unsigned>(kBins - 1) << shift;
    need = chosen_need;
    __syncthreads();
  }

  // `want` is the key of the picks-th highest score T; `need` >= 1 of its ties are taken, the
  // lowest positions first. One pass in position order: a position's output slot is the number
  // of taken positions before it, (above T before it) + min(ties before it, need), counted by a
  // block scan of (above << 32 | tie) flags.
  unsigned long long carry = 0;
  for (int base = 0; base < prefix; base += kSelectThreads * kLoads) {
    unsigned long long flag[kLoads], before[kLoads], total = 0;
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      const int p = base + tid * kLoads + u;
      flag[u] = 0;
      if (p < prefix) {
        const unsigned key = OrderedKey(row[p]);
        flag[u] = key > want ? (1ull << 32) : (key == want ? 1ull : 0ull);
      }
    }
    Scan64(temp.s64).ExclusiveSum(flag, before, total);
#pragma unroll
    for (int u = 0; u < kLoads; ++u) {
      if (flag[u] == 0) continue;
      const unsigned long long seen = carry + before[u];
      const unsigned long long above = seen >> 32, ties = seen & 0xffffffffull;
      const int p = base + tid * kLoads + u;
      if (flag[u] >> 32) {
        out[above + (ties < need ? ties : need)] = p;
      } else if (ties < need) {
        out[above + ties] = p;
      }
    }
    carry += total;
    __syncthreads();  // before the scan storage is reused
  }
}

}  // namespace

Error GroupMean(const float* head_scores, int64_t heads, int64_t kv_heads, int64_t m, float* out,
                Stream stream) {
  if (head_scores == nullptr || out == nullptr || heads < 1 || kv_heads < 1 ||
      heads % kv_heads != 0 || heads / kv_heads > kIntMax || m < 1) {
    return cudaErrorInvalidValue;
  }
  const int64_t n = kv_heads * m;
  GroupMeanKernel<<<ElementwiseBlocks(n), kElementwiseThreads, 0,
                    static_cast<cudaStream_t>(stream)>>>(
      head_scores, static_cast<int>(heads / kv_heads), m, n, out);
  return cudaGetLastError();
}

Error AvgPool1d(const float* scores, int64_t rows, int64_t m, int kernel, float* out,
                Stream stream) {
  if (scores == nullptr || out == nullptr || rows < 1 || m < 1 || kernel < 1 || kernel % 2 == 0) {
    return cudaErrorInvalidValue;
  }
  const int64_t n = rows * m;
  // Each output reads its neighbours' inputs, so the two must not overlap.
  if (out < scores + n && scores < out + n) return cudaErrorInvalidValue;
  AvgPoolKernel<<<ElementwiseBlocks(n), kElementwiseThreads, 0,
                  static_cast<cudaStream_t>(stream)>>>(scores, m, kernel, n, out);
  return cudaGetLastError();
}

size_t TopKWithRecentWorkspaceBytes(int64_t kv_heads, int64_t m, int64_t keep) { return 0; }

Error TopKWithRecent(const float* scores, int64_t kv_heads, int64_t m, int64_t score_stride,
                     int64_t keep, int64_t recent, int64_t* positions, void* workspace,
                     size_t workspace_bytes, Stream stream) {
  if (kv_heads < 1 || kv_heads > kIntMax || m < 1 || m > kMaxLength) return cudaErrorInvalidValue;
  if (!(0 <= recent && recent <= keep && keep <= m)) return cudaErrorInvalidValue;
  const int64_t stride = score_stride == 0 ? m : score_stride;
  if (stride < m) return cudaErrorInvalidValue;
  if (keep == 0) return cudaSuccess;
  if (scores == nullptr || positions == nullptr) return cudaErrorInvalidValue;
  TopKWithRecentKernel<<<static_cast<unsigned>(kv_heads), kSelectThreads, 0,
                         static_cast<cudaStream_t>(stream)>>>(
      scores, static_cast<int>(m), stride, static_cast<int>(keep), static_cast<int>(recent),
      reinterpret_cast<long long*>(positions));
  return cudaGetLastError();
}

}  // namespace vlc::kvcache::cuda
