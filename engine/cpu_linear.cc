#include "engine/cpu_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <type_traits>
#include <vector>

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
  __attribute__((target("avx2,fma"))) static V Mul(V a, V b) { return _mm256_mul_ps(a, b); }
  __attribute__((target("avx2,fma"))) static V Set1(float v) { return _mm256_set1_ps(v); }
  __attribute__((target("avx2,fma"))) static void Store(float* p, V v) { _mm256_storeu_ps(p, v); }
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
  __attribute__((target("avx512f"))) static V Mul(V a, V b) { return _mm512_mul_ps(a, b); }
  __attribute__((target("avx512f"))) static V Set1(float v) { return _mm512_set1_ps(v); }
  __attribute__((target("avx512f"))) static void Store(float* p, V v) { _mm512_storeu_ps(p, v); }
  // Lanes 0-7 plus lanes 8-15, then AVX2's order, in registers rather than through a store and
  // two loads. Masked extracts for the reason above.
  __attribute__((target("avx2,fma,avx512f"))) static float Sum(V v) {
    const __m512d d = _mm512_castps_pd(v);
    const __m256 low = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, d, 0));
    const __m256 high = _mm256_castpd_ps(_mm512_maskz_extractf64x4_pd(0xF, d, 1));
    return Avx2::Sum(_mm256_add_ps(low, high));
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

// Bfloat16 weights against bfloat16 x on CPUs with AVX512-BF16: VDPBF16PS multiplies 32 pairs
// and adds them into 16 float32 sums in one instruction, where widening takes three per 16
// weights. Products of two bfloat16 values are exact in float32, so only the order of the float32
// additions differs from the widening path (adjacent pairs first); x is never rounded, since it is
// bfloat16 already.
template <int NR, int NX>
__attribute__((target("avx2,fma,avx512f,avx512bf16"), flatten)) void Bf16DotBlock(
    const BFloat16Bits* w, int64_t in, int64_t k0, int64_t k1, const BFloat16Bits* const* xs,
    float* y, int64_t ldy, int64_t r) {
  __m512 acc[NR * NX];
  for (int k = 0; k < NR * NX; ++k) acc[k] = _mm512_setzero_ps();
  for (int64_t i = k0; i < k1; i += 32) {
    __m512bh wv[NR];
#pragma GCC unroll 8
    for (int a = 0; a < NR; ++a) wv[a] = (__m512bh)_mm512_loadu_si512(w + (r + a) * in + i);
#pragma GCC unroll 8
    for (int j = 0; j < NX; ++j) {
      const __m512bh xv = (__m512bh)_mm512_loadu_si512(xs[j] + i);
#pragma GCC unroll 8
      for (int a = 0; a < NR; ++a) acc[a * NX + j] = _mm512_dpbf16_ps(acc[a * NX + j], wv[a], xv);
    }
  }
  for (int a = 0; a < NR; ++a) {
    for (int j = 0; j < NX; ++j) {
      float* out = y + j * ldy + r + a;
      const float s = Avx512::Sum(acc[a * NX + j]);
      *out = k0 == 0 ? s : *out + s;
    }
  }
}

// x rows quantized for the int8 dot product: per block of kXBlock inputs a scale (max |x| / 127),
// the magnitudes |round(x / scale)| as unsigned bytes and the signs as a 64-bit mask.
constexpr int64_t kXBlock = 64;
struct QuantizedX {
  std::vector<uint8_t> magnitude;  // [rows, in]
  std::vector<uint64_t> negative;  // [rows, in / kXBlock], bit i: element i of the block is < 0
  std::vector<float> scale;        // [rows, in / kXBlock]
  int64_t in = 0;
};

QuantizedX QuantizeX(const float* x, int64_t rows, int64_t in) {
  QuantizedX q;
  const int64_t blocks = in / kXBlock;
  q.in = in;
  q.magnitude.resize(rows * in);
  q.negative.resize(rows * blocks);
  q.scale.resize(rows * blocks);
  for (int64_t b = 0; b < rows * blocks; ++b) {
    const float* xb = x + b * kXBlock;
    float m = 0;
    for (int64_t i = 0; i < kXBlock; ++i) m = std::max(m, std::fabs(xb[i]));
    const float s = m / 127.0f;
    const float inv = m > 0 ? 127.0f / m : 0.0f;  // a block of zeros quantizes to zeros
    uint64_t neg = 0;
    for (int64_t i = 0; i < kXBlock; ++i) {
      const float v = std::nearbyint(xb[i] * inv);
      q.magnitude[b * kXBlock + i] = static_cast<uint8_t>(std::min(127.0f, std::fabs(v)));
      if (v < 0) neg |= uint64_t{1} << i;
    }
    q.negative[b] = neg;
    q.scale[b] = s;
  }
  return q;
}

