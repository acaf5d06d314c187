#include "tools/vqa/vqa.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace vlc::vqa {
namespace {

using nlohmann::json;

// ---- Randomness.
//
// Datasets must come out the same on every machine and standard library, so the generator owns
// its PRNG (xoshiro256**, seeded through splitmix64) and its integer helpers: std's
// distributions are implementation-defined and differ between libstdc++ and libc++.

// splitmix64's output function: a bijection on 64 bits that spreads every input bit.
uint64_t Mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  explicit Rng(uint64_t seed) {
    for (uint64_t& s : s_) {
      seed += 0x9E3779B97F4A7C15ull;
      s = Mix64(seed);
    }
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in [0, n), n > 0, without modulo bias: draws below 2^64 mod n are rejected, so the
  // accepted range is a whole number of copies of [0, n).
  int Below(int n) {
    const uint64_t un = static_cast<uint64_t>(n);
    const uint64_t reject_below = (0 - un) % un;
    uint64_t x;
    do {
      x = Next();
    } while (x < reject_below);
    return static_cast<int>(x % un);
  }

  int Range(int lo, int hi) { return lo + Below(hi - lo + 1); }  // inclusive
  bool Chance(int num, int den) { return Below(den) < num; }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Fixed per split, so that an index names different items in different splits.
constexpr uint64_t kSplitSalt[] = {0x5652714154524149ull,   // train
                                   0x56527141564C4944ull,   // validation
                                   0x5652714154455354ull};  // test

uint64_t ItemSeed(Split split, int64_t index, int frames, const Options& opts) {
  // Mix64 is a bijection, so distinct indices give distinct seeds within a split and size spec.
  // The image size is left out on purpose: the same item can be rendered at several resolutions.
  uint64_t h = kSplitSalt[static_cast<int>(split)];
  h = Mix64(h ^ static_cast<uint64_t>(index));
  h = Mix64(h ^ (static_cast<uint64_t>(frames) << 32 | static_cast<uint64_t>(opts.grid)));
  return h;
}

// ---- Scenes.

struct SceneSpec {
  int min_objects;
  int max_objects;
  int min_shapes;
  int min_boxes;
};
// Every frame holds at least one box and one shape, so that each question kind can nearly always
// be asked about it and kinds and frames stay close to uniform.
constexpr SceneSpec kImageSpec{3, 6, 2, 1};
constexpr SceneSpec kClipFrameSpec{2, 4, 1, 1};

// Objects beyond the minimums are boxes with this chance.
constexpr int kExtraBoxNum = 1, kExtraBoxDen = 3;
// A shape after the first repeats an earlier shape's colour with this chance (else any colour,
// which may repeat too): colour counts of 2 and 3 then come up often enough to be worth asking.
constexpr int kReuseColorNum = 1, kReuseColorDen = 2;
// How often a count question names a colour no shape has (answer "0"): rarer than the others, so
// the answer is not a safe guess, but present, so "0" is learned.
constexpr int kZeroCountNum = 1, kZeroCountDen = 9;

Frame MakeFrame(Rng& rng, const SceneSpec& spec, int grid) {
  const int n = rng.Range(spec.min_objects, spec.max_objects);
  // A partial Fisher-Yates shuffle draws n distinct cells.
  std::vector<int> cells(grid * grid);
  std::iota(cells.begin(), cells.end(), 0);
  for (int i = 0; i < n; ++i) std::swap(cells[i], cells[i + rng.Below(grid * grid - i)]);

  int boxes = spec.min_boxes;
  for (int i = spec.min_shapes + spec.min_boxes; i < n; ++i) {
    if (rng.Chance(kExtraBoxNum, kExtraBoxDen)) ++boxes;
  }
  // The cells are in random order already, so the first `boxes` of them may as well be the boxes.
  Frame frame;
  std::vector<Color> shape_colors;
  for (int i = 0; i < n; ++i) {
    Object o;
    o.row = cells[i] / grid;
    o.col = cells[i] % grid;
    if (i < boxes) {
      o.is_box = true;
      o.color = static_cast<Color>(rng.Below(kNumColors));
      o.digit = rng.Below(10);
    } else {
      o.shape = static_cast<Shape>(rng.Below(kNumShapes));
      if (!shape_colors.empty() && rng.Chance(kReuseColorNum, kReuseColorDen)) {
        o.color = shape_colors[rng.Below(static_cast<int>(shape_colors.size()))];
      } else {
        o.color = static_cast<Color>(rng.Below(kNumColors));
      }
      shape_colors.push_back(o.color);
    }
    frame.objects.push_back(o);
  }
  // Row-major order: one canonical description per scene.
  std::sort(frame.objects.begin(), frame.objects.end(), [](const Object& a, const Object& b) {
    return std::make_pair(a.row, a.col) < std::make_pair(b.row, b.col);
  });
  return frame;
}

// ---- Questions.

int CountShapes(const Frame& frame, Shape shape) {
  return static_cast<int>(
      std::count_if(frame.objects.begin(), frame.objects.end(),
                    [&](const Object& o) { return !o.is_box && o.shape == shape; }));
}
int CountBoxes(const Frame& frame, Color color) {
  return static_cast<int>(
      std::count_if(frame.objects.begin(), frame.objects.end(),
                    [&](const Object& o) { return o.is_box && o.color == color; }));
}
int CountShapesOfColor(const Frame& frame, Color color) {
  return static_cast<int>(
      std::count_if(frame.objects.begin(), frame.objects.end(),
                    [&](const Object& o) { return !o.is_box && o.color == color; }));
}

// The shapes that occur exactly once in the frame (what kColorOfShape may ask about).
std::vector<Shape> UniqueShapes(const Frame& frame) {
  std::vector<Shape> out;
  for (int s = 0; s < kNumShapes; ++s) {
    if (CountShapes(frame, static_cast<Shape>(s)) == 1) out.push_back(static_cast<Shape>(s));
  }
  return out;
}
// The colours exactly one box has (what kDigitInBox may ask about).
std::vector<Color> UniqueBoxColors(const Frame& frame) {
  std::vector<Color> out;
  for (int c = 0; c < kNumColors; ++c) {
    if (CountBoxes(frame, static_cast<Color>(c)) == 1) out.push_back(static_cast<Color>(c));
  }
  return out;
}

bool CanAsk(const Frame& frame, QuestionKind kind) {
  switch (kind) {
    case QuestionKind::kColorOfShape:
      return !UniqueShapes(frame).empty();
    case QuestionKind::kDigitInBox:
      return !UniqueBoxColors(frame).empty();
    case QuestionKind::kShapeAt:
    case QuestionKind::kCount:
      return !frame.objects.empty();
  }
  return false;
}

// The kind is drawn first and uniformly, then a frame among those where it can be asked, so kinds
// stay uniform even in a clip where one frame cannot carry a kind. A kind no frame can carry is
// drawn again; kShapeAt always can, so this ends.
Question DrawQuestion(Rng& rng, const Clip& clip) {
  for (;;) {
    const auto kind = static_cast<QuestionKind>(rng.Below(kNumKinds));
    std::vector<int> frames;
    for (int f = 0; f < static_cast<int>(clip.frames.size()); ++f) {
      if (CanAsk(clip.frames[f], kind)) frames.push_back(f);
    }
    if (frames.empty()) continue;
    Question q;
    q.kind = kind;
    q.frame = frames[rng.Below(static_cast<int>(frames.size()))];
    const Frame& frame = clip.frames[q.frame];
    switch (kind) {
      case QuestionKind::kColorOfShape: {
        const std::vector<Shape> shapes = UniqueShapes(frame);
        q.shape = shapes[rng.Below(static_cast<int>(shapes.size()))];
        break;
      }
      case QuestionKind::kShapeAt: {
        const Object& o = frame.objects[rng.Below(static_cast<int>(frame.objects.size()))];
        q.row = o.row;
        q.col = o.col;
        break;
      }
      case QuestionKind::kDigitInBox: {
        const std::vector<Color> colors = UniqueBoxColors(frame);
        q.color = colors[rng.Below(static_cast<int>(colors.size()))];
        break;
      }
      case QuestionKind::kCount: {
        std::vector<Color> present, absent;
        for (const Object& o : frame.objects) {
          if (!o.is_box) present.push_back(o.color);  // one entry per shape: weighted by count
        }
        for (int c = 0; c < kNumColors; ++c) {
          const auto color = static_cast<Color>(c);
          if (std::find(present.begin(), present.end(), color) == present.end()) {
            absent.push_back(color);
          }
        }
        const bool zero =
            present.empty() || (!absent.empty() && rng.Chance(kZeroCountNum, kZeroCountDen));
        const std::vector<Color>& pool = zero ? absent : present;
        q.color = pool[rng.Below(static_cast<int>(pool.size()))];
        break;
      }
    }
    return q;
  }
}

std::string ObjectAnswer(const Object& o) {
  if (o.is_box) return absl::StrCat(ColorName(o.color), " box ", o.digit);
  return absl::StrCat(ColorName(o.color), " ", ShapeName(o.shape));
}

// ---- Drawing.

// OpenCV's drawing functions take coordinates with this many fractional bits, which lets a shape
// sit exactly on its cell's centre (between two pixels when the cell size is even).
constexpr int kShiftBits = 4;
constexpr double kFixedOne = 1 << kShiftBits;

cv::Point Fixed(double x, double y) {
  return cv::Point(static_cast<int>(std::lround(x * kFixedOne)),
                   static_cast<int>(std::lround(y * kFixedOne)));
}

// Shapes span this fraction of their cell, centred.
constexpr double kShapeExtent = 0.70;
// A box's digit is drawn this fraction of the cell tall (16 px in a 24 px cell, with its
// antialiased rim; 15 px of solid ink).
constexpr double kDigitHeight = 0.65;

// How the first renderer draws one object. The defaults are the pictures the demo model was
// trained on; AugmentedLook draws the training-time variations of RenderFrameAugmented.
struct Look {
  double extent = kShapeExtent;  // a shape's share of its cell
  double dx = 0, dy = 0;         // its centre's offset from the cell's, in cells
  double digit_height = kDigitHeight;
  int font = cv::FONT_HERSHEY_SIMPLEX;
  double digit_stroke = 1;       // the digit's stroke width, times the default
  double border = 1;             // a box outline's width, times the default
  int line_type = cv::LINE_AA;
  std::array<int, 3> shade = {0, 0, 0};  // added to the colour's RGB
  // The digit's hand: Hershey's (`font`) when negative, else one of kOwnHands or OtherForms
  // (kOtherFormsHand), drawn with the
  // variations `hand_seed` picks (DigitInOwnHand).
  int hand = -1;
  uint64_t hand_seed = 0;
  // A shape's proportions: its width and height times these (a circle becomes an ellipse, a
  // square an oblong, triangles and diamonds squatter or taller), and a cross's bars this share
  // of its half-extent wide.
  double sx = 1, sy = 1;
  double bar = 1.0 / 3;
};

cv::Scalar Shaded(Color color, const Look& look) {
  const auto rgb = ColorRgb(color);
  return cv::Scalar(std::clamp(rgb[0] + look.shade[0], 0, 255),
                    std::clamp(rgb[1] + look.shade[1], 0, 255),
                    std::clamp(rgb[2] + look.shade[2], 0, 255));
}

void DrawShape(cv::Mat& img, const Object& o, const CellRect& cell, const Look& look = {}) {
  // OpenCV puts pixel centres on integer coordinates, so the cell's centre is half a pixel
  // before x + size / 2.
  const double cx = cell.x + cell.size / 2.0 - 0.5 + look.dx * cell.size;
  const double cy = cell.y + cell.size / 2.0 - 0.5 + look.dy * cell.size;
  const double h = look.extent * cell.size / 2.0;
  const double w = h * look.sx, v = h * look.sy;  // half width, half height
  const cv::Scalar color = Shaded(o.color, look);
  std::vector<cv::Point> poly;
  switch (o.shape) {
    case Shape::kCircle:
      if (look.sx == 1 && look.sy == 1) {
        cv::circle(img, Fixed(cx, cy), static_cast<int>(std::lround(h * kFixedOne)), color,
                   cv::FILLED, look.line_type, kShiftBits);
      } else {
        cv::ellipse(img, Fixed(cx, cy),
                    cv::Size(static_cast<int>(std::lround(w * kFixedOne)),
                             static_cast<int>(std::lround(v * kFixedOne))),
                    0, 0, 360, color, cv::FILLED, look.line_type, kShiftBits);
      }
      return;
    case Shape::kSquare:
      poly = {Fixed(cx - w, cy - v), Fixed(cx + w, cy - v), Fixed(cx + w, cy + v),
              Fixed(cx - w, cy + v)};
      break;
    case Shape::kTriangle:
      poly = {Fixed(cx, cy - v), Fixed(cx + w, cy + v), Fixed(cx - w, cy + v)};
      break;
    case Shape::kDiamond:
      poly = {Fixed(cx, cy - v), Fixed(cx + w, cy), Fixed(cx, cy + v), Fixed(cx - w, cy)};
      break;
    case Shape::kCross: {
      const double a = h * look.bar;  // half the width of a bar
      poly = {Fixed(cx - a, cy - v), Fixed(cx + a, cy - v), Fixed(cx + a, cy - a),
              Fixed(cx + w, cy - a), Fixed(cx + w, cy + a), Fixed(cx + a, cy + a),
              Fixed(cx + a, cy + v), Fixed(cx - a, cy + v), Fixed(cx - a, cy + a),
              Fixed(cx - w, cy + a), Fixed(cx - w, cy - a), Fixed(cx - a, cy - a)};
      break;
    }
  }
  const cv::Point* pts = poly.data();
  const int npts = static_cast<int>(poly.size());
  cv::fillPoly(img, &pts, &npts, 1, color, look.line_type, kShiftBits);
}

// ---- Digits in hands of our own.
//
// Hershey's faces share their construction (the same 0 with a slash-free oval, the same closed 4,
// the same 9 without a tail), so a model that saw only them reads the digits' strokes as one
// hand. These are two more, written here: a round hand of arcs and curves, and a segmented hand of
// straight strokes, each with the variants people write (open or closed 4, 7 with or without a
// bar, 1 with or without a foot, 9 with a straight or a curved tail, 6 and 9 with or without the
// segment that closes them), warped smoothly and slanted per instance.

constexpr int kOwnHands = 2;  // drawn by own_hands; OtherForms is hand kOtherFormsHand
constexpr int kOtherFormsHand = 2;
constexpr double kPi = 3.14159265358979323846;

using Stroke = std::vector<cv::Point2d>;

// An elliptic arc about (cx, cy) from angle a0 to a1 in degrees (y grows downwards, so 270 is the
// top of the ellipse), as a polyline.
Stroke Arc(double cx, double cy, double rx, double ry, double a0, double a1) {
  const int n = std::max(4, static_cast<int>(std::abs(a1 - a0) / 10));
  Stroke s;
  for (int i = 0; i <= n; ++i) {
    const double a = (a0 + (a1 - a0) * i / n) * kPi / 180;
    s.push_back({cx + rx * std::cos(a), cy + ry * std::sin(a)});
  }
  return s;
}

// A quadratic Bezier curve from p0 to p2 pulled towards p1.
Stroke Curve(cv::Point2d p0, cv::Point2d p1, cv::Point2d p2) {
  Stroke s;
  for (int i = 0; i <= 12; ++i) {
    const double t = i / 12.0;
    s.push_back((1 - t) * (1 - t) * p0 + 2 * (1 - t) * t * p1 + t * t * p2);
  }
  return s;
}

// Strokes in a box `w` wide and 1 tall (y down). `variant` picks among a digit's usual forms.
std::vector<Stroke> RoundHand(int digit, double w, int variant) {
  const double m = w / 2;
  switch (digit) {
    case 0:
      return {Arc(m, 0.5, m, 0.5, 0, 360)};
    case 1:
      if (variant % 2 == 0) return {{{m - 0.22 * w, 0.2}, {m, 0}, {m, 1}}};
      return {{{m - 0.25 * w, 0.18}, {m, 0}, {m, 1}}, {{m - 0.35 * w, 1}, {m + 0.35 * w, 1}}};
    case 2: {
      Stroke s = Arc(m, 0.27, m, 0.27, 190, 380);
      s.push_back({0, 1});
      s.push_back({w, 1});
      return {s};
    }
    case 3:
      return {Arc(m, 0.26, 0.9 * m, 0.26, 200, 450), Arc(m, 0.75, m, 0.25, 270, 520)};
    case 4:
      if (variant % 2 == 0) return {{{0.75 * w, 1}, {0.75 * w, 0}, {0, 0.68}, {w, 0.68}}};
      return {{{0.15 * w, 0}, {0, 0.62}, {w, 0.62}}, {{0.72 * w, 0.25}, {0.72 * w, 1}}};
    case 5: {
      Stroke s = {{0.92 * w, 0}, {0.1 * w, 0}, {0.05 * w, 0.46}};
      const Stroke bowl = Arc(m, 0.7, m, 0.3, 215, 510);
      s.insert(s.end(), bowl.begin(), bowl.end());
      return {s};
    }
    case 6: {
      Stroke s = Curve({0.85 * w, 0.02}, {0, 0.15}, {0.02, 0.72});
      return {s, Arc(m, 0.72, m, 0.28, 0, 360)};
    }
    case 7:
      if (variant % 2 == 0) return {{{0, 0}, {w, 0}, {0.3 * w, 1}}};
      return {{{0, 0.12}, {0, 0}, {w, 0}, {0.3 * w, 1}}, {{0.2 * w, 0.52}, {0.85 * w, 0.52}}};
    case 8:
      return {Arc(m, 0.25, 0.8 * m, 0.25, 0, 360), Arc(m, 0.74, m, 0.26, 0, 360)};
    case 9:
      if (variant % 2 == 0) return {Arc(m, 0.28, m, 0.28, 0, 360), {{w, 0.28}, {w, 1}}};
      return {Arc(m, 0.28, m, 0.28, 0, 360), Curve({w, 0.28}, {w, 0.95}, {0.15 * w, 1})};
  }
  return {};
}

// The forms of digits that neither Hershey's faces nor the two hands above write, as type and
// people also draw them: a 0 with straight sides, a 1 without flag or foot, a 2 with a curved
// neck, a flat-topped 3 (a bar, a diagonal, a bowl), a 4 whose diagonal stops at the bar, a 5 whose
// flag is a stroke of its own, a 6 with a straight stem, a 7 with a curved stem, an 8 written as
// one crossing stroke, a 9 with a slanted straight tail. `variant` picks between two of them where
// a digit has two.
std::vector<Stroke> OtherForms(int digit, double w, int variant) {
  const double m = w / 2;
  switch (digit) {
    case 0: {
      Stroke s = Arc(m, 0.5 * m + 0.02, m, 0.5 * m + 0.02, 180, 360);
      const Stroke bottom = Arc(m, 0.98 - 0.5 * m, m, 0.5 * m + 0.02, 0, 180);
      s.insert(s.end(), bottom.begin(), bottom.end());
      s.push_back(s.front());
      return {s};
    }
    case 1:
      if (variant % 2 == 0) return {{{m, 0}, {m, 1}}};
      return {{{m - 0.3 * w, 0.3}, {m + 0.05 * w, 0}, {m - 0.05 * w, 1}}};
    case 2: {
      Stroke s = Curve({0.02 * w, 0.25}, {0.5 * w, -0.15}, {0.95 * w, 0.27});
      const Stroke neck = Curve({0.95 * w, 0.27}, {0.9 * w, 0.6}, {0, 1});
      s.insert(s.end(), neck.begin() + 1, neck.end());
      s.push_back({w, 1});
      return {s};
    }
    case 3: {
      Stroke s = {{0.02 * w, 0}, {0.95 * w, 0}, {0.35 * w, 0.42}};
      const Stroke bowl = Arc(m, 0.7, m, 0.29, 250, 500);
      s.insert(s.end(), bowl.begin(), bowl.end());
      return {s};
    }
    case 4:
      return {{{0.7 * w, 0}, {0, 0.7}, {w, 0.7}}, {{0.7 * w, 0.45}, {0.7 * w, 1}}};
    case 5: {
      Stroke s = {{0.15 * w, 0}, {0.1 * w, 0.47}};
      const Stroke bowl = Arc(m, 0.7, m, 0.29, 230, 510);
      s.insert(s.end(), bowl.begin(), bowl.end());
      return {s, {{0.15 * w, 0}, {0.95 * w, 0.02}}};
    }
    case 6:
      return {{{0.8 * w, 0}, {0.08 * w, 0.62}}, Arc(m, 0.71, m, 0.29, 0, 360)};
    case 7:
      if (variant % 2 == 0) return {{{0, 0}, {w, 0}}, Curve({w, 0}, {0.4 * w, 0.4}, {0.35 * w, 1})};
      return {{{0, 0}, {w, 0}}, Curve({w, 0}, {0.8 * w, 0.6}, {0.5 * w, 1})};
    case 8: {
      // Gerono's lemniscate stood upright: one stroke, crossing itself in the middle.
      Stroke s;
      for (int i = 0; i <= 48; ++i) {
        const double t = 2 * kPi * i / 48;
        s.push_back({m + 1.9 * m * std::sin(t) * std::cos(t), 0.5 - 0.5 * std::cos(t)});
      }
      return {s};
    }
    case 9:
      return {Arc(m, 0.3, m, 0.3, 0, 360), {{w, 0.3}, {0.75 * w, 1}}};
  }
  return {};
}

// Seven segments (a top, b upper right, c lower right, d bottom, e lower left, f upper left,
// g middle), joined into strokes where they meet.
std::vector<Stroke> SegmentHand(int digit, double w, int variant) {
  const cv::Point2d tl{0, 0}, tr{w, 0}, ml{0, 0.5}, mr{w, 0.5}, bl{0, 1}, br{w, 1};
  switch (digit) {
    case 0:
      return {{tl, tr, br, bl, tl}};
    case 1:
      if (variant % 2 == 0) return {{tr, br}};
      return {{{0.55 * w, 0.15}, tr, br}};
    case 2:
      return {{tl, tr, mr, ml, bl, br}};
    case 3:
      return {{tl, tr, br, bl}, {ml, mr}};
    case 4:
      return {{tl, ml, mr}, {tr, br}};
    case 5:
      return {{tr, tl, ml, mr, br, bl}};
    case 6:
      if (variant % 2 == 0) return {{tr, tl, bl, br, mr, ml}};
      return {{tl, bl, br, mr, ml}};
    case 7:
      if (variant % 2 == 0) return {{tl, tr, br}};
      return {{ml, tl, tr, br}};
    case 8:
      return {{tl, tr, br, bl, tl}, {ml, mr}};
    case 9:
      if (variant % 2 == 0) return {{mr, ml, tl, tr, br, bl}};
      return {{mr, ml, tl, tr, br}};
  }
  return {};
}

// The digit's coverage in hand `hand`, `height` pixels tall with strokes `thickness` wide: the
// glyph's width (0.5-0.8 of its height), slant (up to 0.25) and a smooth warp of up to 4% of its
// height are drawn from `seed`.
cv::Mat DigitInOwnHand(int digit, int hand, uint64_t seed, int height, int thickness,
                       int line_type) {
  Rng rng(Mix64(seed ^ 0x48414E44ull));
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * rng.Below(10001) / 1e4; };
  const double w = uniform(0.5, 0.8);
  const int variant = rng.Below(2);
  const double slant = uniform(-0.1, 0.25);
  const double ax = uniform(-0.04, 0.04), ay = uniform(-0.04, 0.04);
  const double px = uniform(0, 2 * kPi), py = uniform(0, 2 * kPi);
  std::vector<Stroke> strokes = hand == 0   ? RoundHand(digit, w, variant)
                                : hand == 1 ? SegmentHand(digit, w, variant)
                                            : OtherForms(digit, w, variant);
  // The skeleton spans `height - thickness` pixels so that the inked glyph is `height` tall.
  const double scale = std::max(1.0, static_cast<double>(height - thickness));
  const double pad = thickness + 2 + std::abs(slant) * scale;
  std::vector<std::vector<cv::Point>> polys;
  for (const Stroke& s : strokes) {
    std::vector<cv::Point> poly;
    for (const cv::Point2d& p : s) {
      const double x = p.x + ax * std::sin(kPi * p.y + px);
      const double y = p.y + ay * std::sin(kPi * p.x / w + py);
      poly.push_back(Fixed(pad + (x + slant * (1 - y)) * scale, pad + y * scale));
    }
    polys.push_back(std::move(poly));
  }
  const int size = static_cast<int>(std::ceil(2 * pad + scale * (1 + w + std::abs(slant))));
  cv::Mat canvas = cv::Mat::zeros(size, size, CV_8UC1);
  cv::polylines(canvas, polys, /*isClosed=*/false, cv::Scalar(255), thickness, line_type,
                kShiftBits);
  return canvas(cv::boundingRect(canvas)).clone();
}

// `text` drawn white on black, its coverage (0..255) cropped to the pixels it inks.
cv::Mat InkMask(const std::string& text, double scale, int thickness,
                int font = cv::FONT_HERSHEY_SIMPLEX, int line_type = cv::LINE_AA) {
  int baseline = 0;
  const cv::Size size = cv::getTextSize(text, font, scale, thickness, &baseline);
  const int pad = 2 * thickness + 2;
  cv::Mat canvas = cv::Mat::zeros(size.height + baseline + 2 * pad, size.width + 2 * pad, CV_8UC1);
  cv::putText(canvas, text, cv::Point(pad, size.height + pad), font, scale, cv::Scalar(255),
              thickness, line_type);
  return canvas(cv::boundingRect(canvas)).clone();
}

// The digit's coverage, its "0" kDigitHeight of the cell tall. Hershey glyphs carry side bearings
// and a baseline offset that differ per digit, so the digit is drawn apart and later centred by
// the pixels it actually inks. getTextSize misjudges the inked height (the stroke does not scale,
// and small scales round), so the scale is found by bisection on the inked height of "0".
cv::Mat DigitMask(int digit, int cell_size, int max_height, const Look& look = {}) {
  const int thickness =
      std::max(1, static_cast<int>(std::lround(look.digit_stroke * cell_size / 12.0)));
  const int target =
      std::min(max_height, static_cast<int>(std::lround(look.digit_height * cell_size)));
  if (look.hand >= 0) {
    return DigitInOwnHand(digit, look.hand, look.hand_seed, target, thickness, look.line_type);
  }
  double lo = 0.05, hi = 0.2 * cell_size;  // lo inks far less than any target; hi far more
  for (int i = 0; i < 16; ++i) {
    const double mid = (lo + hi) / 2;
    if (InkMask("0", mid, thickness, look.font, look.line_type).rows <= target) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return InkMask(std::to_string(digit), lo, thickness, look.font, look.line_type);
}

void DrawBox(cv::Mat& img, const Object& o, const CellRect& cell, BoxStyle style,
             const Look& look = {}) {
  style.border = std::max(1, static_cast<int>(std::lround(style.border * look.border)));
  // The outline is a filled rectangle with a white one inside, so it is exactly `border` pixels
  // wide on every side (cv::rectangle's thick lines straddle the given edge).
  const int x0 = cell.x + style.margin;
  const int y0 = cell.y + style.margin;
  const int x1 = cell.x + cell.size - 1 - style.margin;
  const int y1 = cell.y + cell.size - 1 - style.margin;
  cv::rectangle(img, cv::Point(x0, y0), cv::Point(x1, y1), Shaded(o.color, look), cv::FILLED,
                cv::LINE_8);
  cv::rectangle(img, cv::Point(x0 + style.border, y0 + style.border),
                cv::Point(x1 - style.border, y1 - style.border), cv::Scalar(255, 255, 255),
                cv::FILLED, cv::LINE_8);

  const int inner = cell.size - 2 * (style.margin + style.border);
  const cv::Mat mask = DigitMask(o.digit, cell.size, inner, look);
  // Centred in the cell; a glyph wider than the interior (none at the sizes ValidateSpec allows)
  // loses its sides evenly rather than spilling onto the outline.
  const int w = std::min(mask.cols, inner);
  const int h = std::min(mask.rows, inner);
  const int mx = (mask.cols - w) / 2;
  const int my = (mask.rows - h) / 2;
  const int dx = cell.x + (cell.size - w) / 2;
  const int dy = cell.y + (cell.size - h) / 2;
  // Black ink over the white interior, blended by coverage in integers (deterministic).
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      const int a = mask.at<uint8_t>(my + y, mx + x);
      auto& px = img.at<cv::Vec3b>(dy + y, dx + x);
      for (int c = 0; c < 3; ++c) px[c] = static_cast<uint8_t>((px[c] * (255 - a) + 127) / 255);
    }
  }
}

