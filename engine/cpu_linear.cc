#include "engine/cpu_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>

namespace vlc::engine {
namespace {

__attribute__((target("avx2,fma"))) inline float Sum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
// NR weight rows against NX vectors of x, in % 8 == 0. NR * NX accumulators stay in registers;
// each (row, vector) sum is formed in the same order whatever NR and NX are, so a sequence's
// numbers do not depend on the batch it is decoded in.
template <int NR, int NX>
__attribute__((target("avx2,fma"))) void Block(const float* w, int64_t in, const float* const* xs, float* y, int64_t ldy, int64_t r) {
  __m256 acc[NR * NX];
  for (int k = 0; k < NR * NX; ++k) acc[k] = _mm256_setzero_ps();
  for (int64_t i = 0; i < in; i += 8) {
    __m256 wv[NR];
#pragma GCC unroll 4
    for (int a = 0; a < NR; ++a) wv[a] = _mm256_loadu_ps(w + (r + a) * in + i);
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) {
      const __m256 xv = _mm256_loadu_ps(xs[j] + i);
#pragma GCC unroll 4
      for (int a = 0; a < NR; ++a) acc[a * NX + j] = _mm256_fmadd_ps(wv[a], xv, acc[a * NX + j]);
    }
  }
  for (int a = 0; a < NR; ++a)
    for (int j = 0; j < NX; ++j) y[j * ldy + r + a] = Sum8(acc[a * NX + j]);
}
template <int NR, int NX>
void Range(const float* w, int64_t in, const float* const* xs, float* y, int64_t ldy, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + NR <= r1; r += NR) Block<NR, NX>(w, in, xs, y, ldy, r);
  for (; r < r1; ++r) Block<1, NX>(w, in, xs, y, ldy, r);
}
}  // namespace
at::Tensor DecodeLinear(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& b) {
  const int64_t rows = x_in.size(0);
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!avx2 || rows > kStreamingLinearMaxRows || x_in.size(1) % 8 != 0 ||
      x_in.scalar_type() != at::kFloat || w.scalar_type() != at::kFloat || !w.is_contiguous() ||
      !x_in.device().is_cpu()) {
    return at::linear(x_in, w, b);
  }
  auto x = x_in.contiguous();
  const int64_t in = x.size(1), out = w.size(0);
  auto y = at::empty({rows, out}, x.options());
  const float* wp = w.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  // Enough rows per task that scheduling costs little next to streaming them.
  const int64_t grain = std::max<int64_t>(16, (int64_t{1} << 16) / std::max<int64_t>(in, 1));
  // The weights stream from memory once for the whole batch: a block of weight rows small enough
  // to stay in this core's L2 (at most 512 KiB) is applied to every group of four x rows before
  // the next block is read. A multiple of 24 rows suits every register blocking below.
  const int64_t block = std::max<int64_t>(24, ((int64_t{512} << 10) / (4 * in)) / 24 * 24);
  at::parallel_for(0, out, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t rb = r0; rb < r1; rb += block) {
      const int64_t re = std::min(r1, rb + block);
      for (int64_t j = 0; j < rows; j += 4) {
        const int nx = static_cast<int>(std::min<int64_t>(4, rows - j));
        const float* xs[4] = {xp + j * in, xp + (j + 1) * in, xp + (j + 2) * in,
                              xp + (j + 3) * in};
        float* yj = yp + j * out;
        // Register blocking per batch width, tuned on AVX2 (16 ymm registers).
        switch (nx) {
          case 1: Range<8, 1>(wp, in, xs, yj, out, rb, re); break;
          case 2: Range<6, 2>(wp, in, xs, yj, out, rb, re); break;
          case 3: Range<3, 3>(wp, in, xs, yj, out, rb, re); break;
          default: Range<3, 4>(wp, in, xs, yj, out, rb, re); break;
        }
      }
    }
  });
  if (b.defined()) y.add_(b);
  return y;
}

}  // namespace vlc::engine
