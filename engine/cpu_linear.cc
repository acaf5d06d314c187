#include "engine/cpu_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace vlc::engine {
namespace {

// Weight elements as stored: float32, or the 16 bits of a bfloat16 or an IEEE half, widened to
// float32 in registers as they are loaded.
struct BFloat16Bits {
  uint16_t bits;
};
struct HalfBits {
  uint16_t bits;
};

// The two instruction sets, as the kernel below needs them: a vector of W floats, its load,
// fused multiply-add and horizontal sum.
struct Avx2 {
  static constexpr int W = 8;
  using V = __m256;
  __attribute__((target("avx2,fma"))) static V Zero() { return _mm256_setzero_ps(); }
  __attribute__((target("avx2,fma"))) static V Load(const float* p) { return _mm256_loadu_ps(p); }
  // bfloat16 is the top half of a float32: widen to 32 bits and shift into place.
  __attribute__((target("avx2,fma"))) static V Load(const BFloat16Bits* p) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  __attribute__((target("avx2,fma,f16c"))) static V Load(const HalfBits* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  __attribute__((target("avx2,fma"))) static V Load(const int8_t* p) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
  }
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
  // The zero-masked forms compute the same; GCC 12 warns that the plain ones' internal
  // _mm512_undefined_epi32 "may be used uninitialized" once they are inlined.
  __attribute__((target("avx512f"))) static V Load(const BFloat16Bits* p) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    const __mmask16 all = 0xFFFF;
    return _mm512_castsi512_ps(
        _mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, h), 16));
  }
  __attribute__((target("avx512f"))) static V Load(const int8_t* p) {
    const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm512_maskz_cvtepi32_ps(0xFFFF, _mm512_maskz_cvtepi8_epi32(0xFFFF, q));
  }
  __attribute__((target("avx512f"))) static V Load(const HalfBits* p) {
    return _mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
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
template <typename I, typename WT, int NR, int NX>
__attribute__((target("avx2,fma,f16c,avx512f"), flatten)) void Block(
    const WT* w, int64_t in, int64_t k0, int64_t k1, const float* const* xs, float* y,
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

template <typename I, typename WT, int NR, int NX>
void Range(const WT* w, int64_t in, int64_t k0, int64_t k1, const float* const* xs, float* y,
           int64_t ldy, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + NR <= r1; r += NR) Block<I, WT, NR, NX>(w, in, k0, k1, xs, y, ldy, r);
  for (; r < r1; ++r) Block<I, WT, 1, NX>(w, in, k0, k1, xs, y, ldy, r);
}

// Register blocking per group width: AVX2 has 16 vector registers, AVX-512 32.
template <typename I, typename WT>
void Tile(int nx, const WT* w, int64_t in, int64_t k0, int64_t k1, const float* const* xs,
          float* y, int64_t ldy, int64_t r0, int64_t r1) {
  constexpr bool wide = I::W == 16;
  switch (nx) {
    case 1: Range<I, WT, 8, 1>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
    case 2: Range<I, WT, wide ? 8 : 6, 2>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
    case 3: Range<I, WT, wide ? 6 : 3, 3>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
    default: Range<I, WT, wide ? 6 : 3, 4>(w, in, k0, k1, xs, y, ldy, r0, r1); break;
  }
}

// The weights stream from memory once for the whole batch. A block of kRowBlock weight rows is
// read kInputBlock inputs at a time (384 KiB: it stays in L2) and applied to every group of four
// x rows (64 KiB of inputs, also in L2); the first group reads the block from memory, the others
// from L2. Measured here (Zen 4, 2 cores), longer runs per row stream faster than input blocks
// that fit L1, since every row is then read in long contiguous runs.
template <typename I, typename WT>
void Stream(const float* xp, int64_t rows, int64_t in, const WT* wp, int64_t out, float* yp) {
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
          Tile<I, WT>(static_cast<int>(std::min<int64_t>(4, rows - j)), wp, in, k0, k1, xs,
                  yp + j * out, out, rb, re);
        }
      }
    }
  });
}