// The frame drawn in RGB order on `paper`, object k with look(k).
template <typename LookOf>
cv::Mat DrawFrameWith(const Frame& frame, const Options& opts, int paper, LookOf look) {
  cv::Mat img(opts.image_size, opts.image_size, CV_8UC3, cv::Scalar(paper, paper, paper));
  const BoxStyle style = BoxStyleFor(opts);
  for (size_t k = 0; k < frame.objects.size(); ++k) {
    const Object& o = frame.objects[k];
    if (o.row < 0 || o.col < 0 || o.row >= opts.grid || o.col >= opts.grid) continue;
    const CellRect cell = CellBounds(o.row, o.col, opts);
    if (o.is_box) {
      DrawBox(img, o, cell, style, look(k));
    } else {
      DrawShape(img, o, cell, look(k));
    }
  }
  return img;
}

// The frame drawn in RGB order on white.
cv::Mat DrawFrame(const Frame& frame, const Options& opts) {
  return DrawFrameWith(frame, opts, 255, [](size_t) { return Look{}; });
}

// Training-time variation of one object's drawing, from its own stream. A digit is drawn in a
// hand of our own with probability `own_hands`; that choice is drawn after everything else, so
// the rest of the object's look is the same at every `own_hands`.
Look AugmentedLook(Rng& rng, double own_hands, double shape_variety, double other_forms) {
  auto uniform = [&](double lo, double hi) { return lo + (hi - lo) * rng.Below(10001) / 1e4; };
  static constexpr int kFonts[] = {cv::FONT_HERSHEY_SIMPLEX, cv::FONT_HERSHEY_PLAIN,
                                   cv::FONT_HERSHEY_DUPLEX, cv::FONT_HERSHEY_COMPLEX,
                                   cv::FONT_HERSHEY_TRIPLEX};
  Look l;
  l.extent = uniform(0.5, 0.85);
  // Off centre, but inside the cell.
  const double room = (1 - l.extent) / 2;
  l.dx = uniform(-room, room) * 0.8;
  l.dy = uniform(-room, room) * 0.8;
  l.digit_height = uniform(0.5, 0.72);
  l.font = kFonts[rng.Below(5)] | (rng.Chance(1, 8) ? cv::FONT_ITALIC : 0);
  l.digit_stroke = uniform(0.6, 1.8);
  l.border = uniform(0.5, 2.0);
  l.line_type = rng.Chance(2, 5) ? cv::LINE_8 : cv::LINE_AA;
  for (int& c : l.shade) c = rng.Below(41) - 20;
  if (own_hands > 0 && rng.Below(10000) < own_hands * 10000) {
    l.hand = rng.Below(kOwnHands);
    l.hand_seed = rng.Next();
  }
  // Drawn last, and only when asked for, so the rest of the look is the same at any share.
  if (shape_variety > 0 && rng.Below(10000) < shape_variety * 10000) {
    l.sx = uniform(0.75, 1.2);
    l.sy = uniform(0.75, 1.2);
    l.bar = uniform(0.22, 0.45);
  }
  // Likewise: that share of the digits in OtherForms, whatever hand was drawn above.
  if (other_forms > 0 && rng.Below(10000) < other_forms * 10000) {
    l.hand = kOtherFormsHand;
    l.hand_seed = rng.Next();
  }
  return l;
}