// Int8 weights against quantized x on CPUs with AVX512-VNNI: VPDPBUSD multiplies 64 unsigned
// bytes by 64 signed bytes and adds each four into 16 int32 sums in one instruction. x's signs
// are moved onto the weights (a masked negate: weights are in [-127, 127]), each block's integer
// sum is converted once and scaled by its x scale into float32 sums. Five instructions per 64
// weights, where widening takes sixteen.
template <int NR, int NX>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni"), flatten)) void Int8DotBlock(
    const int8_t* w, int64_t in, int64_t k0, int64_t k1, const QuantizedX& x, int64_t j0,
    float* y, int64_t ldy, int64_t r) {
  const int64_t blocks = in / kXBlock;
  __m512 acc[NR * NX];
  for (int k = 0; k < NR * NX; ++k) acc[k] = _mm512_setzero_ps();
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t i = k0; i < k1; i += kXBlock) {
    __m512i wv[NR];
#pragma GCC unroll 8
    for (int a = 0; a < NR; ++a) wv[a] = _mm512_loadu_si512(w + (r + a) * in + i);
    const int64_t b = i / kXBlock;
#pragma GCC unroll 8
    for (int j = 0; j < NX; ++j) {
      const int64_t row = j0 + j;
      const __m512i ux = _mm512_loadu_si512(x.magnitude.data() + row * in + i);
      const __mmask64 neg = x.negative[row * blocks + b];
      const __m512 s = _mm512_set1_ps(x.scale[row * blocks + b]);
#pragma GCC unroll 8
      for (int a = 0; a < NR; ++a) {
        const __m512i signed_w = _mm512_mask_sub_epi8(wv[a], neg, zero, wv[a]);
        const __m512i d = _mm512_dpbusd_epi32(zero, ux, signed_w);
        acc[a * NX + j] =
            _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(0xFFFF, d), s, acc[a * NX + j]);
      }
    }
  }
  for (int a = 0; a < NR; ++a) {
    for (int j = 0; j < NX; ++j) {
      float* out = y + j * ldy + r + a;
      const float s = Avx512::Sum(acc[a * NX + j]);
      *out = k0 == 0 ? s : *out + s;
    }
  }
}

// Rows [r0, r1) of one register-blocked kernel: NR rows at a time, then one.
template <int NR, typename Fn>
void Rows(int64_t r0, int64_t r1, Fn block) {
  int64_t r = r0;
  for (; r + NR <= r1; r += NR) block(std::integral_constant<int, NR>{}, r);
  for (; r < r1; ++r) block(std::integral_constant<int, 1>{}, r);
}

// The weights stream from memory once for the whole batch. A block of kRowBlock weight rows is
// read kInputBlock inputs at a time (384 KiB: it stays in L2) and applied to every group of four
// x rows (64 KiB of inputs, also in L2); the first group reads the block from memory, the others
// from L2. Measured here (Zen 4, 2 cores), longer runs per row stream faster than input blocks
// that fit L1, since every row is then read in long contiguous runs. `tile(nx, j, k0, k1, r0, r1)`
// applies rows [r0, r1) over inputs [k0, k1) to x rows [j, j + nx).
template <typename TileFn>
void Stream(int64_t rows, int64_t in, int64_t out, TileFn tile) {
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
          tile(static_cast<int>(std::min<int64_t>(4, rows - j)), j, k0, k1, rb, re);
        }
      }
    }
  });
}

template <typename I, typename WT>
void StreamWidening(const float* xp, int64_t rows, int64_t in, const WT* wp, int64_t out,
                    float* yp) {
  Stream(rows, in, out, [&](int nx, int64_t j, int64_t k0, int64_t k1, int64_t rb, int64_t re) {
    const float* xs[4] = {xp + j * in, xp + std::min(j + 1, rows - 1) * in,
                          xp + std::min(j + 2, rows - 1) * in, xp + std::min(j + 3, rows - 1) * in};
    Tile<I, WT>(nx, wp, in, k0, k1, xs, yp + j * out, out, rb, re);
  });
}

