#include "engine/cpu_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>

namespace vlc::engine {
namespace {

// The two instruction sets, as the kernel below needs them: a vector of W floats, its load,
// fused multiply-add and horizontal sum.
struct Avx2 {
  static constexpr int W = 8;
  using V = __m256;
  __attribute__((target("avx2,fma"))) static V Zero() { return _mm256_setzero_ps(); }
  __attribute__((target("avx2,fma"))) static V Load(const float* p) { return _mm256_loadu_ps(p); }
  __attribute__((target("avx2,fma"))) static V Fma(V a, V b, V c) {
    return _mm256_fmadd_ps(a, b, c);
  }
  __attribute__((target("avx2,fma"))) static float Sum(V v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
  }
};
struct Avx512 {
  static constexpr int W = 16;
  using V = __m512;
  __attribute__((target("avx512f"))) static V Zero() { return _mm512_setzero_ps(); }
  __attribute__((target("avx512f"))) static V Load(const float* p) { return _mm512_loadu_ps(p); }
  __attribute__((target("avx512f"))) static V Fma(V a, V b, V c) {
    return _mm512_fmadd_ps(a, b, c);
  }
  __attribute__((target("avx2,fma,avx512f"))) static float Sum(V v) {
    alignas(64) float t[16];
    _mm512_store_ps(t, v);
    return Avx2::Sum(_mm256_add_ps(_mm256_load_ps(t), _mm256_load_ps(t + 8)));
  }
};

// NR weight rows against NX vectors of x over the inputs [k0, k1) ((k1 - k0) % W == 0). The
// NR * NX accumulators stay in registers; each (row, vector) partial sum is formed in the same
// order whatever NR and NX are and added to y (or stored, for the first block of inputs), so a
// sequence's numbers do not depend on the batch it is decoded in.
template <typename I, int NR, int NX>
__attribute__((target("avx2,fma,avx512f"), flatten)) void Block(
    const float* w, int64_t in, int64_t k0, int64_t k1, const float* const* xs, float* y,
    int64_t ldy, int64_t r) {
  typename I::V acc[NR * NX];
  for (int k = 0; k < NR * NX; ++k) acc[k] = I::Zero();
  for (int64_t i = k0; i < k1; i += I::W) {
    typename I::V wv[NR];
#pragma GCC unroll 8
    for (int a = 0; a < NR; ++a) wv[a] = I::Load(w + (r + a) * in + i);
#pragma GCC unroll 8
    for (int j = 0; j < NX; ++j) {
      const typename I::V xv = I::Load(xs[j] + i);
#pragma GCC unroll 8
      for (int a = 0; a < NR; ++a) acc[a * NX + j] = I::Fma(wv[a], xv, acc[a * NX + j]);
    }
  }
  for (int a = 0; a < NR; ++a) {
    for (int j = 0; j < NX; ++j) {
      float* out = y + j * ldy + r + a;
      const float s = I::Sum(acc[a * NX + j]);
      *out = k0 == 0 ? s : *out + s;
    }
  }
}

template <typename I, int NR, int NX>
void Range(const float* w, int64_t in, int64_t k0, int64_t k1, const float* const* xs, float* y,
           int64_t ldy, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + NR <= r1; r += NR) Block<I, NR, NX>(w, in, k0, k1, xs, y, ldy, r);
  for (; r < r1; ++r) Block<I, 1, NX>(w, in, k0, k1, xs, y, ldy, r);
}

// Register blocking per group width: AVX2 has 16 vector registers, AVX-512 32.
template <typename I>
void Tile(int nx, const float* w, int64_t in, int64_t k0, int64_t k1, const float* const* xs,
          float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr bool wide = I::W == 16;
  switch (nx) {
    case 1: Range<I, 8, 1>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
    case 2: Range<I, wide ? 8 : 6, 2>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
    case 3: Range<I, wide ? 6 : 3, 3>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
    default: Range<I, wide ? 6 : 3, 4>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
  }
}

// The weights stream from memory once for the whole batch. A block of kRowBlock weight rows is
// read kInputBlock inputs at a time (384 KiB: it stays in L2) and applied to every group of four
// x rows (64 KiB of inputs, also in L2); the first group reads the block from memory, the others
// from L2. Measured here (Zen 4, 2 cores), longer runs per row stream faster than input blocks
// that fit L1, since every row is then read in long contiguous runs.
template <typename I>
void Stream(const float* xp, int64_t rows, int64_t in, const float* wp, int64_t out, float* yp) {
  constexpr int64_t kRowBlock = 24;  // a multiple of every register blocking above
  constexpr int64_t kInputBlock = 4096;
  // Enough rows per task that scheduling costs little next to streaming them.
  const int64_t grain = std::max<int64_t>(16, (int64_t{1} << 16) / std::max<int64_t>(in, 1));
  at::parallel_for(0, out, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
      const int64_t re = std::min(r1, rb + kRowBlock);
      for (int64_t k0 = 0; k0 < in; k0 += kInputBlock) {
        const int64_t k1 = std::min(in, k0 + kInputBlock);
        for (int64_t j = 0; j < rows; j += 4) {
          const float* xs[4] = {xp + j * in, xp + (j + 1) * in, xp + (j + 2) * in,
                                xp + (j + 3) * in};
          Tile<I>(static_cast<int>(std::min<int64_t>(4, rows - j)), wp, in, k0, k1, xs,
                  yp + j * out, out, rb, re);
        }
      }
    }
  });
}

}  // namespace

at::Tensor DecodeLinear(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& b) {
  const int64_t rows = x_in.size(0);
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool avx512 = avx2 && __builtin_cpu_supports("avx512f");
  if (!avx2 || rows > kStreamingLinearMaxRows || x_in.size(1) % 8 != 0 ||
      x_in.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat || !w.is_contiguous() ||
      !x_in.device().is_cpu()) {
    return at::linear(x_in, w, b);
  }
  auto x = x_in.contiguous();
  const int64_t in = x.size(1), out = w.size(0);
  auto y = at::empty({rows, out}, x.options());
  if (avx512 && in % 16 == 0) {
    Stream<Avx512>(x.data_ptr<float>(), rows, in, w.data_ptr<float>(), out, y.data_ptr<float>());
  } else {
    Stream<Avx2>(x.data_ptr<float>(), rows, in, w.data_ptr<float>(), out, y.data_ptr<float>());
  }
  if (b.defined()) y.add_(b);
  return y;
}

}  // namespace vlc::engine