// ---- Names.

constexpr const char* kShapeNames[] = {"circle", "square", "triangle", "diamond", "cross"};
constexpr const char* kColorNames[] = {"red", "green", "blue", "yellow", "purple", "orange"};
constexpr const char* kKindNames[] = {"color_of_shape", "shape_at", "digit_in_box", "count"};
constexpr const char* kSplitNames[] = {"train", "validation", "test"};

template <typename Enum, size_t N>
absl::StatusOr<Enum> ParseName(std::string_view name, const char* const (&names)[N],
                               const char* what) {
  for (size_t i = 0; i < N; ++i) {
    if (name == names[i]) return static_cast<Enum>(i);
  }
  std::string known;
  for (size_t i = 0; i < N; ++i) absl::StrAppend(&known, i ? ", " : "", names[i]);
  return absl::InvalidArgumentError(
      absl::StrCat("unknown ", what, " \"", std::string(name), "\" (known: ", known, ")"));
}

// ---- JSON readers: every failure names the field, since these read files people edit.

absl::StatusOr<const json*> Field(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, ": not an object"));
  auto it = obj.find(key);
  if (it == obj.end()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": missing \"", key, "\""));
  }
  return &*it;
}

absl::StatusOr<int64_t> GetInt(const json& obj, const char* key, const std::string& where,
                               int64_t lo, int64_t hi) {
  VLC_ASSIGN_OR_RETURN(const json* v, Field(obj, key, where));
  if (!v->is_number_integer()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": not an integer"));
  }
  // A huge unsigned value reads back negative as int64, which the range check then refuses.
  const int64_t x =
      v->is_number_unsigned() && v->get<uint64_t>() > uint64_t{INT64_MAX} ? -1 : v->get<int64_t>();
  if (x < lo || x > hi) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, ": ", x, " is outside [", lo, ", ", hi, "]"));
  }
  return x;
}