template <typename I>
void StreamAny(const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  const int64_t rows = x.size(0), in = x.size(1), out = w.size(0);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  switch (w.scalar_type()) {
    case at::kBFloat16:
      StreamWidening<I>(xp, rows, in, static_cast<const BFloat16Bits*>(w.data_ptr()), out, yp);
      break;
    case at::kHalf:
      StreamWidening<I>(xp, rows, in, static_cast<const HalfBits*>(w.data_ptr()), out, yp);
      break;
    case at::kChar:
      StreamWidening<I>(xp, rows, in, w.data_ptr<int8_t>(), out, yp);
      break;
    default:
      StreamWidening<I>(xp, rows, in, w.data_ptr<float>(), out, yp);
      break;
  }
}

void StreamBf16Dot(const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  const int64_t rows = x.size(0), in = x.size(1), out = w.size(0);
  const auto* xp = static_cast<const BFloat16Bits*>(x.data_ptr());
  const auto* wp = static_cast<const BFloat16Bits*>(w.data_ptr());
  float* yp = y.data_ptr<float>();
  Stream(rows, in, out, [&](int nx, int64_t j, int64_t k0, int64_t k1, int64_t rb, int64_t re) {
    const BFloat16Bits* xs[4] = {xp + j * in, xp + std::min(j + 1, rows - 1) * in,
                                 xp + std::min(j + 2, rows - 1) * in,
                                 xp + std::min(j + 3, rows - 1) * in};
    float* yj = yp + j * out;
    auto run = [&](auto nr_c, auto nx_c) {
      Rows<decltype(nr_c)::value>(rb, re, [&](auto n, int64_t r) {
        Bf16DotBlock<decltype(n)::value, decltype(nx_c)::value>(wp, in, k0, k1, xs, yj, out, r);
      });
    };
    switch (nx) {
      case 1: run(std::integral_constant<int, 8>{}, std::integral_constant<int, 1>{}); break;
      case 2: run(std::integral_constant<int, 8>{}, std::integral_constant<int, 2>{}); break;
      case 3: run(std::integral_constant<int, 6>{}, std::integral_constant<int, 3>{}); break;
      default: run(std::integral_constant<int, 6>{}, std::integral_constant<int, 4>{}); break;
    }
  });
}

void StreamInt8Dot(const at::Tensor& x, const at::Tensor& w, at::Tensor& y) {
  const int64_t rows = x.size(0), in = x.size(1), out = w.size(0);
  const QuantizedX qx = QuantizeX(x.data_ptr<float>(), rows, in);
  const int8_t* wp = w.data_ptr<int8_t>();
  float* yp = y.data_ptr<float>();
  Stream(rows, in, out, [&](int nx, int64_t j, int64_t k0, int64_t k1, int64_t rb, int64_t re) {
    float* yj = yp + j * out;
    auto run = [&](auto nr_c, auto nx_c) {
      Rows<decltype(nr_c)::value>(rb, re, [&](auto n, int64_t r) {
        Int8DotBlock<decltype(n)::value, decltype(nx_c)::value>(wp, in, k0, k1, qx, j, yj, out, r);
      });
    };
    switch (nx) {
      case 1: run(std::integral_constant<int, 8>{}, std::integral_constant<int, 1>{}); break;
      case 2: run(std::integral_constant<int, 6>{}, std::integral_constant<int, 2>{}); break;
      case 3: run(std::integral_constant<int, 4>{}, std::integral_constant<int, 3>{}); break;
      default: run(std::integral_constant<int, 4>{}, std::integral_constant<int, 4>{}); break;
    }
  });
}

