#include "tools/vqa/second_renderer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "absl/strings/str_cat.h"

namespace vlc::vqa {
namespace {

// ---- Randomness of its own: splitmix64, a value per (seed, stream) with no state to share.

uint64_t SplitMix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Jitter {
 public:
  explicit Jitter(uint64_t seed) : state_(seed) {}
  // Uniform in [lo, hi) from the top 53 bits.
  double Uniform(double lo, double hi) {
    state_ = SplitMix(state_);
    return lo + (hi - lo) * static_cast<double>(state_ >> 11) * 0x1.0p-53;
  }
  int Int(int lo, int hi) {  // inclusive
    return std::min(hi, lo + static_cast<int>(Uniform(0, hi - lo + 1)));
  }

 private:
  uint64_t state_;
};

// ---- Geometry, in a cell's own coordinates: u, v in about [-1, 1] from its centre, v down.

struct Point {
  double x, y;
};

double SegmentDistance(Point p, Point a, Point b) {
  const double dx = b.x - a.x, dy = b.y - a.y;
  const double len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? ((p.x - a.x) * dx + (p.y - a.y) * dy) / len2 : 0;
  t = std::clamp(t, 0.0, 1.0);
  const double ex = a.x + t * dx - p.x, ey = a.y + t * dy - p.y;
  return std::sqrt(ex * ex + ey * ey);
}

// The stroke font: each digit a set of polylines in a unit box (x right, y down), its own
// design (a plain sans-serif hand), drawn as strokes of constant width.
using Polyline = std::vector<Point>;

std::vector<Polyline> Ellipse(double cx, double cy, double rx, double ry, int steps) {
  Polyline p;
  for (int i = 0; i <= steps; ++i) {
    const double a = 2 * M_PI * i / steps;
    p.push_back({cx + rx * std::cos(a), cy + ry * std::sin(a)});
  }
  return {p};
}

const std::vector<Polyline>& DigitStrokes(int digit) {
  static const std::vector<std::vector<Polyline>> kFont = [] {
    std::vector<std::vector<Polyline>> f(10);
    f[0] = Ellipse(0.5, 0.5, 0.42, 0.5, 20);
    f[1] = {{{0.22, 0.22}, {0.58, 0.0}, {0.58, 1.0}}};
    f[2] = {{{0.08, 0.24}, {0.22, 0.06}, {0.5, 0.0}, {0.8, 0.08}, {0.9, 0.28}, {0.8, 0.5},
             {0.08, 1.0}, {0.94, 1.0}}};
    f[3] = {{{0.1, 0.1}, {0.45, 0.0}, {0.8, 0.08}, {0.86, 0.26}, {0.7, 0.43}, {0.42, 0.48}},
            {{0.42, 0.48}, {0.78, 0.55}, {0.92, 0.74}, {0.8, 0.94}, {0.45, 1.0}, {0.08, 0.9}}};
    f[4] = {{{0.72, 1.0}, {0.72, 0.0}, {0.04, 0.7}, {0.96, 0.7}}};
    f[5] = {{{0.86, 0.0}, {0.2, 0.0}, {0.14, 0.44}, {0.48, 0.36}, {0.82, 0.46}, {0.92, 0.7},
             {0.78, 0.93}, {0.44, 1.0}, {0.08, 0.9}}};
    f[6] = {{{0.82, 0.06}, {0.52, 0.0}, {0.22, 0.16}, {0.1, 0.5}, {0.14, 0.84}, {0.44, 1.0},
             {0.78, 0.92}, {0.9, 0.7}, {0.78, 0.5}, {0.46, 0.44}, {0.2, 0.54}, {0.11, 0.66}}};
    f[7] = {{{0.06, 0.0}, {0.94, 0.0}, {0.38, 1.0}}};
    f[8] = Ellipse(0.5, 0.24, 0.3, 0.24, 16);
    f[8].push_back(Ellipse(0.5, 0.73, 0.38, 0.27, 16)[0]);
    f[9] = {{{0.18, 0.94}, {0.48, 1.0}, {0.78, 0.84}, {0.9, 0.5}, {0.86, 0.16}, {0.56, 0.0},
             {0.22, 0.08}, {0.1, 0.3}, {0.22, 0.5}, {0.54, 0.56}, {0.8, 0.46}, {0.89, 0.34}}};
    return f;
  }();
  return kFont[digit];
}

// One object as the renderer sees it: a coverage test in pixel coordinates and a colour.
struct Ink {
  std::function<bool(double, double)> inside;
  std::array<uint8_t, 3> rgb;
};

std::array<uint8_t, 3> Shade(Color color, Jitter& j) {
  std::array<uint8_t, 3> rgb = ColorRgb(color);
  for (uint8_t& c : rgb) c = static_cast<uint8_t>(std::clamp(c + j.Int(-14, 14), 0, 255));
  return rgb;
}

// The inked regions of one object in the cell [x0, x0 + size) x [y0, y0 + size).
std::vector<Ink> Inks(const Object& o, double x0, double y0, double size, Jitter& j) {
  std::vector<Ink> inks;
  if (o.is_box) {
    // An outline of its own width and inset, then the digit in near-black strokes.
    const double inset = size * j.Uniform(0.03, 0.08);
    const double border = std::max(1.0, size * j.Uniform(0.06, 0.1));
    const double ax = x0 + inset, ay = y0 + inset, bx = x0 + size - inset, by = y0 + size - inset;
    inks.push_back({[=](double x, double y) {
                      const bool outer = x >= ax && x < bx && y >= ay && y < by;
                      const bool inner = x >= ax + border && x < bx - border && y >= ay + border &&
                                         y < by - border;
                      return outer && !inner;
                    },
                    Shade(o.color, j)});
    const double h = size * j.Uniform(0.5, 0.6), w = h * j.Uniform(0.55, 0.66);
    const double dx = x0 + (size - w) / 2 + size * j.Uniform(-0.03, 0.03);
    const double dy = y0 + (size - h) / 2 + size * j.Uniform(-0.03, 0.03);
    const double half_width = std::max(0.55, size * j.Uniform(0.04, 0.055));
    std::vector<std::pair<Point, Point>> segments;
    for (const Polyline& line : DigitStrokes(o.digit)) {
      for (size_t i = 0; i + 1 < line.size(); ++i) {
        segments.push_back({{dx + line[i].x * w, dy + line[i].y * h},
                            {dx + line[i + 1].x * w, dy + line[i + 1].y * h}});
      }
    }
    const uint8_t grey = static_cast<uint8_t>(j.Int(10, 50));
    inks.push_back({[segments, half_width](double x, double y) {
                      for (const auto& [a, b] : segments) {
                        if (SegmentDistance({x, y}, a, b) <= half_width) return true;
                      }
                      return false;
                    },
                    {grey, grey, grey}});
    return inks;
  }
  // A shape: its own extent, a little off centre, with proportions of this renderer's.
  const double half = size / 2;
  const double cx = x0 + half + size * j.Uniform(-0.06, 0.06);
  const double cy = y0 + half + size * j.Uniform(-0.06, 0.06);
  const double e = j.Uniform(0.6, 0.8);
  const double stretch = j.Uniform(0.9, 1.1);
  auto local = [=](double x, double y) { return Point{(x - cx) / half, (y - cy) / half}; };
  std::function<bool(double, double)> inside;
  switch (o.shape) {
    case Shape::kCircle:  // an ellipse, up to 10% off round
      inside = [=](double x, double y) {
        const Point p = local(x, y);
        const double a = p.x / e, b = p.y / (e * stretch);
        return a * a + b * b <= 1;
      };
      break;
    case Shape::kSquare: {  // rounded corners, a little smaller than the circle
      const double s = 0.88 * e, r = 0.25 * s;
      inside = [=](double x, double y) {
        const Point p = local(x, y);
        const double qx = std::max(std::abs(p.x) - (s - r), 0.0);
        const double qy = std::max(std::abs(p.y) - (s - r), 0.0);
        return std::abs(p.x) <= s && std::abs(p.y) <= s && qx * qx + qy * qy <= r * r;
      };
      break;
    }
    case Shape::kTriangle: {  // apex up, base above the bottom of the extent, wider than tall
      const double top = -0.8 * e, base = 0.75 * e, half_base = 1.02 * e;
      inside = [=](double x, double y) {
        const Point p = local(x, y);
        if (p.y < top || p.y > base) return false;
        return std::abs(p.x) <= half_base * (p.y - top) / (base - top);
      };
      break;
    }
    case Shape::kDiamond:  // narrower than tall
      inside = [=](double x, double y) {
        const Point p = local(x, y);
        return std::abs(p.x) / (0.75 * e) + std::abs(p.y) / e <= 1;
      };
      break;
    case Shape::kCross: {  // wider bars than the first renderer's
      const double bar = j.Uniform(0.36, 0.44) * e;
      inside = [=](double x, double y) {
        const Point p = local(x, y);
        const double ax = std::abs(p.x), ay = std::abs(p.y);
        return (ax <= e && ay <= bar) || (ay <= e && ax <= bar);
      };
      break;
    }
  }
  inks.push_back({inside, Shade(o.color, j)});
  return inks;
}

}  // namespace

SecondStyle SecondStyleFor(Split split, int64_t index) {
  const uint64_t seed =
      SplitMix(SplitMix(0x5345434F4E44ull + static_cast<uint64_t>(split)) ^
               static_cast<uint64_t>(index));
  Jitter j(seed);
  SecondStyle s;
  s.image_size = j.Int(kSecondMinSize, kSecondMaxSize);
  s.antialias = j.Uniform(0, 1) < 0.5;
  s.seed = SplitMix(seed);
  return s;
}

absl::Status ValidateSecondStyle(const SecondStyle& style, int grid) {
  if (style.image_size < kSecondMinSize || style.image_size > kSecondMaxSize) {
    return absl::InvalidArgumentError(absl::StrCat("image size must be in [", kSecondMinSize,
                                                   ", ", kSecondMaxSize, "], got ",
                                                   style.image_size));
  }
  if (grid < kMinGrid || grid > kMaxGrid) {
    return absl::InvalidArgumentError(
        absl::StrCat("grid must be in [", kMinGrid, ", ", kMaxGrid, "], got ", grid));
  }
  return absl::OkStatus();
}

std::vector<uint8_t> RenderFrameSecond(const Frame& frame, int grid, const SecondStyle& style,
                                       int frame_index) {
  if (const absl::Status s = ValidateSecondStyle(style, grid); !s.ok()) {
    std::fprintf(stderr, "vlc::vqa::RenderFrameSecond: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
  const int n = style.image_size;
  Jitter frame_jitter(SplitMix(style.seed ^ (static_cast<uint64_t>(frame_index) << 20)));
  const uint8_t paper = static_cast<uint8_t>(frame_jitter.Int(246, 255));
  std::vector<uint8_t> rgb(static_cast<size_t>(n) * n * 3, paper);
  // Fractional cells: the grid fills the whole image, whatever its size.
  const double cell = static_cast<double>(n) / grid;
  const int samples = style.antialias ? 4 : 1;
  for (size_t k = 0; k < frame.objects.size(); ++k) {
    const Object& o = frame.objects[k];
    if (o.row < 0 || o.col < 0 || o.row >= grid || o.col >= grid) continue;
    Jitter j(SplitMix(style.seed ^ (static_cast<uint64_t>(frame_index) << 20) ^
                      (static_cast<uint64_t>(k + 1) << 40)));
    const double x0 = o.col * cell, y0 = o.row * cell;
    const std::vector<Ink> inks = Inks(o, x0, y0, cell, j);
    const int px0 = static_cast<int>(std::floor(x0)), py0 = static_cast<int>(std::floor(y0));
    const int px1 = std::min(n, static_cast<int>(std::ceil(x0 + cell)));
    const int py1 = std::min(n, static_cast<int>(std::ceil(y0 + cell)));
    for (const Ink& ink : inks) {
      for (int y = py0; y < py1; ++y) {
        for (int x = px0; x < px1; ++x) {
          int hits = 0;
          for (int sy = 0; sy < samples; ++sy) {
            for (int sx = 0; sx < samples; ++sx) {
              hits += ink.inside(x + (sx + 0.5) / samples, y + (sy + 0.5) / samples);
            }
          }
          if (hits == 0) continue;
          const int a = hits * 255 / (samples * samples);
          uint8_t* px = &rgb[(static_cast<size_t>(y) * n + x) * 3];
          for (int c = 0; c < 3; ++c) {
            px[c] = static_cast<uint8_t>((ink.rgb[c] * a + px[c] * (255 - a) + 127) / 255);
          }
        }
      }
    }
  }
  return rgb;
}

std::string EncodePngSecond(const Frame& frame, int grid, const SecondStyle& style,
                            int frame_index) {
  std::vector<uint8_t> rgb = RenderFrameSecond(frame, grid, style, frame_index);
  cv::Mat img(style.image_size, style.image_size, CV_8UC3, rgb.data());
  cv::Mat bgr;
  cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);  // imencode expects BGR
  std::vector<uint8_t> buf;
  cv::imencode(".png", bgr, buf);
  return std::string(buf.begin(), buf.end());
}

}  // namespace vlc::vqa