absl::StatusOr<std::string> GetString(const json& obj, const char* key, const std::string& where) {
  VLC_ASSIGN_OR_RETURN(const json* v, Field(obj, key, where));
  if (!v->is_string()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ".", key, ": not a string"));
  }
  return v->get<std::string>();
}

template <typename Enum>
absl::StatusOr<Enum> GetName(const json& obj, const char* key, const std::string& where,
                             absl::StatusOr<Enum> (*parse)(std::string_view)) {
  VLC_ASSIGN_OR_RETURN(std::string name, GetString(obj, key, where));
  auto parsed = parse(name);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, ": ", parsed.status().message()));
  }
  return *parsed;
}

absl::StatusOr<Object> ObjectFromJson(const json& j, const std::string& where) {
  Object o;
  VLC_ASSIGN_OR_RETURN(std::string type, GetString(j, "type", where));
  if (type != "shape" && type != "box") {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".type: \"", type, "\" is neither \"shape\" nor \"box\""));
  }
  o.is_box = type == "box";
  VLC_ASSIGN_OR_RETURN(o.color, GetName<Color>(j, "color", where, &ParseColor));
  if (o.is_box) {
    VLC_ASSIGN_OR_RETURN(o.digit, GetInt(j, "digit", where, 0, 9));
  } else {
    VLC_ASSIGN_OR_RETURN(o.shape, GetName<Shape>(j, "shape", where, &ParseShape));
  }
  VLC_ASSIGN_OR_RETURN(o.row, GetInt(j, "row", where, 0, kMaxGrid - 1));
  VLC_ASSIGN_OR_RETURN(o.col, GetInt(j, "col", where, 0, kMaxGrid - 1));
  return o;
}