// Rows [r0, r1) of w as float32 into dst (w's shape), int8 rows times their scale (as
// DequantizeInt8 computes them: the float32 product, rounded once).
inline float Scalar(BFloat16Bits v) {
  const uint32_t bits = static_cast<uint32_t>(v.bits) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
inline float Scalar(HalfBits v) {
  return static_cast<float>(c10::Half(v.bits, c10::Half::from_bits()));
}
inline float Scalar(int8_t v) { return static_cast<float>(v); }

template <typename I, typename WT>
__attribute__((target("avx2,fma,f16c,avx512f"))) void WidenRows(const WT* w, const float* scales,
                                                                int64_t in, int64_t r0, int64_t r1,
                                                                float* dst) {
  for (int64_t r = r0; r < r1; ++r) {
    const WT* src = w + r * in;
    float* d = dst + r * in;
    int64_t i = 0;
    if (scales != nullptr) {
      const typename I::V s = I::Set1(scales[r]);
      for (; i + I::W <= in; i += I::W) I::Store(d + i, I::Mul(I::Load(src + i), s));
      for (; i < in; ++i) d[i] = Scalar(src[i]) * scales[r];
    } else {
      for (; i + I::W <= in; i += I::W) I::Store(d + i, I::Load(src + i));
      for (; i < in; ++i) d[i] = Scalar(src[i]);
    }
  }
}

// Whether WidenInto takes w: a contiguous CPU matrix of bfloat16, half or int8, and AVX2.
bool Widenable(const at::Tensor& w) {
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                           __builtin_cpu_supports("f16c");
  const at::ScalarType wt = w.scalar_type();
  return avx2 && w.dim() == 2 && w.is_contiguous() && w.device().is_cpu() &&
         (wt == at::kBFloat16 || wt == at::kHalf || wt == at::kChar);
}

// Rows [r0, r1) of w (Widenable; int8 with float32 `scales`) as float32 into dst, row r0 first.
void WidenInto(const at::Tensor& w, const at::Tensor& scales, int64_t r0, int64_t r1, float* dst) {
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  const int64_t in = w.size(1);
  const float* sp = w.scalar_type() == at::kChar ? scales.data_ptr<float>() + r0 : nullptr;
  auto run = [&](auto type_tag) {
    using WT = decltype(type_tag);
    const WT* wp = static_cast<const WT*>(w.data_ptr()) + r0 * in;
    at::parallel_for(0, r1 - r0, 16, [&](int64_t a, int64_t b) {
      if (avx512) {
        WidenRows<Avx512>(wp, sp, in, a, b, dst);
      } else {
        WidenRows<Avx2>(wp, sp, in, a, b, dst);
      }
    });
  };
  switch (w.scalar_type()) {
    case at::kBFloat16:
      run(BFloat16Bits{});
      break;
    case at::kHalf:
      run(HalfBits{});
      break;
    default:
      run(int8_t{});
      break;
  }
}

// The process's choice for bfloat16 activations against many weight rows (Bf16PrefillGemm).
std::atomic<int> g_bf16_prefill{static_cast<int>(Bf16PrefillGemm::kUndecided)};
std::mutex g_bf16_prefill_mu;

// x w^T through the BLAS's float32 GEMM. A widened copy of the whole matrix would be a fresh
// allocation per call (180 MB for a 4096 x 11008 matrix), mapped and faulted in every time;
// instead blocks of rows are widened into a buffer of 16 MiB that each thread keeps, and each
// block's product is written into its columns of y.
at::Tensor Float32Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                         const at::Tensor& scales) {
  const at::Tensor xf = x.to(at::kFloat).contiguous();
  const at::Tensor bf = b.defined() ? b.to(at::kFloat) : b;
  if (w.scalar_type() == at::kFloat || !Widenable(w)) {
    const at::Tensor wf = w.scalar_type() == at::kFloat ? w : WidenToFloat(w, scales);
    return at::linear(xf, wf, bf).to(x.scalar_type());
  }
  const at::Tensor s = w.scalar_type() == at::kChar ? scales.to(at::kFloat).contiguous() : scales;
  const int64_t out = w.size(0), in = w.size(1);
  const int64_t block =
      std::max<int64_t>(16, std::min<int64_t>(out, (int64_t{16} << 20) / (4 * in)));
  thread_local at::Tensor buffer;
  if (!buffer.defined() || buffer.numel() < block * in)
    buffer = at::empty({block * in}, at::kFloat);
  at::Tensor y = at::empty({xf.size(0), out}, xf.options());
  for (int64_t r0 = 0; r0 < out; r0 += block) {
    const int64_t r1 = std::min(out, r0 + block);
    const at::Tensor wb = buffer.narrow(0, 0, (r1 - r0) * in).view({r1 - r0, in});
    WidenInto(w, s, r0, r1, wb.data_ptr<float>());
    at::Tensor yb = y.narrow(1, r0, r1 - r0);
    at::mm_out(yb, xf, wb.t());
  }
  if (bf.defined()) y.add_(bf);
  return y.to(x.scalar_type());
}

