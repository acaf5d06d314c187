// Pillow's BICUBIC resize for 8-bit RGB, bit for bit. CLIP was trained on images that PIL
// resized, and transformers' CLIPImageProcessor still resizes through PIL, so matching its
// integer arithmetic (not just "a bicubic filter") keeps our pixel values identical to the
// reference implementation's. The structure follows Pillow's src/libImaging/Resample.c:
// per-axis coefficients in double, converted to 22-bit fixed point, one separable pass per axis
// that changes size (horizontal first), each pass rounding to 8 bits.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "engine/media.h"

namespace vlc::engine {
namespace {

// Pillow keeps 8 bits for the result and 2 for overflow (the kernel has negative lobes, so a
// partial sum can fall below 0 or exceed 1), leaving 22 bits of fraction in an int32.
constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kBicubicSupport = 2.0;

// Keys' cubic convolution kernel with a = -0.5, written as Pillow evaluates it (the operation
// order matters for bit-exact weights).
double BicubicKernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// For each output position along one axis: the first input index it reads, how many inputs it
// reads, and their fixed-point weights (`ksize` slots per output, unused ones zero).
struct AxisCoefficients {
  int ksize = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

AxisCoefficients PrecomputeCoefficients(int in_size, int out_size) {
  AxisCoefficients c;
  const double scale = static_cast<double>(in_size) / out_size;
  // Shrinking widens the kernel by the scale factor (antialiasing); enlarging keeps it.
  const double filterscale = std::max(scale, 1.0);
  const double support = kBicubicSupport * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.weights.assign(static_cast<size_t>(out_size) * c.ksize, 0);

  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    const double inv_filterscale = 1.0 / filterscale;
    // Pillow rounds the window ends by adding 0.5 and truncating toward zero; it then clamps.
    const int xmin = std::max(static_cast<int>(center - support + 0.5), 0);
    const int xmax = std::min(static_cast<int>(center + support + 0.5), in_size) - xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = BicubicKernel((x + xmin - center + 0.5) * inv_filterscale);
      total += w[x];
    }
    int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      const double normalised = total != 0.0 ? w[x] / total : w[x];
      // Round half away from zero, as Pillow's normalize_coeffs_8bpc does.
      const double fixed = normalised * (1 << kPrecisionBits);
      k[x] = static_cast<int32_t>(normalised < 0 ? -0.5 + fixed : 0.5 + fixed);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

// The accumulator starts at one half (so the shift rounds) and is clamped to 0..255; the shift
// is arithmetic, flooring negative sums as Pillow's lookup table does.
inline uint8_t Clip8(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

constexpr int32_t kRoundingHalf = 1 << (kPrecisionBits - 1);

RgbImage ResampleHorizontal(const RgbImage& src, int out_width) {
  const AxisCoefficients c = PrecomputeCoefficients(src.width, out_width);
  RgbImage out;
  out.width = out_width;
  out.height = src.height;
  out.data.resize(static_cast<size_t>(out.width) * out.height * 3);
  for (int y = 0; y < src.height; ++y) {
    const uint8_t* row = &src.data[static_cast<size_t>(y) * src.width * 3];
    uint8_t* dst = &out.data[static_cast<size_t>(y) * out.width * 3];
    for (int xx = 0; xx < out_width; ++xx) {
      const int32_t* k = &c.weights[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* p = row + static_cast<size_t>(c.first[xx]) * 3;
      int32_t r = kRoundingHalf, g = kRoundingHalf, b = kRoundingHalf;
      for (int x = 0; x < c.count[xx]; ++x) {
        r += p[3 * x + 0] * k[x];
        g += p[3 * x + 1] * k[x];
        b += p[3 * x + 2] * k[x];
      }
      dst[3 * xx + 0] = Clip8(r);
      dst[3 * xx + 1] = Clip8(g);
      dst[3 * xx + 2] = Clip8(b);
    }
  }
  return out;
}

RgbImage ResampleVertical(const RgbImage& src, int out_height) {
  const AxisCoefficients c = PrecomputeCoefficients(src.height, out_height);
  RgbImage out;
  out.width = src.width;
  out.height = out_height;
  out.data.resize(static_cast<size_t>(out.width) * out.height * 3);
  const size_t stride = static_cast<size_t>(src.width) * 3;
  for (int yy = 0; yy < out_height; ++yy) {
    const int32_t* k = &c.weights[static_cast<size_t>(yy) * c.ksize];
    const uint8_t* top = &src.data[static_cast<size_t>(c.first[yy]) * stride];
    uint8_t* dst = &out.data[static_cast<size_t>(yy) * stride];
    for (size_t i = 0; i < stride; ++i) {
      int32_t acc = kRoundingHalf;
      for (int y = 0; y < c.count[yy]; ++y) acc += top[y * stride + i] * k[y];
      dst[i] = Clip8(acc);
    }
  }
  return out;
}

}  // namespace

RgbImage ResizeBicubicPil(const RgbImage& src, int out_width, int out_height) {
  const size_t expected = static_cast<size_t>(std::max(src.width, 0)) *
                          static_cast<size_t>(std::max(src.height, 0)) * 3;
  // Nothing sensible to produce: callers (PreprocessImages) validate sizes and report errors.
  if (src.width <= 0 || src.height <= 0 || src.data.size() != expected || out_width <= 0 ||
      out_height <= 0) {
    return {};
  }
  // Like Pillow, skip an axis whose size does not change: that pass would be the identity.
  RgbImage out = out_width != src.width ? ResampleHorizontal(src, out_width) : src;
  if (out_height != src.height) out = ResampleVertical(out, out_height);
  return out;
}

}  // namespace vlc::engine