absl::StatusOr<Question> QuestionFromJson(const json& j, const Clip& clip) {
  const std::string where = "question";
  Question q;
  VLC_ASSIGN_OR_RETURN(q.kind, GetName<QuestionKind>(j, "kind", where, &ParseKind));
  VLC_ASSIGN_OR_RETURN(q.frame,
                       GetInt(j, "frame", where, 0, static_cast<int64_t>(clip.frames.size()) - 1));
  switch (q.kind) {
    case QuestionKind::kColorOfShape: {
      VLC_ASSIGN_OR_RETURN(q.shape, GetName<Shape>(j, "shape", where, &ParseShape));
      break;
    }
    case QuestionKind::kShapeAt: {
      VLC_ASSIGN_OR_RETURN(q.row, GetInt(j, "row", where, 0, kMaxGrid - 1));
      VLC_ASSIGN_OR_RETURN(q.col, GetInt(j, "col", where, 0, kMaxGrid - 1));
      break;
    }
    case QuestionKind::kDigitInBox:
    case QuestionKind::kCount: {
      VLC_ASSIGN_OR_RETURN(q.color, GetName<Color>(j, "color", where, &ParseColor));
      break;
    }
  }
  q.text = QuestionText(q, static_cast<int>(clip.frames.size()));
  return q;
}

}  // namespace