at::Tensor BFloat16Linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                          const at::Tensor& scales) {
  const at::Tensor bb = b.defined() ? b.to(at::kBFloat16) : b;
  if (w.scalar_type() == at::kChar)
    return at::linear(x, DequantizeInt8(w, scales, at::kBFloat16), bb);
  return at::linear(x, w.to(at::kBFloat16), bb);
}

// Times both ways on (up to 128 rows of) the first such product, twice each, alternating, and
// keeps the faster. VLC_CPU_BF16_GEMM=float32|bfloat16 fixes the choice instead.
Bf16PrefillGemm DecideBf16Prefill(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b,
                                  const at::Tensor& scales) {
  std::lock_guard<std::mutex> lock(g_bf16_prefill_mu);
  auto decided = static_cast<Bf16PrefillGemm>(g_bf16_prefill.load());
  if (decided != Bf16PrefillGemm::kUndecided) return decided;
  const char* env = std::getenv("VLC_CPU_BF16_GEMM");
  if (env != nullptr && std::string(env) == "float32") {
    decided = Bf16PrefillGemm::kFloat32;
  } else if (env != nullptr && std::string(env) == "bfloat16") {
    decided = Bf16PrefillGemm::kBFloat16;
  } else {
    const at::Tensor xs = x.slice(0, 0, std::min<int64_t>(x.size(0), 128));
    double best_f32 = 1e30, best_bf16 = 1e30;
    for (int round = 0; round < 2; ++round) {
      auto t0 = std::chrono::steady_clock::now();
      Float32Linear(xs, w, b, scales);
      auto t1 = std::chrono::steady_clock::now();
      BFloat16Linear(xs, w, b, scales);
      auto t2 = std::chrono::steady_clock::now();
      best_f32 = std::min(best_f32, std::chrono::duration<double>(t1 - t0).count());
      best_bf16 = std::min(best_bf16, std::chrono::duration<double>(t2 - t1).count());
    }
    decided = best_f32 < best_bf16 ? Bf16PrefillGemm::kFloat32 : Bf16PrefillGemm::kBFloat16;
  }
  g_bf16_prefill.store(static_cast<int>(decided));
  return decided;
}

}  // namespace

at::Tensor WidenToFloat(const at::Tensor& w, const at::Tensor& scales) {
  const bool int8 = w.scalar_type() == at::kChar;
  TORCH_CHECK(!int8 || (scales.defined() && scales.numel() == w.size(0)),
              "int8 weights need one scale per output row");
  if (!Widenable(w)) return int8 ? DequantizeInt8(w, scales, at::kFloat) : w.to(at::kFloat);
  at::Tensor out = at::empty(w.sizes(), w.options().dtype(at::kFloat));
  WidenInto(w, int8 ? scales.to(at::kFloat).contiguous() : scales, 0, w.size(0),
            out.data_ptr<float>());
  return out;
}

Bf16PrefillGemm BFloat16PrefillGemm() {
  return static_cast<Bf16PrefillGemm>(g_bf16_prefill.load());
}

void SetBFloat16PrefillGemm(Bf16PrefillGemm choice) {
  std::lock_guard<std::mutex> lock(g_bf16_prefill_mu);
  g_bf16_prefill.store(static_cast<int>(choice));
}