template <typename I>
void StreamAny(const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  const int64_t rows = x.size(0), in = x.size(1), out = w.size(0);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (w.scalar_type()) {
    case at::kBFloat16:
      Stream<I>(xp, rows, in, static_cast<const BFloat16Bits*>(w.data_ptr()), out, yp);
      break;
    case at::kHalf:
      Stream<I>(xp, rows, in, static_cast<const HalfBits*>(w.data_ptr()), out, yp);
      break;
    case at::kChar:
      Stream<I>(xp, rows, in, w.data_ptr<int8_t>(), out, yp);
      break;
    default:
      Stream<I>(xp, rows, in, w.data_ptr<float>(), out, yp);
      break;
  }
}

}  // namespace

bool DecodeLinearStreams(const at::Tensor& x, const at::Tensor& w) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const bool f16c = __builtin_cpu_supports("f16c");
  const at::ScalarType wt = w.scalar_type();
  const bool weight_ok =
      wt == at::kFloat || wt == at::kBFloat16 || wt == at::kChar || (wt == at::kHalf && f16c);
  const at::ScalarType xt = x.scalar_type();
  const bool x_ok = xt == at::kFloat || xt == at::kBFloat16 || xt == at::kHalf;
  return avx2 && weight_ok && x_ok && x.dim() == 2 && x.size(0) <= kStreamingLinearMaxRows &&
         x.size(1) % 8 == 0 && w.dim() == 2 && w.size(1) == x.size(1) && w.is_contiguous() &&
         x.device().is_cpu() && w.device().is_cpu();
}

at::Tensor DecodeLinear(const at::Tensor& x_in, const at::Tensor& w, const at::Tensor& b,
                        const at::Tensor& scales) {
  if (w.scalar_type() == at::kChar) {
    TORCH_CHECK(scales.defined() && scales.numel() == w.size(0),
                "int8 weights need one scale per output row");
    if (!DecodeLinearStreams(x_in, w)) {
      const at::ScalarType xt = x_in.scalar_type();
      return at::linear(x_in, DequantizeInt8(w, scales, xt), b.defined() ? b.to(xt) : b);
    }
  } else if (!DecodeLinearStreams(x_in, w)) {
    return at::linear(x_in, w, b);
  }
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  // The few rows of x are widened to float32 (a few KiB); the weights stay as stored and are
  // widened in registers; every sum is float32. The result takes x's dtype.
  const at::Tensor x = x_in.to(at::kFloat).contiguous();
  const int64_t rows = x.size(0), in = x.size(1), out = w.size(0);
  auto y = at::empty({rows, out}, x.options());
  if (avx512 && in % 16 == 0) {
    StreamAny<Avx512>(x, w, y);
  } else {
    StreamAny<Avx2>(x, w, y);
  }
  // Int8 rows were summed as integers times x; each row's scale comes after the whole sum.
  if (w.scalar_type() == at::kChar) y.mul_(scales.to(at::kFloat));
  if (b.defined()) y.add_(b.to(at::kFloat));
  return x_in.scalar_type() == at::kFloat ? y : y.to(x_in.scalar_type());
}

Int8Weight QuantizeInt8(const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2, "QuantizeInt8 takes a [out, in] matrix");
  // In float32 whatever the stored dtype, a block of rows at a time, so that the float32
  // temporaries stay a few MiB however large the matrix (a 7B model's loading quantizes as it
  // reads).
  const int64_t rows = w.size(0);
  at::Tensor q = at::empty(w.sizes(), w.options().dtype(at::kChar));
  at::Tensor scale = at::empty({rows}, w.options().dtype(at::kFloat));
  constexpr int64_t kBlock = 256;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock) {
    const int64_t r1 = std::min(rows, r0 + kBlock);
    const at::Tensor f = w.slice(0, r0, r1).to(at::kFloat);
    const at::Tensor s = f.abs().amax(1) / 127.0;
    // A row of zeros keeps scale 0 and quantizes to zeros (no division by zero).
    const at::Tensor safe = at::where(s > 0, s, at::ones_like(s));
    q.slice(0, r0, r1).copy_((f / safe.unsqueeze(1)).round().clamp(-127, 127));
    scale.slice(0, r0, r1).copy_(s);
  }
  return {q.contiguous(), scale};
}

at::Tensor DequantizeInt8(const at::Tensor& q, const at::Tensor& scales, at::ScalarType dtype) {
  return (q.to(at::kFloat) * scales.to(at::kFloat).unsqueeze(1)).to(dtype);
}

}  // namespace vlc::engine