// ---- Value semantics.

bool operator==(const Object& a, const Object& b) {
  return a.is_box == b.is_box && a.shape == b.shape && a.color == b.color && a.digit == b.digit &&
         a.row == b.row && a.col == b.col;
}
bool operator==(const Frame& a, const Frame& b) { return a.objects == b.objects; }
bool operator==(const Clip& a, const Clip& b) { return a.frames == b.frames; }
bool operator==(const Question& a, const Question& b) {
  return a.kind == b.kind && a.frame == b.frame && a.shape == b.shape && a.color == b.color &&
         a.row == b.row && a.col == b.col && a.text == b.text;
}
bool operator==(const Options& a, const Options& b) {
  return a.image_size == b.image_size && a.grid == b.grid && a.dense_frames == b.dense_frames;
}
bool operator==(const Item& a, const Item& b) {
  return a.split == b.split && a.index == b.index && a.clip == b.clip && a.question == b.question &&
         a.answer == b.answer && a.options == b.options;
}

// ---- Generation.

absl::Status ValidateSpec(int frames, const Options& opts) {
  if (frames < 1 || frames > kMaxFrames) {
    return absl::InvalidArgumentError(
        absl::StrCat("frames must be in [1, ", kMaxFrames, "], got ", frames));
  }
  if (opts.grid < kMinGrid || opts.grid > kMaxGrid) {
    return absl::InvalidArgumentError(
        absl::StrCat("grid must be in [", kMinGrid, ", ", kMaxGrid, "], got ", opts.grid));
  }
  if (opts.image_size < opts.grid * kMinCellPixels || opts.image_size > 4096) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image size must be in [", opts.grid * kMinCellPixels, ", 4096] for a ", opts.grid, "x",
        opts.grid, " grid (cells of at least ", kMinCellPixels, " px), got ", opts.image_size));
  }
  return absl::OkStatus();
}

Item MakeItem(Split split, int64_t index, int frames, const Options& opts) {
  if (const absl::Status s = ValidateSpec(frames, opts); !s.ok()) {
    std::fprintf(stderr, "vlc::vqa::MakeItem: %s\n", std::string(s.message()).c_str());
    std::abort();
  }
  Rng rng(ItemSeed(split, index, frames, opts));
  Item item;
  item.split = split;
  item.index = index;
  item.options = opts;
  const SceneSpec& spec = frames == 1 || opts.dense_frames ? kImageSpec : kClipFrameSpec;
  for (int f = 0; f < frames; ++f) item.clip.frames.push_back(MakeFrame(rng, spec, opts.grid));
  item.question = DrawQuestion(rng, item.clip);
  item.question.text = QuestionText(item.question, frames);
  item.answer = Answer(item.clip, item.question);
  return item;
}

std::string Prompt(const Item& item) { return item.question.text; }

std::string QuestionText(const Question& q, int num_frames) {
  std::string text = num_frames >= 2 ? absl::StrCat("in frame ", q.frame + 1, ", ") : "";
  switch (q.kind) {
    case QuestionKind::kColorOfShape:
      absl::StrAppend(&text, "what color is the ", ShapeName(q.shape), "?");
      break;
    case QuestionKind::kShapeAt:
      absl::StrAppend(&text, "what is at row ", q.row + 1, " column ", q.col + 1, "?");
      break;
    case QuestionKind::kDigitInBox:
      absl::StrAppend(&text, "which digit is in the ", ColorName(q.color), " box?");
      break;
    case QuestionKind::kCount:
      absl::StrAppend(&text, "how many ", ColorName(q.color), " shapes are there?");
      break;
  }
  return text;
}

std::string Answer(const Clip& clip, const Question& q) {
  if (q.frame < 0 || q.frame >= static_cast<int>(clip.frames.size())) return "";
  const Frame& frame = clip.frames[q.frame];
  switch (q.kind) {
    case QuestionKind::kColorOfShape: {
      if (CountShapes(frame, q.shape) != 1) return "";
      for (const Object& o : frame.objects) {
        if (!o.is_box && o.shape == q.shape) return ColorName(o.color);
      }
      return "";
    }
    case QuestionKind::kShapeAt:
      for (const Object& o : frame.objects) {
        if (o.row == q.row && o.col == q.col) return ObjectAnswer(o);
      }
      return "";
    case QuestionKind::kDigitInBox: {
      if (CountBoxes(frame, q.color) != 1) return "";
      for (const Object& o : frame.objects) {
        if (o.is_box && o.color == q.color) return std::to_string(o.digit);
      }
      return "";
    }
    case QuestionKind::kCount:
      return std::to_string(CountShapesOfColor(frame, q.color));
  }
  return "";
}