LinearPath CpuLinearPath(const at::Tensor& x, const at::Tensor& w) {
  if (!DecodeLinearStreams(x, w)) return LinearPath::kLibrary;
  // VLC_CPU_DOT=0 keeps the widening kernel everywhere (x never quantized): an A/B switch for
  // benchmarks, and for anyone who wants int8 weights without the activation rounding.
  static const bool dot_allowed = [] {
    const char* v = std::getenv("VLC_CPU_DOT");
    return v == nullptr || std::string(v) != "0";
  }();
  static const bool bf16_dot = dot_allowed && __builtin_cpu_supports("avx512f") &&
                               __builtin_cpu_supports("avx512bf16");
  static const bool int8_dot = dot_allowed && __builtin_cpu_supports("avx512f") &&
                               __builtin_cpu_supports("avx512bw") &&
                               __builtin_cpu_supports("avx512vnni");
  const int64_t in = x.size(1);
  if (bf16_dot && w.scalar_type() == at::kBFloat16 && x.scalar_type() == at::kBFloat16 &&
      in % 32 == 0) {
    return LinearPath::kBf16Dot;
  }
  if (int8_dot && w.scalar_type() == at::kChar && in % kXBlock == 0) return LinearPath::kInt8Dot;
  return LinearPath::kWidening;
}

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
  }
  // The path is decided once per call (CpuLinearPath checks DecodeLinearStreams' conditions).
  const LinearPath path = CpuLinearPath(x_in, w);
  if (path == LinearPath::kLibrary) {
    const at::ScalarType wt = w.scalar_type(), xt = x_in.scalar_type();
    if (!x_in.device().is_cpu() || !w.device().is_cpu()) {
      if (wt != at::kChar) return at::linear(x_in, w, b);
      return at::linear(x_in, DequantizeInt8(w, scales, xt), b.defined() ? b.to(xt) : b);
    }
    // Many rows (a prefill) on the CPU. Bfloat16 activations against bfloat16 or int8 weights:
    // LibTorch's bfloat16 GEMM (oneDNN), or the weights widened to float32 for the BLAS's GEMM,
    // whichever measured faster on this machine (Bf16PrefillGemm).
    if (xt == at::kBFloat16 && (wt == at::kBFloat16 || wt == at::kChar)) {
      Bf16PrefillGemm choice = BFloat16PrefillGemm();
      if (choice == Bf16PrefillGemm::kUndecided) choice = DecideBf16Prefill(x_in, w, b, scales);
      return choice == Bf16PrefillGemm::kFloat32 ? Float32Linear(x_in, w, b, scales)
                                                 : BFloat16Linear(x_in, w, b, scales);
    }
    // Float16 or int8 weights under float32 activations (LibTorch's CPU has no half GEMM):
    // widened to float32 for the call.
    if (xt == at::kFloat && (wt == at::kHalf || wt == at::kChar)) {
      return Float32Linear(x_in, w, b, scales);
    }
    if (wt == at::kHalf && xt != at::kHalf) return at::linear(x_in, w.to(xt), b);
    if (wt != at::kChar) return at::linear(x_in, w, b);
    return at::linear(x_in, DequantizeInt8(w, scales, xt), b.defined() ? b.to(xt) : b);
  }
  static const bool avx512 = __builtin_cpu_supports("avx512f");
  const int64_t rows = x_in.size(0), in = x_in.size(1), out = w.size(0);
  auto y = at::empty({rows, out}, x_in.options().dtype(at::kFloat));
  if (path == LinearPath::kBf16Dot) {
    StreamBf16Dot(x_in.contiguous(), w, y);
  } else {
    // The few rows of x are widened to float32 (a few KiB); the weights stay as stored and are
    // widened in registers (or, for int8 on VNNI CPUs, x is quantized per block of 64); every
    // sum is float32. The result takes x's dtype.
    const at::Tensor x = x_in.to(at::kFloat).contiguous();
    if (path == LinearPath::kInt8Dot) {
      StreamInt8Dot(x, w, y);
    } else if (avx512 && in % 16 == 0) {
      StreamAny<Avx512>(x, w, y);
    } else {
      StreamAny<Avx2>(x, w, y);
    }
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
  at::Tensor q = w.device().is_cpu() ? kvcache::HugePageEmpty(w.sizes(), at::kChar)
                                     : at::empty(w.sizes(), w.options().dtype(at::kChar));
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
  // One pass and one allocation (a prefill widens every int8 matrix on every call): each weight
  // times its row's scale in float32, rounded to the dtype as the tensor expression below does.
  if (dtype == at::kFloat && Widenable(q)) return WidenToFloat(q, scales);
  if (!q.device().is_cpu() || !q.is_contiguous() || q.dim() != 2 || dtype != at::kBFloat16) {
    return (q.to(at::kFloat) * scales.to(at::kFloat).unsqueeze(1)).to(dtype);
  }
  const int64_t rows = q.size(0), in = q.size(1);
  at::Tensor out = at::empty({rows, in}, q.options().dtype(dtype));
  const at::Tensor s = scales.to(at::kFloat).contiguous();
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = s.data_ptr<float>();
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int8_t* src = qp + r * in;
      const float scale = sp[r];
      c10::BFloat16* dst = out.data_ptr<c10::BFloat16>() + r * in;
      for (int64_t k = 0; k < in; ++k) dst[k] = c10::BFloat16(static_cast<float>(src[k]) * scale);
    }
  });
  return out;
}

}  // namespace vlc::engine