// ---- Pixels.

CellRect CellBounds(int row, int col, const Options& opts) {
  const int size = opts.image_size / opts.grid;
  const int offset = (opts.image_size - size * opts.grid) / 2;
  return CellRect{offset + col * size, offset + row * size, size};
}

BoxStyle BoxStyleFor(const Options& opts) {
  const int size = opts.image_size / opts.grid;
  // 1 and 2 px at 24 px cells, in proportion elsewhere, so that other sizes look the same and the
  // smallest cells (12 px) keep 8 px inside for the digit.
  return BoxStyle{std::max(1, size / 24), std::max(1, static_cast<int>(std::lround(size / 12.0)))};
}

std::array<uint8_t, 3> ColorRgb(Color color) {
  // Saturated and far apart: the closest pair (red and orange) differs by about 100 in RGB.
  static constexpr std::array<uint8_t, 3> kRgb[] = {
      {220, 30, 30},   // red
      {20, 160, 40},   // green
      {30, 70, 230},   // blue
      {245, 220, 30},  // yellow
      {140, 40, 180},  // purple
      {255, 120, 0},   // orange
  };
  return kRgb[static_cast<int>(color)];
}

std::vector<uint8_t> RenderFrame(const Frame& frame, const Options& opts) {
  const cv::Mat img = DrawFrame(frame, opts);
  return std::vector<uint8_t>(img.data, img.data + img.total() * img.elemSize());
}

AugmentedFrame RenderFrameAugmented(const Frame& frame, const Options& opts, uint64_t seed,
                                    double own_hands, double shape_variety, double other_forms) {
  Rng rng(Mix64(seed ^ 0x4155474D454E54ull));
  Options sized = opts;
  sized.image_size = rng.Range(kMinAugmentedSize, kMaxAugmentedSize);
  sized.image_size = std::max(sized.image_size, opts.grid * kMinCellPixels);
  const int paper = rng.Range(232, 255);
  const uint64_t object_seed = rng.Next();
  cv::Mat img = DrawFrameWith(frame, sized, paper, [&](size_t k) {
    Rng object_rng(Mix64(object_seed + k));
    return AugmentedLook(object_rng, own_hands, shape_variety, other_forms);
  });
  if (rng.Chance(3, 10)) {
    // JPEG artefacts: a round trip at a quality between 30 and 90.
    cv::Mat bgr;
    cv::cvtColor(img, bgr, cv::COLOR_RGB2BGR);
    std::vector<uint8_t> buf;
    cv::imencode(".jpg", bgr, buf, {cv::IMWRITE_JPEG_QUALITY, rng.Range(30, 90)});
    cv::cvtColor(cv::imdecode(buf, cv::IMREAD_COLOR), img, cv::COLOR_BGR2RGB);
  }
  AugmentedFrame out;
  out.image_size = sized.image_size;
  out.rgb.assign(img.data, img.data + img.total() * img.elemSize());
  return out;
}

std::string EncodePng(const Frame& frame, const Options& opts) {
  cv::Mat bgr;
  cv::cvtColor(DrawFrame(frame, opts), bgr, cv::COLOR_RGB2BGR);  // imencode expects BGR
  std::vector<uint8_t> buf;
  cv::imencode(".png", bgr, buf);
  return std::string(buf.begin(), buf.end());
}

// ---- Names.

const char* ShapeName(Shape shape) { return kShapeNames[static_cast<int>(shape)]; }
const char* ColorName(Color color) { return kColorNames[static_cast<int>(color)]; }
const char* KindName(QuestionKind kind) { return kKindNames[static_cast<int>(kind)]; }
const char* SplitName(Split split) { return kSplitNames[static_cast<int>(split)]; }

absl::StatusOr<Shape> ParseShape(std::string_view name) {
  return ParseName<Shape>(name, kShapeNames, "shape");
}
absl::StatusOr<Color> ParseColor(std::string_view name) {
  return ParseName<Color>(name, kColorNames, "color");
}
absl::StatusOr<QuestionKind> ParseKind(std::string_view name) {
  return ParseName<QuestionKind>(name, kKindNames, "question kind");
}
absl::StatusOr<Split> ParseSplit(std::string_view name) {
  return ParseName<Split>(name, kSplitNames, "split");
}

// ---- JSON.

json ClipToJson(const Clip& clip) {
  json frames = json::array();
  for (const Frame& frame : clip.frames) {
    json objects = json::array();
    for (const Object& o : frame.objects) {
      json jo = {{"type", o.is_box ? "box" : "shape"}, {"color", ColorName(o.color)}};
      if (o.is_box) {
        jo["digit"] = o.digit;
      } else {
        jo["shape"] = ShapeName(o.shape);
      }
      jo["row"] = o.row;
      jo["col"] = o.col;
      objects.push_back(std::move(jo));
    }
    frames.push_back({{"objects", std::move(objects)}});
  }
  return {{"frames", std::move(frames)}};
}

absl::StatusOr<Clip> ClipFromJson(const json& j) {
  VLC_ASSIGN_OR_RETURN(const json* frames, Field(j, "frames", "scene"));
  if (!frames->is_array() || frames->empty() || frames->size() > kMaxFrames) {
    return absl::InvalidArgumentError(
        absl::StrCat("scene.frames: not an array of 1 to ", kMaxFrames, " frames"));
  }
  Clip clip;
  for (size_t f = 0; f < frames->size(); ++f) {
    const std::string where = absl::StrCat("scene.frames[", f, "]");
    VLC_ASSIGN_OR_RETURN(const json* objects, Field((*frames)[f], "objects", where));
    if (!objects->is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".objects: not an array"));
    }
    Frame frame;
    for (size_t i = 0; i < objects->size(); ++i) {
      const std::string at = absl::StrCat(where, ".objects[", i, "]");
      VLC_ASSIGN_OR_RETURN(Object o, ObjectFromJson((*objects)[i], at));
      for (const Object& other : frame.objects) {
        if (other.row == o.row && other.col == o.col) {
          return absl::InvalidArgumentError(
              absl::StrCat(at, ": a second object at row ", o.row, " col ", o.col, " (0-based)"));
        }
      }
      frame.objects.push_back(o);
    }
    clip.frames.push_back(std::move(frame));
  }
  return clip;
}

json ToJson(const Item& item) {
  const Question& q = item.question;
  json jq = {{"kind", KindName(q.kind)}, {"frame", q.frame}};
  switch (q.kind) {
    case QuestionKind::kColorOfShape:
      jq["shape"] = ShapeName(q.shape);
      break;
    case QuestionKind::kShapeAt:
      jq["row"] = q.row;
      jq["col"] = q.col;
      break;
    case QuestionKind::kDigitInBox:
    case QuestionKind::kCount:
      jq["color"] = ColorName(q.color);
      break;
  }
  json j = {{"split", SplitName(item.split)},
            {"index", item.index},
            {"frames", item.clip.frames.size()},
            {"image_size", item.options.image_size},
            {"grid", item.options.grid},
            {"prompt", Prompt(item)},
            {"answer", item.answer},
            {"kind", KindName(q.kind)},
            {"question", std::move(jq)},
            {"scene", ClipToJson(item.clip)}};
  if (item.options.dense_frames) j["dense_frames"] = true;
  return j;
}

absl::StatusOr<Item> ItemFromJson(const json& j) {
  const char* where = "item";
  Item item;
  VLC_ASSIGN_OR_RETURN(item.split, GetName<Split>(j, "split", where, &ParseSplit));
  VLC_ASSIGN_OR_RETURN(item.index, GetInt(j, "index", where, 0, INT64_MAX));
  VLC_ASSIGN_OR_RETURN(item.options.image_size, GetInt(j, "image_size", where, 1, 4096));
  VLC_ASSIGN_OR_RETURN(item.options.grid, GetInt(j, "grid", where, 1, kMaxGrid));
  if (auto it = j.find("dense_frames"); it != j.end()) {
    if (!it->is_boolean()) return absl::InvalidArgumentError("item.dense_frames: not a boolean");
    item.options.dense_frames = it->get<bool>();
  }
  VLC_ASSIGN_OR_RETURN(const json* scene, Field(j, "scene", where));
  VLC_ASSIGN_OR_RETURN(item.clip, ClipFromJson(*scene));
  const int frames = static_cast<int>(item.clip.frames.size());
  VLC_RETURN_IF_ERROR(ValidateSpec(frames, item.options));
  VLC_ASSIGN_OR_RETURN(const int64_t declared_frames, GetInt(j, "frames", where, 1, kMaxFrames));
  if (declared_frames != frames) {
    return absl::InvalidArgumentError(
        absl::StrCat("item.frames: ", declared_frames, " but the scene has ", frames, " frames"));
  }
  for (const Frame& frame : item.clip.frames) {
    for (const Object& o : frame.objects) {
      if (o.row >= item.options.grid || o.col >= item.options.grid) {
        return absl::InvalidArgumentError(
            absl::StrCat("scene: an object at row ", o.row, " col ", o.col, " lies outside the ",
                         item.options.grid, "x", item.options.grid, " grid"));
      }
    }
  }
  VLC_ASSIGN_OR_RETURN(const json* jq, Field(j, "question", where));
  VLC_ASSIGN_OR_RETURN(item.question, QuestionFromJson(*jq, item.clip));
  if (item.question.kind == QuestionKind::kShapeAt &&
      (item.question.row >= item.options.grid || item.question.col >= item.options.grid)) {
    return absl::InvalidArgumentError("question: the cell lies outside the grid");
  }
  VLC_ASSIGN_OR_RETURN(std::string kind, GetString(j, "kind", where));
  if (kind != KindName(item.question.kind)) {
    return absl::InvalidArgumentError(absl::StrCat("item.kind: \"", kind, "\" but the question is ",
                                                   KindName(item.question.kind)));
  }
  // The prompt is derived from the question; a mismatch means one of them was edited.
  VLC_ASSIGN_OR_RETURN(std::string prompt, GetString(j, "prompt", where));
  if (prompt != item.question.text) {
    return absl::InvalidArgumentError(absl::StrCat(
        "item.prompt: \"", prompt, "\" is not the question's text \"", item.question.text, "\""));
  }
  VLC_ASSIGN_OR_RETURN(item.answer, GetString(j, "answer", where));
  return item;
}

// ---- Tokenizer corpus.

std::vector<std::string> VocabularyCorpus() {
  std::vector<std::string> lines;
  const auto add = [&](const Question& q, const std::string& answer, int num_frames) {
    lines.push_back(absl::StrCat(QuestionText(q, num_frames), " ", answer));
  };
  Question q;
  // Each template with every value of its slots, answered with every value its answer takes.
  q.kind = QuestionKind::kColorOfShape;
  for (int s = 0; s < kNumShapes; ++s) {
    for (int c = 0; c < kNumColors; ++c) {
      q.shape = static_cast<Shape>(s);
      add(q, ColorName(static_cast<Color>(c)), 1);
    }
  }
  q = Question{};
  q.kind = QuestionKind::kShapeAt;
  int k = 0;
  for (int r = 0; r < kMaxGrid; ++r) {
    for (int c = 0; c < kMaxGrid; ++c, ++k) {
      q.row = r;
      q.col = c;
      Object o;
      o.color = static_cast<Color>(k % kNumColors);
      o.shape = static_cast<Shape>(k % kNumShapes);
      add(q, ObjectAnswer(o), 1);
    }
  }
  for (int c = 0; c < kNumColors; ++c) {
    for (int s = 0; s < kNumShapes; ++s) {
      Object o;
      o.color = static_cast<Color>(c);
      o.shape = static_cast<Shape>(s);
      q.row = (c + s) % kMaxGrid;
      q.col = (c * 3 + s) % kMaxGrid;
      add(q, ObjectAnswer(o), 1);
    }
    for (int d = 0; d < 10; ++d) {
      Object o;
      o.is_box = true;
      o.color = static_cast<Color>(c);
      o.digit = d;
      q.row = (c + d) % kMaxGrid;
      q.col = (c * 5 + d) % kMaxGrid;
      add(q, ObjectAnswer(o), 1);
    }
  }
  q = Question{};
  q.kind = QuestionKind::kDigitInBox;
  for (int c = 0; c < kNumColors; ++c) {
    for (int d = 0; d < 10; ++d) {
      q.color = static_cast<Color>(c);
      add(q, std::to_string(d), 1);
    }
  }
  q = Question{};
  q.kind = QuestionKind::kCount;
  for (int c = 0; c < kNumColors; ++c) {
    for (int n = 0; n <= kImageSpec.max_objects; ++n) {
      q.color = static_cast<Color>(c);
      add(q, std::to_string(n), 1);
    }
  }
  // The frame prefix with every frame number, on each kind in turn.
  for (int f = 0; f < kMaxFrames; ++f) {
    Question fq;
    fq.frame = f;
    fq.kind = static_cast<QuestionKind>(f % kNumKinds);
    fq.shape = static_cast<Shape>(f % kNumShapes);
    fq.color = static_cast<Color>(f % kNumColors);
    fq.row = f % kMaxGrid;
    fq.col = (f * 3) % kMaxGrid;
    Object o;
    o.shape = fq.shape;
    o.color = fq.color;
    const std::string answer = fq.kind == QuestionKind::kColorOfShape ? ColorName(fq.color)
                               : fq.kind == QuestionKind::kShapeAt    ? ObjectAnswer(o)
                                                                      : std::to_string(f % 10);
    add(fq, answer, kMaxFrames);
  }
  return lines;
}

}  // namespace vlc::vqa
